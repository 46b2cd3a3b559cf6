/*
 * worker_pool: a service's pool of workers calling backends, the way many
 * are written, with the SIGUSR1 in-flight dump installed as your own
 * program would (h2t_inflight_install_signal).  examples/scenarios/a-*.sh
 * uses it to show workers piling up on one slow backend.
 *
 *   worker_pool [-w W] [-t SECONDS] [--seed S] URL...
 *
 * W workers (default 12); each calls a backend picked at random among the
 * URLs and waits for its answer before the next call, so a slow backend
 * keeps the workers that picked it.  Stops after SECONDS (default 30) or on
 * SIGINT/SIGTERM, cancelling what is still in flight, and prints per URL the
 * calls that finished.  `kill -USR1 PID` writes the in-flight table to
 * stderr, grouped by authority.
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include <ev.h>
#include <h2trace/client.h>
#include <h2trace/inflight.h>

#include "cli.h"

#define MAX_URLS 16

typedef struct pool {
  h2t_client *client;
  struct ev_loop *loop;
  const char *urls[MAX_URLS];
  uint64_t ok[MAX_URLS], failed[MAX_URLS];
  size_t nurls;
  unsigned seed;
  int stopping;
} pool;

typedef struct worker {
  pool *p;
  size_t url; /* the backend of the current call */
} worker;

static void call(worker *w);

static void on_done(h2t_request *req, int error, void *user) {
  worker *w = user;
  pool *p = w->p;
  if (error || h2t_request_status(req) != 200)
    p->failed[w->url]++;
  else
    p->ok[w->url]++;
  call(w);
}

static void call(worker *w) {
  pool *p = w->p;
  if (p->stopping)
    return;
  w->url = (size_t)rand_r(&p->seed) % p->nurls;
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = p->urls[w->url],
                        .on_done = on_done, .user = w};
  if (h2t_request_submit(p->client, &o, NULL) != 0)
    p->failed[w->url]++; /* this worker stops: the count says so */
}

static void on_stop(struct ev_loop *loop, ev_timer *t, int revents) {
  ((pool *)t->data)->stopping = 1;
  ev_break(loop, EVBREAK_ALL);
}

static void on_signal(struct ev_loop *loop, ev_signal *s, int revents) {
  ((pool *)s->data)->stopping = 1;
  ev_break(loop, EVBREAK_ALL);
}

static void usage(FILE *f) {
  fprintf(f, "usage: worker_pool [-w WORKERS] [-t SECONDS] [--seed S] URL...\n"
             "  each worker calls a random URL and waits for it, again and\n"
             "  again; kill -USR1 PID dumps the in-flight table on stderr\n");
}

int main(int argc, char **argv) {
  static const struct option lo[] = {{"seed", required_argument, NULL, 's'},
                                     {"help", no_argument, NULL, 'h'},
                                     {NULL, 0, NULL, 0}};
  uint64_t nworkers = 12, seconds = 30, seed = 1;
  pool p = {0};
  int ch;
  while ((ch = getopt_long(argc, argv, "w:t:h", lo, NULL)) != -1) {
    switch (ch) {
    case 'w':
      if (cli_parse_u64(optarg, 1, 10000, &nworkers))
        return usage(stderr), 2;
      break;
    case 't':
      if (cli_parse_u64(optarg, 1, 86400, &seconds))
        return usage(stderr), 2;
      break;
    case 's':
      if (cli_parse_u64(optarg, 0, UINT32_MAX, &seed))
        return usage(stderr), 2;
      break;
    case 'h':
      usage(stdout);
      return 0;
    default:
      usage(stderr);
      return 2;
    }
  }
  if (optind >= argc || argc - optind > MAX_URLS) {
    usage(stderr);
    return 2;
  }
  for (int i = optind; i < argc; i++)
    p.urls[p.nurls++] = argv[i];
  p.seed = (unsigned)seed;

  worker *w = calloc(nworkers, sizeof *w);
  p.loop = ev_default_loop(0);
  h2t_client_config cfg = {H2T_CLIENT_CONFIG_INIT};
  cfg.loop = p.loop;
  int rc = w ? h2t_client_new(&p.client, &cfg) : H2T_ERR_NOMEM;
  if (rc == 0)
    rc = h2t_inflight_install_signal(-1); /* the one line that matters */
  if (rc != 0) {
    fprintf(stderr, "worker_pool: %s\n", h2t_strerror(rc));
    h2t_client_del(p.client);
    free(w);
    return 1;
  }
  printf("worker_pool: pid %d, %llu workers over %zu backends for %llu s; "
         "kill -USR1 %d dumps what they wait on\n",
         (int)getpid(), (unsigned long long)nworkers, p.nurls,
         (unsigned long long)seconds, (int)getpid());
  fflush(stdout);

  ev_timer stop;
  ev_timer_init(&stop, on_stop, (double)seconds, 0.);
  stop.data = &p;
  ev_timer_start(p.loop, &stop);
  ev_signal sint, sterm;
  ev_signal_init(&sint, on_signal, SIGINT);
  ev_signal_init(&sterm, on_signal, SIGTERM);
  sint.data = sterm.data = &p;
  ev_signal_start(p.loop, &sint);
  ev_signal_start(p.loop, &sterm);
  for (uint64_t i = 0; i < nworkers; i++) {
    w[i].p = &p;
    call(&w[i]);
  }
  ev_run(p.loop, 0);
  ev_timer_stop(p.loop, &stop);
  ev_signal_stop(p.loop, &sint);
  ev_signal_stop(p.loop, &sterm);
  h2t_client_del(p.client); /* cancels the calls still waiting */
  h2t_inflight_uninstall_signal();
  for (size_t i = 0; i < p.nurls; i++)
    printf("worker_pool: %s: %llu calls finished, %llu failed or canceled\n",
           p.urls[i], (unsigned long long)p.ok[i],
           (unsigned long long)p.failed[i]);
  free(w);
  return 0;
}
