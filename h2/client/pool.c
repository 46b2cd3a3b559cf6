/*
 * Connection pool: per origin, pick a ready conn with a free stream slot,
 * else join a conn being set up (coalescing), else open one (up to
 * max_conns_per_origin), else queue.  Chooses only; the client acts.
 */
#include <string.h>

#include <h2trace/client.h>
#include "h2/client/pool.h"
#include "trace/trace_int.h"

void h2t__pool_init(h2t__pool *p, h2t__conn_ctx *ctx, const h2t_mem *mem,
                    uint32_t max_conns_per_origin,
                    struct h2t_client_stats *stats) {
  TAILQ_INIT(&p->origins);
  p->ctx = ctx;
  p->mem = mem;
  p->max_conns_per_origin = max_conns_per_origin;
  p->stats = stats;
}

h2t__origin *h2t__origin_get(h2t__pool *p, const h2_url *u) {
  h2t__origin *o;
  TAILQ_FOREACH(o, &p->origins, link) {
    if (o->port == u->port && o->tls == u->tls && !strcmp(o->host, u->host))
      return o;
  }
  o = h2t_xcalloc(p->mem, 1, sizeof *o);
  if (!o)
    return NULL;
  o->host = h2t_xstrdup(p->mem, u->host);
  if (!o->host) {
    h2t_xfree(p->mem, o);
    return NULL;
  }
  o->port = u->port;
  o->tls = u->tls;
  o->host_is_ip = u->host_is_ip;
  TAILQ_INIT(&o->conns);
  TAILQ_INIT(&o->queue);
  TAILQ_INSERT_TAIL(&p->origins, o, link);
  return o;
}

void h2t__pool_fini(h2t__pool *p) {
  h2t__origin *o;
  while ((o = TAILQ_FIRST(&p->origins))) {
    h2t__conn *cn;
    while ((cn = TAILQ_FIRST(&o->conns))) {
      TAILQ_REMOVE(&o->conns, cn, link);
      p->stats->conns_open--;
      h2t__conn_free(cn);
    }
    TAILQ_REMOVE(&p->origins, o, link);
    if (o->tls_session)
      SSL_SESSION_free(o->tls_session);
    h2t_xfree(p->mem, o->host);
    h2t_xfree(p->mem, o);
  }
}

uint32_t h2t__pool_guess(const h2t__origin *o) {
  if (!o->peer_max_known)
    return 100;
  /* at least one: a peer that said 0 last time may say more now, and a
   * request that waits on a new connection is settled when it says 0 again */
  return o->peer_max_streams ? o->peer_max_streams : 1;
}

uint32_t h2t__pool_budget(const h2t__origin *o) {
  if (!o->peer_max_known)
    return 1;
  return o->peer_max_streams ? o->peer_max_streams : 1;
}

/* Counts are the client's (nattached: requests with a stream on cn), which
 * drop as soon as a stream's request is settled, inside the close callback;
 * the connection's own count drops only when that callback returns, and a
 * queue served from the callback would otherwise find no room.
 *
 * Streams a request may open on cn now: the peer's limit once its SETTINGS
 * came; before, a budget that keeps within what the peer may say (one
 * stream when nothing is known of it, so the first request costs no wait
 * and none is sent over a limit the peer is about to announce). */
static uint32_t open_slots(const h2t__conn *cn) {
  return h2t__conn_capacity(cn, h2t__pool_budget(cn->origin));
}

h2t__conn *h2t__pool_pick(h2t__origin *o, uint64_t avoid_id) {
  h2t__conn *cn;
  TAILQ_FOREACH(cn, &o->conns, link) {
    if (h2t__conn_usable(cn) && cn->nattached < open_slots(cn) &&
        cn->id != avoid_id)
      return cn;
  }
  return NULL;
}

/* A conn still being set up, or set up without the peer's SETTINGS yet:
 * requests join its waiters (coalescing) up to what it is expected to take. */
h2t__conn *h2t__pool_pick_connecting(h2t__origin *o) {
  h2t__conn *cn;
  TAILQ_FOREACH(cn, &o->conns, link) {
    int setting_up = cn->state < H2T__CONN_READY ||
                     (cn->state == H2T__CONN_READY && !cn->settings_seen);
    if (setting_up && !cn->close_pending &&
        cn->nwaiters + cn->nattached < h2t__pool_guess(o))
      return cn;
  }
  return NULL;
}

/* Connections that count against max_conns_per_origin: those that can still
 * take a stream some day.  One draining, closing or told MAX_CONCURRENT_STREAMS
 * 0 never keeps a request from a new connection. */
static uint32_t live_conns(const h2t__origin *o) {
  uint32_t n = 0;
  const h2t__conn *cn;
  TAILQ_FOREACH(cn, &o->conns, link) {
    if (cn->drain_reason == H2T_CONN_NONE && !cn->close_pending &&
        !h2t__conn_takes_none(cn))
      n++;
  }
  return n;
}

h2t_conn_reason h2t__pool_new_reason(const h2t__origin *o) {
  const h2t__conn *cn;
  h2t_conn_reason drained = H2T_CONN_NONE;
  int full = 0;
  TAILQ_FOREACH(cn, &o->conns, link) {
    if (cn->close_pending)
      continue;
    if (cn->drain_reason != H2T_CONN_NONE)
      drained = cn->drain_reason;
    else
      full = 1; /* usable but at its limit (0 included) */
  }
  if (full)
    return H2T_CONN_MAX_STREAMS;
  if (drained != H2T_CONN_NONE)
    return drained;
  return o->last_close != H2T_CONN_NONE ? o->last_close : H2T_CONN_NO_CONN;
}

h2t__pick h2t__pool_choose(h2t__pool *p, h2t__origin *o, uint64_t avoid_id,
                           h2t__conn **out, h2t_conn_reason *why) {
  int can_open = live_conns(o) < p->max_conns_per_origin;
  h2t__conn *cn = h2t__pool_pick(o, avoid_id);
  if (!cn && avoid_id && !can_open && !h2t__pool_pick_connecting(o))
    cn = h2t__pool_pick(o, 0); /* a retry may not wait for ever for another */
  if (cn) {
    *out = cn;
    return H2T__PICK_USE;
  }
  cn = h2t__pool_pick_connecting(o);
  if (cn && cn->id != avoid_id) {
    *out = cn;
    return H2T__PICK_JOIN;
  }
  if (can_open) {
    *why = h2t__pool_new_reason(o);
    return H2T__PICK_OPEN;
  }
  return H2T__PICK_QUEUE;
}

h2t__conn *h2t__pool_open(h2t__pool *p, h2t__origin *o, h2t_conn_reason why) {
  h2t__conn *cn = h2t__conn_new(p->ctx, o->host, o->port, o->tls,
                                o->host_is_ip, &o->tls_session);
  if (!cn)
    return NULL;
  cn->origin = o;
  cn->open_reason = why;
  TAILQ_INSERT_TAIL(&o->conns, cn, link);
  o->nconns++;
  o->last_close = H2T_CONN_NONE;
  p->stats->conns_opened++;
  p->stats->conns_open++;
  if (why < H2T_CONN_REASON_COUNT_)
    p->stats->new_conn_reason[why]++;
  return cn;
}

void h2t__pool_remove(h2t__pool *p, h2t__conn *cn, h2t_conn_reason why) {
  h2t__origin *o = cn->origin;
  TAILQ_REMOVE(&o->conns, cn, link);
  o->nconns--;
  p->stats->conns_open--;
  o->last_close = why;
}

void h2t__pool_settings(h2t__conn *cn) {
  cn->origin->peer_max_streams = cn->max_streams;
  cn->origin->peer_max_known = 1;
}
