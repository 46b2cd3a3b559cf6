/*
 * inflight_bench: what the in-flight table costs, on the public API only.
 *
 *   inflight_bench [-n HELD] [-r REQUESTS] [-c CONCURRENCY] [-k ROUNDS]
 *                  [-t both|on|off]
 *
 * 1. Snapshot: an in-process server parks HELD requests that an in-process
 *    client sent (so 2 x HELD entries are in flight: client + server side),
 *    then times h2t_inflight_snapshot(), h2t_inflight_dump_string() and
 *    h2t_diag_metrics() over them.
 * 2. Throughput: REQUESTS small requests at CONCURRENCY, with the table off
 *    and on, alternating for ROUNDS rounds; prints req/s for each.
 * Client and server each run on their own loop thread.
 */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <ev.h>
#include <h2trace/client.h>
#include <h2trace/diag.h>
#include <h2trace/inflight.h>
#include <h2trace/server.h>

static h2t_server *srv;
static struct ev_loop *srv_loop;
static int srv_port;

/* --- server: /hold parks, /ok answers at once ------------------------------ */

static h2t_server_req **held;
static size_t nheld, held_cap;
static ev_async release_w;

static void held_close(h2t_server_req *r, uint32_t code, void *user) {
  size_t i = (size_t)(uintptr_t)user;
  if (i < nheld && held[i] == r)
    held[i] = NULL;
}

static void handle_hold(h2t_server_req *r, void *user) {
  if (nheld == held_cap) {
    held_cap = held_cap ? held_cap * 2 : 1024;
    held = realloc(held, held_cap * sizeof *held);
  }
  h2t_server_req_on(r, NULL, held_close, (void *)(uintptr_t)nheld);
  held[nheld++] = r;
}

static void release_cb(struct ev_loop *loop, ev_async *w, int revents) {
  for (size_t i = 0; i < nheld; i++)
    if (held[i])
      h2t_server_req_respond(held[i], 200, NULL, 0, "ok\n", 3, H2T_RESPOND_NOCOPY);
  nheld = 0;
}

static void handle_ok(h2t_server_req *r, void *user) {
  h2t_server_req_respond(r, 200, NULL, 0, "ok\n", 3, H2T_RESPOND_NOCOPY);
}

static void *run_server(void *arg) {
  h2t_server_run(srv);
  return NULL;
}

/* --- client: keep `conc` requests going until `total` are done ------------ */

typedef struct load {
  h2t_client *c;
  char url[128];
  size_t total, started, done, failed, conc;
} load;

static void on_done(h2t_request *req, int error, void *user);

static void submit_one(load *l) {
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = l->url,
                        .on_done = on_done, .user = l};
  l->started++;
  if (h2t_request_submit(l->c, &o, NULL) != 0) {
    l->done++;
    l->failed++;
  }
}

static void on_done(h2t_request *req, int error, void *user) {
  load *l = user;
  l->done++;
  if (error)
    l->failed++;
  if (l->started < l->total)
    submit_one(l);
}

static void *run_load(void *arg) {
  load *l = arg;
  h2t_client_config cc = {H2T_CLIENT_CONFIG_INIT};
  cc.max_conns_per_origin = 1;
  if (h2t_client_new(&l->c, &cc) != 0)
    return NULL;
  for (size_t i = 0; i < l->conc && l->started < l->total; i++)
    submit_one(l);
  h2t_client_run(l->c);
  h2t_client_del(l->c);
  return NULL;
}

static double now_s(void) { return (double)h2t_now_us() / 1e6; }

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static void bench_snapshot(size_t n) {
  load l = {.total = n, .conc = n};
  snprintf(l.url, sizeof l.url, "http://127.0.0.1:%d/hold", srv_port);
  pthread_t th;
  pthread_create(&th, NULL, run_load, &l);
  size_t got = 0;
  h2t_inflight_info *arr;
  for (int i = 0; i < 3000 && got < 2 * n; i++) {
    h2t_inflight_snapshot(&arr, &got);
    h2t_inflight_info_free(arr);
    if (got < 2 * n)
      usleep(10000);
  }
  if (got < 2 * n)
    fprintf(stderr, "only %zu of %zu requests in flight\n", got, 2 * n);
  enum { REPS = 20 };
  double snap[REPS], dump[REPS], met[REPS];
  for (int i = 0; i < REPS; i++) {
    double t0 = now_s();
    h2t_inflight_snapshot(&arr, &got);
    snap[i] = now_s() - t0;
    h2t_inflight_info_free(arr);
    char *s;
    t0 = now_s();
    h2t_inflight_dump_string(&s);
    dump[i] = now_s() - t0;
    free(s);
    size_t len;
    t0 = now_s();
    h2t_diag_metrics(&s, &len);
    met[i] = now_s() - t0;
    free(s);
  }
  qsort(snap, REPS, sizeof *snap, cmp_double);
  qsort(dump, REPS, sizeof *dump, cmp_double);
  qsort(met, REPS, sizeof *met, cmp_double);
  printf("in flight: %zu entries (%zu client + %zu server)\n", got, n, n);
  printf("  h2t_inflight_snapshot   median %.2f ms  min %.2f ms  max %.2f ms\n",
         snap[REPS / 2] * 1e3, snap[0] * 1e3, snap[REPS - 1] * 1e3);
  printf("  h2t_inflight_dump_string median %.2f ms\n", dump[REPS / 2] * 1e3);
  printf("  h2t_diag_metrics         median %.2f ms\n", met[REPS / 2] * 1e3);
  printf("  public copy: %zu bytes per h2t_inflight_info\n",
         sizeof(h2t_inflight_info));
  ev_async_send(srv_loop, &release_w);
  pthread_join(th, NULL);
}

static double bench_rate(size_t total, size_t conc) {
  load l = {.total = total, .conc = conc};
  snprintf(l.url, sizeof l.url, "http://127.0.0.1:%d/ok", srv_port);
  pthread_t th;
  double t0 = now_s();
  pthread_create(&th, NULL, run_load, &l);
  pthread_join(th, NULL);
  double dt = now_s() - t0;
  if (l.failed)
    fprintf(stderr, "%zu requests failed\n", l.failed);
  return (double)l.done / dt;
}

int main(int argc, char **argv) {
  size_t n = 5000, total = 20000, conc = 100;
  int rounds = 3, opt, want_off = 1, want_on = 1;
  while ((opt = getopt(argc, argv, "n:r:c:k:t:h")) != -1) {
    switch (opt) {
    case 't': /* one side only, e.g. under a profiler */
      want_off = strcmp(optarg, "on") != 0;
      want_on = strcmp(optarg, "off") != 0;
      break;
    case 'n': n = strtoul(optarg, NULL, 10); break;
    case 'r': total = strtoul(optarg, NULL, 10); break;
    case 'c': conc = strtoul(optarg, NULL, 10); break;
    case 'k': rounds = atoi(optarg); break;
    default:
      fprintf(stderr, "usage: inflight_bench [-n HELD] [-r REQUESTS] "
                      "[-c CONCURRENCY] [-k ROUNDS] [-t both|on|off]\n");
      return opt == 'h' ? 0 : 2;
    }
  }
  if (!n || !total || !conc || rounds < 1) {
    fprintf(stderr, "inflight_bench: counts must be positive\n");
    return 2;
  }
  h2t_server_config sc = {H2T_SERVER_CONFIG_INIT};
  sc.max_concurrent_streams = (uint32_t)(n > conc ? n : conc);
  int rc = h2t_server_new(&srv, &sc);
  if (rc) {
    fprintf(stderr, "inflight_bench: server: %s\n", h2t_strerror(rc));
    return 1;
  }
  h2t_listen_opts lo = {H2T_LISTEN_OPTS_INIT};
  int idx = h2t_server_listen(srv, &lo);
  if (idx < 0) {
    fprintf(stderr, "inflight_bench: listen: %s\n", h2t_strerror(idx));
    return 1;
  }
  srv_port = h2t_server_port(srv, idx);
  srv_loop = h2t_server_loop(srv);
  h2t_server_handle(srv, "/hold", handle_hold, NULL);
  h2t_server_handle(srv, "/ok", handle_ok, NULL);
  ev_async_init(&release_w, release_cb);
  ev_async_start(srv_loop, &release_w);
  pthread_t st;
  pthread_create(&st, NULL, run_server, NULL);

  h2t_inflight_config ic = {H2T_INFLIGHT_CONFIG_INIT};
  ic.max_entries = 2 * n + 1024;
  h2t_inflight_enable(&ic);
  bench_snapshot(n);
  h2t_inflight_disable();

  printf("throughput: %zu requests, %zu concurrent, one connection\n", total,
         conc);
  bench_rate(total / 4, conc); /* warm up */
  double off_sum = 0, on_sum = 0;
  for (int k = 0; k < rounds; k++) {
    double off = want_off ? bench_rate(total, conc) : 1;
    h2t_inflight_enable(&ic);
    double on = want_on ? bench_rate(total, conc) : 1;
    if (h2t_inflight_disable() != 0)
      fprintf(stderr, "inflight_bench: table still busy\n");
    printf("  round %d: table off %.0f req/s, on %.0f req/s (%+.1f%%)\n", k + 1,
           off, on, (on - off) / off * 100.0);
    off_sum += off;
    on_sum += on;
  }
  printf("  mean: off %.0f req/s, on %.0f req/s (%+.1f%%)\n", off_sum / rounds,
         on_sum / rounds, (on_sum - off_sum) / off_sum * 100.0);
  h2t_server_shutdown_async(srv);
  pthread_join(st, NULL);
  ev_async_stop(srv_loop, &release_w);
  h2t_server_del(srv);
  free(held);
  return 0;
}
