/* The diagnostics endpoint and the in-flight table started in either order:
 * the application's h2t_inflight_config holds both ways (issue 8, item 2).
 * A request sends "x-api-key", which the application lists as sensitive;
 * its value must never show: not in the event JSON an exporter writes, not
 * in /debug/requests, not in the dump.  Each order runs in its own child
 * process, since the sensitive list is process-wide and only grows. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include <h2trace/client.h>
#include <h2trace/diag.h>
#include <h2trace/inflight.h>
#include <h2trace/server.h>
#include "peer.h"
#include "trace/inflight_int.h"

#define SECRET "tops3cret-value-4711"

static const char *const sensitive[] = {"x-api-key"};

/* What the child saw; checked before it exits. */
static char events[16384];
static size_t events_len;
static char *debug_requests, *dump;
static uint16_t diag_port;

static void on_header_field(const h2t_event *ev, void *user) {
  char line[1024];
  int n = h2t_event_json(ev, line, sizeof line);
  if (n > 0 && (size_t)n < sizeof line &&
      events_len + (size_t)n + 2 < sizeof events) {
    memcpy(events + events_len, line, (size_t)n);
    events_len += (size_t)n;
    events[events_len++] = '\n';
    events[events_len] = '\0';
  }
}

/* The request is in flight here: read the endpoint and the dump now. */
static void on_got_headers(const h2t_event *ev, void *user) {
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%u/debug/requests",
           (unsigned)diag_port);
  char *const argv[] = {"curl", "-s", "-m", "10", url, NULL};
  if (h2t_test_run(argv, 15000, &debug_requests) != 0) {
    free(debug_requests);
    debug_requests = NULL;
  }
  if (h2t_inflight_dump_string(&dump) != 0)
    dump = NULL;
}

static void h_hello(h2t_server_req *r, void *user) {
  h2t_server_req_respond(r, 200, NULL, 0, "hello\n", 6, 0);
}

static void *srv_thread(void *arg) {
  h2t_server_run(arg);
  return NULL;
}

#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #cond);               \
      return 1;                                                                \
    }                                                                          \
  } while (0)

/* One order; returns 0 when everything held. */
static int run_order(int diag_first) {
  h2t_inflight_config cfg = {H2T_INFLIGHT_CONFIG_INIT};
  cfg.recent = 32; /* not the default (256): shows the whole config holds */
  cfg.sensitive_headers = sensitive;
  cfg.nsensitive_headers = 1;
  h2t_diag *d = NULL;
  if (diag_first) {
    CHECK(h2t_diag_start(&d, NULL) == 0);
    CHECK(h2t_inflight_enabled()); /* on, with defaults */
    CHECK(h2t_inflight_enable(&cfg) == 0);
  } else {
    CHECK(h2t_inflight_enable(&cfg) == 0);
    CHECK(h2t_diag_start(&d, NULL) == 0);
  }
  CHECK(h2t_header_is_sensitive("X-Api-Key"));
  CHECK(h2t__ifl.ring_cap == 32);
  diag_port = h2t_diag_port(d);

  h2t_server *s;
  CHECK(h2t_server_new(&s, NULL) == 0);
  CHECK(h2t_server_handle(s, "/", h_hello, NULL) == 0);
  h2t_listen_opts lo = {H2T_LISTEN_OPTS_INIT};
  int li = h2t_server_listen(s, &lo);
  CHECK(li >= 0);
  int port = h2t_server_port(s, li);
  pthread_t th;
  CHECK(pthread_create(&th, NULL, srv_thread, s) == 0);

  h2t_client *c;
  CHECK(h2t_client_new(&c, NULL) == 0);
  h2t_client_trace tr = {H2T_CLIENT_TRACE_INIT,
                         .wrote_header_field = on_header_field,
                         .got_headers = on_got_headers};
  h2t_header hdrs[] = {{"X-Api-Key", SECRET}};
  char url[64];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/hello", port);
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = url, .headers = hdrs,
                        .nheaders = 1, .trace = &tr};
  CHECK(h2t_request_submit(c, &o, NULL) == 0);
  h2t_client_run(c);
  h2t_client_del(c);
  h2t_server_shutdown_async(s);
  pthread_join(th, NULL);
  h2t_server_del(s);
  h2t_diag_stop(d);

  /* the exporter's view: the header is there, its value is not */
  CHECK(strstr(events, "\"x-api-key\""));
  CHECK(strstr(events, "[redacted]"));
  CHECK(!strstr(events, SECRET));
  /* the endpoint listed the request, without the value */
  CHECK(debug_requests);
  CHECK(strstr(debug_requests, "\"path\":\"/hello\""));
  CHECK(!strstr(debug_requests, SECRET));
  CHECK(dump);
  CHECK(strstr(dump, "GET /hello"));
  CHECK(!strstr(dump, SECRET));
  free(debug_requests);
  free(dump);
  return 0;
}

static void in_child(int diag_first) {
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    int rc = run_order(diag_first);
    fflush(stderr);
    _exit(rc);
  }
  int st;
  assert_int_equal(waitpid(pid, &st, 0), pid);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 0);
}

static void test_diag_then_enable(void **state) { in_child(1); }
static void test_enable_then_diag(void **state) { in_child(0); }

/* The rules of h2t_inflight_enable() on a table that is already on. */
static void test_enable_when_on(void **state) {
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid) {
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
    return;
  }
  int rc = 1;
  do {
#define CK(cond)                                                               \
  if (!(cond)) {                                                               \
    fprintf(stderr, "%s:%d: %s\n", __FILE__, __LINE__, #cond);                 \
    break;                                                                     \
  }
    CK(h2t_inflight_hold() == 0); /* on with defaults, as the endpoint does */
    CK(h2t__ifl.ring_cap == 256);
    /* NULL or zero sizes ask for nothing new */
    CK(h2t_inflight_enable(NULL) == 0);
    h2t_inflight_config cfg = {H2T_INFLIGHT_CONFIG_INIT};
    CK(h2t_inflight_enable(&cfg) == 0);
    CK(h2t__ifl.ring_cap == 256);
    /* a bad name changes nothing, not even the good names before it */
    const char *bad[] = {"x-good-one", ""};
    cfg.sensitive_headers = bad;
    cfg.nsensitive_headers = 2;
    CK(h2t_inflight_enable(&cfg) == H2T_ERR_INVALID_ARG);
    CK(!h2t_header_is_sensitive("x-good-one"));
    /* new sizes take effect while nothing is in flight */
    cfg.sensitive_headers = sensitive;
    cfg.nsensitive_headers = 1;
    cfg.recent = 4;
    CK(h2t_inflight_enable(&cfg) == 0);
    CK(h2t__ifl.ring_cap == 4);
    CK(h2t_header_is_sensitive("x-api-key"));
    /* with a request in flight they cannot, but the names still hold */
    struct inflight_entry *e = h2t__inflight_begin(
        INFLIGHT_CLIENT, 7, "GET", "http", "a:1", "/", NULL, NULL);
    CK(e);
    const char *more[] = {"x-token"};
    cfg.sensitive_headers = more;
    cfg.recent = 8;
    CK(h2t_inflight_enable(&cfg) == H2T_ERR_STATE);
    CK(h2t__ifl.ring_cap == 4);
    CK(h2t_header_is_sensitive("x-token"));
    h2t_inflight_info info;
    CK(h2t_inflight_get(7, &info) == 0); /* the entry survived */
    h2t__inflight_end(e, 0);
    /* the holder still keeps it on */
    CK(h2t_inflight_disable() == H2T_ERR_STATE);
    CK(h2t_inflight_release() == 0);
    CK(h2t_inflight_disable() == 0);
    rc = 0;
#undef CK
  } while (0);
  _exit(rc);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_diag_then_enable),
      cmocka_unit_test(test_enable_then_diag),
      cmocka_unit_test(test_enable_when_on),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
