/*
 * h2bench compare: h2serve against nghttpd and h2o under the same load.
 *
 * For each transport (h2c, TLS) the three servers are started on loopback
 * (one worker thread each by default, or --threads N; h2serve with
 * --threads N runs N loops), serving the same files; h2load then runs against each in turn, the order rotated every
 * round, for each body size.  Figures are medians over the rounds; the
 * ratio lines `h2serve/h2o` and `h2serve/nghttpd` compare req/s.  With
 * --instructions (and valgrind installed) each server also runs under
 * callgrind for N and 2N requests: the difference over N is its
 * instructions per request, start-up and shutdown cancelled out.
 * --sweep runs it all for N = 1 .. the cores online, one block per N, and
 * ends with a table of req/s per N.
 * Every process it starts is stopped by PID.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <glob.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <h2trace/h2trace.h>
#include "bench.h"
#include "cli.h"

#define NSRV 3
static const char *const srv_name[NSRV] = {"h2serve", "nghttpd", "h2o"};

typedef struct opts {
  uint64_t rounds, duration_s, conns, streams, threads, n, spin_us;
  int h2c, tls, instructions, verbose, sweep;
  size_t bodies[4];
  size_t nbodies;
  int use[NSRV];
} opts;

static void usage(FILE *f) {
  fprintf(f,
          "usage: h2bench compare [options]\n"
          "  --rounds R         rounds, order rotated, medians (default 3)\n"
          "  --duration S       seconds per h2load run (default 2)\n"
          "  --conns C          h2load connections (default 1)\n"
          "  --streams M        streams per connection (default 10)\n"
          "  --threads N        server worker threads (default 1; h2serve\n"
          "                     --threads N: N loops)\n"
          "  --sweep            every N from 1 to the cores online; give\n"
          "                     --conns >= N so each loop gets connections\n"
          "  --transport T      h2c, tls or both (default both)\n"
          "  --bodies LIST      body sizes, bytes (default 6,16384)\n"
          "  --servers LIST     of h2serve,nghttpd,h2o (default all)\n"
          "  --writer-spin US   h2serve --writer-spin US (default 0)\n"
          "  --instructions     also instructions per request (callgrind;\n"
          "                     slow: N and 2N requests per server)\n"
          "  -n N               requests for --instructions (default 20000)\n"
          "  -v, --verbose      every run\n"
          "  -h, --help\n");
}

static int bad(const char *msg, const char *arg) {
  fprintf(stderr, "h2bench compare: %s%s%s\n", msg, arg ? ": " : "",
          arg ? arg : "");
  return 2;
}

/* ---- processes ---------------------------------------------------------- */

static pid_t spawn(char *const argv[], const char *log) {
  pid_t pid = fork();
  if (pid == 0) {
    int fd = open(log ? log : "/dev/null", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    execvp(argv[0], argv);
    _exit(127);
  }
  return pid;
}

static void stop(pid_t pid, int sig) {
  if (pid <= 0)
    return;
  kill(pid, sig);
  for (int i = 0; i < 300; i++) { /* up to 30 s: valgrind writes its data */
    if (waitpid(pid, NULL, WNOHANG) == pid)
      return;
    usleep(100000);
  }
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
}

static int port_open(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return 0;
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_port = htons((uint16_t)port),
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  int ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
  close(fd);
  return ok;
}

static int wait_port(int port, int ms) {
  for (int i = 0; i < ms / 50; i++) {
    if (port_open(port))
      return 0;
    usleep(50000);
  }
  return -1;
}

/* A free port on 127.0.0.1 (bound to 0, then released). */
static int free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0)
    return -1;
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof sa;
  int port = -1;
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) == 0 &&
      getsockname(fd, (struct sockaddr *)&sa, &len) == 0)
    port = ntohs(sa.sin_port);
  close(fd);
  return port;
}


/* ---- the servers --------------------------------------------------------- */

typedef struct env {
  char dir[128], cert[160], key[160], bindir[200];
} env;

typedef struct server {
  int which, tls, port;
  pid_t pid;
} server;

/* argv for server `which`; the strings live in bufs. */
static int server_argv(const env *e, const opts *o, int which, int tls,
                       int port, char *argv[], char bufs[][320]) {
  int k = 0;
  snprintf(bufs[0], 320, "%d", port);
  snprintf(bufs[1], 320, "%llu", (unsigned long long)o->threads);
  switch (which) {
  case 0:
    snprintf(bufs[2], 320, "%s/h2serve", e->bindir);
    argv[k++] = bufs[2];
    if (tls) {
      argv[k++] = "--tls";
      argv[k++] = (char *)e->cert;
      argv[k++] = (char *)e->key;
    } else {
      argv[k++] = "--h2c";
    }
    argv[k++] = "--port";
    argv[k++] = bufs[0];
    argv[k++] = "--root";
    argv[k++] = (char *)e->dir;
    argv[k++] = "--quiet";
    argv[k++] = "--threads";
    argv[k++] = bufs[1];
    snprintf(bufs[3], 320, "%llu", (unsigned long long)o->spin_us);
    argv[k++] = "--writer-spin";
    argv[k++] = bufs[3];
    break;
  case 1:
    argv[k++] = "nghttpd";
    argv[k++] = "--address=127.0.0.1";
    snprintf(bufs[2], 320, "--htdocs=%s", e->dir);
    argv[k++] = bufs[2];
    argv[k++] = "-n";
    argv[k++] = bufs[1];
    if (!tls)
      argv[k++] = "--no-tls";
    argv[k++] = bufs[0];
    if (tls) {
      argv[k++] = (char *)e->key;
      argv[k++] = (char *)e->cert;
    }
    break;
  default: {
    snprintf(bufs[3], 320, "%s/h2o-%s.conf", e->dir, tls ? "tls" : "h2c");
    FILE *f = fopen(bufs[3], "w");
    if (!f)
      return -1;
    fprintf(f,
            "listen:\n  host: 127.0.0.1\n  port: %d\n", port);
    if (tls)
      fprintf(f, "  ssl:\n    certificate-file: %s\n    key-file: %s\n",
              e->cert, e->key);
    fprintf(f,
            "user: root\nnum-threads: %llu\naccess-log: /dev/null\n"
            "hosts:\n  default:\n    paths:\n      /:\n        file.dir: %s\n",
            (unsigned long long)o->threads, e->dir);
    fclose(f);
    argv[k++] = "h2o";
    argv[k++] = "-c";
    argv[k++] = bufs[3];
    break;
  }
  }
  argv[k] = NULL;
  return k;
}

static int server_start(const env *e, const opts *o, server *s, int which,
                        int tls, const char *wrap_out) {
  char bufs[4][320];
  char *argv[24], *full[32];
  s->which = which;
  s->tls = tls;
  s->port = free_port();
  if (s->port <= 0 || server_argv(e, o, which, tls, s->port, argv, bufs) < 0)
    return -1;
  char outarg[400];
  char *const *use = argv;
  if (wrap_out) { /* under callgrind */
    int k = 0;
    snprintf(outarg, sizeof outarg, "--callgrind-out-file=%s.%%p", wrap_out);
    full[k++] = "valgrind";
    full[k++] = "--tool=callgrind";
    full[k++] = outarg;
    for (int i = 0; argv[i]; i++)
      full[k++] = argv[i];
    full[k] = NULL;
    use = full;
  }
  s->pid = spawn(use, NULL);
  if (s->pid < 0 || wait_port(s->port, wrap_out ? 30000 : 5000) != 0) {
    stop(s->pid, SIGKILL);
    fprintf(stderr, "h2bench compare: %s did not start\n", srv_name[which]);
    return -1;
  }
  return 0;
}

/* ---- h2load ------------------------------------------------------------- */

/* Every server encrypts with the same suite: each prefers its own order
 * (h2o and h2serve AES-128-GCM, nghttpd OpenSSL's AES-256-GCM first), and
 * AES-256 costs 14 rounds where AES-128 costs 10. */
#define TLS13_SUITE "TLS_AES_128_GCM_SHA256"

static int h2load(const opts *o, const server *s, size_t body, uint64_t n,
                  double *rps) {
  char url[128], c[16], m[16], dur[32], nn[32];
  snprintf(url, sizeof url, "%s://127.0.0.1:%d/b%zu", s->tls ? "https" : "http",
           s->port, body);
  snprintf(c, sizeof c, "%llu", (unsigned long long)o->conns);
  snprintf(m, sizeof m, "%llu", (unsigned long long)o->streams);
  char *argv[16];
  int k = 0;
  argv[k++] = "h2load";
  argv[k++] = "-t";
  argv[k++] = "1";
  argv[k++] = "-c";
  argv[k++] = c;
  argv[k++] = "-m";
  argv[k++] = m;
  if (n) {
    snprintf(nn, sizeof nn, "%llu", (unsigned long long)n);
    argv[k++] = "-n";
    argv[k++] = nn;
  } else {
    snprintf(dur, sizeof dur, "%llu", (unsigned long long)o->duration_s);
    argv[k++] = "-D";
    argv[k++] = dur;
    argv[k++] = "--warm-up-time=200ms";
  }
  if (s->tls)
    argv[k++] = "--tls13-ciphers=" TLS13_SUITE;
  argv[k++] = url;
  argv[k] = NULL;
  static char out[65536];
  int st = bench_run(argv, out, sizeof out);
  const char *fin = strstr(out, "finished in");
  const char *ok = strstr(out, " succeeded, 0 failed, 0 errored");
  if (st != 0 || !fin || !ok) {
    fprintf(stderr, "h2bench compare: h2load against %s failed:\n%s\n",
            srv_name[s->which], out);
    return -1;
  }
  const char *r = strstr(fin, ", ");
  *rps = r ? strtod(r + 2, NULL) : 0;
  return 0;
}

/* callgrind's total instructions in file, or -1 (also while the file is
 * still being written): the "totals:" line that ends it.  Only the last
 * 4 KiB are read, since callgrind_sum() polls files of megabytes. */
static double callgrind_total(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f)
    return -1;
  if (fseek(f, -4096, SEEK_END) != 0)
    rewind(f); /* a smaller file */
  char line[512];
  double total = -1;
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, "totals:", 7))
      total = strtod(line + 7, NULL);
  fclose(f);
  return total;
}

/* The sum over the files prefix.<pid> of every process of the server (h2o
 * forks a key-signing process, neverbleed, for TLS), removing them; -1 if
 * none could be read. */
static double callgrind_sum(const char *prefix) {
  char pat[400];
  snprintf(pat, sizeof pat, "%s.*", prefix);
  /* a process that outlives the server's main one (neverbleed notices the
   * end of its parent) writes its file a moment later: wait until every
   * file is complete and their number held for 300 ms (at most 5 s) */
  size_t last = 0;
  for (int waited = 0, stable = 0; waited < 5000 && stable < 300;
       waited += 50) {
    glob_t g;
    size_t n = 0, complete = 0;
    if (glob(pat, 0, NULL, &g) == 0) {
      n = g.gl_pathc;
      for (size_t i = 0; i < n; i++)
        complete += callgrind_total(g.gl_pathv[i]) >= 0;
      globfree(&g);
    }
    stable = n && n == complete && n == last ? stable + 50 : 0;
    last = n;
    usleep(50000);
  }
  glob_t g;
  double sum = -1;
  if (glob(pat, 0, NULL, &g) != 0)
    return -1;
  for (size_t i = 0; i < g.gl_pathc; i++) {
    double t = callgrind_total(g.gl_pathv[i]);
    if (t >= 0)
      sum = (sum < 0 ? 0 : sum) + t;
    unlink(g.gl_pathv[i]);
  }
  globfree(&g);
  return sum;
}

static double instructions(const env *e, const opts *o, int which, int tls,
                           size_t body) {
  double t[2];
  for (int i = 0; i < 2; i++) {
    char out[300];
    snprintf(out, sizeof out, "%s/cg-%d-%d-%zu-%d", e->dir, which, tls,
             body, i);
    server s;
    if (server_start(e, o, &s, which, tls, out) != 0)
      return -1;
    double rps;
    int rc = h2load(o, &s, body, o->n * (uint64_t)(i + 1), &rps);
    stop(s.pid, SIGTERM); /* nghttpd writes its callgrind data on TERM, not INT */
    t[i] = callgrind_sum(out);
    if (rc != 0 || t[i] < 0)
      return -1;
  }
  double per = (t[1] - t[0]) / (double)o->n;
  return per >= 100 ? per : -1; /* less: the server did not run */
}

/* ---- main ---------------------------------------------------------------- */

static int make_files(env *e, const opts *o) {
  for (size_t i = 0; i < o->nbodies; i++) {
    char path[300];
    snprintf(path, sizeof path, "%s/b%zu", e->dir, o->bodies[i]);
    FILE *f = fopen(path, "w");
    if (!f)
      return -1;
    for (size_t j = 0; j < o->bodies[i]; j++)
      fputc('a' + (int)(j % 26), f);
    fclose(f);
  }
  snprintf(e->cert, sizeof e->cert, "%s/cert.pem", e->dir);
  snprintf(e->key, sizeof e->key, "%s/key.pem", e->dir);
  char keyarg[200], certarg[200];
  snprintf(keyarg, sizeof keyarg, "%s", e->key);
  snprintf(certarg, sizeof certarg, "%s", e->cert);
  char *argv[] = {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                  "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", keyarg,
                  "-out", certarg, "-days", "1", "-subj", "/CN=localhost",
                  "-addext", "subjectAltName=IP:127.0.0.1", NULL};
  static char out[8192];
  return bench_run(argv, out, sizeof out) == 0 ? 0 : -1;
}

static int parse_bodies(const char *s, opts *o) {
  o->nbodies = 0;
  char buf[128];
  snprintf(buf, sizeof buf, "%s", s);
  for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
    uint64_t v;
    if (o->nbodies == 4 || cli_parse_u64(t, 0, 64u << 20, &v))
      return -1;
    o->bodies[o->nbodies++] = (size_t)v;
  }
  return o->nbodies ? 0 : -1;
}

static int parse_servers(const char *s, opts *o) {
  memset(o->use, 0, sizeof o->use);
  char buf[128];
  snprintf(buf, sizeof buf, "%s", s);
  for (char *t = strtok(buf, ","); t; t = strtok(NULL, ",")) {
    int found = 0;
    for (int i = 0; i < NSRV; i++)
      if (!strcmp(t, srv_name[i]))
        o->use[i] = found = 1;
    if (!found)
      return -1;
  }
  return 0;
}

/* The req/s part for o->threads: a line per transport and body size.
 * table (if not NULL) gets the medians at [(tls * 4 + body) * NSRV + server]. */
static int run_rps(const env *e, const opts *o, double *table) {
  printf("h2load -t 1 -c %llu -m %llu, %llus runs, %llu rounds (order "
         "rotated), medians; TLS 1.3 with " TLS13_SUITE
         "; servers: %llu worker thread(s); h2serve --writer-spin %llu\n",
         (unsigned long long)o->conns, (unsigned long long)o->streams,
         (unsigned long long)o->duration_s, (unsigned long long)o->rounds,
         (unsigned long long)o->threads, (unsigned long long)o->spin_us);
  int rc = 0;
  for (int tls = 0; tls < 2 && rc == 0; tls++) {
    if ((tls && !o->tls) || (!tls && !o->h2c))
      continue;
    server s[NSRV];
    memset(s, 0, sizeof s);
    for (int i = 0; i < NSRV && rc == 0; i++)
      if (o->use[i])
        rc = server_start(e, o, &s[i], i, tls, NULL);
    for (size_t bi = 0; bi < o->nbodies && rc == 0; bi++) {
      double rps[NSRV][100];
      for (uint64_t r = 0; r < o->rounds && rc == 0; r++)
        for (int j = 0; j < NSRV && rc == 0; j++) {
          int i = (int)((j + r) % NSRV);
          if (!o->use[i])
            continue;
          rc = h2load(o, &s[i], o->bodies[bi], 0, &rps[i][r]);
          if (rc == 0 && o->verbose)
            printf("    %s %zu B round %llu %s: %.0f req/s\n",
                   tls ? "TLS" : "h2c", o->bodies[bi],
                   (unsigned long long)r + 1, srv_name[i], rps[i][r]);
        }
      if (rc != 0)
        break;
      double med[NSRV] = {0};
      printf("%-4s %6zu B:", tls ? "TLS" : "h2c", o->bodies[bi]);
      for (int i = 0; i < NSRV; i++)
        if (o->use[i]) {
          med[i] = bench_median(rps[i], o->rounds);
          printf("  %s %9.0f req/s", srv_name[i], med[i]);
          if (table)
            table[((size_t)tls * 4 + bi) * NSRV + (size_t)i] = med[i];
        }
      printf("\n");
      for (int i = 1; i < NSRV; i++)
        if (o->use[0] && o->use[i] && med[i] > 0)
          printf("%-4s %6zu B: h2serve/%s %.2fx\n", tls ? "TLS" : "h2c",
                 o->bodies[bi], srv_name[i], med[0] / med[i]);
    }
    for (int i = 0; i < NSRV; i++)
      if (o->use[i])
        stop(s[i].pid, SIGTERM);
  }
  return rc;
}

int bench_compare_main(int argc, char **argv) {
  opts o = {.rounds = 3, .duration_s = 2, .conns = 1, .streams = 10,
            .threads = 1, .n = 20000, .h2c = 1, .tls = 1,
            .bodies = {6, 16384}, .nbodies = 2, .use = {1, 1, 1}};
  static const struct option lo[] = {
      {"rounds", required_argument, NULL, 'R'},
      {"duration", required_argument, NULL, 'D'},
      {"conns", required_argument, NULL, 'c'},
      {"streams", required_argument, NULL, 'm'},
      {"threads", required_argument, NULL, 'T'},
      {"transport", required_argument, NULL, 't'},
      {"bodies", required_argument, NULL, 'b'},
      {"servers", required_argument, NULL, 's'},
      {"instructions", no_argument, NULL, 'I'},
      {"sweep", no_argument, NULL, 'S'},
      {"writer-spin", required_argument, NULL, 'W'},
      {"verbose", no_argument, NULL, 'v'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  int ch;
  optind = 1;
  while ((ch = getopt_long(argc, argv, "n:vh", lo, NULL)) != -1) {
    switch (ch) {
    case 'R':
      if (cli_parse_u64(optarg, 1, 100, &o.rounds))
        return bad("--rounds wants 1 to 100", optarg);
      break;
    case 'D':
      if (cli_parse_u64(optarg, 1, 3600, &o.duration_s))
        return bad("--duration wants 1 to 3600 seconds", optarg);
      break;
    case 'c':
      if (cli_parse_u64(optarg, 1, 10000, &o.conns))
        return bad("--conns wants 1 to 10000", optarg);
      break;
    case 'm':
      if (cli_parse_u64(optarg, 1, 1000, &o.streams))
        return bad("--streams wants 1 to 1000", optarg);
      break;
    case 'W':
      if (cli_parse_u64(optarg, 0, 10000, &o.spin_us))
        return bad("--writer-spin wants 0 to 10000 microseconds", optarg);
      break;
    case 'T':
      if (cli_parse_u64(optarg, 1, 256, &o.threads))
        return bad("--threads wants 1 to 256", optarg);
      break;
    case 't':
      o.h2c = !strcmp(optarg, "h2c") || !strcmp(optarg, "both");
      o.tls = !strcmp(optarg, "tls") || !strcmp(optarg, "both");
      if (!o.h2c && !o.tls)
        return bad("--transport wants h2c, tls or both", optarg);
      break;
    case 'b':
      if (parse_bodies(optarg, &o))
        return bad("--bodies wants up to 4 sizes, e.g. 6,16384", optarg);
      break;
    case 's':
      if (parse_servers(optarg, &o))
        return bad("--servers wants a list of h2serve, nghttpd, h2o", optarg);
      break;
    case 'I':
      o.instructions = 1;
      break;
    case 'S':
      o.sweep = 1;
      break;
    case 'n':
      if (cli_parse_u64(optarg, 100, 10000000, &o.n))
        return bad("-n wants 100 to 10000000", optarg);
      break;
    case 'v':
      o.verbose = 1;
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

  env e;
  memset(&e, 0, sizeof e);
  ssize_t len = readlink("/proc/self/exe", e.bindir, sizeof e.bindir - 1);
  if (len <= 0)
    return bad("cannot find its own directory", NULL);
  e.bindir[len] = '\0';
  *strrchr(e.bindir, '/') = '\0';
  snprintf(e.dir, sizeof e.dir, "/tmp/h2bench-compare.XXXXXX");
  if (!mkdtemp(e.dir) || make_files(&e, &o) != 0)
    return bad("cannot make the served files or the certificate", e.dir);
  if (o.use[2]) { /* h2o: optional, said so when absent */
    char *argv2[] = {"h2o", "--version", NULL};
    static char out[4096];
    if (bench_run(argv2, out, sizeof out) != 0) {
      fprintf(stderr, "h2bench compare: h2o not installed: without it\n");
      o.use[2] = 0;
    }
  }
  int rc = 0;
  if (!o.sweep) {
    rc = run_rps(&e, &o, NULL);
  } else {
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (ncpu < 1)
      ncpu = 1;
    if (ncpu > 64)
      ncpu = 64;
    static double table[64][2 * 4 * NSRV];
    for (long n = 1; n <= ncpu && rc == 0; n++) {
      o.threads = (uint64_t)n;
      printf("--- N = %ld\n", n);
      rc = run_rps(&e, &o, table[n - 1]);
    }
    if (rc == 0) {
      printf("req/s by server threads N (h2serve: N loops), %ld core(s) "
             "online shared with h2load:\n", ncpu);
      for (int tls = 0; tls < 2; tls++) {
        if ((tls && !o.tls) || (!tls && !o.h2c))
          continue;
        for (size_t bi = 0; bi < o.nbodies; bi++)
          for (int i = 0; i < NSRV; i++) {
            if (!o.use[i])
              continue;
            printf("%-4s %6zu B %-8s", tls ? "TLS" : "h2c", o.bodies[bi],
                   srv_name[i]);
            for (long n = 1; n <= ncpu; n++)
              printf("  N=%ld %9.0f", n,
                     table[n - 1][((size_t)tls * 4 + bi) * NSRV + (size_t)i]);
            printf("\n");
          }
      }
    }
  }
  if (rc == 0 && o.instructions) {
    char *argv2[] = {"valgrind", "--version", NULL};
    static char out[4096];
    if (bench_run(argv2, out, sizeof out) != 0) {
      printf("instructions per request: valgrind not installed\n");
    } else {
      printf("instructions per request (callgrind, every process of the server, "
             "%llu requests subtracted from %llu, h2load -c %llu -m %llu):\n",
             (unsigned long long)o.n, (unsigned long long)(2 * o.n),
             (unsigned long long)o.conns, (unsigned long long)o.streams);
      for (int tls = 0; tls < 2; tls++) {
        if ((tls && !o.tls) || (!tls && !o.h2c))
          continue;
        for (size_t bi = 0; bi < o.nbodies; bi++) {
          double ipr[NSRV] = {0};
          printf("%-4s %6zu B:", tls ? "TLS" : "h2c", o.bodies[bi]);
          for (int i = 0; i < NSRV; i++)
            if (o.use[i]) {
              ipr[i] = instructions(&e, &o, i, tls, o.bodies[bi]);
              if (ipr[i] > 0)
                printf("  %s %8.0f", srv_name[i], ipr[i]);
              else
                printf("  %s %8s", srv_name[i], "n/a");
            }
          printf("\n");
          for (int i = 1; i < NSRV; i++)
            if (o.use[0] && o.use[i] && ipr[i] > 0 && ipr[0] > 0)
              printf("%-4s %6zu B: instructions h2serve/%s %.2fx\n",
                     tls ? "TLS" : "h2c", o.bodies[bi], srv_name[i],
                     ipr[0] / ipr[i]);
        }
      }
    }
  }
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", e.dir);
  if (system(cmd) != 0)
    fprintf(stderr, "h2bench compare: could not remove %s\n", e.dir);
  return rc == 0 ? 0 : 1;
}
