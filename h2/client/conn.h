/*
 * The client's connection layer: one HTTP/2 connection, DNS → TCP → (TLS)
 * → nghttp2 session, and the streams on it.
 *
 * The client is a one-way stack; each layer calls the ones below it only:
 *
 *   client.c   a request's whole life: hooks, callbacks, hold/release,
 *      |       finish, the retry decision; the only file that frees one
 *      v
 *   pool.c     origins; which connection a request should use, opening one
 *      |
 *      v
 *   conn.c     transport: DNS, TCP, TLS, reads, batched writes, timers
 *   session.c  the nghttp2 session over it: frames in and out
 *      |
 *      v
 *   h2/net/    URL, DNS, TCP, TLS helpers
 *
 * This layer knows nothing of requests.  A stream carries an opaque pointer
 * (`su`, the client's request); everything that happens on the connection
 * is reported up through h2t__conn_cbs, which the client registers, in the
 * way nghttp2 reports to its application.  A callback may call back down
 * into this layer (submit, reset, resume): the connection is never freed
 * under it (in_io defers a close to the end of the I/O section).
 */
#ifndef H2T_CLIENT_CONN_H
#define H2T_CLIENT_CONN_H

#include <stdint.h>
#include <sys/queue.h>

#include <ev.h>
#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>

#include <h2trace/trace.h>
#include "h2/common/slab.h"
#include "h2/net/net.h"

typedef struct h2t__conn h2t__conn;
struct h2t_request;

/* What the connection reports up.  `su` is the stream's opaque pointer as
 * given to h2t__conn_submit(). */
typedef struct h2t__conn_cbs {
  /* A connection-level event (dns_*, connect_*, tls_*, settings, goaway) for
   * the requests waiting on or streaming over cn; ev has type, conn_id, t_us
   * and the payload. */
  void (*conn_event)(h2t__conn *cn, h2t_event *ev);
  /* The transport is up and the session made: streams may be submitted. */
  void (*ready)(h2t__conn *cn);
  /* The peer's SETTINGS arrived (max_streams may have changed). */
  void (*settings)(h2t__conn *cn);
  /* The connection is gone (every resource released but the struct, which
   * is freed when this returns).  Its streams were not reported closed: the
   * callee settles them.  error: why (H2T_ERR_*). */
  void (*closed)(h2t__conn *cn, h2t_conn_reason reason, int error);
  /* Output was written; streams with a body may now be flow-blocked. */
  void (*flushed)(h2t__conn *cn);

  /* A frame of the stream went out: HEADERS (eos: it ended the request) or
   * the DATA frame that ended the request body. */
  void (*sent_headers)(void *su, int eos);
  void (*sent_body_end)(void *su);
  /* A response HEADERS frame begins (first byte of the response, of a 1xx,
   * or of the trailers). */
  void (*begin_headers)(void *su);
  /* One field of it.  Non-zero: the stream is reset (INTERNAL_ERROR) and no
   * more of it is reported but its close. */
  int (*header)(void *su, nghttp2_rcbuf *name, nghttp2_rcbuf *value);
  /* The HEADERS frame is complete; eos: it ended the response. */
  void (*headers_done)(void *su, int eos);
  /* Response body bytes.  Non-zero: reset the stream (CANCEL). */
  int (*data)(void *su, const uint8_t *d, size_t len);
  /* A DATA frame was received whole. */
  void (*data_frame)(void *su, size_t bytes, int eos, int32_t stream_window,
                     int32_t conn_window);
  /* RST_STREAM, sent (by_peer 0: by nghttp2 itself or h2t__conn_reset) or
   * received. */
  void (*stream_reset)(void *su, uint32_t code, int by_peer);
  /* The request body: as nghttp2's read callback, flags NGHTTP2_DATA_FLAG_*.
   * Returns bytes, NGHTTP2_ERR_DEFERRED or
   * NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE. */
  ssize_t (*body_read)(void *su, uint8_t *buf, size_t len, uint32_t *flags);
  /* A DATA frame of a body that body_read marked NGHTTP2_DATA_FLAG_NO_COPY:
   * send hd (9 bytes) and len payload bytes with h2t__conn_send_body().
   * 0, NGHTTP2_ERR_WOULDBLOCK (asked again later) or
   * NGHTTP2_ERR_CALLBACK_FAILURE. */
  int (*body_send)(void *su, const uint8_t *hd, size_t len);
  /* The stream is closed (nghttp2's on_stream_close).  Not called for a
   * stream taken off with h2t__conn_reset()/h2t__conn_detach(). */
  void (*stream_closed)(void *su, int32_t stream_id, uint32_t code);
} h2t__conn_cbs;

/* What all connections of one client share. */
typedef struct h2t__conn_ctx {
  struct ev_loop *loop;
  const h2t_mem *mem;
  const h2t__conn_cbs *cbs;
  h2_dns *dns;
  SSL_CTX *ssl_ctx;        /* made on the first https connection */
  char *ca_file, *ca_path;
  int insecure, ip_version;
  uint32_t connect_timeout_ms, idle_timeout_ms, initial_window_size;
  uint32_t max_header_list; /* advertised SETTINGS_MAX_HEADER_LIST_SIZE */
  nghttp2_session_callbacks *ngcbs;
  nghttp2_option *ngopt;
  h2t__slab *slab;         /* nghttp2's blocks (NULL: nghttp2's own
                              allocator, see conn.c) */
  nghttp2_mem ngmem;
  TAILQ_HEAD(, h2t__conn) dirty; /* to flush before the loop polls */
  ev_prepare flush_w;
  /* called after the flush that runs before each poll (the client checks
   * whether a request completed meanwhile) */
  void (*after_flush)(struct h2t__conn_ctx *ctx);
  /* While one read is processed: its arrival time, shared by every event
   * the read causes; while a flush writes, the time its first traced frame
   * went out (read once, lazily).  0 otherwise. */
  uint64_t ts;
  void *user; /* the client */
  /* NULL: h2t__tcp_connect().  The fuzz targets put a socketpair here, so
   * a peer needs no network.  Returns a connected or connecting
   * non-blocking fd, or -errno. */
  int (*connect_fn)(const struct sockaddr_storage *sa, void *arg);
  void *connect_arg;
} h2t__conn_ctx;

typedef enum h2t__conn_state {
  H2T__CONN_DNS = 0,
  H2T__CONN_CONNECTING,
  H2T__CONN_TLS,
  H2T__CONN_READY,
  H2T__CONN_CLOSED
} h2t__conn_state;

TAILQ_HEAD(h2t__req_list, h2t_request);

struct h2t__conn {
  /* --- owned by the layers above; this layer never reads them --------- */
  TAILQ_ENTRY(h2t__conn) link;  /* the origin's connections (pool) */
  struct h2t__origin *origin;   /* pool */
  struct h2t__req_list waiters; /* client: requests waiting for setup */
  struct h2t__req_list streams; /* client: requests with a stream here */
  uint32_t nwaiters;            /* client */
  uint32_t nattached;           /* client: requests on `streams` */
  uint64_t served;              /* client: requests that got this conn */
  uint64_t idle_since;          /* client */
  h2t_conn_reason open_reason;  /* pool */
  int tp_named;                 /* client: a traceparent went out indexed */
  /* --- this layer's --------------------------------------------------- */
  h2t__conn_ctx *ctx;
  TAILQ_ENTRY(h2t__conn) dirty_link;
  uint64_t id;
  h2t__conn_state state;
  /* where to: set by h2t__conn_new's caller, read only here */
  const char *host;
  uint16_t port;
  int tls, host_is_ip;
  SSL_SESSION **tls_session;    /* the origin's: resumed, then replaced */
  int fd;
  SSL *ssl;
  nghttp2_session *sess;
  ev_io rio, wio;
  ev_timer timer;        /* connect timeout (to the peer's first SETTINGS),
                            then idle timeout */
  ev_timer kick;         /* starts the setup from the loop */
  struct connreg_entry *reg; /* /debug/connections entry, or NULL */
  h2_dns_query *dnsq;
  struct sockaddr_storage *addrs;
  size_t naddrs, addr_idx;
  char addr_str[64];
  uint32_t nstreams;      /* streams submitted and not yet closed */
  uint32_t max_streams;   /* the peer's (UINT32_MAX unlimited), once known */
  int settings_seen;      /* the peer's first SETTINGS arrived */
  int got_bytes;          /* any byte received */
  h2t_conn_reason drain_reason; /* why no new streams (NONE: usable) */
  int32_t goaway_last_id; /* -1: no GOAWAY received */
  int error;              /* first fatal error */
  uint8_t *out;           /* pending output */
  size_t outlen, outoff, outcap;
  int dirty;
  int in_io;              /* inside an I/O section: defer the close */
  int close_pending;
  h2t_conn_reason close_reason;
  int close_error;
  int nbody_pending;      /* streams with a body still to send */
  int32_t hdr_sid;        /* the header block being received ... */
  void *hdr_su;           /* ... and its stream's pointer (NULL: gone) */
};

/* --- the shared context ------------------------------------------------- */
/* 0 or H2T_ERR_NOMEM / H2T_ERR_SYSTEM.  ctx's plain fields (loop, mem, cbs,
 * timeouts, TLS settings) are set by the caller before. */
int h2t__conn_ctx_init(h2t__conn_ctx *ctx);
void h2t__conn_ctx_fini(h2t__conn_ctx *ctx);
/* The TLS context, made on first use (loading CAs).  0 or H2T_ERR_TLS. */
int h2t__conn_ctx_ssl(h2t__conn_ctx *ctx);

/* --- a connection ------------------------------------------------------- */
/* A connection to host:port, not started.  NULL on allocation failure. */
h2t__conn *h2t__conn_new(h2t__conn_ctx *ctx, const char *host, uint16_t port,
                         int tls, int host_is_ip, SSL_SESSION **tls_session);
/* Begin setup from the loop (next iteration), under the connect timeout. */
void h2t__conn_start(h2t__conn *cn);
/* Close: now, or at the end of the I/O section under way.  closed() is
 * reported with reason and error. */
void h2t__conn_close(h2t__conn *cn, h2t_conn_reason reason, int error);
/* Free without callbacks (client teardown): a GOAWAY if it was ready. */
void h2t__conn_free(h2t__conn *cn);
/* Flush before the loop polls. */
void h2t__conn_mark_dirty(h2t__conn *cn);
/* Pull frames from the session and write them. */
void h2t__conn_flush(h2t__conn *cn);
/* From body_send: the frame header and its payload straight into the
 * output, the payload's one copy.  0, NGHTTP2_ERR_WOULDBLOCK (the output
 * is full: asked again once written) or NGHTTP2_ERR_CALLBACK_FAILURE. */
int h2t__conn_send_body(h2t__conn *cn, const uint8_t *hd, size_t hdlen,
                        const uint8_t *data, size_t len);
/* Leave an I/O section: a close asked meanwhile happens now. */
void h2t__conn_end_io(h2t__conn *cn);
/* For the layers above: keep cn from being freed across calls into it
 * (a close asked meanwhile happens at the release). */
static inline void h2t__conn_hold(h2t__conn *cn) { cn->in_io++; }
static inline void h2t__conn_release(h2t__conn *cn) { h2t__conn_end_io(cn); }
/* No stream is left: the idle timer starts, or a conn that can take no
 * stream (MAX_CONCURRENT_STREAMS 0) closes to make room. */
void h2t__conn_idle(h2t__conn *cn);

/* The peer's SETTINGS said MAX_CONCURRENT_STREAMS 0: it takes no stream. */
static inline int h2t__conn_takes_none(const h2t__conn *cn) {
  return cn->settings_seen && cn->max_streams == 0;
}

/* Can a new stream go on it now, and how many may be open at once? */
int h2t__conn_usable(const h2t__conn *cn);
/* The peer's MAX_CONCURRENT_STREAMS, or `guess` before its SETTINGS. */
uint32_t h2t__conn_capacity(const h2t__conn *cn, uint32_t guess);

/* --- streams (session.c) ------------------------------------------------ */
/* Open a stream; nv stays valid until the HEADERS went out.  Returns the
 * stream id, or H2T_ERR_LIMIT (stream ids exhausted: the connection drains)
 * / H2T_ERR_NOMEM. */
int32_t h2t__conn_submit(h2t__conn *cn, const nghttp2_nv *nv, size_t nnv,
                         int has_body, void *su);
/* RST_STREAM(code) and take the stream off: stream_reset(su) is reported,
 * then nothing more of it.  su: the stream's pointer. */
void h2t__conn_reset(h2t__conn *cn, int32_t stream_id, uint32_t code,
                     void *su);
/* Resume a deferred body. */
void h2t__conn_resume(h2t__conn *cn, int32_t stream_id);
/* Send windows of a stream and of the connection. */
void h2t__conn_windows(h2t__conn *cn, int32_t stream_id, int32_t *stream,
                       int32_t *conn);
/* The peer's current SETTINGS, for the settings event. */
void h2t__conn_settings_event(h2t__conn *cn, h2t_event *ev);
/* The body of a stream is done (sent or abandoned). */
void h2t__conn_body_done(h2t__conn *cn);

/* session.c, for conn.c */
int h2t__session_callbacks_new(nghttp2_session_callbacks **out);
/* Make the session and queue our SETTINGS.  0 or H2T_ERR_NOMEM. */
int h2t__session_start(h2t__conn *cn);
/* The allocator sessions are made with (NULL: nghttp2's default). */
nghttp2_mem *h2t__conn_ngmem(h2t__conn_ctx *ctx);
/* A stream was closed or taken off: count it, idle when none is left. */
void h2t__conn_stream_gone(h2t__conn *cn);

#endif
