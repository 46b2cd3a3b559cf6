/*
 * h2bench client: an h2load-like load generator on the h2trace client, so the
 * library can be compared with h2load on the same server, and the cost of
 * tracing measured (--trace none|all|req).
 *
 * One libev loop, single-threaded like `h2load -t1`; one h2t_client per
 * connection so that exactly C connections are used; M requests kept
 * outstanding on each by submitting the next one from each on_done.  Nothing
 * is allocated or printed per request: latencies go to a preallocated array.
 */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <ev.h>
#include <h2trace/client.h>

#include "bench.h"
#include "cli.h"

#define PROG "h2bench client"

struct bench;

typedef struct conn {
  struct bench *b;
  h2t_client *client;
  uint64_t done; /* measured requests finished on this connection */
  int dead;      /* could not connect: like h2load, stop using it */
} conn;

/* One of the M request slots of a connection: what a request in flight needs. */
typedef struct slot {
  conn *c;
  uint64_t t_start;
} slot;

enum trace_mode { TRACE_NONE, TRACE_ALL, TRACE_REQ };

typedef struct bench {
  /* options */
  uint64_t n, c, m, warmup, timeout_ms, duration_us;
  int warmup_set;
  enum trace_mode trace_mode;
  const char *url, *cacert;
  int insecure, no_traceparent;
  char *body;
  size_t body_len;
  cli_headers headers;

  struct ev_loop *loop;
  conn *conns;
  slot *slots; /* c * m */
  h2t_request_opts ro;
  h2t_client_trace trace;
  ev_timer stop_timer;

  /* the current phase (warmup, then the measured run) */
  int measuring, stopping;
  uint64_t target, started, done, outstanding;
  uint64_t succeeded, failed, errored, timeouts, status[6];
  uint64_t body_bytes;
  uint32_t *lat; /* µs, one per measured request */
  size_t nlat, lat_cap;
  int first_error;

  volatile uint64_t trace_events;
} bench;

/* Not inline and reached only through a pointer, so tracing cost is real. */
__attribute__((noinline)) static void count_event(const h2t_event *ev,
                                                  void *user) {
  bench *b = user;
  b->trace_events++;
}

static void usage(FILE *f) {
  fprintf(f,
      "usage: h2bench client [options] URL\n"
      "Load generator on the h2trace client; output shaped like h2load's.\n"
      "\n"
      "  -n N               requests in total (default 1)\n"
      "  -c C               connections (default 1)\n"
      "  -m M               concurrent streams per connection (default 1)\n"
      "  -D, --duration S   run for S seconds instead of -n requests\n"
      "      --warmup N     requests before timing starts (default: one per\n"
      "                     connection, so connection setup is not timed)\n"
      "      --trace MODE   none (default); all: every hook set on the\n"
      "                     client's default trace; req: the same trace\n"
      "                     attached to each request\n"
      "      --no-traceparent\n"
      "                     send no traceparent header (the library adds\n"
      "                     one by default): the same request as h2load's\n"
      "  -d DATA | @FILE    request body (POST)\n"
      "  -H 'Name: value'   add a request header (repeatable)\n"
      "  -k, --insecure     do not verify the server certificate\n"
      "      --cacert FILE  trust the CA certificates in FILE\n"
      "  -T, --timeout MS   per-request timeout\n"
      "  -h, --help         this help\n");
}

static int usage_error(const char *fmt, const char *arg) {
  return cli_usage_error(PROG, fmt, arg);
}

enum { OPT_WARMUP = 256, OPT_TRACE, OPT_CACERT, OPT_NO_TRACEPARENT };

static int parse_args(bench *b, int argc, char **argv) {
  static const struct option longopts[] = {
      {"duration", required_argument, NULL, 'D'},
      {"warmup", required_argument, NULL, OPT_WARMUP},
      {"trace", required_argument, NULL, OPT_TRACE},
      {"no-traceparent", no_argument, NULL, OPT_NO_TRACEPARENT},
      {"data", required_argument, NULL, 'd'},
      {"header", required_argument, NULL, 'H'},
      {"insecure", no_argument, NULL, 'k'},
      {"cacert", required_argument, NULL, OPT_CACERT},
      {"timeout", required_argument, NULL, 'T'},
      {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0}};
  char err[256];
  int ch;
  opterr = 0;
  optind = 1;
  while ((ch = getopt_long(argc, argv, ":n:c:m:D:d:H:kT:h", longopts, NULL)) !=
         -1) {
    switch (ch) {
    case 'n':
      if (cli_parse_u64(optarg, 1, UINT32_MAX, &b->n))
        return usage_error("-n wants a count, not '%s'", optarg);
      break;
    case 'c':
      if (cli_parse_u64(optarg, 1, 10000, &b->c))
        return usage_error("-c wants 1 to 10000 connections, not '%s'",
                           optarg);
      break;
    case 'm':
      if (cli_parse_u64(optarg, 1, 100000, &b->m))
        return usage_error("-m wants 1 to 100000 streams, not '%s'", optarg);
      break;
    case 'D':
      if (cli_parse_seconds(optarg, &b->duration_us) || !b->duration_us)
        return usage_error("--duration wants seconds, not '%s'", optarg);
      break;
    case OPT_WARMUP:
      if (cli_parse_u64(optarg, 0, UINT32_MAX, &b->warmup))
        return usage_error("--warmup wants a count, not '%s'", optarg);
      b->warmup_set = 1;
      break;
    case OPT_TRACE:
      if (!strcmp(optarg, "none"))
        b->trace_mode = TRACE_NONE;
      else if (!strcmp(optarg, "all"))
        b->trace_mode = TRACE_ALL;
      else if (!strcmp(optarg, "req"))
        b->trace_mode = TRACE_REQ;
      else
        return usage_error("--trace wants none, all or req, not '%s'", optarg);
      break;
    case OPT_NO_TRACEPARENT:
      b->no_traceparent = 1;
      break;
    case 'd':
      free(b->body);
      b->body = NULL;
      if (cli_body_arg(optarg, &b->body, &b->body_len, err, sizeof err))
        return usage_error("-d: %s", err);
      break;
    case 'H':
      if (cli_headers_add(&b->headers, optarg))
        return usage_error("bad header '%s', expected 'Name: value'", optarg);
      break;
    case 'k':
      b->insecure = 1;
      break;
    case OPT_CACERT:
      b->cacert = optarg;
      break;
    case 'T':
      if (cli_parse_u64(optarg, 1, UINT32_MAX, &b->timeout_ms))
        return usage_error("--timeout wants milliseconds, not '%s'", optarg);
      break;
    case 'h':
      usage(stdout);
      return 0;
    case ':':
      return usage_error("option '%s' needs a value", argv[optind - 1]);
    default:
      return usage_error("unknown option '%s'", argv[optind - 1]);
    }
  }
  if (optind != argc - 1)
    return usage_error(optind >= argc ? "no URL given%s"
                                      : "one URL only, '%s' is extra",
                       optind < argc ? argv[optind + 1] : "");
  b->url = argv[optind];
  if (!b->warmup_set)
    b->warmup = b->c;
  return -1;
}

/* --- the run ----------------------------------------------------------- */

static void submit(bench *b, slot *s);

static void record(bench *b, uint32_t us) {
  if (b->nlat == b->lat_cap) { /* only --duration gets here */
    size_t cap = b->lat_cap ? b->lat_cap * 2 : 65536;
    uint32_t *nl = realloc(b->lat, cap * sizeof *nl);
    if (!nl)
      return;
    b->lat = nl;
    b->lat_cap = cap;
  }
  b->lat[b->nlat++] = us;
}

static void count_error(bench *b, int error) {
  b->failed++;
  b->errored++;
  if (error == H2T_ERR_TIMEOUT || error == H2T_ERR_CONNECT_TIMEOUT)
    b->timeouts++;
  if (!b->first_error)
    b->first_error = error;
}

/* Errors that mean the connection cannot be made at all: retrying would
 * only measure how fast connect() fails. */
static int conn_failed(int error) {
  switch (error) {
  case H2T_ERR_DNS:
  case H2T_ERR_CONNECT_REFUSED:
  case H2T_ERR_CONNECT:
  case H2T_ERR_CONNECT_TIMEOUT:
  case H2T_ERR_TLS:
  case H2T_ERR_TLS_VERIFY:
  case H2T_ERR_ALPN:
    return 1;
  }
  return 0;
}

static int on_data(h2t_request *req, const uint8_t *data, size_t len,
                   void *user) {
  slot *s = user;
  s->c->b->body_bytes += len;
  return 0;
}

static void on_done(h2t_request *req, int error, void *user) {
  slot *s = user;
  bench *b = s->c->b;
  b->done++;
  b->outstanding--;
  if (b->measuring) {
    uint64_t d = h2t_now_us() - s->t_start;
    record(b, d > UINT32_MAX ? UINT32_MAX : (uint32_t)d);
    s->c->done++;
  }
  if (error) {
    count_error(b, error);
    if (conn_failed(error))
      s->c->dead = 1;
  } else {
    int st = h2t_request_status(req);
    b->status[st >= 100 && st < 600 ? st / 100 : 0]++;
    if (st >= 200 && st < 400)
      b->succeeded++;
    else
      b->failed++;
  }
  submit(b, s);
  if (!b->outstanding)
    ev_break(b->loop, EVBREAK_ALL);
}

static void submit(bench *b, slot *s) {
  if (b->stopping || b->started >= b->target || s->c->dead)
    return;
  b->started++;
  b->ro.user = s;
  s->t_start = h2t_now_us();
  int err = h2t_request_submit(s->c->client, &b->ro, NULL);
  if (err) {
    /* the slot stays idle: resubmitting would fail the same way */
    b->done++;
    count_error(b, err);
    return;
  }
  b->outstanding++;
}

static void on_stop_timer(struct ev_loop *loop, ev_timer *w, int revents) {
  bench *b = w->data;
  b->stopping = 1;
  if (!b->outstanding)
    ev_break(loop, EVBREAK_ALL);
}

static void reset_counters(bench *b) {
  b->started = b->done = b->outstanding = 0;
  b->succeeded = b->failed = b->errored = b->timeouts = 0;
  memset(b->status, 0, sizeof b->status);
  b->body_bytes = 0;
  b->first_error = 0;
  b->trace_events = 0;
  for (uint64_t i = 0; i < b->c; i++)
    b->conns[i].done = 0;
}

/* Fill the slots breadth-first so that each connection gets its first
 * request before any gets a second, then run until all are done. */
static void run_phase(bench *b) {
  for (uint64_t j = 0; j < b->m; j++)
    for (uint64_t i = 0; i < b->c; i++)
      submit(b, &b->slots[i * b->m + j]);
  if (b->outstanding)
    ev_run(b->loop, 0);
}

/* The timed part, a function of its own so that a profiler can be told to
 * count only it (callgrind --toggle-collect=measured_run). */
__attribute__((noinline)) static uint64_t measured_run(bench *b) {
  /* the timer counts from the loop's cached time: make that now */
  ev_now_update(b->loop);
  uint64_t t0 = h2t_now_us();
  if (b->duration_us) {
    ev_timer_init(&b->stop_timer, on_stop_timer, (double)b->duration_us / 1e6,
                  0.);
    b->stop_timer.data = b;
    ev_timer_start(b->loop, &b->stop_timer);
  }
  run_phase(b);
  uint64_t t1 = h2t_now_us();
  if (b->duration_us)
    ev_timer_stop(b->loop, &b->stop_timer);
  return t1 - t0;
}

/* --- the h2load-shaped summary ----------------------------------------- */

typedef struct summary {
  double min, max, mean, sd, within_sd;
} summary;

static summary stats_of(const double *v, size_t n) {
  summary s = {0};
  if (!n)
    return s;
  s.min = s.max = v[0];
  double sum = 0;
  for (size_t i = 0; i < n; i++) {
    sum += v[i];
    if (v[i] < s.min)
      s.min = v[i];
    if (v[i] > s.max)
      s.max = v[i];
  }
  s.mean = sum / (double)n;
  double var = 0;
  for (size_t i = 0; i < n; i++)
    var += (v[i] - s.mean) * (v[i] - s.mean);
  s.sd = sqrt(var / (double)n);
  size_t within = 0;
  for (size_t i = 0; i < n; i++)
    if (fabs(v[i] - s.mean) <= s.sd)
      within++;
  s.within_sd = 100.0 * (double)within / (double)n;
  return s;
}

static int cmp_u32(const void *a, const void *b) {
  uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
  return x < y ? -1 : x > y;
}

/* Sort v (n latencies) ascending: LSD radix, a byte a pass, skipping the
 * passes whose byte is the same in every value (a latency in µs rarely uses
 * the top one).  qsort's n log n comparisons cost more per request than the
 * client's own header handling does; this is a few instructions a value.
 * Falls back to qsort without memory for the scratch copy. */
static void sort_u32(uint32_t *v, size_t n) {
  uint32_t *tmp = malloc(n * sizeof *tmp);
  if (!tmp) {
    qsort(v, n, sizeof *v, cmp_u32);
    return;
  }
  size_t count[4][256] = {{0}};
  for (size_t i = 0; i < n; i++)
    for (int d = 0; d < 4; d++)
      count[d][(v[i] >> (8 * d)) & 0xff]++;
  uint32_t *src = v, *dst = tmp;
  for (int d = 0; d < 4; d++) {
    if (count[d][(v[0] >> (8 * d)) & 0xff] == n)
      continue; /* one value of this byte: the pass would not move anything */
    size_t pos = 0;
    for (int k = 0; k < 256; k++) {
      size_t c = count[d][k];
      count[d][k] = pos;
      pos += c;
    }
    for (size_t i = 0; i < n; i++)
      dst[count[d][(src[i] >> (8 * d)) & 0xff]++] = src[i];
    uint32_t *t = src;
    src = dst;
    dst = t;
  }
  if (src != v)
    memcpy(v, src, n * sizeof *v);
  free(tmp);
}

static double percentile(const uint32_t *sorted, size_t n, double p) {
  size_t k = (size_t)ceil(p / 100.0 * (double)n);
  return sorted[k ? k - 1 : 0];
}

static void print_summary(bench *b, uint64_t elapsed_us) {
  char d1[32], d2[32], d3[32], d4[32];
  double secs = elapsed_us ? (double)elapsed_us / 1e6 : 1e-6;
  printf("finished in %s, %.2f req/s, %s/s\n",
         cli_fmt_duration(d1, sizeof d1, (double)elapsed_us),
         (double)b->done / secs,
         cli_fmt_bytes(d2, sizeof d2, (double)b->body_bytes / secs));
  printf("requests: %llu total, %llu started, %llu done, %llu succeeded, "
         "%llu failed, %llu errored, %llu timeout\n",
         (unsigned long long)(b->duration_us ? b->started : b->n),
         (unsigned long long)b->started, (unsigned long long)b->done,
         (unsigned long long)b->succeeded, (unsigned long long)b->failed,
         (unsigned long long)b->errored, (unsigned long long)b->timeouts);
  printf("status codes: %llu 2xx, %llu 3xx, %llu 4xx, %llu 5xx\n",
         (unsigned long long)b->status[2], (unsigned long long)b->status[3],
         (unsigned long long)b->status[4], (unsigned long long)b->status[5]);
  printf("traffic: %s (%llu) data\n",
         cli_fmt_bytes(d1, sizeof d1, (double)b->body_bytes),
         (unsigned long long)b->body_bytes);

  size_t n = b->nlat;
  double *v = malloc((n ? n : 1) * sizeof *v);
  double *rps = malloc(b->c * sizeof *rps);
  if (!v || !rps) {
    free(v);
    free(rps);
    return;
  }
  for (size_t i = 0; i < n; i++)
    v[i] = b->lat[i];
  summary s = stats_of(v, n);
  printf("                     min         max         mean         sd        "
         "+/- sd\n");
  printf("time for request: %10s  %10s  %10s  %10s  %8.2f%%\n",
         cli_fmt_duration(d1, sizeof d1, s.min),
         cli_fmt_duration(d2, sizeof d2, s.max),
         cli_fmt_duration(d3, sizeof d3, s.mean),
         cli_fmt_duration(d4, sizeof d4, s.sd), s.within_sd);
  for (uint64_t i = 0; i < b->c; i++)
    rps[i] = (double)b->conns[i].done / secs;
  s = stats_of(rps, b->c);
  printf("req/s           : %10.2f  %10.2f  %10.2f  %10.2f  %8.2f%%\n", s.min,
         s.max, s.mean, s.sd, s.within_sd);
  if (n) {
    sort_u32(b->lat, n);
    char d5[32];
    printf("latency         :  p50 %s, p90 %s, p99 %s, p99.9 %s, max %s\n",
           cli_fmt_duration(d1, sizeof d1, percentile(b->lat, n, 50)),
           cli_fmt_duration(d2, sizeof d2, percentile(b->lat, n, 90)),
           cli_fmt_duration(d3, sizeof d3, percentile(b->lat, n, 99)),
           cli_fmt_duration(d4, sizeof d4, percentile(b->lat, n, 99.9)),
           cli_fmt_duration(d5, sizeof d5, b->lat[n - 1]));
  }
  if (b->trace_mode != TRACE_NONE)
    printf("trace           : %s, %llu hook calls (%.1f per request)\n",
           b->trace_mode == TRACE_ALL ? "all" : "req",
           (unsigned long long)b->trace_events,
           b->done ? (double)b->trace_events / (double)b->done : 0.0);
  uint64_t opened = 0;
  for (uint64_t i = 0; i < b->c; i++) {
    h2t_client_stats st;
    h2t_client_stats_get(b->conns[i].client, &st);
    opened += st.conns_opened;
  }
  printf("connections     : %llu opened\n", (unsigned long long)opened);
  if (b->first_error)
    printf("first error     : %s (%s)\n", h2t_strerror(b->first_error),
           h2t_errname(b->first_error));
  free(v);
  free(rps);
}

static void cleanup(bench *b) {
  if (b->conns)
    for (uint64_t i = 0; i < b->c; i++)
      h2t_client_del(b->conns[i].client);
  free(b->conns);
  free(b->slots);
  free(b->lat);
  free(b->body);
  cli_headers_free(&b->headers);
  if (b->loop)
    ev_loop_destroy(b->loop);
}

int bench_client_main(int argc, char **argv) {
  bench b = {.n = 1, .c = 1, .m = 1};
  int rc = parse_args(&b, argc, argv);
  if (rc >= 0) {
    cleanup(&b);
    return rc;
  }
  rc = 1;
  b.loop = ev_loop_new(EVFLAG_AUTO);
  b.conns = calloc(b.c, sizeof *b.conns);
  b.slots = calloc(b.c * b.m, sizeof *b.slots);
  if (!b.duration_us) {
    b.lat_cap = b.n;
    b.lat = malloc(b.lat_cap * sizeof *b.lat);
  }
  if (!b.loop || !b.conns || !b.slots || (!b.duration_us && !b.lat)) {
    fprintf(stderr, "h2bench: out of memory\n");
    goto out;
  }
  h2t_client_trace_set_all(&b.trace, count_event, &b);
  h2t_client_config cfg = {H2T_CLIENT_CONFIG_INIT};
  cfg.loop = b.loop;
  cfg.max_conns_per_origin = 1; /* one client per connection */
  cfg.ca_file = b.cacert;
  cfg.insecure = b.insecure;
  cfg.no_traceparent = b.no_traceparent;
  cfg.trace = b.trace_mode == TRACE_ALL ? &b.trace : NULL;
  for (uint64_t i = 0; i < b.c; i++) {
    b.conns[i].b = &b;
    int err = h2t_client_new(&b.conns[i].client, &cfg);
    if (err) {
      fprintf(stderr, "h2bench: %s (%s)\n", h2t_strerror(err),
              h2t_errname(err));
      goto out;
    }
    for (uint64_t j = 0; j < b.m; j++)
      b.slots[i * b.m + j].c = &b.conns[i];
  }
  b.ro = (h2t_request_opts){H2T_REQUEST_OPTS_INIT,
                            .url = b.url,
                            .headers = b.headers.v,
                            .nheaders = b.headers.n,
                            .body = b.body,
                            .body_len = b.body_len,
                            .on_data = on_data,
                            .on_done = on_done,
                            .trace = b.trace_mode == TRACE_REQ ? &b.trace
                                                               : NULL,
                            .timeout_ms = (uint32_t)b.timeout_ms};

  if (b.warmup) {
    b.target = b.warmup;
    run_phase(&b);
    if (b.errored) {
      fprintf(stderr, "h2bench: %s: warmup failed: %s (%s)\n", b.url,
              h2t_strerror(b.first_error), h2t_errname(b.first_error));
      goto out;
    }
  }
  reset_counters(&b);
  b.measuring = 1;
  b.target = b.duration_us ? UINT64_MAX : b.n;
  uint64_t elapsed = measured_run(&b);
  if (!b.duration_us && b.started < b.target) {
    /* never started because every connection failed: h2load counts these
     * as failed and errored too */
    b.failed += b.target - b.started;
    b.errored += b.target - b.started;
  }
  print_summary(&b, elapsed);
  rc = b.failed ? 1 : 0;
out:
  cleanup(&b);
  return rc;
}
