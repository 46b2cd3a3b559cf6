/*
 * Server connections and requests: socket input, TLS on memory BIOs, the
 * nghttp2 server session and its callbacks, handlers, responses, trace
 * events, load shedding.  Output is produced once per loop iteration per
 * connection (h2t__srv_flush_pending, from an ev_prepare) and handed to the
 * writer as one item.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include <h2trace/inflight.h>
#include "h2/server/server_int.h"

#define READ_CHUNK 65536
#define TLS_RECORD 16384
#define HELD_BODY_MAX (16u << 20)
#define CONN_WINDOW (16 << 20)
#define FLUSH_PIECE 32768

struct srv_conn {
  srv_conn *next, *prev; /* s->conns */
  h2t_server *s;
  srv_listener *l;
  int fd;
  uint64_t id;
  nghttp2_session *sess;
  SSL *ssl;
  BIO *rbio;
  srv_tls_sink sink;
  wconn *wc;
  ev_io rio;
  ev_timer timer;
  ev_tstamp t_accept, last_activity;
  uint8_t *out; /* bytes for the socket, handed over at each flush */
  size_t outlen, outcap;
  uint8_t *pt; /* TLS: plaintext waiting to become one record */
  size_t ptlen;
  srv_conn *flush_next;
  uint32_t nreqs;
  int32_t max_sid;        /* highest client stream id seen */
  int32_t reset_ring[32]; /* streams we reset lately: see on_begin_frame */
  unsigned reset_pos;
  unsigned flush_queued : 1, tls_done : 1, ready : 1, goaway : 1,
      input_dead : 1, read_paused : 1, blocked : 1, dying : 1;
  struct connreg_entry *reg; /* inflight: /debug/connections, or NULL */
};

/* ------------------------------------------------------------------------
 * small helpers
 */

static uint64_t srv_now(h2t_server *s) {
  if (!s->in_burst)
    return h2t_now_us();
  if (!s->now_us)
    s->now_us = h2t_now_us();
  return s->now_us;
}

/* Around user code: the next event reads the clock again. */
#define USER_CALL(s, call) ((s)->now_us = 0, (call), (s)->now_us = 0)

static void emit_conn(srv_conn *c, h2t_event *ev) {
  ev->t_us = srv_now(c->s);
  ev->conn_id = c->id;
  trace_emit(&c->s->tc, ev);
}

static void emit_req(h2t_server_req *r, h2t_event *ev) {
  ev->t_us = srv_now(r->s);
  ev->sreq = r;
  ev->req_id = r->id;
  ev->conn_id = r->c->id;
  ev->stream_id = r->sid;
  trace_emit(&r->tc, ev);
}

static void schedule_flush(srv_conn *c) {
  if (c->flush_queued || c->dying)
    return;
  c->flush_queued = 1;
  c->flush_next = c->s->flush_head;
  c->s->flush_head = c;
}

static char *arena_dup(h2t_server_req *r, const void *p, size_t n) {
  srv_arena_blk *b = r->arena;
  if (!b || b->cap - b->used < n + 1) {
    size_t cap = n + 1 > 1024 ? n + 1 : 1024;
    b = h2t_xmalloc(r->s->mem, sizeof *b + cap);
    if (!b)
      return NULL;
    b->next = r->arena;
    b->used = 0;
    b->cap = cap;
    b->inline_ = 0;
    r->arena = b;
  }
  char *d = b->data + b->used;
  memcpy(d, p, n);
  d[n] = '\0';
  b->used += n + 1;
  return d;
}

/* ------------------------------------------------------------------------
 * output
 */

static int out_reserve(srv_conn *c, size_t n) {
  if (c->outcap - c->outlen >= n)
    return 0;
  size_t cap;
  uint8_t *p = h2t__writer_buf_grow(c->s->writer, c->out, c->outlen + n, &cap);
  if (!p)
    return -1;
  c->out = p;
  c->outcap = cap;
  return 0;
}

/* TLS output (records, alerts, handshake) lands here. */
static int tls_sink(void *arg, const uint8_t *data, size_t len) {
  srv_conn *c = arg;
  if (out_reserve(c, len) != 0)
    return -1;
  memcpy(c->out + c->outlen, data, len);
  c->outlen += len;
  return 0;
}

static int tls_encrypt(srv_conn *c) {
  if (!c->ptlen)
    return 0;
  int r = SSL_write(c->ssl, c->pt, (int)c->ptlen);
  c->ptlen = 0;
  if (r <= 0) {
    ERR_clear_error();
    return -1;
  }
  return 0;
}

static int out_append(srv_conn *c, const uint8_t *data, size_t n) {
  if (!c->ssl) {
    if (out_reserve(c, n) != 0)
      return -1;
    memcpy(c->out + c->outlen, data, n);
    c->outlen += n;
    return 0;
  }
  if (!c->pt) {
    c->pt = h2t_xmalloc(c->s->mem, TLS_RECORD);
    if (!c->pt)
      return -1;
  }
  while (n) {
    size_t k = TLS_RECORD - c->ptlen < n ? TLS_RECORD - c->ptlen : n;
    memcpy(c->pt + c->ptlen, data, k);
    c->ptlen += k;
    data += k;
    n -= k;
    if (c->ptlen == TLS_RECORD && tls_encrypt(c) != 0)
      return -1;
  }
  return 0;
}

static int push_out(srv_conn *c) {
  if (!c->outlen)
    return 0;
  size_t n = c->outlen;
  uint8_t *buf = c->out;
  c->out = NULL;
  c->outlen = c->outcap = 0;
  c->s->st.bytes_out += n;
  c->s->st.writer_flushes++;
  h2t__connreg_bytes(c->reg, 0, n); /* inflight */
  return h2t__writer_push(c->wc, buf, n);
}

static void conn_finish(srv_conn *c, int abort);

/* Produce output until nghttp2 has nothing more or the writer queue is
 * full; hand it over as one item; close when the session is over. */
static void conn_flush(srv_conn *c) {
  h2t_server *s = c->s;
  size_t limit = s->cfg.write_queue_limit;
  if (!c->ssl || c->tls_done) {
    for (;;) {
      if (h2t__writer_conn_queued(c->wc) + c->outlen + c->ptlen >= limit) {
        if ((c->ssl && tls_encrypt(c) != 0) || push_out(c) != 0) {
          conn_finish(c, 1);
          return;
        }
        if (h2t__writer_conn_queued(c->wc) >= limit &&
            !h2t__writer_conn_want_notify(c->wc, limit / 2)) {
          if (!c->blocked)
            s->st.writer_blocked++;
          c->blocked = 1;
          if (h2t__writer_conn_queued(c->wc) >= 2 * (size_t)limit && !c->read_paused) {
            c->read_paused = 1;
            ev_io_stop(s->loop, &c->rio);
          }
          break;
        }
      }
      const uint8_t *data;
      ssize_t n = nghttp2_session_mem_send(c->sess, &data);
      if (n < 0) {
        conn_finish(c, 1);
        return;
      }
      if (n == 0)
        break;
      if (out_append(c, data, (size_t)n) != 0) {
        conn_finish(c, 1);
        return;
      }
      /* A big TLS flush goes out in pieces: the writer (and the peer)
       * start on the first while we encrypt the rest.  (For h2c there is
       * nothing to overlap: one item is cheaper.) */
      if (c->ssl && c->outlen >= FLUSH_PIECE && push_out(c) != 0) {
        conn_finish(c, 1);
        return;
      }
    }
    if (c->ssl && tls_encrypt(c) != 0) {
      conn_finish(c, 1);
      return;
    }
  }
  if (push_out(c) != 0) {
    conn_finish(c, 1);
    return;
  }
  if ((!c->ssl || c->tls_done) && !nghttp2_session_want_read(c->sess) &&
      !nghttp2_session_want_write(c->sess))
    conn_finish(c, 0);
}

void h2t__srv_flush_pending(h2t_server *s) {
  s->in_burst = 1;
  s->now_us = 0;
  srv_conn *list = s->flush_head;
  s->flush_head = NULL;
  while (list) {
    srv_conn *c = list;
    list = c->flush_next;
    c->flush_queued = 0;
    conn_flush(c);
  }
  s->in_burst = 0;
}

static void writer_notify(void *arg) {
  srv_conn *c = arg;
  if (h2t__writer_conn_failed(c->wc)) {
    conn_finish(c, 1);
    return;
  }
  c->blocked = 0;
  if (c->read_paused) {
    c->read_paused = 0;
    ev_io_start(c->s->loop, &c->rio);
  }
  schedule_flush(c);
}

/* ------------------------------------------------------------------------
 * requests
 */

static void req_free(h2t_server_req *r) {
  const h2t_mem *m = r->s->mem;
  while (r->arena) {
    srv_arena_blk *b = r->arena;
    r->arena = b->next;
    if (!b->inline_)
      h2t_xfree(m, b);
  }
  if (r->hdrs != r->hdrs0)
    h2t_xfree(m, r->hdrs);
  h2t_xfree(m, r->held);
  h2t_xfree(m, r->owned);
  h2t_xfree(m, r->trailers);
  if (r->fd >= 0)
    close(r->fd);
  h2t_xfree(m, r);
}

/* The stream is over (closed by nghttp2, or the connection went away). */
static void req_close(h2t_server_req *r, uint32_t code) {
  if (r->closed)
    return;
  h2t_server *s = r->s;
  r->closed = 1;
  if (code)
    r->canceled = 1;
  if (s->cfg.stream_timeout_ms)
    ev_timer_stop(s->loop, &r->timeout);
  if (TRACE_WANTS(&r->tc, H2T_EV_SRV_STREAM_CLOSED)) {
    h2t_event ev = {.type = H2T_EV_SRV_STREAM_CLOSED};
    ev.t_us = srv_now(s);
    ev.u.stream_closed.error_code = code;
    ev.u.stream_closed.bytes_in = r->bytes_in;
    ev.u.stream_closed.bytes_out = r->bytes_out;
    ev.u.stream_closed.total_us = ev.t_us - r->t_start;
    emit_req(r, &ev);
  }
  if (r->ife)
    h2t__inflight_end(r->ife, code == 0 ? 0
                         : code == NGHTTP2_CANCEL ? H2T_ERR_CANCELED
                                                  : H2T_ERR_STREAM_RESET);
  if (r->on_close)
    USER_CALL(s, r->on_close(r, code, r->cb_user));
  if (r->counted) {
    s->st.inflight--;
    h2t__connreg_stream_close(r->c->reg); /* inflight */
  }
  r->c->nreqs--;
  if (r->prev)
    r->prev->next = r->next;
  else
    s->reqs = r->next;
  if (r->next)
    r->next->prev = r->prev;
  req_free(r);
}

static void stream_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents) {
  h2t_server_req *r = t->data;
  h2t_server_req_reset(r, NGHTTP2_CANCEL);
}

static h2t_server_req *req_new(srv_conn *c, int32_t sid) {
  h2t_server *s = c->s;
  /* One allocation: the request, then its first arena block. */
  h2t_server_req *r =
      h2t_xmalloc(s->mem, sizeof *r + sizeof(srv_arena_blk) + SRV_ARENA0);
  if (!r)
    return NULL;
  memset(r, 0, sizeof *r);
  srv_arena_blk *b0 = (srv_arena_blk *)(r + 1);
  *b0 = (srv_arena_blk){.cap = SRV_ARENA0, .inline_ = 1};
  r->arena = b0;
  r->hdrs = r->hdrs0;
  r->hcap = SRV_HDRS0;
  r->s = s;
  r->c = c;
  r->sid = sid;
  r->id = h2t_next_req_id();
  r->t_start = srv_now(s);
  r->fd = -1;
  r->method = r->path = r->scheme = r->authority = "";
  r->tc = s->tc;
  r->next = s->reqs;
  if (s->reqs)
    s->reqs->prev = r;
  s->reqs = r;
  c->nreqs++;
  /* From the first header byte: a request that trickles its headers is
   * timed out too. */
  if (s->cfg.stream_timeout_ms) {
    ev_timer_init(&r->timeout, stream_timeout_cb,
                  s->cfg.stream_timeout_ms / 1000.0, 0.);
    r->timeout.data = r;
    ev_timer_start(s->loop, &r->timeout);
  }
  return r;
}

static const srv_route *route_find(h2t_server *s, const char *path) {
  size_t plen = strcspn(path, "?");
  const srv_route *best = NULL;
  for (size_t i = 0; i < s->nroutes; i++) {
    const srv_route *rt = &s->routes[i];
    if (rt->len <= plen && !memcmp(rt->prefix, path, rt->len) &&
        (!best || rt->len > best->len))
      best = rt;
  }
  return best;
}

static void shed_trace(srv_conn *c, h2t_server_req *r, int32_t sid,
                       h2t_shed_reason why, h2t_shed_action what) {
  const trace_chain *tc = r ? &r->tc : &c->s->tc;
  { /* inflight: /metrics counts sheds whether traced or not */
    h2t_event m = {.type = H2T_EV_SRV_LOAD_SHED};
    m.u.load_shed.reason = why;
    m.u.load_shed.action = what;
    h2t__metrics_event(&m);
  }
  if (TRACE_WANTS(tc, H2T_EV_SRV_LOAD_SHED)) {
    h2t_event ev = {.type = H2T_EV_SRV_LOAD_SHED, .stream_id = sid};
    ev.u.load_shed.reason = why;
    ev.u.load_shed.action = what;
    if (r)
      emit_req(r, &ev);
    else
      emit_conn(c, &ev);
  }
}

static void simple_response(h2t_server_req *r, int status) {
  static const h2t_header ct = {"content-type", "text/plain"};
  char body[64];
  int n = snprintf(body, sizeof body, "%d\n", status);
  h2t_server_req_respond(r, status, &ct, 1, body, (size_t)n, 0);
}

static void req_headers_done(h2t_server_req *r) {
  h2t_server *s = r->s;
  r->headers_done = 1;
  s->st.requests++;
  r->ife = h2t__inflight_begin_at(INFLIGHT_SERVER, r->id, r->method, r->scheme,
                             r->authority, r->path, h2t__srv_cancel_post, s,
                             r->t_start); /* inflight: no extra clock read */
  if (r->ife)
    h2t__trace_chain_set_inflight(&r->tc, r->ife);
  if (TRACE_WANTS(&r->tc, H2T_EV_SRV_REQUEST_HEADERS)) {
    h2t_event ev = {.type = H2T_EV_SRV_REQUEST_HEADERS};
    ev.u.request_headers.method = r->method;
    ev.u.request_headers.path = r->path;
    ev.u.request_headers.authority = r->authority;
    ev.u.request_headers.scheme = r->scheme;
    emit_req(r, &ev);
  }
  if (r->shed503) {
    s->st.shed_503++;
    shed_trace(r->c, r, r->sid, H2T_SHED_INFLIGHT, H2T_SHED_503);
    static const h2t_header ra = {"retry-after", "1"};
    h2t_server_req_respond(r, 503, &ra, 1, "503\n", 4, H2T_RESPOND_NOCOPY);
    return;
  }
  if (r->too_big) {
    simple_response(r, 431);
    return;
  }
  r->route = route_find(s, r->path);
  if (!r->route) {
    simple_response(r, 404);
    return;
  }
  if (TRACE_WANTS(&r->tc, H2T_EV_SRV_HANDLER_STARTED)) {
    h2t_event ev = {.type = H2T_EV_SRV_HANDLER_STARTED};
    ev.u.handler_started.route = r->route->prefix;
    emit_req(r, &ev);
  }
  USER_CALL(s, r->route->fn(r, r->route->user));
}

static void req_body_eof(h2t_server_req *r) {
  if (r->body_eof)
    return;
  r->body_eof = 1;
  if (TRACE_WANTS(&r->tc, H2T_EV_SRV_REQUEST_BODY_DONE)) {
    h2t_event ev = {.type = H2T_EV_SRV_REQUEST_BODY_DONE};
    ev.u.body.bytes = r->bytes_in;
    emit_req(r, &ev);
  }
  if (r->on_body && !r->body_delivered_eof && !r->closed) {
    r->body_delivered_eof = 1;
    int rc;
    USER_CALL(r->s, rc = r->on_body(r, NULL, 0, 1, r->cb_user));
    if (rc != 0)
      h2t_server_req_reset(r, NGHTTP2_CANCEL);
  }
}

/* ------------------------------------------------------------------------
 * nghttp2 callbacks
 */

/* RFC 9113 §5.1.1: a new stream id lower than one already used is a
 * connection error.  nghttp2 ignores such HEADERS when it cannot tell them
 * from trailers on a stream it forgot, so tell them apart here: trailers
 * can only target a stream that still exists or one we reset lately. */
static int on_begin_frame(nghttp2_session *sess, const nghttp2_frame_hd *hd,
                          void *user) {
  srv_conn *c = user;
  if (hd->type != NGHTTP2_HEADERS || !(hd->stream_id & 1))
    return 0;
  if (hd->stream_id > c->max_sid) {
    c->max_sid = hd->stream_id;
    return 0;
  }
  if (nghttp2_session_find_stream(sess, hd->stream_id))
    return 0;
  for (unsigned i = 0; i < 32; i++)
    if (c->reset_ring[i] == hd->stream_id)
      return 0;
  return NGHTTP2_ERR_CALLBACK_FAILURE; /* feed() answers with GOAWAY */
}

static int on_begin_headers(nghttp2_session *sess, const nghttp2_frame *f,
                            void *user) {
  srv_conn *c = user;
  h2t_server *s = c->s;
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0;
  c->ready = 1;
  int shed503 = 0;
  if (s->cfg.shed_inflight && s->st.inflight >= s->cfg.shed_inflight) {
    if (s->cfg.shed_action == H2T_SHED_REFUSED_STREAM) {
      s->st.shed_refused++;
      shed_trace(c, NULL, f->hd.stream_id, H2T_SHED_INFLIGHT,
                 H2T_SHED_REFUSED_STREAM);
      nghttp2_submit_rst_stream(sess, NGHTTP2_FLAG_NONE, f->hd.stream_id,
                                NGHTTP2_REFUSED_STREAM);
      return 0;
    }
    shed503 = 1;
  }
  h2t_server_req *r = req_new(c, f->hd.stream_id);
  if (!r) {
    nghttp2_submit_rst_stream(sess, NGHTTP2_FLAG_NONE, f->hd.stream_id,
                              NGHTTP2_INTERNAL_ERROR);
    return 0;
  }
  r->shed503 = (unsigned)shed503;
  if (!shed503) {
    r->counted = 1;
    s->st.inflight++;
    h2t__connreg_stream_open(c->reg); /* inflight */
  }
  nghttp2_session_set_stream_user_data(sess, f->hd.stream_id, r);
  return 0;
}

static int on_header(nghttp2_session *sess, const nghttp2_frame *f,
                     const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags,
                     void *user) {
  h2t_server_req *r = nghttp2_session_get_stream_user_data(sess, f->hd.stream_id);
  if (!r || f->hd.type != NGHTTP2_HEADERS ||
      f->headers.cat != NGHTTP2_HCAT_REQUEST || r->too_big)
    return 0;
  r->hdr_bytes += namelen + valuelen + 32;
  if (r->hdr_bytes > r->s->cfg.max_header_list_size) {
    r->too_big = 1;
    return 0;
  }
  char *v = arena_dup(r, value, valuelen);
  if (!v)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  if (namelen && name[0] == ':') {
    if (namelen == 7 && !memcmp(name, ":method", 7))
      r->method = v;
    else if (namelen == 5 && !memcmp(name, ":path", 5))
      r->path = v;
    else if (namelen == 7 && !memcmp(name, ":scheme", 7))
      r->scheme = v;
    else if (namelen == 10 && !memcmp(name, ":authority", 10))
      r->authority = v;
    return 0;
  }
  char *n = arena_dup(r, name, namelen);
  if (!n)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  if (r->nhdrs == r->hcap) {
    size_t cap = r->hcap * 2;
    h2t_header *h = h2t_xrealloc(
        r->s->mem, r->hdrs == r->hdrs0 ? NULL : r->hdrs, cap * sizeof *h);
    if (!h)
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    if (r->hdrs == r->hdrs0)
      memcpy(h, r->hdrs0, sizeof r->hdrs0);
    r->hdrs = h;
    r->hcap = cap;
  }
  r->hdrs[r->nhdrs++] = (h2t_header){n, v};
  return 0;
}

static int on_frame_recv(nghttp2_session *sess, const nghttp2_frame *f,
                         void *user) {
  srv_conn *c = user;
  h2t_server_req *r = NULL;
  switch (f->hd.type) {
  case NGHTTP2_HEADERS:
    r = nghttp2_session_get_stream_user_data(sess, f->hd.stream_id);
    if (!r)
      break;
    if (f->headers.cat == NGHTTP2_HCAT_REQUEST && !r->headers_done)
      req_headers_done(r);
    /* the handler may have reset the stream: look again */
    r = nghttp2_session_get_stream_user_data(sess, f->hd.stream_id);
    if (r && (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
      req_body_eof(r);
    break;
  case NGHTTP2_DATA:
    r = nghttp2_session_get_stream_user_data(sess, f->hd.stream_id);
    if (r && (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
      req_body_eof(r);
    break;
  case NGHTTP2_RST_STREAM: {
    c->s->st.resets_recv++;
    r = nghttp2_session_get_stream_user_data(sess, f->hd.stream_id);
    const trace_chain *tc = r ? &r->tc : &c->s->tc;
    if (TRACE_WANTS(tc, H2T_EV_SRV_STREAM_RESET)) {
      h2t_event ev = {.type = H2T_EV_SRV_STREAM_RESET,
                      .stream_id = f->hd.stream_id};
      ev.u.stream_reset.error_code = f->rst_stream.error_code;
      ev.u.stream_reset.by_peer = 1;
      if (r)
        emit_req(r, &ev);
      else
        emit_conn(c, &ev);
    }
    break;
  }
  case NGHTTP2_SETTINGS:
    c->ready = 1;
    break;
  default:
    break;
  }
  return 0;
}

static int on_data_chunk(nghttp2_session *sess, uint8_t flags, int32_t sid,
                         const uint8_t *data, size_t len, void *user) {
  h2t_server_req *r = nghttp2_session_get_stream_user_data(sess, sid);
  if (!r || r->closed)
    return 0;
  r->bytes_in += len;
  if (!r->on_body && r->responded)
    return 0; /* answered without reading it: nobody wants this body */
  if (r->on_body) {
    int rc;
    USER_CALL(r->s, rc = r->on_body(r, data, len, 0, r->cb_user));
    if (rc != 0)
      nghttp2_submit_rst_stream(sess, NGHTTP2_FLAG_NONE, sid, NGHTTP2_CANCEL);
    return 0;
  }
  if (r->held_len + len > HELD_BODY_MAX) {
    nghttp2_submit_rst_stream(sess, NGHTTP2_FLAG_NONE, sid,
                              NGHTTP2_ENHANCE_YOUR_CALM);
    return 0;
  }
  if (r->held_len + len > r->held_cap) {
    size_t cap = r->held_cap ? r->held_cap : 4096;
    while (cap < r->held_len + len)
      cap *= 2;
    uint8_t *p = h2t_xrealloc(r->s->mem, r->held, cap);
    if (!p)
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    r->held = p;
    r->held_cap = cap;
  }
  memcpy(r->held + r->held_len, data, len);
  r->held_len += len;
  return 0;
}

static int on_frame_send(nghttp2_session *sess, const nghttp2_frame *f,
                         void *user) {
  srv_conn *c = user;
  h2t_server_req *r = NULL;
  if (f->hd.stream_id)
    r = nghttp2_session_get_stream_user_data(sess, f->hd.stream_id);
  int end = (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0;
  switch (f->hd.type) {
  case NGHTTP2_HEADERS:
    if (!r)
      break;
    if (!r->sent_first && TRACE_WANTS(&r->tc, H2T_EV_SRV_WROTE_HEADERS)) {
      h2t_event ev = {.type = H2T_EV_SRV_WROTE_HEADERS};
      ev.u.response.status = r->status;
      emit_req(r, &ev);
    }
    r->sent_first = 1;
    break;
  case NGHTTP2_DATA:
    if (!r)
      break;
    if (f->hd.length && !r->bytes_out &&
        TRACE_WANTS(&r->tc, H2T_EV_SRV_WROTE_FIRST_BYTE)) {
      h2t_event ev = {.type = H2T_EV_SRV_WROTE_FIRST_BYTE};
      emit_req(r, &ev);
    }
    r->bytes_out += f->hd.length;
    break;
  case NGHTTP2_RST_STREAM: {
    c->s->st.resets_sent++;
    c->reset_ring[c->reset_pos++ % 32] = f->hd.stream_id;
    const trace_chain *tc = r ? &r->tc : &c->s->tc;
    if (TRACE_WANTS(tc, H2T_EV_SRV_STREAM_RESET)) {
      h2t_event ev = {.type = H2T_EV_SRV_STREAM_RESET,
                      .stream_id = f->hd.stream_id};
      ev.u.stream_reset.error_code = f->rst_stream.error_code;
      if (r)
        emit_req(r, &ev);
      else
        emit_conn(c, &ev);
    }
    return 0;
  }
  case NGHTTP2_GOAWAY:
    c->goaway = 1;
    { /* inflight */
      h2t_event m = {.type = H2T_EV_SRV_GOAWAY_SENT};
      h2t__metrics_event(&m);
      h2t__connreg_goaway(c->reg, 1);
    }
    if (TRACE_WANTS(&c->s->tc, H2T_EV_SRV_GOAWAY_SENT)) {
      h2t_event ev = {.type = H2T_EV_SRV_GOAWAY_SENT};
      ev.u.goaway_sent.last_stream_id = f->goaway.last_stream_id;
      ev.u.goaway_sent.error_code = f->goaway.error_code;
      emit_conn(c, &ev);
    }
    return 0;
  default:
    return 0;
  }
  if (r && end && TRACE_WANTS(&r->tc, H2T_EV_SRV_WROTE_RESPONSE)) {
    h2t_event ev = {.type = H2T_EV_SRV_WROTE_RESPONSE};
    ev.u.body.bytes = r->bytes_out;
    emit_req(r, &ev);
  }
  return 0;
}

static int on_stream_close(nghttp2_session *sess, int32_t sid, uint32_t code,
                           void *user) {
  h2t_server_req *r = nghttp2_session_get_stream_user_data(sess, sid);
  if (r) {
    nghttp2_session_set_stream_user_data(sess, sid, NULL);
    req_close(r, code);
  }
  return 0;
}

static ssize_t data_read(nghttp2_session *sess, int32_t sid, uint8_t *buf,
                         size_t length, uint32_t *flags,
                         nghttp2_data_source *src, void *user) {
  h2t_server_req *r = src->ptr;
  size_t n = 0;
  int eof = 0;
  switch (r->body_kind) {
  case SRV_BODY_BUF:
    n = r->blen - r->boff < length ? r->blen - r->boff : length;
    memcpy(buf, r->body + r->boff, n);
    r->boff += n;
    eof = r->boff == r->blen;
    break;
  case SRV_BODY_FILE: {
    size_t want = length;
    if (r->fleft >= 0 && (uint64_t)r->fleft < want)
      want = (size_t)r->fleft;
    ssize_t k = want ? pread(r->fd, buf, want, r->foff) : 0;
    if (k < 0)
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    n = (size_t)k;
    r->foff += k;
    if (r->fleft >= 0)
      r->fleft -= k;
    eof = k == 0 || r->fleft == 0;
    break;
  }
  case SRV_BODY_GEN: {
    ssize_t k;
    USER_CALL(r->s, k = r->gen(r, buf, length, &eof, r->gen_user));
    if (k == H2T_SERVER_BODY_DEFER || (k == 0 && !eof)) {
      r->deferred = 1;
      return NGHTTP2_ERR_DEFERRED;
    }
    if (k < 0 || (size_t)k > length)
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    n = (size_t)k;
    break;
  }
  default:
    eof = 1;
    break;
  }
  if (eof) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    if (r->ntrailers) {
      *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
      if (nghttp2_submit_trailer(sess, sid, r->trailers, r->ntrailers) != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
  } else if (TRACE_WANTS(&r->tc, H2T_EV_SRV_FLOW_BLOCKED)) {
    int32_t sw = nghttp2_session_get_stream_remote_window_size(sess, sid);
    int32_t cw = nghttp2_session_get_remote_window_size(sess);
    int blocked = (int64_t)n >= sw || (int64_t)n >= cw;
    if (blocked && !r->flow_blocked) {
      h2t_event ev = {.type = H2T_EV_SRV_FLOW_BLOCKED};
      ev.u.flow_blocked.conn_level = cw <= sw;
      ev.u.flow_blocked.stream_window = sw - (int32_t)n;
      ev.u.flow_blocked.conn_window = cw - (int32_t)n;
      emit_req(r, &ev);
    }
    r->flow_blocked = (unsigned)blocked;
  }
  return (ssize_t)n;
}

static nghttp2_session_callbacks *callbacks;
static pthread_once_t callbacks_once = PTHREAD_ONCE_INIT;

static void callbacks_init(void) {
  nghttp2_session_callbacks *cb;
  if (nghttp2_session_callbacks_new(&cb) != 0)
    return;
  nghttp2_session_callbacks_set_on_begin_frame_callback(cb, on_begin_frame);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
  nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
  callbacks = cb;
}

/* ------------------------------------------------------------------------
 * connection life
 */

static void conn_finish(srv_conn *c, int abort) {
  h2t_server *s = c->s;
  /* on_close callbacks below may answer other requests of this
   * connection: they must not queue it for a flush any more. */
  c->dying = 1;
  if (c->flush_queued) {
    for (srv_conn **p = &s->flush_head; *p; p = &(*p)->flush_next)
      if (*p == c) {
        *p = c->flush_next;
        break;
      }
    c->flush_queued = 0;
  }
  ev_io_stop(s->loop, &c->rio);
  ev_timer_stop(s->loop, &c->timer);
  if (c->nreqs) {
    for (h2t_server_req *r = s->reqs, *next; r; r = next) {
      next = r->next;
      if (r->c == c) {
        nghttp2_session_set_stream_user_data(c->sess, r->sid, NULL);
        req_close(r, NGHTTP2_CANCEL);
      }
    }
  }
  nghttp2_session_del(c->sess);
  if (!abort && c->ssl && c->tls_done) {
    SSL_shutdown(c->ssl); /* close_notify, into the output */
    ERR_clear_error();
  }
  if (c->ssl)
    SSL_free(c->ssl);
  if (!abort)
    push_out(c);
  h2t__writer_buf_put(s->writer, c->out);
  h2t_xfree(s->mem, c->pt);
  h2t__writer_conn_close(c->wc, abort); /* the writer closes the fd */
  if (c->prev)
    c->prev->next = c->next;
  else
    s->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  s->st.conns_open--;
  h2t__connreg_remove(c->reg); /* inflight */
  h2t_xfree(s->mem, c);
  h2t__srv_maybe_done(s);
}

void h2t__srv_conn_abort(srv_conn *c) { conn_finish(c, 1); }

void h2t__srv_conn_goaway(srv_conn *c) {
  if (c->ssl && !c->tls_done) {
    conn_finish(c, 1);
    return;
  }
  if (!c->goaway) {
    c->goaway = 1;
    nghttp2_submit_goaway(c->sess, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(c->sess),
                          NGHTTP2_NO_ERROR, NULL, 0);
  }
  schedule_flush(c);
}

void h2t__srv_conn_goaway_all(h2t_server *s) {
  for (srv_conn *c = s->conns, *next; c; c = next) {
    next = c->next;
    h2t__srv_conn_goaway(c);
  }
}

/* Feed plaintext to nghttp2.  Returns 0, or -1 when input is over. */
static int feed(srv_conn *c, const uint8_t *data, size_t len) {
  ssize_t rv = nghttp2_session_mem_recv(c->sess, data, len);
  if (rv >= 0)
    return 0;
  /* Fatal for the session (bad preface, flood, callback failure): say so
   * with GOAWAY if nghttp2 has not already, stop reading, close after it
   * is written. */
  c->input_dead = 1;
  nghttp2_session_terminate_session(
      c->sess, rv == NGHTTP2_ERR_FLOODED  ? NGHTTP2_ENHANCE_YOUR_CALM
               : rv == NGHTTP2_ERR_NOMEM ? NGHTTP2_INTERNAL_ERROR
                                         : NGHTTP2_PROTOCOL_ERROR);
  ev_io_stop(c->s->loop, &c->rio);
  return -1;
}

static void tls_handshake_trace(srv_conn *c, int error) {
  if (!TRACE_WANTS(&c->s->tc, H2T_EV_SRV_TLS_HANDSHAKE_DONE))
    return;
  h2t_event ev = {.type = H2T_EV_SRV_TLS_HANDSHAKE_DONE};
  const unsigned char *alpn = NULL;
  unsigned alen = 0;
  char proto[32] = "";
  ev.u.tls.error = error;
  ev.u.tls.sni = SSL_get_servername(c->ssl, TLSEXT_NAMETYPE_host_name);
  if (!error) {
    SSL_get0_alpn_selected(c->ssl, &alpn, &alen);
    if (alpn && alen < sizeof proto) {
      memcpy(proto, alpn, alen);
      proto[alen] = '\0';
      ev.u.tls.alpn = proto;
    }
    ev.u.tls.version = SSL_get_version(c->ssl);
    ev.u.tls.cipher = SSL_get_cipher_name(c->ssl);
    ev.u.tls.resumed = SSL_session_reused(c->ssl);
  }
  emit_conn(c, &ev);
}

/* Ciphertext in.  Returns 0, or -1 when the connection must go now. */
static int tls_feed(srv_conn *c, const uint8_t *data, size_t len) {
  if (BIO_write(c->rbio, data, (int)len) != (int)len)
    return -1;
  if (!c->tls_done) {
    int r = SSL_do_handshake(c->ssl);
    if (r != 1) {
      int e = SSL_get_error(c->ssl, r);
      ERR_clear_error();
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
      tls_handshake_trace(c, H2T_ERR_TLS);
      push_out(c); /* the alert */
      return -1;
    }
    const unsigned char *alpn = NULL;
    unsigned alen = 0;
    SSL_get0_alpn_selected(c->ssl, &alpn, &alen);
    if (alpn && !(alen == 2 && !memcmp(alpn, "h2", 2))) {
      tls_handshake_trace(c, H2T_ERR_ALPN);
      return -1;
    }
    c->tls_done = 1;
    tls_handshake_trace(c, 0);
  }
  uint8_t buf[TLS_RECORD];
  while (!c->input_dead) {
    int r = SSL_read(c->ssl, buf, sizeof buf);
    if (r > 0) {
      if (feed(c, buf, (size_t)r) != 0)
        break;
      continue;
    }
    int e = SSL_get_error(c->ssl, r);
    ERR_clear_error();
    if (e == SSL_ERROR_WANT_READ)
      break;
    return -1; /* close_notify or a TLS error */
  }
  return 0;
}

static void conn_read(struct ev_loop *loop, srv_conn *c) {
  uint8_t buf[READ_CHUNK];
  for (int i = 0; i < 4 && !c->input_dead; i++) {
    ssize_t n = recv(c->fd, buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        break;
      conn_finish(c, 1);
      return;
    }
    if (n == 0) {
      conn_finish(c, 1);
      return;
    }
    c->s->st.bytes_in += (uint64_t)n;
    h2t__connreg_bytes(c->reg, (uint64_t)n, 0); /* inflight */
    /* h2c failures end in a GOAWAY written by the next flush; TLS ones
     * (handshake, alert, close_notify) end the connection now. */
    if (!c->ssl) {
      feed(c, buf, (size_t)n);
    } else if (tls_feed(c, buf, (size_t)n) != 0) {
      conn_finish(c, 0);
      return;
    }
    if ((size_t)n < sizeof buf)
      break;
  }
  c->last_activity = ev_now(loop);
  schedule_flush(c);
}

static void read_cb(struct ev_loop *loop, ev_io *io, int revents) {
  h2t_server *s = ((srv_conn *)io->data)->s;
  s->in_burst = 1;
  s->now_us = 0;
  conn_read(loop, io->data);
  s->in_burst = 0;
}

static void conn_timer_cb(struct ev_loop *loop, ev_timer *t, int revents) {
  srv_conn *c = t->data;
  h2t_server *s = c->s;
  ev_tstamp now = ev_now(loop);
  ev_tstamp next;
  if (!c->ready || (c->ssl && !c->tls_done)) {
    ev_tstamp dl = c->t_accept + s->cfg.handshake_timeout_ms / 1000.0;
    if (now >= dl) {
      conn_finish(c, 1);
      return;
    }
    next = dl - now;
  } else {
    ev_tstamp dl = c->last_activity + s->cfg.idle_timeout_ms / 1000.0;
    if (c->nreqs) {
      next = s->cfg.idle_timeout_ms / 1000.0;
    } else if (now >= dl) {
      if (c->goaway) { /* GOAWAY sent and still here: give up */
        conn_finish(c, 1);
        return;
      }
      h2t__srv_conn_goaway(c);
      next = s->cfg.shutdown_timeout_ms / 1000.0;
    } else {
      next = dl - now;
    }
  }
  ev_timer_set(t, next, 0.);
  ev_timer_start(loop, t);
}

void h2t__srv_conn_accept(h2t_server *s, srv_listener *l, int fd) {
  if (s->shutting) {
    close(fd);
    return;
  }
  if (s->cfg.max_conns && s->st.conns_open >= s->cfg.max_conns) {
    s->st.shed_conns++;
    { /* inflight: /metrics */
      h2t_event m = {.type = H2T_EV_SRV_LOAD_SHED};
      m.u.load_shed.reason = H2T_SHED_CONNECTIONS;
      m.u.load_shed.action = H2T_SHED_CLOSE;
      h2t__metrics_event(&m);
    }
    if (TRACE_WANTS(&s->tc, H2T_EV_SRV_LOAD_SHED)) {
      h2t_event ev = {.type = H2T_EV_SRV_LOAD_SHED};
      ev.u.load_shed.reason = H2T_SHED_CONNECTIONS;
      ev.u.load_shed.action = H2T_SHED_CLOSE;
      trace_emit(&s->tc, &ev);
    }
    close(fd);
    return;
  }
  pthread_once(&callbacks_once, callbacks_init);
  srv_conn *c = callbacks ? h2t_xcalloc(s->mem, 1, sizeof *c) : NULL;
  if (!c) {
    close(fd);
    return;
  }
  c->s = s;
  c->l = l;
  c->fd = fd;
  c->id = h2t_next_conn_id();
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

  nghttp2_option *opt = NULL;
  nghttp2_mem ngmem, *ngm = NULL;
  if (s->mem) {
    ngmem = (nghttp2_mem){s->mem->user, s->mem->malloc, s->mem->free,
                          s->mem->calloc, s->mem->realloc};
    ngm = &ngmem;
  }
  if (nghttp2_option_new(&opt) != 0)
    goto fail;
  nghttp2_option_set_stream_reset_rate_limit(opt, 1000, 33);
  int rv = nghttp2_session_server_new3(&c->sess, callbacks, c, opt, ngm);
  nghttp2_option_del(opt);
  if (rv != 0) {
    c->sess = NULL;
    goto fail;
  }
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, s->cfg.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, s->cfg.initial_window_size},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, s->cfg.max_header_list_size},
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
  if (nghttp2_submit_settings(c->sess, NGHTTP2_FLAG_NONE, iv, 4) != 0 ||
      nghttp2_session_set_local_window_size(c->sess, NGHTTP2_FLAG_NONE, 0,
                                            CONN_WINDOW) != 0)
    goto fail;
  if (l->ssl_ctx) {
    c->sink = (srv_tls_sink){tls_sink, c};
    c->ssl = h2t__srv_tls_conn_new(l->ssl_ctx, &c->rbio, &c->sink);
    if (!c->ssl)
      goto fail;
  }
  c->wc = h2t__writer_conn_new(s->writer, fd, writer_notify, c);
  if (!c->wc)
    goto fail;

  c->t_accept = c->last_activity = ev_now(s->loop);
  ev_io_init(&c->rio, read_cb, fd, EV_READ);
  c->rio.data = c;
  ev_io_start(s->loop, &c->rio);
  ev_timer_init(&c->timer, conn_timer_cb, s->cfg.handshake_timeout_ms / 1000.0,
                0.);
  c->timer.data = c;
  ev_timer_start(s->loop, &c->timer);
  c->next = s->conns;
  if (s->conns)
    s->conns->prev = c;
  s->conns = c;
  s->st.conns_accepted++;
  s->st.conns_open++;
  { /* inflight: /metrics */
    h2t_event m = {.type = H2T_EV_SRV_CONN_ACCEPTED};
    h2t__metrics_event(&m);
  }
  int traced = TRACE_WANTS(&s->tc, H2T_EV_SRV_CONN_ACCEPTED);
  if (traced || h2t_inflight_enabled()) { /* inflight: peer for the registry */
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char peer[INET6_ADDRSTRLEN + 8] = "", local[INET6_ADDRSTRLEN + 8] = "";
    for (int k = 0; k < 2; k++) {
      char *dst = k ? local : peer;
      char a[INET6_ADDRSTRLEN] = "";
      sl = sizeof ss;
      if ((k ? getsockname(fd, (struct sockaddr *)&ss, &sl)
             : getpeername(fd, (struct sockaddr *)&ss, &sl)) != 0)
        continue;
      if (ss.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &in->sin_addr, a, sizeof a);
        snprintf(dst, sizeof peer, "%s:%u", a, ntohs(in->sin_port));
      } else if (ss.ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, a, sizeof a);
        snprintf(dst, sizeof peer, "[%s]:%u", a, ntohs(in6->sin6_port));
      }
    }
    c->reg = h2t__connreg_add(INFLIGHT_SERVER, c->id, peer, NULL); /* inflight */
    h2t__connreg_set_max_streams(c->reg, s->cfg.max_concurrent_streams);
    if (traced) {
      h2t_event ev = {.type = H2T_EV_SRV_CONN_ACCEPTED};
      ev.u.conn_accepted.peer = peer;
      ev.u.conn_accepted.local = local;
      emit_conn(c, &ev);
    }
  }
  if (!c->ssl)
    schedule_flush(c); /* our SETTINGS go out at once */
  return;
fail:
  if (c->sess)
    nghttp2_session_del(c->sess);
  if (c->ssl)
    SSL_free(c->ssl);
  h2t_xfree(s->mem, c);
  close(fd);
}

/* ------------------------------------------------------------------------
 * request API
 */

void h2t__srv_req_cancel(h2t_server *s, uint64_t req_id) {
  for (h2t_server_req *r = s->reqs; r; r = r->next)
    if (r->id == req_id) {
      r->canceled = 1;
      h2t_server_req_reset(r, NGHTTP2_CANCEL);
      return;
    }
}

static const char *nz(const char *s) { return s ? s : ""; }

const char *h2t_server_req_method(const h2t_server_req *r) {
  return r ? nz(r->method) : "";
}
const char *h2t_server_req_path(const h2t_server_req *r) {
  return r ? nz(r->path) : "";
}
const char *h2t_server_req_scheme(const h2t_server_req *r) {
  return r ? nz(r->scheme) : "";
}
const char *h2t_server_req_authority(const h2t_server_req *r) {
  return r ? nz(r->authority) : "";
}

const h2t_header *h2t_server_req_headers(const h2t_server_req *r, size_t *n) {
  if (n)
    *n = r ? r->nhdrs : 0;
  return r ? r->hdrs : NULL;
}

const char *h2t_server_req_header(const h2t_server_req *r, const char *name) {
  if (!r || !name)
    return NULL;
  for (size_t i = 0; i < r->nhdrs; i++)
    if (!strcmp(r->hdrs[i].name, name))
      return r->hdrs[i].value;
  return NULL;
}

uint64_t h2t_server_req_id(const h2t_server_req *r) { return r ? r->id : 0; }
int32_t h2t_server_req_stream_id(const h2t_server_req *r) {
  return r ? r->sid : 0;
}
uint64_t h2t_server_req_conn_id(const h2t_server_req *r) {
  return r ? r->c->id : 0;
}
h2t_server *h2t_server_req_server(const h2t_server_req *r) {
  return r ? r->s : NULL;
}
int h2t_server_req_canceled(const h2t_server_req *r) {
  return r ? r->canceled : 1;
}

int h2t_server_req_set_status(h2t_server_req *r, const char *text) {
  if (!r || !text)
    return H2T_ERR_INVALID_ARG;
  if (r->ife)
    h2t__inflight_set_status(r->ife, text);
  return 0;
}

int h2t_server_req_on(h2t_server_req *r, h2t_server_body_cb on_body,
                      h2t_server_close_cb on_close, void *user) {
  if (!r || r->closed)
    return H2T_ERR_INVALID_ARG;
  r->on_body = on_body;
  r->on_close = on_close;
  r->cb_user = user;
  if (on_body && r->held_len) {
    uint8_t *held = r->held;
    size_t n = r->held_len;
    r->held = NULL;
    r->held_len = r->held_cap = 0;
    int rc;
    USER_CALL(r->s, rc = on_body(r, held, n, 0, user));
    h2t_xfree(r->s->mem, held);
    if (rc != 0) {
      h2t_server_req_reset(r, NGHTTP2_CANCEL);
      return 0;
    }
  }
  if (on_body && r->body_eof && !r->body_delivered_eof) {
    r->body_delivered_eof = 1;
    int rc;
    USER_CALL(r->s, rc = on_body(r, NULL, 0, 1, user));
    if (rc != 0)
      h2t_server_req_reset(r, NGHTTP2_CANCEL);
  }
  return 0;
}

static int headers_ok(const h2t_header *h, size_t n) {
  if (n && !h)
    return 0;
  for (size_t i = 0; i < n; i++) {
    if (!h[i].name || !h[i].value || !h[i].name[0] || h[i].name[0] == ':')
      return 0;
    for (const char *p = h[i].name; *p; p++)
      if (isupper((unsigned char)*p))
        return 0;
  }
  return 1;
}

#define NV(n, nl, v, vl)                                                       \
  (nghttp2_nv) {                                                               \
    (uint8_t *)(n), (uint8_t *)(v), (nl), (vl), NGHTTP2_NV_FLAG_NONE           \
  }

/* Decimal digits of v into b (NUL-terminated); returns the length. */
static size_t utoa(uint64_t v, char *b) {
  char t[24];
  size_t n = 0;
  do
    t[n++] = (char)('0' + v % 10);
  while ((v /= 10));
  for (size_t i = 0; i < n; i++)
    b[i] = t[n - 1 - i];
  b[n] = '\0';
  return n;
}

static int req_submit(h2t_server_req *r, int status, const h2t_header *hdrs,
                      size_t n, int64_t content_length) {
  if (!r)
    return H2T_ERR_INVALID_ARG;
  if (r->closed || r->responded)
    return H2T_ERR_STATE;
  if (status < 200 || status > 999 || !headers_ok(hdrs, n))
    return H2T_ERR_INVALID_ARG;
  nghttp2_nv stack[16], *nva = stack;
  if (n + 2 > 16) {
    nva = h2t_xmalloc(r->s->mem, (n + 2) * sizeof *nva);
    if (!nva)
      return H2T_ERR_NOMEM;
  }
  char st[8], cl[24];
  size_t stl = utoa((uint64_t)status, st);
  size_t k = 0;
  int have_cl = 0;
  nva[k++] = NV(":status", 7, st, stl);
  for (size_t i = 0; i < n; i++) {
    if (!strcmp(hdrs[i].name, "content-length"))
      have_cl = 1;
    nva[k++] = NV(hdrs[i].name, strlen(hdrs[i].name), hdrs[i].value,
                  strlen(hdrs[i].value));
  }
  if (content_length >= 0 && !have_cl) {
    size_t cll = utoa((uint64_t)content_length, cl);
    nva[k++] = NV("content-length", 14, cl, cll);
  }
  nghttp2_data_provider prd = {.source.ptr = r, .read_callback = data_read};
  int has_body = r->body_kind != SRV_BODY_NONE || r->ntrailers;
  int rv = nghttp2_submit_response(r->c->sess, r->sid, nva, k,
                                   has_body ? &prd : NULL);
  if (nva != stack)
    h2t_xfree(r->s->mem, nva);
  if (rv != 0)
    return rv == NGHTTP2_ERR_NOMEM ? H2T_ERR_NOMEM : H2T_ERR_STATE;
  r->responded = 1;
  r->status = status;
  r->s->st.responses++;
  schedule_flush(r->c);
  return 0;
}

int h2t_server_req_respond(h2t_server_req *r, int status,
                           const h2t_header *hdrs, size_t n, const void *body,
                           size_t len, unsigned flags) {
  if (!r || (len && !body))
    return H2T_ERR_INVALID_ARG;
  if (r->closed || r->responded)
    return H2T_ERR_STATE;
  if (len) {
    if (flags & H2T_RESPOND_NOCOPY) {
      r->body = body;
    } else {
      r->owned = h2t_xmalloc(r->s->mem, len);
      if (!r->owned)
        return H2T_ERR_NOMEM;
      memcpy(r->owned, body, len);
      r->body = r->owned;
    }
    r->blen = len;
    r->boff = 0;
    r->body_kind = SRV_BODY_BUF;
  }
  int rc = req_submit(r, status, hdrs, n, (int64_t)len);
  if (rc != 0) {
    h2t_xfree(r->s->mem, r->owned);
    r->owned = NULL;
    r->body_kind = SRV_BODY_NONE;
  }
  return rc;
}

int h2t_server_req_respond_file(h2t_server_req *r, int status,
                                const h2t_header *hdrs, size_t n, int fd,
                                off_t off, int64_t len) {
  if (!r || fd < 0 || off < 0) {
    if (fd >= 0)
      close(fd);
    return H2T_ERR_INVALID_ARG;
  }
  if (r->closed || r->responded) {
    close(fd);
    return H2T_ERR_STATE;
  }
  r->fd = fd;
  r->foff = off;
  r->fleft = len < 0 ? -1 : len;
  r->body_kind = SRV_BODY_FILE;
  int rc = req_submit(r, status, hdrs, n, len);
  if (rc != 0)
    r->body_kind = SRV_BODY_NONE; /* fd is closed with the request */
  return rc;
}

int h2t_server_req_respond_gen(h2t_server_req *r, int status,
                               const h2t_header *hdrs, size_t n,
                               h2t_server_gen_cb gen, void *user) {
  if (!r || !gen)
    return H2T_ERR_INVALID_ARG;
  if (r->closed || r->responded)
    return H2T_ERR_STATE;
  r->gen = gen;
  r->gen_user = user;
  r->body_kind = SRV_BODY_GEN;
  int rc = req_submit(r, status, hdrs, n, -1);
  if (rc != 0)
    r->body_kind = SRV_BODY_NONE;
  return rc;
}

int h2t_server_req_resume(h2t_server_req *r) {
  if (!r || r->closed || !r->responded)
    return H2T_ERR_STATE;
  if (!r->deferred)
    return 0;
  r->deferred = 0;
  if (nghttp2_session_resume_data(r->c->sess, r->sid) != 0)
    return H2T_ERR_STATE;
  schedule_flush(r->c);
  return 0;
}

int h2t_server_req_set_trailers(h2t_server_req *r, const h2t_header *hdrs,
                                size_t n) {
  if (!r || !n || !headers_ok(hdrs, n))
    return H2T_ERR_INVALID_ARG;
  if (r->closed || r->ntrailers ||
      (r->responded && r->body_kind != SRV_BODY_GEN))
    return H2T_ERR_STATE;
  nghttp2_nv *nv = h2t_xmalloc(r->s->mem, n * sizeof *nv);
  if (!nv)
    return H2T_ERR_NOMEM;
  for (size_t i = 0; i < n; i++) {
    size_t nl = strlen(hdrs[i].name), vl = strlen(hdrs[i].value);
    char *a = arena_dup(r, hdrs[i].name, nl), *b = arena_dup(r, hdrs[i].value, vl);
    if (!a || !b) {
      h2t_xfree(r->s->mem, nv);
      return H2T_ERR_NOMEM;
    }
    nv[i] = NV(a, nl, b, vl);
  }
  r->trailers = nv;
  r->ntrailers = n;
  return 0;
}

int h2t_server_req_reset(h2t_server_req *r, uint32_t error_code) {
  if (!r || r->closed)
    return H2T_ERR_STATE;
  if (nghttp2_submit_rst_stream(r->c->sess, NGHTTP2_FLAG_NONE, r->sid,
                                error_code) != 0)
    return H2T_ERR_STATE;
  schedule_flush(r->c);
  return 0;
}
