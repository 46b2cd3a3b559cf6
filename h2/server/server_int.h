/*
 * h2/server/ internals.  The server is a one-way stack; each file calls only
 * the files below it, and hears from them only through the callbacks it
 * registered (as nghttp2 calls what is in nghttp2_session_callbacks):
 *
 *   server.c   lifecycle, listeners, routes, shutdown, the post queue
 *      |          registers srv_req_callbacks   (request.c -> server.c)
 *   request.c  a request's life (the one place it is made and freed),
 *      |       handlers, responses, the public h2t_server_req_* calls
 *      |          registers srv_sess_callbacks  (session.c -> request.c)
 *   session.c  a connection: its nghttp2 session and callbacks, timers
 *      |          registers srv_io_callbacks    (io.c -> session.c)
 *   io.c       socket input, TLS on memory BIOs (tls.c), output batching
 *      |          registers writer_notify_fn    (writer.c -> io.c)
 *   writer.c   the frame writer: bytes to the socket, on its own thread
 *
 * All of them read (and count into) one srv_ctx, which server.c owns; each
 * field says who writes it.  Nothing here calls up into server.c.
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
#include "h2/common/slab.h"
#include "trace/trace_int.h"

/* --- frame writer (writer.c) --------------------------------------------- */

typedef struct srv_writer srv_writer;
typedef struct wconn wconn;

/* On the loop: the connection's queue drained to the level asked for with
 * h2t__writer_conn_want_notify(), or writing failed (h2t__writer_conn_failed()). */
typedef void (*writer_notify_fn)(void *arg);
/* On the loop (from its top, never inside a push): the writer is done with
 * a reference (written or dropped). */
typedef void (*writer_release_fn)(void *arg);

/* drain_us bounds how long a socket that takes nothing is waited for when
 * the connection closes, or by a SPAWN thread (UINT64_MAX: no bound). */
int h2t__writer_new(srv_writer **out, h2t_writer_mode mode, struct ev_loop *loop,
                    const h2t_mem *mem, uint64_t drain_us, uint32_t spin_us);
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
/* The same, followed by rlen bytes by reference, without a copy: from ref,
 * or from file fd at off (fd >= 0; sendfile).  buf may be NULL (len 0).
 * They must stay as they are until rel(arg) on the loop, which comes once
 * if this returns 0 and never otherwise (H2T_ERR_IO, H2T_ERR_NOMEM; buf is
 * recycled in every case). */
int h2t__writer_push_ref(wconn *wc, uint8_t *buf, size_t len,
                         const uint8_t *ref, int fd, off_t off, size_t rlen,
                         writer_release_fn rel, void *arg);
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

/* --- server TLS (tls.c, used by io.c and server.c) ------------------------ */

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

/* --- what every layer shares --------------------------------------------- */

typedef struct srv_io srv_io;
typedef struct srv_conn srv_conn;
typedef struct srv_ctx srv_ctx;

typedef struct srv_route {
  char *prefix;
  size_t len;
  h2t_handler_fn fn;
  void *user;
} srv_route;

/* --- io.c: a connection's bytes ------------------------------------------ */

/* What io.c reports to the layer above (session.c registers them). */
typedef struct srv_io_callbacks {
  /* Plaintext from the peer.  0, or -1: input is over (stop reading). */
  int (*recv)(void *arg, const uint8_t *data, size_t len);
  /* Output to send: > 0 bytes at *data (valid until the next call), 0 for
   * nothing more now, < 0 when the connection must be aborted. */
  ssize_t (*pull)(void *arg, const uint8_t **data);
  /* After a flush: 1 if the connection has nothing left to read or write. */
  int (*over)(void *arg);
  /* The connection must end now: abort 1 (socket error, EOF, write
   * failure) or 0 (TLS ended it: send what is queued).  The callee frees
   * the srv_io: io.c touches nothing after this call. */
  void (*closed)(void *arg, int abort);
} srv_io_callbacks;

struct srv_io {
  srv_ctx *x;
  const srv_io_callbacks *cb;
  void *arg;
  int fd;
  uint64_t id;                /* the connection's id, for trace events */
  struct connreg_entry *reg;  /* inflight: /debug/connections, or NULL */
  SSL *ssl;                   /* NULL: h2c */
  BIO *rbio;
  srv_tls_sink sink;
  wconn *wc;
  ev_io rio;
  ev_tstamp last_activity;
  uint8_t *out; /* bytes for the socket, handed over at each flush */
  size_t outlen, outcap;
  uint8_t *pt; /* TLS: plaintext waiting to become one record */
  size_t ptlen;
  srv_io *flush_next;
  unsigned flush_queued : 1, tls_done : 1, input_dead : 1, read_paused : 1,
      blocked : 1, dying : 1;
};

/* Set up io for fd (TLS if ssl_ctx), register it with the writer and start
 * reading.  0, or -1 (nothing to undo; the caller still owns fd). */
int h2t__srv_io_init(srv_io *io, srv_ctx *x, int fd, uint64_t id,
                     SSL_CTX *ssl_ctx, const srv_io_callbacks *cb, void *arg);
/* A DATA frame: its header (hd), then len payload bytes from data, or from
 * file fd at off.  Returns 1: referenced, not copied (h2c, big enough);
 * rel(arg) comes on the loop when the writer is done with them.  0: copied
 * now (TLS, small).  -2: nothing done, the writer's queue is full (a
 * flush comes when it drained).  -1: the connection must be aborted. */
int h2t__srv_io_send_body(srv_io *io, const uint8_t *hd, size_t hdlen,
                          const uint8_t *data, int fd, off_t off, size_t len,
                          writer_release_fn rel, void *arg);
/* Produce output for io at the end of this loop iteration. */
void h2t__srv_io_flush(srv_io *io);
/* Flush every io that asked (from server.c's ev_prepare). */
void h2t__srv_io_flush_pending(srv_ctx *x);
/* The end, in two steps around the layers above letting go: stop reading
 * and flushing; then (after the session is gone) send close_notify and
 * what is queued unless abort, and hand the socket to the writer. */
void h2t__srv_io_stop(srv_io *io);
void h2t__srv_io_close(srv_io *io, int abort);

/* --- session.c: a connection and its nghttp2 session ---------------------- */

/* What session.c reports to the layer above (request.c registers them).
 * req is what stream_open returned for the stream. */
typedef struct srv_sess_callbacks {
  /* HEADERS opened stream sid: the request to attach, or NULL (the callee
   * refused or reset the stream). */
  void *(*stream_open)(srv_conn *c, int32_t sid);
  /* One request header, in nghttp2's reference-counted buffers (NUL-
   * terminated; the callee may keep them with nghttp2_rcbuf_incref).  0,
   * or -1 (out of memory: the stream fails). */
  int (*header)(void *req, nghttp2_rcbuf *name, nghttp2_rcbuf *value);
  /* A HEADERS frame is complete: the request's (request 1) or trailers;
   * end_stream 1 when no DATA follows. */
  void (*headers)(void *req, int request, int end_stream);
  void (*body_eof)(void *req);
  /* Request body bytes.  0, or -1 (out of memory: the stream fails). */
  int (*body_chunk)(void *req, const uint8_t *data, size_t len);
  /* nghttp2's data source read callback, for a response body.  It may set
   * NGHTTP2_DATA_FLAG_NO_COPY: then body_send sends the payload. */
  ssize_t (*body_read)(void *req, uint8_t *buf, size_t len, uint32_t *flags);
  /* A DATA frame of a NO_COPY body is due: send its 9-byte header hd and
   * len payload bytes with h2t__srv_sess_send_body().  0, or -1 (the
   * connection fails). */
  int (*body_send)(void *req, const uint8_t *hd, size_t len);
  /* A HEADERS or DATA frame of the response went out. */
  void (*frame_sent)(void *req, uint8_t type, size_t length, int end_stream);
  /* RST_STREAM sent or received; req NULL when no request is attached. */
  void (*stream_reset)(srv_conn *c, void *req, int32_t sid, uint32_t code,
                       int by_peer);
  /* The stream is closed: the request is detached and must go. */
  void (*stream_close)(void *req, uint32_t code);
  /* c is ending: every request attached to it must go (code CANCEL);
   * detach each with h2t__srv_sess_detach() first. */
  void (*conn_close)(srv_conn *c);
  /* A connection was freed. */
  void (*conn_gone)(srv_ctx *x);
} srv_sess_callbacks;

#define SRV_SID_CACHE 16
typedef struct srv_sid_slot {
  int32_t sid;
  void *req;
} srv_sid_slot;

struct srv_conn {
  srv_conn *next, *prev; /* x->conns */
  srv_ctx *x;
  srv_io io;
  nghttp2_session *sess;
  ev_timer timer;
  ev_tstamp t_accept;
  uint32_t nreqs;         /* streams with a request attached */
  int32_t max_sid;        /* highest client stream id seen */
  int32_t reset_ring[32]; /* streams we reset lately: see on_begin_frame */
  unsigned reset_pos;
  ev_tstamp hdr_since;    /* a header block began then and is open; 0 none */
  ev_tstamp t_useful;     /* last complete request headers (or accept) */
  uint64_t body_held;     /* request.c: body bytes its handlers have not read */
  /* The request of a recent stream, by (sid >> 1) % SRV_SID_CACHE: each
   * callback of a frame would otherwise search nghttp2's stream map (ten
   * times per request).  An entry changes only with the stream's user
   * data (set_req). */
  srv_sid_slot sid_cache[SRV_SID_CACHE];
  unsigned ready : 1, goaway : 1;
};

/* A connection on an accepted socket (fd is taken in every case). */
void h2t__srv_conn_accept(srv_ctx *x, SSL_CTX *ssl_ctx, int fd);
/* Graceful: GOAWAY and drain. */
void h2t__srv_conn_goaway_all(srv_ctx *x);
/* Close every connection now: every request gets on_close(CANCEL). */
void h2t__srv_conn_abort_all(srv_ctx *x);
/* For request.c: nghttp2 calls on a stream, with nghttp2's return codes.
 * They do not flush; h2t__srv_sess_flush() does. */
int h2t__srv_sess_respond(srv_conn *c, int32_t sid, const nghttp2_nv *nva,
                          size_t n, void *body_req);
int h2t__srv_sess_trailers(srv_conn *c, int32_t sid, const nghttp2_nv *nva,
                           size_t n);
int h2t__srv_sess_reset(srv_conn *c, int32_t sid, uint32_t code);
int h2t__srv_sess_resume(srv_conn *c, int32_t sid);
void h2t__srv_sess_detach(srv_conn *c, int32_t sid);
void h2t__srv_sess_windows(srv_conn *c, int32_t sid, int32_t *stream_window,
                           int32_t *conn_window);
void h2t__srv_sess_flush(srv_conn *c);
/* From body_send: see h2t__srv_io_send_body. */
int h2t__srv_sess_send_body(srv_conn *c, const uint8_t *hd, const uint8_t *data,
                            int fd, off_t off, size_t len,
                            writer_release_fn rel, void *arg);
/* n body bytes of stream sid were read by its handler, or dropped: the
 * peer may send that much more (windows are only refilled so). */
void h2t__srv_sess_consume(srv_conn *c, int32_t sid, size_t n);
/* 1 if both receive windows let the peer send stream sid more DATA (a
 * stalled body is then the peer's doing, not ours). */
int h2t__srv_sess_peer_may_send(srv_conn *c, int32_t sid);
/* 1 if stream sid's output waits on the peer: its send window or the
 * connection's is empty, or the socket's queue is full. */
int h2t__srv_sess_write_blocked(srv_conn *c, int32_t sid);
/* A limit acted on connection c (stream sid, 0: the connection itself):
 * /metrics counts it whether traced or not; then the server's trace. */
void h2t__srv_conn_shed(srv_conn *c, int32_t sid, h2t_shed_reason why,
                        h2t_shed_action what);
/* Close one connection that holds no request past its headers, to make
 * room (max_conns, out of descriptors).  1 if one was closed. */
int h2t__srv_conn_evict(srv_ctx *x);

/* --- request.c: requests -------------------------------------------------- */

/* What request.c reports to the layer above (server.c registers them). */
typedef struct srv_req_callbacks {
  /* The in-flight table's cancel (any thread): see inflight_cancel_fn. */
  inflight_cancel_fn cancel_post;
  /* A connection was freed. */
  void (*conn_gone)(void *arg);
  void *arg;
} srv_req_callbacks;

/* Register the request layer with x (its srv_sess_callbacks) and up. */
void h2t__srv_req_layer_init(srv_ctx *x, const srv_req_callbacks *up);
/* Cancel a request by id, on the loop (posted from the in-flight table). */
void h2t__srv_req_cancel(srv_ctx *x, uint64_t req_id);

/* --- the shared context -------------------------------------------------- */

struct srv_ctx {
  /* server.c: set at creation */
  struct ev_loop *loop;
  const h2t_mem *mem;
  h2t__slab *slab;       /* nghttp2's and the requests' small blocks */
  h2t_server_config cfg; /* defaults filled in */
  trace_chain tc;        /* computed once */
  srv_writer *writer;
  h2t_server *server;    /* for h2t_server_req_server() only */
  srv_route *routes;     /* server.c writes, request.c reads */
  size_t nroutes;
  /* each layer counts its own */
  h2t_server_stats st;
  /* Event timestamps: one clock read shared by the events of a burst of
   * our own work; reset at every entry from the loop and around every
   * user callback, so user code never makes a timestamp stale.  io.c
   * starts and ends bursts (reads and flushes). */
  uint64_t now_us;
  int in_burst;
  /* io.c */
  srv_io *flush_head; /* output to produce */
  /* session.c */
  srv_conn *conns; /* doubly linked */
  const srv_sess_callbacks *sess_cb;
  /* request.c */
  h2t_server_req *reqs; /* every live request, doubly linked */
  srv_req_callbacks req_up;
};

static inline uint64_t srv_now(srv_ctx *x) {
  if (!x->in_burst)
    return h2t_now_us();
  if (!x->now_us)
    x->now_us = h2t_now_us();
  return x->now_us;
}

/* Around user code: the next event reads the clock again. */
#define SRV_USER_CALL(x, call) ((x)->now_us = 0, (call), (x)->now_us = 0)

/* A connection-level event through the server's chain. */
static inline void srv_emit_conn(srv_ctx *x, uint64_t conn_id, h2t_event *ev) {
  ev->t_us = srv_now(x);
  ev->conn_id = conn_id;
  trace_emit(&x->tc, ev);
}

/* --- server.c ------------------------------------------------------------- */

/* The in-flight table's cancel for a server's requests (any thread): posts
 * the id to the server's loop.  arg is the h2t_server. */
void h2t__srv_cancel_post(void *arg, uint64_t req_id, const char *why);
/* A connection on a socket the caller made (a socketpair), as if an h2c
 * listener had accepted it: the fuzz targets' peer without a network.  fd
 * is taken in every case. */
void h2t__srv_adopt(h2t_server *s, int fd);

#endif
