/* trace/diag.c: the diagnostics endpoint over real HTTP on loopback, with a
 * small socket client (exact control over bad requests) and curl (a real
 * client) for the cancel. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "wedge.h"
#include <jansson.h>

#include <h2trace/diag.h>
#include <h2trace/inflight.h>
#include "peer.h"
#include "trace/inflight_int.h"

#define TOKEN "s3cret-token"

static h2t_diag *diag;
static uint16_t port;

/* --- a tiny HTTP/1.1 client ----------------------------------------------- */

struct resp {
  int status; /* 0: connection closed without a response */
  char head[4096];
  char *body;
};

static void resp_free(struct resp *r) { free(r->body); }

/* Send `raw` as is and read until the server closes (Connection: close). */
static struct resp http_raw(const char *raw, size_t rawlen) {
  struct resp r = {0};
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  size_t off = 0;
  while (off < rawlen) {
    ssize_t w = send(fd, raw + off, rawlen - off, MSG_NOSIGNAL);
    if (w <= 0)
      break; /* the server may cut off a huge request: fine */
    off += (size_t)w;
  }
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  for (;;) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int pr = poll(&p, 1, 5000);
    if (pr < 0 && errno == EINTR) /* /debug/threads signals this thread too */
      continue;
    if (pr <= 0)
      break;
    if (len + 1 >= cap)
      buf = realloc(buf, cap *= 2);
    ssize_t n = recv(fd, buf + len, cap - len - 1, 0);
    if (n <= 0)
      break;
    len += (size_t)n;
  }
  close(fd);
  buf[len] = '\0';
  char *sep = strstr(buf, "\r\n\r\n");
  if (len > 12 && !strncmp(buf, "HTTP/1.1 ", 9) && sep) {
    r.status = atoi(buf + 9);
    size_t hl = (size_t)(sep - buf);
    if (hl >= sizeof r.head)
      hl = sizeof r.head - 1;
    memcpy(r.head, buf, hl);
    r.head[hl] = '\0';
    r.body = strdup(sep + 4);
  }
  free(buf);
  return r;
}

static struct resp http(const char *method, const char *path,
                        const char *extra_headers) {
  char req[2048];
  int n = snprintf(req, sizeof req,
                   "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                   "%s%s\r\n",
                   method, path, extra_headers ? extra_headers : "",
                   !strcmp(method, "POST") ? "Content-Length: 0\r\n" : "");
  return http_raw(req, (size_t)n);
}

static json_t *body_json(const struct resp *r) {
  json_error_t err;
  json_t *j = json_loads(r->body ? r->body : "", 0, &err);
  if (!j)
    fprintf(stderr, "bad JSON (%s): %s\n", err.text, r->body);
  assert_non_null(j);
  return j;
}

static int has_header(const struct resp *r, const char *line) {
  for (const char *p = r->head; (p = strstr(p, "\r\n")); p += 2)
    if (!strncasecmp(p + 2, line, strlen(line)))
      return 1;
  return 0;
}

/* --- fixtures -------------------------------------------------------------- */

static atomic_uint_fast64_t cancel_called_id;
static char cancel_reason[64];

static void on_cancel(void *arg, uint64_t id, const char *why) {
  snprintf(cancel_reason, sizeof cancel_reason, "%s", why);
  atomic_store(&cancel_called_id, id);
}

static struct inflight_entry *cli, *srv;

static int start_entries(const h2t_diag_config *cfg) {
  int rc = h2t_diag_start(&diag, cfg);
  if (rc)
    return rc;
  port = h2t_diag_port(diag);
  cli = h2t__inflight_begin(INFLIGHT_CLIENT, 501, "GET", "http", "slownode:8484",
                       "/blob/9f2c", on_cancel, NULL);
  h2t_event ev = {.type = H2T_EV_WROTE_REQUEST, .conn_id = 3, .stream_id = 17};
  h2t__inflight_event(cli, &ev);
  srv = h2t__inflight_begin(INFLIGHT_SERVER, 502, "POST", "https", "api.local",
                       "/items", on_cancel, NULL);
  ev = (h2t_event){.type = H2T_EV_SRV_HANDLER_STARTED, .conn_id = 4,
                   .stream_id = 1};
  h2t__inflight_event(srv, &ev);
  h2t__inflight_set_status(srv, "querying db");
  return 0;
}

static int start(const char *token) {
  h2t_diag_config cfg = {H2T_DIAG_CONFIG_INIT};
  cfg.token = token;
  return start_entries(&cfg);
}

static int setup_token(void **state) { return start(TOKEN); }
static int setup_notoken(void **state) { return start(NULL); }

static const char *const cors_origins[] = {"http://127.0.0.1:8000",
                                           "http://localhost:9000"};
static int setup_cors(void **state) {
  h2t_diag_config cfg = {H2T_DIAG_CONFIG_INIT, .token = TOKEN,
                         .cors_origins = cors_origins, .ncors_origins = 2};
  return start_entries(&cfg);
}

static int teardown(void **state) {
  h2t__inflight_end(cli, 0);
  h2t__inflight_end(srv, 0);
  h2t_diag_stop(diag);
  diag = NULL;
  return h2t_inflight_disable();
}

/* --- tests ----------------------------------------------------------------- */

static void test_config_checks(void **state) {
  h2t_diag *d = NULL;
  h2t_diag_config cfg = {H2T_DIAG_CONFIG_INIT};
  cfg.listen = "0.0.0.0:0";
  assert_int_equal(h2t_diag_start(&d, &cfg), H2T_ERR_INVALID_ARG);
  cfg.listen = "10.1.2.3:8080";
  assert_int_equal(h2t_diag_start(&d, &cfg), H2T_ERR_INVALID_ARG);
  cfg.listen = "127.0.0.1:99999";
  assert_int_equal(h2t_diag_start(&d, &cfg), H2T_ERR_INVALID_ARG);
  cfg.listen = "nonsense";
  assert_int_equal(h2t_diag_start(&d, &cfg), H2T_ERR_INVALID_ARG);
  cfg.listen = "[::1]:0";
  int rc = h2t_diag_start(&d, &cfg);
  if (rc == 0) { /* where the host has IPv6 loopback */
    assert_true(h2t_diag_port(d) > 0);
    h2t_diag *d2;
    assert_int_equal(h2t_diag_start(&d2, NULL), H2T_ERR_STATE);
    h2t_diag_stop(d);
  }
  assert_null(h2t_diag_port(NULL) ? (void *)1 : NULL);
  /* a list entry must be a non-empty string */
  static const char *const bad[] = {""};
  h2t_diag_config c2 = {H2T_DIAG_CONFIG_INIT, .cors_origins = bad,
                        .ncors_origins = 1};
  assert_int_equal(h2t_diag_start(&d, &c2), H2T_ERR_INVALID_ARG);
  c2.cors_origins = NULL;
  assert_int_equal(h2t_diag_start(&d, &c2), H2T_ERR_INVALID_ARG);
  c2.ncors_origins = 0;
  c2.hosts = bad;
  c2.nhosts = 1;
  assert_int_equal(h2t_diag_start(&d, &c2), H2T_ERR_INVALID_ARG);
  /* the port is taken: a clear error, nothing changes */
  int busy = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t al = sizeof a;
  bind(busy, (struct sockaddr *)&a, sizeof a);
  listen(busy, 1);
  getsockname(busy, (struct sockaddr *)&a, &al);
  char l[32];
  snprintf(l, sizeof l, "127.0.0.1:%d", ntohs(a.sin_port));
  cfg.listen = l;
  assert_int_equal(h2t_diag_start(&d, &cfg), H2T_ERR_BIND);
  close(busy);
  assert_int_equal(h2t_inflight_disable(), 0);
}

static void test_requests_list(void **state) {
  struct resp r = http("GET", "/debug/requests", NULL);
  assert_int_equal(r.status, 200);
  assert_false(has_header(&r, "Access-Control-Allow-Origin")); /* none listed */
  assert_true(has_header(&r, "Content-Type: application/json"));
  json_t *j = body_json(&r);
  json_t *reqs = json_object_get(j, "requests");
  assert_int_equal(json_array_size(reqs), 2);
  assert_true(json_integer_value(json_object_get(j, "server_time_us")) > 0);
  json_t *c = json_array_get(reqs, 0); /* oldest first: the client one */
  assert_int_equal(json_integer_value(json_object_get(c, "id")), 501);
  assert_string_equal(json_string_value(json_object_get(c, "kind")), "client");
  assert_string_equal(json_string_value(json_object_get(c, "method")), "GET");
  assert_string_equal(json_string_value(json_object_get(c, "authority")),
                      "slownode:8484");
  assert_string_equal(json_string_value(json_object_get(c, "path")),
                      "/blob/9f2c");
  assert_string_equal(json_string_value(json_object_get(c, "state")),
                      "wait_response");
  assert_int_equal(json_integer_value(json_object_get(c, "conn")), 3);
  assert_int_equal(json_integer_value(json_object_get(c, "stream")), 17);
  const char *keys[] = {"age_us", "state_age_us", "status", "bytes_in",
                        "bytes_out"};
  for (size_t i = 0; i < 5; i++)
    assert_non_null(json_object_get(c, keys[i]));
  json_t *s = json_array_get(reqs, 1);
  assert_string_equal(json_string_value(json_object_get(s, "kind")), "server");
  assert_string_equal(json_string_value(json_object_get(s, "state")),
                      "handler");
  assert_string_equal(json_string_value(json_object_get(s, "status")),
                      "querying db");
  json_decref(j);
  resp_free(&r);
}

static void test_one_request_and_recent(void **state) {
  struct resp r = http("GET", "/debug/requests/501", NULL);
  assert_int_equal(r.status, 200);
  json_t *j = body_json(&r);
  json_t *h = json_object_get(j, "history");
  assert_int_equal(json_array_size(h), 2);
  assert_string_equal(
      json_string_value(json_object_get(json_array_get(h, 0), "state")),
      "queued");
  assert_non_null(json_object_get(json_array_get(h, 1), "duration_us"));
  assert_non_null(json_object_get(json_array_get(h, 1), "entered_us"));
  json_decref(j);
  resp_free(&r);

  struct inflight_entry *e = h2t__inflight_begin(INFLIGHT_CLIENT, 777, "GET",
                                            "http", "x:1", "/gone", NULL, NULL);
  h2t__inflight_end(e, H2T_ERR_STREAM_RESET);
  r = http("GET", "/debug/recent", NULL);
  assert_int_equal(r.status, 200);
  j = body_json(&r);
  json_t *first = json_array_get(json_object_get(j, "recent"), 0);
  assert_int_equal(json_integer_value(json_object_get(first, "id")), 777);
  assert_string_equal(json_string_value(json_object_get(first, "outcome")),
                      "error");
  assert_string_equal(json_string_value(json_object_get(first, "error_name")),
                      "H2T_ERR_STREAM_RESET");
  json_decref(j);
  resp_free(&r);
  r = http("GET", "/debug/requests/777", NULL); /* finished: from the ring */
  assert_int_equal(r.status, 200);
  resp_free(&r);
}

static void test_bad_inputs(void **state) {
  struct {
    const char *method, *path;
    int status;
  } cases[] = {
      {"GET", "/debug/requests/424242", 404},
      {"GET", "/debug/requests/abc", 404},
      {"GET", "/debug/requests/0", 404},
      {"GET", "/debug/requests/99999999999999999999999", 404},
      {"GET", "/debug/requests/501/cancel", 405},
      {"DELETE", "/debug/requests", 405},
      {"POST", "/metrics", 405},
      {"GET", "/nope", 404},
      {"GET", "/debug/requests/501/frobnicate", 404},
      {"GET", "/../../etc/passwd", 404},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    struct resp r = http(cases[i].method, cases[i].path, NULL);
    if (r.status != cases[i].status)
      fprintf(stderr, "%s %s -> %d\n", cases[i].method, cases[i].path,
              r.status);
    assert_int_equal(r.status, cases[i].status);
    resp_free(&r);
  }
  /* a declared huge body: 413 before it is sent */
  const char big[] = "POST /debug/requests/501/cancel HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Connection: close\r\nContent-Length: 10000000\r\n\r\n";
  struct resp r = http_raw(big, sizeof big - 1);
  assert_int_equal(r.status, 413);
  resp_free(&r);
  /* huge headers: refused by the connection memory limit */
  size_t n = 200000;
  char *huge = malloc(n + 200);
  int off = sprintf(huge, "GET /debug/requests HTTP/1.1\r\nX-Junk: ");
  memset(huge + off, 'a', n);
  strcpy(huge + off + n, "\r\nConnection: close\r\n\r\n");
  r = http_raw(huge, strlen(huge));
  assert_true(r.status == 0 || r.status == 431 || r.status == 413 ||
              r.status == 400);
  resp_free(&r);
  free(huge);
  /* garbage */
  const char junk[] = "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n";
  r = http_raw(junk, sizeof junk - 1);
  assert_true(r.status == 0 || r.status == 400);
  resp_free(&r);
  /* nothing changed: both requests still there, none canceled */
  r = http("GET", "/debug/requests", NULL);
  assert_int_equal(r.status, 200);
  json_t *j = body_json(&r);
  assert_int_equal(json_array_size(json_object_get(j, "requests")), 2);
  assert_null(json_object_get(json_array_get(json_object_get(j, "requests"), 0),
                              "canceled"));
  json_decref(j);
  resp_free(&r);
  assert_int_equal(atomic_load(&cancel_called_id), 0);
}

/* Random paths and methods: always a clear answer (or a closed
 * connection for what is not HTTP), never a crash, never a cancel. */
static void test_random_requests(void **state) {
  static const char *const methods[] = {"GET", "POST", "PUT", "HEAD",
                                        "DELETE", "OPTIONS", "PATCH", "BREW"};
  static const char *const prefixes[] = {"/debug/requests/", "/debug/",
                                         "/metrics", "/", "//debug/requests/"};
  static const char alphabet[] = "0123456789abc/%.?=&-_~";
  srand(1234);
  atomic_store(&cancel_called_id, 0);
  for (int i = 0; i < 300; i++) {
    char path[128];
    int n = snprintf(path, sizeof path, "%s", prefixes[rand() % 5]);
    int extra = rand() % 24;
    for (int k = 0; k < extra && n < (int)sizeof path - 1; k++)
      path[n++] = alphabet[rand() % (int)(sizeof alphabet - 1)];
    path[n] = '\0';
    const char *m = methods[rand() % 8];
    struct resp r = http(m, path, rand() % 2 ? "Authorization: Bearer nope\r\n"
                                              : NULL);
    int st = r.status;
    if (!(st == 0 || st == 200 || st == 400 || st == 401 || st == 403 ||
          st == 404 || st == 405 || st == 414))
      fprintf(stderr, "%s %s -> %d\n", m, path, st);
    assert_true(st == 0 || st == 200 || st == 400 || st == 401 || st == 403 ||
                st == 404 || st == 405 || st == 414);
    resp_free(&r);
  }
  assert_int_equal(atomic_load(&cancel_called_id), 0);
  struct resp r = http("GET", "/debug/requests", NULL);
  assert_int_equal(r.status, 200);
  resp_free(&r);
}

static void test_cancel_needs_token(void **state) {
  atomic_store(&cancel_called_id, 0);
  struct resp r = http("POST", "/debug/requests/501/cancel", NULL);
  assert_int_equal(r.status, 401);
  assert_true(has_header(&r, "WWW-Authenticate: Bearer"));
  resp_free(&r);
  r = http("POST", "/debug/requests/501/cancel",
           "Authorization: Bearer wrong-token\r\n");
  assert_int_equal(r.status, 403);
  resp_free(&r);
  r = http("POST", "/debug/requests/501/cancel",
           "Authorization: Bearer " TOKEN "x\r\n");
  assert_int_equal(r.status, 403);
  resp_free(&r);
  r = http("POST", "/debug/requests/501/cancel", "Authorization: Basic Zm9v\r\n");
  assert_int_equal(r.status, 401);
  resp_free(&r);
  assert_int_equal(atomic_load(&cancel_called_id), 0);
  r = http("POST", "/debug/requests/31337/cancel",
           "Authorization: Bearer " TOKEN "\r\n");
  assert_int_equal(r.status, 404);
  resp_free(&r);

  /* the real thing, with curl as the client */
  char url[128], auth[64];
  snprintf(url, sizeof url,
           "http://127.0.0.1:%u/debug/requests/501/cancel?reason=stuck", port);
  snprintf(auth, sizeof auth, "Authorization: Bearer %s", TOKEN);
  char *argv[] = {"curl", "-s", "-X", "POST", "-H", auth, "-w", "\n%{http_code}",
                  url, NULL};
  char *out = NULL;
  assert_int_equal(h2t_test_run(argv, 10000, &out), 0);
  assert_non_null(strstr(out, "\n200"));
  assert_non_null(strstr(out, "\"canceled\":true"));
  free(out);
  assert_int_equal(atomic_load(&cancel_called_id), 501);
  assert_string_equal(cancel_reason, "stuck");

  r = http("GET", "/debug/requests/501", NULL);
  json_t *j = body_json(&r);
  assert_string_equal(json_string_value(json_object_get(j, "state")),
                      "canceling");
  assert_string_equal(json_string_value(json_object_get(j, "cancel_reason")),
                      "stuck");
  json_t *h = json_object_get(j, "history");
  json_t *last = json_array_get(h, json_array_size(h) - 1);
  assert_string_equal(json_string_value(json_object_get(last, "reason")),
                      "stuck");
  json_decref(j);
  resp_free(&r);
  r = http("POST", "/debug/requests/501/cancel",
           "Authorization: Bearer " TOKEN "\r\n");
  assert_int_equal(r.status, 409);
  resp_free(&r);
  /* server side too */
  r = http("POST", "/debug/requests/502/cancel",
           "Authorization: bearer " TOKEN "\r\n");
  assert_int_equal(r.status, 200);
  assert_int_equal(atomic_load(&cancel_called_id), 502);
  resp_free(&r);
}

static void test_cancel_disabled_without_token(void **state) {
  atomic_store(&cancel_called_id, 0);
  struct resp r = http("POST", "/debug/requests/501/cancel",
                       "Authorization: Bearer anything\r\n");
  assert_int_equal(r.status, 403);
  assert_non_null(strstr(r.body, "cancel disabled"));
  resp_free(&r);
  assert_int_equal(atomic_load(&cancel_called_id), 0);
}

/* Prometheus text format 0.0.4: every sample is `name{labels} value`, every
 * metric name has a TYPE (and HELP) before its samples, counters end in
 * _total, a histogram's samples are its name + _bucket, _sum or _count.
 * (tests/test_metrics.c has promtool check it too.) */
static void check_prometheus(const char *text) {
  char typed[64][80];
  char types[64][16];
  int ntyped = 0, nsamples = 0;
  const char *p = text;
  while (*p) {
    const char *eol = strchr(p, '\n');
    assert_non_null(eol); /* every line ends in \n */
    char line[512];
    size_t len = (size_t)(eol - p);
    assert_true(len < sizeof line);
    memcpy(line, p, len);
    line[len] = '\0';
    p = eol + 1;
    if (!strncmp(line, "# HELP ", 7))
      continue;
    if (!strncmp(line, "# TYPE ", 7)) {
      char name[80], type[16];
      assert_int_equal(sscanf(line + 7, "%79s %15s", name, type), 2);
      assert_true(!strcmp(type, "counter") || !strcmp(type, "gauge") ||
                  !strcmp(type, "histogram"));
      if (!strcmp(type, "counter"))
        assert_non_null(strstr(name, "_total"));
      strcpy(typed[ntyped], name);
      strcpy(types[ntyped++], type);
      continue;
    }
    assert_true(line[0] != '#');
    /* name */
    size_t i = 0;
    assert_true(isalpha((unsigned char)line[0]) || line[0] == '_');
    while (isalnum((unsigned char)line[i]) || line[i] == '_' || line[i] == ':')
      i++;
    char name[80];
    memcpy(name, line, i);
    name[i] = '\0';
    int found = 0;
    for (int k = 0; k < ntyped; k++) {
      size_t n = strlen(typed[k]);
      found |= !strcmp(typed[k], name) && strcmp(types[k], "histogram");
      found |= !strcmp(types[k], "histogram") && !strncmp(typed[k], name, n) &&
               (!strcmp(name + n, "_bucket") || !strcmp(name + n, "_sum") ||
                !strcmp(name + n, "_count"));
    }
    if (!found)
      fprintf(stderr, "untyped metric %s\n", name);
    assert_true(found);
    /* labels: {k="v",k="v"} */
    if (line[i] == '{') {
      i++;
      while (line[i] != '}') {
        assert_true(isalpha((unsigned char)line[i]) || line[i] == '_');
        while (isalnum((unsigned char)line[i]) || line[i] == '_')
          i++;
        assert_int_equal(line[i++], '=');
        assert_int_equal(line[i++], '"');
        while (line[i] && line[i] != '"') {
          if (line[i] == '\\')
            i++;
          i++;
        }
        assert_int_equal(line[i++], '"');
        if (line[i] == ',')
          i++;
      }
      i++;
    }
    assert_int_equal(line[i++], ' ');
    char *end;
    strtod(line + i, &end);
    assert_true(end > line + i);
    assert_true(*end == '\0');
    nsamples++;
  }
  assert_true(ntyped >= 8);
  assert_true(nsamples >= 20);
}

static uint32_t read_depth(const void *arg) { return *(const uint32_t *)arg; }

static void test_metrics(void **state) {
  h2t_event gc = {.type = H2T_EV_GOT_CONN};
  gc.u.got_conn.new_reason = H2T_CONN_MAX_STREAMS;
  h2t__inflight_event(cli, &gc);
  h2t_event shed = {.type = H2T_EV_SRV_LOAD_SHED};
  shed.u.load_shed.reason = H2T_SHED_INFLIGHT;
  shed.u.load_shed.action = H2T_SHED_REFUSED_STREAM;
  h2t__metrics_event(&shed);
  h2t__metrics_writer_queue_add(5);
  h2t__metrics_writer_queue_add(-2);
  static const uint32_t seven = 7;
  assert_int_equal(h2t__metrics_writer_register(read_depth, &seven), 0);
  struct inflight_entry *e = h2t__inflight_begin(INFLIGHT_CLIENT, 900, "GET",
                                            "http", "x:1", "/", NULL, NULL);
  h2t__inflight_end(e, H2T_ERR_TIMEOUT);

  struct resp r = http("GET", "/metrics", NULL);
  assert_int_equal(r.status, 200);
  assert_true(has_header(&r, "Content-Type: text/plain; version=0.0.4"));
  check_prometheus(r.body);
  assert_non_null(strstr(r.body,
                         "h2t_requests_total{kind=\"client\",outcome=\"timeout\"} 1\n"));
  assert_non_null(strstr(
      r.body, "h2t_requests_in_flight{kind=\"client\",state=\"sending\"} 1\n"));
  assert_non_null(strstr(
      r.body, "h2t_requests_in_flight{kind=\"server\",state=\"handler\"} 1\n"));
  assert_non_null(strstr(
      r.body,
      "h2t_client_connections_opened_total{reason=\"max_streams\"} 1\n"));
  assert_non_null(strstr(r.body, "h2t_load_shed_total{reason=\"inflight\","
                                 "action=\"refused_stream\"} 1\n"));
  assert_non_null(strstr(r.body, "h2t_writer_queue_depth 10\n"));
  assert_non_null(strstr(r.body, "h2t_request_duration_seconds_count{kind="
                                 "\"client\",authority=\"x:1\",outcome="
                                 "\"timeout\"} 1\n"));
  resp_free(&r);
  assert_int_equal(h2t__metrics_writer_unregister(&seven), 0);
  assert_int_equal(h2t__metrics_writer_unregister(&seven), H2T_ERR_NOT_FOUND);
  h2t__metrics_writer_queue_add(-3);
}

static void test_connections(void **state) {
  struct connreg_entry *c = h2t__connreg_add(INFLIGHT_CLIENT, 3, "127.0.0.1:8484",
                                        "slownode:8484");
  struct connreg_entry *s = h2t__connreg_add(INFLIGHT_SERVER, 4, "127.0.0.1:55000",
                                        NULL);
  h2t__connreg_set_max_streams(c, 100);
  h2t__connreg_stream_open(c);
  h2t__connreg_stream_open(c);
  h2t__connreg_stream_close(c);
  h2t__connreg_reused(c);
  h2t__connreg_bytes(c, 1000, 20);
  h2t__connreg_goaway(s, 1);
  h2t__connreg_stream_open(s);
  h2t__connreg_stream_close(s);
  h2t__connreg_stream_close(s); /* one too many: must not wrap */
  struct resp r = http("GET", "/debug/connections", NULL);
  assert_int_equal(r.status, 200);
  json_t *j = body_json(&r);
  json_t *list = json_object_get(j, "connections");
  assert_int_equal(json_array_size(list), 2);
  for (size_t i = 0; i < 2; i++) {
    json_t *o = json_array_get(list, i);
    json_int_t id = json_integer_value(json_object_get(o, "id"));
    if (id == 3) {
      assert_string_equal(json_string_value(json_object_get(o, "peer")),
                          "127.0.0.1:8484");
      assert_int_equal(json_integer_value(json_object_get(o, "streams_active")), 1);
      assert_int_equal(json_integer_value(json_object_get(o, "streams_max")), 100);
      assert_int_equal(json_integer_value(json_object_get(o, "requests")), 2);
      assert_int_equal(json_integer_value(json_object_get(o, "reuses")), 1);
      assert_int_equal(json_integer_value(json_object_get(o, "bytes_in")), 1000);
      assert_true(json_is_null(json_object_get(o, "idle_us")));
      assert_string_equal(json_string_value(json_object_get(o, "goaway")), "none");
    } else {
      assert_int_equal(id, 4);
      assert_string_equal(json_string_value(json_object_get(o, "kind")), "server");
      assert_int_equal(json_integer_value(json_object_get(o, "streams_active")), 0);
      assert_true(json_is_integer(json_object_get(o, "idle_us")));
      assert_string_equal(json_string_value(json_object_get(o, "goaway")), "sent");
    }
  }
  json_decref(j);
  resp_free(&r);
  h2t__connreg_remove(c);
  h2t__connreg_remove(s);
  h2t__connreg_remove(NULL);
}

static void test_profile_endpoint(void **state) {
  struct inflight_entry *e = h2t__inflight_begin(INFLIGHT_CLIENT, 901, "GET",
                                            "http", "prof:1", "/", NULL, NULL);
  h2t_event ev = {.type = H2T_EV_WROTE_REQUEST, .t_us = e->start_us + 50};
  h2t__inflight_event(e, &ev);
  ev.type = H2T_EV_GOT_HEADERS;
  ev.t_us = e->start_us + 1050;
  h2t__inflight_event(e, &ev);
  ev.type = H2T_EV_RETRY;
  h2t__inflight_event(e, &ev);
  h2t__inflight_end(e, 0);
  struct resp r = http("GET", "/debug/profile", NULL);
  assert_int_equal(r.status, 200);
  json_t *j = body_json(&r);
  json_t *rows = json_object_get(j, "by_authority");
  json_t *row = NULL;
  for (size_t i = 0; i < json_array_size(rows); i++)
    if (!strcmp(json_string_value(json_object_get(json_array_get(rows, i),
                                                  "authority")),
                "prof:1"))
      row = json_array_get(rows, i);
  assert_non_null(row);
  json_t *w = json_object_get(json_object_get(row, "states"), "wait_response");
  assert_int_equal(json_integer_value(json_object_get(w, "total_us")), 1000);
  assert_int_equal(json_integer_value(json_object_get(w, "mean_us")), 1000);
  json_decref(j);
  resp_free(&r);
}

/* The web page: diag/ui/'s files byte for byte, with their types, an ETag
 * that revalidates to 304, and a CSP on the page; nothing else under it. */
static char *read_source(const char *rel) {
  char path[512];
  snprintf(path, sizeof path, "%s/%s", H2T_SOURCE_DIR, rel);
  FILE *f = fopen(path, "rb");
  assert_non_null(f);
  char *buf = calloc(1, 1 << 20);
  size_t n = fread(buf, 1, (1 << 20) - 1, f);
  buf[n] = '\0';
  fclose(f);
  return buf;
}

static void test_web_page(void **state) {
  static const struct {
    const char *url, *file, *ctype;
  } files[] = {
      {"/debug/ui", "diag/ui/index.html", "Content-Type: text/html"},
      {"/debug/ui/", "diag/ui/index.html", "Content-Type: text/html"},
      {"/debug/ui/app.js", "diag/ui/app.js", "Content-Type: text/javascript"},
      {"/debug/ui/style.css", "diag/ui/style.css", "Content-Type: text/css"}};
  for (size_t i = 0; i < sizeof files / sizeof files[0]; i++) {
    struct resp r = http("GET", files[i].url, NULL);
    assert_int_equal(r.status, 200);
    assert_true(has_header(&r, files[i].ctype));
    assert_true(has_header(&r, "Cache-Control: no-cache"));
    assert_true(has_header(&r, "X-Content-Type-Options: nosniff"));
    char *want = read_source(files[i].file);
    assert_string_equal(r.body, want);
    free(want);
    if (!strcmp(files[i].file, "diag/ui/index.html"))
      assert_true(has_header(&r, "Content-Security-Policy: default-src 'none'"));
    /* revalidation */
    const char *et = strcasestr(r.head, "\r\nETag: ");
    assert_non_null(et);
    char etag[64], hdr[128];
    assert_int_equal(sscanf(et + 8, "%63s", etag), 1);
    snprintf(hdr, sizeof hdr, "If-None-Match: %s\r\n", etag);
    struct resp r2 = http("GET", files[i].url, hdr);
    assert_int_equal(r2.status, 304);
    assert_string_equal(r2.body, "");
    resp_free(&r2);
    resp_free(&r);
  }
  static const char *missing[] = {"/debug/ui/nope.js", "/debug/ui/../diag.c",
                                  "/debug/ui/app.js/", "/debug/uix"};
  for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++) {
    struct resp r = http("GET", missing[i], NULL);
    assert_int_equal(r.status, 404);
    resp_free(&r);
  }
  struct resp r = http("POST", "/debug/ui", NULL);
  assert_int_equal(r.status, 405);
  resp_free(&r);
  r = http("GET", "/", NULL); /* the index names the page */
  assert_non_null(strstr(r.body, "GET /debug/ui"));
  resp_free(&r);
}

/* The "application loop" is stuck inside a hook; the endpoint answers. */
static void *loop_thread(void *arg) {
  h2t_client_trace tr = {H2T_CLIENT_TRACE_INIT, .got_first_response_byte = h2t_test_stuck_hook};
  trace_chain tc;
  h2t__trace_chain_clear(&tc, 0);
  h2t__trace_chain_add(&tc, &tr);
  h2t__trace_chain_set_inflight(&tc, cli);
  h2t_event ev = {.type = H2T_EV_GOT_FIRST_RESPONSE_BYTE, .conn_id = 3,
                  .stream_id = 17};
  trace_emit(&tc, &ev);
  return NULL;
}

static void test_answers_while_loop_stuck_and_threads(void **state) {
  pthread_t th;
  h2t_test_wedge_reset();
  pthread_create(&th, NULL, loop_thread, NULL);
  h2t_test_wedge_wait();

  uint64_t t0 = h2t_now_us();
  struct resp r = http("GET", "/debug/requests/501", NULL);
  assert_int_equal(r.status, 200);
  json_t *j = body_json(&r);
  assert_string_equal(json_string_value(json_object_get(j, "state")),
                      "receiving");
  json_decref(j);
  resp_free(&r);
  assert_true(h2t_now_us() - t0 < 2000000);

  r = http("GET", "/debug/threads", NULL);
  assert_int_equal(r.status, 200);
  j = body_json(&r);
  assert_true(json_integer_value(json_object_get(j, "threads")) >= 3);
  assert_true(json_integer_value(json_object_get(j, "sampled")) >= 3);
  json_t *stacks = json_object_get(j, "stacks");
  int saw_hook = 0, total = 0;
  for (size_t i = 0; i < json_array_size(stacks); i++) {
    json_t *s = json_array_get(stacks, i);
    total += (int)json_integer_value(json_object_get(s, "count"));
    json_t *frames = json_object_get(s, "frames");
    assert_true(json_array_size(frames) >= 2);
    for (size_t k = 0; k < json_array_size(frames); k++)
      if (strstr(json_string_value(json_array_get(frames, k)), "h2t_test_stuck_hook"))
        saw_hook = 1;
  }
  assert_true(total >= 3);
  if (!saw_hook)
    fprintf(stderr, "%s\n", r.body);
  assert_true(saw_hook); /* the wedged thread, caught where it is stuck */
  json_decref(j);
  resp_free(&r);

  h2t_test_unwedge();
  pthread_join(th, NULL);
}

/* A client that sends half a request and goes quiet is dropped after the
 * configured timeout; others are served meanwhile. */
static void test_slow_client_dropped(void **state) {
  h2t_diag_config cfg = {H2T_DIAG_CONFIG_INIT};
  cfg.timeout_s = 1;
  assert_int_equal(h2t_diag_start(&diag, &cfg), 0);
  port = h2t_diag_port(diag);
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  const char half[] = "GET /debug/requ";
  assert_int_equal(send(fd, half, sizeof half - 1, MSG_NOSIGNAL),
                   (ssize_t)(sizeof half - 1));
  struct resp r = http("GET", "/metrics", NULL);
  assert_int_equal(r.status, 200);
  resp_free(&r);
  uint64_t t0 = h2t_now_us();
  struct pollfd p = {.fd = fd, .events = POLLIN};
  assert_int_equal(poll(&p, 1, 5000), 1);
  char buf[256];
  ssize_t n = recv(fd, buf, sizeof buf, 0);
  assert_true(n <= 0); /* closed, nothing answered */
  uint64_t waited = h2t_now_us() - t0;
  assert_true(waited > 500000 && waited < 4000000);
  close(fd);
  h2t_diag_stop(diag);
  diag = NULL;
  assert_int_equal(h2t_inflight_disable(), 0);
}

/* --- an endpoint safe to leave on (issue 11) ------------------------------ */

static int start_cfg(h2t_diag_config *cfg) {
  int rc = h2t_diag_start(&diag, cfg);
  if (rc)
    return rc;
  port = h2t_diag_port(diag);
  return 0;
}

static void stop_cfg(void) {
  h2t_diag_stop(diag);
  diag = NULL;
  assert_int_equal(h2t_inflight_disable(), 0);
}

static struct resp get_with(const char *path, const char *host,
                            const char *headers) {
  char req[2048];
  int n = snprintf(req, sizeof req,
                   "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n%s\r\n",
                   path, host, headers ? headers : "");
  return http_raw(req, (size_t)n);
}

/* Only listed origins may read, and only they get a preflight. */
static void test_cors_listed_origins_only(void **state) {
  struct resp r = http("GET", "/debug/requests", "Origin: http://evil.example\r\n");
  assert_int_equal(r.status, 200);
  assert_false(has_header(&r, "Access-Control-Allow-Origin"));
  resp_free(&r);
  r = http("GET", "/debug/threads", "Origin: http://127.0.0.1:8001\r\n");
  assert_false(has_header(&r, "Access-Control-Allow-Origin"));
  resp_free(&r);
  r = http("GET", "/debug/requests", "Origin: http://127.0.0.1:8000\r\n");
  assert_int_equal(r.status, 200);
  assert_true(has_header(&r, "Access-Control-Allow-Origin: http://127.0.0.1:8000\r"));
  assert_true(has_header(&r, "Vary: Origin"));
  resp_free(&r);
  r = http("GET", "/debug/recent?format=har", "Origin: http://localhost:9000\r\n");
  assert_true(has_header(&r, "Access-Control-Allow-Origin: http://localhost:9000\r"));
  resp_free(&r);
  /* preflight of the web page's cancel */
  const char *pre = "Origin: http://127.0.0.1:8000\r\n"
                    "Access-Control-Request-Method: POST\r\n"
                    "Access-Control-Request-Headers: authorization\r\n";
  r = http("OPTIONS", "/debug/requests/501/cancel", pre);
  assert_int_equal(r.status, 204);
  assert_true(has_header(&r, "Access-Control-Allow-Origin: http://127.0.0.1:8000\r"));
  assert_true(has_header(&r, "Access-Control-Allow-Headers: Authorization"));
  assert_true(has_header(&r, "Access-Control-Allow-Methods: GET, HEAD, POST"));
  resp_free(&r);
  r = http("OPTIONS", "/debug/requests/501/cancel",
           "Origin: http://evil.example\r\nAccess-Control-Request-Method: POST\r\n");
  assert_int_equal(r.status, 403);
  assert_false(has_header(&r, "Access-Control-Allow-Origin"));
  resp_free(&r);
  /* a foreign page changes nothing, token or not; a listed one may */
  atomic_store(&cancel_called_id, 0);
  r = http("POST", "/debug/requests/501/cancel",
           "Origin: http://evil.example\r\nAuthorization: Bearer " TOKEN "\r\n");
  assert_int_equal(r.status, 403);
  resp_free(&r);
  assert_int_equal(atomic_load(&cancel_called_id), 0);
  r = http("POST", "/debug/requests/501/cancel",
           "Origin: http://127.0.0.1:8000\r\nAuthorization: Bearer " TOKEN "\r\n");
  assert_int_equal(r.status, 200);
  assert_true(has_header(&r, "Access-Control-Allow-Origin: http://127.0.0.1:8000\r"));
  resp_free(&r);
  assert_int_equal(atomic_load(&cancel_called_id), 501);
  /* the page's own origin (http:// + Host) posts without being listed */
  char same[128];
  snprintf(same, sizeof same, "Origin: http://127.0.0.1\r\n"
                              "Authorization: Bearer " TOKEN "\r\n");
  r = http("POST", "/debug/requests/502/cancel", same);
  assert_int_equal(r.status, 200);
  resp_free(&r);
}

/* DNS rebinding: a page of evil.example resolved to 127.0.0.1 sends its own
 * name as Host. */
static void test_host_must_be_loopback_or_listed(void **state) {
  static const char *const hosts[] = {"diag.internal"};
  h2t_diag_config cfg = {H2T_DIAG_CONFIG_INIT, .hosts = hosts, .nhosts = 1};
  assert_int_equal(start_cfg(&cfg), 0);
  char with_port[64];
  snprintf(with_port, sizeof with_port, "evil.example:%u", port);
  const char *refused[] = {"evil.example", with_port, "127.0.0.1.evil.example",
                           "localhost.evil.example", "10.0.0.1", "[::2]",
                           "127.0.0.1:x", "", "localhost:99999"};
  for (size_t i = 0; i < sizeof refused / sizeof refused[0]; i++) {
    struct resp r = get_with("/debug/requests", refused[i], NULL);
    if (r.status != 421)
      fprintf(stderr, "Host: %s -> %d\n", refused[i], r.status);
    assert_true(r.status == 421 || (r.status == 400 && !refused[i][0]));
    if (r.status == 421) {
      json_t *j = body_json(&r);
      assert_non_null(strstr(json_string_value(json_object_get(j, "error")),
                             "Host not allowed"));
      json_decref(j);
    }
    resp_free(&r);
  }
  snprintf(with_port, sizeof with_port, "localhost:%u", port);
  const char *accepted[] = {"127.0.0.1", with_port, "LOCALHOST", "[::1]",
                            "[::1]:80", "127.0.0.2:1", "diag.internal",
                            "Diag.Internal:443"};
  for (size_t i = 0; i < sizeof accepted / sizeof accepted[0]; i++) {
    struct resp r = get_with("/debug/requests", accepted[i], NULL);
    if (r.status != 200)
      fprintf(stderr, "Host: %s -> %d\n", accepted[i], r.status);
    assert_int_equal(r.status, 200);
    resp_free(&r);
  }
  stop_cfg();
}

static int open_fds(int *fds, int n) {
  for (int i = 0; i < n; i += 2)
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, fds + i) != 0)
      return -1;
  return 0;
}

/* select() refuses descriptors past 1023: with 1,100 idle descriptors open
 * (an HTTP/2 server's connections) every request to the endpoint failed. */
static void test_answers_with_fds_past_1024(void **state) {
  struct rlimit rl;
  getrlimit(RLIMIT_NOFILE, &rl);
  if (rl.rlim_max < 2048) {
    fprintf(stderr, "skip: RLIMIT_NOFILE hard limit %lu\n",
            (unsigned long)rl.rlim_max);
    return;
  }
  struct rlimit want = {.rlim_cur = 2048, .rlim_max = rl.rlim_max};
  assert_int_equal(setrlimit(RLIMIT_NOFILE, &want), 0);
  assert_int_equal(start_cfg(&(h2t_diag_config){H2T_DIAG_CONFIG_INIT}), 0);
  enum { N = 1100 };
  static int fds[N];
  assert_int_equal(open_fds(fds, N), 0);
  assert_true(fds[N - 1] >= 1024);
  uint64_t t0 = h2t_now_us();
  for (int i = 0; i < 5; i++) { /* each accepted past fd 1024 */
    struct resp r = http("GET", "/debug/requests", NULL);
    assert_int_equal(r.status, 200);
    resp_free(&r);
  }
  uint64_t t1 = h2t_now_us();
  fprintf(stderr, "5 answers with %d fds open: %.1f ms\n", N,
          (double)(t1 - t0) / 1000);
  stop_cfg();
  /* started with them open: its own socket is past 1024 too */
  assert_int_equal(start_cfg(&(h2t_diag_config){H2T_DIAG_CONFIG_INIT}), 0);
  struct resp r = http("GET", "/metrics", NULL);
  assert_int_equal(r.status, 200);
  resp_free(&r);
  stop_cfg();
  for (int i = 0; i < N; i++)
    close(fds[i]);
  setrlimit(RLIMIT_NOFILE, &rl);
}

static int connect_from(const char *src) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  if (src) {
    inet_pton(AF_INET, src, &a.sin_addr);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
  }
  a.sin_port = htons(port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  return fd;
}

/* Closed by the server: EOF or reset, within ms. */
static int closed_within(int fd, int ms) {
  struct pollfd p = {.fd = fd, .events = POLLIN};
  for (;;) {
    int pr = poll(&p, 1, ms);
    if (pr < 0 && errno == EINTR)
      continue;
    if (pr <= 0)
      return 0;
    char b[64];
    ssize_t n = recv(fd, b, sizeof b, MSG_DONTWAIT);
    return n <= 0;
  }
}

/* Slow-loris: 20 clients trickle a header byte every second (each byte
 * resets MHD's idle timeout).  A normal client still gets its answer at
 * once, and the tricklers are cut at the request deadline. */
static void test_tricklers_cannot_lock_out(void **state) {
  h2t_diag_config cfg = {H2T_DIAG_CONFIG_INIT, .request_deadline_ms = 1500};
  assert_int_equal(start_cfg(&cfg), 0);
  enum { NT = 20 };
  int t[NT];
  static const char req[] = "GET /debug/requests HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  uint64_t t0 = h2t_now_us();
  for (int i = 0; i < NT; i++) {
    t[i] = connect_from(NULL);
    send(t[i], req, 1, MSG_NOSIGNAL);
  }
  usleep(200000);
  uint64_t a0 = h2t_now_us();
  struct resp r = http("GET", "/debug/requests", NULL);
  uint64_t answered = h2t_now_us() - a0;
  fprintf(stderr, "answer with %d tricklers: %.1f ms\n", NT,
          (double)answered / 1000);
  assert_int_equal(r.status, 200);
  assert_true(answered < 1000000);
  resp_free(&r);
  usleep(800000); /* t = 1 s: a byte each, before the deadline */
  int alive = 0;
  for (int i = 0; i < NT; i++)
    alive += send(t[i], req + 1, 1, MSG_NOSIGNAL) == 1 && !closed_within(t[i], 0);
  assert_true(alive >= 1); /* some were kept until the deadline */
  uint64_t last = 0;
  for (int i = 0; i < NT; i++) {
    assert_true(closed_within(t[i], 3000));
    uint64_t at = h2t_now_us() - t0;
    if (at > last)
      last = at;
    close(t[i]);
  }
  fprintf(stderr, "tricklers all cut %.2f s after they connected\n",
          (double)last / 1e6);
  assert_true(last < 2600000); /* deadline 1.5 s, not the 10 s idle timeout */
  stop_cfg();
}

/* One address holds at most max_connections_per_ip; others get in. */
static void test_per_ip_budget(void **state) {
  h2t_diag_config cfg = {H2T_DIAG_CONFIG_INIT, .max_connections = 16,
                         .max_connections_per_ip = 4};
  assert_int_equal(start_cfg(&cfg), 0);
  int t[10], cut = 0;
  for (int i = 0; i < 10; i++)
    t[i] = connect_from("127.0.0.2");
  usleep(300000);
  for (int i = 0; i < 10; i++) {
    cut += closed_within(t[i], 0);
    close(t[i]);
  }
  assert_int_equal(cut, 6);
  struct resp r = http("GET", "/metrics", NULL);
  assert_int_equal(r.status, 200);
  resp_free(&r);
  stop_cfg();
}

/* The body limit is on the total: small chunks do not get around it. */
static void test_chunked_body_limit(void **state) {
  atomic_store(&cancel_called_id, 0);
  size_t cap = 200 * 1024, off = 0;
  char *req = malloc(cap);
  off += (size_t)sprintf(req, "POST /debug/requests/501/cancel HTTP/1.1\r\n"
                              "Host: 127.0.0.1\r\nConnection: close\r\n"
                              "Authorization: Bearer " TOKEN "\r\n"
                              "Transfer-Encoding: chunked\r\n\r\n");
  for (int i = 0; i < 100; i++) {
    off += (size_t)sprintf(req + off, "3e8\r\n");
    memset(req + off, 'x', 1000);
    off += 1000;
    off += (size_t)sprintf(req + off, "\r\n");
  }
  off += (size_t)sprintf(req + off, "0\r\n\r\n");
  struct resp r = http_raw(req, off);
  assert_true(r.status != 200);
  resp_free(&r);
  free(req);
  assert_int_equal(atomic_load(&cancel_called_id), 0);
  r = http("GET", "/debug/requests", NULL); /* and it still answers */
  assert_int_equal(r.status, 200);
  resp_free(&r);
}

/* Input that is not UTF-8: a clear 400 from the endpoint; what the table
 * holds from the network comes out as valid JSON all the same. */
static void test_non_utf8(void **state) {
  atomic_store(&cancel_called_id, 0);
  const char *paths[] = {"/debug/requests?x=%FF", "/debug/%C3%28",
                         "/debug/requests/501?%ED%A0%80=1", "/debug/%C0%AF"};
  for (size_t i = 0; i < 4; i++) {
    struct resp r = http("GET", paths[i], NULL);
    assert_int_equal(r.status, 400);
    json_t *j = body_json(&r);
    assert_string_equal(json_string_value(json_object_get(j, "error")),
                        "path or query is not UTF-8");
    json_decref(j);
    resp_free(&r);
  }
  struct resp r = http("POST", "/debug/requests/501/cancel?reason=%FFx",
                       "Authorization: Bearer " TOKEN "\r\n");
  assert_int_equal(r.status, 400);
  resp_free(&r);
  assert_int_equal(atomic_load(&cancel_called_id), 0);

  struct inflight_entry *e = h2t__inflight_begin(
      INFLIGHT_SERVER, 600, "G\xffT", "http", "h\xc3:1", "/a\xff\xfe?b", NULL, NULL);
  h2t__inflight_set_status(e, "st\xe2\x82");
  r = http("GET", "/debug/requests/600", NULL);
  assert_int_equal(r.status, 200);
  json_t *j = body_json(&r); /* jansson checks UTF-8 when it parses */
  assert_string_equal(json_string_value(json_object_get(j, "path")),
                      "/a\xef\xbf\xbd\xef\xbf\xbd?redacted");
  assert_string_equal(json_string_value(json_object_get(j, "method")),
                      "G\xef\xbf\xbdT");
  assert_non_null(json_object_get(j, "status"));
  assert_non_null(json_object_get(j, "authority"));
  json_decref(j);
  resp_free(&r);
  r = http("GET", "/debug/requests", NULL);
  j = body_json(&r);
  assert_int_equal(json_array_size(json_object_get(j, "requests")), 3);
  json_decref(j);
  resp_free(&r);
  h2t__inflight_end(e, 0);
}

/* Long strings are cut on a character boundary, never inside one. */
static void test_truncation_on_char_boundary(void **state) {
  char path[400] = "/", status[200] = "";
  for (int i = 0; i < 120; i++)
    strcat(path, "\xe2\x82\xac"); /* € */
  for (int i = 0; i < 60; i++)
    strcat(status, "\xc3\xa9"); /* é */
  for (int shift = 0; shift < 3; shift++) {
    char auth[8];
    snprintf(auth, sizeof auth, "h%.*s", shift, "xx");
    struct inflight_entry *e = h2t__inflight_begin(
        INFLIGHT_CLIENT, 610 + (uint64_t)shift, "GET", "http", auth, path, NULL, NULL);
    h2t__inflight_set_status(e, status + 2 * shift); /* whole characters */
    h2t_inflight_info info;
    assert_int_equal(h2t_inflight_get(610 + (uint64_t)shift, &info), 0);
    size_t pl = strlen(info.path), sl = strlen(info.status);
    assert_true(pl > 60 && pl < strlen(path));
    assert_string_equal(info.path + pl - 3, "...");
    assert_string_equal(info.status + sl - 3, "...");
    json_t *p = json_stringn(info.path, pl), *s = json_stringn(info.status, sl);
    assert_non_null(p); /* NULL: not UTF-8, cut inside a character */
    assert_non_null(s);
    json_decref(p);
    json_decref(s);
    h2t__inflight_end(e, 0);
  }
}

/* The whole Authorization value is compared: no prefix, suffix or other
 * spacing of the token passes. */
static void test_token_whole_value(void **state) {
  atomic_store(&cancel_called_id, 0);
  const char *wrong[] = {"Authorization: Bearer s3cret\r\n",
                         "Authorization: Bearer s3cret-token-and-more\r\n",
                         "Authorization: Bearer  s3cret-token\r\n",
                         "Authorization: Bearer\ts3cret-token\r\n",
                         "Authorization: Bearer x s3cret-token\r\n",
                         "Authorization: Bearer s3cret-tokeN\r\n",
                         "Authorization: BearerXs3cret-token\r\n",
                         "Authorization: Bearer s3cret-token\r\n"
                         "Authorization: Bearer nope\r\n"};
  for (size_t i = 0; i < sizeof wrong / sizeof wrong[0]; i++) {
    struct resp r = http("POST", "/debug/requests/501/cancel", wrong[i]);
    if (!(r.status == 400 || r.status == 401 || r.status == 403))
      fprintf(stderr, "%s -> %d\n", wrong[i], r.status);
    assert_true(r.status == 400 || r.status == 401 || r.status == 403);
    resp_free(&r);
  }
  assert_int_equal(atomic_load(&cancel_called_id), 0);
  struct resp r = http("POST", "/debug/requests/501/cancel",
           "Authorization: BEARER " TOKEN "\r\n"); /* the scheme's case aside */
  assert_int_equal(r.status, 200);
  resp_free(&r);
}

/* Query strings are "redacted" in every answer unless show_query. */
static void check_query_shown(int show) {
  struct inflight_entry *e = h2t__inflight_begin(
      INFLIGHT_SERVER, 620, "GET", "http", "q:1", "/search?user=alice&t=SECRET",
      NULL, NULL);
  struct resp r = http("GET", "/debug/requests/620", NULL);
  json_t *j = body_json(&r);
  assert_string_equal(json_string_value(json_object_get(j, "path")),
                      show ? "/search?user=alice&t=SECRET" : "/search?redacted");
  json_decref(j);
  resp_free(&r);
  r = http("GET", "/debug/requests", NULL);
  assert_true((strstr(r.body, "SECRET") != NULL) == show);
  resp_free(&r);
  h2t__inflight_end(e, 0);
  const char *routes[] = {"/debug/recent", "/debug/recent?format=har",
                          "/debug/recent?format=chrome"};
  for (int i = 0; i < 3; i++) {
    r = http("GET", routes[i], NULL);
    assert_int_equal(r.status, 200);
    assert_true((strstr(r.body, "SECRET") != NULL) == show);
    assert_non_null(strstr(r.body, show ? "/search?user=alice" : "/search?redacted"));
    resp_free(&r);
  }
}

static void test_query_redacted_by_default(void **state) {
  check_query_shown(0);
}

static void test_query_shown_when_asked(void **state) {
  h2t_diag_config cfg = {H2T_DIAG_CONFIG_INIT, .show_query = 1};
  assert_int_equal(start_cfg(&cfg), 0);
  check_query_shown(1);
  stop_cfg();
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_config_checks),
      cmocka_unit_test(test_slow_client_dropped),
      cmocka_unit_test_setup_teardown(test_requests_list, setup_token, teardown),
      cmocka_unit_test_setup_teardown(test_one_request_and_recent, setup_token,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_bad_inputs, setup_token, teardown),
      cmocka_unit_test_setup_teardown(test_random_requests, setup_token,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_cancel_needs_token, setup_token,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_cancel_disabled_without_token,
                                      setup_notoken, teardown),
      cmocka_unit_test_setup_teardown(test_metrics, setup_token, teardown),
      cmocka_unit_test_setup_teardown(test_connections, setup_token, teardown),
      cmocka_unit_test_setup_teardown(test_web_page, setup_token, teardown),
      cmocka_unit_test_setup_teardown(test_profile_endpoint, setup_token,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_answers_while_loop_stuck_and_threads,
                                      setup_token, teardown),
      cmocka_unit_test_setup_teardown(test_cors_listed_origins_only, setup_cors,
                                      teardown),
      cmocka_unit_test(test_host_must_be_loopback_or_listed),
      cmocka_unit_test(test_answers_with_fds_past_1024),
      cmocka_unit_test(test_tricklers_cannot_lock_out),
      cmocka_unit_test(test_per_ip_budget),
      cmocka_unit_test_setup_teardown(test_chunked_body_limit, setup_token,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_non_utf8, setup_token, teardown),
      cmocka_unit_test_setup_teardown(test_truncation_on_char_boundary,
                                      setup_token, teardown),
      cmocka_unit_test_setup_teardown(test_token_whole_value, setup_token,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_query_redacted_by_default,
                                      setup_token, teardown),
      cmocka_unit_test(test_query_shown_when_asked),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
