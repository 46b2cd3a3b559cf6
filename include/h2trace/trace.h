/*
 * h2trace: trace hooks.
 *
 * A trace is a struct of optional hooks, in the spirit of Go's
 * net/http/httptrace.ClientTrace, attached to a client request
 * (h2t_client_trace) or to a server (h2t_server_trace).  Every hook has the
 * same type: it receives one h2t_event, whose common fields say when (t_us,
 * monotonic µs from h2t_now_us()), which request, which connection and which
 * stream, and whose union `u` carries the rest.  Most events have a member
 * of their own name (u.got_conn, u.done...); some share one: u.connect
 * (connect_start, connect_done), u.tls (tls_handshake_start and _done, both
 * sides), u.header_field (wrote_header_field), u.response
 * (got_1xx_response, got_headers, server wrote_headers), u.data (got_data),
 * u.body (request_body_done, wrote_response), u.stream_reset and
 * u.flow_blocked (both sides); wrote_headers, wait_100_continue,
 * got_100_continue, got_first_response_byte, stream_opened and
 * wrote_first_byte carry none.  doc/api/h2t_event.md has the table.
 *
 *   static void on_got_conn(const h2t_event *ev, void *user) {
 *     printf("conn #%llu %s\n", (unsigned long long)ev->conn_id,
 *            ev->u.got_conn.reused ? "reused" : "new");
 *   }
 *   h2t_client_trace tr = { H2T_CLIENT_TRACE_INIT, .got_conn = on_got_conn };
 *
 * Rules the library keeps:
 *  - A hook that is not set costs one predictable branch, nothing more.
 *  - Hooks run on the thread of the loop that owns the request, synchronously,
 *    and never change protocol behaviour: their return is void, and anything
 *    they do to the request must go through the public API.
 *  - Pointers in an event are valid only during the call.
 *  - Composition: a trace's `next` points to an older trace whose hooks also
 *    run, after the newer one's (like Go's WithClientTrace).  The client-wide
 *    default trace (h2t_client_config.trace) runs after the request's.
 *  - `any`, when set, runs for every event after the specific hook: handy for
 *    recorders and exporters.
 */
#ifndef H2TRACE_TRACE_H
#define H2TRACE_TRACE_H

#include <h2trace/common.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct h2t_request h2t_request;       /* a client request */
typedef struct h2t_server_req h2t_server_req; /* a request a server serves */

/* Event types.  Client events first, then server events.  The order is ABI:
 * new events are only ever appended, client ones before the server ones
 * (H2T_EV_FIRST_SERVER_ moves then), server ones before H2T_EV_COUNT_.
 * (identifier, name) where the name is also the hook's field in the side's
 * trace struct: client events in h2t_client_trace, server events in
 * h2t_server_trace.  The library's table of where each hook sits is made
 * from these lists, so an event cannot lack its hook. */
#define H2T_CLIENT_EVENT_MAP(XX)                                               \
  /* Go's ClientTrace, every one firing on HTTP/2 */                           \
  XX(GET_CONN, get_conn)                                                       \
  XX(DNS_START, dns_start)                                                     \
  XX(DNS_DONE, dns_done)                                                       \
  XX(CONNECT_START, connect_start)                                             \
  XX(CONNECT_DONE, connect_done)                                               \
  XX(TLS_HANDSHAKE_START, tls_handshake_start)                                 \
  XX(TLS_HANDSHAKE_DONE, tls_handshake_done)                                   \
  XX(GOT_CONN, got_conn)                                                       \
  XX(WROTE_HEADER_FIELD, wrote_header_field)                                   \
  XX(WROTE_HEADERS, wrote_headers)                                             \
  XX(WAIT_100_CONTINUE, wait_100_continue)                                     \
  XX(GOT_100_CONTINUE, got_100_continue)                                       \
  XX(GOT_1XX_RESPONSE, got_1xx_response)                                       \
  XX(WROTE_REQUEST, wrote_request)                                             \
  XX(GOT_FIRST_RESPONSE_BYTE, got_first_response_byte)                         \
  XX(PUT_IDLE_CONN, put_idle_conn)                                             \
  /* HTTP/2 */                                                                 \
  XX(STREAM_OPENED, stream_opened)                                             \
  XX(GOT_HEADERS, got_headers)                                                 \
  XX(GOT_DATA, got_data)                                                       \
  XX(FLOW_BLOCKED, flow_blocked)                                               \
  XX(STREAM_RESET, stream_reset)                                               \
  XX(GOAWAY, goaway)                                                           \
  XX(SETTINGS, settings)                                                       \
  XX(RETRY, retry)                                                             \
  XX(DONE, done)

#define H2T_SERVER_EVENT_MAP(XX)                                               \
  XX(SRV_CONN_ACCEPTED, conn_accepted)                                         \
  XX(SRV_TLS_HANDSHAKE_DONE, tls_handshake_done)                               \
  XX(SRV_REQUEST_HEADERS, request_headers)                                     \
  XX(SRV_REQUEST_BODY_DONE, request_body_done)                                 \
  XX(SRV_HANDLER_STARTED, handler_started)                                     \
  XX(SRV_WROTE_HEADERS, wrote_headers)                                         \
  XX(SRV_WROTE_FIRST_BYTE, wrote_first_byte)                                   \
  XX(SRV_WROTE_RESPONSE, wrote_response)                                       \
  XX(SRV_FLOW_BLOCKED, flow_blocked)                                           \
  XX(SRV_STREAM_RESET, stream_reset)                                           \
  XX(SRV_STREAM_CLOSED, stream_closed)                                         \
  XX(SRV_GOAWAY_SENT, goaway_sent)                                             \
  XX(SRV_LOAD_SHED, load_shed)

#define H2T_EVENT_MAP(XX) H2T_CLIENT_EVENT_MAP(XX) H2T_SERVER_EVENT_MAP(XX)

typedef enum h2t_event_type {
#define H2T_EV_ENUM_(up, low) H2T_EV_##up,
  H2T_EVENT_MAP(H2T_EV_ENUM_)
#undef H2T_EV_ENUM_
  H2T_EV_COUNT_
} h2t_event_type;

#define H2T_EV_FIRST_SERVER_ H2T_EV_SRV_CONN_ACCEPTED

/* The event's name as used in hooks, JSON and exports, e.g. "got_conn".
 * Client and server events of the same meaning share a name
 * ("tls_handshake_done", "wrote_headers", "flow_blocked", "stream_reset").
 * NULL for an unknown type.  Thread-safe. */
H2T_EXTERN const char *h2t_event_name(h2t_event_type type);

/* Why a request did not get a reused connection (got_conn.new_reason), or why
 * a connection will not be reused (put_idle_conn.reason). */
#define H2T_CONN_REASON_MAP(XX)                                                \
  XX(NONE, "none")                   /* reused; or reusable */                 \
  XX(NO_CONN, "no_conn")             /* no connection to this origin */        \
  XX(MAX_STREAMS, "max_streams")     /* all at peer's MAX_CONCURRENT_STREAMS */\
  XX(GOAWAY, "goaway")               /* the existing one got/sent GOAWAY */    \
  XX(CLOSED, "closed")               /* the existing one was closed */         \
  XX(IDLE_TIMEOUT, "idle_timeout")   /* the existing one idled out */          \
  XX(DEAD, "dead")                   /* the existing one failed (I/O, ping) */ \
  XX(RETRY, "retry")                 /* a retry asked for a fresh one */       \
  XX(ERROR, "error")                 /* the request failed on it */            \
  XX(SHUTDOWN, "shutdown")           /* the client is closing */               \
  XX(STREAM_IDS, "stream_ids")       /* stream ids exhausted */

typedef enum h2t_conn_reason {
#define H2T_CR_ENUM_(up, s) H2T_CONN_##up,
  H2T_CONN_REASON_MAP(H2T_CR_ENUM_)
#undef H2T_CR_ENUM_
  H2T_CONN_REASON_COUNT_
} h2t_conn_reason;

/* "max_streams" etc.; NULL for an unknown value.  Thread-safe. */
H2T_EXTERN const char *h2t_conn_reason_name(h2t_conn_reason r);

/* Why a request was retried (retry.reason). */
typedef enum h2t_retry_reason {
  H2T_RETRY_GOAWAY = 1,         /* stream above the peer's last_stream_id */
  H2T_RETRY_REFUSED_STREAM = 2, /* RST_STREAM(REFUSED_STREAM) */
  H2T_RETRY_CONN_CLOSED = 3     /* connection died before the stream opened */
} h2t_retry_reason;

/* "goaway", "refused_stream", "conn_closed"; NULL if unknown.  Thread-safe. */
H2T_EXTERN const char *h2t_retry_reason_name(h2t_retry_reason r);

/* Why the server shed load (load_shed.reason) and what it did. */
typedef enum h2t_shed_reason {
  H2T_SHED_INFLIGHT = 1,   /* too many requests in flight */
  H2T_SHED_CONNECTIONS = 2, /* too many connections */
  /* since 0.3: the bounds of h2t_server_config */
  H2T_SHED_HEADER_TIMEOUT = 3, /* header block not complete in time */
  H2T_SHED_BODY_TIMEOUT = 4,   /* request body stalled by the peer */
  H2T_SHED_IDLE_TIMEOUT = 5,   /* response stalled: the peer does not read */
  H2T_SHED_BODY_BUDGET = 6     /* request body buffered beyond a budget */
} h2t_shed_reason;

typedef enum h2t_shed_action {
  H2T_SHED_REFUSED_STREAM = 1, /* RST_STREAM(REFUSED_STREAM): safe to retry */
  H2T_SHED_503 = 2,            /* a 503 response */
  H2T_SHED_CLOSE = 3,          /* accept and close the connection */
  /* since 0.3 */
  H2T_SHED_RESET = 4,          /* RST_STREAM (CANCEL or ENHANCE_YOUR_CALM) */
  H2T_SHED_FLOW_CONTROL = 5,   /* the stream's window is not refilled until
                                  its handler reads: the peer waits */
  H2T_SHED_EVICT = 6           /* an older connection without a complete
                                  request is closed to make room */
} h2t_shed_action;

/* "inflight", "connections", "header_timeout", "body_timeout",
 * "idle_timeout", "body_budget"; NULL if unknown.  Thread-safe. */
H2T_EXTERN const char *h2t_shed_reason_name(h2t_shed_reason r);
/* "refused_stream", "503", "close", "reset", "flow_control", "evict"; NULL
 * if unknown.  Thread-safe. */
H2T_EXTERN const char *h2t_shed_action_name(h2t_shed_action a);

/*
 * W3C Trace Context (https://www.w3.org/TR/trace-context/): the ids that
 * tie a request in one service to the requests it causes in others.  The
 * client sends them in a `traceparent` header; the server reads the
 * incoming one; the in-flight table, dumps, exports and endpoints show
 * them.  Binary here, lowercase hex on the wire and in every output.
 * A fixed struct (version 00 of the header has fixed sizes): no
 * struct_size, plain data you may copy and fill.
 */
#define H2T_TRACE_SAMPLED 0x01u /* trace-flags bit 0 */
#define H2T_TRACEPARENT_LEN 55   /* "00-" 32 hex "-" 16 hex "-" 2 hex */

typedef struct h2t_trace_context {
  uint8_t trace_id[16];      /* all zero: no context */
  uint8_t span_id[8];        /* this request's span: the parent-id its
                                traceparent carries */
  uint8_t parent_span_id[8]; /* the span that caused it; all zero: none
                                (a trace's first request, or parsed) */
  uint8_t flags;             /* trace-flags: H2T_TRACE_SAMPLED */
} h2t_trace_context;

/* Write ctx as a traceparent value, "00-<trace_id>-<span_id>-<flags>",
 * into buf (NUL-terminated; len >= H2T_TRACEPARENT_LEN + 1).  Only the
 * sampled flag is written (the spec's other bits are reserved).  Returns
 * H2T_TRACEPARENT_LEN, or H2T_ERR_INVALID_ARG (NULL, len too small, an
 * all-zero trace_id or span_id).  Thread-safe; does not allocate. */
H2T_EXTERN int h2t_trace_context_format(const h2t_trace_context *ctx,
                                        char *buf, size_t len);

/* Parse a traceparent value as the spec says a receiver must: version
 * 2 hex digits, not "ff"; for version 00 exactly 55 characters, for a later
 * version at least 55 and, if longer, '-' after them (the rest ignored);
 * trace-id 32 and parent-id 16 lowercase hex digits, neither all zero;
 * flags 2 hex digits.  Spaces and tabs around the value are allowed.  On
 * success *out gets trace_id, span_id (the sender's span: the header's
 * parent-id), flags (sampled bit only) and a zero parent_span_id.  Returns
 * 0, or H2T_ERR_INVALID_ARG (the header must then be ignored; *out is
 * zeroed).  Thread-safe. */
H2T_EXTERN int h2t_trace_context_parse(const char *value,
                                       h2t_trace_context *out);

typedef struct h2t_event {
  h2t_event_type type;
  int32_t stream_id;   /* 0 when no stream is involved yet */
  uint64_t t_us;       /* when, on the h2t_now_us() clock */
  uint64_t req_id;     /* process-unique request id; 0 for connection events */
  uint64_t conn_id;    /* process-unique connection id; 0 if none yet */
  h2t_request *req;    /* client events: the request; else NULL */
  h2t_server_req *sreq; /* server events: the request; else NULL */
  union {
    struct { const char *scheme, *authority; } get_conn;
    struct { const char *host; } dns_start;
    struct {
      const char *const *addrs; /* numeric addresses, naddrs of them */
      size_t naddrs;
      int error; /* 0 or H2T_ERR_DNS */
      int literal; /* 1: the host was an address, no lookup was made */
    } dns_done;
    struct { const char *addr; int error; } connect; /* start (error 0), done */
    struct {
      const char *sni;         /* start and done */
      const char *version;     /* done: "TLSv1.3"; NULL on failure */
      const char *cipher;      /* done */
      const char *alpn;        /* done: negotiated protocol, NULL if none */
      long verify_result;      /* done: X509_V_OK (0) or the OpenSSL code */
      const char *verify_error; /* done: text for verify_result */
      int resumed;             /* done: session resumed */
      int error;               /* done: 0 or H2T_ERR_TLS* / H2T_ERR_ALPN */
    } tls;
    struct {
      int reused;        /* the connection served an earlier request */
      int was_idle;      /* it had no active stream when picked */
      uint64_t idle_us;  /* how long it had been idle, if was_idle */
      h2t_conn_reason new_reason; /* when !reused: why a new one was made */
      uint32_t active_streams;    /* streams on it, this one included */
      uint32_t max_streams;       /* the peer's MAX_CONCURRENT_STREAMS
                                     (UINT32_MAX: unlimited); 0 while not
                                     known yet, see max_streams_known */
      int max_streams_known;      /* 0: the peer's SETTINGS have not
                                     arrived yet on this connection */
    } got_conn;
    struct {
      const char *name, *value;
      size_t namelen, valuelen;
    } header_field;
    struct { int status; } response; /* got_1xx_response, got_headers,
                                        server wrote_headers */
    struct { int error; } wrote_request;
    struct {
      int reusable;           /* it goes back to the pool */
      h2t_conn_reason reason; /* when !reusable: why */
      uint32_t active_streams; /* streams still on it */
    } put_idle_conn;
    struct {
      size_t bytes;          /* this DATA frame's payload */
      int32_t stream_window; /* receive windows left after it */
      int32_t conn_window;
    } data;
    struct {
      int conn_level;        /* 1: connection window, 0: stream window */
      int32_t stream_window; /* send windows */
      int32_t conn_window;
    } flow_blocked;
    struct { uint32_t error_code; int by_peer; } stream_reset;
    struct { int32_t last_stream_id; uint32_t error_code; int by_peer; } goaway;
    struct {
      uint32_t max_concurrent_streams; /* UINT32_MAX when not sent */
      uint32_t initial_window_size, max_frame_size;
      uint32_t header_table_size, max_header_list_size, enable_push;
    } settings;
    struct { h2t_retry_reason reason; unsigned attempt; } retry;
    struct {
      int error;          /* 0 or an H2T_ERR_ code */
      int status;         /* final HTTP status; 0 if none */
      uint64_t bytes_sent, bytes_recv; /* body bytes */
      uint64_t total_us;  /* from submit */
      unsigned attempts;  /* 1 + retries */
      uint32_t reset_code; /* RST_STREAM code when the stream was reset
                              (by either side), else 0 */
    } done;
    /* server */
    struct { const char *peer; const char *local; } conn_accepted;
    struct {
      const char *method, *path, *authority, *scheme;
      int end_stream; /* since 0.3: 1 when no body follows */
    } request_headers;
    struct { uint64_t bytes; } body; /* request_body_done, wrote_response */
    struct { const char *route; } handler_started;
    struct {
      uint32_t error_code;
      uint64_t bytes_in, bytes_out, total_us;
    } stream_closed;
    struct { int32_t last_stream_id; uint32_t error_code; } goaway_sent;
    struct { h2t_shed_reason reason; h2t_shed_action action; } load_shed;
  } u;
  /* Added after 0.2.0.  The request's trace context (client: what it sends; server:
   * what it received, with its own span), or NULL: connection events, a
   * client request without one (h2t_client_config.no_traceparent). */
  const h2t_trace_context *trace;
} h2t_event;

typedef void (*h2t_hook)(const h2t_event *ev, void *user);

/* Header of every trace struct: set struct_size with the INIT macro so the
 * struct can grow without breaking callers compiled against older headers. */
#define H2T_TRACE_HEAD_(T)                                                     \
  size_t struct_size;                                                          \
  void *user;             /* passed to every hook */                           \
  const struct T *next;   /* older trace, also run (may be NULL) */            \
  h2t_hook any            /* every event, after the specific hook */

typedef struct h2t_client_trace {
  H2T_TRACE_HEAD_(h2t_client_trace);
  h2t_hook get_conn, dns_start, dns_done, connect_start, connect_done,
      tls_handshake_start, tls_handshake_done, got_conn, wrote_header_field,
      wrote_headers, wait_100_continue, got_100_continue, got_1xx_response,
      wrote_request, got_first_response_byte, put_idle_conn;
  h2t_hook stream_opened, got_headers, got_data, flow_blocked, stream_reset,
      goaway, settings, retry, done;
} h2t_client_trace;

#define H2T_CLIENT_TRACE_INIT .struct_size = sizeof(h2t_client_trace)

typedef struct h2t_server_trace {
  H2T_TRACE_HEAD_(h2t_server_trace);
  h2t_hook conn_accepted, tls_handshake_done, request_headers,
      request_body_done, handler_started, wrote_headers, wrote_first_byte,
      wrote_response, flow_blocked, stream_reset, stream_closed, goaway_sent,
      load_shed;
} h2t_server_trace;

#define H2T_SERVER_TRACE_INIT .struct_size = sizeof(h2t_server_trace)

/* Initialise a whole client trace: every hook set to `hook`, `user` set,
 * struct_size current, `next` and `any` NULL (the struct need not be
 * initialised before).  For recorders, and to measure the cost of tracing.
 * Returns 0 or H2T_ERR_INVALID_ARG. */
H2T_EXTERN int h2t_client_trace_set_all(h2t_client_trace *tr, h2t_hook hook,
                                        void *user);
/* The same for a server trace. */
H2T_EXTERN int h2t_server_trace_set_all(h2t_server_trace *tr, h2t_hook hook,
                                        void *user);

/*
 * Write one event as a single-line JSON object into buf (NUL-terminated),
 * with "event", "t_us", "req_id", "conn", "stream" and the event's own fields
 * (got_conn: "reused", "was_idle", "idle_us", "new_reason", ...), then for
 * an event with a trace context "trace_id", "span_id" and, when it has one,
 * "parent_span_id" (lowercase hex).  Values of
 * sensitive headers (authorization, cookie, set-cookie, proxy-authorization)
 * are written as "[redacted]".  Returns the length it needed, like snprintf
 * (so a return >= len means it was truncated), or H2T_ERR_INVALID_ARG /
 * H2T_ERR_LIMIT (longer than INT32_MAX).
 * Thread-safe; does not allocate.
 */
H2T_EXTERN int h2t_event_json(const h2t_event *ev, char *buf, size_t len);

#ifdef __cplusplus
}
#endif

#endif /* H2TRACE_TRACE_H */
