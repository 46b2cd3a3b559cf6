/*
 * h2trace: the traced HTTP/2 client.
 *
 * A client owns a pool of HTTP/2 connections keyed by origin (scheme, host,
 * port) and TLS settings, and runs on one libev loop: the caller's, or one it
 * creates.  All functions here must be called on that loop's thread, except
 * where said otherwise.  Requests are asynchronous; h2t_client_fetch() is a
 * blocking convenience for simple programs.
 *
 * Life of a request: h2t_request_submit() → (trace hooks, on_headers,
 * on_data...) → on_done, exactly once, with 0 or an H2T_ERR_ code.  The
 * h2t_request handle is valid until on_done returns.  Hooks and callbacks
 * may call h2t_request_cancel() on any request, and submit new ones.
 *
 * Connections: a request takes a stream on a ready connection to its origin
 * while that connection has fewer active streams than the peer's
 * SETTINGS_MAX_CONCURRENT_STREAMS; else it joins a connection still being
 * set up (up to the stream count the origin advertised last, or 100); else a
 * new connection is opened, up to max_conns_per_origin; else it queues
 * (FIFO).  Idle connections keep a read watcher so a peer's close is seen at
 * once; they close after idle_timeout_ms.  A caller running the loop with
 * ev_run(loop, 0) therefore keeps running while connections are open:
 * h2t_client_run() returns as soon as no request is pending.
 *
 * Retries: a request that delivered any response byte is never retried.
 * One the peer provably did not process (above a GOAWAY's last_stream_id,
 * REFUSED_STREAM before any byte, never sent) is retried on another
 * connection under max_unprocessed_retries; one whose connection closed
 * after it went out and before any response byte is retried under
 * max_retries when it is GET, HEAD or OPTIONS.  Each retry fires the
 * `retry` hook.  A streamed body that already produced bytes is never
 * replayed.  The connect timeout covers DNS, TCP, TLS and the peer's first
 * SETTINGS.
 *
 * DNS runs on the loop (c-ares).  Names under ".invalid" fail at once with
 * H2T_ERR_DNS without asking any server (RFC 6761 §6.4).  For an IP literal
 * no lookup is made, but dns_start/dns_done still fire (literal = 1).
 */
#ifndef H2TRACE_CLIENT_H
#define H2TRACE_CLIENT_H

#include <sys/types.h>
#include <h2trace/common.h>
#include <h2trace/trace.h>

#ifdef __cplusplus
extern "C" {
#endif

struct ev_loop;
typedef struct h2t_client h2t_client;

typedef struct h2t_client_config {
  size_t struct_size;          /* H2T_CLIENT_CONFIG_INIT */
  struct ev_loop *loop;        /* NULL: the client makes its own */
  const h2t_mem *mem;          /* NULL: malloc and friends */
  /* Default trace for every request, run after the request's own.  Not
   * copied: it must stay valid until h2t_client_del(). */
  const h2t_client_trace *trace;
  uint32_t max_conns_per_origin; /* 0: 4.  Beyond it, requests queue */
  uint32_t max_queued;           /* 0: no limit; else H2T_ERR_LIMIT */
  uint32_t connect_timeout_ms;   /* 0: 10 000: DNS+TCP+TLS+SETTINGS */
  uint32_t idle_timeout_ms;      /* 0: 90 000; close idle conns after */
  uint32_t request_timeout_ms;   /* 0: none; per request default */
  uint32_t max_retries;          /* 0: 3 (conn lost after sending) */
  uint32_t expect_continue_timeout_ms; /* 0: 1000 */
  const char *ca_file;         /* PEM bundle; NULL: the system's */
  const char *ca_path;         /* hashed directory; NULL: the system's */
  int insecure;                /* 1: skip certificate and host checks */
  int ip_version;              /* 0: any, 4 or 6 */
  uint32_t initial_window_size; /* 0: 65535*16 per stream */
  /* Retries of requests the peer provably did not process (above a GOAWAY's
   * last_stream_id, REFUSED_STREAM before any response byte, connection lost
   * before the request went out) do not spend max_retries; this bounds them
   * so that a peer refusing everything still ends the request.  0: 10. */
  uint32_t max_unprocessed_retries;
  /* Largest response header block accepted (names + values + 32 per field,
   * as SETTINGS_MAX_HEADER_LIST_SIZE counts); beyond it the stream is reset
   * and the request fails with H2T_ERR_HEADERS_TOO_LARGE.  0: 256 KiB. */
  uint32_t max_response_header_bytes;
  /* Added after 0.2.0.  1: send no `traceparent` header, and make no trace
   * context for a request that is given no parent (h2t_request_opts.parent).
   * 0 (default): every request carries one, a new trace or its parent's. */
  int no_traceparent;
} h2t_client_config;

#define H2T_CLIENT_CONFIG_INIT .struct_size = sizeof(h2t_client_config)

/* Create a client.  cfg may be NULL for all defaults.  Returns 0 and sets
 * *out, or H2T_ERR_INVALID_ARG (also: ip_version not 0, 4 or 6) /
 * H2T_ERR_NOMEM / H2T_ERR_TLS (the CA file or path could not be loaded) /
 * H2T_ERR_SYSTEM (no loop or DNS channel could be made).  Errors are never
 * fatal to the process. */
H2T_EXTERN int h2t_client_new(h2t_client **out, const h2t_client_config *cfg);

/* Cancel every pending request (on_done with H2T_ERR_CANCELED), close every
 * connection (GOAWAY) and free the client.  NULL is a no-op.  Must not be
 * called from inside one of this client's callbacks or hooks. */
H2T_EXTERN void h2t_client_del(h2t_client *c);

/* The loop the client runs on. */
H2T_EXTERN struct ev_loop *h2t_client_loop(h2t_client *c);

/* Run the client's loop until no request is pending.  For a client that made
 * its own loop, or a caller's loop not running elsewhere.  Returns 0,
 * H2T_ERR_STATE if called re-entrantly, or H2T_ERR_INVALID_ARG for NULL. */
H2T_EXTERN int h2t_client_run(h2t_client *c);

/* Number of requests submitted and not yet done. */
H2T_EXTERN size_t h2t_client_pending(const h2t_client *c);

/* Streaming request body: copy up to len bytes into buf and return how many;
 * set *eof when there is no more.  Return H2T_BODY_DEFER (or 0 without
 * *eof) to pause until h2t_request_resume(), or a negative H2T_ERR_ code to
 * reset the stream. */
typedef ssize_t (*h2t_body_read_cb)(h2t_request *req, uint8_t *buf,
                                    size_t len, int *eof, void *user);
#define H2T_BODY_DEFER (-1)

/* Final response headers (1xx go to the got_1xx_response hook).  Return 0, or
 * non-zero to cancel the request (it completes with H2T_ERR_CALLBACK). */
typedef int (*h2t_response_headers_cb)(h2t_request *req, int status,
                                       const h2t_header *hdrs, size_t n,
                                       void *user);
/* A chunk of response body.  Return 0, or non-zero to cancel. */
typedef int (*h2t_response_data_cb)(h2t_request *req, const uint8_t *data,
                                    size_t len, void *user);
/* Called once per request.  error is 0 when a full response arrived (any
 * HTTP status), else an H2T_ERR_ code. */
typedef void (*h2t_done_cb)(h2t_request *req, int error, void *user);

typedef struct h2t_request_opts {
  size_t struct_size;          /* H2T_REQUEST_OPTS_INIT */
  const char *url;             /* http://host[:port]/path  (h2c, prior
                                  knowledge) or https:// (TLS, ALPN h2) */
  const char *method;          /* NULL: GET, or POST when there is a body */
  const h2t_header *headers;   /* copied at submit */
  size_t nheaders;
  const void *body;            /* not copied: valid until on_done */
  size_t body_len;
  h2t_body_read_cb body_read;  /* instead of body: streaming */
  int64_t body_length;         /* with body_read: content-length, -1 none */
  h2t_response_headers_cb on_headers;
  h2t_response_data_cb on_data;
  h2t_done_cb on_done;
  void *user;                  /* passed to the callbacks above */
  /* This request's trace, run before the client's default.  The struct is
   * copied; traces reached through its `next` are not and must stay valid
   * until on_done. */
  const h2t_client_trace *trace;
  uint32_t timeout_ms;         /* 0: the client's request_timeout_ms */
  /* Added after 0.2.0.  The trace this request belongs to: its trace_id
   * and flags are kept, its span_id becomes the request's parent_span_id,
   * and the request gets a span_id of its own (copied at submit; its
   * parent_span_id is not read).  Pass what h2t_server_req_trace_context()
   * gave a handler to continue the incoming trace.  NULL, or an all-zero
   * trace_id or span_id: a new trace. */
  const h2t_trace_context *parent;
} h2t_request_opts;

#define H2T_REQUEST_OPTS_INIT .struct_size = sizeof(h2t_request_opts)

/* Start a request.  Header names are sent lowercased; hop-by-hop headers
 * (connection, keep-alive, proxy-connection, transfer-encoding, upgrade,
 * host) are dropped; content-length is added for a known body length;
 * `traceparent` is added (see h2t_request_opts.parent) unless the client
 * has no_traceparent or o->headers has one: the application's wins, and
 * the request takes its ids when it parses.  A name that is not an RFC 9110
 * token, or a value with CR, LF or leading or trailing blanks (malformed in
 * HTTP/2), is H2T_ERR_INVALID_ARG.
 * "expect: 100-continue" with a body holds the body until a 100 arrives or
 * expect_continue_timeout_ms passes.  Hooks for the request may run before
 * this returns (get_conn, got_conn).  Returns 0 and sets *out (may be NULL;
 * set to NULL if a hook already completed the request), or
 * H2T_ERR_INVALID_ARG / H2T_ERR_BAD_URL / H2T_ERR_NOMEM / H2T_ERR_LIMIT /
 * H2T_ERR_SHUTDOWN, in which case no callback will be called.  Everything
 * that fails later (DNS, connect, TLS, reset, timeout...) arrives in on_done.
 */
H2T_EXTERN int h2t_request_submit(h2t_client *c, const h2t_request_opts *o,
                                  h2t_request **out);

/* Cancel: resets the stream with CANCEL if open; on_done runs with
 * H2T_ERR_CANCELED before this returns.  Returns 0, H2T_ERR_INVALID_ARG for
 * NULL, or H2T_ERR_STATE if the request is already done (or inside its own
 * on_done).  May be called from
 * the request's hooks and callbacks.  From another thread, go through the
 * in-flight table's cancel, which posts to the loop. */
H2T_EXTERN int h2t_request_cancel(h2t_request *req);

/* Resume a streaming body that returned H2T_BODY_DEFER: body_read is called
 * again from the loop.  Returns 0 (also when nothing was deferred),
 * H2T_ERR_INVALID_ARG for NULL or H2T_ERR_STATE if the request is done. */
H2T_EXTERN int h2t_request_resume(h2t_request *req);

/* Process-unique id (the one in h2t_event.req_id and the in-flight table). */
H2T_EXTERN uint64_t h2t_request_id(const h2t_request *req);
H2T_EXTERN void *h2t_request_user(const h2t_request *req);
/* Final status so far (0 before headers). */
H2T_EXTERN int h2t_request_status(const h2t_request *req);
H2T_EXTERN h2t_client *h2t_request_client(const h2t_request *req);
/* The request's trace context (the traceparent it sends: trace_id, its own
 * span_id, flags; and parent_span_id).  Returns 0, H2T_ERR_INVALID_ARG
 * (NULL) or H2T_ERR_NOT_FOUND (it has none: no_traceparent, or an
 * application traceparent that does not parse); *out is zeroed then. */
H2T_EXTERN int h2t_request_trace_context(const h2t_request *req,
                                         h2t_trace_context *out);

/* What the blocking call collects.  Free it with h2t_response_free(), which
 * does not need the client: the response carries its allocator. */
typedef struct h2t_response {
  int status;
  h2t_header *headers; /* owned: free with h2t_response_free() */
  size_t nheaders;
  uint8_t *body;       /* owned, NUL-terminated for convenience */
  size_t body_len;
  /* The allocator that owns headers and body: a copy of the client's
   * h2t_client_config.mem (all NULL: malloc).  Its `user` must stay valid
   * until the response is freed. */
  h2t_mem mem;
} h2t_response;

/* Blocking convenience: submit, run the client's loop until this request is
 * done, collect the response.  o->on_headers/on_data/on_done are ignored
 * (it uses its own); o->user stays the application's: hooks get it from
 * h2t_request_user() as for any request.
 * Returns 0 or the request's error; resp is filled on 0 and zeroed
 * otherwise.  Must not be called while the loop is already running. */
H2T_EXTERN int h2t_client_fetch(h2t_client *c, const h2t_request_opts *o,
                                h2t_response *resp);
/* Free what a response owns and zero it; the client may be gone already.
 * NULL is a no-op; so is a zeroed response. */
H2T_EXTERN void h2t_response_free(h2t_response *resp);

/* Pool statistics, for benchmarks and the diagnostics. */
typedef struct h2t_client_stats {
  uint64_t requests_submitted, requests_succeeded, requests_failed;
  uint64_t conns_opened, conns_reused_picks, retries;
  uint64_t new_conn_reason[H2T_CONN_REASON_COUNT_];
  uint32_t conns_open, requests_queued;
} h2t_client_stats;

H2T_EXTERN void h2t_client_stats_get(const h2t_client *c,
                                     h2t_client_stats *out);

#ifdef __cplusplus
}
#endif

#endif /* H2TRACE_CLIENT_H */
