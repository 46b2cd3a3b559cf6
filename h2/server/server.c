/*
 * The server: the top of the stack in server_int.h.  Its life, listeners,
 * routes, shutdown and stats, and the post queue that brings cancels and
 * shutdown_async from other threads onto the loop.
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

#include "h2/common/post.h"
#include "h2/server/server_int.h"

/* Posted flags (h2t__postq_flags). */
#define POST_SHUTDOWN 1u

typedef struct srv_listener {
  h2t_server *s;
  int fd;
  int port;
  SSL_CTX *ssl_ctx; /* NULL: h2c */
  ev_io io;
  ev_timer backoff; /* out of fds: pause accepting for a moment */
} srv_listener;

#define SRV_MAX_LISTENERS 8

struct h2t_server {
  srv_ctx x; /* what the layers below share */
  int own_loop;
  srv_listener listeners[SRV_MAX_LISTENERS];
  int nlisteners;
  ev_prepare prepare; /* flushes once per loop iteration */
  h2t__postq post;    /* cancels and shutdown_async from other threads */
  ev_timer shutdown_timer;
  ev_timer done_timer; /* reports the end of a shutdown from the loop's top */
  int shutting, done, running;
  int reported; /* done_cb ran: on_shutdown_done was called */
};

static void maybe_done(h2t_server *s);

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
  h2t_server *s = w->data;
  h2t__srv_io_flush_pending(&s->x);
}

static void post_id_cb(void *arg, uint64_t req_id) {
  h2t_server *s = arg;
  h2t__srv_req_cancel(&s->x, req_id);
}

static void post_flags_cb(void *arg, unsigned flags) {
  if (flags & POST_SHUTDOWN)
    h2t_server_shutdown(arg);
}

void h2t__srv_cancel_post(void *arg, uint64_t req_id, const char *why) {
  h2t_server *s = arg;
  h2t__postq_id(&s->post, req_id); /* out of memory: the cancel is lost */
}

static void conn_gone_cb(void *arg) { maybe_done(arg); }

/* A timer, not a call from maybe_done(): maybe_done runs inside
 * h2t_server_shutdown() and inside a connection's teardown, where the
 * application's callback must not run. */
static void done_cb(struct ev_loop *loop, ev_timer *t, int revents) {
  h2t_server *s = t->data;
  s->reported = 1;
  if (s->x.cfg.on_shutdown_done)
    s->x.cfg.on_shutdown_done(s, s->x.cfg.shutdown_user);
  if (s->running)
    ev_break(loop, EVBREAK_ONE);
}

static void shutdown_timeout_cb(struct ev_loop *loop, ev_timer *t,
                                int revents) {
  h2t_server *s = t->data;
  h2t__srv_conn_abort_all(&s->x);
  maybe_done(s);
}

/* inflight: GET /metrics (diag thread) reads it; h2t__writer_depth is atomic */
static uint32_t writer_depth_cb(const void *w) { return h2t__writer_depth(w); }

int h2t_server_new(h2t_server **out, const h2t_server_config *cfg) {
  h2t_server_config def = {H2T_SERVER_CONFIG_INIT};
  if (!out)
    return H2T_ERR_INVALID_ARG;
  *out = NULL;
  if ((cfg && h2t__struct_in(&def, sizeof def, cfg, H2T__SERVER_CONFIG_V1)) ||
      h2t__trace_ok(def.trace, 1))
    return H2T_ERR_INVALID_ARG;
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
  /* Bounds on by default (doc/guide.md, "Limits", says why these). */
  if (!def.header_timeout_ms)
    def.header_timeout_ms = 30000;
  if (!def.body_timeout_ms)
    def.body_timeout_ms = 60000;
  if (!def.stream_idle_timeout_ms)
    def.stream_idle_timeout_ms = 60000;
  if (!def.body_conn_budget)
    def.body_conn_budget = 16u << 20;
  if (!def.body_server_budget)
    def.body_server_budget = 256u << 20;
  if (def.body_conn_budget < 65535 || def.body_conn_budget > 0x7fffffff)
    return H2T_ERR_INVALID_ARG;

  h2t_server *s = h2t_xcalloc(def.mem, 1, sizeof *s);
  if (!s)
    return H2T_ERR_NOMEM;
  srv_ctx *x = &s->x;
  x->mem = def.mem;
  x->cfg = def;
  x->server = s;
  x->loop = def.loop;
  if (!x->loop) {
    x->loop = ev_loop_new(EVFLAG_AUTO);
    if (!x->loop) {
      h2t_xfree(def.mem, s);
      return H2T_ERR_SYSTEM;
    }
    s->own_loop = 1;
  }
  h2t__trace_chain_clear(&x->tc, 1);
  h2t__trace_chain_add(&x->tc, def.trace);
  /* A closing connection's last bytes get as long as any response would
   * to a peer that does not read. */
  uint64_t drain_us = def.stream_idle_timeout_ms == H2T_SERVER_UNLIMITED
                          ? UINT64_MAX
                          : def.stream_idle_timeout_ms * 1000ull;
  int rc = h2t__writer_new(&x->writer, def.writer, x->loop, x->mem, drain_us);
  if (rc != 0) {
    if (s->own_loop)
      ev_loop_destroy(x->loop);
    h2t_xfree(def.mem, s);
    return rc;
  }
  /* inflight: /metrics reads the queue depth when scraped (no-op cost) */
  h2t__metrics_writer_register(writer_depth_cb, x->writer);
  srv_req_callbacks up = {.cancel_post = h2t__srv_cancel_post,
                          .conn_gone = conn_gone_cb,
                          .arg = s};
  h2t__srv_req_layer_init(x, &up);
  ev_prepare_init(&s->prepare, prepare_cb);
  s->prepare.data = s;
  ev_prepare_start(x->loop, &s->prepare);
  ev_unref(x->loop);
  h2t__postq_init(&s->post, x->loop, x->mem, post_id_cb, post_flags_cb, s);
  ev_timer_init(&s->shutdown_timer, shutdown_timeout_cb,
                x->cfg.shutdown_timeout_ms / 1000.0, 0.);
  s->shutdown_timer.data = s;
  ev_timer_init(&s->done_timer, done_cb, 0., 0.);
  s->done_timer.data = s;
  *out = s;
  return 0;
}

static void listeners_close(h2t_server *s) {
  for (int i = 0; i < s->nlisteners; i++) {
    srv_listener *l = &s->listeners[i];
    if (l->fd >= 0) {
      ev_io_stop(s->x.loop, &l->io);
      ev_timer_stop(s->x.loop, &l->backoff);
      close(l->fd);
      l->fd = -1;
    }
  }
}

void h2t_server_del(h2t_server *s) {
  if (!s)
    return;
  srv_ctx *x = &s->x;
  listeners_close(s);
  h2t__srv_conn_abort_all(x);
  ev_timer_stop(x->loop, &s->shutdown_timer);
  ev_timer_stop(x->loop, &s->done_timer);
  h2t__metrics_writer_unregister(x->writer); /* inflight */
  h2t__writer_del(x->writer);
  ev_ref(x->loop);
  ev_prepare_stop(x->loop, &s->prepare);
  h2t__postq_fini(&s->post);
  for (int i = 0; i < s->nlisteners; i++)
    if (s->listeners[i].ssl_ctx)
      SSL_CTX_free(s->listeners[i].ssl_ctx);
  for (size_t i = 0; i < x->nroutes; i++)
    h2t_xfree(x->mem, x->routes[i].prefix);
  h2t_xfree(x->mem, x->routes);
  if (s->own_loop)
    ev_loop_destroy(x->loop);
  h2t_xfree(x->mem, s);
}

struct ev_loop *h2t_server_loop(h2t_server *s) { return s ? s->x.loop : NULL; }

static void accept_resume(struct ev_loop *loop, ev_timer *t, int revents) {
  srv_listener *l = t->data;
  if (l->fd >= 0)
    ev_io_start(loop, &l->io);
}

/* Server policy on a new socket, then a connection (session.c) on it. */
static void conn_accept(srv_listener *l, int fd) {
  h2t_server *s = l->s;
  srv_ctx *x = &s->x;
  if (s->shutting) {
    close(fd);
    return;
  }
  if (x->cfg.max_conns && x->st.conns_open >= x->cfg.max_conns &&
      !h2t__srv_conn_evict(x)) {
    x->st.shed_conns++;
    { /* inflight: /metrics */
      h2t_event m = {.type = H2T_EV_SRV_LOAD_SHED};
      m.u.load_shed.reason = H2T_SHED_CONNECTIONS;
      m.u.load_shed.action = H2T_SHED_CLOSE;
      h2t__metrics_event(&m);
    }
    if (TRACE_WANTS(&x->tc, H2T_EV_SRV_LOAD_SHED)) {
      h2t_event ev = {.type = H2T_EV_SRV_LOAD_SHED};
      ev.u.load_shed.reason = H2T_SHED_CONNECTIONS;
      ev.u.load_shed.action = H2T_SHED_CLOSE;
      trace_emit(&x->tc, &ev);
    }
    close(fd);
    return;
  }
  h2t__srv_conn_accept(x, l->ssl_ctx, fd);
}

void h2t__srv_adopt(h2t_server *s, int fd) {
  srv_listener l = {.s = s, .fd = -1};
  conn_accept(&l, fd); /* l is not kept: only l->s and l->ssl_ctx are read */
}

static void accept_cb(struct ev_loop *loop, ev_io *io, int revents) {
  srv_listener *l = io->data;
  for (int i = 0; i < 32; i++) {
    int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      conn_accept(l, fd);
      continue;
    }
    if (errno == EINTR || errno == ECONNABORTED)
      continue;
    if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
        errno == ENOMEM) {
      /* The pending connection stays readable: without a pause this
       * would spin.  Close a connection that holds no request to make
       * room (its descriptor comes back within a loop iteration or
       * two), and try again in a moment. */
      int evicted = h2t__srv_conn_evict(&l->s->x);
      ev_io_stop(loop, io);
      ev_timer_set(&l->backoff, evicted ? 0.01 : 0.1, 0.);
      ev_timer_start(loop, &l->backoff);
    }
    return;
  }
}

int h2t_server_listen(h2t_server *s, const h2t_listen_opts *o) {
  h2t_listen_opts lo;
  if (!s || h2t__struct_in(&lo, sizeof lo, o, H2T__LISTEN_OPTS_V1) != 0)
    return H2T_ERR_INVALID_ARG;
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
  ev_io_start(s->x.loop, &l->io);
  return idx;
fail:
  if (fd >= 0)
    close(fd);
  if (ctx)
    SSL_CTX_free(ctx);
  return H2T_ERR_BIND;
}

uint16_t h2t_server_port(const h2t_server *s, int index) {
  if (!s || index < 0 || index >= s->nlisteners)
    return 0;
  return s->listeners[index].port;
}

int h2t_server_handle(h2t_server *s, const char *prefix, h2t_handler_fn fn,
                      void *user) {
  if (!s || !prefix || prefix[0] != '/' || !fn)
    return H2T_ERR_INVALID_ARG;
  srv_ctx *x = &s->x;
  for (size_t i = 0; i < x->nroutes; i++)
    if (!strcmp(x->routes[i].prefix, prefix)) {
      x->routes[i].fn = fn;
      x->routes[i].user = user;
      return 0;
    }
  srv_route *r =
      h2t_xrealloc(x->mem, x->routes, (x->nroutes + 1) * sizeof *r);
  if (!r)
    return H2T_ERR_NOMEM;
  x->routes = r;
  char *p = h2t_xstrdup(x->mem, prefix);
  if (!p)
    return H2T_ERR_NOMEM;
  x->routes[x->nroutes++] =
      (srv_route){.prefix = p, .len = strlen(p), .fn = fn, .user = user};
  return 0;
}

int h2t_server_run(h2t_server *s) {
  if (!s)
    return H2T_ERR_INVALID_ARG;
  if (s->running)
    return H2T_ERR_STATE;
  s->running = 1;
  while (!s->reported) { /* until done_cb, which reports and breaks */
    if (!ev_run(s->x.loop, 0))
      break; /* nothing left to watch */
  }
  s->running = 0;
  return 0;
}

/* When the last connection of a shutting-down server is gone. */
static void maybe_done(h2t_server *s) {
  if (!s->shutting || s->x.conns || s->done)
    return;
  s->done = 1;
  ev_timer_stop(s->x.loop, &s->shutdown_timer);
  ev_timer_start(s->x.loop, &s->done_timer); /* done_cb: report, break */
}

int h2t_server_shutdown(h2t_server *s) {
  if (!s)
    return H2T_ERR_INVALID_ARG;
  if (s->shutting)
    return 0;
  s->shutting = 1;
  listeners_close(s);
  ev_timer_start(s->x.loop, &s->shutdown_timer);
  h2t__srv_conn_goaway_all(&s->x);
  maybe_done(s);
  return 0;
}

void h2t_server_shutdown_async(h2t_server *s) {
  if (!s)
    return;
  h2t__postq_flags(&s->post, POST_SHUTDOWN);
}

void h2t_server_stats_get(const h2t_server *s, h2t_server_stats *out) {
  if (!s || !out)
    return;
  *out = s->x.st;
  out->writer_queue_depth = h2t__writer_depth(s->x.writer);
  out->writer_queue_max = h2t__writer_depth_max(s->x.writer);
}

uint32_t h2t_server_writer_depth(const h2t_server *s) {
  return s ? h2t__writer_depth(s->x.writer) : 0;
}
