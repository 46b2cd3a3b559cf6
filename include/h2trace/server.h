/*
 * h2trace: the traced HTTP/2 server.
 *
 * A server listens on TCP (IPv4/IPv6), either h2c with prior knowledge or
 * TLS with ALPN "h2", and runs on one libev loop: the caller's, or one it
 * creates.  Requests go to handlers registered by path prefix; a handler
 * answers at once or later (from a timer, another request...), with a body
 * from a buffer, a file, or a generator with back-pressure.
 *
 * Threads: every function here must be called on the server's loop thread,
 * except h2t_server_shutdown_async() and h2t_server_writer_depth(), which are
 * thread-safe.  With h2t_server_config.threads = N > 1 the server runs N
 * loops: worker 0 on h2t_server_loop() (the caller's loop or its own, run
 * by h2t_server_run) and N-1 on threads of its own, each with its own
 * listening sockets (SO_REUSEPORT, same address and port), connections and
 * writer.  "The server's loop" above then means worker 0's; a request's
 * handler, callbacks and h2t_server_req_*() calls run on the loop of its
 * connection, h2t_server_req_loop(), so handlers, their `user` data and the
 * trace must be safe to call from N threads at once.  Frame output leaves through a writer (h2t_writer_mode); in the
 * default mode a writer thread that lives as long as the server does the
 * send(2) calls, so the loop never blocks on a socket.  With a writer thread,
 * the allocator (h2t_server_config.mem) must be thread-safe.
 *
 * Life of a request: headers complete → handler(req) → the handler answers
 * with one h2t_server_req_respond*() call → on_close(req, code), exactly
 * once, after which the handle is invalid.  A handler that answers later
 * must register on_close to learn that the stream went away (client reset,
 * cancel from the diagnostics, timeout, shutdown).
 */
#ifndef H2TRACE_SERVER_H
#define H2TRACE_SERVER_H

#include <sys/types.h>
#include <h2trace/common.h>
#include <h2trace/trace.h>

#ifdef __cplusplus
extern "C" {
#endif

struct ev_loop;
typedef struct h2t_server h2t_server;

/* How frame output reaches the socket.  REUSED is the production mode; the
 * others exist to compare against it (h2bench writer). */
typedef enum h2t_writer_mode {
  H2T_WRITER_REUSED = 0, /* one writer thread for the server's lifetime */
  H2T_WRITER_SPAWN = 1,  /* a new thread per write of at most one frame
                            (16 KiB + 9), one at a time per connection,
                            like Go's writeFrameAsync */
  H2T_WRITER_INLINE = 2  /* send(2) on the loop thread */
} h2t_writer_mode;

/* "reused", "spawn", "inline"; NULL if unknown.  Thread-safe. */
H2T_EXTERN const char *h2t_writer_mode_name(h2t_writer_mode m);
/* Parse a name into *out.  Returns 0 or H2T_ERR_INVALID_ARG. */
H2T_EXTERN int h2t_writer_mode_parse(const char *name, h2t_writer_mode *out);

typedef struct h2t_server_config {
  size_t struct_size;          /* H2T_SERVER_CONFIG_INIT */
  struct ev_loop *loop;        /* NULL: the server makes its own */
  const h2t_mem *mem;          /* NULL: malloc and friends */
  /* Trace for every request and connection.  Not copied: it must stay
   * valid until h2t_server_del(). */
  const h2t_server_trace *trace;
  h2t_writer_mode writer;      /* default H2T_WRITER_REUSED */
  uint32_t max_concurrent_streams; /* advertised; 0: 100 */
  uint32_t max_header_list_size;   /* request headers; 0: 64 KiB.  Larger
                                      requests get a 431 */
  uint32_t max_conns;          /* 0: no limit.  Beyond it (or out of file
                                  descriptors) the connection that has gone
                                  longest without a complete request is
                                  closed to make room; if none, the new one
                                  is accepted and closed */
  uint32_t shed_inflight;      /* 0: off.  Requests in flight beyond it are
                                  shed (see shed_action) */
  h2t_shed_action shed_action; /* 0 or H2T_SHED_REFUSED_STREAM: RST_STREAM
                                  (REFUSED_STREAM); H2T_SHED_503: a 503 */
  uint32_t idle_timeout_ms;    /* 0: 120 000; a connection with no stream
                                  and no input for that long is closed */
  uint32_t handshake_timeout_ms; /* 0: 10 000; TLS handshake + preface */
  uint32_t stream_timeout_ms;  /* 0: none; reset a stream (CANCEL) that has
                                  not completed after that long */
  uint32_t shutdown_timeout_ms; /* 0: 10 000; graceful drain, then close */
  uint32_t initial_window_size; /* 0: 1 MiB per stream */
  uint32_t write_queue_limit;  /* bytes queued per connection before the
                                  server stops producing frames; 0: 512 KiB */
  /* Since 0.2.  A graceful shutdown (h2t_server_shutdown*) is over: called
   * once, on the loop, after the last connection closed (drained, or
   * forced at shutdown_timeout_ms).  A server on the application's loop
   * stops that loop here instead of guessing when to ev_break.  Not called
   * when h2t_server_del() comes first.  NULL: nothing is called. */
  void (*on_shutdown_done)(h2t_server *s, void *user);
  void *shutdown_user;         /* passed to on_shutdown_done */
  /* Since 0.3: what a peer can make the server hold (doc/guide.md,
   * "Limits").  0 is the default; H2T_SERVER_UNLIMITED turns a timeout off.
   * Each limit that acts is a load_shed event and counts in /metrics. */
  uint32_t header_timeout_ms;  /* 0: 30 000; a header block (HEADERS +
                                  CONTINUATION) not complete after that long:
                                  GOAWAY(PROTOCOL_ERROR) and close, since the
                                  connection can carry nothing else */
  uint32_t body_timeout_ms;    /* 0: 60 000; a request body that the peer
                                  could send (window open) but that gets no
                                  DATA for that long: RST_STREAM(CANCEL) */
  uint32_t stream_idle_timeout_ms; /* 0: 60 000; a response that makes no
                                  progress for that long because the peer
                                  does not read it (window or socket full):
                                  RST_STREAM(CANCEL).  Also bounds how long
                                  a closing connection drains to such a peer */
  uint32_t body_conn_budget;   /* request body bytes a connection may have
                                  buffered for handlers that have not read
                                  them; it is the connection's receive
                                  window.  0: 16 MiB; 65 535 to 2^31-1 */
  uint64_t body_server_budget; /* the same for the whole server; beyond it
                                  the stream that would buffer more is reset
                                  (ENHANCE_YOUR_CALM).  0: 256 MiB */
  /* Since 0.3: loops the server runs on.  0 or 1: one, as before.  N > 1
   * (at most 256): worker 0 on `loop` and N-1 worker threads, each with its
   * own loop, listening sockets and writer; the kernel spreads connections
   * over them.  The limits max_conns, shed_inflight and body_server_budget
   * then apply to each worker's own connections and requests (up to N times
   * them for the server): they are checked where the connection lives, with
   * no lock shared between loops. */
  uint32_t threads;
  /* Since 0.3, with the reused writer: how long (microseconds) its thread
   * stays awake after its last write before it sleeps, giving the CPU
   * away (sched_yield) while it looks for more.  0 (default): it sleeps at
   * once and the loop wakes it for the next write.  At low concurrency the
   * wake-up is most of the hand-off's cost (on a virtual machine, an idle
   * virtual CPU to wake): on our 2-core test machine, h2load -c 1 -m 10
   * (6 B, h2c) went from 101 k to 154 k req/s with 50, but the server
   * used 2.2 times the CPU time for it (the thread holds a CPU while
   * traffic flows); with -c 100 it changed nothing.  At most 10 000. */
  uint32_t writer_spin_us;
} h2t_server_config;

/* A timeout field set to this is off. */
#define H2T_SERVER_UNLIMITED UINT32_MAX

#define H2T_SERVER_CONFIG_INIT .struct_size = sizeof(h2t_server_config)

/* Create a server.  cfg may be NULL for all defaults.  With threads > 1 the
 * worker threads start here.  Returns 0 and sets *out, or
 * H2T_ERR_INVALID_ARG / H2T_ERR_NOMEM / H2T_ERR_SYSTEM (a writer or worker
 * thread, or a loop, could not start). */
H2T_EXTERN int h2t_server_new(h2t_server **out, const h2t_server_config *cfg);

/* Close every listener and connection at once (no drain), stop the writer
 * thread and free the server.  Open requests get on_close(CANCEL).  NULL is
 * a no-op.  Not from inside one of the server's callbacks.  With threads > 1
 * the worker threads are stopped and joined first; their requests' on_close
 * then runs on the calling thread, none of the loops running. */
H2T_EXTERN void h2t_server_del(h2t_server *s);

/* The loop the server runs on (worker 0's with threads > 1). */
H2T_EXTERN struct ev_loop *h2t_server_loop(h2t_server *s);

typedef struct h2t_listen_opts {
  size_t struct_size;          /* H2T_LISTEN_OPTS_INIT */
  const char *address;         /* numeric IPv4/IPv6; NULL: "127.0.0.1" */
  uint16_t port;               /* 0: ephemeral, see h2t_server_port() */
  const char *cert_file;       /* PEM chain: TLS with ALPN h2.  NULL: h2c
                                  with prior knowledge */
  const char *key_file;        /* PEM private key (with cert_file) */
  int backlog;                 /* 0: 511 */
} h2t_listen_opts;

#define H2T_LISTEN_OPTS_INIT .struct_size = sizeof(h2t_listen_opts)

/* Start listening.  May be called several times (several addresses).
 * Returns the listener's index (>= 0), or H2T_ERR_INVALID_ARG /
 * H2T_ERR_BIND / H2T_ERR_TLS (cert/key could not be loaded) /
 * H2T_ERR_NOMEM / H2T_ERR_STATE (shutting down) / H2T_ERR_LIMIT (more than
 * 8 listeners). */
H2T_EXTERN int h2t_server_listen(h2t_server *s, const h2t_listen_opts *o);

/* The port listener `index` is bound to (the real one when asked for 0), or
 * 0 when s is NULL or index is not one of its listeners (0 is never a bound
 * port).  uint16_t like every port in the API (h2t_listen_opts.port,
 * h2t_diag_port()). */
H2T_EXTERN uint16_t h2t_server_port(const h2t_server *s, int index);

/* Called on the loop when a request's headers are complete.  The handler
 * answers now or later with h2t_server_req_respond*(), and may register
 * on_body / on_close. */
typedef void (*h2t_handler_fn)(h2t_server_req *req, void *user);

/* Route requests whose path (before '?') starts with `prefix` (e.g. "/",
 * "/api/") to fn; the longest matching prefix wins; no match gets a 404.
 * prefix is copied.  With threads > 1, routes are set before the first
 * h2t_server_listen() (the workers read them without a lock).  Returns 0,
 * H2T_ERR_INVALID_ARG, H2T_ERR_NOMEM or H2T_ERR_STATE (threads > 1 and
 * already listening). */
H2T_EXTERN int h2t_server_handle(h2t_server *s, const char *prefix,
                                 h2t_handler_fn fn, void *user);

/* Run the loop until the server has shut down (h2t_server_shutdown*), after
 * on_shutdown_done if set.
 * Returns 0, H2T_ERR_INVALID_ARG for NULL or H2T_ERR_STATE if called
 * re-entrantly. */
H2T_EXTERN int h2t_server_run(h2t_server *s);

/* Graceful shutdown: stop accepting, send GOAWAY on every connection, let
 * in-flight streams finish (up to shutdown_timeout_ms), then close, then
 * call h2t_server_config.on_shutdown_done from the loop (never from inside
 * this call); with threads > 1, every worker drains on its own loop and
 * on_shutdown_done is called once, on worker 0's loop, after the last.  On the loop thread; idempotent.  Returns 0, or
 * H2T_ERR_INVALID_ARG for NULL. */
H2T_EXTERN int h2t_server_shutdown(h2t_server *s);
/* The same from any thread (or a signal-free context): posts to the loop. */
H2T_EXTERN void h2t_server_shutdown_async(h2t_server *s);

typedef struct h2t_server_stats {
  uint64_t conns_accepted, requests, responses, resets_sent, resets_recv;
  uint64_t shed_refused, shed_503, shed_conns; /* load shedding */
  uint64_t bytes_in, bytes_out;                /* on the wire */
  uint64_t writer_flushes;     /* queue items handed to the writer */
  uint64_t writer_blocked;     /* times a connection hit write_queue_limit */
  uint32_t conns_open, inflight;
  uint32_t writer_queue_depth; /* items queued to the writer, now */
  uint32_t writer_queue_max;   /* the most ever queued at once */
  /* Since 0.3: the limits of h2t_server_config (doc/guide.md, "Limits"). */
  uint64_t body_buffered;      /* request body bytes held for handlers, now */
  uint64_t body_buffered_max;  /* the most ever held at once */
  uint64_t body_flow_held;     /* streams whose window was held back because
                                  their handler had not read */
  uint64_t body_budget_resets; /* streams reset: body_server_budget */
  uint64_t header_timeouts;    /* connections closed: header_timeout_ms */
  uint64_t body_timeouts;      /* streams reset: body_timeout_ms */
  uint64_t idle_timeouts;      /* streams reset: stream_idle_timeout_ms */
  uint64_t conns_evicted;      /* connections closed to make room (max_conns
                                  or out of descriptors) */
} h2t_server_stats;

/* Counters since creation.  On the loop thread (or after it stopped).
 * With threads > 1: the sum over workers, each other worker's as of its
 * last loop iteration (and final once the shutdown is done);
 * writer_queue_max and body_buffered_max are then the sums of each
 * worker's maximum. */
H2T_EXTERN void h2t_server_stats_get(const h2t_server *s,
                                     h2t_server_stats *out);
/* Items queued to the writer now.  Thread-safe. */
H2T_EXTERN uint32_t h2t_server_writer_depth(const h2t_server *s);

/* --- a request ---------------------------------------------------------- */

/* Request pseudo-headers (never NULL; "" when absent) and id. */
H2T_EXTERN const char *h2t_server_req_method(const h2t_server_req *r);
H2T_EXTERN const char *h2t_server_req_path(const h2t_server_req *r);
H2T_EXTERN const char *h2t_server_req_scheme(const h2t_server_req *r);
H2T_EXTERN const char *h2t_server_req_authority(const h2t_server_req *r);
/* Request headers (not pseudo-headers); names are lowercase: a request
 * with an upper-case field name is malformed (RFC 9113 §8.2.1), and
 * nghttp2 resets its stream with PROTOCOL_ERROR before any handler runs.
 * Valid until on_close. */
H2T_EXTERN const h2t_header *h2t_server_req_headers(const h2t_server_req *r,
                                                    size_t *n);
/* First header named `name` (lowercase), or NULL. */
H2T_EXTERN const char *h2t_server_req_header(const h2t_server_req *r,
                                             const char *name);
/* Process-unique request id (h2t_event.req_id), stream and connection. */
H2T_EXTERN uint64_t h2t_server_req_id(const h2t_server_req *r);
H2T_EXTERN int32_t h2t_server_req_stream_id(const h2t_server_req *r);
H2T_EXTERN uint64_t h2t_server_req_conn_id(const h2t_server_req *r);
H2T_EXTERN h2t_server *h2t_server_req_server(const h2t_server_req *r);
/* The loop the request lives on: its handler and callbacks run there, and
 * its h2t_server_req_*() calls are made there.  A handler that answers
 * later starts its timers on this loop (with threads > 1 it is not always
 * h2t_server_loop()).  NULL for NULL.  Since 0.3. */
H2T_EXTERN struct ev_loop *h2t_server_req_loop(const h2t_server_req *r);
/* The request's trace context: the incoming traceparent's trace_id and
 * flags, a span_id of its own, and the sender's span as parent_span_id; or,
 * when no valid traceparent came (invalid ones are ignored, as the spec
 * says), a new trace with no parent.  A handler that makes client requests
 * passes it as h2t_request_opts.parent so they join the trace.  Returns 0
 * or H2T_ERR_INVALID_ARG (NULL; *out zeroed when out is not NULL). */
H2T_EXTERN int h2t_server_req_trace_context(const h2t_server_req *r,
                                            h2t_trace_context *out);
/* Has the request been canceled (reset by the peer, by the diagnostics,
 * by a timeout or by h2t_server_del)? */
H2T_EXTERN int h2t_server_req_canceled(const h2t_server_req *r);

/* Free text shown by the diagnostics for this request ("querying db").
 * Copied.  Returns 0 or H2T_ERR_INVALID_ARG. */
H2T_EXTERN int h2t_server_req_set_status(h2t_server_req *r, const char *text);

/* A chunk of request body; eof=1 on the last call (len may be 0).  Return
 * 0, or non-zero to reset the stream (CANCEL). */
typedef int (*h2t_server_body_cb)(h2t_server_req *r, const uint8_t *data,
                                  size_t len, int eof, void *user);
/* The stream is over: error_code 0 after a complete response, else the
 * HTTP/2 code it was reset with.  The handle is invalid after it returns. */
typedef void (*h2t_server_close_cb)(h2t_server_req *r, uint32_t error_code,
                                    void *user);

/* Register callbacks (either may be NULL); `user` is shared by both.  A body
 * that fully arrived before registration is delivered at once (eof=1 with
 * len 0 if there was none).  Returns 0, H2T_ERR_INVALID_ARG (NULL) or
 * H2T_ERR_STATE (the stream is closed). */
H2T_EXTERN int h2t_server_req_on(h2t_server_req *r, h2t_server_body_cb on_body,
                                 h2t_server_close_cb on_close, void *user);

/* Response body generator: copy up to len bytes into buf and return how
 * many; set *eof when done.  Return H2T_SERVER_BODY_DEFER to pause until
 * h2t_server_req_resume(), or a negative H2T_ERR_ code to reset the stream.
 * It is only called when the peer's flow-control window and the write
 * queue have room (back-pressure). */
typedef ssize_t (*h2t_server_gen_cb)(h2t_server_req *r, uint8_t *buf,
                                     size_t len, int *eof, void *user);
#define H2T_SERVER_BODY_DEFER (-1)

/* Flags for h2t_server_req_respond(). */
#define H2T_RESPOND_NOCOPY 1u /* body is not copied: it must stay valid
                                 until on_close (or h2t_server_del); on
                                 h2c the writer sends it from there, and
                                 on_close waits until it has */

/* Answer with status, headers (copied; pseudo-headers are refused) and a
 * body from a buffer (copied unless H2T_RESPOND_NOCOPY; len 0: none).  One
 * respond call per request.  Returns 0 or H2T_ERR_INVALID_ARG /
 * H2T_ERR_STATE (already answered, or the stream is closed) /
 * H2T_ERR_NOMEM. */
H2T_EXTERN int h2t_server_req_respond(h2t_server_req *r, int status,
                                      const h2t_header *hdrs, size_t n,
                                      const void *body, size_t len,
                                      unsigned flags);
/* The same with a body read from fd (owned by the server from this call:
 * closed at stream end, also on error) from offset off, len bytes (-1: to
 * end of file).  Adds content-length when len is known. */
H2T_EXTERN int h2t_server_req_respond_file(h2t_server_req *r, int status,
                                           const h2t_header *hdrs, size_t n,
                                           int fd, off_t off, int64_t len);
/* The same with a generated body (see h2t_server_gen_cb). */
H2T_EXTERN int h2t_server_req_respond_gen(h2t_server_req *r, int status,
                                          const h2t_header *hdrs, size_t n,
                                          h2t_server_gen_cb gen, void *user);
/* Resume a generator that returned H2T_SERVER_BODY_DEFER.  Returns 0,
 * H2T_ERR_INVALID_ARG (NULL) or H2T_ERR_STATE. */
H2T_EXTERN int h2t_server_req_resume(h2t_server_req *r);
/* Trailers to send after the body (copied).  Call before the body ends
 * (before respond for buffers and files, or before the generator's eof).
 * Returns 0, H2T_ERR_INVALID_ARG, H2T_ERR_STATE or H2T_ERR_NOMEM. */
H2T_EXTERN int h2t_server_req_set_trailers(h2t_server_req *r,
                                           const h2t_header *hdrs, size_t n);
/* Reset the stream with an HTTP/2 error code (e.g. 8, CANCEL).  on_close
 * follows.  Returns 0, H2T_ERR_INVALID_ARG (NULL) or H2T_ERR_STATE. */
H2T_EXTERN int h2t_server_req_reset(h2t_server_req *r, uint32_t error_code);

#ifdef __cplusplus
}
#endif

#endif /* H2TRACE_SERVER_H */
