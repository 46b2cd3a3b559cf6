/* The conventions every public header shares (issue 8, doc/ABI.md):
 * one struct_size rule for every struct users fill, and one answer to a
 * NULL handle.  Written against the public API only. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <ev.h>
#include <h2trace/h2trace.h>
#include <h2trace/diag.h>

/* The first version of each struct (h2trace 0.1): up to its last field
 * then.  Spelled out here rather than taken from the library, so that a
 * library that starts refusing 0.1 callers fails this test. */
#define UPTO(T, f) (offsetof(T, f) + sizeof(((T *)0)->f))
#define V1_CLIENT_CONFIG UPTO(h2t_client_config, initial_window_size)
#define V1_REQUEST_OPTS UPTO(h2t_request_opts, timeout_ms)
#define V1_SERVER_CONFIG UPTO(h2t_server_config, write_queue_limit)
#define V1_LISTEN_OPTS UPTO(h2t_listen_opts, backlog)
#define V1_DIAG_CONFIG UPTO(h2t_diag_config, timeout_s)
#define V1_INFLIGHT_CONFIG UPTO(h2t_inflight_config, nsensitive_headers)
#define V1_CLIENT_TRACE UPTO(h2t_client_trace, done)
#define V1_SERVER_TRACE UPTO(h2t_server_trace, load_shed)
#define V1_SATURATE_CONFIG UPTO(h2t_saturate_config, user)

/* A struct from newer headers: this version's, then fields we do not know
 * (garbage that must be ignored). */
#define BIG(T)                                                                 \
  struct {                                                                     \
    T s;                                                                       \
    unsigned char tail[64];                                                    \
  }
#define BIG_INIT(b, INIT)                                                      \
  do {                                                                         \
    memset(&(b), 0, sizeof(b));                                                \
    memset((b).tail, 0xa5, sizeof(b).tail);                                   \
    (b).s = (__typeof__((b).s)){INIT};                                         \
    (b).s.struct_size = sizeof(b);                                             \
  } while (0)

static void test_struct_size_client_config(void **state) {
  h2t_client *c = NULL;
  h2t_client_config cfg = {H2T_CLIENT_CONFIG_INIT};
  cfg.struct_size = V1_CLIENT_CONFIG - 1;
  assert_int_equal(h2t_client_new(&c, &cfg), H2T_ERR_INVALID_ARG);
  assert_null(c);
  cfg.struct_size = 0;
  assert_int_equal(h2t_client_new(&c, &cfg), H2T_ERR_INVALID_ARG);
  cfg.struct_size = V1_CLIENT_CONFIG;
  assert_int_equal(h2t_client_new(&c, &cfg), 0);
  h2t_client_del(c);
  BIG(h2t_client_config) big;
  BIG_INIT(big, H2T_CLIENT_CONFIG_INIT);
  assert_int_equal(h2t_client_new(&c, &big.s), 0);
  h2t_client_del(c);
}

static void test_struct_size_saturate_config(void **state) {
  h2t_client *c = NULL;
  assert_int_equal(h2t_client_new(&c, NULL), 0);
  const char *urls[] = {"http://127.0.0.1:1"};
  h2t_saturate *s = NULL;
  h2t_saturate_config cfg = {H2T_SATURATE_CONFIG_INIT, .client = c,
                             .replicas = urls, .nreplicas = 1};
  cfg.struct_size = V1_SATURATE_CONFIG - 1;
  assert_int_equal(h2t_saturate_new(&s, &cfg), H2T_ERR_INVALID_ARG);
  assert_null(s);
  assert_int_equal(h2t_saturate_new(&s, NULL), H2T_ERR_INVALID_ARG);
  cfg.struct_size = V1_SATURATE_CONFIG;
  assert_int_equal(h2t_saturate_new(&s, &cfg), 0);
  h2t_saturate_del(s);
  BIG(h2t_saturate_config) big;
  BIG_INIT(big, H2T_SATURATE_CONFIG_INIT);
  big.s.client = c;
  big.s.replicas = urls;
  big.s.nreplicas = 1;
  assert_int_equal(h2t_saturate_new(&s, &big.s), 0);
  h2t_saturate_del(s);
  h2t_client_del(c);
}

static void test_struct_size_client_trace(void **state) {
  h2t_client *c = NULL;
  h2t_client_trace tr = {H2T_CLIENT_TRACE_INIT};
  h2t_client_config cfg = {H2T_CLIENT_CONFIG_INIT, .trace = &tr};
  tr.struct_size = V1_CLIENT_TRACE - 1;
  assert_int_equal(h2t_client_new(&c, &cfg), H2T_ERR_INVALID_ARG);
  h2t_client_trace top = {H2T_CLIENT_TRACE_INIT, .next = &tr};
  cfg.trace = &top; /* reached through next: the same rule */
  assert_int_equal(h2t_client_new(&c, &cfg), H2T_ERR_INVALID_ARG);
  tr.struct_size = V1_CLIENT_TRACE;
  assert_int_equal(h2t_client_new(&c, &cfg), 0);
  h2t_client_del(c);
  BIG(h2t_client_trace) big;
  BIG_INIT(big, H2T_CLIENT_TRACE_INIT);
  cfg.trace = &big.s;
  assert_int_equal(h2t_client_new(&c, &cfg), 0);

  /* and as a request's trace */
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = "http://x.invalid/",
                        .trace = &tr};
  tr.struct_size = V1_CLIENT_TRACE - 1;
  assert_int_equal(h2t_request_submit(c, &o, NULL), H2T_ERR_INVALID_ARG);
  h2t_response resp;
  assert_int_equal(h2t_client_fetch(c, &o, &resp), H2T_ERR_INVALID_ARG);
  tr.struct_size = V1_CLIENT_TRACE;
  assert_int_equal(h2t_client_fetch(c, &o, &resp), H2T_ERR_DNS);
  o.trace = &big.s;
  assert_int_equal(h2t_client_fetch(c, &o, &resp), H2T_ERR_DNS);
  h2t_client_del(c);
}

static void test_struct_size_request_opts(void **state) {
  h2t_client *c;
  assert_int_equal(h2t_client_new(&c, NULL), 0);
  h2t_response resp;
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = "http://x.invalid/"};
  o.struct_size = V1_REQUEST_OPTS - 1;
  assert_int_equal(h2t_request_submit(c, &o, NULL), H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_client_fetch(c, &o, &resp), H2T_ERR_INVALID_ARG);
  o.struct_size = V1_REQUEST_OPTS;
  assert_int_equal(h2t_client_fetch(c, &o, &resp), H2T_ERR_DNS);
  BIG(h2t_request_opts) big;
  BIG_INIT(big, H2T_REQUEST_OPTS_INIT);
  big.s.url = "http://x.invalid/";
  assert_int_equal(h2t_client_fetch(c, &big.s, &resp), H2T_ERR_DNS);
  assert_int_equal(h2t_request_submit(c, &big.s, NULL), 0);
  assert_int_equal(h2t_client_run(c), 0);
  h2t_client_del(c);
}

static int shutdown_calls;
static void on_shutdown_done(h2t_server *s, void *user) { shutdown_calls++; }

static void test_struct_size_server_config(void **state) {
  h2t_server *s = NULL;
  h2t_server_config cfg = {H2T_SERVER_CONFIG_INIT,
                           .on_shutdown_done = on_shutdown_done};
  cfg.struct_size = V1_SERVER_CONFIG - 1;
  assert_int_equal(h2t_server_new(&s, &cfg), H2T_ERR_INVALID_ARG);
  assert_null(s);
  /* a 0.1 caller: on_shutdown_done is beyond its struct_size, so it takes
   * its default (none), whatever the memory after the struct holds */
  cfg.struct_size = V1_SERVER_CONFIG;
  assert_int_equal(h2t_server_new(&s, &cfg), 0);
  shutdown_calls = 0;
  assert_int_equal(h2t_server_shutdown(s), 0);
  assert_int_equal(h2t_server_run(s), 0);
  assert_int_equal(shutdown_calls, 0);
  h2t_server_del(s);
  BIG(h2t_server_config) big;
  BIG_INIT(big, H2T_SERVER_CONFIG_INIT);
  big.s.on_shutdown_done = on_shutdown_done;
  assert_int_equal(h2t_server_new(&s, &big.s), 0);
  assert_int_equal(h2t_server_shutdown(s), 0);
  assert_int_equal(h2t_server_run(s), 0);
  assert_int_equal(shutdown_calls, 1);
  h2t_server_del(s);
}

static void test_struct_size_server_trace(void **state) {
  h2t_server *s;
  h2t_server_trace tr = {H2T_SERVER_TRACE_INIT};
  h2t_server_config cfg = {H2T_SERVER_CONFIG_INIT, .trace = &tr};
  tr.struct_size = V1_SERVER_TRACE - 1;
  assert_int_equal(h2t_server_new(&s, &cfg), H2T_ERR_INVALID_ARG);
  tr.struct_size = V1_SERVER_TRACE;
  assert_int_equal(h2t_server_new(&s, &cfg), 0);
  h2t_server_del(s);
  BIG(h2t_server_trace) big;
  BIG_INIT(big, H2T_SERVER_TRACE_INIT);
  cfg.trace = &big.s;
  assert_int_equal(h2t_server_new(&s, &cfg), 0);
  h2t_server_del(s);
}

static void test_struct_size_listen_opts(void **state) {
  h2t_server *s;
  assert_int_equal(h2t_server_new(&s, NULL), 0);
  h2t_listen_opts lo = {H2T_LISTEN_OPTS_INIT};
  lo.struct_size = V1_LISTEN_OPTS - 1;
  assert_int_equal(h2t_server_listen(s, &lo), H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_server_listen(s, NULL), H2T_ERR_INVALID_ARG);
  lo.struct_size = V1_LISTEN_OPTS;
  int i = h2t_server_listen(s, &lo);
  assert_true(i >= 0);
  assert_true(h2t_server_port(s, i) > 0);
  BIG(h2t_listen_opts) big;
  BIG_INIT(big, H2T_LISTEN_OPTS_INIT);
  i = h2t_server_listen(s, &big.s);
  assert_true(i >= 0);
  assert_true(h2t_server_port(s, i) > 0);
  h2t_server_del(s);
}

static void test_struct_size_inflight_config(void **state) {
  h2t_inflight_config cfg = {H2T_INFLIGHT_CONFIG_INIT};
  cfg.struct_size = V1_INFLIGHT_CONFIG - 1;
  assert_int_equal(h2t_inflight_enable(&cfg), H2T_ERR_INVALID_ARG);
  assert_false(h2t_inflight_enabled());
  cfg.struct_size = V1_INFLIGHT_CONFIG;
  assert_int_equal(h2t_inflight_enable(&cfg), 0);
  assert_int_equal(h2t_inflight_disable(), 0);
  BIG(h2t_inflight_config) big;
  BIG_INIT(big, H2T_INFLIGHT_CONFIG_INIT);
  assert_int_equal(h2t_inflight_enable(&big.s), 0);
  assert_int_equal(h2t_inflight_disable(), 0);
}

static void test_struct_size_diag_config(void **state) {
  h2t_diag *d = NULL;
  h2t_diag_config cfg = {H2T_DIAG_CONFIG_INIT};
  cfg.struct_size = V1_DIAG_CONFIG - 1;
  assert_int_equal(h2t_diag_start(&d, &cfg), H2T_ERR_INVALID_ARG);
  assert_null(d);
  cfg.struct_size = V1_DIAG_CONFIG;
  assert_int_equal(h2t_diag_start(&d, &cfg), 0);
  assert_true(h2t_diag_port(d) > 0);
  h2t_diag_stop(d);
  BIG(h2t_diag_config) big;
  BIG_INIT(big, H2T_DIAG_CONFIG_INIT);
  assert_int_equal(h2t_diag_start(&d, &big.s), 0);
  h2t_diag_stop(d);
  h2t_inflight_disable(); /* the endpoint turned the table on */
}

/* The zero-field form of the one INIT shape compiles for every struct. */
static void test_init_shape(void **state) {
  h2t_client_config a = {H2T_CLIENT_CONFIG_INIT};
  h2t_request_opts b = {H2T_REQUEST_OPTS_INIT};
  h2t_server_config c = {H2T_SERVER_CONFIG_INIT};
  h2t_listen_opts d = {H2T_LISTEN_OPTS_INIT};
  h2t_diag_config e = {H2T_DIAG_CONFIG_INIT};
  h2t_inflight_config f = {H2T_INFLIGHT_CONFIG_INIT};
  h2t_client_trace g = {H2T_CLIENT_TRACE_INIT};
  h2t_server_trace h = {H2T_SERVER_TRACE_INIT};
  assert_int_equal(a.struct_size, sizeof a);
  assert_int_equal(b.struct_size, sizeof b);
  assert_int_equal(c.struct_size, sizeof c);
  assert_int_equal(d.struct_size, sizeof d);
  assert_int_equal(e.struct_size, sizeof e);
  assert_int_equal(f.struct_size, sizeof f);
  assert_int_equal(g.struct_size, sizeof g);
  assert_int_equal(h.struct_size, sizeof h);
  h2t_client_config a2 = {H2T_CLIENT_CONFIG_INIT, .insecure = 1};
  assert_int_equal(a2.struct_size, sizeof a2);
  assert_int_equal(a2.insecure, 1);
}

static ssize_t gen(h2t_server_req *r, uint8_t *buf, size_t len, int *eof,
                   void *user) {
  return 0;
}

/* Every public function that takes a handle, given NULL: INVALID_ARG from
 * those that return an error code, the documented value from getters, and
 * nothing from void functions. */
static void test_null_handles(void **state) {
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = "http://x.invalid/"};
  h2t_response resp;
  h2t_client_stats cst;
  memset(&cst, 0x5a, sizeof cst);
  h2t_client_del(NULL);
  assert_null(h2t_client_loop(NULL));
  assert_int_equal(h2t_client_run(NULL), H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_client_pending(NULL), 0);
  h2t_client_stats_get(NULL, &cst);
  assert_int_equal(cst.conns_open, 0x5a5a5a5a); /* untouched */
  assert_int_equal(h2t_request_submit(NULL, &o, NULL), H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_client_fetch(NULL, &o, &resp), H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_request_cancel(NULL), H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_request_resume(NULL), H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_request_id(NULL), 0);
  assert_null(h2t_request_user(NULL));
  assert_int_equal(h2t_request_status(NULL), 0);
  assert_null(h2t_request_client(NULL));
  h2t_response_free(NULL);

  h2t_listen_opts lo = {H2T_LISTEN_OPTS_INIT};
  h2t_server_stats sst;
  memset(&sst, 0x5a, sizeof sst);
  h2t_server_del(NULL);
  assert_null(h2t_server_loop(NULL));
  assert_int_equal(h2t_server_listen(NULL, &lo), H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_server_port(NULL, 0), 0);
  assert_int_equal(h2t_server_handle(NULL, "/", NULL, NULL),
                   H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_server_run(NULL), H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_server_shutdown(NULL), H2T_ERR_INVALID_ARG);
  h2t_server_shutdown_async(NULL);
  h2t_server_stats_get(NULL, &sst);
  assert_int_equal(sst.conns_open, 0x5a5a5a5a);
  assert_int_equal(h2t_server_writer_depth(NULL), 0);

  size_t n = 7;
  h2t_header hd = {"x-a", "1"};
  assert_string_equal(h2t_server_req_method(NULL), "");
  assert_string_equal(h2t_server_req_path(NULL), "");
  assert_string_equal(h2t_server_req_scheme(NULL), "");
  assert_string_equal(h2t_server_req_authority(NULL), "");
  assert_null(h2t_server_req_headers(NULL, &n));
  assert_int_equal(n, 0);
  assert_null(h2t_server_req_header(NULL, "x-a"));
  assert_int_equal(h2t_server_req_id(NULL), 0);
  assert_int_equal(h2t_server_req_stream_id(NULL), 0);
  assert_int_equal(h2t_server_req_conn_id(NULL), 0);
  assert_null(h2t_server_req_server(NULL));
  assert_int_equal(h2t_server_req_canceled(NULL), 1);
  assert_int_equal(h2t_server_req_set_status(NULL, "x"), H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_server_req_on(NULL, NULL, NULL, NULL),
                   H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_server_req_respond(NULL, 200, NULL, 0, NULL, 0, 0),
                   H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_server_req_respond_file(NULL, 200, NULL, 0, -1, 0, -1),
                   H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_server_req_respond_gen(NULL, 200, NULL, 0, gen, NULL),
                   H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_server_req_resume(NULL), H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_server_req_set_trailers(NULL, &hd, 1),
                   H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_server_req_reset(NULL, 8), H2T_ERR_INVALID_ARG);

  assert_int_equal(h2t_diag_port(NULL), 0);
  h2t_diag_stop(NULL);
  h2t_inflight_info_free(NULL);
  h2t_inflight_conn_free(NULL);
  h2t_inflight_profile_free(NULL);
  assert_int_equal(h2t_client_trace_set_all(NULL, NULL, NULL),
                   H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_server_trace_set_all(NULL, NULL, NULL),
                   H2T_ERR_INVALID_ARG);
}

/* A response outlives its client: freeing it needs only the response. */
static int frees;
static void *m_malloc(size_t n, void *u) { return malloc(n); }
static void m_free(void *p, void *u) {
  if (p)
    frees++;
  free(p);
}
static void *m_calloc(size_t a, size_t b, void *u) { return calloc(a, b); }
static void *m_realloc(void *p, size_t n, void *u) { return realloc(p, n); }

static void test_response_free_without_client(void **state) {
  h2t_response resp;
  memset(&resp, 0, sizeof resp);
  h2t_response_free(&resp); /* zeroed: nothing to do */
  static const h2t_mem mem = {NULL, m_malloc, m_free, m_calloc, m_realloc};
  h2t_client *c;
  h2t_client_config cfg = {H2T_CLIENT_CONFIG_INIT, .mem = &mem};
  assert_int_equal(h2t_client_new(&c, &cfg), 0);
  /* a fetch that fails leaves a zeroed response, still safe to free */
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = "http://x.invalid/"};
  assert_int_equal(h2t_client_fetch(c, &o, &resp), H2T_ERR_DNS);
  h2t_client_del(c);
  h2t_response_free(&resp);
  /* a filled one, as h2t_client_fetch leaves it, freed after the client */
  resp.mem = mem;
  resp.headers = m_calloc(1, sizeof *resp.headers, NULL);
  resp.headers[0].name = strdup("a");
  resp.headers[0].value = strdup("b");
  resp.nheaders = 1;
  resp.body = m_calloc(1, 1, NULL);
  frees = 0;
  h2t_response_free(&resp);
  assert_int_equal(frees, 4); /* through the recorded allocator */
  assert_null(resp.headers);
  assert_null(resp.body);
  h2t_response_free(&resp); /* twice is harmless */
  assert_int_equal(frees, 4);
}

static void test_enum_names(void **state) {
  assert_string_equal(h2t_shed_reason_name(H2T_SHED_INFLIGHT), "inflight");
  assert_string_equal(h2t_shed_reason_name(H2T_SHED_CONNECTIONS),
                      "connections");
  assert_null(h2t_shed_reason_name((h2t_shed_reason)0));
  assert_null(h2t_shed_reason_name((h2t_shed_reason)99));
  assert_string_equal(h2t_shed_action_name(H2T_SHED_REFUSED_STREAM),
                      "refused_stream");
  assert_string_equal(h2t_shed_action_name(H2T_SHED_503), "503");
  assert_string_equal(h2t_shed_action_name(H2T_SHED_CLOSE), "close");
  assert_null(h2t_shed_action_name((h2t_shed_action)0));
  assert_null(h2t_shed_action_name((h2t_shed_action)99));
  /* every enum an event carries has a name function, NULL past its end */
  assert_null(h2t_event_name(H2T_EV_COUNT_));
  assert_null(h2t_conn_reason_name(H2T_CONN_REASON_COUNT_));
  assert_null(h2t_retry_reason_name((h2t_retry_reason)0));
  assert_string_equal(h2t_retry_reason_name(H2T_RETRY_CONN_CLOSED),
                      "conn_closed");
  /* the JSON writer uses the same names */
  h2t_event ev = {.type = H2T_EV_SRV_LOAD_SHED};
  ev.u.load_shed.reason = H2T_SHED_CONNECTIONS;
  ev.u.load_shed.action = H2T_SHED_CLOSE;
  char buf[512];
  assert_true(h2t_event_json(&ev, buf, sizeof buf) > 0);
  assert_non_null(strstr(buf, "\"reason\":\"connections\""));
  assert_non_null(strstr(buf, "\"action\":\"close\""));
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_struct_size_client_config),
      cmocka_unit_test(test_struct_size_client_trace),
      cmocka_unit_test(test_struct_size_saturate_config),
      cmocka_unit_test(test_struct_size_request_opts),
      cmocka_unit_test(test_struct_size_server_config),
      cmocka_unit_test(test_struct_size_server_trace),
      cmocka_unit_test(test_struct_size_listen_opts),
      cmocka_unit_test(test_struct_size_inflight_config),
      cmocka_unit_test(test_struct_size_diag_config),
      cmocka_unit_test(test_init_shape),
      cmocka_unit_test(test_null_handles),
      cmocka_unit_test(test_response_free_without_client),
      cmocka_unit_test(test_enum_names),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
