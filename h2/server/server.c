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
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "h2/common/post.h"
#include "h2/server/server_int.h"

/* Posted flags (h2t__postq_flags). */
#define POST_SHUTDOWN 1u /* worker 0: h2t_server_shutdown; others: drain */
#define POST_LISTEN 2u   /* start the listeners not yet started */
#define POST_ALLDONE 4u  /* to worker 0: the last worker finished */
#define POST_EXIT 8u     /* a worker thread: leave its loop */

typedef struct srv_worker srv_worker;

typedef struct srv_listener {
  srv_worker *w;
  int fd;
  SSL_CTX *ssl_ctx; /* NULL: h2c; owned by worker 0's listener */
  int started;      /* its ev_io was started (on the worker's loop) */
  ev_io io;
  ev_timer backoff; /* out of fds: pause accepting for a moment */
} srv_listener;

#define SRV_MAX_LISTENERS 8
#define SRV_MAX_THREADS 256

/* One loop, with its connections, listeners (one socket per address, all
 * bound with SO_REUSEPORT when there are several workers), writer and post
 * queue.  Worker 0 runs on the caller's loop (or the server's own, run by
 * h2t_server_run); workers 1..N-1 on their own threads. */
struct srv_worker {
  srv_ctx x; /* what the layers below share */
  h2t_server *s;
  int index;
  srv_listener listeners[SRV_MAX_LISTENERS];
  _Atomic int nlisteners; /* entries filled by the caller (release) */
  ev_prepare prepare;     /* flushes once per loop iteration */
  h2t__postq post;        /* cancels, listen, shutdown, exit */
  ev_timer shutdown_timer;
  int shutting, done;     /* this worker's drain */
  int own_loop;
  /* workers 1..N-1 */
  pthread_t thread;
  int thread_started;
  _Atomic int exiting;
  pthread_mutex_t st_mu;  /* st_snap: read by h2t_server_stats_get */
  h2t_server_stats st_snap;
};

struct h2t_server {
  srv_worker *w; /* nworkers; w[0] is on h2t_server_loop() */
  int nworkers;
  int nlisteners; /* caller's thread */
  uint16_t ports[SRV_MAX_LISTENERS];
  srv_route *routes; /* shared by every worker's srv_ctx */
  size_t nroutes;
  ev_timer done_timer; /* on w[0]: reports the end of a shutdown */
  _Atomic int workers_left; /* workers whose drain is not over */
  int shutting, running, loop_held;
  int reported; /* done_cb ran: on_shutdown_done was called */
};

static void maybe_done(srv_worker *w);

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

static void stats_publish(srv_worker *w) {
  pthread_mutex_lock(&w->st_mu);
  w->st_snap = w->x.st;
  pthread_mutex_unlock(&w->st_mu);
}

static void prepare_cb(struct ev_loop *loop, ev_prepare *p, int revents) {
  srv_worker *w = p->data;
  h2t__srv_io_flush_pending(&w->x);
  /* Other workers' counters are read from worker 0's thread: publish them
   * once per iteration (a copy under an uncontended lock). */
  if (w->index > 0)
    stats_publish(w);
}

static void post_id_cb(void *arg, uint64_t req_id) {
  srv_worker *w = arg;
  h2t__srv_req_cancel(&w->x, req_id);
}

static void accept_cb(struct ev_loop *loop, ev_io *io, int revents);
static void listeners_close(srv_worker *w);
static void worker_shutdown(srv_worker *w);

/* On w's loop: start the listeners the caller has filled in since. */
static void listeners_start(srv_worker *w) {
  int n = atomic_load_explicit(&w->nlisteners, memory_order_acquire);
  for (int i = 0; i < n; i++) {
    srv_listener *l = &w->listeners[i];
    if (!l->started && l->fd >= 0 && !w->shutting) {
      l->started = 1;
      ev_io_start(w->x.loop, &l->io);
    }
  }
}

static void post_flags_cb(void *arg, unsigned flags) {
  srv_worker *w = arg;
  h2t_server *s = w->s;
  if (flags & POST_LISTEN)
    listeners_start(w);
  if (flags & POST_SHUTDOWN) {
    if (w->index == 0)
      h2t_server_shutdown(s);
    else
      worker_shutdown(w);
  }
  if ((flags & POST_ALLDONE) && w->index == 0)
    ev_timer_start(w->x.loop, &s->done_timer);
  if (flags & POST_EXIT) {
    atomic_store(&w->exiting, 1);
    ev_break(w->x.loop, EVBREAK_ALL);
  }
}

/* The in-flight table's cancel: to the loop that owns the request. */
static void worker_cancel_post(void *arg, uint64_t req_id, const char *why) {
  srv_worker *w = arg;
  h2t__postq_id(&w->post, req_id); /* out of memory: the cancel is lost */
}

void h2t__srv_cancel_post(void *arg, uint64_t req_id, const char *why) {
  h2t_server *s = arg; /* which worker holds it is not known here: all */
  for (int i = 0; i < s->nworkers; i++)
    worker_cancel_post(&s->w[i], req_id, why);
}

static void conn_gone_cb(void *arg) { maybe_done(arg); }

/* A timer, not a call from maybe_done(): maybe_done runs inside
 * h2t_server_shutdown() and inside a connection's teardown, where the
 * application's callback must not run. */
static void done_cb(struct ev_loop *loop, ev_timer *t, int revents) {
  h2t_server *s = t->data;
  s->reported = 1;
  if (s->loop_held) { /* held while other workers drained */
    s->loop_held = 0;
    ev_unref(loop);
  }
  if (s->w[0].x.cfg.on_shutdown_done)
    s->w[0].x.cfg.on_shutdown_done(s, s->w[0].x.cfg.shutdown_user);
  if (s->running)
    ev_break(loop, EVBREAK_ONE);
}

static void shutdown_timeout_cb(struct ev_loop *loop, ev_timer *t,
                                int revents) {
  srv_worker *w = t->data;
  h2t__srv_conn_abort_all(&w->x);
  maybe_done(w);
}

/* inflight: GET /metrics (diag thread) reads it; h2t__writer_depth is atomic */
static uint32_t writer_depth_cb(const void *w) { return h2t__writer_depth(w); }

/* Set up worker w on loop (NULL: a new one).  0 or an H2T_ERR_ code, with
 * nothing left to undo. */
static int worker_init(h2t_server *s, srv_worker *w, int index,
                       const h2t_server_config *def, struct ev_loop *loop) {
  srv_ctx *x = &w->x;
  w->s = s;
  w->index = index;
  x->mem = def->mem;
  x->cfg = *def;
  x->server = s;
  x->loop = loop;
  if (!x->loop) {
    x->loop = ev_loop_new(EVFLAG_AUTO);
    if (!x->loop)
      return H2T_ERR_SYSTEM;
    w->own_loop = 1;
  }
  h2t__trace_chain_clear(&x->tc, 1);
  h2t__trace_chain_add(&x->tc, def->trace);
  /* A closing connection's last bytes get as long as any response would
   * to a peer that does not read. */
  uint64_t drain_us = def->stream_idle_timeout_ms == H2T_SERVER_UNLIMITED
                          ? UINT64_MAX
                          : def->stream_idle_timeout_ms * 1000ull;
  x->slab = h2t__slab_new(x->mem);
  int rc = x->slab ? h2t__writer_new(&x->writer, def->writer, x->loop, x->mem,
                                     drain_us, def->writer_spin_us)
                   : H2T_ERR_NOMEM;
  if (rc != 0) {
    h2t__slab_del(x->slab);
    if (w->own_loop)
      ev_loop_destroy(x->loop);
    return rc;
  }
  /* inflight: /metrics reads the queue depth when scraped (no-op cost) */
  h2t__metrics_writer_register(writer_depth_cb, x->writer);
  srv_req_callbacks up = {.cancel_post = worker_cancel_post,
                          .conn_gone = conn_gone_cb,
                          .arg = w};
  h2t__srv_req_layer_init(x, &up);
  ev_prepare_init(&w->prepare, prepare_cb);
  w->prepare.data = w;
  ev_prepare_start(x->loop, &w->prepare);
  ev_unref(x->loop);
  h2t__postq_init(&w->post, x->loop, x->mem, post_id_cb, post_flags_cb, w);
  ev_timer_init(&w->shutdown_timer, shutdown_timeout_cb,
                x->cfg.shutdown_timeout_ms / 1000.0, 0.);
  w->shutdown_timer.data = w;
  pthread_mutex_init(&w->st_mu, NULL);
  return 0;
}

/* Undo worker_init, on the thread that last ran w's loop (or with no thread
 * running it).  Open requests get on_close(CANCEL) here. */
static void worker_fini(srv_worker *w) {
  srv_ctx *x = &w->x;
  listeners_close(w);
  h2t__srv_conn_abort_all(x);
  ev_timer_stop(x->loop, &w->shutdown_timer);
  h2t__metrics_writer_unregister(x->writer); /* inflight */
  h2t__writer_del(x->writer);
  ev_ref(x->loop);
  ev_prepare_stop(x->loop, &w->prepare);
  h2t__postq_fini(&w->post);
  pthread_mutex_destroy(&w->st_mu);
  h2t__slab_del(x->slab); /* after the writer gave back the last request */
  if (w->own_loop)
    ev_loop_destroy(x->loop);
}

static void *worker_main(void *arg) {
  srv_worker *w = arg;
  /* The loop lives until POST_EXIT, with or without watchers. */
  ev_ref(w->x.loop);
  while (!atomic_load(&w->exiting))
    ev_run(w->x.loop, 0);
  ev_unref(w->x.loop);
  return NULL;
}

static void server_free(h2t_server *s) {
  const h2t_mem *mem = s->w[0].x.mem;
  for (size_t i = 0; i < s->nroutes; i++)
    h2t_xfree(mem, s->routes[i].prefix);
  h2t_xfree(mem, s->routes);
  h2t_xfree(mem, s->w);
  h2t_xfree(mem, s);
}

/* Stop worker threads 1..n-1 that run, then undo workers 0..n-1. */
static void workers_stop(h2t_server *s, int n) {
  for (int i = 1; i < n; i++)
    if (s->w[i].thread_started) {
      h2t__postq_flags(&s->w[i].post, POST_EXIT);
      pthread_join(s->w[i].thread, NULL);
      s->w[i].thread_started = 0;
    }
  for (int i = 0; i < n; i++)
    worker_fini(&s->w[i]);
}

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
  if (!def.threads)
    def.threads = 1;
  if (def.threads > SRV_MAX_THREADS || def.writer_spin_us > 10000)
    return H2T_ERR_INVALID_ARG;

  h2t_server *s = h2t_xcalloc(def.mem, 1, sizeof *s);
  if (!s)
    return H2T_ERR_NOMEM;
  s->w = h2t_xcalloc(def.mem, def.threads, sizeof *s->w);
  if (!s->w) {
    h2t_xfree(def.mem, s);
    return H2T_ERR_NOMEM;
  }
  s->nworkers = (int)def.threads;
  atomic_init(&s->workers_left, s->nworkers);
  int n = 0, rc = 0;
  for (; n < s->nworkers; n++) {
    rc = worker_init(s, &s->w[n], n, &def, n == 0 ? def.loop : NULL);
    if (rc != 0)
      break;
  }
  ev_timer_init(&s->done_timer, done_cb, 0., 0.);
  s->done_timer.data = s;
  /* Worker threads take no signals: those go to the application's. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  for (int i = 1; rc == 0 && i < n; i++) {
    if (pthread_create(&s->w[i].thread, NULL, worker_main, &s->w[i]) != 0)
      rc = H2T_ERR_SYSTEM;
    else
      s->w[i].thread_started = 1;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    workers_stop(s, n);
    server_free(s);
    return rc;
  }
  *out = s;
  return 0;
}

/* On w's loop (or with no thread running it). */
static void listeners_close(srv_worker *w) {
  int n = atomic_load_explicit(&w->nlisteners, memory_order_acquire);
  for (int i = 0; i < n; i++) {
    srv_listener *l = &w->listeners[i];
    if (l->fd >= 0) {
      if (l->started) {
        ev_io_stop(w->x.loop, &l->io);
        ev_timer_stop(w->x.loop, &l->backoff);
      }
      close(l->fd);
      l->fd = -1;
    }
  }
}

void h2t_server_del(h2t_server *s) {
  if (!s)
    return;
  srv_worker *w0 = &s->w[0];
  ev_timer_stop(w0->x.loop, &s->done_timer);
  if (s->loop_held) {
    s->loop_held = 0;
    ev_unref(w0->x.loop);
  }
  workers_stop(s, s->nworkers);
  for (int i = 0; i < s->nlisteners; i++)
    if (w0->listeners[i].ssl_ctx)
      SSL_CTX_free(w0->listeners[i].ssl_ctx);
  server_free(s);
}

struct ev_loop *h2t_server_loop(h2t_server *s) {
  return s ? s->w[0].x.loop : NULL;
}

static void accept_resume(struct ev_loop *loop, ev_timer *t, int revents) {
  srv_listener *l = t->data;
  if (l->fd >= 0)
    ev_io_start(loop, &l->io);
}

/* Server policy on a new socket, then a connection (session.c) on it.
 * Limits are the worker's: max_conns counts its own connections. */
static void conn_accept(srv_worker *w, SSL_CTX *ssl_ctx, int fd) {
  srv_ctx *x = &w->x;
  if (w->shutting) {
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
  h2t__srv_conn_accept(x, ssl_ctx, fd);
}

void h2t__srv_adopt(h2t_server *s, int fd) {
  conn_accept(&s->w[0], NULL, fd);
}

static void accept_cb(struct ev_loop *loop, ev_io *io, int revents) {
  srv_listener *l = io->data;
  for (int i = 0; i < 32; i++) {
    int fd = accept4(l->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd >= 0) {
      conn_accept(l->w, l->ssl_ctx, fd);
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
      int evicted = h2t__srv_conn_evict(&l->w->x);
      ev_io_stop(loop, io);
      ev_timer_set(&l->backoff, evicted ? 0.01 : 0.1, 0.);
      ev_timer_start(loop, &l->backoff);
    }
    return;
  }
}

/* A listening socket on ss; reuseport for one socket per worker. */
static int listen_socket(struct sockaddr_storage *ss, socklen_t sl,
                         int reuseport, int backlog) {
  int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  int one = 1;
  if (fd < 0)
    return -1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (ss->ss_family == AF_INET6)
    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if ((reuseport &&
       setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) ||
      bind(fd, (struct sockaddr *)ss, sl) != 0 ||
      listen(fd, backlog > 0 ? backlog : 511) != 0) {
    close(fd);
    return -1;
  }
  return fd;
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
  /* One socket per worker, all on the same port: the kernel spreads new
   * connections over them (SO_REUSEPORT).  The first fixes the port when
   * 0 was asked for. */
  int fds[SRV_MAX_THREADS];
  int n = 0, multi = s->nworkers > 1;
  for (; n < s->nworkers; n++) {
    fds[n] = listen_socket(&ss, sl, multi, lo.backlog);
    if (fds[n] < 0)
      break;
    if (n == 0) {
      socklen_t l2 = sizeof ss;
      if (getsockname(fds[0], (struct sockaddr *)&ss, &l2) != 0) {
        close(fds[0]);
        break;
      }
    }
  }
  if (n < s->nworkers) {
    while (n > 0)
      close(fds[--n]);
    if (ctx)
      SSL_CTX_free(ctx);
    return H2T_ERR_BIND;
  }
  int idx = s->nlisteners++;
  s->ports[idx] =
      ntohs(ss.ss_family == AF_INET ? sin->sin_port : sin6->sin6_port);
  for (int i = 0; i < s->nworkers; i++) {
    srv_worker *w = &s->w[i];
    srv_listener *l = &w->listeners[idx];
    l->w = w;
    l->fd = fds[i];
    l->ssl_ctx = ctx; /* shared, read-only once made; freed by del */
    ev_io_init(&l->io, accept_cb, l->fd, EV_READ);
    l->io.data = l;
    ev_timer_init(&l->backoff, accept_resume, 0.1, 0.);
    l->backoff.data = l;
    atomic_store_explicit(&w->nlisteners, idx + 1, memory_order_release);
    if (i == 0)
      listeners_start(w);
    else
      h2t__postq_flags(&w->post, POST_LISTEN);
  }
  return idx;
}

uint16_t h2t_server_port(const h2t_server *s, int index) {
  if (!s || index < 0 || index >= s->nlisteners)
    return 0;
  return s->ports[index];
}

int h2t_server_handle(h2t_server *s, const char *prefix, h2t_handler_fn fn,
                      void *user) {
  if (!s || !prefix || prefix[0] != '/' || !fn)
    return H2T_ERR_INVALID_ARG;
  /* Other workers read the routes without a lock: they may only change
   * while no connection can come. */
  if (s->nworkers > 1 && s->nlisteners > 0)
    return H2T_ERR_STATE;
  const h2t_mem *mem = s->w[0].x.mem;
  for (size_t i = 0; i < s->nroutes; i++)
    if (!strcmp(s->routes[i].prefix, prefix)) {
      s->routes[i].fn = fn;
      s->routes[i].user = user;
      return 0;
    }
  srv_route *r = h2t_xrealloc(mem, s->routes, (s->nroutes + 1) * sizeof *r);
  if (!r)
    return H2T_ERR_NOMEM;
  s->routes = r;
  char *p = h2t_xstrdup(mem, prefix);
  if (!p)
    return H2T_ERR_NOMEM;
  s->routes[s->nroutes++] =
      (srv_route){.prefix = p, .len = strlen(p), .fn = fn, .user = user};
  for (int i = 0; i < s->nworkers; i++) {
    s->w[i].x.routes = s->routes;
    s->w[i].x.nroutes = s->nroutes;
  }
  return 0;
}

int h2t_server_run(h2t_server *s) {
  if (!s)
    return H2T_ERR_INVALID_ARG;
  if (s->running)
    return H2T_ERR_STATE;
  s->running = 1;
  while (!s->reported) { /* until done_cb, which reports and breaks */
    if (!ev_run(s->w[0].x.loop, 0))
      break; /* nothing left to watch */
  }
  s->running = 0;
  return 0;
}

/* When the last connection of a shutting-down worker is gone; the last
 * worker to finish has worker 0 report (done_cb). */
static void maybe_done(srv_worker *w) {
  if (!w->shutting || w->x.conns || w->done)
    return;
  w->done = 1;
  ev_timer_stop(w->x.loop, &w->shutdown_timer);
  if (w->index > 0)
    stats_publish(w); /* its last counts, before worker 0 may read them */
  h2t_server *s = w->s;
  if (atomic_fetch_sub(&s->workers_left, 1) != 1)
    return;
  if (w->index == 0)
    ev_timer_start(w->x.loop, &s->done_timer); /* done_cb: report, break */
  else
    h2t__postq_flags(&s->w[0].post, POST_ALLDONE);
}

/* On w's loop: stop accepting, GOAWAY, drain. */
static void worker_shutdown(srv_worker *w) {
  if (w->shutting)
    return;
  w->shutting = 1;
  listeners_close(w);
  ev_timer_start(w->x.loop, &w->shutdown_timer);
  h2t__srv_conn_goaway_all(&w->x);
  maybe_done(w);
}

int h2t_server_shutdown(h2t_server *s) {
  if (!s)
    return H2T_ERR_INVALID_ARG;
  if (s->shutting)
    return 0;
  s->shutting = 1;
  if (s->nworkers > 1) {
    /* Worker 0's loop may have nothing left to watch while the others
     * drain: keep it up until done_cb. */
    s->loop_held = 1;
    ev_ref(s->w[0].x.loop);
    for (int i = 1; i < s->nworkers; i++)
      h2t__postq_flags(&s->w[i].post, POST_SHUTDOWN);
  }
  worker_shutdown(&s->w[0]);
  return 0;
}

void h2t_server_shutdown_async(h2t_server *s) {
  if (!s)
    return;
  h2t__postq_flags(&s->w[0].post, POST_SHUTDOWN);
}

static void stats_add(h2t_server_stats *a, const h2t_server_stats *b) {
  a->conns_accepted += b->conns_accepted;
  a->requests += b->requests;
  a->responses += b->responses;
  a->resets_sent += b->resets_sent;
  a->resets_recv += b->resets_recv;
  a->shed_refused += b->shed_refused;
  a->shed_503 += b->shed_503;
  a->shed_conns += b->shed_conns;
  a->bytes_in += b->bytes_in;
  a->bytes_out += b->bytes_out;
  a->writer_flushes += b->writer_flushes;
  a->writer_blocked += b->writer_blocked;
  a->conns_open += b->conns_open;
  a->inflight += b->inflight;
  a->body_buffered += b->body_buffered;
  a->body_buffered_max += b->body_buffered_max;
  a->body_flow_held += b->body_flow_held;
  a->body_budget_resets += b->body_budget_resets;
  a->header_timeouts += b->header_timeouts;
  a->body_timeouts += b->body_timeouts;
  a->idle_timeouts += b->idle_timeouts;
  a->conns_evicted += b->conns_evicted;
}

void h2t_server_stats_get(const h2t_server *s, h2t_server_stats *out) {
  if (!s || !out)
    return;
  *out = s->w[0].x.st;
  out->writer_queue_max = 0;
  for (int i = 0; i < s->nworkers; i++) {
    srv_worker *w = &s->w[i];
    if (i > 0) {
      h2t_server_stats st;
      pthread_mutex_lock(&w->st_mu);
      st = w->st_snap;
      pthread_mutex_unlock(&w->st_mu);
      stats_add(out, &st);
    }
    out->writer_queue_max += h2t__writer_depth_max(w->x.writer);
  }
  out->writer_queue_depth = h2t_server_writer_depth(s);
}

uint32_t h2t_server_writer_depth(const h2t_server *s) {
  if (!s)
    return 0;
  uint32_t d = 0;
  for (int i = 0; i < s->nworkers; i++)
    d += h2t__writer_depth(s->w[i].x.writer);
  return d;
}
