/*
 * A server request's life, from the HEADERS that open its stream to its
 * close: the one place a request is made and freed.  It hears of streams
 * through the srv_sess_callbacks it registers with session.c, runs the
 * route's handler, and has every public h2t_server_req_* call.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <h2trace/inflight.h>
#include "h2/server/server_int.h"
#include "trace/tracectx_int.h"

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
/* Header strings kept by reference to nghttp2's buffers; past that many,
 * copied into the arena. */
#define SRV_REFS 16

struct h2t_server_req {
  srv_ctx *x;
  srv_conn *c;
  int32_t sid;
  uint64_t id;
  uint64_t t_start;
  h2t_server_req *prev, *next; /* x->reqs */
  uint64_t conn_id;            /* c may be gone by on_close (see wrefs) */
  /* Pieces of the response body the writer holds by reference: on_close
   * and the free wait until it gives the last one back. */
  unsigned wrefs;
  trace_chain tc;              /* the server's, plus the in-flight entry */
  struct inflight_entry *ife;
  h2t_trace_context tctx;      /* W3C: the incoming trace, our own span */

  const char *method, *path, *scheme, *authority;
  h2t_header *hdrs; /* hdrs0 until it outgrows it */
  size_t nhdrs, hcap;
  h2t_header hdrs0[SRV_HDRS0];
  int status;
  size_t hdr_bytes;
  srv_arena_blk *arena;
  nghttp2_rcbuf *refs[SRV_REFS];
  unsigned nrefs;
  const srv_route *route;

  unsigned headers_done : 1, body_eof : 1, responded : 1, closed : 1,
      canceled : 1, too_big : 1, shed503 : 1, deferred : 1, counted : 1,
      flow_blocked : 1, sent_first : 1, body_delivered_eof : 1,
      flow_held : 1, stall_on : 1, sent_all : 1;

  /* request body held until on_body is registered; counted in c->body_held
   * and x->st.body_buffered, and not consumed (the peer's windows stay
   * short by as much) until it is read or dropped */
  uint8_t *held;
  size_t held_len, held_cap;
  uint64_t bytes_in, bytes_out;
  uint32_t close_code;

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
  /* body_timeout_ms and stream_idle_timeout_ms: from the headers on, fires
   * at last progress + the shorter of the two and looks at who waits */
  ev_timer stall;
  ev_tstamp t_progress; /* DATA received or a frame sent for the stream */
};

/* ------------------------------------------------------------------------
 * small helpers
 */

static void emit_req(h2t_server_req *r, h2t_event *ev) {
  ev->t_us = srv_now(r->x);
  ev->sreq = r;
  ev->req_id = r->id;
  ev->conn_id = r->c->io.id;
  ev->stream_id = r->sid;
  ev->trace = r->headers_done ? &r->tctx : NULL; /* made then */
  trace_emit(&r->tc, ev);
}

/* n bytes of r's arena (never NULL-terminated by itself). */
static char *arena_alloc_slow(h2t_server_req *r, size_t n) {
  size_t cap = n > 1024 ? n : 1024;
  srv_arena_blk *b = h2t_xmalloc(r->x->mem, sizeof *b + cap);
  if (!b)
    return NULL;
  b->next = r->arena;
  b->used = n;
  b->cap = cap;
  b->inline_ = 0;
  r->arena = b;
  return b->data;
}

static inline char *arena_alloc(h2t_server_req *r, size_t n) {
  srv_arena_blk *b = r->arena;
  if (b->cap - b->used < n)
    return arena_alloc_slow(r, n);
  char *d = b->data + b->used;
  b->used += n;
  return d;
}

static inline char *arena_dup(h2t_server_req *r, const void *p, size_t n) {
  char *d = arena_alloc(r, n + 1);
  if (d) {
    memcpy(d, p, n);
    d[n] = '\0';
  }
  return d;
}

/* A header string of nghttp2's, kept for as long as r: by reference when
 * there is room in r->refs, else copied. */
static const char *hold(h2t_server_req *r, nghttp2_rcbuf *rc, nghttp2_vec v) {
  if (v.base[v.len] == '\0') { /* always, as nghttp2 documents */
    if (nghttp2_rcbuf_is_static(rc))
      return (const char *)v.base;
    if (r->nrefs < SRV_REFS) {
      nghttp2_rcbuf_incref(rc);
      r->refs[r->nrefs++] = rc;
      return (const char *)v.base;
    }
  }
  return arena_dup(r, v.base, v.len);
}

/* ------------------------------------------------------------------------
 * life: req_new and req_close are the only places a request is made and
 * freed
 */

/* The held body is read or dropped: give its bytes back to the peer's
 * windows and to the budgets. */
static void held_release(h2t_server_req *r) {
  srv_ctx *x = r->x;
  size_t n = r->held_len;
  h2t_xfree(x->mem, r->held);
  r->held = NULL;
  r->held_len = r->held_cap = 0;
  if (!n)
    return;
  x->st.body_buffered -= n;
  r->c->body_held -= n;
  h2t__srv_sess_consume(r->c, r->sid, n);
}

/* A body limit acted on r (load_shed event, /metrics). */
static void shed_trace(srv_conn *c, h2t_server_req *r, int32_t sid,
                       h2t_shed_reason why, h2t_shed_action what);

static void req_free(h2t_server_req *r) {
  const h2t_mem *m = r->x->mem;
  for (unsigned i = 0; i < r->nrefs; i++)
    nghttp2_rcbuf_decref(r->refs[i]);
  while (r->arena) {
    srv_arena_blk *b = r->arena;
    r->arena = b->next;
    if (!b->inline_)
      h2t_xfree(m, b);
  }
  if (r->hdrs != r->hdrs0)
    h2t_xfree(m, r->hdrs);
  h2t_xfree(m, r->owned);
  h2t_xfree(m, r->trailers);
  if (r->fd >= 0)
    close(r->fd);
  h2t__slab_free(r, r->x->slab);
}

/* Closed, and the writer holds nothing of its body: a NOCOPY buffer is the
 * user's until on_close, so on_close comes only now. */
static void req_done(h2t_server_req *r) {
  if (r->on_close)
    SRV_USER_CALL(r->x, r->on_close(r, r->close_code, r->cb_user));
  req_free(r);
}

/* The stream is over (closed by nghttp2, or the connection went away);
 * session.c has detached it. */
static void req_close(h2t_server_req *r, uint32_t code) {
  if (r->closed)
    return;
  srv_ctx *x = r->x;
  r->closed = 1;
  if (code)
    r->canceled = 1;
  if (x->cfg.stream_timeout_ms)
    ev_timer_stop(x->loop, &r->timeout);
  if (r->stall_on)
    ev_timer_stop(x->loop, &r->stall);
  held_release(r); /* the stream is gone: the connection's window is not */
  if (TRACE_WANTS(&r->tc, H2T_EV_SRV_STREAM_CLOSED)) {
    h2t_event ev = {.type = H2T_EV_SRV_STREAM_CLOSED};
    ev.t_us = srv_now(x);
    ev.u.stream_closed.error_code = code;
    ev.u.stream_closed.bytes_in = r->bytes_in;
    ev.u.stream_closed.bytes_out = r->bytes_out;
    ev.u.stream_closed.total_us = ev.t_us - r->t_start;
    emit_req(r, &ev);
  }
  if (r->headers_done) {
    H2T_COZ_END("server_request");
    H2T_COZ_PROGRESS("server_request_done");
  }
  if (r->ife)
    h2t__inflight_end(r->ife, code == 0 ? 0
                         : code == NGHTTP2_CANCEL ? H2T_ERR_CANCELED
                                                  : H2T_ERR_STREAM_RESET);
  if (r->counted) {
    x->st.inflight--;
    h2t__connreg_stream_close(r->c->io.reg); /* inflight */
  }
  if (r->prev)
    r->prev->next = r->next;
  else
    x->reqs = r->next;
  if (r->next)
    r->next->prev = r->prev;
  r->close_code = code;
  r->c = NULL; /* the connection may go before the writer lets go */
  if (!r->wrefs)
    req_done(r);
}

/* The writer gave back a piece of r's body (on the loop, from its top). */
static void req_release(void *arg) {
  h2t_server_req *r = arg;
  if (--r->wrefs == 0 && r->closed)
    req_done(r);
}

static void stream_timeout_cb(struct ev_loop *loop, ev_timer *t, int revents) {
  h2t_server_req *r = t->data;
  h2t_server_req_reset(r, NGHTTP2_CANCEL);
}

/* Who does a stream wait on?  The peer owes body bytes it may send (the
 * windows are open), or does not read a response that is ready: those are
 * the peer's stalls, and time out.  A handler at work, a generator that
 * deferred, a body held back by our own windows: those are not. */
static void stall_cb(struct ev_loop *loop, ev_timer *t, int revents) {
  h2t_server_req *r = t->data;
  srv_ctx *x = r->x;
  ev_tstamp now = ev_now(loop), idle = now - r->t_progress;
  uint32_t bt = x->cfg.body_timeout_ms, it = x->cfg.stream_idle_timeout_ms;
  h2t_shed_reason why = 0;
  if (!r->body_eof && bt != H2T_SERVER_UNLIMITED && idle >= bt / 1000.0 &&
      h2t__srv_sess_peer_may_send(r->c, r->sid)) {
    x->st.body_timeouts++;
    why = H2T_SHED_BODY_TIMEOUT;
  } else if (r->responded && !r->sent_all && !r->deferred &&
             it != H2T_SERVER_UNLIMITED &&
             idle >= it / 1000.0 && h2t__srv_sess_write_blocked(r->c, r->sid)) {
    x->st.idle_timeouts++;
    why = H2T_SHED_IDLE_TIMEOUT;
  }
  if (why) {
    shed_trace(r->c, r, r->sid, why, H2T_SHED_RESET);
    r->canceled = 1;
    h2t_server_req_reset(r, NGHTTP2_CANCEL);
    return;
  }
  /* not the peer's doing (or not yet): look again one period after the
   * last progress */
  ev_tstamp p = bt < it ? bt / 1000.0 : it / 1000.0;
  ev_tstamp next = r->t_progress + p - now;
  if (next < p / 4) /* waiting on us: no need to poll often */
    next = p / 4;
  ev_timer_set(t, next, 0.);
  ev_timer_start(loop, t);
}

static void stall_start(h2t_server_req *r) {
  srv_ctx *x = r->x;
  uint32_t bt = x->cfg.body_timeout_ms, it = x->cfg.stream_idle_timeout_ms;
  if (bt == H2T_SERVER_UNLIMITED && it == H2T_SERVER_UNLIMITED)
    return;
  r->t_progress = ev_now(x->loop);
  ev_timer_init(&r->stall, stall_cb, (bt < it ? bt : it) / 1000.0, 0.);
  r->stall.data = r;
  ev_timer_start(x->loop, &r->stall);
  r->stall_on = 1;
}

static h2t_server_req *req_new(srv_conn *c, int32_t sid) {
  srv_ctx *x = c->x;
  /* One allocation: the request, then its first arena block. */
  h2t_server_req *r = h2t__slab_malloc(
      sizeof *r + sizeof(srv_arena_blk) + SRV_ARENA0, x->slab);
  if (!r)
    return NULL;
  memset(r, 0, sizeof *r);
  srv_arena_blk *b0 = (srv_arena_blk *)(r + 1);
  *b0 = (srv_arena_blk){.cap = SRV_ARENA0, .inline_ = 1};
  r->arena = b0;
  r->hdrs = r->hdrs0;
  r->hcap = SRV_HDRS0;
  r->x = x;
  r->c = c;
  r->sid = sid;
  r->conn_id = c->io.id;
  r->id = h2t_next_req_id();
  r->t_start = srv_now(x);
  r->fd = -1;
  r->method = r->path = r->scheme = r->authority = "";
  r->tc = x->tc;
  r->next = x->reqs;
  if (x->reqs)
    x->reqs->prev = r;
  x->reqs = r;
  /* In the table from its first header byte, "reading headers": a request
   * whose headers never end is seen (the connection's header_timeout_ms
   * ends it). */
  r->ife = h2t__inflight_begin_at(INFLIGHT_SERVER, r->id, NULL, NULL, NULL,
                                  NULL, x->req_up.cancel_post, x->req_up.arg,
                                  r->t_start); /* inflight: no extra clock */
  if (r->ife)
    h2t__trace_chain_set_inflight(&r->tc, r->ife);
  /* From the first header byte: a request that trickles its headers is
   * timed out too. */
  if (x->cfg.stream_timeout_ms) {
    ev_timer_init(&r->timeout, stream_timeout_cb,
                  x->cfg.stream_timeout_ms / 1000.0, 0.);
    r->timeout.data = r;
    ev_timer_start(x->loop, &r->timeout);
  }
  return r;
}

void h2t__srv_req_cancel(srv_ctx *x, uint64_t req_id) {
  for (h2t_server_req *r = x->reqs; r; r = r->next)
    if (r->id == req_id) {
      r->canceled = 1;
      h2t_server_req_reset(r, NGHTTP2_CANCEL);
      return;
    }
}

/* ------------------------------------------------------------------------
 * handlers
 */

static const srv_route *route_find(srv_ctx *x, const char *path) {
  size_t plen = strcspn(path, "?");
  const srv_route *best = NULL;
  for (size_t i = 0; i < x->nroutes; i++) {
    const srv_route *rt = &x->routes[i];
    if (rt->len <= plen && !memcmp(rt->prefix, path, rt->len) &&
        (!best || rt->len > best->len))
      best = rt;
  }
  return best;
}

static void shed_trace(srv_conn *c, h2t_server_req *r, int32_t sid,
                       h2t_shed_reason why, h2t_shed_action what) {
  if (!r) {
    h2t__srv_conn_shed(c, sid, why, what);
    return;
  }
  h2t_event ev = {.type = H2T_EV_SRV_LOAD_SHED};
  ev.u.load_shed.reason = why;
  ev.u.load_shed.action = what;
  h2t__metrics_event(&ev); /* inflight: counted whether traced or not */
  if (TRACE_WANTS(&r->tc, H2T_EV_SRV_LOAD_SHED))
    emit_req(r, &ev); /* sets the stream id, r's own */
}

static void simple_response(h2t_server_req *r, int status) {
  static const h2t_header ct = {"content-type", "text/plain"};
  char body[64];
  int n = snprintf(body, sizeof body, "%d\n", status);
  h2t_server_req_respond(r, status, &ct, 1, body, (size_t)n, 0);
}

/* W3C trace context: continue the incoming trace with a span of our own,
 * or start one.  A traceparent that does not parse is ignored, as the spec
 * says; so are two of them (they would combine into one invalid value). */
static void req_trace_context(h2t_server_req *r) {
  const char *tp = NULL;
  int count = 0;
  for (size_t i = 0; i < r->nhdrs; i++)
    if (r->hdrs[i].name[0] == 't' && !strcmp(r->hdrs[i].name, "traceparent")) {
      tp = r->hdrs[i].value;
      count++;
    }
  h2t_trace_context in;
  h2t__trace_ctx_new(&r->tctx, count == 1 && h2t_trace_context_parse(tp, &in) == 0
                                   ? &in
                                   : NULL);
}

static void req_headers_done(h2t_server_req *r, int end_stream) {
  srv_ctx *x = r->x;
  r->headers_done = 1;
  x->st.requests++;
  H2T_COZ_BEGIN("server_request");
  req_trace_context(r);
  if (r->ife)
    h2t__inflight_set_trace(r->ife, &r->tctx);
  if (TRACE_WANTS(&r->tc, H2T_EV_SRV_REQUEST_HEADERS)) {
    h2t_event ev = {.type = H2T_EV_SRV_REQUEST_HEADERS};
    ev.u.request_headers.method = r->method;
    ev.u.request_headers.path = r->path;
    ev.u.request_headers.authority = r->authority;
    ev.u.request_headers.scheme = r->scheme;
    ev.u.request_headers.end_stream = end_stream;
    emit_req(r, &ev);
  }
  stall_start(r);
  if (r->shed503) {
    x->st.shed_503++;
    shed_trace(r->c, r, r->sid, H2T_SHED_INFLIGHT, H2T_SHED_503);
    static const h2t_header ra = {"retry-after", "1"};
    h2t_server_req_respond(r, 503, &ra, 1, "503\n", 4, H2T_RESPOND_NOCOPY);
    return;
  }
  if (r->too_big) {
    simple_response(r, 431);
    return;
  }
  r->route = route_find(x, r->path);
  if (!r->route) {
    simple_response(r, 404);
    return;
  }
  if (TRACE_WANTS(&r->tc, H2T_EV_SRV_HANDLER_STARTED)) {
    h2t_event ev = {.type = H2T_EV_SRV_HANDLER_STARTED};
    ev.u.handler_started.route = r->route->prefix;
    emit_req(r, &ev);
  }
  SRV_USER_CALL(x, r->route->fn(r, r->route->user));
}

/* ------------------------------------------------------------------------
 * what session.c reports
 */

static void *on_stream_open(srv_conn *c, int32_t sid) {
  srv_ctx *x = c->x;
  int shed503 = 0;
  if (x->cfg.shed_inflight && x->st.inflight >= x->cfg.shed_inflight) {
    if (x->cfg.shed_action == H2T_SHED_REFUSED_STREAM) {
      x->st.shed_refused++;
      shed_trace(c, NULL, sid, H2T_SHED_INFLIGHT, H2T_SHED_REFUSED_STREAM);
      h2t__srv_sess_reset(c, sid, NGHTTP2_REFUSED_STREAM);
      return NULL;
    }
    shed503 = 1;
  }
  h2t_server_req *r = req_new(c, sid);
  if (!r) {
    h2t__srv_sess_reset(c, sid, NGHTTP2_INTERNAL_ERROR);
    return NULL;
  }
  r->shed503 = (unsigned)shed503;
  if (!shed503) {
    r->counted = 1;
    x->st.inflight++;
    h2t__connreg_stream_open(c->io.reg); /* inflight */
  }
  return r;
}

static int on_header(void *req, nghttp2_rcbuf *name_rc,
                     nghttp2_rcbuf *value_rc) {
  h2t_server_req *r = req;
  if (r->too_big)
    return 0;
  nghttp2_vec nv = nghttp2_rcbuf_get_buf(name_rc);
  nghttp2_vec vv = nghttp2_rcbuf_get_buf(value_rc);
  const uint8_t *name = nv.base;
  size_t namelen = nv.len;
  r->hdr_bytes += namelen + vv.len + 32;
  if (r->hdr_bytes > r->x->cfg.max_header_list_size) {
    r->too_big = 1;
    return 0;
  }
  const char *v = hold(r, value_rc, vv);
  if (!v)
    return -1;
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
  const char *n = hold(r, name_rc, nv);
  if (!n)
    return -1;
  if (r->nhdrs == r->hcap) {
    size_t cap = r->hcap * 2;
    h2t_header *h = h2t_xrealloc(
        r->x->mem, r->hdrs == r->hdrs0 ? NULL : r->hdrs, cap * sizeof *h);
    if (!h)
      return -1;
    if (r->hdrs == r->hdrs0)
      memcpy(h, r->hdrs0, sizeof r->hdrs0);
    r->hdrs = h;
    r->hcap = cap;
  }
  r->hdrs[r->nhdrs++] = (h2t_header){n, v};
  return 0;
}

static void on_headers(void *req, int request, int end_stream) {
  h2t_server_req *r = req;
  if (request && !r->headers_done)
    req_headers_done(r, end_stream);
}

static void on_body_eof(void *req) {
  h2t_server_req *r = req;
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
    SRV_USER_CALL(r->x, rc = r->on_body(r, NULL, 0, 1, r->cb_user));
    if (rc != 0)
      h2t_server_req_reset(r, NGHTTP2_CANCEL);
  }
}

static int on_body_chunk(void *req, const uint8_t *data, size_t len) {
  h2t_server_req *r = req;
  srv_ctx *x = r->x;
  if (r->closed) {
    h2t__srv_sess_consume(r->c, r->sid, len);
    return 0;
  }
  r->bytes_in += len;
  r->t_progress = ev_now(x->loop);
  if (!r->on_body && r->responded) {
    /* answered without reading it: nobody wants this body */
    h2t__srv_sess_consume(r->c, r->sid, len);
    return 0;
  }
  if (r->on_body) {
    int rc;
    SRV_USER_CALL(x, rc = r->on_body(r, data, len, 0, r->cb_user));
    h2t__srv_sess_consume(r->c, r->sid, len); /* read: the peer may go on */
    if (rc != 0)
      h2t__srv_sess_reset(r->c, r->sid, NGHTTP2_CANCEL);
    return 0;
  }
  /* Held for a handler that has not asked for it.  The windows bound what
   * one stream and one connection hold; the server's budget bounds the
   * sum over connections. */
  if (x->st.body_buffered + len > x->cfg.body_server_budget) {
    x->st.body_budget_resets++;
    shed_trace(r->c, r, r->sid, H2T_SHED_BODY_BUDGET, H2T_SHED_RESET);
    h2t__srv_sess_consume(r->c, r->sid, len);
    held_release(r);
    r->canceled = 1;
    h2t__srv_sess_reset(r->c, r->sid, NGHTTP2_ENHANCE_YOUR_CALM);
    return 0;
  }
  if (r->held_len + len > r->held_cap) {
    size_t cap = r->held_cap ? r->held_cap : 4096;
    while (cap < r->held_len + len)
      cap *= 2;
    uint8_t *p = h2t_xrealloc(r->x->mem, r->held, cap);
    if (!p)
      return -1;
    r->held = p;
    r->held_cap = cap;
  }
  memcpy(r->held + r->held_len, data, len);
  r->held_len += len;
  r->c->body_held += len;
  x->st.body_buffered += len;
  if (x->st.body_buffered > x->st.body_buffered_max)
    x->st.body_buffered_max = x->st.body_buffered;
  /* The peer has filled what we let it send (the stream's window, or the
   * connection's): from now on it waits for the handler.  Said once. */
  if (!r->flow_held && (r->held_len >= x->cfg.initial_window_size ||
                        r->c->body_held >= x->cfg.body_conn_budget)) {
    r->flow_held = 1;
    x->st.body_flow_held++;
    shed_trace(r->c, r, r->sid, H2T_SHED_BODY_BUDGET, H2T_SHED_FLOW_CONTROL);
  }
  return 0;
}

static ssize_t on_body_read(void *req, uint8_t *buf, size_t length,
                            uint32_t *flags) {
  h2t_server_req *r = req;
  size_t n = 0;
  int eof = 0;
  switch (r->body_kind) {
  case SRV_BODY_BUF: /* body_send sends it, from where it is */
    n = r->blen - r->boff < length ? r->blen - r->boff : length;
    eof = r->boff + n == r->blen;
    *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
    break;
  case SRV_BODY_FILE:
    if (r->fleft >= 0) { /* body_send sends it (sendfile when it can) */
      n = (uint64_t)r->fleft < length ? (size_t)r->fleft : length;
      eof = (size_t)r->fleft == n;
      *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
      break;
    }
    { /* to end of file: only a read tells where that is */
      ssize_t k;
      while ((k = pread(r->fd, buf, length, r->foff)) < 0 && errno == EINTR)
        ; /* a file on NFS or FUSE may be interrupted */
      if (k < 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
      n = (size_t)k;
      r->foff += k;
      eof = k == 0;
    }
    break;
  case SRV_BODY_GEN: {
    ssize_t k;
    SRV_USER_CALL(r->x, k = r->gen(r, buf, length, &eof, r->gen_user));
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
      if (h2t__srv_sess_trailers(r->c, r->sid, r->trailers, r->ntrailers) != 0)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
  } else if (TRACE_WANTS(&r->tc, H2T_EV_SRV_FLOW_BLOCKED)) {
    int32_t sw, cw;
    h2t__srv_sess_windows(r->c, r->sid, &sw, &cw);
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

static int on_body_send(void *req, const uint8_t *hd, size_t len) {
  h2t_server_req *r = req;
  int buf = r->body_kind == SRV_BODY_BUF;
  int rc = h2t__srv_sess_send_body(r->c, hd, buf ? r->body + r->boff : NULL,
                                   buf ? -1 : r->fd, r->foff, len,
                                   req_release, r);
  if (rc < 0)
    return rc; /* -2: the same frame is asked for again */
  if (buf) {
    r->boff += len;
  } else {
    r->foff += (off_t)len;
    r->fleft -= (int64_t)len;
  }
  r->wrefs += (unsigned)rc;
  return 0;
}

static void on_frame_sent(void *req, uint8_t type, size_t length,
                          int end_stream) {
  h2t_server_req *r = req;
  r->t_progress = ev_now(r->x->loop);
  if (type == NGHTTP2_HEADERS) {
    if (!r->sent_first && TRACE_WANTS(&r->tc, H2T_EV_SRV_WROTE_HEADERS)) {
      h2t_event ev = {.type = H2T_EV_SRV_WROTE_HEADERS};
      ev.u.response.status = r->status;
      emit_req(r, &ev);
    }
    r->sent_first = 1;
  } else {
    if (length && !r->bytes_out &&
        TRACE_WANTS(&r->tc, H2T_EV_SRV_WROTE_FIRST_BYTE)) {
      h2t_event ev = {.type = H2T_EV_SRV_WROTE_FIRST_BYTE};
      emit_req(r, &ev);
    }
    r->bytes_out += length;
  }
  if (end_stream)
    r->sent_all = 1;
  if (end_stream && TRACE_WANTS(&r->tc, H2T_EV_SRV_WROTE_RESPONSE)) {
    h2t_event ev = {.type = H2T_EV_SRV_WROTE_RESPONSE};
    ev.u.body.bytes = r->bytes_out;
    emit_req(r, &ev);
  }
}

static void on_stream_reset(srv_conn *c, void *req, int32_t sid, uint32_t code,
                            int by_peer) {
  h2t_server_req *r = req;
  const trace_chain *tc = r ? &r->tc : &c->x->tc;
  if (TRACE_WANTS(tc, H2T_EV_SRV_STREAM_RESET)) {
    h2t_event ev = {.type = H2T_EV_SRV_STREAM_RESET, .stream_id = sid};
    ev.u.stream_reset.error_code = code;
    ev.u.stream_reset.by_peer = by_peer;
    if (r)
      emit_req(r, &ev);
    else
      srv_emit_conn(c->x, c->io.id, &ev);
  }
}

static void on_stream_close(void *req, uint32_t code) { req_close(req, code); }

static void on_conn_close(srv_conn *c) {
  for (h2t_server_req *r = c->x->reqs, *next; r; r = next) {
    next = r->next;
    if (r->c == c) {
      h2t__srv_sess_detach(c, r->sid);
      req_close(r, NGHTTP2_CANCEL);
    }
  }
}

static void on_conn_gone(srv_ctx *x) { x->req_up.conn_gone(x->req_up.arg); }

static const srv_sess_callbacks sess_callbacks = {
    .stream_open = on_stream_open,
    .header = on_header,
    .headers = on_headers,
    .body_eof = on_body_eof,
    .body_chunk = on_body_chunk,
    .body_read = on_body_read,
    .body_send = on_body_send,
    .frame_sent = on_frame_sent,
    .stream_reset = on_stream_reset,
    .stream_close = on_stream_close,
    .conn_close = on_conn_close,
    .conn_gone = on_conn_gone,
};

void h2t__srv_req_layer_init(srv_ctx *x, const srv_req_callbacks *up) {
  x->sess_cb = &sess_callbacks;
  x->req_up = *up;
}

/* ------------------------------------------------------------------------
 * request API
 */

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
  return r ? r->conn_id : 0;
}
h2t_server *h2t_server_req_server(const h2t_server_req *r) {
  return r ? r->x->server : NULL;
}
struct ev_loop *h2t_server_req_loop(const h2t_server_req *r) {
  return r ? r->x->loop : NULL;
}
int h2t_server_req_trace_context(const h2t_server_req *r,
                                 h2t_trace_context *out) {
  if (!r || !out) {
    if (out)
      memset(out, 0, sizeof *out);
    return H2T_ERR_INVALID_ARG;
  }
  *out = r->tctx;
  return 0;
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
  if (!r)
    return H2T_ERR_INVALID_ARG;
  if (r->closed)
    return H2T_ERR_STATE;
  r->on_body = on_body;
  r->on_close = on_close;
  r->cb_user = user;
  if (on_body && r->held_len) {
    int rc;
    SRV_USER_CALL(r->x, rc = on_body(r, r->held, r->held_len, 0, user));
    held_release(r); /* read: the peer may send as much again */
    if (rc != 0) {
      h2t_server_req_reset(r, NGHTTP2_CANCEL);
      return 0;
    }
  }
  if (on_body && r->body_eof && !r->body_delivered_eof) {
    r->body_delivered_eof = 1;
    int rc;
    SRV_USER_CALL(r->x, rc = on_body(r, NULL, 0, 1, user));
    if (rc != 0)
      h2t_server_req_reset(r, NGHTTP2_CANCEL);
  }
  return 0;
}

/* nghttp2 references our header strings (NO_COPY: it neither copies nor
 * lowercases them); they live in the request's arena, which outlives the
 * frames that carry them. */
#define NV(n, nl, v, vl)                                                       \
  (nghttp2_nv) {                                                               \
    (uint8_t *)(n), (uint8_t *)(v), (nl), (vl),                                \
        NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE           \
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

/* Does s[0..n) hold an ASCII capital?  Eight bytes at a time (the
 * "has a byte between m and n" test of Bit Twiddling Hacks). */
static int has_upper(const char *s, size_t n) {
  const uint64_t ones = 0x0101010101010101ull, low7 = ones * 127;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t x;
    memcpy(&x, s + i, 8);
    if ((ones * (127 + 'Z' + 1) - (x & low7)) & ~x &
        ((x & low7) + ones * (127 - ('A' - 1))) & ones * 128)
      return 1;
  }
  for (; i < n; i++)
    if ((unsigned char)(s[i] - 'A') < 26)
      return 1;
  return 0;
}

/* The user's headers as nghttp2 name/value pairs in nva, their strings
 * copied into r's arena.  A name must be non-empty, not a pseudo-header
 * and lowercase (HTTP/2 sends names in lowercase; we check rather than
 * fold them).  *have_cl (if not NULL) tells whether content-length is
 * among them.  0, H2T_ERR_INVALID_ARG or H2T_ERR_NOMEM. */
static int headers_to_nv(h2t_server_req *r, const h2t_header *h, size_t n,
                         nghttp2_nv *nva, int *have_cl) {
  if (n && !h)
    return H2T_ERR_INVALID_ARG;
  for (size_t i = 0; i < n; i++) {
    const char *name = h[i].name, *value = h[i].value;
    if (!name || !value || !name[0] || name[0] == ':')
      return H2T_ERR_INVALID_ARG;
    size_t nl = strlen(name), vl = strlen(value);
    if (has_upper(name, nl))
      return H2T_ERR_INVALID_ARG;
    if (have_cl && nl == 14 && !memcmp(name, "content-length", 14))
      *have_cl = 1;
    char *a = arena_alloc(r, nl + vl + 2);
    if (!a)
      return H2T_ERR_NOMEM;
    memcpy(a, name, nl + 1);
    memcpy(a + nl + 1, value, vl + 1);
    nva[i] = NV(a, nl, a + nl + 1, vl);
  }
  return 0;
}

static int req_submit(h2t_server_req *r, int status, const h2t_header *hdrs,
                      size_t n, int64_t content_length) {
  if (!r)
    return H2T_ERR_INVALID_ARG;
  if (r->closed || r->responded)
    return H2T_ERR_STATE;
  if (status < 200 || status > 999 || (n && !hdrs))
    return H2T_ERR_INVALID_ARG;
  nghttp2_nv stack[16], *nva = stack;
  if (n + 2 > 16) {
    nva = h2t_xmalloc(r->x->mem, (n + 2) * sizeof *nva);
    if (!nva)
      return H2T_ERR_NOMEM;
  }
  int have_cl = 0;
  int rv = headers_to_nv(r, hdrs, n, nva + 1, &have_cl);
  size_t k = n + 1;
  char *num = rv ? NULL : arena_alloc(r, 2 * 21);
  if (num) {
    nva[0] = NV(":status", 7, num, utoa((uint64_t)status, num));
    if (content_length >= 0 && !have_cl)
      nva[k++] = NV("content-length", 14, num + 21,
                    utoa((uint64_t)content_length, num + 21));
  } else if (!rv) {
    rv = H2T_ERR_NOMEM;
  }
  if (!rv) {
    int has_body = r->body_kind != SRV_BODY_NONE || r->ntrailers;
    rv = h2t__srv_sess_respond(r->c, r->sid, nva, k, has_body ? r : NULL);
    if (rv)
      rv = rv == NGHTTP2_ERR_NOMEM ? H2T_ERR_NOMEM : H2T_ERR_STATE;
  }
  if (nva != stack)
    h2t_xfree(r->x->mem, nva);
  if (rv)
    return rv;
  r->responded = 1;
  r->status = status;
  r->x->st.responses++;
  if (!r->on_body)
    held_release(r); /* answered without reading it: drop it */
  h2t__srv_sess_flush(r->c);
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
      r->owned = h2t_xmalloc(r->x->mem, len);
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
    h2t_xfree(r->x->mem, r->owned);
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
  if (!r)
    return H2T_ERR_INVALID_ARG;
  if (r->closed || !r->responded)
    return H2T_ERR_STATE;
  if (!r->deferred)
    return 0;
  r->deferred = 0;
  if (h2t__srv_sess_resume(r->c, r->sid) != 0)
    return H2T_ERR_STATE;
  h2t__srv_sess_flush(r->c);
  return 0;
}

int h2t_server_req_set_trailers(h2t_server_req *r, const h2t_header *hdrs,
                                size_t n) {
  if (!r || !n || !hdrs)
    return H2T_ERR_INVALID_ARG;
  if (r->closed || r->ntrailers ||
      (r->responded && r->body_kind != SRV_BODY_GEN))
    return H2T_ERR_STATE;
  nghttp2_nv *nv = h2t_xmalloc(r->x->mem, n * sizeof *nv);
  if (!nv)
    return H2T_ERR_NOMEM;
  int rv = headers_to_nv(r, hdrs, n, nv, NULL);
  if (rv) {
    h2t_xfree(r->x->mem, nv);
    return rv;
  }
  r->trailers = nv;
  r->ntrailers = n;
  return 0;
}

int h2t_server_req_reset(h2t_server_req *r, uint32_t error_code) {
  if (!r)
    return H2T_ERR_INVALID_ARG;
  if (r->closed)
    return H2T_ERR_STATE;
  if (h2t__srv_sess_reset(r->c, r->sid, error_code) != 0)
    return H2T_ERR_STATE;
  h2t__srv_sess_flush(r->c);
  return 0;
}
