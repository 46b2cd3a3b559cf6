/*
 * h2bench writer: the server's frame-writer modes against the same load.
 *
 * For each configuration (connections x body size x h2c/TLS) and each round,
 * every writer mode in turn (the order rotates each round, A/B style) gets
 * an in-process server on its own thread and loop, on an ephemeral port,
 * serving one static body with tracing on; h2load (a child process) drives
 * it with -m 10.  Reported: the median over rounds of req/s, p50 and p99
 * latency (from h2load's per-request log), and the ratios reused/spawn and
 * reused/inline.  The machine is noisy: medians, not means.
 */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <h2trace/server.h>
#include "bench.h"
#include "cli.h"

#define MAX_ROUNDS 15
#define NMODES 3

typedef struct opts {
  double duration;  /* s per run, unless n */
  long n;           /* requests per run */
  int rounds;
  int modes[NMODES], nmodes;
  size_t bodies[2];
  int nbodies;
  int tls[2], ntls;
  int conns[2], nconns;
  int trace;
  uint32_t spin_us; /* the reused writer's writer_spin_us */
  int verbose;
} opts;

typedef struct result {
  double rps, p50_us, p99_us;
  long failed;
} result;

static void usage(FILE *f) {
  fprintf(f,
      "usage: h2bench writer [options]\n"
      "  --duration S     seconds per run (default 2)\n"
      "  -n N             requests per run instead of a duration\n"
      "  --rounds R       rounds per configuration, medians reported (default 3)\n"
      "  --quick          1 s runs, 1 round, -c1 only (smoke test)\n"
      "  --modes LIST     comma list of reused,spawn,inline (default all)\n"
      "  --body LIST      comma list of sizes: 6, 16k, ... (default 6,16k)\n"
      "  --tls            TLS only   --h2c  h2c only (default both)\n"
      "  --conns LIST     comma list of h2load -c values (default 1,100)\n"
      "  --no-trace       run the server without trace hooks\n"
      "  --spin US        the reused writer's writer_spin_us (default 0)\n"
      "  -v               print every run\n");
}

static int bad(const char *msg, const char *arg) {
  fprintf(stderr, "h2bench writer: %s%s%s\n", msg, arg ? ": " : "",
          arg ? arg : "");
  usage(stderr);
  return 2;
}

static int parse_size(const char *s, size_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *s == '-')
    return -1;
  if (*end == 'k' || *end == 'K') {
    v *= 1024;
    end++;
  } else if (*end == 'm' || *end == 'M') {
    v *= 1024 * 1024;
    end++;
  }
  if (*end || v == 0 || v > (64u << 20))
    return -1;
  *out = (size_t)v;
  return 0;
}

/* ---- the server under test ------------------------------------------- */

typedef struct bsrv {
  h2t_server *s;
  pthread_t th;
  int port;
  const uint8_t *body;
  size_t len;
  char cl[24];
  unsigned long long events;
  h2t_server_trace tr;
} bsrv;

static void count_event(const h2t_event *ev, void *user) {
  ((bsrv *)user)->events++;
}

static void handle(h2t_server_req *r, void *user) {
  bsrv *b = user;
  h2t_header h[2] = {{"content-type", "application/octet-stream"},
                     {"content-length", b->cl}};
  h2t_server_req_respond(r, 200, h, 2, b->body, b->len, H2T_RESPOND_NOCOPY);
}

static void *srv_main(void *arg) {
  h2t_server_run(arg);
  return NULL;
}

static int bsrv_start(bsrv *b, h2t_writer_mode mode, int tls, const char *cert,
                      const char *key, int trace, uint32_t spin_us) {
  h2t_server_config cfg = {H2T_SERVER_CONFIG_INIT};
  cfg.writer = mode;
  cfg.writer_spin_us = spin_us;
  if (trace) {
    b->tr = (h2t_server_trace){H2T_SERVER_TRACE_INIT, .user = b,
                               .any = count_event};
    cfg.trace = &b->tr;
  }
  cfg.max_concurrent_streams = 1000;
  int rc = h2t_server_new(&b->s, &cfg);
  if (rc != 0)
    return rc;
  h2t_listen_opts lo = {H2T_LISTEN_OPTS_INIT, .cert_file = tls ? cert : NULL,
                        .key_file = tls ? key : NULL, .backlog = 1024};
  int idx = h2t_server_listen(b->s, &lo);
  if (idx < 0) {
    h2t_server_del(b->s);
    return idx;
  }
  b->port = h2t_server_port(b->s, idx);
  snprintf(b->cl, sizeof b->cl, "%zu", b->len);
  h2t_server_handle(b->s, "/", handle, b);
  if (pthread_create(&b->th, NULL, srv_main, b->s) != 0) {
    h2t_server_del(b->s);
    return H2T_ERR_SYSTEM;
  }
  return 0;
}

static void bsrv_stop(bsrv *b) {
  h2t_server_shutdown_async(b->s);
  pthread_join(b->th, NULL);
  h2t_server_del(b->s);
}

/* ---- child processes --------------------------------------------------- */

/* Latency percentiles from h2load's --log-file (3rd column, µs). */
static int latencies(const char *path, double *p50, double *p99) {
  FILE *f = fopen(path, "r");
  if (!f)
    return -1;
  size_t n = 0, cap = 1 << 16;
  double *v = malloc(cap * sizeof *v);
  long long start;
  int status;
  long long dur;
  while (v && fscanf(f, "%lld %d %lld", &start, &status, &dur) == 3) {
    if (status < 0)
      continue;
    if (n == cap) {
      double *nv = realloc(v, (cap *= 2) * sizeof *v);
      if (!nv)
        break;
      v = nv;
    }
    v[n++] = (double)dur;
  }
  fclose(f);
  if (!v)
    return -1;
  qsort(v, n, sizeof *v, bench_cmp_double);
  *p50 = bench_pct(v, n, 0.50);
  *p99 = bench_pct(v, n, 0.99);
  free(v);
  return n ? 0 : -1;
}

static int one_run(const opts *o, h2t_writer_mode mode, int tls, int conns,
                   size_t body_len, const uint8_t *body, const char *dir,
                   const char *cert, const char *key, result *res) {
  bsrv b = {.body = body, .len = body_len};
  int rc = bsrv_start(&b, mode, tls, cert, key, o->trace, o->spin_us);
  if (rc != 0) {
    fprintf(stderr, "h2bench writer: server: %s\n", h2t_strerror(rc));
    return -1;
  }
  char url[128], logf[300], logarg[320], c[16], dur[32], n[32];
  snprintf(url, sizeof url, "%s://127.0.0.1:%d/", tls ? "https" : "http",
           b.port);
  snprintf(logf, sizeof logf, "%s/h2load.log", dir);
  snprintf(logarg, sizeof logarg, "--log-file=%s", logf);
  snprintf(c, sizeof c, "%d", conns);
  char *argv[16];
  int k = 0;
  argv[k++] = "h2load";
  argv[k++] = "-c";
  argv[k++] = c;
  argv[k++] = "-m";
  argv[k++] = "10";
  if (o->n > 0) {
    snprintf(n, sizeof n, "%ld", o->n);
    argv[k++] = "-n";
    argv[k++] = n;
  } else {
    snprintf(dur, sizeof dur, "%dms", (int)(o->duration * 1000));
    argv[k++] = "-D";
    argv[k++] = dur;
    argv[k++] = "--warm-up-time=200ms";
  }
  argv[k++] = logarg;
  argv[k++] = url;
  argv[k] = NULL;
  static char out[65536];
  int st = bench_run(argv, out, sizeof out);
  bsrv_stop(&b);
  const char *fin = strstr(out, "finished in");
  const char *reqs = strstr(out, "requests:");
  if (st != 0 || !fin || !reqs) {
    fprintf(stderr, "h2bench writer: h2load failed (exit %d):\n%s\n", st, out);
    return -1;
  }
  const char *r = strstr(fin, ", ");
  res->rps = r ? strtod(r + 2, NULL) : 0;
  long failed = 0, errored = 0;
  const char *fl = strstr(reqs, "succeeded, ");
  if (fl)
    sscanf(fl, "succeeded, %ld failed, %ld errored", &failed, &errored);
  res->failed = failed + errored;
  res->p50_us = res->p99_us = 0;
  latencies(logf, &res->p50_us, &res->p99_us);
  unlink(logf);
  if (o->verbose)
    printf("    run %-6s %10.0f req/s  p50 %6.0f us  p99 %6.0f us%s\n",
           h2t_writer_mode_name(mode), res->rps, res->p50_us, res->p99_us,
           res->failed ? "  (failures!)" : "");
  return 0;
}

static int make_cert(const char *dir, char *cert, char *key, size_t cap) {
  snprintf(cert, cap, "%s/cert.pem", dir);
  snprintf(key, cap, "%s/key.pem", dir);
  char *argv[] = {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                  "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
                  "-out", cert, "-days", "2", "-subj", "/CN=localhost", NULL};
  char out[4096];
  return bench_run(argv, out, sizeof out) == 0 ? 0 : -1;
}

static int parse_list(const char *s, int (*one)(const char *, void *),
                      void *arg) {
  char buf[256];
  snprintf(buf, sizeof buf, "%s", s);
  char *save = NULL;
  int n = 0;
  for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
    if (one(t, arg) != 0)
      return -1;
    n++;
  }
  return n ? 0 : -1;
}

static int add_mode(const char *t, void *arg) {
  opts *o = arg;
  h2t_writer_mode m;
  if (h2t_writer_mode_parse(t, &m) != 0 || o->nmodes >= NMODES)
    return -1;
  for (int i = 0; i < o->nmodes; i++)
    if (o->modes[i] == (int)m)
      return -1;
  o->modes[o->nmodes++] = (int)m;
  return 0;
}

static int add_body(const char *t, void *arg) {
  opts *o = arg;
  size_t v;
  if (parse_size(t, &v) != 0 || o->nbodies >= 2)
    return -1;
  o->bodies[o->nbodies++] = v;
  return 0;
}

static int add_conns(const char *t, void *arg) {
  opts *o = arg;
  char *end;
  long v = strtol(t, &end, 10);
  if (*end || v < 1 || v > 1000 || o->nconns >= 2)
    return -1;
  o->conns[o->nconns++] = (int)v;
  return 0;
}

int bench_writer_main(int argc, char **argv) {
  opts o = {.duration = 2, .rounds = 3, .trace = 1};
  int only_tls = 0, only_h2c = 0, quick = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(a, "--quick")) {
      quick = 1;
    } else if (!strcmp(a, "--tls")) {
      only_tls = 1;
    } else if (!strcmp(a, "--h2c")) {
      only_h2c = 1;
    } else if (!strcmp(a, "--no-trace")) {
      o.trace = 0;
    } else if (!strcmp(a, "-v")) {
      o.verbose = 1;
    } else if (!v) {
      return bad("unknown option or missing value", a);
    } else if (!strcmp(a, "--spin")) {
      uint64_t sp;
      if (cli_parse_u64(v, 0, 10000, &sp) != 0)
        return bad("bad --spin (0 to 10000 us)", v);
      o.spin_us = (uint32_t)sp;
      i++;
    } else if (!strcmp(a, "--duration")) {
      char *end;
      o.duration = strtod(v, &end);
      if (*end || !(o.duration >= 0.1 && o.duration <= 600))
        return bad("bad --duration", v);
      i++;
    } else if (!strcmp(a, "-n")) {
      char *end;
      o.n = strtol(v, &end, 10);
      if (*end || o.n < 1)
        return bad("bad -n", v);
      i++;
    } else if (!strcmp(a, "--rounds")) {
      char *end;
      o.rounds = (int)strtol(v, &end, 10);
      if (*end || o.rounds < 1 || o.rounds > MAX_ROUNDS)
        return bad("bad --rounds (1..15)", v);
      i++;
    } else if (!strcmp(a, "--modes")) {
      if (parse_list(v, add_mode, &o) != 0)
        return bad("bad --modes", v);
      i++;
    } else if (!strcmp(a, "--body")) {
      if (parse_list(v, add_body, &o) != 0)
        return bad("bad --body", v);
      i++;
    } else if (!strcmp(a, "--conns")) {
      if (parse_list(v, add_conns, &o) != 0)
        return bad("bad --conns", v);
      i++;
    } else {
      return bad("unknown option", a);
    }
  }
  if (only_tls && only_h2c)
    return bad("--tls and --h2c exclude each other", NULL);
  if (quick) {
    o.duration = 1;
    o.rounds = 1;
    if (!o.nconns)
      o.conns[o.nconns++] = 1;
  }
  if (!o.nmodes)
    for (int m = 0; m < NMODES; m++)
      o.modes[o.nmodes++] = m;
  if (!o.nbodies) {
    o.bodies[o.nbodies++] = 6;
    o.bodies[o.nbodies++] = 16384;
  }
  if (!o.nconns) {
    o.conns[o.nconns++] = 1;
    o.conns[o.nconns++] = 100;
  }
  if (!only_tls)
    o.tls[o.ntls++] = 0;
  if (!only_h2c)
    o.tls[o.ntls++] = 1;

  signal(SIGPIPE, SIG_IGN);
  char dir[] = "/tmp/h2bench-writer-XXXXXX";
  if (!mkdtemp(dir)) {
    perror("h2bench writer: mkdtemp");
    return 1;
  }
  char cert[300], key[300];
  int need_tls = o.tls[o.ntls - 1] == 1;
  if (need_tls && make_cert(dir, cert, key, sizeof cert) != 0) {
    fprintf(stderr, "h2bench writer: could not make a certificate (openssl)\n");
    rmdir(dir);
    return 1;
  }
  size_t maxb = o.bodies[0] > (o.nbodies > 1 ? o.bodies[1] : 0)
                    ? o.bodies[0] : o.bodies[1];
  uint8_t *body = malloc(maxb);
  for (size_t i = 0; body && i < maxb; i++)
    body[i] = (uint8_t)('a' + i % 26);
  int rc = body ? 0 : 1;

  printf("h2bench writer: h2load -m 10, %s, %d round%s, medians%s; "
         "reused writer_spin_us %u\n",
         o.n > 0 ? "fixed request count" : "fixed duration", o.rounds,
         o.rounds > 1 ? "s" : "", o.trace ? ", tracing on" : "",
         (unsigned)o.spin_us);
  for (int ti = 0; ti < o.ntls && !rc; ti++)
    for (int bi = 0; bi < o.nbodies && !rc; bi++)
      for (int ci = 0; ci < o.nconns && !rc; ci++) {
        int tls = o.tls[ti], conns = o.conns[ci];
        size_t blen = o.bodies[bi];
        printf("\n%s, body %zu B, -c%d -m10:\n", tls ? "TLS" : "h2c", blen,
               conns);
        fflush(stdout);
        double rps[NMODES][MAX_ROUNDS], p50[NMODES][MAX_ROUNDS],
            p99[NMODES][MAX_ROUNDS];
        long failed[NMODES] = {0};
        for (int r = 0; r < o.rounds && !rc; r++)
          for (int k = 0; k < o.nmodes && !rc; k++) {
            int mi = (k + r) % o.nmodes; /* rotate the order each round */
            result res;
            if (one_run(&o, (h2t_writer_mode)o.modes[mi], tls, conns, blen,
                        body, dir, cert, key, &res) != 0) {
              rc = 1;
              break;
            }
            rps[mi][r] = res.rps;
            p50[mi][r] = res.p50_us;
            p99[mi][r] = res.p99_us;
            failed[mi] += res.failed;
          }
        if (rc)
          break;
        double med[NMODES];
        for (int mi = 0; mi < o.nmodes; mi++) {
          med[mi] = bench_median(rps[mi], o.rounds);
          printf("  %-7s %10.0f req/s   p50 %7.0f us   p99 %7.0f us%s\n",
                 h2t_writer_mode_name((h2t_writer_mode)o.modes[mi]), med[mi],
                 bench_median(p50[mi], o.rounds), bench_median(p99[mi], o.rounds),
                 failed[mi] ? "   (some requests failed)" : "");
        }
        int ir = -1, is = -1, ii = -1;
        for (int mi = 0; mi < o.nmodes; mi++) {
          if (o.modes[mi] == H2T_WRITER_REUSED)
            ir = mi;
          if (o.modes[mi] == H2T_WRITER_SPAWN)
            is = mi;
          if (o.modes[mi] == H2T_WRITER_INLINE)
            ii = mi;
        }
        if (ir >= 0 && is >= 0 && med[is] > 0)
          printf("  reused/spawn  %.2fx req/s\n", med[ir] / med[is]);
        if (ir >= 0 && ii >= 0 && med[ii] > 0)
          printf("  reused/inline %.2fx req/s\n", med[ir] / med[ii]);
        fflush(stdout);
      }
  free(body);
  if (need_tls) {
    unlink(cert);
    unlink(key);
  }
  rmdir(dir);
  return rc;
}
