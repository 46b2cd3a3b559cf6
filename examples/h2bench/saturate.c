/*
 * h2bench saturate: replica-aware dispatch against random choice.
 *
 * Starts R replicas (in-process h2trace servers on loopback, each on its own
 * thread and loop; or the --replica URLs given), one of them K times slower
 * (/delay?ms=D sleeps D*K ms there, as h2serve --delay-scale K does), and
 * runs N tasks through an h2t_saturate dispatcher with each policy in turn:
 * random, round-robin, least-outstanding and saturate (free slot).  Each
 * replica has W workers.  Rounds rotate the order; figures are medians.
 * Prints throughput and p50/p99 task latency per policy, the ideal (the sum
 * of the replicas' capacities), and the saturate/random ratio.
 */
#include <ev.h>
#include <getopt.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <h2trace/h2trace.h>
#include "bench.h"
#include "cli.h"

#define MAX_REPL 16

typedef struct opts {
  uint64_t replicas, slow, workers, tasks, ms, rounds;
  const char *urls[MAX_REPL];
  size_t nurls;
} opts;

static void usage(FILE *f) {
  fprintf(f,
          "usage: h2bench saturate [options]\n"
          "  -r, --replicas R   replicas to start (default 2)\n"
          "  -k, --slow K       the last replica is K times slower (default 8)\n"
          "  -w, --workers W    workers (concurrent requests) per replica\n"
          "                     (default 4)\n"
          "  -n, --tasks N      tasks per policy and round (default 1000)\n"
          "  -d, --ms D         a task's work on a fast replica, ms (default 5)\n"
          "      --rounds R     rounds, order rotated, medians (default 3)\n"
          "      --replica URL  use this replica instead (repeat; each must\n"
          "                     serve /delay?ms=N, e.g. h2serve --delay-scale)\n"
          "  -h, --help\n");
}

static int bad(const char *msg, const char *arg) {
  fprintf(stderr, "h2bench saturate: %s%s%s\n", msg, arg ? ": " : "",
          arg ? arg : "");
  return 2;
}

/* ---- replicas: in-process servers -------------------------------------- */

typedef struct replica_srv {
  h2t_server *s;
  pthread_t th;
  uint32_t scale;
  char url[64];
} replica_srv;

typedef struct slow_req {
  ev_timer t;
  h2t_server_req *r;
  struct ev_loop *loop;
} slow_req;

static void slow_fire(struct ev_loop *loop, ev_timer *t, int revents) {
  slow_req *q = t->data;
  h2t_header h = {"content-type", "text/plain"};
  h2t_server_req_respond(q->r, 200, &h, 1, "ok\n", 3, H2T_RESPOND_NOCOPY);
}

static void slow_close(h2t_server_req *r, uint32_t code, void *user) {
  slow_req *q = user;
  ev_timer_stop(q->loop, &q->t);
  free(q);
}

static void handle_delay(h2t_server_req *r, void *user) {
  replica_srv *rs = user;
  const char *p = strstr(h2t_server_req_path(r), "ms=");
  double ms = p ? strtod(p + 3, NULL) : 0;
  slow_req *q = calloc(1, sizeof *q);
  if (!q) {
    h2t_server_req_reset(r, 2);
    return;
  }
  q->r = r;
  q->loop = h2t_server_loop(rs->s);
  ev_timer_init(&q->t, slow_fire, ms * rs->scale / 1000., 0.);
  q->t.data = q;
  h2t_server_req_on(r, NULL, slow_close, q);
  ev_timer_start(q->loop, &q->t);
}

static void *replica_main(void *arg) {
  h2t_server_run(arg);
  return NULL;
}

static int replica_start(replica_srv *rs, uint32_t scale) {
  h2t_server_config cfg = {H2T_SERVER_CONFIG_INIT};
  cfg.max_concurrent_streams = 1000;
  rs->scale = scale;
  int rc = h2t_server_new(&rs->s, &cfg);
  if (rc != 0)
    return rc;
  h2t_listen_opts lo = {H2T_LISTEN_OPTS_INIT, .backlog = 1024};
  int idx = h2t_server_listen(rs->s, &lo);
  if (idx < 0) {
    h2t_server_del(rs->s);
    return idx;
  }
  snprintf(rs->url, sizeof rs->url, "http://127.0.0.1:%d",
           (int)h2t_server_port(rs->s, idx));
  h2t_server_handle(rs->s, "/", handle_delay, rs);
  if (pthread_create(&rs->th, NULL, replica_main, rs->s) != 0) {
    h2t_server_del(rs->s);
    return H2T_ERR_SYSTEM;
  }
  return 0;
}

static void replica_stop(replica_srv *rs) {
  h2t_server_shutdown_async(rs->s);
  pthread_join(rs->th, NULL);
  h2t_server_del(rs->s);
}

/* ---- one run: N tasks through one policy -------------------------------- */

typedef struct run_state {
  double *lat_us;
  size_t ndone, nfailed;
} run_state;

static void task_done(const h2t_saturate_result *res, void *user) {
  run_state *st = user;
  if (res->error || res->status != 200)
    st->nfailed++;
  st->lat_us[st->ndone++] = (double)res->total_us;
}



typedef struct figures {
  double tps, p50, p99;
  size_t failed;
} figures;

static int one_run(const opts *o, const char *const *urls, size_t n,
                   h2t_saturate_policy policy, unsigned seed, figures *f) {
  h2t_client *c;
  h2t_client_config cc = {H2T_CLIENT_CONFIG_INIT};
  cc.max_conns_per_origin = 1;
  int rc = h2t_client_new(&c, &cc);
  if (rc != 0)
    return rc;
  h2t_saturate *s;
  h2t_saturate_config sc = {H2T_SATURATE_CONFIG_INIT, .client = c,
                            .replicas = urls, .nreplicas = n,
                            .workers_each = (uint32_t)o->workers,
                            .policy = policy, .seed = seed};
  if ((rc = h2t_saturate_new(&s, &sc)) != 0) {
    h2t_client_del(c);
    return rc;
  }
  run_state st = {.lat_us = calloc(o->tasks, sizeof(double))};
  if (!st.lat_us) {
    h2t_saturate_del(s);
    h2t_client_del(c);
    return H2T_ERR_NOMEM;
  }
  char path[64];
  snprintf(path, sizeof path, "/delay?ms=%llu", (unsigned long long)o->ms);
  h2t_request_opts ro = {H2T_REQUEST_OPTS_INIT, .url = path};
  uint64_t t0 = h2t_now_us();
  for (uint64_t i = 0; i < o->tasks && rc == 0; i++)
    rc = h2t_saturate_submit(s, &ro, task_done, &st, NULL);
  while (rc == 0 && h2t_saturate_pending(s))
    ev_run(h2t_client_loop(c), EVRUN_ONCE);
  uint64_t t1 = h2t_now_us();
  h2t_saturate_del(s);
  h2t_client_del(c);
  if (rc == 0) {
    qsort(st.lat_us, st.ndone, sizeof(double), bench_cmp_double);
    f->tps = (double)st.ndone * 1e6 / (double)(t1 - t0);
    f->p50 = bench_pct(st.lat_us, st.ndone, 0.5);
    f->p99 = bench_pct(st.lat_us, st.ndone, 0.99);
    f->failed = st.nfailed;
  }
  free(st.lat_us);
  return rc;
}


int bench_saturate_main(int argc, char **argv) {
  opts o = {.replicas = 2, .slow = 8, .workers = 4, .tasks = 1000, .ms = 5,
            .rounds = 3};
  static const struct option lo[] = {
      {"replicas", required_argument, NULL, 'r'},
      {"slow", required_argument, NULL, 'k'},
      {"workers", required_argument, NULL, 'w'},
      {"tasks", required_argument, NULL, 'n'},
      {"ms", required_argument, NULL, 'd'},
      {"rounds", required_argument, NULL, 'R'},
      {"replica", required_argument, NULL, 'U'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  int ch;
  optind = 1;
  while ((ch = getopt_long(argc, argv, "r:k:w:n:d:h", lo, NULL)) != -1) {
    switch (ch) {
    case 'r':
      if (cli_parse_u64(optarg, 1, MAX_REPL, &o.replicas))
        return bad("--replicas wants 1 to 16", optarg);
      break;
    case 'k':
      if (cli_parse_u64(optarg, 1, 1000, &o.slow))
        return bad("--slow wants 1 to 1000", optarg);
      break;
    case 'w':
      if (cli_parse_u64(optarg, 1, 1000, &o.workers))
        return bad("--workers wants 1 to 1000", optarg);
      break;
    case 'n':
      if (cli_parse_u64(optarg, 1, 10000000, &o.tasks))
        return bad("--tasks wants 1 to 10000000", optarg);
      break;
    case 'd':
      if (cli_parse_u64(optarg, 1, 60000, &o.ms))
        return bad("--ms wants 1 to 60000", optarg);
      break;
    case 'R':
      if (cli_parse_u64(optarg, 1, 100, &o.rounds))
        return bad("--rounds wants 1 to 100", optarg);
      break;
    case 'U':
      if (o.nurls == MAX_REPL)
        return bad("too many --replica", optarg);
      o.urls[o.nurls++] = optarg;
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (optind != argc)
    return bad("unexpected argument", argv[optind]);

  replica_srv srv[MAX_REPL];
  const char *urls[MAX_REPL];
  size_t n = o.nurls ? o.nurls : o.replicas, started = 0;
  int rc = 0;
  if (o.nurls) {
    memcpy(urls, o.urls, n * sizeof *urls);
  } else {
    for (size_t i = 0; i < n && rc == 0; i++) {
      rc = replica_start(&srv[i], i == n - 1 && n > 1 ? (uint32_t)o.slow : 1);
      if (rc == 0)
        urls[started++] = srv[i].url;
    }
    if (rc != 0) {
      fprintf(stderr, "h2bench saturate: starting a replica: %s\n",
              h2t_strerror(rc));
      for (size_t i = 0; i < started; i++)
        replica_stop(&srv[i]);
      return 1;
    }
  }
  /* The ideal: every replica's workers always busy. */
  double ideal = 0;
  for (size_t i = 0; i < n; i++) {
    double scale = !o.nurls && i == n - 1 && n > 1 ? (double)o.slow : 1.0;
    ideal += (double)o.workers * 1000.0 / ((double)o.ms * scale);
  }
  if (o.nurls)
    printf("replicas: %zu given (their speeds are theirs: the ideal assumes "
           "all fast)\n", n);
  else
    printf("replicas: %zu on loopback, the last %llux slower; %llu workers "
           "each; tasks of %llu ms; %llu tasks per run, %llu rounds\n",
           n, (unsigned long long)o.slow, (unsigned long long)o.workers,
           (unsigned long long)o.ms, (unsigned long long)o.tasks,
           (unsigned long long)o.rounds);

  static const h2t_saturate_policy pol[4] = {
      H2T_SATURATE_RANDOM, H2T_SATURATE_ROUND_ROBIN,
      H2T_SATURATE_LEAST_OUTSTANDING, H2T_SATURATE_FREE_SLOT};
  static const char *const label[4] = {"random", "round-robin",
                                       "least-outstanding", "saturate"};
  double tps[4][100], p50[4][100], p99[4][100];
  size_t failed = 0;
  for (uint64_t round = 0; round < o.rounds && rc == 0; round++) {
    for (int j = 0; j < 4 && rc == 0; j++) {
      int p = (int)((j + round) % 4); /* rotate the order each round */
      figures f;
      rc = one_run(&o, urls, n, pol[p], (unsigned)(round + 1), &f);
      if (rc == 0) {
        tps[p][round] = f.tps;
        p50[p][round] = f.p50;
        p99[p][round] = f.p99;
        failed += f.failed;
      }
    }
  }
  if (!o.nurls)
    for (size_t i = 0; i < n; i++)
      replica_stop(&srv[i]);
  if (rc != 0) {
    fprintf(stderr, "h2bench saturate: %s\n", h2t_strerror(rc));
    return 1;
  }
  printf("%-18s %12s %10s %10s %9s\n", "policy", "tasks/s", "p50", "p99",
         "of ideal");
  double med[4];
  for (int p = 0; p < 4; p++) {
    char a[32], b[32];
    med[p] = bench_median(tps[p], o.rounds);
    printf("%-18s %12.1f %10s %10s %8.1f%%\n", label[p], med[p],
           cli_fmt_duration(a, sizeof a, bench_median(p50[p], o.rounds)),
           cli_fmt_duration(b, sizeof b, bench_median(p99[p], o.rounds)),
           100.0 * med[p] / ideal);
  }
  printf("%-18s %12.1f\n", "ideal", ideal);
  printf("saturate/random: %.2fx\n", med[3] / med[0]);
  printf("saturate/ideal: %.1f%%\n", 100.0 * med[3] / ideal);
  if (failed)
    printf("failed tasks: %zu\n", failed);
  return failed ? 1 : 0;
}
