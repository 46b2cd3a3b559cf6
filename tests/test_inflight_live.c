/* The in-flight table and diag endpoint against the real client and server
 * in one process (each on its own loop thread): a slow request shows up on
 * both sides with the right state, connection and stream; cancel through the
 * endpoint ends it with H2T_ERR_CANCELED on the client. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "handlers.h"
#include <ev.h>
#include <jansson.h>

#include <h2trace/client.h>
#include <h2trace/diag.h>
#include <h2trace/inflight.h>
#include <h2trace/server.h>

#define TOKEN "live-token"

static h2t_diag *diag;
static uint16_t diag_port;
static h2t_server *srv;
static int srv_port;
static pthread_t srv_thread;

static void *run_server(void *arg) {
  h2t_server_run(srv);
  return NULL;
}

/* --- client on its own loop thread ----------------------------------------- */

static atomic_int client_error = 1; /* 1: not done yet */

static void on_done(h2t_request *req, int error, void *user) {
  atomic_store(&client_error, error);
}

static void *run_client(void *arg) {
  const char *url = arg;
  h2t_client *c;
  if (h2t_client_new(&c, NULL) != 0)
    return NULL;
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = url, .on_done = on_done};
  if (h2t_request_submit(c, &o, NULL) == 0)
    h2t_client_run(c);
  h2t_client_del(c);
  return NULL;
}

/* --- HTTP to the endpoint -------------------------------------------------- */

static char *http(const char *method, const char *path, const char *extra,
                  int *status) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(diag_port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  char req[1024];
  int n = snprintf(req, sizeof req,
                   "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                   "Content-Length: 0\r\n%s\r\n",
                   method, path, extra ? extra : "");
  assert_int_equal(send(fd, req, (size_t)n, MSG_NOSIGNAL), n);
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  for (;;) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int pr = poll(&p, 1, 5000);
    if (pr < 0 && errno == EINTR)
      continue;
    if (pr <= 0)
      break;
    if (len + 1 >= cap)
      buf = realloc(buf, cap *= 2);
    ssize_t r = recv(fd, buf + len, cap - len - 1, 0);
    if (r <= 0)
      break;
    len += (size_t)r;
  }
  close(fd);
  buf[len] = '\0';
  *status = len > 12 ? atoi(buf + 9) : 0;
  char *body = strstr(buf, "\r\n\r\n");
  char *out = strdup(body ? body + 4 : "");
  free(buf);
  return out;
}

static json_t *get_json(const char *path) {
  int st;
  char *b = http("GET", path, NULL, &st);
  assert_int_equal(st, 200);
  json_t *j = json_loads(b, 0, NULL);
  free(b);
  assert_non_null(j);
  return j;
}

static json_t *find_kind(json_t *reqs, const char *kind) {
  for (size_t i = 0; i < json_array_size(reqs); i++) {
    json_t *r = json_array_get(reqs, i);
    if (!strcmp(json_string_value(json_object_get(r, "kind")), kind))
      return r;
  }
  return NULL;
}

/* Wait until both sides of the slow request are listed in these states. */
static json_t *wait_both(const char *cstate, const char *sstate) {
  for (int i = 0; i < 500; i++) {
    json_t *j = get_json("/debug/requests");
    json_t *reqs = json_object_get(j, "requests");
    json_t *c = find_kind(reqs, "client"), *s = find_kind(reqs, "server");
    if (c && s &&
        !strcmp(json_string_value(json_object_get(c, "state")), cstate) &&
        !strcmp(json_string_value(json_object_get(s, "state")), sstate))
      return j;
    json_decref(j);
    usleep(10000);
  }
  fail_msg("the slow request never showed up on both sides");
  return NULL;
}

/* --- fixtures --------------------------------------------------------------- */

static int setup(void **state) {
  h2t_diag_config dc = {H2T_DIAG_CONFIG_INIT};
  dc.token = TOKEN;
  if (h2t_diag_start(&diag, &dc) != 0)
    return -1;
  diag_port = h2t_diag_port(diag);
  if (h2t_server_new(&srv, NULL) != 0)
    return -1;
  h2t_listen_opts lo = {H2T_LISTEN_OPTS_INIT};
  int idx = h2t_server_listen(srv, &lo);
  if (idx < 0)
    return -1;
  srv_port = h2t_server_port(srv, idx);
  h2t_server_handle(srv, "/delay", h2t_test_delay_handler, (void *)"sleeping");
  return pthread_create(&srv_thread, NULL, run_server, NULL);
}

static int teardown(void **state) {
  h2t_server_shutdown_async(srv);
  pthread_join(srv_thread, NULL);
  h2t_server_del(srv);
  h2t_diag_stop(diag);
  return 0;
}

static void test_slow_request_seen_and_canceled(void **state) {
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/delay?ms=20000", srv_port);
  pthread_t ct;
  atomic_store(&client_error, 1);
  pthread_create(&ct, NULL, run_client, url);

  json_t *j = wait_both("wait_response", "handler");
  json_t *reqs = json_object_get(j, "requests");
  json_t *c = find_kind(reqs, "client"), *s = find_kind(reqs, "server");
  assert_string_equal(json_string_value(json_object_get(c, "method")), "GET");
  /* the endpoint redacts query strings by default */
  assert_string_equal(json_string_value(json_object_get(c, "path")),
                      "/delay?redacted");
  assert_string_equal(json_string_value(json_object_get(s, "path")),
                      "/delay?redacted");
  assert_string_equal(json_string_value(json_object_get(s, "status")),
                      "sleeping");
  assert_true(json_integer_value(json_object_get(c, "conn")) > 0);
  assert_true(json_integer_value(json_object_get(s, "conn")) > 0);
  /* the first stream of a fresh connection, on both ends */
  assert_int_equal(json_integer_value(json_object_get(c, "stream")), 1);
  assert_int_equal(json_integer_value(json_object_get(s, "stream")), 1);
  json_int_t cid = json_integer_value(json_object_get(c, "id"));
  json_int_t sid = json_integer_value(json_object_get(s, "id"));
  json_int_t cconn = json_integer_value(json_object_get(c, "conn"));
  json_int_t sconn = json_integer_value(json_object_get(s, "conn"));
  json_decref(j);

  /* the client's connection is registered, carrying this one stream */
  j = get_json("/debug/connections");
  json_t *conns = json_object_get(j, "connections"), *cc = NULL;
  for (size_t i = 0; i < json_array_size(conns); i++)
    if (json_integer_value(json_object_get(json_array_get(conns, i), "id")) ==
        cconn)
      cc = json_array_get(conns, i);
  assert_non_null(cc);
  assert_string_equal(json_string_value(json_object_get(cc, "kind")), "client");
  char auth[32];
  snprintf(auth, sizeof auth, "127.0.0.1:%d", srv_port);
  assert_string_equal(json_string_value(json_object_get(cc, "authority")), auth);
  assert_int_equal(json_integer_value(json_object_get(cc, "streams_active")), 1);
  assert_int_equal(json_integer_value(json_object_get(cc, "requests")), 1);
  assert_true(json_integer_value(json_object_get(cc, "bytes_out")) > 0);
  /* streams_max: 0 until the server's SETTINGS have been read, which may
   * come after the request left */
  assert_true(json_is_integer(json_object_get(cc, "streams_max")));
  /* and the server's end of it, with its peer */
  json_t *sc = NULL;
  for (size_t i = 0; i < json_array_size(conns); i++)
    if (json_integer_value(json_object_get(json_array_get(conns, i), "id")) ==
        sconn)
      sc = json_array_get(conns, i);
  assert_non_null(sc);
  assert_string_equal(json_string_value(json_object_get(sc, "kind")), "server");
  assert_non_null(strstr(json_string_value(json_object_get(sc, "peer")),
                         "127.0.0.1:"));
  assert_int_equal(json_integer_value(json_object_get(sc, "streams_active")), 1);
  assert_int_equal(json_integer_value(json_object_get(sc, "streams_max")), 100);
  assert_true(json_integer_value(json_object_get(sc, "bytes_in")) > 0);
  json_decref(j);

  /* the human report shows both */
  char *dump;
  assert_int_equal(h2t_inflight_dump_string(&dump), 0);
  assert_non_null(strstr(dump, "In-flight HTTP/2 requests (2):"));
  assert_non_null(strstr(dump, "[waiting for response, conn #"));
  assert_non_null(strstr(dump, "[in handler: sleeping, conn #"));
  free(dump);

  /* cancel the client side through the endpoint */
  char path[96];
  int st;
  snprintf(path, sizeof path, "/debug/requests/%lld/cancel?reason=test",
           (long long)cid);
  char *b = http("POST", path, "Authorization: Bearer " TOKEN "\r\n", &st);
  assert_int_equal(st, 200);
  free(b);
  pthread_join(ct, NULL);
  assert_int_equal(atomic_load(&client_error), H2T_ERR_CANCELED);

  /* the client's entry is in the recent ring, canceled with the reason; the
   * server saw the RST_STREAM(CANCEL) and ended its side too */
  h2t_inflight_info r;
  assert_int_equal(h2t_inflight_get((uint64_t)cid, &r), 0);
  assert_true(r.finished);
  assert_int_equal(r.error, H2T_ERR_CANCELED);
  assert_string_equal(r.cancel_reason, "test");
  for (int i = 0; i < 300; i++) {
    if (h2t_inflight_get((uint64_t)sid, &r) == 0 && r.finished)
      break;
    usleep(10000);
  }
  assert_true(r.finished);
  assert_int_equal(r.error, H2T_ERR_CANCELED);
}

static void test_cancel_server_side(void **state) {
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/delay?ms=20000", srv_port);
  pthread_t ct;
  atomic_store(&client_error, 1);
  pthread_create(&ct, NULL, run_client, url);
  json_t *j = wait_both("wait_response", "handler");
  json_t *s = find_kind(json_object_get(j, "requests"), "server");
  json_int_t sid = json_integer_value(json_object_get(s, "id"));
  json_decref(j);
  char path[96];
  int st;
  snprintf(path, sizeof path, "/debug/requests/%lld/cancel", (long long)sid);
  char *b = http("POST", path, "Authorization: Bearer " TOKEN "\r\n", &st);
  assert_int_equal(st, 200);
  free(b);
  pthread_join(ct, NULL);
  /* the server reset the stream with CANCEL: the client sees a reset */
  assert_int_equal(atomic_load(&client_error), H2T_ERR_STREAM_RESET);
}

/* Twenty 20 ms requests: the profile says where they waited, on both
 * sides, and /metrics counts them. */
static void *run_many(void *arg) {
  const char *url = arg;
  h2t_client *c;
  if (h2t_client_new(&c, NULL) != 0)
    return NULL;
  for (int i = 0; i < 20; i++) {
    h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = url, .on_done = on_done};
    h2t_request_submit(c, &o, NULL);
  }
  h2t_client_run(c);
  h2t_client_del(c);
  return NULL;
}

static json_t *profile_row(json_t *rows, const char *kind, const char *auth) {
  for (size_t i = 0; i < json_array_size(rows); i++) {
    json_t *r = json_array_get(rows, i);
    if (!strcmp(json_string_value(json_object_get(r, "kind")), kind) &&
        !strcmp(json_string_value(json_object_get(r, "authority")), auth))
      return r;
  }
  return NULL;
}

static void test_profile_of_real_requests(void **state) {
  char url[128], auth[32];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/delay?ms=20", srv_port);
  snprintf(auth, sizeof auth, "127.0.0.1:%d", srv_port);
  pthread_t ct;
  pthread_create(&ct, NULL, run_many, url);
  pthread_join(ct, NULL);
  assert_int_equal(atomic_load(&client_error), 0);
  for (int i = 0; i < 200; i++) { /* the server side ends a moment later */
    h2t_inflight_info *arr;
    size_t n;
    h2t_inflight_snapshot(&arr, &n);
    h2t_inflight_info_free(arr);
    if (!n)
      break;
    usleep(10000);
  }
  json_t *j = get_json("/debug/profile");
  json_t *rows = json_object_get(j, "by_authority");
  json_t *c = profile_row(rows, "client", auth), *s = profile_row(rows, "server", auth);
  assert_non_null(c);
  assert_non_null(s);
  assert_true(json_integer_value(json_object_get(c, "requests")) >= 20);
  json_t *w = json_object_get(json_object_get(c, "states"), "wait_response");
  assert_non_null(w);
  assert_true(json_integer_value(json_object_get(w, "mean_us")) >= 15000);
  json_t *h = json_object_get(json_object_get(s, "states"), "handler");
  assert_non_null(h);
  assert_true(json_integer_value(json_object_get(h, "mean_us")) >= 15000);
  json_decref(j);

  int st;
  char *m = http("GET", "/metrics", NULL, &st);
  assert_int_equal(st, 200);
  const char *k = strstr(m, "h2t_requests_total{kind=\"server\",outcome=\"ok\"} ");
  assert_non_null(k);
  assert_true(atoi(k + strlen("h2t_requests_total{kind=\"server\",outcome=\"ok\"} ")) >= 20);
  assert_non_null(strstr(m, "h2t_server_connections_accepted_total "));
  free(m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_slow_request_seen_and_canceled,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_cancel_server_side, setup, teardown),
      cmocka_unit_test_setup_teardown(test_profile_of_real_requests, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
