/*
 * Connection pool: per origin (scheme, host, port; TLS settings are
 * client-wide), pick a ready conn with a free stream slot, else join a conn
 * being set up (coalescing), else open one (up to max_conns_per_origin), else
 * queue (FIFO, up to max_queued).
 */
#include <string.h>

#include "h2/h2_int.h"

h2_origin *h2t__origin_get(h2t_client *c, const h2_url *u) {
  h2_origin *o;
  TAILQ_FOREACH(o, &c->origins, link) {
    if (o->port == u->port && o->tls == u->tls && !strcmp(o->host, u->host))
      return o;
  }
  o = h2t_xcalloc(c->mem, 1, sizeof *o);
  if (!o)
    return NULL;
  o->host = h2t_xstrdup(c->mem, u->host);
  if (!o->host) {
    h2t_xfree(c->mem, o);
    return NULL;
  }
  o->port = u->port;
  o->tls = u->tls;
  o->host_is_ip = u->host_is_ip;
  TAILQ_INIT(&o->conns);
  TAILQ_INIT(&o->queue);
  TAILQ_INSERT_TAIL(&c->origins, o, link);
  return o;
}

void h2t__origin_free(h2t_client *c, h2_origin *o) {
  h2_conn *cn;
  while ((cn = TAILQ_FIRST(&o->conns)))
    h2t__conn_free(cn);
  TAILQ_REMOVE(&c->origins, o, link);
  if (o->tls_session)
    SSL_SESSION_free(o->tls_session);
  h2t_xfree(c->mem, o->host);
  h2t_xfree(c->mem, o);
}

h2_conn *h2t__pool_pick(h2_origin *o, uint64_t avoid_id) {
  h2_conn *cn;
  TAILQ_FOREACH(cn, &o->conns, link) {
    if (h2t__conn_usable(cn) && cn->nstreams < h2t__conn_capacity(cn) &&
        cn->id != avoid_id)
      return cn;
  }
  return NULL;
}

h2_conn *h2t__pool_pick_connecting(h2_origin *o) {
  h2_conn *cn;
  TAILQ_FOREACH(cn, &o->conns, link) {
    if (cn->state < CONN_READY && !cn->close_pending &&
        cn->nwaiters < h2t__conn_capacity(cn))
      return cn;
  }
  return NULL;
}

static uint32_t live_conns(const h2_origin *o) {
  uint32_t n = 0;
  const h2_conn *cn;
  TAILQ_FOREACH(cn, &o->conns, link) {
    if (cn->drain_reason == H2T_CONN_NONE && !cn->close_pending)
      n++;
  }
  return n;
}

h2t_conn_reason h2t__pool_new_reason(const h2_origin *o) {
  const h2_conn *cn;
  h2t_conn_reason drained = H2T_CONN_NONE;
  int full = 0;
  TAILQ_FOREACH(cn, &o->conns, link) {
    if (cn->close_pending)
      continue;
    if (cn->drain_reason != H2T_CONN_NONE)
      drained = cn->drain_reason;
    else
      full = 1;
  }
  if (full)
    return H2T_CONN_MAX_STREAMS;
  if (drained != H2T_CONN_NONE)
    return drained;
  return o->last_close != H2T_CONN_NONE ? o->last_close : H2T_CONN_NO_CONN;
}

/* r takes a stream on the ready conn cn. */
static void attach(h2t_client *c, h2_conn *cn, h2t_request *r, int fresh) {
  int reused = !fresh && cn->served > 0;
  int was_idle = !fresh && cn->nstreams == 0;
  uint64_t idle_us = 0;
  if (was_idle && TRACE_WANTS(&r->tc, H2T_EV_GOT_CONN))
    idle_us = h2t_now_us() - cn->idle_since;
  cn->served++;
  if (reused) {
    c->stats.conns_reused_picks++;
    h2t__connreg_reused(cn->reg);
  }
  r->conn = cn;
  r->conn_id = cn->id;
  r->state = REQ_ACTIVE;
  int rv = h2t__conn_submit(cn, r);
  if (rv == 0) {
    /* after submit so that active_streams counts this one */
    h2t__req_got_conn(r, cn, reused, was_idle, idle_us,
                    reused ? H2T_CONN_NONE : cn->open_reason);
    return;
  }
  r->conn = NULL;
  r->state = REQ_NEW;
  if (rv == H2T_ERR_LIMIT) {
    /* stream ids ran out: that conn drains, try elsewhere */
    r->retry_reason = H2T_CONN_STREAM_IDS;
    rv = h2t__pool_acquire(c, r);
    if (rv == 0)
      return;
  }
  h2t__req_finish(r, rv);
}

static int can_open(h2t_client *c, h2_origin *o) {
  return live_conns(o) < c->max_conns_per_origin;
}

static int can_open(h2t_client *c, h2_origin *o);

static int place(h2t_client *c, h2t_request *r, int may_queue) {
  h2_origin *o = r->origin;
  h2_conn *cn = h2t__pool_pick(o, r->avoid_id);
  if (!cn && r->avoid_id && !can_open(c, o) && !h2t__pool_pick_connecting(o))
    cn = h2t__pool_pick(o, 0); /* a retry may not wait forever for another */
  if (cn) {
    attach(c, cn, r, 0);
    return 0;
  }
  cn = h2t__pool_pick_connecting(o);
  if (cn && cn->id != r->avoid_id) {
    TAILQ_INSERT_TAIL(&cn->waiters, r, link);
    cn->nwaiters++;
    r->conn = cn;
    r->conn_id = cn->id;
    r->state = REQ_WAITING;
    return 0;
  }
  if (can_open(c, o)) {
    h2t_conn_reason why = r->retry_reason != H2T_CONN_NONE
                              ? r->retry_reason
                              : h2t__pool_new_reason(o);
    cn = h2t__conn_new(c, o, why);
    if (!cn)
      return H2T_ERR_NOMEM;
    TAILQ_INSERT_TAIL(&cn->waiters, r, link);
    cn->nwaiters++;
    r->conn = cn;
    r->conn_id = cn->id;
    r->state = REQ_WAITING;
    h2t__conn_start(cn);
    return 0;
  }
  if (!may_queue)
    return 1;
  if (c->max_queued && c->nqueued_total >= c->max_queued)
    return H2T_ERR_LIMIT;
  TAILQ_INSERT_TAIL(&o->queue, r, link);
  o->nqueued++;
  c->nqueued_total++;
  c->stats.requests_queued = c->nqueued_total;
  r->state = REQ_QUEUED;
  h2t__inflight_wait_stream(r->ife);
  return 0;
}

int h2t__pool_acquire(h2t_client *c, h2t_request *r) {
  h2_origin *o = r->origin;
  if (c->max_queued && c->nqueued_total >= c->max_queued &&
      !h2t__pool_pick(o, r->avoid_id) && !h2t__pool_pick_connecting(o) &&
      !can_open(c, o))
    return H2T_ERR_LIMIT; /* before any event: the request never started */
  if (TRACE_WANTS(&r->tc, H2T_EV_GET_CONN)) {
    h2t_event ev;
    h2_ev_init(&ev, r, H2T_EV_GET_CONN);
    ev.conn_id = 0;
    ev.stream_id = 0;
    ev.u.get_conn.scheme = r->url.scheme;
    ev.u.get_conn.authority = r->url.authority;
    h2_req_hold(r);
    h2_req_emit(r, &ev);
    if (!h2t__req_release(r))
      return 0;
  }
  return place(c, r, 1);
}

void h2t__pool_dispatch(h2t_client *c, h2_origin *o) {
  h2t_request *r;
  if (c->closing)
    return;
  while ((r = TAILQ_FIRST(&o->queue))) {
    TAILQ_REMOVE(&o->queue, r, link);
    o->nqueued--;
    c->nqueued_total--;
    int rv = place(c, r, 0);
    if (rv == 1) { /* still no room: back to the head, keep FIFO order */
      TAILQ_INSERT_HEAD(&o->queue, r, link);
      o->nqueued++;
      c->nqueued_total++;
      break;
    }
    if (rv < 0)
      h2t__req_finish(r, rv);
  }
  c->stats.requests_queued = c->nqueued_total;
}

void h2t__pool_conn_ready(h2_conn *cn) {
  h2t_client *c = cn->client;
  h2t_request *r;
  while ((r = TAILQ_FIRST(&cn->waiters))) {
    TAILQ_REMOVE(&cn->waiters, r, link);
    cn->nwaiters--;
    attach(c, cn, r, 1);
  }
  if (cn->nstreams == 0)
    h2t__pool_conn_idle(cn);
  if (cn->origin->nqueued)
    h2t__pool_dispatch(c, cn->origin);
}

void h2t__pool_conn_idle(h2_conn *cn) {
  h2t_client *c = cn->client;
  cn->idle_since = h2t_now_us();
  ev_timer_stop(c->loop, &cn->timer);
  ev_timer_set(&cn->timer, c->idle_timeout_ms / 1000., 0.);
  ev_timer_start(c->loop, &cn->timer);
}

void h2t__pool_conn_remove(h2_conn *cn, h2t_conn_reason why) {
  h2_origin *o = cn->origin;
  h2t_client *c = cn->client;
  TAILQ_REMOVE(&o->conns, cn, link);
  o->nconns--;
  c->stats.conns_open--;
  o->last_close = why;
}
