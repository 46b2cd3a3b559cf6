/* trace/metrics_hist.c: the /metrics histograms.  Buckets and sums from
 * known durations, authorities beyond the configured number folded into
 * "other", counts of exited threads kept, and the whole text accepted by
 * `promtool check metrics` (Debian's prometheus package). */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <h2trace/diag.h>
#include <h2trace/inflight.h>
#include "trace/inflight_int.h"

static int setup(void **state) {
  h2t_inflight_config c = {H2T_INFLIGHT_CONFIG_INIT, .metrics_authorities = 2};
  return h2t_inflight_enable(&c);
}
static int teardown(void **state) { return h2t_inflight_disable(); }

/* A client request that queued q µs, waited w µs for its response and
 * received for r µs (event times in its future: the durations are exact,
 * its end is clamped to the last event). */
static void one(const char *authority, uint64_t q, uint64_t w, uint64_t r,
                int error) {
  static atomic_uint_fast64_t id = 1;
  struct inflight_entry *e = h2t__inflight_begin(
      INFLIGHT_CLIENT, atomic_fetch_add(&id, 1), "GET", "http", authority, "/",
      NULL, NULL);
  assert_non_null(e);
  uint64_t b = e->start_us;
  h2t_event ev = {.type = H2T_EV_WROTE_REQUEST, .t_us = b + q};
  h2t__inflight_event(e, &ev);
  ev.type = H2T_EV_GOT_FIRST_RESPONSE_BYTE;
  ev.t_us = b + q + w;
  h2t__inflight_event(e, &ev);
  ev.type = H2T_EV_RETRY; /* ends the receiving time */
  ev.t_us = b + q + w + r;
  h2t__inflight_event(e, &ev);
  h2t__inflight_end(e, error);
}

static char *metrics(void) {
  char *t;
  assert_int_equal(h2t_diag_metrics(&t, NULL), 0);
  return t;
}

/* The value of the sample `series` (name{labels} up to the value), -1 if
 * absent. */
static double sample(const char *text, const char *series) {
  size_t n = strlen(series);
  for (const char *p = text; (p = strstr(p, series)); p += n)
    if ((p == text || p[-1] == '\n') && p[n] == ' ')
      return strtod(p + n + 1, NULL);
  return -1;
}

#define DUR(auth, outcome, rest)                                               \
  "h2t_request_duration_seconds" rest "{kind=\"client\",authority=\"" auth     \
  "\",outcome=\"" outcome "\""

static void test_buckets(void **state) {
  one("a:1", 300, 2000, 40000, 0);  /* 42.3 ms */
  one("a:1", 100000, 0, 0, 0);      /* exactly 0.1 s: in le="0.1" */
  one("a:1", 50, 50, 0, H2T_ERR_TIMEOUT);
  char *t = metrics();
  assert_true(sample(t, DUR("a:1", "ok", "_bucket") ",le=\"0.025\"}") == 0);
  assert_true(sample(t, DUR("a:1", "ok", "_bucket") ",le=\"0.05\"}") == 1);
  assert_true(sample(t, DUR("a:1", "ok", "_bucket") ",le=\"0.1\"}") == 2);
  assert_true(sample(t, DUR("a:1", "ok", "_bucket") ",le=\"+Inf\"}") == 2);
  assert_true(sample(t, DUR("a:1", "ok", "_count") "}") == 2);
  assert_float_equal(sample(t, DUR("a:1", "ok", "_sum") "}"), 0.1423, 1e-9);
  assert_true(sample(t, DUR("a:1", "timeout", "_bucket") ",le=\"0.0001\"}") ==
              1);
  assert_true(sample(t, DUR("a:1", "connect", "_count") "}") == -1);
  /* time per state: queued 300 µs, 100 ms and 50 µs */
  const char *q = "h2t_request_state_seconds_bucket{kind=\"client\","
                  "state=\"queued\",le=\"%s\"}";
  char s[200];
  snprintf(s, sizeof s, q, "0.0001");
  assert_true(sample(t, s) == 1);
  snprintf(s, sizeof s, q, "0.00025");
  assert_true(sample(t, s) == 1);
  snprintf(s, sizeof s, q, "0.0005");
  assert_true(sample(t, s) == 2);
  snprintf(s, sizeof s, q, "0.1");
  assert_true(sample(t, s) == 3);
  assert_float_equal(sample(t, "h2t_request_state_seconds_sum{kind=\"client\","
                               "state=\"wait_response\"}"),
                     0.00205, 1e-9);
  free(t);
}

static void test_authorities_fold_into_other(void **state) {
  one("a:1", 10, 10, 10, 0);
  one("b:2", 10, 10, 10, 0);
  one("c:3", 10, 10, 10, 0); /* third of two: other */
  one("d:4", 10, 10, 10, 0);
  one("bad\"quote", 10, 10, 10, 0); /* not a plain label value: other */
  one("", 10, 10, 10, 0);
  one("b:2", 10, 10, 10, 0);
  char *t = metrics();
  assert_true(sample(t, DUR("a:1", "ok", "_count") "}") == 1);
  assert_true(sample(t, DUR("b:2", "ok", "_count") "}") == 2);
  assert_true(sample(t, DUR("other", "ok", "_count") "}") == 4);
  assert_null(strstr(t, "c:3"));
  assert_null(strstr(t, "bad"));
  free(t);

  /* a new number makes the table anew: counts start over */
  h2t_inflight_config c = {H2T_INFLIGHT_CONFIG_INIT, .metrics_authorities = 3};
  assert_int_equal(h2t_inflight_enable(&c), 0);
  t = metrics();
  assert_true(sample(t, DUR("a:1", "ok", "_count") "}") == -1);
  free(t);
  one("c:3", 10, 10, 10, 0);
  t = metrics();
  assert_true(sample(t, DUR("c:3", "ok", "_count") "}") == 1);
  free(t);
  c.metrics_authorities = H2T_METRICS_AUTHORITIES_MAX + 1;
  assert_int_equal(h2t_inflight_enable(&c), H2T_ERR_INVALID_ARG);
}

static void *five(void *arg) {
  for (int i = 0; i < 5; i++)
    one("a:1", 10, 10, 10, 0);
  return NULL;
}

/* A loop thread that exits takes none of its counts with it. */
static void test_exited_threads_counted(void **state) {
  for (int round = 1; round <= 3; round++) {
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, five, NULL), 0);
    assert_int_equal(pthread_join(th, NULL), 0);
    char *t = metrics();
    assert_true(sample(t, DUR("a:1", "ok", "_count") "}") == 5 * round);
    free(t);
  }
  five(NULL);
  char *t = metrics();
  assert_true(sample(t, DUR("a:1", "ok", "_count") "}") == 20);
  free(t);
}

static void test_connections(void **state) {
  struct connreg_entry *c = h2t__connreg_add(INFLIGHT_SERVER, 7, "p", NULL);
  assert_non_null(c);
  for (int i = 0; i < 3; i++)
    h2t__connreg_stream_open(c);
  h2t__connreg_remove(c);
  char *t = metrics();
  assert_true(sample(t, "h2t_connection_requests_bucket{kind=\"server\","
                        "le=\"2\"}") == 0);
  assert_true(sample(t, "h2t_connection_requests_bucket{kind=\"server\","
                        "le=\"5\"}") == 1);
  assert_true(sample(t, "h2t_connection_requests_sum{kind=\"server\"}") == 3);
  assert_true(sample(t, "h2t_connection_duration_seconds_count{kind=\"server\"}") ==
              1);
  free(t);
}

/* Every kind of series at once, checked by Prometheus's own linter. */
static void test_promtool(void **state) {
  if (system("command -v promtool >/dev/null 2>&1") != 0) {
    fprintf(stderr, "no promtool (Debian package prometheus): skipped\n");
    skip();
  }
  one("a:1", 300, 2000, 40000, 0);
  one("b:2", 300, 2000, 40000, H2T_ERR_CANCELED);
  one("c:3", 300, 2000, 40000, H2T_ERR_STREAM_RESET);
  struct inflight_entry *e = h2t__inflight_begin(
      INFLIGHT_SERVER, 99, "GET", "https", "srv:443", "/", NULL, NULL);
  h2t__inflight_end(e, 0);
  struct connreg_entry *c = h2t__connreg_add(INFLIGHT_CLIENT, 8, "p", "a:1");
  h2t__connreg_stream_open(c);
  h2t__connreg_remove(c);
  h2t_event shed = {.type = H2T_EV_SRV_LOAD_SHED};
  shed.u.load_shed.reason = H2T_SHED_INFLIGHT;
  shed.u.load_shed.action = H2T_SHED_503;
  h2t__metrics_event(&shed);

  char *t = metrics();
  char path[] = "/tmp/h2t-metrics-XXXXXX";
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  size_t len = strlen(t);
  assert_int_equal(write(fd, t, len), (ssize_t)len);
  close(fd);
  free(t);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "promtool check metrics < %s 2>&1", path);
  FILE *p = popen(cmd, "r");
  assert_non_null(p);
  char out[4096];
  size_t n = fread(out, 1, sizeof out - 1, p);
  out[n] = '\0';
  int rc = pclose(p);
  unlink(path);
  if (rc != 0 || n)
    fprintf(stderr, "promtool check metrics:\n%s", out);
  assert_int_equal(rc, 0);
  assert_int_equal(n, 0); /* no lint complaint either */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_buckets, setup, teardown),
      cmocka_unit_test_setup_teardown(test_authorities_fold_into_other, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_exited_threads_counted, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_connections, setup, teardown),
      cmocka_unit_test_setup_teardown(test_promtool, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
