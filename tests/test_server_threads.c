/*
 * h2/server with h2t_server_config.threads > 1: connections spread over the
 * workers, handlers run on their connection's loop, stats sum over
 * workers, a graceful shutdown with requests in flight on several workers
 * reports once, a cancel from another thread reaches the request's own
 * worker, and the diagnostics endpoint lists requests of every worker.
 * Real clients (h2load, curl) on loopback.
 */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <ev.h>
#include <h2trace/diag.h>
#include <h2trace/inflight.h>
#include <h2trace/server.h>
#include "handlers.h"
#include "peer.h"

#define NTHREADS 3
#define MAX_LOOPS 8
#define MAX_HELD 16

typedef struct tsrv {
  h2t_server *s;
  pthread_t th;
  uint16_t port;
  pthread_mutex_t mu;
  /* which loops ran handlers, and how many each */
  struct ev_loop *loops[MAX_LOOPS];
  unsigned per_loop[MAX_LOOPS];
  int nloops;
  unsigned handled;
  /* /hold */
  struct held {
    uint64_t id;
    struct ev_loop *loop;
    pthread_t thread;
    uint32_t code;
    int closed, closed_on_own_thread;
  } held[MAX_HELD];
  int nheld;
  int done_calls;
} tsrv;

static void note_loop(tsrv *t, h2t_server_req *r) {
  struct ev_loop *l = h2t_server_req_loop(r);
  pthread_mutex_lock(&t->mu);
  int i = 0;
  while (i < t->nloops && t->loops[i] != l)
    i++;
  if (i == t->nloops && i < MAX_LOOPS)
    t->loops[t->nloops++] = l;
  if (i < MAX_LOOPS)
    t->per_loop[i]++;
  t->handled++;
  pthread_mutex_unlock(&t->mu);
}

static void h_hello(h2t_server_req *r, void *user) {
  note_loop(user, r);
  h2t_server_req_respond(r, 200, NULL, 0, "hello\n", 6, H2T_RESPOND_NOCOPY);
}

static void h_delay(h2t_server_req *r, void *user) {
  note_loop(user, r);
  h2t_test_delay_handler(r, "sleeping");
}

static void hold_close(h2t_server_req *r, uint32_t code, void *user) {
  struct held *h = user;
  h->code = code;
  h->closed_on_own_thread = pthread_equal(pthread_self(), h->thread);
  __atomic_store_n(&h->closed, 1, __ATOMIC_RELEASE);
}

static void h_hold(h2t_server_req *r, void *user) {
  tsrv *t = user;
  note_loop(t, r);
  pthread_mutex_lock(&t->mu);
  if (t->nheld == MAX_HELD) {
    pthread_mutex_unlock(&t->mu);
    h2t_server_req_reset(r, 8);
    return;
  }
  struct held *h = &t->held[t->nheld];
  h->id = h2t_server_req_id(r);
  h->loop = h2t_server_req_loop(r);
  h->thread = pthread_self();
  t->nheld++;
  pthread_mutex_unlock(&t->mu);
  h2t_server_req_on(r, NULL, hold_close, h);
  h2t_server_req_set_status(r, "holding");
}

static void on_done(h2t_server *s, void *user) {
  tsrv *t = user;
  pthread_mutex_lock(&t->mu);
  t->done_calls++;
  pthread_mutex_unlock(&t->mu);
}

static void *srv_thread(void *arg) {
  h2t_server_run(arg);
  return NULL;
}

static tsrv *tsrv_start(uint32_t threads, uint32_t shutdown_timeout_ms) {
  tsrv *t = calloc(1, sizeof *t);
  pthread_mutex_init(&t->mu, NULL);
  h2t_server_config c = {H2T_SERVER_CONFIG_INIT, .threads = threads,
                         .on_shutdown_done = on_done, .shutdown_user = t,
                         .shutdown_timeout_ms = shutdown_timeout_ms};
  assert_int_equal(h2t_server_new(&t->s, &c), 0);
  assert_int_equal(h2t_server_handle(t->s, "/hello", h_hello, t), 0);
  assert_int_equal(h2t_server_handle(t->s, "/delay", h_delay, t), 0);
  assert_int_equal(h2t_server_handle(t->s, "/hold", h_hold, t), 0);
  h2t_listen_opts lo = {H2T_LISTEN_OPTS_INIT};
  int idx = h2t_server_listen(t->s, &lo);
  assert_true(idx >= 0);
  t->port = h2t_server_port(t->s, idx);
  assert_true(t->port > 0);
  assert_int_equal(pthread_create(&t->th, NULL, srv_thread, t->s), 0);
  return t;
}

/* Shut down, wait for h2t_server_run to return: the stats and counters
 * can be read until tsrv_free. */
static void tsrv_join(tsrv *t) {
  h2t_server_shutdown_async(t->s);
  pthread_join(t->th, NULL);
}

static void tsrv_free(tsrv *t) {
  h2t_server_del(t->s);
  pthread_mutex_destroy(&t->mu);
  free(t);
}

static int h2load_ok(const char *out, int n) {
  char want[96];
  snprintf(want, sizeof want, "%d total, %d started, %d done, %d succeeded",
           n, n, n, n);
  return out && strstr(out, want) != NULL;
}

static char *url(const tsrv *t, const char *path) {
  static char b[4][128];
  static int i;
  char *u = b[i++ % 4];
  snprintf(u, 128, "http://127.0.0.1:%u%s", t->port, path);
  return u;
}

/* Counters are written by the server's threads under t->mu: read them so. */
static int nloops_of(tsrv *t) {
  pthread_mutex_lock(&t->mu);
  int n = t->nloops;
  pthread_mutex_unlock(&t->mu);
  return n;
}

static unsigned handled_of(tsrv *t) {
  pthread_mutex_lock(&t->mu);
  unsigned n = t->handled;
  pthread_mutex_unlock(&t->mu);
  return n;
}

static int nheld_of(tsrv *t) {
  pthread_mutex_lock(&t->mu);
  int n = t->nheld;
  pthread_mutex_unlock(&t->mu);
  return n;
}

static struct ev_loop *loop_of(tsrv *t, int i) {
  pthread_mutex_lock(&t->mu);
  struct ev_loop *l = t->loops[i];
  pthread_mutex_unlock(&t->mu);
  return l;
}

static int busy_loops(tsrv *t) {
  int n = 0;
  pthread_mutex_lock(&t->mu);
  for (int i = 0; i < t->nloops; i++)
    n += t->per_loop[i] > 0;
  pthread_mutex_unlock(&t->mu);
  return n;
}

static void test_config_and_routes(void **state) {
  h2t_server *s = NULL;
  h2t_server_config c = {H2T_SERVER_CONFIG_INIT, .threads = 257};
  assert_int_equal(h2t_server_new(&s, &c), H2T_ERR_INVALID_ARG);
  assert_null(s);
  c.threads = 2;
  assert_int_equal(h2t_server_new(&s, &c), 0);
  assert_int_equal(h2t_server_handle(s, "/a", h_hello, NULL), 0);
  h2t_listen_opts lo = {H2T_LISTEN_OPTS_INIT};
  int idx = h2t_server_listen(s, &lo);
  assert_true(idx >= 0);
  /* workers read the routes without a lock: no change once listening */
  assert_int_equal(h2t_server_handle(s, "/b", h_hello, NULL), H2T_ERR_STATE);
  /* a second address: one socket per worker again, same port for each */
  idx = h2t_server_listen(s, &lo);
  assert_int_equal(idx, 1);
  assert_true(h2t_server_port(s, 1) > 0);
  /* deleted without running: the worker threads are stopped and joined */
  h2t_server_del(s);
}

/* 600 requests over 12 connections: served by more than one worker, and
 * the summed stats account for every request and connection. */
static void test_spread_and_stats(void **state) {
  tsrv *t = tsrv_start(NTHREADS, 0);
  char *argv[] = {"h2load", "-n", "600", "-c", "12", "-m", "4",
                  url(t, "/hello"), NULL};
  char *out = NULL;
  assert_int_equal(h2t_test_run(argv, 60000, &out), 0);
  assert_true(h2load_ok(out, 600));
  free(out);
  assert_true(busy_loops(t) >= 2);
  assert_true(nloops_of(t) <= NTHREADS);
  tsrv_join(t);
  h2t_server_stats st;
  h2t_server_stats_get(t->s, &st);
  assert_int_equal(st.requests, 600);
  assert_int_equal(st.responses, 600);
  assert_int_equal(st.conns_accepted, 12);
  assert_int_equal(st.conns_open, 0);
  assert_int_equal(st.inflight, 0);
  assert_true(st.bytes_out > 600 * 6);
  assert_int_equal(handled_of(t), 600);
  assert_int_equal(t->done_calls, 1);
  tsrv_free(t);
}

/* Shutdown while /delay requests wait on timers of several workers: they
 * all finish, then on_shutdown_done runs once and h2t_server_run returns. */
static void test_graceful_shutdown_all_workers(void **state) {
  tsrv *t = tsrv_start(NTHREADS, 0);
  char *argv[] = {"h2load", "-n", "24", "-c", "12", "-m", "2",
                  url(t, "/delay?ms=500"), NULL};
  h2t_test_bg b = {.argv = argv, .timeout_ms = 30000};
  assert_int_equal(h2t_test_bg_start(&b), 0);
  for (int i = 0; i < 400 && handled_of(t) < 24; i++)
    usleep(10000);
  assert_int_equal(handled_of(t), 24);
  assert_true(busy_loops(t) >= 2); /* in flight on several workers */
  uint64_t t0 = h2t_now_us();
  h2t_server_shutdown_async(t->s);
  h2t_server_shutdown_async(t->s); /* idempotent */
  pthread_join(t->th, NULL);
  uint64_t took = h2t_now_us() - t0;
  h2t_test_bg_join(&b);
  assert_true(h2load_ok(b.out, 24));
  free(b.out);
  assert_true(took > 200000 && took < 5000000);
  assert_int_equal(t->done_calls, 1);
  h2t_server_stats st;
  h2t_server_stats_get(t->s, &st);
  assert_int_equal(st.responses, 24);
  assert_int_equal(st.conns_open, 0);
  /* nothing listens any more, on any worker */
  char *cargv[] = {"curl", "-sS", "--max-time", "5",
                   "--http2-prior-knowledge", url(t, "/hello"), NULL};
  char *out = NULL;
  assert_int_not_equal(h2t_test_run(cargv, 10000, &out), 0);
  free(out);
  tsrv_free(t);
}

/* Requests held on several workers: the diagnostics endpoint lists every
 * one of them, and a cancel from this thread (the endpoint's path, through
 * the in-flight table) resets the one on a worker other than 0, on that
 * worker's own thread, and only that one. */
static void test_cancel_and_diag_across_workers(void **state) {
  assert_int_equal(h2t_inflight_enable(NULL), 0);
  tsrv *t = tsrv_start(NTHREADS, 300);
  h2t_diag *d = NULL;
  h2t_diag_config dc = {H2T_DIAG_CONFIG_INIT, .listen = "127.0.0.1:0"};
  assert_int_equal(h2t_diag_start(&d, &dc), 0);
  /* 12 connections with one held stream each */
  char *argv[] = {"h2load", "-n", "12", "-c", "12", "-m", "1",
                  url(t, "/hold"), NULL};
  pid_t pid = h2t_test_spawn(argv, NULL);
  for (int i = 0; i < 500 && nheld_of(t) < 12; i++)
    usleep(10000);
  assert_int_equal(nheld_of(t), 12);
  assert_true(busy_loops(t) >= 2);
  struct ev_loop *loop0 = h2t_server_loop(t->s);
  int k = -1;
  for (int i = 0; i < t->nheld && k < 0; i++)
    if (t->held[i].loop != loop0)
      k = i;
  assert_true(k >= 0);

  /* GET /debug/requests: every held request, whatever its worker */
  char durl[96];
  snprintf(durl, sizeof durl, "http://127.0.0.1:%u/debug/requests",
           h2t_diag_port(d));
  char *cargv[] = {"curl", "-sS", "--max-time", "10", durl, NULL};
  char *body = NULL;
  assert_int_equal(h2t_test_run(cargv, 15000, &body), 0);
  for (int i = 0; i < t->nheld; i++) {
    char id[32]; /* compact JSON, "id" first of its members: "id":N, */
    snprintf(id, sizeof id, "\"id\":%llu,", (unsigned long long)t->held[i].id);
    assert_non_null(strstr(body, id));
  }
  free(body);

  assert_int_equal(h2t_inflight_cancel(t->held[k].id, "test"), 0);
  int closed = 0;
  for (int i = 0; i < 300 && !closed; i++) {
    usleep(10000);
    closed = __atomic_load_n(&t->held[k].closed, __ATOMIC_ACQUIRE);
  }
  assert_true(closed);
  assert_int_equal(t->held[k].code, 8 /* CANCEL */);
  assert_true(t->held[k].closed_on_own_thread);
  for (int i = 0; i < t->nheld; i++)
    if (i != k)
      assert_int_equal(__atomic_load_n(&t->held[i].closed, __ATOMIC_ACQUIRE),
                       0);
  /* the rest never answer: shutdown_timeout_ms closes them on every worker */
  tsrv_join(t);
  for (int i = 0; i < t->nheld; i++) {
    assert_int_equal(t->held[i].closed, 1);
    assert_true(t->held[i].closed_on_own_thread);
  }
  assert_int_equal(t->done_calls, 1);
  h2t_test_stop(pid);
  h2t_diag_stop(d);
  tsrv_free(t);
}

/* threads = 1 through the same paths: one loop, today's behaviour. */
static void test_one_thread_same(void **state) {
  tsrv *t = tsrv_start(1, 0);
  char *argv[] = {"h2load", "-n", "100", "-c", "4", "-m", "4",
                  url(t, "/hello"), NULL};
  char *out = NULL;
  assert_int_equal(h2t_test_run(argv, 60000, &out), 0);
  assert_true(h2load_ok(out, 100));
  free(out);
  assert_int_equal(nloops_of(t), 1);
  assert_ptr_equal(loop_of(t, 0), h2t_server_loop(t->s));
  tsrv_join(t);
  tsrv_free(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_config_and_routes),
      cmocka_unit_test(test_one_thread_same),
      cmocka_unit_test(test_spread_and_stats),
      cmocka_unit_test(test_graceful_shutdown_all_workers),
      cmocka_unit_test(test_cancel_and_diag_across_workers),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
