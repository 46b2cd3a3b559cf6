/*
 * The server: listeners, routes, shutdown, stats.  Connections and requests
 * are in server_conn.c, the writer in writer.c.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "h2/server/server_int.h"

const char *h2t_writer_mode_name(h2t_writer_mode m) {
  switch (m) {
  case H2T_WRITER_REUSED:
    return "reused";
  case H2T_WRITER_SPAWN:
    return "spawn";
  case H2T_WRITER_INLINE:
    return "inline";
  }
  return NULL;
}

int h2t_writer_mode_parse(const char *name, h2t_writer_mode *out) {
  if (!name || !out)
    return H2T_ERR_INVALID_ARG;
  for (int m = H2T_WRITER_REUSED; m <= H2T_WRITER_INLINE; m++)
    if (!strcmp(name, h2t_writer_mode_name((h2t_writer_mode)m))) {
      *out = (h2t_writer_mode)m;
      return 0;
    }
  return H2T_ERR_INVALID_ARG;
}

static void prepare_cb(struct ev_loop *loop, ev_prepare *w, int revents) {
  h2t__srv_flush_pending(w->data);
}

static void async_cb(struct ev_loop *loop, ev_async *a, int revents) {
  h2t_server *s = a->data;
  uint64_t ids[64];
  for (;;) {
    pthread_mutex_lock(&s->mu);
    size_t n = s->ncancel < 64 ? s->ncancel : 64;
    if (n)
      memcpy(ids, s->cancel_ids + s->ncancel - n, n * sizeof *ids);
    s->ncancel -= n;
    int shut = s->async_shutdown;
    s->async_shutdown = 0;
    pthread_mutex_unlock(&s->mu);
    for (size_t i = 0; i < n; i++)
      h2t__srv_req_cancel(s, ids[i]);
    if (shut)
      h2t_server_shutdown(s);
    if (n < 64)
      break;
  }
}

void h2t__srv_cancel_post(void *arg, uint64_t req_id, const char *why) {
  h2t_server *s = arg;
  pthread_mutex_lock(&s->mu);
  if (s->ncancel == s->cancel_cap) {
    size_t cap = s->cancel_cap ? s->cancel_cap * 2 : 16;
    uint64_t *a = h2t_xrealloc(s->mem, s->cancel_ids, cap * sizeof *a);
    if (!a) {
      pthread_mutex_unlock(&s->mu);
      return;
    }
    s->cancel_ids = a;
    s->cancel_cap = cap;
  }
  s->cancel_ids[s->ncancel++] = req_id;
  pthread_mutex_unlock(&s->mu);
  ev_async_send(s->loop, &s->async);
}

static void shutdown_timeout_cb(struct ev_loop *loop, ev_timer *t,
                                int revents) {
  h2t_server *s = t->data;
  while (s->conns)
    h2t__srv_conn_abort(s->conns);
  h2t__srv_maybe_done(s);
}

/* inflight: GET /metrics (diag thread) reads it; h2t__writer_depth is atomic */
static uint32_t writer_depth_cb(const void *w) { return h2t__writer_depth(w); }

int h2t_server_new(h2t_server **out, const h2t_server_config *cfg) {
  h2t_server_config def = H2T_SERVER_CONFIG_INIT;
  if (!out)
    return H2T_ERR_INVALID_ARG;
  *out = NULL;
  if (cfg) {
    if (cfg->struct_size < offsetof(h2t_server_config, writer) ||
        cfg->struct_size > sizeof def)
      return H2T_ERR_INVALID_ARG;
    memcpy(&def, cfg, cfg->struct_size);
    def.struct_size = sizeof def;
  }
  if ((unsigned)def.writer > H2T_WRITER_INLINE ||
      (def.shed_action && def.shed_action != H2T_SHED_REFUSED_STREAM &&
       def.shed_action != H2T_SHED_503))
    return H2T_ERR_INVALID_ARG;
  if (!def.max_concurrent_streams)
    def.max_concurrent_streams = 100;
  if (!def.max_header_list_size)
    def.max_header_list_size = 64 * 1024;
  if (!def.shed_action)
    def.shed_action = H2T_SHED_REFUSED_STREAM;
  if (!def.idle_timeout_ms)
    def.idle_timeout_ms = 120000;
  if (!def.handshake_timeout_ms)
    def.handshake_timeout_ms = 10000;
  if (!def.shutdown_timeout_ms)
    def.shutdown_timeout_ms = 10000;
  if (!def.initial_window_size)
    def.initial_window_size = 1 << 20;
  if (def.initial_window_size > 0x7fffffff)
    return H2T_ERR_INVALID_ARG;
  if (!def.write_queue_limit)
    def.write_queue_limit = 512 * 1024;

  h2t_server *s = h2t_xcalloc(def.mem, 1, sizeof *s);
  if (!s)
    return H2T_ERR_NOMEM;
  s->mem = def.mem;
  s->cfg = def;
  s->loop = def.loop;
  if (!s->loop) {
    s->loop = ev_loop_new(EVFLAG_AUTO);
    if (!s->loop) {
      h2t_xfree(def.mem, s);
      return H2T_ERR_SYSTEM;
    }
    s->own_loop = 1;
  }
  h2t__trace_chain_clear(&s->tc, 1);
  h2t__trace_chain_add(&s->tc, def.trace);
  pthread_mutex_init(&s->mu, NULL);
  int rc = h2t__writer_new(&s->writer, def.writer, s->loop, s->mem);
  if (rc != 0) {
    pthread_mutex_destroy(&s->mu);
    if (s->own_loop)
      ev_loop_destroy(s->loop);
    h2t_xfree(def.mem, s);
    return rc;
  }
  /* inflight: /metrics reads the queue depth when scraped (no-op cost) */
  h2t__metrics_writer_register(writer_depth_cb, s->writer);
  ev_prepare_init(&s->prepare, prepare_cb);
  s->prepare.data = s;
  ev_prepare_start(s->loop, &s->prepare);
  ev_unref(s->loop);
  ev_async_init(&s->async, async_cb);
  s->async.data = s;
  ev_async_start(s->loop, &s->async);
  ev_unref(s->loop);
  ev_timer_init(&s->shutdown_timer, shutdown_timeout_cb,
                s->cfg.shutdown_timeout_ms / 1000.0, 0.);
  s->shutdown_timer.data = s;
  *out = s;
  return 0;
}

static void listeners_close(h2t_server *s) {
  for (int i = 0; i < s->nlisteners; i++) {
    srv_listener *l = &s->listeners[i];
    if (l->fd >= 0) {
      ev_io_stop(s->loop, &l->io);
      ev_timer_stop(s->loop, &l->backoff);
      close(l->fd);
      l->fd = -1;
    }
  }
}

void h2t_server_del(h2t_server *s) {
  if (!s)
    return;
  listeners_close(s);
  while (s->conns)
    h2t__srv_conn_abort(s->conns);
  ev_timer_stop(s->loop, &s->shutdown_timer);
  h2t__metrics_writer_unregister(s->writer); /* inflight */
  h2t__writer_del(s->writer);
  ev_ref(s->loop);
  ev_prepare_stop(s->loop, &s->prepare);
  ev_ref(s->loop);
  ev_async_stop(s->loop, &s->async);
  for (int i = 0; i < s->nlisteners; i++)
    if (s->listeners[i].ssl_ctx)
      SSL_CTX_free(s->listeners[i].ssl_ctx);
  for (size_t i = 0; i < s->nroutes; i++)
    h2t_xfree(s->mem, s->routes[i].prefix);
  h2t_xfree(s->mem, s->routes);
  h2t_xfree(s->mem, s->cancel_ids);
  pthread_mutex_destroy(&s->mu);
  if (s->own_loop)
    ev_loop_destroy(s->loop);
  h2t_xfree(s->mem, s);
}

struct ev_loop *h2t_server_loop(h2t_server *s) { return s ? s->loop : NULL; }

static void accept_resume(struct ev_loop *loop, ev_timer *t, int revents) {
  srv_listener *l = t->data;
  if (l->fd >= 0)
    ev_io_start(loop, &l->io);
}

static void accept_cb(struct ev_loop *loop, ev_io *io, int revents) {
  srv_listener *l = io->data;
  for (int i = 0; i < 32; i++) {
    int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      h2t__srv_conn_accept(l->s, l, fd);
      continue;
    }
    if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
        errno == ENOMEM) {
      /* The pending connection stays readable: without a pause this
       * would spin.  Try again in a moment. */
      ev_io_stop(loop, io);
      ev_timer_set(&l->backoff, 0.1, 0.); /* an expired timer keeps ~0 */
      ev_timer_start(loop, &l->backoff);
    }
    return;
  }
}

int h2t_server_listen(h2t_server *s, const h2t_listen_opts *o) {
  if (!s || !o || o->struct_size < sizeof(size_t) ||
      o->struct_size > sizeof(h2t_listen_opts))
    return H2T_ERR_INVALID_ARG;
  h2t_listen_opts lo = {H2T_LISTEN_OPTS_INIT};
  memcpy(&lo, o, o->struct_size);
  if ((lo.cert_file == NULL) != (lo.key_file == NULL))
    return H2T_ERR_INVALID_ARG;
  if (s->shutting)
    return H2T_ERR_STATE;
  if (s->nlisteners >= SRV_MAX_LISTENERS)
    return H2T_ERR_LIMIT;
  const char *addr = lo.address ? lo.address : "127.0.0.1";
  struct sockaddr_storage ss;
  socklen_t sl;
  memset(&ss, 0, sizeof ss);
  struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
  if (inet_pton(AF_INET, addr, &sin->sin_addr) == 1) {
    sin->sin_family = AF_INET;
    sin->sin_port = htons(lo.port);
    sl = sizeof *sin;
  } else if (inet_pton(AF_INET6, addr, &sin6->sin6_addr) == 1) {
    sin6->sin6_family = AF_INET6;
    sin6->sin6_port = htons(lo.port);
    sl = sizeof *sin6;
  } else {
    return H2T_ERR_INVALID_ARG;
  }
  SSL_CTX *ctx = NULL;
  if (lo.cert_file) {
    ctx = h2t__srv_tls_ctx_new(lo.cert_file, lo.key_file);
    if (!ctx)
      return H2T_ERR_TLS;
  }
  int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd < 0)
    goto fail;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (ss.ss_family == AF_INET6)
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (bind(fd, (struct sockaddr *)&ss, sl) != 0 ||
      listen(fd, lo.backlog > 0 ? lo.backlog : 511) != 0)
    goto fail;
  sl = sizeof ss;
  if (getsockname(fd, (struct sockaddr *)&ss, &sl) != 0)
    goto fail;
  int idx = s->nlisteners++;
  srv_listener *l = &s->listeners[idx];
  l->s = s;
  l->fd = fd;
  l->port = ntohs(ss.ss_family == AF_INET ? sin->sin_port : sin6->sin6_port);
  l->ssl_ctx = ctx;
  ev_io_init(&l->io, accept_cb, fd, EV_READ);
  l->io.data = l;
  ev_timer_init(&l->backoff, accept_resume, 0.1, 0.);
  l->backoff.data = l;
  ev_io_start(s->loop, &l->io);
  return idx;
fail:
  if (fd >= 0)
    close(fd);
  if (ctx)
    SSL_CTX_free(ctx);
  return H2T_ERR_BIND;
}

int h2t_server_port(const h2t_server *s, int index) {
  if (!s || index < 0 || index >= s->nlisteners)
    return H2T_ERR_INVALID_ARG;
  return s->listeners[index].port;
}

int h2t_server_handle(h2t_server *s, const char *prefix, h2t_handler_fn fn,
                      void *user) {
  if (!s || !prefix || prefix[0] != '/' || !fn)
    return H2T_ERR_INVALID_ARG;
  for (size_t i = 0; i < s->nroutes; i++)
    if (!strcmp(s->routes[i].prefix, prefix)) {
      s->routes[i].fn = fn;
      s->routes[i].user = user;
      return 0;
    }
  srv_route *r =
      h2t_xrealloc(s->mem, s->routes, (s->nroutes + 1) * sizeof *r);
  if (!r)
    return H2T_ERR_NOMEM;
  s->routes = r;
  char *p = h2t_xstrdup(s->mem, prefix);
  if (!p)
    return H2T_ERR_NOMEM;
  s->routes[s->nroutes++] =
      (srv_route){.prefix = p, .len = strlen(p), .fn = fn, .user = user};
  return 0;
}

int h2t_server_run(h2t_server *s) {
  if (!s || s->running)
    return H2T_ERR_STATE;
  s->running = 1;
  while (!s->done) {
    if (!ev_run(s->loop, 0))
      break; /* nothing left to watch */
  }
  s->running = 0;
  return 0;
}

void h2t__srv_maybe_done(h2t_server *s) {
  if (!s->shutting || s->conns || s->done)
    return;
  s->done = 1;
  ev_timer_stop(s->loop, &s->shutdown_timer);
  if (s->running)
    ev_break(s->loop, EVBREAK_ONE);
}

int h2t_server_shutdown(h2t_server *s) {
  if (!s)
    return H2T_ERR_INVALID_ARG;
  if (s->shutting)
    return 0;
  s->shutting = 1;
  listeners_close(s);
  ev_timer_start(s->loop, &s->shutdown_timer);
  h2t__srv_conn_goaway_all(s);
  h2t__srv_maybe_done(s);
  return 0;
}

void h2t_server_shutdown_async(h2t_server *s) {
  if (!s)
    return;
  pthread_mutex_lock(&s->mu);
  s->async_shutdown = 1;
  pthread_mutex_unlock(&s->mu);
  ev_async_send(s->loop, &s->async);
}

void h2t_server_stats_get(const h2t_server *s, h2t_server_stats *out) {
  if (!s || !out)
    return;
  *out = s->st;
  out->writer_queue_depth = h2t__writer_depth(s->writer);
  out->writer_queue_max = h2t__writer_depth_max(s->writer);
}

uint32_t h2t_server_writer_depth(const h2t_server *s) {
  return s ? h2t__writer_depth(s->writer) : 0;
}
