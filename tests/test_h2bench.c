/* h2bench client against a real nghttpd: every request counted, with and
 * without tracing, over h2c and TLS. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "peer.h"

static int h2c_port, tls_port;
static const char *cert, *key;

static int setup(void **state) {
  if (h2t_test_nghttpd(0, NULL, NULL, &h2c_port) < 0 ||
      h2t_test_nghttpd(1, NULL, NULL, &tls_port) < 0 ||
      h2t_test_make_cert(&cert, &key) != 0)
    return -1;
  return 0;
}

/* h2bench client ARGS... (NULL-ended); stdout and stderr together. */
static char *bench(int *rc, ...) {
  char *argv[24] = {(char *)h2t_test_bin("h2bench"), "client"};
  int n = 2;
  va_list ap;
  va_start(ap, rc);
  for (char *a; (a = va_arg(ap, char *)) && n < 23;)
    argv[n++] = a;
  va_end(ap);
  argv[n] = NULL;
  char *out = NULL;
  *rc = h2t_test_run(argv, 30000, &out);
  return out;
}

static char *url(int tls, int port, const char *path) {
  static char buf[4][128];
  static int i;
  char *b = buf[i++ % 4];
  snprintf(b, 128, "%s://127.0.0.1:%d%s", tls ? "https" : "http", port, path);
  return b;
}

static void expect_all_ok(const char *out, int rc, int n) {
  char want[128];
  snprintf(want, sizeof want,
           "requests: %d total, %d started, %d done, %d succeeded, 0 failed, "
           "0 errored, 0 timeout\n",
           n, n, n, n);
  if (rc != 0 || !strstr(out, want))
    fail_msg("rc %d, wanted '%s' in:\n%s", rc, want, out);
  snprintf(want, sizeof want, "status codes: %d 2xx, 0 3xx, 0 4xx, 0 5xx", n);
  assert_non_null(strstr(out, want));
  snprintf(want, sizeof want, "traffic: %dB (%d) data", 6 * n, 6 * n);
  if (6 * n < 1024)
    assert_non_null(strstr(out, want));
  assert_true(!strncmp(out, "finished in ", 12));
  assert_non_null(strstr(out, "time for request: "));
  assert_non_null(strstr(out, "p99 "));
}

static void test_h2c_counts_every_request(void **state) {
  int rc;
  char *out = bench(&rc, "-n200", "-c2", "-m5", url(0, h2c_port, "/6"), NULL);
  expect_all_ok(out, rc, 200);
  assert_non_null(strstr(out, "connections     : 2 opened"));
  assert_null(strstr(out, "hook calls"));
  free(out);
}

static void test_trace_all_sees_every_request(void **state) {
  int rc;
  char *out = bench(&rc, "-n200", "-c2", "-m5", "--trace=all",
                    url(0, h2c_port, "/6"), NULL);
  expect_all_ok(out, rc, 200);
  unsigned long calls = 0;
  const char *p = strstr(out, "trace           : all, ");
  assert_non_null(p);
  assert_int_equal(sscanf(p, "trace           : all, %lu hook calls", &calls),
                   1);
  /* at least got_conn, wrote_headers, wrote_request, first byte and done */
  assert_true(calls >= 200 * 5);
  free(out);
}

static void test_tls(void **state) {
  int rc;
  char *out = bench(&rc, "-n100", "-c2", "-m4", "--cacert", cert,
                    url(1, tls_port, "/6"), NULL);
  expect_all_ok(out, rc, 100);
  free(out);
}

static void test_duration(void **state) {
  int rc;
  char *out = bench(&rc, "-D", "0.3", "-c2", "-m3", url(0, h2c_port, "/6"),
                    NULL);
  unsigned long total, started, done, ok;
  const char *p = strstr(out, "requests: ");
  assert_non_null(p);
  assert_int_equal(sscanf(p, "requests: %lu total, %lu started, %lu done, "
                             "%lu succeeded, 0 failed",
                          &total, &started, &done, &ok),
                   4);
  assert_int_equal(rc, 0);
  assert_true(ok > 0);
  assert_int_equal(ok, done);
  assert_int_equal(done, started);
  double secs = 0;
  assert_int_equal(sscanf(out, "finished in %lfms", &secs), 1);
  assert_true(secs >= 290 && secs < 2000); /* ms; stops at ~300 */
  free(out);
}

static void test_errors(void **state) {
  int rc;
  char *out = bench(&rc, "-n", "x", "http://127.0.0.1:1/", NULL);
  assert_int_equal(rc, 2);
  free(out);
  out = bench(&rc, "--trace=some", "http://127.0.0.1:1/", NULL);
  assert_int_equal(rc, 2);
  free(out);
  char p[64];
  snprintf(p, sizeof p, "http://127.0.0.1:%d/", h2t_test_free_port());
  out = bench(&rc, "-n10", p, NULL);
  assert_int_equal(rc, 1);
  assert_non_null(strstr(out, "H2T_ERR_CONNECT_REFUSED"));
  free(out);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_h2c_counts_every_request),
      cmocka_unit_test(test_trace_all_sees_every_request),
      cmocka_unit_test(test_tls),
      cmocka_unit_test(test_duration),
      cmocka_unit_test(test_errors),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
