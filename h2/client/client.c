/*
 * The client: a request's whole life.  Submission, the choice of a
 * connection (asking the pool), every hook and callback, hold/release,
 * finishing, and the retry decision are here, and only here is a request
 * freed.  The connection layer reports up through the callbacks registered
 * below (conn_cbs); the pool only chooses.  See conn.h for the layers.
 */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "h2/client/client_int.h"
#include "trace/tracectx_int.h"

static void finish(h2t_request *r, int error);
static int place(h2t_client *c, h2t_request *r, int may_queue);
static void dispatch(h2t_client *c, h2t__origin *o);

/* --- holding and emitting ------------------------------------------------- */

/* Hooks and callbacks may cancel the request they are given: code that
 * touches r after running one holds it.  release() returns 1 if r is still
 * live, 0 if it completed meanwhile (and is now freed). */
static inline void hold(h2t_request *r) { r->hold++; }
static int release(h2t_request *r);

static inline void event_init(h2t_event *ev, h2t_request *r, h2t_event_type t) {
  ev->type = t;
  ev->stream_id = r->stream_id;
  ev->t_us = r->client->ctx.ts;
  ev->req_id = r->id;
  ev->conn_id = r->conn_id;
  ev->req = r;
  ev->sreq = NULL;
  ev->trace = r->tctxp;
}

/* Every event of r goes through here.  The walk may run several hooks and
 * any may complete r, so r is held across it: later hooks still see a whole
 * request, freed (if done) when the walk returns.  The inline fast path
 * runs exactly one hook; the caller holds r when it touches r afterwards. */
static inline __attribute__((always_inline)) void emit(h2t_request *r,
                                                      h2t_event *ev) {
  hold(r);
  trace_emit(&r->tc, ev);
  release(r);
}

static void simple_event(h2t_request *r, h2t_event_type t) {
  if (TRACE_WANTS(&r->tc, t)) {
    h2t_event ev;
    event_init(&ev, r, t);
    emit(r, &ev);
  }
}

/* tmpl (type + payload) to every request on l that wants it.  A hook may
 * cancel any request: the next one is held so the walk can go on. */
static void emit_list(struct h2t__req_list *l, h2t_event *tmpl) {
  h2t_request *r, *next;
  for (r = TAILQ_FIRST(l); r; r = next) {
    next = TAILQ_NEXT(r, link);
    if (!TRACE_WANTS(&r->tc, tmpl->type))
      continue;
    h2t_event ev = *tmpl;
    ev.stream_id = r->stream_id;
    ev.req_id = r->id;
    ev.req = r;
    ev.trace = r->tctxp;
    if (next)
      hold(next);
    emit(r, &ev);
    if (next && !release(next))
      break; /* next completed: it left the list, and so may have the rest */
  }
}

static void get_conn_event(h2t_request *r) {
  if (!TRACE_WANTS(&r->tc, H2T_EV_GET_CONN))
    return;
  h2t_event ev;
  event_init(&ev, r, H2T_EV_GET_CONN);
  ev.conn_id = 0;
  ev.stream_id = 0;
  ev.u.get_conn.scheme = r->url.scheme;
  ev.u.get_conn.authority = r->url.authority;
  emit(r, &ev);
}

static void got_conn_event(h2t_request *r, h2t__conn *cn, int reused,
                           int was_idle, uint64_t idle_us) {
  if (!TRACE_WANTS(&r->tc, H2T_EV_GOT_CONN))
    return;
  h2t_event ev;
  event_init(&ev, r, H2T_EV_GOT_CONN);
  ev.u.got_conn.reused = reused;
  ev.u.got_conn.was_idle = was_idle;
  ev.u.got_conn.idle_us = idle_us;
  ev.u.got_conn.new_reason = reused ? H2T_CONN_NONE : cn->open_reason;
  ev.u.got_conn.active_streams = cn->nattached;
  ev.u.got_conn.max_streams_known = cn->settings_seen;
  ev.u.got_conn.max_streams = cn->settings_seen ? cn->max_streams : 0;
  emit(r, &ev);
}

static void put_conn_event(h2t_request *r, h2t__conn *cn) {
  if (!TRACE_WANTS(&r->tc, H2T_EV_PUT_IDLE_CONN))
    return;
  h2t_event ev;
  event_init(&ev, r, H2T_EV_PUT_IDLE_CONN);
  int usable = h2t__conn_usable(cn);
  ev.u.put_idle_conn.reusable = usable;
  ev.u.put_idle_conn.reason =
      usable ? H2T_CONN_NONE
      : cn->close_pending
          ? (cn->close_reason != H2T_CONN_NONE ? cn->close_reason
                                               : H2T_CONN_CLOSED)
      : cn->drain_reason != H2T_CONN_NONE ? cn->drain_reason
      : h2t__conn_takes_none(cn) ? H2T_CONN_MAX_STREAMS
                                                  : H2T_CONN_ERROR;
  ev.u.put_idle_conn.active_streams = cn->nattached;
  emit(r, &ev);
}

/* --- memory ---------------------------------------------------------------- */

static void hdrs_release(h2t_request *r) {
  for (size_t i = 0; i < 2 * r->nhdrs; i++)
    nghttp2_rcbuf_decref(r->rcs[i]);
  r->nhdrs = 0;
}

static void hdrs_reset(h2t_request *r) {
  hdrs_release(r);
  if (r->hdrs && r->hdrs != r->hdrs_inline) {
    h2t_xfree(r->client->mem, r->hdrs);
    h2t_xfree(r->client->mem, r->rcs);
  }
  r->hdrs = r->hdrs_inline;
  r->rcs = r->rc_inline;
  r->hdrs_cap = H2T__REQ_INLINE_HDRS;
}

static const unsigned max_free_reqs = H2T__ASAN ? 0 : 64;

static void req_destroy(const h2t_mem *m, h2t_request *r) {
  h2t_xfree(m, r->hdrbuf);
  h2t_xfree(m, r->urlbuf);
  h2t_xfree(m, r);
}

static void req_free(h2t_request *r) {
  h2t_client *c = r->client;
  hdrs_reset(r);
  if (c->nfree < max_free_reqs && !c->closing) {
    r->free_next = c->free_reqs;
    c->free_reqs = r;
    c->nfree++;
    return;
  }
  req_destroy(c->mem, r);
}

/* Like calloc, keeping a recycled request's buffers. */
static h2t_request *req_alloc(h2t_client *c) {
  h2t_request *r = c->free_reqs;
  if (!r)
    return h2t_xcalloc(c->mem, 1, sizeof *r);
  c->free_reqs = r->free_next;
  c->nfree--;
  char *hb = r->hdrbuf, *ub = r->urlbuf;
  size_t hc = r->hdrcap, uc = r->urlcap;
  memset(r, 0, offsetof(h2t_request, trace_copy));
  r->hdrbuf = hb;
  r->hdrcap = hc;
  r->urlbuf = ub;
  r->urlcap = uc;
  return r;
}

static int release(h2t_request *r) {
  int live = r->state != H2T__REQ_DONE;
  if (--r->hold == 0 && !live)
    req_free(r);
  return live;
}

/* --- leaving a list -------------------------------------------------------- */

/* Take r off its conn's streams; with reset, RST_STREAM(code) it first.
 * Emits stream_reset (if reset) and put_idle_conn. */
static void detach(h2t_request *r, int reset, uint32_t code) {
  h2t__conn *cn = r->conn;
  TAILQ_REMOVE(&cn->streams, r, link);
  if (--cn->nattached == 0)
    cn->idle_since = h2t_now_us(); /* for got_conn.idle_us */
  ev_timer_stop(r->client->loop, &r->expect_w);
  r->conn = NULL;
  r->state = H2T__REQ_NEW;
  h2t__conn_hold(cn);
  if (r->has_body && !r->body_eof) {
    r->body_eof = 1;
    h2t__conn_body_done(cn);
  }
  if (reset)
    h2t__conn_reset(cn, r->stream_id, code, r); /* reports stream_reset */
  put_conn_event(r, cn);
  h2t__conn_release(cn);
}

static void unlink_req(h2t_request *r) {
  h2t_client *c = r->client;
  switch (r->state) {
  case H2T__REQ_QUEUED:
    TAILQ_REMOVE(&r->origin->queue, r, link);
    r->origin->nqueued--;
    c->nqueued_total--;
    c->stats.requests_queued = c->nqueued_total;
    break;
  case H2T__REQ_WAITING:
    TAILQ_REMOVE(&r->conn->waiters, r, link);
    r->conn->nwaiters--;
    r->conn = NULL;
    break;
  case H2T__REQ_ACTIVE:
    detach(r, 1, NGHTTP2_CANCEL);
    break;
  default:
    break;
  }
  r->state = H2T__REQ_NEW;
}

/* --- completion ------------------------------------------------------------ */

static void finish(h2t_request *r, int error) {
  h2t_client *c = r->client;
  if (r->state == H2T__REQ_DONE || r->finishing)
    return;
  r->finishing = 1; /* unlinking runs hooks: a cancel from one is a no-op */
  hold(r);
  unlink_req(r);
  r->state = H2T__REQ_DONE;
  c->finished++;
  ev_timer_stop(c->loop, &r->timeout_w);
  ev_timer_stop(c->loop, &r->expect_w);
  if (error)
    c->stats.requests_failed++;
  else
    c->stats.requests_succeeded++;
  if (TRACE_WANTS(&r->tc, H2T_EV_DONE)) {
    h2t_event ev;
    event_init(&ev, r, H2T_EV_DONE);
    if (!ev.t_us)
      ev.t_us = h2t_now_us();
    ev.u.done.error = error;
    ev.u.done.status = r->status;
    ev.u.done.bytes_sent = r->bytes_sent;
    ev.u.done.bytes_recv = r->bytes_recv;
    ev.u.done.total_us = ev.t_us - r->t_submit;
    ev.u.done.attempts = r->attempts;
    ev.u.done.reset_code = r->rst_code;
    emit(r, &ev);
  }
  h2t__inflight_end(r->ife, error);
  H2T_COZ_END("client_request");
  H2T_COZ_PROGRESS("client_request_done");
  TAILQ_REMOVE(&c->reqs, r, all);
  c->pending--;
  if (r->on_done)
    r->on_done(r, error, r->user);
  release(r);
}

int h2t__req_safe_to_retry(const h2t_request *r) {
  if (!r->headers_sent)
    return 1;
  /* sent but idempotent and without a body that cannot be replayed */
  return (!strcmp(r->method, "GET") || !strcmp(r->method, "HEAD") ||
          !strcmp(r->method, "OPTIONS")) &&
         !(r->body_read && r->bytes_sent);
}

/* The attempt failed.  A request that delivered any response byte is never
 * retried.  One the peer provably did not process (unprocessed) is retried
 * under max_unprocessed_retries; any other under max_retries.  A streamed
 * body that already produced bytes cannot be replayed. */
static void retry(h2t_request *r, h2t_retry_reason why, int error,
                  int unprocessed) {
  h2t_client *c = r->client;
  if (c->closing || r->got_first_byte || (r->body_read && r->bytes_sent) ||
      (unprocessed ? r->unprocessed >= c->max_unprocessed_retries
                   : r->retries >= c->max_retries)) {
    finish(r, error);
    return;
  }
  if (unprocessed)
    r->unprocessed++;
  else
    r->retries++;
  r->attempts++;
  c->stats.retries++;
  if (TRACE_WANTS(&r->tc, H2T_EV_RETRY)) {
    h2t_event ev;
    event_init(&ev, r, H2T_EV_RETRY);
    ev.u.retry.reason = why;
    ev.u.retry.attempt = r->attempts - 1;
    hold(r);
    emit(r, &ev);
    if (!release(r))
      return;
  }
  r->avoid_id = r->conn_id;
  r->retry_reason = why == H2T_RETRY_GOAWAY        ? H2T_CONN_GOAWAY
                    : why == H2T_RETRY_CONN_CLOSED ? H2T_CONN_CLOSED
                                                   : H2T_CONN_RETRY;
  hdrs_reset(r);
  r->stream_id = 0;
  r->conn = NULL;
  r->conn_id = 0;
  r->status = r->pending_status = 0;
  r->hdr_bytes = 0;
  r->body_off = 0;
  r->bytes_sent = r->bytes_recv = 0;
  r->body_eof = r->body_deferred = r->got_final = 0;
  r->headers_sent = r->flow_blocked = r->got_eos = r->rst_by_peer = 0;
  r->skip_body = r->too_large = 0;
  r->waiting_100 = r->expect_100;
  r->rst_code = 0;
  r->state = H2T__REQ_NEW;
  hold(r);
  get_conn_event(r);
  if (r->state != H2T__REQ_DONE) {
    int rv = place(c, r, 1);
    if (rv)
      finish(r, rv);
  }
  release(r);
}

/* Connection errors after which a request that never went out may try
 * another connection: the peer went away, not wrong. */
static int conn_gone_error(int error) {
  return error == H2T_ERR_CONN_CLOSED || error == H2T_ERR_IO ||
         error == H2T_ERR_GOAWAY;
}

/* --- choosing a connection -------------------------------------------------- */

static void waiter_add(h2t__conn *cn, h2t_request *r) {
  TAILQ_INSERT_TAIL(&cn->waiters, r, link);
  cn->nwaiters++;
  r->conn = cn;
  r->conn_id = cn->id;
  r->state = H2T__REQ_WAITING;
}

/* r takes a stream on the ready conn cn. */
static void attach(h2t_client *c, h2t__conn *cn, h2t_request *r, int fresh) {
  int reused = !fresh && cn->served > 0;
  int was_idle = !fresh && cn->nattached == 0;
  uint64_t idle_us = 0;
  if (was_idle && TRACE_WANTS(&r->tc, H2T_EV_GOT_CONN))
    idle_us = h2t_now_us() - cn->idle_since;
  int has_body = r->body_read || r->body_len;
  /* Our traceparent's value never repeats: indexing it would churn the
   * HPACK table out of useful entries, so it goes NO_INDEX.  But the first
   * one on a connection is indexed: its name then stays in the table, and
   * every later one sends that index instead of the literal, Huffman-coded
   * name (nghttp2 looks names up for NO_INDEX fields too): 9 bytes and
   * about 300 instructions a request, for one 98-byte entry. */
  if (r->tp_nv) {
    if (cn->tp_named)
      r->tp_nv->flags |= NGHTTP2_NV_FLAG_NO_INDEX;
    else
      r->tp_nv->flags &= (uint8_t)~NGHTTP2_NV_FLAG_NO_INDEX;
  }
  int32_t sid = h2t__conn_submit(cn, r->nv, r->nnv, has_body, r);
  if (sid < 0) {
    int rv = sid;
    if (rv == H2T_ERR_LIMIT) {
      /* stream ids ran out: that conn drains, try elsewhere */
      r->retry_reason = H2T_CONN_STREAM_IDS;
      rv = place(c, r, 1);
    }
    if (rv)
      finish(r, rv);
    return;
  }
  cn->served++;
  if (r->tp_nv)
    cn->tp_named = 1;
  if (reused) {
    c->stats.conns_reused_picks++;
    h2t__connreg_reused(cn->reg);
  }
  r->stream_id = sid;
  r->conn = cn;
  r->conn_id = cn->id;
  r->state = H2T__REQ_ACTIVE;
  r->has_body = has_body != 0;
  TAILQ_INSERT_TAIL(&cn->streams, r, link);
  cn->nattached++;
  got_conn_event(r, cn, reused, was_idle, idle_us);
}

/* 0, 1 (no room and !may_queue: r is untouched) or an H2T_ERR_ code. */
static int place(h2t_client *c, h2t_request *r, int may_queue) {
  h2t__origin *o = r->origin;
  h2t__conn *cn = NULL;
  h2t_conn_reason why = H2T_CONN_NONE;
  switch (h2t__pool_choose(&c->pool, o, r->avoid_id, &cn, &why)) {
  case H2T__PICK_USE:
    attach(c, cn, r, 0);
    return 0;
  case H2T__PICK_JOIN:
    waiter_add(cn, r);
    return 0;
  case H2T__PICK_OPEN:
    if (r->retry_reason != H2T_CONN_NONE)
      why = r->retry_reason;
    if (!(cn = h2t__pool_open(&c->pool, o, why)))
      return H2T_ERR_NOMEM;
    waiter_add(cn, r);
    h2t__conn_start(cn);
    return 0;
  case H2T__PICK_QUEUE:
    break;
  }
  if (!may_queue)
    return 1;
  if (c->max_queued && c->nqueued_total >= c->max_queued)
    return H2T_ERR_LIMIT;
  TAILQ_INSERT_TAIL(&o->queue, r, link);
  o->nqueued++;
  c->nqueued_total++;
  c->stats.requests_queued = c->nqueued_total;
  r->state = H2T__REQ_QUEUED;
  h2t__inflight_wait_stream(r->ife);
  return 0;
}

/* Room may have freed on o: give queued requests a connection, FIFO. */
static void dispatch(h2t_client *c, h2t__origin *o) {
  h2t_request *r;
  if (c->closing)
    return;
  while ((r = TAILQ_FIRST(&o->queue))) {
    TAILQ_REMOVE(&o->queue, r, link);
    o->nqueued--;
    c->nqueued_total--;
    r->state = H2T__REQ_NEW;
    int rv = place(c, r, 0);
    if (rv == 1) { /* still no room: back to the head */
      TAILQ_INSERT_HEAD(&o->queue, r, link);
      o->nqueued++;
      c->nqueued_total++;
      r->state = H2T__REQ_QUEUED;
      break;
    }
    if (rv < 0)
      finish(r, rv);
  }
  c->stats.requests_queued = c->nqueued_total;
}

/* --- what a connection reports ---------------------------------------------- */

static h2t_client *client_of(h2t__conn *cn) { return cn->ctx->user; }

static void on_conn_event(h2t__conn *cn, h2t_event *ev) {
  switch (ev->type) {
  case H2T_EV_GOAWAY:
  case H2T_EV_SETTINGS:
    emit_list(&cn->streams, ev);
    break;
  default: /* setup: dns, connect, tls */
    emit_list(&cn->waiters, ev);
    break;
  }
}

/* Waiters take streams up to what cn may open now; the rest wait for the
 * peer's SETTINGS, or (when those say no room) are placed again. */
static void attach_waiters(h2t_client *c, h2t__conn *cn) {
  h2t_request *r;
  uint32_t slots = h2t__conn_capacity(cn, h2t__pool_budget(cn->origin));
  while ((r = TAILQ_FIRST(&cn->waiters)) &&
         (cn->nattached < slots || !cn->settings_seen)) {
    if (cn->nattached >= slots)
      return; /* before SETTINGS: wait for them */
    TAILQ_REMOVE(&cn->waiters, r, link);
    cn->nwaiters--;
    attach(c, cn, r, 1);
  }
  while ((r = TAILQ_FIRST(&cn->waiters))) {
    /* SETTINGS came and leave no room: elsewhere (never sent: no retry) */
    TAILQ_REMOVE(&cn->waiters, r, link);
    cn->nwaiters--;
    r->conn = NULL;
    r->state = H2T__REQ_NEW;
    int rv = place(c, r, 1);
    if (rv)
      finish(r, rv);
  }
}

static void on_ready(h2t__conn *cn) {
  h2t_client *c = client_of(cn);
  attach_waiters(c, cn);
  if (cn->nattached == 0) {
    cn->idle_since = h2t_now_us();
    h2t__conn_idle(cn);
  }
  if (cn->origin->nqueued)
    dispatch(c, cn->origin);
}

static void on_settings(h2t__conn *cn) {
  h2t_client *c = client_of(cn);
  h2t__pool_settings(cn);
  if (cn->max_streams == 0) {
    /* Streams whose HEADERS never went out can never go on this conn: they
     * were not processed, so they try another. */
    h2t_request *r, *next;
    for (r = TAILQ_FIRST(&cn->streams); r; r = next) {
      next = TAILQ_NEXT(r, link);
      if (r->headers_sent)
        continue;
      if (next)
        hold(next);
      hold(r);
      detach(r, 1, NGHTTP2_REFUSED_STREAM);
      if (r->state != H2T__REQ_DONE)
        retry(r, H2T_RETRY_REFUSED_STREAM, H2T_ERR_REFUSED_STREAM, 1);
      release(r);
      if (next && !release(next))
        break;
    }
  }
  if (cn->nwaiters)
    attach_waiters(c, cn);
  if (TAILQ_FIRST(&cn->streams)) {
    h2t_event ev;
    memset(&ev, 0, sizeof ev);
    ev.type = H2T_EV_SETTINGS;
    ev.conn_id = cn->id;
    ev.t_us = cn->ctx->ts;
    h2t__conn_settings_event(cn, &ev);
    emit_list(&cn->streams, &ev);
  }
  dispatch(c, cn->origin);
}

/* A stream that was open when its connection went away. */
static void conn_lost(h2t_request *r, h2t__conn *cn, int error) {
  if (r->got_first_byte)
    finish(r, error);
  else if (cn->goaway_last_id >= 0 && r->stream_id > cn->goaway_last_id)
    retry(r, H2T_RETRY_GOAWAY, H2T_ERR_GOAWAY, 1);
  else if (!r->headers_sent && conn_gone_error(error))
    retry(r, H2T_RETRY_CONN_CLOSED, error, 1);
  else if (error == H2T_ERR_CONN_CLOSED && h2t__req_safe_to_retry(r))
    retry(r, H2T_RETRY_CONN_CLOSED, error, 0);
  else
    finish(r, error);
}

static void on_closed(h2t__conn *cn, h2t_conn_reason reason, int error) {
  h2t_client *c = client_of(cn);
  h2t__origin *o = cn->origin;
  h2t__pool_remove(&c->pool, cn, reason);
  struct h2t__req_list waiters, streams;
  TAILQ_INIT(&waiters);
  TAILQ_INIT(&streams);
  h2t_request *r;
  /* Off the conn first, each held: a hook below may cancel any of them. */
  while ((r = TAILQ_FIRST(&cn->streams))) {
    hold(r);
    detach(r, 0, 0);
    TAILQ_INSERT_TAIL(&streams, r, link);
  }
  TAILQ_CONCAT(&waiters, &cn->waiters, link);
  cn->nwaiters = 0;
  TAILQ_FOREACH(r, &waiters, link) {
    r->conn = NULL;
    r->state = H2T__REQ_NEW;
    hold(r);
  }
  while ((r = TAILQ_FIRST(&waiters))) {
    TAILQ_REMOVE(&waiters, r, link);
    if (r->state == H2T__REQ_DONE)
      ;
    else if (cn->settings_seen && conn_gone_error(error))
      /* it waited on a working conn for room and never went out */
      retry(r, H2T_RETRY_CONN_CLOSED, error, 1);
    else
      finish(r, error); /* setup failed: another conn would fail alike */
    release(r);
  }
  while ((r = TAILQ_FIRST(&streams))) {
    TAILQ_REMOVE(&streams, r, link);
    if (r->state != H2T__REQ_DONE)
      conn_lost(r, cn, error);
    release(r);
  }
  dispatch(c, o);
}

static void on_flushed(h2t__conn *cn) {
  h2t_request *r, *next;
  for (r = TAILQ_FIRST(&cn->streams); r; r = next) {
    next = TAILQ_NEXT(r, link);
    if (!r->has_body || r->body_eof || r->body_deferred || r->waiting_100 ||
        r->flow_blocked || !r->headers_sent ||
        !TRACE_WANTS(&r->tc, H2T_EV_FLOW_BLOCKED))
      continue;
    int32_t sw, cw;
    h2t__conn_windows(cn, r->stream_id, &sw, &cw);
    if (sw > 0 && cw > 0)
      continue;
    r->flow_blocked = 1;
    h2t_event ev;
    event_init(&ev, r, H2T_EV_FLOW_BLOCKED);
    ev.u.flow_blocked.conn_level = cw <= 0;
    ev.u.flow_blocked.stream_window = sw;
    ev.u.flow_blocked.conn_window = cw;
    if (next)
      hold(next);
    emit(r, &ev); /* the hook may cancel r (or next) */
    if (next && !release(next))
      break;
  }
}

static void after_flush(h2t__conn_ctx *ctx) {
  h2t_client *c = ctx->user;
  /* A request completed since the last look, just before the loop polls:
   * do not block in the poll, so that h2t_client_run()/fetch see it. */
  if (c->finished != c->finished_at_flush && !ev_is_active(&c->wake_w))
    ev_idle_start(c->loop, &c->wake_w);
  c->finished_at_flush = c->finished;
}

/* --- what a stream reports -------------------------------------------------- */

static void expect_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  h2t_request *r = w->data;
  /* no 100 in time: send the body anyway (RFC 9110 §10.1.1) */
  if (r->waiting_100 && r->conn) {
    r->waiting_100 = 0;
    if (r->body_deferred) {
      r->body_deferred = 0;
      h2t__conn_resume(r->conn, r->stream_id);
    }
  }
}

static void wrote_request(h2t_request *r) {
  if (TRACE_WANTS(&r->tc, H2T_EV_WROTE_REQUEST)) {
    h2t_event ev;
    event_init(&ev, r, H2T_EV_WROTE_REQUEST);
    ev.u.wrote_request.error = 0;
    emit(r, &ev);
  }
}

#define EVBIT(t) (UINT64_C(1) << (t))
#define HEADERS_EVENTS                                                         \
  (EVBIT(H2T_EV_STREAM_OPENED) | EVBIT(H2T_EV_WROTE_HEADER_FIELD) |            \
   EVBIT(H2T_EV_WROTE_HEADERS) | EVBIT(H2T_EV_WROTE_REQUEST) |                 \
   EVBIT(H2T_EV_WAIT_100_CONTINUE))

static void on_sent_headers(void *su, int eos) {
  h2t_request *r = su;
  r->headers_sent = 1;
  if (!(r->tc.mask & HEADERS_EVENTS) && !r->expect_100 &&
      !(H2T_PROBE_ON(H2T_EV_STREAM_OPENED) |
        H2T_PROBE_ON(H2T_EV_WROTE_HEADER_FIELD) |
        H2T_PROBE_ON(H2T_EV_WROTE_HEADERS) |
        H2T_PROBE_ON(H2T_EV_WROTE_REQUEST)))
    return; /* nothing traced: the common fast path */
  /* One clock read for the frame's events, and for every other frame of
   * the flush (h2t__conn_flush puts ctx.ts back when it ends). */
  h2t__conn_ctx *ctx = &r->client->ctx;
  if (!ctx->ts)
    ctx->ts = h2t_now_us();
  h2t_event ev;
  /* r is held across these events: each is trace_emit() without emit()'s
   * own hold, and r->state tells whether a hook completed r */
  hold(r);
  if (TRACE_WANTS(&r->tc, H2T_EV_STREAM_OPENED)) {
    event_init(&ev, r, H2T_EV_STREAM_OPENED);
    trace_emit(&r->tc, &ev);
  }
  if (r->state == H2T__REQ_ACTIVE &&
      TRACE_WANTS(&r->tc, H2T_EV_WROTE_HEADER_FIELD)) {
    event_init(&ev, r, H2T_EV_WROTE_HEADER_FIELD);
    for (size_t i = 0; i < r->nnv && r->state == H2T__REQ_ACTIVE; i++) {
      ev.u.header_field.name = (const char *)r->nv[i].name;
      ev.u.header_field.namelen = r->nv[i].namelen;
      ev.u.header_field.value = (const char *)r->nv[i].value;
      ev.u.header_field.valuelen = r->nv[i].valuelen;
      trace_emit(&r->tc, &ev);
    }
  }
  if (r->state == H2T__REQ_ACTIVE && TRACE_WANTS(&r->tc, H2T_EV_WROTE_HEADERS)) {
    event_init(&ev, r, H2T_EV_WROTE_HEADERS);
    trace_emit(&r->tc, &ev);
  }
  if (r->state != H2T__REQ_ACTIVE) {
  } else if (eos) {
    wrote_request(r);
  } else if (r->expect_100 && r->waiting_100) {
    ev_timer_init(&r->expect_w, expect_cb,
                  r->client->expect_continue_timeout_ms / 1000., 0.);
    r->expect_w.data = r;
    ev_timer_start(r->client->loop, &r->expect_w);
    simple_event(r, H2T_EV_WAIT_100_CONTINUE);
  }
  release(r);
}

static void on_sent_body_end(void *su) { wrote_request(su); }

static void on_begin_headers(void *su) {
  h2t_request *r = su;
  r->pending_status = 0;
  r->hdr_bytes = 0;
  if (!r->got_first_byte) {
    r->got_first_byte = 1; /* from here on, never retried */
    simple_event(r, H2T_EV_GOT_FIRST_RESPONSE_BYTE);
  }
}

static int hdrs_grow(h2t_request *r) {
  const h2t_mem *m = r->client->mem;
  size_t cap = r->hdrs_cap * 2;
  h2t_header *h = h2t_xmalloc(m, cap * sizeof *h);
  nghttp2_rcbuf **rc = h2t_xmalloc(m, 2 * cap * sizeof *rc);
  if (!h || !rc) {
    h2t_xfree(m, h);
    h2t_xfree(m, rc);
    return -1;
  }
  memcpy(h, r->hdrs, r->nhdrs * sizeof *h);
  memcpy(rc, r->rcs, 2 * r->nhdrs * sizeof *rc);
  if (r->hdrs != r->hdrs_inline) {
    h2t_xfree(m, r->hdrs);
    h2t_xfree(m, r->rcs);
  }
  r->hdrs = h;
  r->rcs = rc;
  r->hdrs_cap = cap;
  return 0;
}

static int on_header(void *su, nghttp2_rcbuf *name, nghttp2_rcbuf *value) {
  h2t_request *r = su;
  nghttp2_vec n = nghttp2_rcbuf_get_buf(name);
  nghttp2_vec v = nghttp2_rcbuf_get_buf(value);
  /* counted as SETTINGS_MAX_HEADER_LIST_SIZE counts (RFC 9113 §6.5.2) */
  r->hdr_bytes += n.len + v.len + 32;
  if (r->hdr_bytes > r->client->max_header_bytes) {
    r->too_large = 1;
    return 1; /* the stream is reset; its close finishes r */
  }
  if (n.len == 7 && !memcmp(n.base, ":status", 7)) {
    int st = 0;
    for (size_t i = 0; i < v.len && i < 3; i++)
      st = st * 10 + (v.base[i] - '0');
    r->pending_status = st;
    return 0;
  }
  if (r->got_final || r->pending_status < 200 || !r->on_headers)
    return 0;
  if (r->nhdrs == r->hdrs_cap && hdrs_grow(r) != 0)
    return 0; /* out of memory: that header is not delivered */
  nghttp2_rcbuf_incref(name);
  nghttp2_rcbuf_incref(value);
  r->rcs[2 * r->nhdrs] = name;
  r->rcs[2 * r->nhdrs + 1] = value;
  /* nghttp2 keeps header names and values NUL-terminated */
  r->hdrs[r->nhdrs].name = (const char *)n.base;
  r->hdrs[r->nhdrs].value = (const char *)v.base;
  r->nhdrs++;
  return 0;
}

/* The 100 came, or a final answer without it: the body goes (or ends). */
static void release_body(h2t_request *r) {
  ev_timer_stop(r->client->loop, &r->expect_w);
  if (r->body_deferred && r->conn) {
    r->body_deferred = 0;
    h2t__conn_resume(r->conn, r->stream_id);
  }
}

/* r is held: after each hook, stop if it completed */
static void got_headers(h2t_request *r) {
  int st = r->pending_status;
  if (st >= 100 && st < 200) {
    if (st == 100 && r->waiting_100) {
      r->waiting_100 = 0;
      release_body(r);
      simple_event(r, H2T_EV_GOT_100_CONTINUE);
      if (r->state == H2T__REQ_DONE)
        return;
    }
    if (TRACE_WANTS(&r->tc, H2T_EV_GOT_1XX_RESPONSE)) {
      h2t_event ev;
      event_init(&ev, r, H2T_EV_GOT_1XX_RESPONSE);
      ev.u.response.status = st;
      emit(r, &ev);
    }
    return;
  }
  if (r->got_final)
    return; /* trailers */
  r->got_final = 1;
  r->status = st;
  if (r->waiting_100) {
    /* a final answer without 100: the body is not wanted */
    r->waiting_100 = 0;
    r->skip_body = 1;
    release_body(r);
  }
  if (TRACE_WANTS(&r->tc, H2T_EV_GOT_HEADERS)) {
    h2t_event ev;
    event_init(&ev, r, H2T_EV_GOT_HEADERS);
    ev.u.response.status = st;
    emit(r, &ev);
    if (r->state == H2T__REQ_DONE)
      return;
  }
  if (r->on_headers) {
    int rv = r->on_headers(r, st, r->hdrs, r->nhdrs, r->user);
    if (r->state == H2T__REQ_DONE)
      return; /* freeing it releases the headers */
    hdrs_release(r);
    if (rv != 0)
      finish(r, H2T_ERR_CALLBACK); /* resets the stream */
  }
}

static void on_headers_done(void *su, int eos) {
  h2t_request *r = su;
  if (eos)
    r->got_eos = 1;
  hold(r);
  got_headers(r);
  release(r);
}

static int on_data(void *su, const uint8_t *d, size_t len) {
  h2t_request *r = su;
  r->bytes_recv += len;
  if (!r->on_data)
    return 0;
  hold(r);
  int rv = r->on_data(r, d, len, r->user);
  if (rv != 0)
    finish(r, H2T_ERR_CALLBACK); /* resets the stream (a no-op if done) */
  release(r);
  return 0;
}

static void on_data_frame(void *su, size_t bytes, int eos, int32_t sw,
                          int32_t cw) {
  h2t_request *r = su;
  if (eos)
    r->got_eos = 1;
  if (TRACE_WANTS(&r->tc, H2T_EV_GOT_DATA)) {
    h2t_event ev;
    event_init(&ev, r, H2T_EV_GOT_DATA);
    ev.u.data.bytes = bytes;
    ev.u.data.stream_window = sw;
    ev.u.data.conn_window = cw;
    emit(r, &ev);
  }
}

static void on_stream_reset(void *su, uint32_t code, int by_peer) {
  h2t_request *r = su;
  r->rst_code = code;
  if (by_peer)
    r->rst_by_peer = 1;
  if (TRACE_WANTS(&r->tc, H2T_EV_STREAM_RESET)) {
    h2t_event ev;
    event_init(&ev, r, H2T_EV_STREAM_RESET);
    ev.u.stream_reset.error_code = code;
    ev.u.stream_reset.by_peer = by_peer;
    emit(r, &ev);
  }
}

static ssize_t on_body_read(void *su, uint8_t *buf, size_t len,
                            uint32_t *flags) {
  h2t_request *r = su;
  r->flow_blocked = 0;
  if (r->waiting_100) {
    r->body_deferred = 1;
    return NGHTTP2_ERR_DEFERRED;
  }
  size_t n;
  if (r->skip_body) {
    n = 0;
    r->body_eof = 1;
  } else if (r->body_read) {
    int eof = 0;
    hold(r);
    ssize_t got = r->body_read(r, buf, len, &eof, r->user);
    if (!release(r) || r->state != H2T__REQ_ACTIVE)
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE; /* canceled from it */
    /* Nothing and no end is a pause too: asking again at once would spin
     * the loop until the source has data. */
    if (got == H2T_BODY_DEFER || (got == 0 && !eof)) {
      r->body_deferred = 1;
      return NGHTTP2_ERR_DEFERRED;
    }
    if (got < 0 || (size_t)got > len) {
      r->local_error = got < 0 ? (int)got : H2T_ERR_CALLBACK;
      if (r->local_error > -7000 || r->local_error < -7999)
        r->local_error = H2T_ERR_CALLBACK;
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    n = (size_t)got;
    r->body_eof = eof != 0;
  } else {
    /* on_body_send copies it once, into the output; nghttp2 does not */
    n = r->body_len - r->body_off;
    if (n > len)
      n = len;
    r->body_eof = r->body_off + n == r->body_len;
    *flags |= NGHTTP2_DATA_FLAG_NO_COPY;
  }
  r->bytes_sent += n;
  if (r->body_eof)
    *flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

static int on_body_send(void *su, const uint8_t *hd, size_t len) {
  h2t_request *r = su;
  int rc = h2t__conn_send_body(r->conn, hd, 9, r->body + r->body_off, len);
  if (rc == 0)
    r->body_off += len;
  return rc;
}

/* How the stream ended decides how the request does. */
static void on_stream_closed(void *su, int32_t sid, uint32_t code) {
  h2t_request *r = su;
  h2t__conn *cn = r->conn;
  h2t_client *c = r->client;
  hold(r);
  detach(r, 0, 0);
  if (r->state == H2T__REQ_DONE)
    ;
  else if (r->got_final && r->got_eos)
    finish(r, 0);
  else if (r->local_error)
    finish(r, r->local_error);
  else if (r->too_large)
    finish(r, H2T_ERR_HEADERS_TOO_LARGE);
  else if (r->got_first_byte) /* delivered something: never retried */
    finish(r, r->rst_by_peer ? H2T_ERR_STREAM_RESET
              : cn->error    ? cn->error
                             : H2T_ERR_PROTOCOL);
  else if (cn->goaway_last_id >= 0 && sid > cn->goaway_last_id)
    retry(r, H2T_RETRY_GOAWAY, H2T_ERR_GOAWAY, 1);
  else if (r->rst_by_peer && code == NGHTTP2_REFUSED_STREAM)
    retry(r, H2T_RETRY_REFUSED_STREAM, H2T_ERR_REFUSED_STREAM, 1);
  else if (r->rst_by_peer)
    finish(r, H2T_ERR_STREAM_RESET);
  else if (code == NGHTTP2_REFUSED_STREAM && !r->headers_sent)
    retry(r, H2T_RETRY_CONN_CLOSED, H2T_ERR_CONN_CLOSED, 1);
  else
    finish(r, cn->error ? cn->error : H2T_ERR_PROTOCOL);
  release(r); /* r may be gone from here on */
  if (cn->origin->nqueued)
    dispatch(c, cn->origin);
}

static const h2t__conn_cbs conn_cbs = {
    .conn_event = on_conn_event,
    .ready = on_ready,
    .settings = on_settings,
    .closed = on_closed,
    .flushed = on_flushed,
    .sent_headers = on_sent_headers,
    .sent_body_end = on_sent_body_end,
    .begin_headers = on_begin_headers,
    .header = on_header,
    .headers_done = on_headers_done,
    .data = on_data,
    .data_frame = on_data_frame,
    .stream_reset = on_stream_reset,
    .body_read = on_body_read,
    .body_send = on_body_send,
    .stream_closed = on_stream_closed,
};

/* --- the client ---------------------------------------------------------------- */

static void wake_cb(struct ev_loop *loop, ev_idle *w, int revents) {
  ev_idle_stop(loop, w);
}

static void cancel_posted(void *arg, uint64_t id) {
  h2t_client *c = arg;
  h2t_request *r;
  TAILQ_FOREACH(r, &c->reqs, all) {
    if (r->id == id) {
      h2t_request_cancel(r);
      return;
    }
  }
}

/* The in-flight table's cancel: from any thread, posts to the loop. */
static void post_cancel(void *arg, uint64_t req_id, const char *why) {
  h2t_client *c = arg;
  (void)h2t__postq_id(&c->cancels, req_id);
}

#define CFG(cfg, field, dflt) ((cfg).field ? (cfg).field : (dflt))

int h2t_client_new(h2t_client **out, const h2t_client_config *cfgp) {
  h2t_client_config cfg = {H2T_CLIENT_CONFIG_INIT};
  if (!out)
    return H2T_ERR_INVALID_ARG;
  *out = NULL;
  if ((cfgp && h2t__struct_in(&cfg, sizeof cfg, cfgp, H2T__CLIENT_CONFIG_V1)) ||
      h2t__trace_ok(cfg.trace, 0))
    return H2T_ERR_INVALID_ARG;
  const h2t_mem *mem = CFG(cfg, mem, NULL);
  int ipv = CFG(cfg, ip_version, 0);
  if (ipv != 0 && ipv != 4 && ipv != 6)
    return H2T_ERR_INVALID_ARG;
  h2t_client *c = h2t_xcalloc(mem, 1, sizeof *c);
  if (!c)
    return H2T_ERR_NOMEM;
  int rv = H2T_ERR_NOMEM;
  c->mem = mem;
  c->trace = CFG(cfg, trace, NULL);
  h2t__trace_chain_clear(&c->tc_default, 0);
  h2t__trace_chain_add(&c->tc_default, c->trace);
  c->max_queued = CFG(cfg, max_queued, 0);
  c->request_timeout_ms = CFG(cfg, request_timeout_ms, 0);
  c->max_retries = CFG(cfg, max_retries, 3);
  c->max_unprocessed_retries = CFG(cfg, max_unprocessed_retries, 10);
  c->max_header_bytes = CFG(cfg, max_response_header_bytes, 256 * 1024);
  c->expect_continue_timeout_ms = CFG(cfg, expect_continue_timeout_ms, 1000);
  c->no_traceparent = cfg.no_traceparent != 0;
  TAILQ_INIT(&c->reqs);
  h2t__conn_ctx *ctx = &c->ctx;
  ctx->mem = mem;
  ctx->cbs = &conn_cbs;
  ctx->user = c;
  ctx->after_flush = after_flush;
  ctx->connect_timeout_ms = CFG(cfg, connect_timeout_ms, 10000);
  ctx->idle_timeout_ms = CFG(cfg, idle_timeout_ms, 90000);
  ctx->initial_window_size = CFG(cfg, initial_window_size, 65535 * 16);
  if (ctx->initial_window_size > NGHTTP2_MAX_WINDOW_SIZE)
    ctx->initial_window_size = NGHTTP2_MAX_WINDOW_SIZE;
  ctx->max_header_list = c->max_header_bytes;
  ctx->insecure = CFG(cfg, insecure, 0);
  ctx->ip_version = ipv;
  const char *caf = CFG(cfg, ca_file, NULL), *cap = CFG(cfg, ca_path, NULL);
  if ((caf && !(ctx->ca_file = h2t_xstrdup(mem, caf))) ||
      (cap && !(ctx->ca_path = h2t_xstrdup(mem, cap))))
    goto fail;
  c->loop = CFG(cfg, loop, NULL);
  if (!c->loop) {
    c->loop = ev_loop_new(EVFLAG_AUTO);
    if (!c->loop) {
      rv = H2T_ERR_SYSTEM;
      goto fail;
    }
    c->own_loop = 1;
  }
  ctx->loop = c->loop;
  if ((rv = h2t__conn_ctx_init(ctx)) != 0)
    goto fail;
  h2t__pool_init(&c->pool, ctx, mem, CFG(cfg, max_conns_per_origin, 4),
                 &c->stats);
  ev_idle_init(&c->wake_w, wake_cb);
  h2t__postq_init(&c->cancels, c->loop, mem, cancel_posted, NULL, c);
  *out = c;
  return 0;
fail:
  h2t__conn_ctx_fini(ctx);
  if (c->own_loop)
    ev_loop_destroy(c->loop);
  h2t_xfree(mem, ctx->ca_file);
  h2t_xfree(mem, ctx->ca_path);
  h2t_xfree(mem, c);
  return rv;
}

void h2t_client_del(h2t_client *c) {
  if (!c)
    return;
  c->closing = 1;
  h2t_request *r;
  while ((r = TAILQ_FIRST(&c->reqs)))
    finish(r, H2T_ERR_CANCELED);
  h2t__pool_fini(&c->pool);
  h2t__conn_ctx_fini(&c->ctx);
  ev_idle_stop(c->loop, &c->wake_w);
  h2t__postq_fini(&c->cancels);
  if (c->own_loop)
    ev_loop_destroy(c->loop);
  h2t_xfree(c->mem, c->last_url);
  h2t__url_free(c->mem, &c->last_url_parsed);
  while (c->free_reqs) {
    h2t_request *f = c->free_reqs;
    c->free_reqs = f->free_next;
    req_destroy(c->mem, f);
  }
  h2t_xfree(c->mem, c->ctx.ca_file);
  h2t_xfree(c->mem, c->ctx.ca_path);
  h2t_xfree(c->mem, c);
}

struct ev_loop *h2t_client_loop(h2t_client *c) { return c ? c->loop : NULL; }

int h2t_client_run(h2t_client *c) {
  if (!c)
    return H2T_ERR_INVALID_ARG;
  if (c->running)
    return H2T_ERR_STATE;
  c->running = 1;
  while (c->pending)
    ev_run(c->loop, EVRUN_ONCE);
  c->running = 0;
  return 0;
}

size_t h2t_client_pending(const h2t_client *c) { return c ? c->pending : 0; }

void h2t_client_stats_get(const h2t_client *c, h2t_client_stats *out) {
  if (!c || !out)
    return;
  *out = c->stats;
  out->requests_queued = c->nqueued_total;
}

/* --- requests ---------------------------------------------------------------- */

static void timeout_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  finish(w->data, H2T_ERR_TIMEOUT); /* resets the stream with CANCEL */
}

int h2t_request_submit(h2t_client *c, const h2t_request_opts *opts,
                       h2t_request **out) {
  return h2t__client_submit(c, opts, out, NULL);
}

int h2t__client_submit(h2t_client *c, const h2t_request_opts *opts,
                       h2t_request **out, struct h2t__fetch *fetch) {
  if (out)
    *out = NULL;
  h2t_request_opts o;
  if (!c || h2t__req_opts_copy(&o, opts) != 0)
    return H2T_ERR_INVALID_ARG;
  if (c->closing)
    return H2T_ERR_SHUTDOWN;
  if ((o.body_len && !o.body) || (o.nheaders && !o.headers))
    return H2T_ERR_INVALID_ARG;
  h2t_request *r = req_alloc(c);
  if (!r)
    return H2T_ERR_NOMEM;
  r->client = c;
  r->hdrs = r->hdrs_inline;
  r->rcs = r->rc_inline;
  r->hdrs_cap = H2T__REQ_INLINE_HDRS;
  int rv = h2t__req_url(c, r, o.url);
  if (!rv && !(rv = h2t__req_headers(r, &o)) &&
      !(r->origin = h2t__origin_get(&c->pool, &r->url)))
    rv = H2T_ERR_NOMEM;
  h2t__conn *cn = NULL;
  h2t_conn_reason why;
  /* a full queue refuses before any event: the request never started */
  if (!rv && c->max_queued && c->nqueued_total >= c->max_queued &&
      h2t__pool_choose(&c->pool, r->origin, 0, &cn, &why) == H2T__PICK_QUEUE)
    rv = H2T_ERR_LIMIT;
  if (rv) {
    req_free(r);
    return rv;
  }
  r->id = h2t_next_req_id();
  r->t_submit = h2t_now_us();
  r->attempts = 1;
  r->body = o.body;
  r->body_len = o.body ? o.body_len : 0;
  r->body_read = o.body_read;
  r->body_length = o.body_length;
  r->on_headers = o.on_headers;
  r->on_data = o.on_data;
  r->on_done = o.on_done;
  r->user = o.user;
  r->fetch = fetch;
  h2t__req_chain(c, r, o.trace);
  r->ife = h2t__inflight_begin_at(INFLIGHT_CLIENT, r->id, r->method,
                                  r->url.scheme, r->url.authority, r->url.path,
                                  post_cancel, c, r->t_submit);
  h2t__trace_chain_set_inflight(&r->tc, r->ife);
  if (r->tctxp)
    h2t__inflight_set_trace(r->ife, r->tctxp);
  ev_timer_init(&r->expect_w, NULL, 0., 0.);
  r->timeout_ms = o.timeout_ms ? o.timeout_ms : c->request_timeout_ms;
  ev_timer_init(&r->timeout_w, timeout_cb, r->timeout_ms / 1000., 0.);
  r->timeout_w.data = r;
  TAILQ_INSERT_TAIL(&c->reqs, r, all);
  c->pending++;
  c->stats.requests_submitted++;
  H2T_COZ_BEGIN("client_request");
  hold(r);
  get_conn_event(r);
  if (r->state != H2T__REQ_DONE && (rv = place(c, r, 1)) != 0) {
    /* nothing was started (no memory): no callback, as for any error
     * returned here */
    c->stats.requests_submitted--;
    TAILQ_REMOVE(&c->reqs, r, all);
    c->pending--;
    h2t__inflight_end(r->ife, rv);
    H2T_COZ_END("client_request");
    r->state = H2T__REQ_DONE;
    release(r);
    return rv;
  }
  if (r->timeout_ms && r->state != H2T__REQ_DONE)
    ev_timer_start(c->loop, &r->timeout_w);
  if (!release(r))
    r = NULL; /* already completed (a hook canceled it, or it failed) */
  if (out)
    *out = r;
  return 0;
}

int h2t_request_cancel(h2t_request *r) {
  if (!r)
    return H2T_ERR_INVALID_ARG;
  if (r->state == H2T__REQ_DONE || r->finishing)
    return H2T_ERR_STATE;
  finish(r, H2T_ERR_CANCELED);
  return 0;
}

int h2t_request_resume(h2t_request *r) {
  if (!r)
    return H2T_ERR_INVALID_ARG;
  if (r->state == H2T__REQ_DONE || r->finishing)
    return H2T_ERR_STATE;
  if (r->state == H2T__REQ_ACTIVE && r->body_deferred && !r->waiting_100 &&
      r->conn) {
    r->body_deferred = 0;
    h2t__conn_resume(r->conn, r->stream_id);
  }
  return 0;
}

uint64_t h2t_request_id(const h2t_request *r) { return r ? r->id : 0; }
void *h2t_request_user(const h2t_request *r) { return r ? r->user : NULL; }
int h2t_request_status(const h2t_request *r) { return r ? r->status : 0; }
h2t_client *h2t_request_client(const h2t_request *r) {
  return r ? r->client : NULL;
}
int h2t_request_trace_context(const h2t_request *r, h2t_trace_context *out) {
  if (out)
    memset(out, 0, sizeof *out);
  if (!r || !out)
    return H2T_ERR_INVALID_ARG;
  if (!r->tctxp)
    return H2T_ERR_NOT_FOUND;
  *out = r->tctx;
  return 0;
}
