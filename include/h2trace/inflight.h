/*
 * h2trace: the in-flight request table.
 *
 * Opt-in: after h2t_inflight_enable(), every client and server request is
 * registered when it starts and removed when it ends, with its state (derived
 * from its trace events), the history of its states with the time spent in
 * each, a free-text status the application may set, and its byte counts.
 * Finished requests go to a bounded ring ("recent"), and their time per state
 * is summed into a profile that says where requests wait.
 *
 * Until enabled the table costs nothing: no entry, no event forwarded.
 *
 * Thread-safety: every function here is thread-safe and may be called from
 * any thread, including while the loops that own the requests are busy or
 * stuck; h2t_inflight_enable() and h2t_inflight_disable() too (they wait
 * for readers inside a call; a reader that needs the table to stay on
 * between its calls holds it with h2t_inflight_hold()).  A loop never
 * waits for a reader: each entry is written by its loop alone, and readers
 * copy it optimistically (seqlock), retrying when they raced a write.  A cancel or status set from another thread is shown
 * at once and folded into the entry by its loop at the next event.
 *
 * Sensitive headers: the table does not store header values.  Every h2trace
 * output that shows headers (dumps, endpoints, exports) asks
 * h2t_header_is_sensitive() and writes "[redacted]" instead of the value.
 */
#ifndef H2TRACE_INFLIGHT_H
#define H2TRACE_INFLIGHT_H

#include <h2trace/common.h>
#include <h2trace/trace.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum h2t_inflight_kind {
  H2T_INFLIGHT_CLIENT = 0, /* a request this process sends */
  H2T_INFLIGHT_SERVER = 1  /* a request this process serves */
} h2t_inflight_kind;

/*
 * States.  A client request goes queued → [dns → connecting → tls] →
 * [waiting for a stream slot] → sending → waiting for response → receiving,
 * with flow-blocked and retrying on the way; a server request goes reading
 * headers → reading body → in handler → writing.  Both end in "done".
 * (identifier, short name used in JSON and metrics, text used in dumps)
 *
 * What moves a request (trace events, see trace.h):
 *   client: submitted: queued; dns_start: dns; connect_start: connecting;
 *     tls_handshake_start: tls; got_conn: sending (waiting for a stream slot
 *     when the connection is over the peer's limit, or while the pool holds
 *     it back for that reason); wait_100_continue / got_100_continue;
 *     wrote_request: waiting for response; got_first_response_byte and
 *     got_data: receiving; flow_blocked: flow-blocked; retry: retrying;
 *     done: done.
 *   server: first header byte: reading headers; headers complete: reading
 *     body; handler_started: in handler (once the body is in: until then
 *     the request waits on the peer and stays reading body);
 *     wrote_headers: writing; flow_blocked: flow-blocked; stream_closed: done.
 *   h2t_inflight_cancel(): canceling, until the request ends.
 */
#define H2T_INFLIGHT_STATE_MAP(XX)                                             \
  XX(QUEUED, "queued", "queued for a connection")                              \
  XX(DNS, "dns", "resolving")                                                  \
  XX(CONNECTING, "connecting", "connecting")                                   \
  XX(TLS, "tls", "TLS handshake")                                              \
  XX(WAIT_STREAM, "wait_stream", "waiting for a stream slot")                  \
  XX(SENDING, "sending", "sending")                                            \
  XX(WAIT_CONTINUE, "wait_continue", "waiting for 100-continue")               \
  XX(WAIT_RESPONSE, "wait_response", "waiting for response")                   \
  XX(RECEIVING, "receiving", "receiving")                                      \
  XX(FLOW_BLOCKED, "flow_blocked", "flow-blocked")                             \
  XX(RETRYING, "retrying", "retrying")                                         \
  XX(READ_HEADERS, "read_headers", "reading headers")                          \
  XX(READ_BODY, "read_body", "reading body")                                   \
  XX(HANDLER, "handler", "in handler")                                         \
  XX(WRITING, "writing", "writing")                                            \
  XX(SRV_FLOW_BLOCKED, "srv_flow_blocked", "flow-blocked")                     \
  XX(CANCELING, "canceling", "canceling")                                      \
  XX(DONE, "done", "done")

typedef enum h2t_inflight_state {
#define H2T_IFS_ENUM_(id, name, text) H2T_IFS_##id,
  H2T_INFLIGHT_STATE_MAP(H2T_IFS_ENUM_)
#undef H2T_IFS_ENUM_
  H2T_IFS_COUNT_
} h2t_inflight_state;

/* "wait_response"; NULL for an unknown state.  Thread-safe. */
H2T_EXTERN const char *h2t_inflight_state_name(h2t_inflight_state s);
/* "waiting for response"; NULL for an unknown state.  Thread-safe. */
H2T_EXTERN const char *h2t_inflight_state_text(h2t_inflight_state s);
/* "client" or "server"; NULL otherwise. */
H2T_EXTERN const char *h2t_inflight_kind_name(h2t_inflight_kind k);

typedef struct h2t_inflight_config {
  size_t struct_size;  /* H2T_INFLIGHT_CONFIG_INIT */
  size_t max_entries;  /* 0: 65536 requests in flight; beyond, untracked */
  size_t recent;       /* 0: 256 finished requests kept */
  /* More header names whose values are never shown (copied; case does not
   * matter), on top of authorization, cookie, set-cookie and
   * proxy-authorization. */
  const char *const *sensitive_headers;
  size_t nsensitive_headers;
  /* Appended after 0.2.0.  Authorities that get a label of their own in the /metrics
   * histograms (h2t_diag_metrics()): the first this many seen since the
   * table was made; later ones, and any that is empty or not printable
   * ASCII, share authority="other".  0: 32; at most 4096.  Bounds the
   * series count, as the sizes above bound memory (a change makes the
   * table anew, as they do). */
  size_t metrics_authorities;
} h2t_inflight_config;

#define H2T_INFLIGHT_CONFIG_INIT .struct_size = sizeof(h2t_inflight_config)

/* Turn the table on, or apply cfg to the table already on: the diagnostics
 * endpoint, the signal dump and h2t_inflight_hold() turn it on with the
 * defaults, and a later call with your cfg still applies it, so the order
 * does not matter.  cfg may be NULL for all defaults; it is not kept.
 * Requests that started before are not tracked.
 * On a table already on: cfg's sensitive headers are added first, always;
 * a max_entries, recent or metrics_authorities that is non-zero and differs
 * from the table's makes the table anew (empty: the recent ring, the
 * profile and the metrics' counters start over) if no request is in flight.
 * Returns 0, or H2T_ERR_INVALID_ARG (bad struct_size, a sensitive-header
 * name empty or over 63 bytes, a size out of range: nothing changed),
 * H2T_ERR_LIMIT (more than 64 sensitive names in all), H2T_ERR_NOMEM, or
 * H2T_ERR_STATE: new sizes asked while requests are in flight (the sizes
 * stay, the sensitive headers were added all the same).  Thread-safe. */
H2T_EXTERN int h2t_inflight_enable(const h2t_inflight_config *cfg);

/* 1 if the table is on. */
H2T_EXTERN int h2t_inflight_enabled(void);

/* Turn the table off and free it.  Returns 0, or H2T_ERR_STATE while a
 * tracked request is still in flight, the diagnostics endpoint runs, or the
 * signal dump is installed (nothing changes then).  Thread-safe: a reader
 * inside a call on another thread is waited for; a reader that must find
 * the table on later holds it (h2t_inflight_hold()). */
H2T_EXTERN int h2t_inflight_disable(void);

/* Keep the table on for a reader of your own (an endpoint, an exporter
 * thread): turn it on with defaults if it is off (a later
 * h2t_inflight_enable() still applies its cfg), and make
 * h2t_inflight_disable() refuse until the matching h2t_inflight_release().
 * The diagnostics endpoint and the signal dump hold it the same way.
 * Returns 0, H2T_ERR_NOMEM.  Thread-safe. */
H2T_EXTERN int h2t_inflight_hold(void);

/* Undo one h2t_inflight_hold().  Returns 0, or H2T_ERR_STATE when nothing
 * holds the table.  Thread-safe. */
H2T_EXTERN int h2t_inflight_release(void);

/* Sizes of the arrays of h2t_inflight_info.  They are not what the table
 * keeps: an entry is 544 bytes, so it keeps at most 7 bytes of method, 63
 * of authority and 126 of authority and path together, 39 of status and
 * 31 of cancel reason; longer text is cut when it is stored and ends in
 * "...".  The arrays are larger so that the table may keep more one day
 * without an ABI change. */
#define H2T_INFLIGHT_MAX_HISTORY 16
#define H2T_INFLIGHT_METHOD_MAX 16
#define H2T_INFLIGHT_AUTHORITY_MAX 128
#define H2T_INFLIGHT_PATH_MAX 256
#define H2T_INFLIGHT_TEXT_MAX 64

typedef struct h2t_inflight_step {
  h2t_inflight_state state;
  uint64_t entered_us;  /* h2t_now_us() clock */
  uint64_t duration_us; /* until the next step, or until now if current */
} h2t_inflight_step;

/* A copy of one request's entry.  Strings are NUL-terminated; long ones were
 * cut when stored, to the table's limits above (ending in "..."). */
typedef struct h2t_inflight_info {
  uint64_t id;           /* the h2t_event.req_id */
  h2t_inflight_kind kind;
  char method[H2T_INFLIGHT_METHOD_MAX];
  char scheme[8];
  char authority[H2T_INFLIGHT_AUTHORITY_MAX];
  char path[H2T_INFLIGHT_PATH_MAX];
  uint64_t conn_id;      /* 0 until it has a connection */
  int32_t stream_id;     /* 0 until it has a stream */
  int http_status;       /* 0 until response headers */
  uint64_t start_us;
  h2t_inflight_state state;
  uint64_t state_since_us;
  char status[H2T_INFLIGHT_TEXT_MAX];        /* set by the application */
  uint64_t bytes_in, bytes_out;              /* body bytes */
  int canceled;                              /* h2t_inflight_cancel() */
  char cancel_reason[H2T_INFLIGHT_TEXT_MAX];
  /* Most recent steps, oldest first; history_dropped older ones were
   * forgotten (the profile still counts their time). */
  unsigned nhistory, history_dropped;
  h2t_inflight_step history[H2T_INFLIGHT_MAX_HISTORY];
  /* Finished requests only (recent ring): */
  int finished;
  uint64_t end_us;
  int error;                                 /* 0 or an H2T_ERR_ code */
  /* Added after 0.2.0.  Its W3C trace context (h2t_event.trace); an
   * all-zero trace_id: none. */
  h2t_trace_context trace;
} h2t_inflight_info;

/* Copy every request in flight, oldest first, into a new array (*out, *n).
 * Free it with h2t_inflight_info_free().  Returns 0 (also when the table is off:
 * *out NULL, *n 0), H2T_ERR_INVALID_ARG or H2T_ERR_NOMEM. */
H2T_EXTERN int h2t_inflight_snapshot(h2t_inflight_info **out, size_t *n);

/* Copy the finished requests of the recent ring, newest first.  Same
 * contract as h2t_inflight_snapshot(). */
H2T_EXTERN int h2t_inflight_recent(h2t_inflight_info **out, size_t *n);

/* Free an array from h2t_inflight_snapshot() / _recent().  NULL is ok.
 * Thread-safe.  (Named h2t_inflight_free() before 0.2.) */
H2T_EXTERN void h2t_inflight_info_free(h2t_inflight_info *arr);

/* Copy one request by id, in flight or in the recent ring.  Returns 0,
 * H2T_ERR_NOT_FOUND or H2T_ERR_INVALID_ARG. */
H2T_EXTERN int h2t_inflight_get(uint64_t id, h2t_inflight_info *out);

/* Cancel a request in flight: records the cancel and `reason` (may be NULL;
 * copied, truncated) in its history, then asks the loop that owns it to
 * reset its stream with CANCEL; the request then ends with H2T_ERR_CANCELED.
 * Returns 0 once the cancel is posted, H2T_ERR_NOT_FOUND if the request is
 * not in flight, H2T_ERR_UNSUPPORTED if its owner gave no way to cancel,
 * H2T_ERR_STATE if it is already being canceled. */
H2T_EXTERN int h2t_inflight_cancel(uint64_t id, const char *reason);

/* Set the free-text status of the calling request (shown in dumps and the
 * endpoint), e.g. "querying inventory".  Copied; the table keeps at most
 * 39 bytes of it (see the limits above h2t_inflight_info: the status array
 * there is larger).  Returns 0, H2T_ERR_NOT_FOUND or H2T_ERR_INVALID_ARG.  (The server's handler API offers the same by
 * request handle, which is cheaper.) */
H2T_EXTERN int h2t_inflight_set_status(uint64_t id, const char *text);

/*
 * State profile: over finished requests since the table was enabled, the
 * time spent in each state, overall and per (kind, authority).  Mean time in
 * a state = total_us / requests (the requests that entered it).
 */
typedef struct h2t_inflight_state_stat {
  uint64_t total_us; /* summed over requests */
  uint64_t requests; /* requests that were in this state at least once */
} h2t_inflight_state_stat;

typedef struct h2t_inflight_profile_row {
  h2t_inflight_kind kind;
  char authority[H2T_INFLIGHT_AUTHORITY_MAX]; /* "*" for the overall row,
                                                 "(other)" past the limit */
  uint64_t requests, errors, total_us;
  h2t_inflight_state_stat states[H2T_IFS_COUNT_];
} h2t_inflight_profile_row;

typedef struct h2t_inflight_profile_data {
  h2t_inflight_profile_row overall[2]; /* by kind: client, server */
  size_t nrows;                        /* per (kind, authority) */
  h2t_inflight_profile_row *rows;
} h2t_inflight_profile_data;

/* Copy the profile (*out; free with h2t_inflight_profile_free()).  Returns
 * 0, H2T_ERR_INVALID_ARG, H2T_ERR_NOMEM, or H2T_ERR_STATE when the table is
 * off. */
H2T_EXTERN int h2t_inflight_profile(h2t_inflight_profile_data **out);
/* Free a profile from h2t_inflight_profile().  NULL is ok. */
H2T_EXTERN void h2t_inflight_profile_free(h2t_inflight_profile_data *p);

/*
 * Human-readable report of what is in flight, grouped by host, oldest first:
 *
 *   In-flight HTTP/2 requests (7):
 *   slownode:8484  6 in flight, oldest 1m34.00s
 *     GET /blob/9f2c for 1m34.00s [waiting for response, conn #3 stream 17]
 *
 * Written to fd (-1: stderr).  Returns 0, H2T_ERR_NOMEM or H2T_ERR_IO.
 */
H2T_EXTERN int h2t_inflight_dump(int fd);

/* The same report into a new NUL-terminated string (*out).  Strings the
 * library returns are plain malloc() memory, freed with free(), like
 * strdup()'s: they carry no allocator and no structure.  Returns 0,
 * H2T_ERR_INVALID_ARG or H2T_ERR_NOMEM. */
H2T_EXTERN int h2t_inflight_dump_string(char **out);

/*
 * After this call SIGUSR1 (and SIGINFO where the platform has it) makes the
 * process write h2t_inflight_dump() to fd (-1: stderr).  The signal handler
 * only writes a byte to a pipe; a thread this call starts formats and writes
 * the report, so it works while the application's loops are stuck.  Turns
 * the table on if it is off.  Returns 0, H2T_ERR_STATE if already installed,
 * H2T_ERR_SYSTEM or H2T_ERR_NOMEM.  A program that never calls it is not
 * affected.
 */
H2T_EXTERN int h2t_inflight_install_signal(int fd);

/* Restore the previous SIGUSR1/SIGINFO handlers and stop the thread.
 * Returns 0 or H2T_ERR_STATE if not installed. */
H2T_EXTERN int h2t_inflight_uninstall_signal(void);

/* A copy of one connection's registry entry (client pool or server). */
typedef struct h2t_inflight_conn {
  uint64_t id;             /* the h2t_event.conn_id */
  h2t_inflight_kind kind;
  char peer[64];           /* "127.0.0.1:8443" */
  char authority[H2T_INFLIGHT_AUTHORITY_MAX]; /* client: origin; server: "" */
  uint64_t opened_us;
  uint32_t streams_active, streams_max; /* max: peer's limit, 0 unknown */
  uint64_t idle_since_us;  /* when it last became idle; 0 while active */
  uint64_t requests;       /* requests it carried */
  uint64_t reuses;         /* times the pool handed it out again */
  int goaway_sent, goaway_received;
  uint64_t bytes_in, bytes_out;
} h2t_inflight_conn;

/* Copy every registered connection (*out, *n; free with
 * h2t_inflight_conn_free()).  Returns 0 (also when the table is off: NULL,
 * 0), H2T_ERR_INVALID_ARG or H2T_ERR_NOMEM. */
H2T_EXTERN int h2t_inflight_connections(h2t_inflight_conn **out, size_t *n);
/* Free an array from h2t_inflight_connections().  NULL is ok.  Thread-safe. */
H2T_EXTERN void h2t_inflight_conn_free(h2t_inflight_conn *arr);

/* 1 if the header's value must never be shown: authorization, cookie,
 * set-cookie, proxy-authorization, or one added by the application (case
 * does not matter).  Thread-safe, lock-free. */
H2T_EXTERN int h2t_header_is_sensitive(const char *name);

/* Add a sensitive header name (copied).  Returns 0, H2T_ERR_INVALID_ARG
 * (empty or longer than 63 bytes) or H2T_ERR_LIMIT (64 names added).
 * Thread-safe. */
H2T_EXTERN int h2t_header_add_sensitive(const char *name);

#ifdef __cplusplus
}
#endif

#endif /* H2TRACE_INFLIGHT_H */
