/* The client: lifecycle, request submission and completion, fetch, stats. */
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "h2/h2_int.h"

/* --- events ------------------------------------------------------------ */

void h2t__req_got_conn(h2t_request *r, h2_conn *cn, int reused, int was_idle,
                     uint64_t idle_us, h2t_conn_reason why) {
  if (!TRACE_WANTS(&r->tc, H2T_EV_GOT_CONN))
    return;
  h2t_event ev;
  h2_ev_init(&ev, r, H2T_EV_GOT_CONN);
  ev.u.got_conn.reused = reused;
  ev.u.got_conn.was_idle = was_idle;
  ev.u.got_conn.idle_us = idle_us;
  ev.u.got_conn.new_reason = reused ? H2T_CONN_NONE : why;
  ev.u.got_conn.active_streams = cn->nstreams;
  ev.u.got_conn.max_streams = cn->max_streams;
  h2_req_emit(r, &ev);
}

void h2t__req_put_conn(h2t_request *r, h2_conn *cn) {
  if (!TRACE_WANTS(&r->tc, H2T_EV_PUT_IDLE_CONN))
    return;
  h2t_event ev;
  h2_ev_init(&ev, r, H2T_EV_PUT_IDLE_CONN);
  int usable = h2t__conn_usable(cn);
  ev.u.put_idle_conn.reusable = usable;
  ev.u.put_idle_conn.reason =
      usable ? H2T_CONN_NONE
      : cn->close_pending
          ? (cn->close_reason != H2T_CONN_NONE ? cn->close_reason
                                               : H2T_CONN_CLOSED)
      : cn->drain_reason != H2T_CONN_NONE ? cn->drain_reason
                                          : H2T_CONN_ERROR;
  ev.u.put_idle_conn.active_streams = cn->nstreams;
  h2_req_emit(r, &ev);
}

/* --- completion -------------------------------------------------------- */

static void unlink_req(h2t_request *r) {
  h2t_client *c = r->client;
  switch (r->state) {
  case REQ_QUEUED:
    TAILQ_REMOVE(&r->origin->queue, r, link);
    r->origin->nqueued--;
    c->nqueued_total--;
    c->stats.requests_queued = c->nqueued_total;
    break;
  case REQ_WAITING:
    TAILQ_REMOVE(&r->conn->waiters, r, link);
    r->conn->nwaiters--;
    r->conn = NULL;
    break;
  case REQ_ACTIVE:
    if (r->conn)
      h2t__conn_reset_stream(r->conn, r, NGHTTP2_CANCEL);
    break;
  default:
    break;
  }
  r->state = REQ_NEW;
}

static void hdrs_free(h2t_request *r) {
  for (size_t i = 0; i < 2 * r->nhdrs; i++)
    nghttp2_rcbuf_decref(r->rcs[i]);
  r->nhdrs = 0;
  if (r->hdrs != r->hdrs_inline) {
    h2t_xfree(r->client->mem, r->hdrs);
    h2t_xfree(r->client->mem, r->rcs);
  }
}

/* Under AddressSanitizer requests are not recycled, so that a use after
 * completion is still caught. */
#if defined(__SANITIZE_ADDRESS__)
#define MAX_FREE_REQS 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define MAX_FREE_REQS 0
#endif
#endif
#ifndef MAX_FREE_REQS
#define MAX_FREE_REQS 64
#endif
static const unsigned max_free_reqs = MAX_FREE_REQS;

static void req_destroy(const h2t_mem *m, h2t_request *r) {
  h2t_xfree(m, r->hdrbuf);
  h2t_xfree(m, r->urlbuf);
  h2t_xfree(m, r);
}

static void req_free(h2t_request *r) {
  h2t_client *c = r->client;
  hdrs_free(r);
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

void h2t__req_finish(h2t_request *r, int error) {
  h2t_client *c = r->client;
  if (r->state == REQ_DONE || r->finishing)
    return;
  r->finishing = 1; /* unlinking runs put_idle_conn: a hook may cancel r */
  r->hold++;
  unlink_req(r);
  r->state = REQ_DONE;
  c->finished++;
  ev_timer_stop(c->loop, &r->timeout_w);
  ev_timer_stop(c->loop, &r->expect_w);
  if (error)
    c->stats.requests_failed++;
  else
    c->stats.requests_succeeded++;
  if (TRACE_WANTS(&r->tc, H2T_EV_DONE)) {
    h2t_event ev;
    h2_ev_init(&ev, r, H2T_EV_DONE);
    if (!ev.t_us)
      ev.t_us = h2t_now_us();
    ev.u.done.error = error;
    ev.u.done.status = r->status;
    ev.u.done.bytes_sent = r->bytes_sent;
    ev.u.done.bytes_recv = r->bytes_recv;
    ev.u.done.total_us = ev.t_us - r->t_submit;
    ev.u.done.attempts = r->attempts;
    h2_req_emit(r, &ev);
  }
  h2t__inflight_end(r->ife, error);
  TAILQ_REMOVE(&c->reqs, r, all);
  c->pending--;
  if (r->on_done)
    r->on_done(r, error, r->user);
  if (--r->hold == 0)
    req_free(r);
}

int h2t__req_release(h2t_request *r) {
  int live = r->state != REQ_DONE;
  if (--r->hold == 0 && !live)
    req_free(r);
  return live;
}

int h2t__req_safe_to_retry(const h2t_request *r) {
  if (!r->headers_sent)
    return 1;
  /* sent but idempotent and without a body that cannot be replayed */
  return (!strcmp(r->method, "GET") || !strcmp(r->method, "HEAD") ||
          !strcmp(r->method, "OPTIONS")) &&
         !(r->body_read && r->bytes_sent);
}

void h2t__req_retry_or_fail(h2t_request *r, h2t_retry_reason why, int error) {
  h2t_client *c = r->client;
  if (c->closing || r->attempts > c->max_retries ||
      (r->body_read && r->bytes_sent)) {
    h2t__req_finish(r, error);
    return;
  }
  r->attempts++;
  c->stats.retries++;
  if (TRACE_WANTS(&r->tc, H2T_EV_RETRY)) {
    h2t_event ev;
    h2_ev_init(&ev, r, H2T_EV_RETRY);
    ev.u.retry.reason = why;
    ev.u.retry.attempt = r->attempts - 1;
    h2_req_hold(r);
    h2_req_emit(r, &ev);
    if (!h2t__req_release(r))
      return;
  }
  r->avoid_id = r->conn_id;
  r->retry_reason = why == H2T_RETRY_GOAWAY         ? H2T_CONN_GOAWAY
                    : why == H2T_RETRY_CONN_CLOSED ? H2T_CONN_CLOSED
                                                   : H2T_CONN_RETRY;
  hdrs_free(r);
  r->hdrs = r->hdrs_inline;
  r->rcs = r->rc_inline;
  r->hdrs_cap = REQ_INLINE_HDRS;
  r->stream_id = 0;
  r->conn = NULL;
  r->conn_id = 0;
  r->status = r->pending_status = 0;
  r->body_off = 0;
  r->bytes_sent = r->bytes_recv = 0;
  r->body_eof = r->body_deferred = r->got_first_byte = r->got_final = 0;
  r->headers_sent = r->flow_blocked = r->got_eos = r->rst_by_peer = 0;
  r->skip_body = 0;
  r->waiting_100 = r->expect_100;
  r->rst_code = 0;
  r->state = REQ_NEW;
  int rv = h2t__pool_acquire(c, r);
  if (rv)
    h2t__req_finish(r, rv);
}

/* --- client ------------------------------------------------------------ */

static void wake_cb(struct ev_loop *loop, ev_idle *w, int revents) {
  ev_idle_stop(loop, w);
}

static void flush_cb(struct ev_loop *loop, ev_prepare *w, int revents) {
  h2t_client *c = w->data;
  uint64_t finished = c->finished;
  h2_conn *cn;
  while ((cn = TAILQ_FIRST(&c->dirty)))
    h2t__conn_flush(cn); /* removes it from the list */
  ev_prepare_stop(loop, w);
  /* A request completed here, just before the loop polls: do not block in
   * the poll, so that h2t_client_run()/fetch see it at once. */
  if (c->finished != finished && !ev_is_active(&c->wake_w))
    ev_idle_start(loop, &c->wake_w);
}

static void cancel_async_cb(struct ev_loop *loop, ev_async *w, int revents) {
  h2t_client *c = w->data;
  for (;;) {
    uint64_t id = 0;
    pthread_mutex_lock(&c->cancel_mu);
    if (c->ncancels)
      id = c->cancels[--c->ncancels].id;
    pthread_mutex_unlock(&c->cancel_mu);
    if (!id)
      break;
    h2t_request *r;
    TAILQ_FOREACH(r, &c->reqs, all) {
      if (r->id == id) {
        h2t_request_cancel(r);
        break;
      }
    }
  }
}

/* From any thread (the diagnostics endpoint's): only post to the loop. */
void h2t__client_post_cancel(void *arg, uint64_t req_id, const char *why) {
  h2t_client *c = arg;
  pthread_mutex_lock(&c->cancel_mu);
  if (c->ncancels == c->cancels_cap) {
    size_t cap = c->cancels_cap ? c->cancels_cap * 2 : 8;
    cancel_item *p = h2t_xrealloc(c->mem, c->cancels, cap * sizeof *p);
    if (!p) {
      pthread_mutex_unlock(&c->cancel_mu);
      return;
    }
    c->cancels = p;
    c->cancels_cap = cap;
  }
  c->cancels[c->ncancels++].id = req_id;
  pthread_mutex_unlock(&c->cancel_mu);
  ev_async_send(c->loop, &c->cancel_w);
}

#define CFG_HAS(cfg, field)                                                    \
  ((cfg)->struct_size >= offsetof(h2t_client_config, field) + sizeof((cfg)->field))
#define CFG(cfg, field, dflt)                                                  \
  ((cfg) && CFG_HAS(cfg, field) && (cfg)->field ? (cfg)->field : (dflt))

int h2t__client_ssl_ctx(h2t_client *c) {
  if (c->ssl_ctx)
    return 0;
  int rv = h2t__tls_ctx_new(&c->ssl_ctx, c->ca_file, c->ca_path, c->insecure);
  if (rv != 0)
    return rv;
  SSL_CTX_set_session_cache_mode(c->ssl_ctx, SSL_SESS_CACHE_CLIENT |
                                                 SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(c->ssl_ctx, h2t__conn_tls_new_session);
  return 0;
}

int h2t_client_new(h2t_client **out, const h2t_client_config *cfg) {
  if (!out || (cfg && cfg->struct_size < offsetof(h2t_client_config, mem)))
    return H2T_ERR_INVALID_ARG;
  *out = NULL;
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
  c->max_conns_per_origin = CFG(cfg, max_conns_per_origin, 4);
  c->max_queued = CFG(cfg, max_queued, 0);
  c->connect_timeout_ms = CFG(cfg, connect_timeout_ms, 10000);
  c->idle_timeout_ms = CFG(cfg, idle_timeout_ms, 90000);
  c->request_timeout_ms = CFG(cfg, request_timeout_ms, 0);
  c->max_retries = CFG(cfg, max_retries, 3);
  c->expect_continue_timeout_ms = CFG(cfg, expect_continue_timeout_ms, 1000);
  c->initial_window_size = CFG(cfg, initial_window_size, 65535 * 16);
  if (c->initial_window_size > NGHTTP2_MAX_WINDOW_SIZE)
    c->initial_window_size = NGHTTP2_MAX_WINDOW_SIZE;
  c->insecure = CFG(cfg, insecure, 0);
  c->ip_version = ipv;
  const char *caf = CFG(cfg, ca_file, NULL), *cap = CFG(cfg, ca_path, NULL);
  TAILQ_INIT(&c->origins);
  TAILQ_INIT(&c->reqs);
  TAILQ_INIT(&c->dirty);
  pthread_mutex_init(&c->cancel_mu, NULL);
  if ((caf && !(c->ca_file = h2t_xstrdup(mem, caf))) ||
      (cap && !(c->ca_path = h2t_xstrdup(mem, cap))))
    goto fail;
  /* A CA the caller named is loaded now, so that a bad one fails here and
   * not per request.  The system's store is loaded on the first https
   * connection: it costs ~25 ms, which an h2c-only client never needs. */
  if ((caf || cap) && (rv = h2t__client_ssl_ctx(c)) != 0)
    goto fail;
  rv = H2T_ERR_NOMEM;
  if (h2t__callbacks_new(&c->cbs) != 0 || nghttp2_option_new(&c->opt) != 0)
    goto fail;
  /* the pool does its own accounting; let nghttp2 not hold extra state */
  nghttp2_option_set_no_closed_streams(c->opt, 1);
  c->loop = CFG(cfg, loop, NULL);
  if (!c->loop) {
    c->loop = ev_loop_new(EVFLAG_AUTO);
    if (!c->loop) {
      rv = H2T_ERR_SYSTEM;
      goto fail;
    }
    c->own_loop = 1;
  }
  if ((rv = h2t__dns_new(&c->dns, c->loop, mem)) != 0)
    goto fail;
  ev_prepare_init(&c->flush_w, flush_cb);
  c->flush_w.data = c;
  ev_idle_init(&c->wake_w, wake_cb);
  ev_async_init(&c->cancel_w, cancel_async_cb);
  c->cancel_w.data = c;
  ev_async_start(c->loop, &c->cancel_w);
  ev_unref(c->loop); /* the async watcher alone must not keep the loop up */
  *out = c;
  return 0;
fail:
  if (c->ssl_ctx)
    SSL_CTX_free(c->ssl_ctx);
  if (c->cbs)
    nghttp2_session_callbacks_del(c->cbs);
  if (c->opt)
    nghttp2_option_del(c->opt);
  if (c->own_loop)
    ev_loop_destroy(c->loop);
  pthread_mutex_destroy(&c->cancel_mu);
  h2t_xfree(mem, c->ca_file);
  h2t_xfree(mem, c->ca_path);
  h2t_xfree(mem, c);
  return rv;
}

void h2t_client_del(h2t_client *c) {
  if (!c)
    return;
  c->closing = 1;
  h2t_request *r;
  while ((r = TAILQ_FIRST(&c->reqs)))
    h2t__req_finish(r, H2T_ERR_CANCELED);
  h2_origin *o;
  while ((o = TAILQ_FIRST(&c->origins)))
    h2t__origin_free(c, o);
  h2t__dns_del(c->dns);
  ev_prepare_stop(c->loop, &c->flush_w);
  ev_idle_stop(c->loop, &c->wake_w);
  ev_ref(c->loop);
  ev_async_stop(c->loop, &c->cancel_w);
  if (c->own_loop)
    ev_loop_destroy(c->loop);
  SSL_CTX_free(c->ssl_ctx);
  nghttp2_session_callbacks_del(c->cbs);
  nghttp2_option_del(c->opt);
  pthread_mutex_destroy(&c->cancel_mu);
  h2t_xfree(c->mem, c->cancels);
  h2t_xfree(c->mem, c->last_url);
  h2t__url_free(c->mem, &c->last_url_parsed);
  while (c->free_reqs) {
    h2t_request *f = c->free_reqs;
    c->free_reqs = f->free_next;
    req_destroy(c->mem, f);
  }
  h2t_xfree(c->mem, c->ca_file);
  h2t_xfree(c->mem, c->ca_path);
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

/* --- submit ------------------------------------------------------------ */

static int hop_by_hop(const char *name) {
  static const char *const drop[] = {"connection", "keep-alive",
                                     "proxy-connection", "transfer-encoding",
                                     "upgrade", "host"};
  for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++)
    if (!strcasecmp(name, drop[i]))
      return 1;
  return 0;
}

static int valid_token(const char *s) {
  if (!*s)
    return 0;
  for (; *s; s++)
    if ((unsigned char)*s <= 0x20 || *s == ':' || (unsigned char)*s >= 0x7f)
      return 0;
  return 1;
}

static int valid_value(const char *s) {
  for (; *s; s++)
    if (*s == '\r' || *s == '\n' || *s == '\0')
      return 0;
  return 1;
}

static void nv_set(nghttp2_nv *nv, char **pp, const char *name, size_t nlen,
                   const char *value, size_t vlen, int lower) {
  char *p = *pp;
  nv->name = (uint8_t *)p;
  memcpy(p, name, nlen);
  if (lower) /* HTTP/2 field names are lowercase (RFC 9113 §8.2.1) */
    for (size_t i = 0; i < nlen; i++)
      if (p[i] >= 'A' && p[i] <= 'Z')
        p[i] = (char)(p[i] - 'A' + 'a');
  p[nlen] = '\0';
  p += nlen + 1;
  nv->value = (uint8_t *)p;
  memcpy(p, value, vlen);
  p[vlen] = '\0';
  p += vlen + 1;
  nv->namelen = nlen;
  nv->valuelen = vlen;
  nv->flags = NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE;
  *pp = p;
}

/* Build the header block once: :method :scheme :authority :path, then the
 * user's headers (names lowercased, hop-by-hop ones dropped), and
 * content-length for a known body length.  One allocation. */
static int build_headers(h2t_request *r, const h2t_request_opts *o) {
  const h2t_mem *m = r->client->mem;
  const char *method =
      o->method ? o->method : (o->body || o->body_read) ? "POST" : "GET";
  if (!valid_token(method))
    return H2T_ERR_INVALID_ARG;
  int64_t clen = o->body_read ? o->body_length : (int64_t)o->body_len;
  if (!o->body_read && !o->body)
    clen = -1;
  if (!o->body_read && o->body && !o->body_len &&
      (!strcmp(method, "GET") || !strcmp(method, "HEAD")))
    clen = -1;
  char clbuf[24] = "";
  size_t strlen_total = 0, n = 4;
  int has_cl = 0;
  for (size_t i = 0; i < o->nheaders; i++) {
    const h2t_header *h = &o->headers[i];
    if (!h->name || !h->value || !valid_token(h->name) || !valid_value(h->value))
      return H2T_ERR_INVALID_ARG;
    if (hop_by_hop(h->name))
      continue;
    if (!strcasecmp(h->name, "content-length"))
      has_cl = 1;
    if (!strcasecmp(h->name, "expect") &&
        !strcasecmp(h->value, "100-continue") && (o->body || o->body_read))
      r->expect_100 = r->waiting_100 = 1;
    strlen_total += strlen(h->name) + strlen(h->value) + 2;
    n++;
  }
  if (clen >= 0 && !has_cl) {
    int k = snprintf(clbuf, sizeof clbuf, "%lld", (long long)clen);
    strlen_total += 14 + 1 + (size_t)k + 1;
    n++;
  }
  size_t mlen = strlen(method);
  strlen_total += 8 + mlen + 8 + strlen(r->url.scheme) + 11 +
                  strlen(r->url.authority) + 6 + strlen(r->url.path) + 8;
  size_t need = n * sizeof(nghttp2_nv) + strlen_total;
  if (r->hdrcap < need) {
    h2t_xfree(m, r->hdrbuf);
    r->hdrcap = 0;
    if (!(r->hdrbuf = h2t_xmalloc(m, need)))
      return H2T_ERR_NOMEM;
    r->hdrcap = need;
  }
  char *buf = r->hdrbuf;
  r->nv = (nghttp2_nv *)(void *)buf;
  char *p = buf + n * sizeof(nghttp2_nv);
  size_t k = 0;
  nv_set(&r->nv[k++], &p, ":method", 7, method, mlen, 0);
  r->method = (const char *)r->nv[0].value;
  nv_set(&r->nv[k++], &p, ":scheme", 7, r->url.scheme, strlen(r->url.scheme),
         0);
  nv_set(&r->nv[k++], &p, ":authority", 10, r->url.authority,
         strlen(r->url.authority), 0);
  nv_set(&r->nv[k++], &p, ":path", 5, r->url.path, strlen(r->url.path), 0);
  for (size_t i = 0; i < o->nheaders; i++) {
    const h2t_header *h = &o->headers[i];
    if (hop_by_hop(h->name))
      continue;
    nv_set(&r->nv[k++], &p, h->name, strlen(h->name), h->value,
           strlen(h->value), 1);
  }
  if (clbuf[0])
    nv_set(&r->nv[k++], &p, "content-length", 14, clbuf, strlen(clbuf), 0);
  r->nnv = k;
  return 0;
}

/* r->url from s, into r->urlbuf.  The last URL's parse is kept: clients
 * tend to fetch the same one again. */
static int req_url(h2t_client *c, h2t_request *r, const char *s) {
  const h2t_mem *m = c->mem;
  h2_url tmp;
  const h2_url *src = &c->last_url_parsed;
  if (!s || !c->last_url || strcmp(s, c->last_url)) {
    int rv = h2t__url_parse(m, s, &tmp);
    if (rv)
      return rv;
    char *copy = h2t_xstrdup(m, s);
    src = &tmp;
    if (copy) { /* cache it; without memory, just don't */
      h2t_xfree(m, c->last_url);
      h2t__url_free(m, &c->last_url_parsed);
      c->last_url = copy;
      c->last_url_parsed = tmp;
      src = &c->last_url_parsed;
    }
  }
  int rv = 0;
  if (r->urlcap < src->buflen_) {
    h2t_xfree(m, r->urlbuf);
    r->urlcap = 0;
    if ((r->urlbuf = h2t_xmalloc(m, src->buflen_)))
      r->urlcap = src->buflen_;
    else
      rv = H2T_ERR_NOMEM;
  }
  if (!rv)
    h2t__url_copy_to(src, &r->url, r->urlbuf);
  if (src == &tmp)
    h2t__url_free(m, &tmp);
  return rv;
}

static void timeout_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  h2t_request *r = w->data;
  h2t__req_finish(r, H2T_ERR_TIMEOUT); /* resets the stream with CANCEL */
}

/* The request's trace chain: its own trace (copied), then the client's.
 * Equivalent to h2t__trace_chain_add() of both, without recomputing masks for
 * the common case of the same trace on every request. */
static void req_chain(h2t_client *c, h2t_request *r,
                      const h2t_client_trace *t) {
  if (!t || t->struct_size < sizeof(size_t)) {
    r->tc = c->tc_default;
    return;
  }
  h2t__trace_chain_clear(&r->tc, 0);
  memset(&r->trace_copy, 0, sizeof r->trace_copy);
  memcpy(&r->trace_copy, t,
         t->struct_size < sizeof r->trace_copy ? t->struct_size
                                               : sizeof r->trace_copy);
  if (!r->trace_copy.next && c->last_trace_valid &&
      !memcmp(&r->trace_copy, &c->last_trace, sizeof r->trace_copy)) {
    h2t__trace_chain_push(&r->tc, &r->trace_copy, c->last_trace_mask);
  } else {
    h2t__trace_chain_add(&r->tc, &r->trace_copy);
    if (!r->trace_copy.next) {
      c->last_trace = r->trace_copy;
      c->last_trace_mask = r->tc.mask;
      c->last_trace_valid = 1;
    }
  }
  if (c->trace)
    h2t__trace_chain_push(&r->tc, c->trace, c->tc_default.mask);
}

int h2t_request_submit(h2t_client *c, const h2t_request_opts *opts,
                       h2t_request **out) {
  if (out)
    *out = NULL;
  if (!c || !opts || opts->struct_size < offsetof(h2t_request_opts, method))
    return H2T_ERR_INVALID_ARG;
  if (c->closing)
    return H2T_ERR_SHUTDOWN;
  h2t_request_opts o;
  memset(&o, 0, sizeof o);
  memcpy(&o, opts,
         opts->struct_size < sizeof o ? opts->struct_size : sizeof o);
  if (o.body_len && !o.body)
    return H2T_ERR_INVALID_ARG;
  if (o.nheaders && !o.headers)
    return H2T_ERR_INVALID_ARG;
  h2t_request *r = req_alloc(c);
  if (!r)
    return H2T_ERR_NOMEM;
  r->client = c;
  int rv = req_url(c, r, o.url);
  if (rv) {
    req_free(r);
    return rv;
  }
  if ((rv = build_headers(r, &o)) != 0 ||
      !(r->origin = h2t__origin_get(c, &r->url))) {
    req_free(r);
    return rv ? rv : H2T_ERR_NOMEM;
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
  r->hdrs = r->hdrs_inline;
  r->rcs = r->rc_inline;
  r->hdrs_cap = REQ_INLINE_HDRS;
  req_chain(c, r, o.trace);
  r->ife = h2t__inflight_begin_at(INFLIGHT_CLIENT, r->id, r->method, r->url.scheme,
                             r->url.authority, r->url.path,
                             h2t__client_post_cancel, c,
                             r->t_submit); /* inflight: no extra clock read */
  h2t__trace_chain_set_inflight(&r->tc, r->ife);
  ev_timer_init(&r->expect_w, NULL, 0., 0.);
  r->timeout_ms = o.timeout_ms ? o.timeout_ms : c->request_timeout_ms;
  ev_timer_init(&r->timeout_w, timeout_cb, r->timeout_ms / 1000., 0.);
  r->timeout_w.data = r;
  TAILQ_INSERT_TAIL(&c->reqs, r, all);
  c->pending++;
  c->stats.requests_submitted++;
  h2_req_hold(r);
  rv = h2t__pool_acquire(c, r);
  if (rv && r->state != REQ_DONE) {
    c->stats.requests_submitted--;
    TAILQ_REMOVE(&c->reqs, r, all);
    c->pending--;
    h2t__inflight_end(r->ife, rv);
    r->state = REQ_DONE; /* no callbacks: it never started */
    h2t__req_release(r);
    return rv;
  }
  if (r->timeout_ms && r->state != REQ_DONE)
    ev_timer_start(c->loop, &r->timeout_w);
  if (!h2t__req_release(r))
    r = NULL; /* a hook already completed it */
  if (out)
    *out = r;
  return 0;
}

int h2t_request_cancel(h2t_request *r) {
  if (!r || r->state == REQ_DONE || r->finishing)
    return H2T_ERR_STATE;
  h2t__req_finish(r, H2T_ERR_CANCELED);
  return 0;
}

int h2t_request_resume(h2t_request *r) {
  if (!r || r->state == REQ_DONE || r->finishing)
    return H2T_ERR_STATE;
  if (r->state == REQ_ACTIVE && r->body_deferred && !r->waiting_100 &&
      r->conn && r->conn->sess) {
    r->body_deferred = 0;
    nghttp2_session_resume_data(r->conn->sess, r->stream_id);
    if (!r->conn->in_io)
      h2t__conn_mark_dirty(r->conn);
  }
  return 0;
}

uint64_t h2t_request_id(const h2t_request *r) { return r ? r->id : 0; }
void *h2t_request_user(const h2t_request *r) { return r ? r->user : NULL; }
int h2t_request_status(const h2t_request *r) { return r ? r->status : 0; }
h2t_client *h2t_request_client(const h2t_request *r) {
  return r ? r->client : NULL;
}

/* --- fetch ------------------------------------------------------------- */

typedef struct fetch_state {
  h2t_client *c;
  h2t_response *resp;
  size_t cap;
  int done, error, oom;
} fetch_state;

static int fetch_headers(h2t_request *r, int status, const h2t_header *h,
                         size_t n, void *user) {
  fetch_state *st = user;
  const h2t_mem *m = st->c->mem;
  st->resp->status = status;
  st->resp->headers = h2t_xcalloc(m, n ? n : 1, sizeof(h2t_header));
  if (!st->resp->headers) {
    st->oom = 1;
    return 1;
  }
  for (size_t i = 0; i < n; i++) {
    char *nm = h2t_xstrdup(m, h[i].name), *v = h2t_xstrdup(m, h[i].value);
    if (!nm || !v) {
      h2t_xfree(m, nm);
      h2t_xfree(m, v);
      st->oom = 1;
      return 1;
    }
    st->resp->headers[i].name = nm;
    st->resp->headers[i].value = v;
    st->resp->nheaders = i + 1;
  }
  return 0;
}

static int fetch_data(h2t_request *r, const uint8_t *d, size_t len,
                      void *user) {
  fetch_state *st = user;
  h2t_response *resp = st->resp;
  if (resp->body_len + len + 1 > st->cap) {
    size_t cap = st->cap ? st->cap : 1024;
    while (cap < resp->body_len + len + 1)
      cap *= 2;
    uint8_t *p = h2t_xrealloc(st->c->mem, resp->body, cap);
    if (!p) {
      st->oom = 1;
      return 1;
    }
    resp->body = p;
    st->cap = cap;
  }
  memcpy(resp->body + resp->body_len, d, len);
  resp->body_len += len;
  resp->body[resp->body_len] = '\0';
  return 0;
}

static void fetch_done(h2t_request *r, int error, void *user) {
  fetch_state *st = user;
  st->done = 1;
  st->error = st->oom ? H2T_ERR_NOMEM : error;
}

int h2t_client_fetch(h2t_client *c, const h2t_request_opts *opts,
                     h2t_response *resp) {
  if (!c || !opts || !resp || opts->struct_size < offsetof(h2t_request_opts, method))
    return H2T_ERR_INVALID_ARG;
  memset(resp, 0, sizeof *resp);
  if (c->running)
    return H2T_ERR_STATE;
  h2t_request_opts o;
  memset(&o, 0, sizeof o);
  memcpy(&o, opts,
         opts->struct_size < sizeof o ? opts->struct_size : sizeof o);
  o.struct_size = sizeof o;
  fetch_state st = {.c = c, .resp = resp};
  o.on_headers = fetch_headers;
  o.on_data = fetch_data;
  o.on_done = fetch_done;
  o.user = &st;
  int rv = h2t_request_submit(c, &o, NULL);
  if (rv)
    return rv;
  c->running = 1;
  while (!st.done)
    ev_run(c->loop, EVRUN_ONCE);
  c->running = 0;
  if (st.error) {
    h2t_response_free(c, resp);
    return st.error;
  }
  if (!resp->body) { /* NUL-terminated even when empty */
    resp->body = h2t_xcalloc(c->mem, 1, 1);
    if (!resp->body) {
      h2t_response_free(c, resp);
      return H2T_ERR_NOMEM;
    }
  }
  return 0;
}

void h2t_response_free(h2t_client *c, h2t_response *resp) {
  if (!resp)
    return;
  const h2t_mem *m = c ? c->mem : NULL;
  for (size_t i = 0; i < resp->nheaders; i++) {
    h2t_xfree(m, (void *)resp->headers[i].name);
    h2t_xfree(m, (void *)resp->headers[i].value);
  }
  h2t_xfree(m, resp->headers);
  h2t_xfree(m, resp->body);
  memset(resp, 0, sizeof *resp);
}
