/*
 * h2/ server internals: the server, its connections and requests, the frame
 * writer and the server-side TLS context.  Shared by server.c,
 * server_conn.c, writer.c and tls.c in h2/server/.
 */
#ifndef H2T_SERVER_INT_H
#define H2T_SERVER_INT_H

#include <pthread.h>
#include <stdatomic.h>
#include <sys/types.h>

#include <ev.h>
#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>

#include <h2trace/server.h>
#include "trace/trace_int.h"

/* --- frame writer (writer.c) ----------------------------------------- */

typedef struct srv_writer srv_writer;
typedef struct wconn wconn;

/* On the loop: the connection's queue drained to the level asked for with
 * h2t__writer_conn_want_notify(), or writing failed (h2t__writer_conn_failed()). */
typedef void (*writer_notify_fn)(void *arg);

int h2t__writer_new(srv_writer **out, h2t_writer_mode mode, struct ev_loop *loop,
               const h2t_mem *mem);
/* Stop (joins the writer thread); every wconn must have been closed. */
void h2t__writer_del(srv_writer *w);
/* Register a connection's socket (non-blocking).  NULL on ENOMEM. */
wconn *h2t__writer_conn_new(srv_writer *w, int fd, writer_notify_fn fn, void *arg);
/* Loop thread: a buffer of at least min bytes for h2t__writer_push (data NULL),
 * or data (from here) grown to min, contents kept; *cap gets its size.
 * NULL on ENOMEM (data is then still valid). */
uint8_t *h2t__writer_buf_grow(srv_writer *w, uint8_t *data, size_t min,
                         size_t *cap);
/* Loop thread: give back a buffer that will not be pushed (NULL: no-op). */
void h2t__writer_buf_put(srv_writer *w, uint8_t *data);
/* Queue len bytes for the socket.  buf comes from h2t__writer_buf_grow and is
 * owned by the writer from now on (recycled even on error).  One call per
 * connection flush.  Returns 0 or H2T_ERR_IO (connection failed). */
int h2t__writer_push(wconn *wc, uint8_t *buf, size_t len);
/* Bytes queued and not yet written.  Any thread. */
size_t h2t__writer_conn_queued(const wconn *wc);
/* Ask for a notify when queued <= low.  Returns 1 if that is already the
 * case (no notify will come), else 0. */
int h2t__writer_conn_want_notify(wconn *wc, size_t low);
int h2t__writer_conn_failed(const wconn *wc);
/* The loop is done with wc (never touch it again).  The writer sends what
 * is queued (abort: drops it), then closes the fd. */
void h2t__writer_conn_close(wconn *wc, int abort);
uint32_t h2t__writer_depth(const srv_writer *w);
uint32_t h2t__writer_depth_max(const srv_writer *w);

/* --- server TLS (tls.c) -------------------------------------------- */

/* A server SSL_CTX with the cert/key, TLS >= 1.2, h2-safe ciphers and ALPN
 * that selects "h2".  NULL on failure. */
SSL_CTX *h2t__srv_tls_ctx_new(const char *cert_file, const char *key_file);
/* Where an SSL's output goes: fn(arg, bytes, len), 0 or -1. */
typedef struct srv_tls_sink {
  int (*fn)(void *arg, const uint8_t *data, size_t len);
  void *arg;
} srv_tls_sink;

/* An SSL in accept state: *rbio (a memory BIO) takes ciphertext from the
 * socket; ciphertext for the socket goes to sink, which must outlive the
 * SSL.  NULL on failure. */
SSL *h2t__srv_tls_conn_new(SSL_CTX *ctx, BIO **rbio, srv_tls_sink *sink);

/* --- server, connections, requests ------------------------------------- */

typedef struct srv_conn srv_conn;
typedef struct srv_listener srv_listener;

typedef struct srv_route {
  char *prefix;
  size_t len;
  h2t_handler_fn fn;
  void *user;
} srv_route;

struct srv_listener {
  h2t_server *s;
  int fd;
  int port;
  SSL_CTX *ssl_ctx; /* NULL: h2c */
  ev_io io;
  ev_timer backoff; /* out of fds: pause accepting for a moment */
};

#define SRV_MAX_LISTENERS 8

struct h2t_server {
  struct ev_loop *loop;
  int own_loop;
  const h2t_mem *mem;
  h2t_server_config cfg; /* defaults filled in */
  trace_chain tc;        /* computed once */
  srv_writer *writer;

  srv_listener listeners[SRV_MAX_LISTENERS];
  int nlisteners;

  srv_route *routes;
  size_t nroutes;

  srv_conn *conns;       /* doubly linked */
  h2t_server_req *reqs;  /* every live request, doubly linked */
  srv_conn *flush_head;  /* connections with output to produce */

  ev_prepare prepare;    /* flushes once per loop iteration */
  ev_async async;        /* shutdown_async and cancels from other threads */
  ev_timer shutdown_timer;
  pthread_mutex_t mu;    /* guards cancel_ids, async_shutdown */
  uint64_t *cancel_ids;
  size_t ncancel, cancel_cap;
  int async_shutdown;

  int shutting, done, running;
  /* Event timestamps: one clock read shared by the events of a burst of
   * our own work; reset at every entry from the loop and around every
   * user callback, so user code never makes a timestamp stale. */
  uint64_t now_us;
  int in_burst; /* now_us is only used inside read_cb and flushes */
  h2t_server_stats st;
};

/* Request body/response state kinds. */
enum { SRV_BODY_NONE, SRV_BODY_BUF, SRV_BODY_FILE, SRV_BODY_GEN };

/* Small bump allocator for a request's strings: blocks never move. */
typedef struct srv_arena_blk {
  struct srv_arena_blk *next;
  size_t used, cap;
  int inline_; /* lives inside the request: not freed on its own */
  char data[];
} srv_arena_blk;

/* Room for a typical request's strings and headers without more mallocs. */
#define SRV_ARENA0 768
#define SRV_HDRS0 8

struct h2t_server_req {
  h2t_server *s;
  srv_conn *c;
  int32_t sid;
  uint64_t id;
  uint64_t t_start;
  h2t_server_req *prev, *next; /* s->reqs */
  trace_chain tc;              /* the server's, plus the in-flight entry */
  struct inflight_entry *ife;

  const char *method, *path, *scheme, *authority;
  h2t_header *hdrs; /* hdrs0 until it outgrows it */
  size_t nhdrs, hcap;
  h2t_header hdrs0[SRV_HDRS0];
  int status;
  size_t hdr_bytes;
  srv_arena_blk *arena;
  const srv_route *route;

  unsigned headers_done : 1, body_eof : 1, responded : 1, closed : 1,
      canceled : 1, too_big : 1, shed503 : 1, deferred : 1, counted : 1,
      flow_blocked : 1, sent_first : 1, body_delivered_eof : 1;

  /* request body held until on_body is registered */
  uint8_t *held;
  size_t held_len, held_cap;
  uint64_t bytes_in, bytes_out;

  /* response body */
  int body_kind;
  const uint8_t *body;
  uint8_t *owned;
  size_t blen, boff;
  int fd;
  off_t foff;
  int64_t fleft;
  h2t_server_gen_cb gen;
  void *gen_user;
  nghttp2_nv *trailers;
  size_t ntrailers;

  h2t_server_body_cb on_body;
  h2t_server_close_cb on_close;
  void *cb_user;

  ev_timer timeout; /* only with stream_timeout_ms */
};

/* Connections: server_conn.c */
void h2t__srv_conn_accept(h2t_server *s, srv_listener *l, int fd);
/* Produce and hand over output for every connection that asked for it. */
void h2t__srv_flush_pending(h2t_server *s);
/* Graceful: GOAWAY and drain. */
void h2t__srv_conn_goaway(srv_conn *c);
void h2t__srv_conn_goaway_all(h2t_server *s);
/* Close now: every request gets on_close(CANCEL). */
void h2t__srv_conn_abort(srv_conn *c);
/* Cancel a request by id (from the in-flight table, posted to the loop). */
void h2t__srv_req_cancel(h2t_server *s, uint64_t req_id);
/* Called when the last connection of a shutting-down server is gone. */
void h2t__srv_maybe_done(h2t_server *s);
/* Post a cancel from any thread (inflight_cancel_fn). */
void h2t__srv_cancel_post(void *arg, uint64_t req_id, const char *why);

#endif
