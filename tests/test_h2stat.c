/* h2stat against a real nghttpd (h2c and TLS): waterfall, connection reuse
 * lines, --json, errors and exit codes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>

#include "peer.h"

static int h2c_port, tls_port;
static const char *cert, *key;

/* Run h2stat with the given arguments (NULL-ended), stdout and stderr apart. */
static int run(char **out, char **err, ...) {
  static int seq;
  char errpath[400], script[500];
  snprintf(errpath, sizeof errpath, "%s/stderr-%d", h2t_test_tmpdir(), seq++);
  snprintf(script, sizeof script, "exec \"$0\" \"$@\" 2>'%s'", errpath);
  char *argv[40] = {"sh", "-c", script, (char *)h2t_test_bin("h2stat")};
  int n = 4;
  va_list ap;
  va_start(ap, err);
  for (char *a; (a = va_arg(ap, char *)) && n < 39;)
    argv[n++] = a;
  va_end(ap);
  argv[n] = NULL;
  int rc = h2t_test_run(argv, 20000, out);
  FILE *f = fopen(errpath, "r");
  char *e = calloc(1, 8192);
  if (f) {
    size_t r = fread(e, 1, 8191, f);
    e[r] = '\0';
    fclose(f);
  }
  *err = e;
  return rc;
}

static int count(const char *hay, const char *needle) {
  int n = 0;
  for (const char *p = hay; (p = strstr(p, needle)); p += strlen(needle))
    n++;
  return n;
}

static int lines(const char *s) { return count(s, "\n"); }

static char *url(int tls, int port, const char *path) {
  static char buf[4][128];
  static int i;
  char *b = buf[i++ % 4];
  snprintf(b, 128, "%s://127.0.0.1:%d%s", tls ? "https" : "http", port, path);
  return b;
}

static int setup(void **state) {
  if (h2t_test_nghttpd(0, NULL, NULL, &h2c_port) < 0 ||
      h2t_test_nghttpd(1, NULL, NULL, &tls_port) < 0 ||
      h2t_test_make_cert(&cert, &key) != 0)
    return -1;
  setenv("NO_COLOR", "", 1); /* a pipe alone must already mean no colour */
  return 0;
}

static void test_h2c_waterfall_and_new_conn(void **state) {
  char *out, *err;
  assert_int_equal(run(&out, &err, url(0, h2c_port, "/"), NULL), 0);
  assert_string_equal(err, "");
  static const char *const labels[] = {
      "DNS Lookup", "TCP Connection", "Server Processing", "Content Transfer",
      "namelookup:", "connect:", "starttransfer:", "total:", "HTTP/2 200",
      "Body discarded (6 bytes)", "\nconn #1 new: no_conn\n",
      "Connected to 127.0.0.1:"};
  for (size_t i = 0; i < sizeof labels / sizeof labels[0]; i++)
    if (!strstr(out, labels[i]))
      fail_msg("'%s' missing from:\n%s", labels[i], out);
  assert_null(strstr(out, "TLS Handshake")); /* h2c: no TLS column */
  assert_null(strchr(out, '\033'));          /* a pipe gets no colour */
  free(out);
  free(err);
}

static void test_sequential_requests_reuse_the_connection(void **state) {
  char *out, *err;
  assert_int_equal(run(&out, &err, "-n", "3", url(0, h2c_port, "/6"), NULL), 0);
  assert_int_equal(count(out, "\nconn #1 new: no_conn\n"), 1);
  assert_int_equal(count(out, "\nconn #1 reused (idle "), 2);
  assert_int_equal(count(out, "total:"), 3);
  assert_int_equal(count(out, "Body discarded (6 bytes)"), 3);
  /* the same connection each time */
  unsigned long id1, id2;
  const char *p = strstr(out, "conn #");
  assert_int_equal(sscanf(p, "conn #%lu", &id1), 1);
  p = strstr(out, " reused (idle ");
  while (p > out && strncmp(p, "conn #", 6))
    p--;
  assert_int_equal(sscanf(p, "conn #%lu", &id2), 1);
  assert_int_equal(id1, id2);
  free(out);
  free(err);
}

static void test_tls_with_cacert(void **state) {
  char *out, *err;
  assert_int_equal(
      run(&out, &err, "--cacert", cert, url(1, tls_port, "/"), NULL), 0);
  assert_string_equal(err, "");
  assert_non_null(strstr(out, "TLS Handshake"));
  assert_non_null(strstr(out, "pretransfer:"));
  assert_non_null(strstr(out, "ALPN h2"));
  assert_non_null(strstr(out, " new: no_conn"));
  assert_non_null(strstr(out, "HTTP/2 200"));
  free(out);
  free(err);
}

static void test_tls_unknown_ca_fails_with_one_line(void **state) {
  char *out, *err;
  char *u = url(1, tls_port, "/");
  assert_int_not_equal(run(&out, &err, u, NULL), 0);
  char want[256];
  snprintf(want, sizeof want,
           "h2stat: %s: peer certificate verification failed "
           "(H2T_ERR_TLS_VERIFY)\n",
           u);
  assert_string_equal(err, want);
  assert_null(strstr(out, "total:"));
  free(out);
  free(err);
}

static void test_tls_insecure(void **state) {
  char *out, *err;
  assert_int_equal(run(&out, &err, "-k", url(1, tls_port, "/6"), NULL), 0);
  assert_non_null(strstr(out, "HTTP/2 200"));
  assert_non_null(strstr(out, "TLS Handshake"));
  free(out);
  free(err);
}

/* Parse every stdout line; check what each must have; return them. */
static json_t *parse_lines(const char *out) {
  json_t *arr = json_array();
  const char *p = out;
  while (*p) {
    const char *nl = strchr(p, '\n');
    assert_non_null(nl);
    json_error_t e;
    json_t *o = json_loadb(p, (size_t)(nl - p), 0, &e);
    if (!o)
      fail_msg("line is not JSON (%s): %.*s", e.text, (int)(nl - p), p);
    assert_true(json_is_integer(json_object_get(o, "req")));
    assert_true(json_is_string(json_object_get(o, "event")));
    assert_true(json_is_integer(json_object_get(o, "t_us")));
    json_array_append_new(arr, o);
    p = nl + 1;
  }
  return arr;
}

static const char *ev_name(json_t *o) {
  return json_string_value(json_object_get(o, "event"));
}

/* The events of request `req` contain `want` in this order. */
static void assert_order(json_t *arr, int req, const char *const *want,
                         size_t n) {
  size_t k = 0, i;
  json_t *o;
  json_array_foreach(arr, i, o) {
    if (json_integer_value(json_object_get(o, "req")) != req)
      continue;
    if (k < n && !strcmp(ev_name(o), want[k]))
      k++;
  }
  if (k != n)
    fail_msg("request %d: event '%s' missing or out of order", req, want[k]);
}

static json_t *find(json_t *arr, int req, const char *event) {
  size_t i;
  json_t *o;
  json_array_foreach(arr, i, o) {
    if (json_integer_value(json_object_get(o, "req")) == req &&
        !strcmp(ev_name(o), event))
      return o;
  }
  return NULL;
}

static void check_got_conn(json_t *g, int reused) {
  assert_non_null(g);
  assert_true(json_is_integer(json_object_get(g, "conn")));
  assert_true(json_integer_value(json_object_get(g, "conn")) > 0);
  assert_true(json_is_boolean(json_object_get(g, "was_idle")));
  assert_true(json_is_integer(json_object_get(g, "idle_us")));
  assert_int_equal(json_is_true(json_object_get(g, "reused")), reused);
  if (reused)
    assert_null(json_object_get(g, "new_reason"));
  else
    assert_string_equal(json_string_value(json_object_get(g, "new_reason")),
                        "no_conn");
}

static void test_json_h2c_two_requests(void **state) {
  char *out, *err;
  assert_int_equal(
      run(&out, &err, "--json", "-n", "2", url(0, h2c_port, "/6"), NULL), 0);
  assert_string_equal(err, "");
  json_t *arr = parse_lines(out);
  static const char *const first[] = {
      "get_conn",      "dns_start", "dns_done",
      "connect_start", "connect_done", "got_conn",
      "wrote_headers", "wrote_request", "got_first_response_byte",
      "put_idle_conn", "done"};
  assert_order(arr, 0, first, sizeof first / sizeof first[0]);
  static const char *const second[] = {"get_conn", "got_conn", "wrote_request",
                                       "got_first_response_byte", "done"};
  assert_order(arr, 1, second, sizeof second / sizeof second[0]);
  assert_null(find(arr, 1, "connect_start")); /* reused: no new connection */
  check_got_conn(find(arr, 0, "got_conn"), 0);
  check_got_conn(find(arr, 1, "got_conn"), 1);
  assert_int_equal(
      json_integer_value(json_object_get(find(arr, 0, "got_conn"), "conn")),
      json_integer_value(json_object_get(find(arr, 1, "got_conn"), "conn")));
  json_t *done = find(arr, 1, "done");
  assert_string_equal(json_string_value(json_object_get(done, "error")),
                      "H2T_OK");
  assert_int_equal(json_integer_value(json_object_get(done, "status")), 200);
  assert_int_equal(json_integer_value(json_object_get(done, "bytes_recv")), 6);
  /* done is each request's last event */
  size_t i;
  json_t *o;
  int seen_done[2] = {0, 0};
  json_array_foreach(arr, i, o) {
    int r = (int)json_integer_value(json_object_get(o, "req"));
    assert_true(r == 0 || r == 1);
    assert_false(seen_done[r]);
    if (!strcmp(ev_name(o), "done"))
      seen_done[r] = 1;
  }
  assert_true(seen_done[0] && seen_done[1]);
  json_decref(arr);
  free(out);
  free(err);
}

static void test_json_tls_order_and_redaction(void **state) {
  char *out, *err;
  assert_int_equal(run(&out, &err, "--json", "--cacert", cert, "-H",
                       "Authorization: Bearer s3cret", "-H", "X-Test: yes",
                       url(1, tls_port, "/"), NULL),
                   0);
  json_t *arr = parse_lines(out);
  static const char *const first[] = {
      "get_conn",      "dns_start",           "dns_done",
      "connect_start", "connect_done",        "tls_handshake_start",
      "tls_handshake_done", "got_conn",       "wrote_headers",
      "wrote_request", "got_first_response_byte", "put_idle_conn",
      "done"};
  assert_order(arr, 0, first, sizeof first / sizeof first[0]);
  json_t *tls = find(arr, 0, "tls_handshake_done");
  assert_string_equal(json_string_value(json_object_get(tls, "alpn")), "h2");
  assert_null(strstr(out, "s3cret"));
  int saw_auth = 0, saw_test = 0;
  size_t i;
  json_t *o;
  json_array_foreach(arr, i, o) {
    if (strcmp(ev_name(o), "wrote_header_field"))
      continue;
    const char *n = json_string_value(json_object_get(o, "name"));
    const char *v = json_string_value(json_object_get(o, "value"));
    if (!strcmp(n, "authorization")) {
      assert_string_equal(v, "[redacted]");
      saw_auth = 1;
    }
    if (!strcmp(n, "x-test")) {
      assert_string_equal(v, "yes");
      saw_test = 1;
    }
  }
  assert_true(saw_auth && saw_test);
  json_decref(arr);
  free(out);
  free(err);
}

static void test_json_concurrent_requests(void **state) {
  char *out, *err;
  assert_int_equal(
      run(&out, &err, "--json", "-p", "3", url(0, h2c_port, "/6"), NULL), 0);
  json_t *arr = parse_lines(out);
  for (int r = 0; r < 3; r++) {
    json_t *d = find(arr, r, "done");
    assert_non_null(d);
    assert_int_equal(json_integer_value(json_object_get(d, "status")), 200);
  }
  assert_null(find(arr, 3, "done"));
  json_decref(arr);
  free(out);
  free(err);
}

static void test_output_file_and_body(void **state) {
  char *out, *err, path[400], body[400];
  snprintf(path, sizeof path, "%s/body.out", h2t_test_tmpdir());
  snprintf(body, sizeof body, "%s/req.body", h2t_test_tmpdir());
  assert_int_equal(run(&out, &err, "-o", path, url(0, h2c_port, "/6"), NULL),
                   0);
  assert_non_null(strstr(out, "Body stored in: "));
  assert_non_null(strstr(out, "(6 bytes)"));
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  char got[16] = {0};
  assert_int_equal(fread(got, 1, sizeof got - 1, f), 6);
  fclose(f);
  assert_string_equal(got, "abcdef");
  free(out);
  free(err);

  /* a body that cannot be written is a failure, not "stored" */
  assert_int_equal(run(&out, &err, "-o", "/dev/full", url(0, h2c_port, "/6"),
                       NULL),
                   1);
  assert_int_equal(lines(err), 1);
  assert_non_null(strstr(err, "/dev/full: "));
  assert_null(strstr(out, "Body stored"));
  free(out);
  free(err);

  f = fopen(body, "w");
  fputs("0123456789", f);
  fclose(f);
  char at[420];
  snprintf(at, sizeof at, "@%s", body);
  assert_int_equal(
      run(&out, &err, "--json", "-d", at, url(0, h2c_port, "/6"), NULL), 0);
  json_t *arr = parse_lines(out);
  json_t *done = find(arr, 0, "done");
  assert_int_equal(json_integer_value(json_object_get(done, "bytes_sent")), 10);
  int post = 0;
  size_t i;
  json_t *o;
  json_array_foreach(arr, i, o) {
    if (!strcmp(ev_name(o), "wrote_header_field") &&
        !strcmp(json_string_value(json_object_get(o, "name")), ":method"))
      post = !strcmp(json_string_value(json_object_get(o, "value")), "POST");
  }
  assert_true(post);
  json_decref(arr);
  free(out);
  free(err);
}

static void test_concurrent_bodies_to_one_file(void **state) {
  char *out, *err, path[400];
  snprintf(path, sizeof path, "%s/bodies.out", h2t_test_tmpdir());
  assert_int_equal(
      run(&out, &err, "-p", "3", "-o", path, url(0, h2c_port, "/6"), NULL), 0);
  assert_int_equal(count(out, "[req "), 3);
  FILE *f = fopen(path, "r");
  assert_non_null(f);
  char got[32] = {0};
  assert_int_equal(fread(got, 1, sizeof got - 1, f), 18);
  fclose(f);
  assert_string_equal(got, "abcdefabcdefabcdef"); /* whole bodies, not mixed */
  free(out);
  free(err);
}

/* Colour only on a terminal, and never with NO_COLOR: run under script(1),
 * which gives the program a pty. */
static int run_tty(const char *no_color, char **out) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "'%s' '%s'", h2t_test_bin("h2stat"),
           url(0, h2c_port, "/6"));
  if (no_color)
    setenv("NO_COLOR", no_color, 1);
  else
    unsetenv("NO_COLOR");
  char *argv[] = {"script", "-qec", cmd, "/dev/null", NULL};
  int rc = h2t_test_run(argv, 20000, out);
  setenv("NO_COLOR", "", 1);
  return rc;
}

static void test_colour_on_a_tty_unless_no_color(void **state) {
  char *out;
  if (run_tty(NULL, &out) != 0 || !strstr(out, "HTTP"))
    skip(); /* no usable script(1) / pty here */
  assert_non_null(strstr(out, "\033["));
  free(out);
  assert_int_equal(run_tty("1", &out), 0);
  assert_non_null(strstr(out, "total:"));
  assert_null(strstr(out, "\033["));
  free(out);
}

/* A server that allows one stream at a time: the other requests cannot share
 * the first connection, and h2stat must say why each got a new one. */
static void test_new_connection_reasons(void **state) {
  int port = h2t_test_free_port();
  char pbuf[16], root[400];
  snprintf(pbuf, sizeof pbuf, "%d", port);
  snprintf(root, sizeof root, "%s/www", h2t_test_tmpdir());
  char *argv[] = {(char *)h2t_test_bin("h2serve"), "--h2c", "--port", pbuf,
                  "--root", root, "--max-streams", "1", "--quiet", NULL};
  pid_t pid = h2t_test_spawn(argv, NULL);
  assert_true(pid > 0);
  assert_int_equal(h2t_test_wait_port(port, 5000), 0);
  char *out, *err, u[128];
  snprintf(u, sizeof u, "http://127.0.0.1:%d/delay?ms=50", port);
  assert_int_equal(run(&out, &err, "-p", "3", u, NULL), 0);
  assert_int_equal(count(out, "HTTP/2 200"), 3);
  assert_int_equal(count(out, "conn #"), 3);
  /* one request found no connection; the others say something else */
  assert_int_equal(count(out, " new: no_conn"), 1);
  const char *p = out;
  while ((p = strstr(p, "conn #"))) {
    const char *eol = strchr(p, '\n');
    if (!strstr(p, " new: ") || strstr(p, " new: ") > eol)
      fail_msg("a request of three on a 1-stream server did not get a new "
               "connection:\n%s", out);
    p = eol;
  }
  free(out);
  free(err);
  h2t_test_stop(pid);
}

static void test_usage_errors(void **state) {
  char *out, *err;
  static const char *const bad[][3] = {{"--bogus", "http://127.0.0.1:1/", NULL},
                                       {"-n", "zero", "http://127.0.0.1:1/"},
                                       {"-H", "nocolon", "http://127.0.0.1:1/"},
                                       {"ftp://127.0.0.1/", NULL, NULL},
                                       {"-n", NULL, NULL},
                                       {NULL, NULL, NULL}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    int rc = run(&out, &err, bad[i][0], bad[i][1], bad[i][2], NULL);
    if (rc != 2 || lines(err) != 1 || strncmp(err, "h2stat: ", 8) || *out)
      fail_msg("case %zu: rc %d, stderr '%s', stdout '%s'", i, rc, err, out);
    free(out);
    free(err);
  }
  /* passes the prefix check, but the library cannot parse it */
  assert_int_equal(run(&out, &err, "http://", NULL), 2);
  assert_int_equal(lines(err), 1);
  assert_non_null(strstr(err, "H2T_ERR_BAD_URL"));
  free(out);
  free(err);
  assert_int_equal(run(&out, &err, "--help", NULL), 0);
  assert_non_null(strstr(out, "usage: h2stat"));
  free(out);
  free(err);
  assert_int_equal(run(&out, &err, "--version", NULL), 0);
  assert_true(!strncmp(out, "h2stat ", 7));
  free(out);
  free(err);
}

static void test_refused_port(void **state) {
  char *out, *err;
  char p[16];
  snprintf(p, sizeof p, "%d", h2t_test_free_port());
  char u[64];
  snprintf(u, sizeof u, "http://127.0.0.1:%s/", p);
  assert_int_equal(run(&out, &err, "-n", "3", u, NULL), 1);
  assert_int_equal(lines(err), 1); /* later rounds are skipped */
  assert_non_null(strstr(err, "(H2T_ERR_CONNECT_REFUSED)"));
  assert_true(!strncmp(err, "h2stat: http://127.0.0.1:", 25));
  free(out);
  free(err);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_h2c_waterfall_and_new_conn),
      cmocka_unit_test(test_sequential_requests_reuse_the_connection),
      cmocka_unit_test(test_tls_with_cacert),
      cmocka_unit_test(test_tls_unknown_ca_fails_with_one_line),
      cmocka_unit_test(test_tls_insecure),
      cmocka_unit_test(test_json_h2c_two_requests),
      cmocka_unit_test(test_json_tls_order_and_redaction),
      cmocka_unit_test(test_json_concurrent_requests),
      cmocka_unit_test(test_output_file_and_body),
      cmocka_unit_test(test_concurrent_bodies_to_one_file),
      cmocka_unit_test(test_colour_on_a_tty_unless_no_color),
      cmocka_unit_test(test_new_connection_reasons),
      cmocka_unit_test(test_usage_errors),
      cmocka_unit_test(test_refused_port),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
