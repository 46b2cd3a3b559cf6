/* Replica-aware dispatch against real h2trace servers on loopback (each on
 * its own thread and loop): a task never waits on a busy replica while
 * another is free, the total bound holds, a failed attempt moves to another
 * replica, every dispatch is traced, tasks are in the in-flight table, and
 * deleting the dispatcher settles every task. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <ev.h>
#include <pthread.h>
#include <h2trace/h2trace.h>

/* ---- a replica: answers /w?ms=N after N*scale ms with status `code` and
 * body "rI" (I its index) ----------------------------------------------- */
typedef struct repl {
  h2t_server *s;
  pthread_t th;
  int index, scale, code;
  char url[64], body[8];
} repl;

typedef struct pending_rsp {
  ev_timer t;
  h2t_server_req *r;
  repl *rp;
  struct ev_loop *loop;
} pending_rsp;

static void fire(struct ev_loop *loop, ev_timer *t, int revents) {
  pending_rsp *p = t->data;
  h2t_server_req_respond(p->r, p->rp->code, NULL, 0, p->rp->body,
                         strlen(p->rp->body), 0);
}

static void closed(h2t_server_req *r, uint32_t code, void *user) {
  pending_rsp *p = user;
  ev_timer_stop(p->loop, &p->t);
  free(p);
}

static void handle(h2t_server_req *r, void *user) {
  repl *rp = user;
  const char *q = strstr(h2t_server_req_path(r), "ms=");
  double ms = q ? atof(q + 3) : 0;
  pending_rsp *p = calloc(1, sizeof *p);
  assert_non_null(p);
  p->r = r;
  p->rp = rp;
  p->loop = h2t_server_loop(rp->s);
  ev_timer_init(&p->t, fire, ms * rp->scale / 1000., 0.);
  p->t.data = p;
  h2t_server_req_on(r, NULL, closed, p);
  ev_timer_start(p->loop, &p->t);
}

static void *run_srv(void *arg) {
  h2t_server_run(arg);
  return NULL;
}

static void repl_start(repl *rp, int index, int scale, int code) {
  memset(rp, 0, sizeof *rp);
  rp->index = index;
  rp->scale = scale;
  rp->code = code;
  snprintf(rp->body, sizeof rp->body, "r%d", index);
  h2t_server_config cfg = {H2T_SERVER_CONFIG_INIT};
  assert_int_equal(h2t_server_new(&rp->s, &cfg), 0);
  h2t_listen_opts lo = {H2T_LISTEN_OPTS_INIT};
  int idx = h2t_server_listen(rp->s, &lo);
  assert_true(idx >= 0);
  snprintf(rp->url, sizeof rp->url, "http://127.0.0.1:%d",
           (int)h2t_server_port(rp->s, idx));
  h2t_server_handle(rp->s, "/", handle, rp);
  assert_int_equal(pthread_create(&rp->th, NULL, run_srv, rp->s), 0);
}

static void repl_stop(repl *rp) {
  h2t_server_shutdown_async(rp->s);
  pthread_join(rp->th, NULL);
  h2t_server_del(rp->s);
}

/* ---- bookkeeping ------------------------------------------------------- */
typedef struct book {
  int done, failed, on[4], attempts_max, active, active_max;
  unsigned dispatches, retries_elsewhere;
  uint64_t last_waited;
  size_t last_replica[64];
  char body[64][8];
} book;

static void on_dispatch(const h2t_saturate_dispatch *d, void *user) {
  book *b = user;
  assert_true(d->busy >= 1 && d->busy <= d->workers);
  assert_non_null(d->origin);
  b->dispatches++;
  if (d->attempt > 1)
    b->retries_elsewhere++;
  if (++b->active > b->active_max)
    b->active_max = b->active;
}

static void on_task(const h2t_saturate_result *res, void *user) {
  book *b = user;
  b->active--; /* of the last attempt (retries re-dispatch: +1 again) */
  b->done++;
  if (res->error || res->status != 200)
    b->failed++;
  if (res->replica < 4)
    b->on[res->replica]++;
  if ((int)res->attempts > b->attempts_max)
    b->attempts_max = (int)res->attempts;
  if (b->done <= 64)
    snprintf(b->body[b->done - 1], sizeof b->body[0], "%s",
             (const char *)res->body);
}

typedef struct env {
  repl r[2];
  h2t_client *c;
  h2t_saturate *s;
  book b;
} env;

static void env_start(env *e, int slow_scale, int code0, h2t_saturate_policy p,
                      uint32_t workers, uint32_t max_inflight,
                      uint32_t max_tries) {
  memset(e, 0, sizeof *e);
  repl_start(&e->r[0], 0, 1, code0);
  repl_start(&e->r[1], 1, slow_scale, 200);
  assert_int_equal(h2t_client_new(&e->c, NULL), 0);
  const char *urls[2] = {e->r[0].url, e->r[1].url};
  h2t_saturate_config sc = {H2T_SATURATE_CONFIG_INIT, .client = e->c,
                            .replicas = urls, .nreplicas = 2,
                            .workers_each = workers,
                            .max_inflight = max_inflight,
                            .max_tries = max_tries, .policy = p,
                            .on_dispatch = on_dispatch, .user = &e->b};
  assert_int_equal(h2t_saturate_new(&e->s, &sc), 0);
}

static void env_stop(env *e) {
  h2t_saturate_del(e->s);
  h2t_client_del(e->c);
  repl_stop(&e->r[0]);
  repl_stop(&e->r[1]);
}

/* run the loop until every task is done, at most ms */
static uint64_t run_all(env *e, int ms) {
  uint64_t t0 = h2t_now_us();
  while (h2t_saturate_pending(e->s) &&
         h2t_now_us() - t0 < (uint64_t)ms * 1000)
    ev_run(h2t_client_loop(e->c), EVRUN_ONCE);
  assert_int_equal(h2t_saturate_pending(e->s), 0);
  return h2t_now_us() - t0;
}

static void submit_n(env *e, int n, const char *path) {
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = path};
  for (int i = 0; i < n; i++)
    assert_int_equal(h2t_saturate_submit(e->s, &o, on_task, &e->b, NULL), 0);
}

/* One worker each; replica 1 is 20x slower.  Saturate gives the fast one
 * every task it can take: 1 task goes to the slow one (it was free at the
 * start), the other 9 to the fast one, and the whole takes about one slow
 * task.  Random choice would wait on the slow one for about half. */
static void test_free_slot_never_waits_on_busy_replica(void **state) {
  env e;
  env_start(&e, 20, 200, H2T_SATURATE_FREE_SLOT, 1, 0, 0);
  submit_n(&e, 10, "/w?ms=10");
  uint64_t us = run_all(&e, 10000);
  assert_int_equal(e.b.done, 10);
  assert_int_equal(e.b.failed, 0);
  assert_true(e.b.on[0] >= 8);
  assert_true(e.b.on[1] <= 2);
  assert_int_equal(e.b.active_max, 2); /* both workers used */
  /* 10 fast tasks in a row ~100 ms; the slow one 200 ms in parallel */
  assert_true(us < 600000);
  env_stop(&e);
}

/* The same load, random choice: the slow replica gets about half and the
 * run takes several slow tasks in a row, so the comparison is real. */
static void test_random_waits_on_slow_replica(void **state) {
  env e;
  env_start(&e, 20, 200, H2T_SATURATE_RANDOM, 1, 0, 0);
  submit_n(&e, 10, "/w?ms=10");
  uint64_t us = run_all(&e, 20000);
  assert_int_equal(e.b.done, 10);
  assert_true(e.b.on[1] >= 2);
  assert_true(us > 400000);
  env_stop(&e);
}

static void test_total_bound(void **state) {
  env e;
  env_start(&e, 1, 200, H2T_SATURATE_FREE_SLOT, 4, 3, 0);
  submit_n(&e, 20, "/w?ms=5");
  run_all(&e, 10000);
  assert_int_equal(e.b.done, 20);
  assert_int_equal(e.b.active_max, 3);
  env_stop(&e);
}

/* Replica 0 answers 503: each task's second attempt goes to replica 1. */
static void test_failed_attempt_moves_to_another_replica(void **state) {
  env e;
  env_start(&e, 1, 503, H2T_SATURATE_FREE_SLOT, 2, 0, 2);
  submit_n(&e, 6, "/w?ms=1");
  run_all(&e, 10000);
  assert_int_equal(e.b.done, 6);
  assert_int_equal(e.b.failed, 0);
  assert_int_equal(e.b.on[1], 6);
  assert_true(e.b.retries_elsewhere >= 1);
  for (int i = 0; i < 6; i++)
    assert_string_equal(e.b.body[i], "r1"); /* only the good attempt */
  env_stop(&e);
}

/* With one try, the 503 is the answer. */
static void test_tries_run_out(void **state) {
  env e;
  env_start(&e, 1, 503, H2T_SATURATE_ROUND_ROBIN, 1, 0, 1);
  submit_n(&e, 2, "/w?ms=1");
  run_all(&e, 10000);
  assert_int_equal(e.b.done, 2);
  assert_int_equal(e.b.failed, 1); /* round-robin: one on each */
  assert_int_equal(e.b.attempts_max, 1);
  env_stop(&e);
}

/* Waiting tasks are in the in-flight table, saying what they wait for. */
static void test_tasks_in_inflight_table(void **state) {
  assert_int_equal(h2t_inflight_enable(NULL), 0);
  env e;
  env_start(&e, 1, 200, H2T_SATURATE_FREE_SLOT, 1, 0, 0);
  submit_n(&e, 5, "/w?ms=200");
  h2t_inflight_info *arr;
  size_t n;
  assert_int_equal(h2t_inflight_snapshot(&arr, &n), 0);
  int tasks = 0, waiting = 0, running = 0;
  for (size_t i = 0; i < n; i++) {
    if (strcmp(arr[i].method, "TASK"))
      continue;
    tasks++;
    if (strstr(arr[i].status, "waiting for a free worker"))
      waiting++;
    if (strstr(arr[i].status, "on replica"))
      running++;
  }
  h2t_inflight_info_free(arr);
  assert_int_equal(tasks, 5);
  assert_int_equal(running, 2);
  assert_int_equal(waiting, 3);
  run_all(&e, 10000);
  env_stop(&e);
  h2t_inflight_disable();
}

/* Deleting the dispatcher with tasks running and waiting settles each. */
static void test_del_settles_every_task(void **state) {
  env e;
  env_start(&e, 1, 200, H2T_SATURATE_LEAST_OUTSTANDING, 1, 0, 0);
  submit_n(&e, 6, "/w?ms=500");
  ev_run(h2t_client_loop(e.c), EVRUN_NOWAIT);
  h2t_saturate_del(e.s);
  e.s = NULL;
  assert_int_equal(e.b.done, 6);
  assert_int_equal(e.b.failed, 6);
  h2t_client_del(e.c);
  repl_stop(&e.r[0]);
  repl_stop(&e.r[1]);
}

static void test_bad_arguments(void **state) {
  h2t_client *c;
  assert_int_equal(h2t_client_new(&c, NULL), 0);
  h2t_saturate *s;
  const char *bad1[] = {"http://127.0.0.1:1/path"};
  const char *bad2[] = {"ftp://x"};
  const char *ok[] = {"http://127.0.0.1:1/"};
  h2t_saturate_config sc = {H2T_SATURATE_CONFIG_INIT, .client = c,
                            .replicas = bad1, .nreplicas = 1};
  assert_int_equal(h2t_saturate_new(&s, &sc), H2T_ERR_INVALID_ARG);
  sc.replicas = bad2;
  assert_int_equal(h2t_saturate_new(&s, &sc), H2T_ERR_INVALID_ARG);
  sc.replicas = ok;
  sc.nreplicas = 0;
  assert_int_equal(h2t_saturate_new(&s, &sc), H2T_ERR_INVALID_ARG);
  sc.nreplicas = 1;
  sc.policy = (h2t_saturate_policy)99;
  assert_int_equal(h2t_saturate_new(&s, &sc), H2T_ERR_INVALID_ARG);
  sc.policy = H2T_SATURATE_FREE_SLOT;
  assert_int_equal(h2t_saturate_new(&s, &sc), 0);
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = "no-slash"};
  assert_int_equal(h2t_saturate_submit(s, &o, on_task, NULL, NULL),
                   H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_saturate_submit(NULL, &o, on_task, NULL, NULL),
                   H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_saturate_pending(s), 0);
  assert_string_equal(h2t_saturate_policy_name(H2T_SATURATE_FREE_SLOT),
                      "free_slot");
  assert_null(h2t_saturate_policy_name((h2t_saturate_policy)99));
  h2t_saturate_del(s);
  h2t_saturate_del(NULL);
  h2t_client_del(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_free_slot_never_waits_on_busy_replica),
      cmocka_unit_test(test_random_waits_on_slow_replica),
      cmocka_unit_test(test_total_bound),
      cmocka_unit_test(test_failed_attempt_moves_to_another_replica),
      cmocka_unit_test(test_tries_run_out),
      cmocka_unit_test(test_tasks_in_inflight_table),
      cmocka_unit_test(test_del_settles_every_task),
      cmocka_unit_test(test_bad_arguments),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
