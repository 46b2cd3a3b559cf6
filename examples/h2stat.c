/*
 * h2stat: httpstat for HTTP/2.  For each request: where the time went (DNS,
 * TCP, TLS, server, transfer) and which connection carried it and why —
 * reused, or new and for what reason.  Or, with --json, every trace event.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <h2trace/client.h>
#include <h2trace/diag.h>
#include <h2trace/export.h>
#include <h2trace/inflight.h>
#include <h2trace/version.h>

#include "cli.h"

#define PROG "h2stat"

typedef struct opts {
  uint64_t n, p, timeout_ms;
  const char *method, *cacert, *outfile;
  char *body;
  size_t body_len;
  int has_body, insecure, json;
  cli_headers headers;
  const char *diag, *diag_token; /* --diag ADDR:PORT, --diag-token */
  const char *diag_cors[16];      /* --diag-cors, repeated */
  size_t ndiag_cors;
  int diag_show_query;            /* --diag-show-query */
  const char *har, *trace_json;   /* --har FILE, --trace-json FILE */
} opts;

typedef struct app {
  opts o;
  cli_colors col;
  h2t_client *client;
  FILE *out;         /* -o, or NULL: bodies are counted and dropped */
  size_t next_idx;   /* requests numbered in submit order */
  size_t total;      /* how many this run makes, for "[req i/n]" */
  int failed;
  char *jbuf;        /* --json line buffer, grown on demand */
  size_t jcap;
} app;

/* What one request saw, filled by its trace and callbacks. */
typedef struct req_rec {
  app *a;
  size_t idx;
  const char *url;
  uint64_t t_submit;
  uint64_t t[H2T_EV_FIRST_SERVER_]; /* first time each event fired, 0: never */
  uint64_t conn_id;
  int got_conn, reused, was_idle;
  uint64_t idle_us;
  h2t_conn_reason new_reason;
  uint32_t active_streams, max_streams;
  char addr[80];
  char tls[160];
  int status;
  h2t_header *hdrs; /* copied: the callback's pointers die with it */
  size_t nhdrs;
  uint64_t body_bytes;
  char *buf; /* body held back while other requests run (-p with -o) */
  size_t buf_len, buf_cap;
  int error;
  int write_errno; /* -o failed: say so rather than "callback aborted" */
  unsigned retries;
  h2t_retry_reason retry_reason; /* the last one */
  int put_idle, reusable;        /* what became of the connection after */
  h2t_conn_reason unusable_reason;
} req_rec;

static void usage(FILE *f) {
  fprintf(f,
      "usage: " PROG " [options] URL...\n"
      "Time each HTTP/2 request phase (httpstat-style) and tell whether its\n"
      "connection was reused, or why a new one was made.\n"
      "\n"
      "  -n N               request each URL N times in sequence (default 1)\n"
      "  -p P               P requests at once per round, multiplexed (default 1)\n"
      "  -X METHOD          request method (default GET, POST with -d)\n"
      "  -H 'Name: value'   add a request header (repeatable)\n"
      "  -d DATA | @FILE    request body\n"
      "  -o FILE            write response bodies to FILE (default: discard)\n"
      "  -k, --insecure     do not verify the server certificate\n"
      "      --cacert FILE  trust the CA certificates in FILE (PEM)\n"
      "      --timeout MS   connect and request timeout in milliseconds\n"
      "      --json         JSON Lines on stdout: one object per trace event\n"
      "      --diag ADDR:PORT  serve the diagnostics endpoint meanwhile\n"
      "                     (GET /debug/requests, /metrics...; loopback only)\n"
      "      --diag-token T bearer token that allows POST .../cancel\n"
      "      --diag-cors ORIGIN  a web page of ORIGIN may read the endpoint\n"
      "                     and cancel (repeat)\n"
      "      --diag-show-query  show query strings (redacted by default)\n"
      "      --har FILE     write every request as HAR 1.2 to FILE ('-': stdout)\n"
      "      --trace-json FILE  write a Chrome trace (Perfetto, chrome://tracing)\n"
      "                     to FILE: a lane per connection, a span per phase\n"
      "  -h, --help         this help\n"
      "  -V, --version      print the version\n"
      "\n"
      "Colour on a terminal unless NO_COLOR is set.  Exit status: 0 when every\n"
      "request completed, 1 when one failed, 2 on bad usage.\n");
}

static int usage_error(const char *fmt, const char *arg) {
  return cli_usage_error(PROG, fmt, arg);
}

/* Long-only options get ids past the ASCII range. */
enum { OPT_CACERT = 256, OPT_TIMEOUT, OPT_JSON, OPT_DIAG, OPT_DIAG_TOKEN,
       OPT_HAR, OPT_TRACE_JSON, OPT_DIAG_CORS, OPT_DIAG_SHOW_QUERY };

/* Returns -1 to go on, else the exit code. */
static int parse_args(opts *o, int argc, char **argv, int *first_url) {
  static const struct option longopts[] = {
      {"insecure", no_argument, NULL, 'k'},
      {"cacert", required_argument, NULL, OPT_CACERT},
      {"timeout", required_argument, NULL, OPT_TIMEOUT},
      {"json", no_argument, NULL, OPT_JSON},
      {"diag", required_argument, NULL, OPT_DIAG},
      {"diag-token", required_argument, NULL, OPT_DIAG_TOKEN},
      {"diag-cors", required_argument, NULL, OPT_DIAG_CORS},
      {"diag-show-query", no_argument, NULL, OPT_DIAG_SHOW_QUERY},
      {"har", required_argument, NULL, OPT_HAR},
      {"trace-json", required_argument, NULL, OPT_TRACE_JSON},
      {"output", required_argument, NULL, 'o'},
      {"request", required_argument, NULL, 'X'},
      {"header", required_argument, NULL, 'H'},
      {"data", required_argument, NULL, 'd'},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, 'V'},
      {NULL, 0, NULL, 0}};
  char err[256];
  int ch;
  opterr = 0;
  while ((ch = getopt_long(argc, argv, ":n:p:X:H:d:o:khV", longopts, NULL)) !=
         -1) {
    switch (ch) {
    case 'n':
      if (cli_parse_u64(optarg, 1, 1000000, &o->n))
        return usage_error("-n wants a count from 1 to 1000000, not '%s'",
                           optarg);
      break;
    case 'p':
      if (cli_parse_u64(optarg, 1, 10000, &o->p))
        return usage_error("-p wants a count from 1 to 10000, not '%s'",
                           optarg);
      break;
    case 'X':
      if (!*optarg)
        return usage_error("-X wants a method%s", "");
      o->method = optarg;
      break;
    case 'H': {
      int r = cli_headers_add(&o->headers, optarg);
      if (r == -2) {
        fprintf(stderr, PROG ": out of memory\n");
        return 1;
      }
      if (r)
        return usage_error("bad header '%s', expected 'Name: value'", optarg);
      break;
    }
    case 'd':
      free(o->body);
      o->body = NULL;
      if (cli_body_arg(optarg, &o->body, &o->body_len, err, sizeof err))
        return usage_error("-d: %s", err);
      o->has_body = 1;
      break;
    case 'o':
      o->outfile = optarg;
      break;
    case 'k':
      o->insecure = 1;
      break;
    case OPT_CACERT:
      o->cacert = optarg;
      break;
    case OPT_TIMEOUT:
      if (cli_parse_u64(optarg, 1, UINT32_MAX, &o->timeout_ms))
        return usage_error("--timeout wants milliseconds, not '%s'", optarg);
      break;
    case OPT_JSON:
      o->json = 1;
      break;
    case OPT_DIAG:
      o->diag = optarg;
      break;
    case OPT_DIAG_TOKEN:
      o->diag_token = optarg;
      break;
    case OPT_DIAG_CORS:
      if (!*optarg || o->ndiag_cors == sizeof o->diag_cors / sizeof o->diag_cors[0])
        return usage_error("bad --diag-cors (at most 16): '%s'", optarg);
      o->diag_cors[o->ndiag_cors++] = optarg;
      break;
    case OPT_DIAG_SHOW_QUERY:
      o->diag_show_query = 1;
      break;
    case OPT_HAR:
      o->har = optarg;
      break;
    case OPT_TRACE_JSON:
      o->trace_json = optarg;
      break;
    case 'h':
      usage(stdout);
      return 0;
    case 'V':
      printf(PROG " %s\n", h2t_version());
      return 0;
    case ':':
      return usage_error("option '%s' needs a value", argv[optind - 1]);
    default:
      return usage_error("unknown option '%s'", argv[optind - 1]);
    }
  }
  if (optind >= argc)
    return usage_error("no URL given%s", "");
  for (int i = optind; i < argc; i++)
    if (strncmp(argv[i], "http://", 7) && strncmp(argv[i], "https://", 8))
      return usage_error("'%s' is not an http:// or https:// URL", argv[i]);
  *first_url = optind;
  return -1;
}

/* --- what the trace sees ----------------------------------------------- */

static void print_json(req_rec *r, const h2t_event *ev) {
  app *a = r->a;
  int n = h2t_event_json(ev, a->jbuf, a->jcap);
  if (n >= 0 && (size_t)n >= a->jcap) {
    size_t cap = (size_t)n + 1;
    char *nb = realloc(a->jbuf, cap);
    if (!nb)
      return;
    a->jbuf = nb;
    a->jcap = cap;
    n = h2t_event_json(ev, a->jbuf, a->jcap);
  }
  if (n < 2)
    return;
  /* splice the request index in as the first field */
  printf("{\"req\":%zu,%s\n", r->idx, a->jbuf + 1);
}

static void on_event(const h2t_event *ev, void *user) {
  req_rec *r = user;
  if (r->a->o.json) {
    print_json(r, ev);
    return;
  }
  if ((unsigned)ev->type >= H2T_EV_FIRST_SERVER_)
    return;
  if (!r->t[ev->type])
    r->t[ev->type] = ev->t_us;
  switch (ev->type) {
  case H2T_EV_CONNECT_START:
    if (ev->u.connect.addr)
      snprintf(r->addr, sizeof r->addr, "%s", ev->u.connect.addr);
    break;
  case H2T_EV_TLS_HANDSHAKE_DONE:
    if (ev->u.tls.version)
      snprintf(r->tls, sizeof r->tls, "%s %s, ALPN %s%s", ev->u.tls.version,
               ev->u.tls.cipher ? ev->u.tls.cipher : "?",
               ev->u.tls.alpn ? ev->u.tls.alpn : "none",
               ev->u.tls.resumed ? ", session resumed" : "");
    break;
  case H2T_EV_GOT_CONN:
    r->got_conn = 1;
    r->conn_id = ev->conn_id;
    r->reused = ev->u.got_conn.reused;
    r->was_idle = ev->u.got_conn.was_idle;
    r->idle_us = ev->u.got_conn.idle_us;
    r->new_reason = ev->u.got_conn.new_reason;
    r->active_streams = ev->u.got_conn.active_streams;
    r->max_streams = ev->u.got_conn.max_streams;
    break;
  case H2T_EV_RETRY:
    r->retries++;
    r->retry_reason = ev->u.retry.reason;
    break;
  case H2T_EV_PUT_IDLE_CONN:
    r->put_idle = 1;
    r->reusable = ev->u.put_idle_conn.reusable;
    r->unusable_reason = ev->u.put_idle_conn.reason;
    break;
  default:
    break;
  }
}

static int on_headers(h2t_request *req, int status, const h2t_header *hdrs,
                      size_t n, void *user) {
  req_rec *r = user;
  r->status = status;
  if (r->a->o.json || !n)
    return 0;
  size_t sz = n * sizeof(h2t_header);
  for (size_t i = 0; i < n; i++)
    sz += strlen(hdrs[i].name) + strlen(hdrs[i].value) + 2;
  h2t_header *copy = malloc(sz);
  if (!copy)
    return 0; /* headers are for show: without memory, show none */
  char *p = (char *)(copy + n);
  for (size_t i = 0; i < n; i++) {
    size_t nl = strlen(hdrs[i].name) + 1, vl = strlen(hdrs[i].value) + 1;
    copy[i].name = memcpy(p, hdrs[i].name, nl);
    p += nl;
    copy[i].value = memcpy(p, hdrs[i].value, vl);
    p += vl;
  }
  free(r->hdrs); /* never set twice by the library's rules; never leaked */
  r->hdrs = copy;
  r->nhdrs = n;
  return 0;
}

static int on_data(h2t_request *req, const uint8_t *data, size_t len,
                   void *user) {
  req_rec *r = user;
  app *a = r->a;
  r->body_bytes += len;
  if (!a->out)
    return 0;
  if (a->o.p == 1) {
    if (fwrite(data, 1, len, a->out) == len)
      return 0;
    r->write_errno = errno ? errno : EIO;
    return 1;
  }
  if (r->buf_len + len > r->buf_cap) {
    size_t cap = r->buf_cap ? r->buf_cap : 16384;
    while (cap < r->buf_len + len)
      cap *= 2;
    char *nb = realloc(r->buf, cap);
    if (!nb) {
      r->write_errno = ENOMEM;
      return 1;
    }
    r->buf = nb;
    r->buf_cap = cap;
  }
  memcpy(r->buf + r->buf_len, data, len);
  r->buf_len += len;
  return 0;
}

/* --- the httpstat picture ---------------------------------------------- */

static uint64_t span(uint64_t from, uint64_t to) {
  return from && to && to > from ? to - from : 0;
}

/* httpstat's cells are 7 wide: phases centred, cumulative times left. */
static void cell(char *dst, size_t len, const cli_colors *c, const char *color,
                 uint64_t us, int centre) {
  char v[16];
  cli_fmt_ms(v, sizeof v, us);
  int w = (int)strlen(v), pad = w < 7 ? 7 - w : 0;
  int left = centre ? pad / 2 : 0;
  snprintf(dst, len, "%*s%s%s%s%*s", left, "", color, v, c->reset, pad - left,
           "");
}

static void print_waterfall(const req_rec *r, int tls) {
  const cli_colors *c = &r->a->col;
  const uint64_t *t = r->t;
  uint64_t t0 = t[H2T_EV_GET_CONN] ? t[H2T_EV_GET_CONN] : r->t_submit;
  uint64_t sent = t[H2T_EV_WROTE_REQUEST] ? t[H2T_EV_WROTE_REQUEST]
                                          : t[H2T_EV_WROTE_HEADERS];
  uint64_t first = t[H2T_EV_GOT_FIRST_RESPONSE_BYTE];
  uint64_t done = t[H2T_EV_DONE] ? t[H2T_EV_DONE] : h2t_now_us();
  uint64_t ph[5] = {
      span(t[H2T_EV_DNS_START], t[H2T_EV_DNS_DONE]),
      span(t[H2T_EV_CONNECT_START], t[H2T_EV_CONNECT_DONE]),
      span(t[H2T_EV_TLS_HANDSHAKE_START], t[H2T_EV_TLS_HANDSHAKE_DONE]),
      span(sent, first), span(first, done)};
  uint64_t cum[5];
  cum[0] = span(t0, t[H2T_EV_DNS_DONE]);
  cum[1] = t[H2T_EV_CONNECT_DONE] ? span(t0, t[H2T_EV_CONNECT_DONE]) : cum[0];
  cum[2] = sent ? span(t0, sent) : cum[1];
  cum[3] = first ? span(t0, first) : cum[2];
  cum[4] = span(t0, done);
  char a[5][64], b[5][64];
  for (int i = 0; i < 5; i++) {
    cell(a[i], sizeof a[i], c, c->green, ph[i], 1);
    cell(b[i], sizeof b[i], c, c->cyan, cum[i], 0);
  }
  /* the last cell ends its line: no padding to trail */
  snprintf(b[4], sizeof b[4], "%s%s%s", c->cyan,
           cli_fmt_ms((char[16]){0}, 16, cum[4]), c->reset);
  if (tls)
    printf("\n"
           "  DNS Lookup   TCP Connection   TLS Handshake   Server Processing   Content Transfer\n"
           "[   %s  |     %s    |    %s    |      %s      |      %s     ]\n"
           "             |                |               |                   |                  |\n"
           "    namelookup:%s        |               |                   |                  |\n"
           "                        connect:%s       |                   |                  |\n"
           "                                    pretransfer:%s           |                  |\n"
           "                                                      starttransfer:%s          |\n"
           "                                                                                 total:%s\n"
           "\n",
           a[0], a[1], a[2], a[3], a[4], b[0], b[1], b[2], b[3], b[4]);
  else
    printf("\n"
           "  DNS Lookup   TCP Connection   Server Processing   Content Transfer\n"
           "[   %s  |     %s    |      %s      |      %s     ]\n"
           "             |                |                   |                  |\n"
           "    namelookup:%s        |                   |                  |\n"
           "                        connect:%s           |                  |\n"
           "                                      starttransfer:%s          |\n"
           "                                                                 total:%s\n"
           "\n",
           a[0], a[1], a[3], a[4], b[0], b[1], b[3], b[4]);
}

static void print_conn_line(const req_rec *r) {
  const cli_colors *c = &r->a->col;
  char d[16];
  if (!r->got_conn) {
    printf("%sconn: none%s\n", c->yellow, c->reset);
    return;
  }
  if (!r->reused) {
    const char *why = h2t_conn_reason_name(r->new_reason);
    /* requests that arrive while it is being set up share it */
    if (r->active_streams > 1)
      printf("%sconn #%llu new: %s (shared: %u streams)%s\n", c->yellow,
             (unsigned long long)r->conn_id, why ? why : "unknown",
             r->active_streams, c->reset);
    else
      printf("%sconn #%llu new: %s%s\n", c->yellow,
             (unsigned long long)r->conn_id, why ? why : "unknown", c->reset);
  } else if (r->was_idle) {
    printf("%sconn #%llu reused (idle %s)%s\n", c->green,
           (unsigned long long)r->conn_id, cli_fmt_ms(d, sizeof d, r->idle_us),
           c->reset);
  } else {
    printf("%sconn #%llu reused (multiplexed: %u of max %u streams)%s\n",
           c->green, (unsigned long long)r->conn_id, r->active_streams,
           r->max_streams, c->reset);
  }
}

static void report(req_rec *r) {
  app *a = r->a;
  const cli_colors *c = &a->col;
  if (a->total > 1)
    printf("%s[req %zu/%zu] %s %s%s\n", c->bold, r->idx + 1, a->total,
           a->o.method ? a->o.method : (a->o.has_body ? "POST" : "GET"),
           r->url, c->reset);
  if (r->addr[0] && !r->reused)
    printf("%sConnected to %s%s\n", c->dim, r->addr, c->reset);
  print_conn_line(r);
  if (r->retries) {
    const char *why = h2t_retry_reason_name(r->retry_reason);
    printf("%sretried %u time%s (last: %s)%s\n", c->yellow, r->retries,
           r->retries > 1 ? "s" : "", why ? why : "unknown", c->reset);
  }
  if (r->put_idle && !r->reusable) {
    const char *why = h2t_conn_reason_name(r->unusable_reason);
    printf("%sconn #%llu not reusable after this request: %s%s\n", c->yellow,
           (unsigned long long)r->conn_id, why ? why : "unknown", c->reset);
  }
  if (r->tls[0])
    printf("%sTLS: %s%s\n", c->dim, r->tls, c->reset);
  printf("\n%sHTTP%s%s/%s%s2 %d%s\n", c->green, c->reset, c->dim, c->reset,
         c->cyan, r->status, c->reset);
  /* like every h2trace output: set-cookie and friends never shown */
  for (size_t i = 0; i < r->nhdrs; i++)
    printf("%s%s:%s %s%s%s\n", c->dim, r->hdrs[i].name, c->reset, c->cyan,
           h2t_header_is_sensitive(r->hdrs[i].name) ? "[redacted]"
                                                    : r->hdrs[i].value,
           c->reset);
  if (a->out)
    printf("\n%sBody stored in: %s (%llu bytes)%s\n", c->green, a->o.outfile,
           (unsigned long long)r->body_bytes, c->reset);
  else
    printf("\n%sBody discarded (%llu bytes)%s\n", c->green,
           (unsigned long long)r->body_bytes, c->reset);
  print_waterfall(r, !strncmp(r->url, "https:", 6));
}

static void on_done(h2t_request *req, int error, void *user) {
  req_rec *r = user;
  app *a = r->a;
  r->error = error;
  if (error) {
    a->failed = 1;
    if (r->write_errno)
      fprintf(stderr, PROG ": %s: %s: %s\n", r->url, a->o.outfile,
              strerror(r->write_errno));
    else
      fprintf(stderr, PROG ": %s: %s (%s)\n", r->url, h2t_strerror(error),
              h2t_errname(error));
    return;
  }
  /* flush now, so that "Body stored" is only said of stored bodies */
  if (a->out && ((r->buf_len && fwrite(r->buf, 1, r->buf_len, a->out) !=
                                    r->buf_len) ||
                 fflush(a->out) != 0)) {
    fprintf(stderr, PROG ": %s: %s: %s\n", r->url, a->o.outfile,
            strerror(errno));
    a->failed = 1;
    return;
  }
  if (!a->o.json)
    report(r);
}

/* One round: P requests for url at once, run until all are done.  Returns
 * -1 to go on, else an exit code (a request could not even be submitted). */
static int run_round(app *a, const char *url) {
  size_t p = (size_t)a->o.p;
  req_rec *recs = calloc(p, sizeof *recs);
  if (!recs) {
    fprintf(stderr, PROG ": out of memory\n");
    return 1;
  }
  int rc = -1;
  size_t submitted = 0;
  for (size_t i = 0; i < p; i++) {
    req_rec *r = &recs[i];
    r->a = a;
    r->url = url;
    r->idx = a->next_idx++;
    h2t_client_trace tr = {H2T_CLIENT_TRACE_INIT, .user = r,
                           .any = on_event};
    h2t_request_opts ro = {H2T_REQUEST_OPTS_INIT,
                           .url = url,
                           .method = a->o.method,
                           .headers = a->o.headers.v,
                           .nheaders = a->o.headers.n,
                           .body = a->o.has_body ? a->o.body : NULL,
                           .body_len = a->o.has_body ? a->o.body_len : 0,
                           .on_headers = on_headers,
                           .on_data = on_data,
                           .on_done = on_done,
                           .user = r,
                           .trace = &tr,
                           .timeout_ms = (uint32_t)a->o.timeout_ms};
    r->t_submit = h2t_now_us();
    int err = h2t_request_submit(a->client, &ro, NULL);
    if (err) {
      fprintf(stderr, PROG ": %s: %s (%s)\n", url, h2t_strerror(err),
              h2t_errname(err));
      rc = err == H2T_ERR_BAD_URL || err == H2T_ERR_INVALID_ARG ? 2 : 1;
      break;
    }
    submitted++;
  }
  if (submitted)
    h2t_client_run(a->client);
  for (size_t i = 0; i < p; i++) {
    free(recs[i].hdrs);
    free(recs[i].buf);
  }
  free(recs);
  fflush(stdout);
  return rc;
}

/* --- --har / --trace-json ------------------------------------------------ */

static int write_file(const char *data, size_t len, void *user) {
  return fwrite(data, 1, len, user) == len ? 0 : -1;
}

/* Opened before the run, so a bad path fails before any request. */
static FILE *open_out(const char *path) {
  return strcmp(path, "-") ? fopen(path, "w") : stdout;
}

static int export_to(FILE *f, const char *path, const h2t_export *exp,
                     h2t_export_format fmt) {
  int err = h2t_export_write(exp, fmt, write_file, f);
  int bad = err || fflush(f) != 0;
  if (f != stdout && fclose(f) != 0)
    bad = 1;
  if (bad) {
    fprintf(stderr, PROG ": %s: %s\n", path,
            err && err != H2T_ERR_CALLBACK ? h2t_strerror(err) : strerror(errno));
    return 1;
  }
  return 0;
}

int main(int argc, char **argv) {
  app a = {.o = {.n = 1, .p = 1}};
  h2t_diag *diag = NULL; /* --diag */
  h2t_export *exp = NULL;                /* --har, --trace-json */
  FILE *har = NULL, *chrome = NULL;
  int first = 0;
  int rc = parse_args(&a.o, argc, argv, &first);
  if (rc >= 0)
    goto out;
  cli_color_init(&a.col, !a.o.json && cli_want_color(stdout));
  if (a.o.outfile && !(a.out = fopen(a.o.outfile, "wb"))) {
    fprintf(stderr, PROG ": %s: %s\n", a.o.outfile, strerror(errno));
    rc = 1;
    goto out;
  }
  if ((a.o.har && !(har = open_out(a.o.har))) ||
      (a.o.trace_json && !(chrome = open_out(a.o.trace_json)))) {
    fprintf(stderr, PROG ": %s: %s\n", har ? a.o.trace_json : a.o.har,
            strerror(errno));
    rc = 1;
    goto out;
  }
  if ((har || chrome) && h2t_export_new(&exp, NULL) != 0) {
    fprintf(stderr, PROG ": out of memory\n");
    rc = 1;
    goto out;
  }
  h2t_client_config cfg = {H2T_CLIENT_CONFIG_INIT};
  cfg.trace = h2t_export_trace(exp); /* runs after each request's own */
  cfg.ca_file = a.o.cacert;
  cfg.insecure = a.o.insecure;
  cfg.connect_timeout_ms = (uint32_t)a.o.timeout_ms;
  cfg.request_timeout_ms = (uint32_t)a.o.timeout_ms;
  int err = h2t_client_new(&a.client, &cfg);
  if (err) {
    if (err == H2T_ERR_TLS && a.o.cacert) /* the only file read here */
      fprintf(stderr, PROG ": --cacert %s: cannot load CA certificates (%s)\n",
              a.o.cacert, h2t_errname(err));
    else
      fprintf(stderr, PROG ": %s (%s)\n", h2t_strerror(err), h2t_errname(err));
    rc = 1;
    goto out;
  }
  /* --- diagnostics endpoint (--diag) --- */
  if (a.o.diag_token && !a.o.diag) {
    rc = usage_error("--diag-token needs --diag%s", "");
    goto out;
  }
  if (a.o.diag) {
    h2t_diag_config dc = {H2T_DIAG_CONFIG_INIT};
    dc.listen = a.o.diag;
    dc.token = a.o.diag_token;
    dc.cors_origins = a.o.diag_cors;
    dc.ncors_origins = a.o.ndiag_cors;
    dc.show_query = a.o.diag_show_query;
    err = h2t_diag_start(&diag, &dc);
    if (err) {
      fprintf(stderr, PROG ": --diag %s: %s (%s)\n", a.o.diag, h2t_strerror(err),
              h2t_errname(err));
      rc = err == H2T_ERR_INVALID_ARG ? 2 : 1;
      goto out;
    }
    fprintf(stderr, PROG ": diagnostics on port %u (/debug/requests)\n",
            h2t_diag_port(diag));
  }
  /* --- end --diag --- */
  a.total = (size_t)((uint64_t)(argc - first) * a.o.n * a.o.p);
  rc = -1;
  for (int u = first; u < argc && rc < 0; u++) {
    /* once a round fails, more of the same would only repeat the error */
    for (uint64_t i = 0; i < a.o.n && rc < 0; i++) {
      int failed_before = a.failed;
      a.failed = 0;
      rc = run_round(&a, argv[u]);
      int this_failed = a.failed;
      a.failed |= failed_before;
      if (this_failed)
        break;
    }
  }
  if (rc < 0)
    rc = a.failed ? 1 : 0;
  /* every request is done: the recorder is complete */
  if (har && export_to(har, a.o.har, exp, H2T_EXPORT_HAR) && rc == 0)
    rc = 1;
  if (chrome && export_to(chrome, a.o.trace_json, exp, H2T_EXPORT_CHROME) &&
      rc == 0)
    rc = 1;
  har = chrome = NULL;
out:
  h2t_client_del(a.client);
  h2t_export_del(exp);
  if (har && har != stdout)
    fclose(har);
  if (chrome && chrome != stdout)
    fclose(chrome);
  h2t_diag_stop(diag); /* --diag */
  if (a.out && fclose(a.out) != 0 && rc == 0) {
    fprintf(stderr, PROG ": %s: %s\n", a.o.outfile, strerror(errno));
    rc = 1;
  }
  cli_headers_free(&a.o.headers);
  free(a.o.body);
  free(a.jbuf);
  return rc;
}
