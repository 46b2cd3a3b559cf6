/* Client against real nghttpd: hook order, fetch, reuse, multiplexing,
 * TLS verification. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <cmocka.h>

#include <ev.h>
#include <h2trace/client.h>
#include "h2/client/client_int.h"
#include "peer.h"

static int h2c_port, tls_port;
static char rec[4096];
static h2t_event last_got_conn, last_tls_done, last_dns_done, last_settings;

static void rec_any(const h2t_event *ev, void *user) {
  if (ev->type == H2T_EV_WROTE_HEADER_FIELD) {
    /* collapse the field run: order test checks one marker */
    size_t n = strlen(rec);
    if (n >= 6 && !strcmp(rec + n - 6, "field "))
      return;
    strcat(rec, "field ");
    return;
  }
  if (strlen(rec) + 40 < sizeof rec) {
    strcat(rec, h2t_event_name(ev->type));
    strcat(rec, " ");
  }
  if (ev->type == H2T_EV_GOT_CONN)
    last_got_conn = *ev;
  if (ev->type == H2T_EV_TLS_HANDSHAKE_DONE) {
    last_tls_done = *ev;
    static char alpn[16];
    snprintf(alpn, sizeof alpn, "%s",
             ev->u.tls.alpn ? ev->u.tls.alpn : "(none)");
    last_tls_done.u.tls.alpn = alpn;
  }
  if (ev->type == H2T_EV_DNS_DONE)
    last_dns_done = *ev;
  if (ev->type == H2T_EV_SETTINGS)
    last_settings = *ev;
}

static h2t_client_trace rec_trace = {H2T_CLIENT_TRACE_INIT, .any = rec_any};

static h2t_client *new_client(const char *ca_file, int insecure) {
  h2t_client_config cfg = {H2T_CLIENT_CONFIG_INIT};
  cfg.ca_file = ca_file;
  cfg.insecure = insecure;
  cfg.connect_timeout_ms = 5000;
  h2t_client *c = NULL;
  assert_int_equal(h2t_client_new(&c, &cfg), 0);
  return c;
}

static int fetch(h2t_client *c, const char *url, h2t_response *resp) {
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = url,
                        .trace = &rec_trace};
  return h2t_client_fetch(c, &o, resp);
}

static void test_h2c_first_request_hook_order(void **state) {
  h2t_client *c = new_client(NULL, 0);
  char url[128];
  snprintf(url, sizeof url, "http://localhost:%d/6", h2c_port);
  h2t_response resp;
  rec[0] = '\0';
  assert_int_equal(fetch(c, url, &resp), 0);
  assert_int_equal(resp.status, 200);
  assert_int_equal(resp.body_len, 6);
  assert_string_equal((char *)resp.body, "abcdef");
  assert_true(resp.nheaders > 0);
  h2t_response_free(&resp);
  assert_string_equal(
      rec, "get_conn dns_start dns_done connect_start connect_done got_conn "
           "stream_opened field wrote_headers wrote_request settings "
           "got_first_response_byte got_headers got_data put_idle_conn "
           "done ");
  assert_int_equal(last_dns_done.u.dns_done.literal, 0);
  assert_true(last_dns_done.u.dns_done.naddrs >= 1);
  assert_int_equal(last_got_conn.u.got_conn.reused, 0);
  assert_int_equal(last_got_conn.u.got_conn.new_reason, H2T_CONN_NO_CONN);
  assert_int_equal(last_settings.u.settings.max_concurrent_streams, 100);

  /* the next request reuses the idle conn */
  uint64_t conn = last_got_conn.conn_id;
  rec[0] = '\0';
  assert_int_equal(fetch(c, url, &resp), 0);
  h2t_response_free(&resp);
  assert_int_equal(last_got_conn.conn_id, conn);
  assert_int_equal(last_got_conn.u.got_conn.reused, 1);
  assert_int_equal(last_got_conn.u.got_conn.was_idle, 1);
  assert_true(last_got_conn.u.got_conn.idle_us > 0);
  assert_null(strstr(rec, "dns_start"));
  h2t_client_stats st;
  h2t_client_stats_get(c, &st);
  assert_int_equal(st.conns_opened, 1);
  assert_int_equal(st.requests_succeeded, 2);
  h2t_client_del(c);
}

static void test_ip_literal_fires_dns_hooks(void **state) {
  h2t_client *c = new_client(NULL, 0);
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/", h2c_port);
  h2t_response resp;
  rec[0] = '\0';
  assert_int_equal(fetch(c, url, &resp), 0);
  assert_string_equal((char *)resp.body, "hello\n");
  h2t_response_free(&resp);
  assert_non_null(strstr(rec, "get_conn dns_start dns_done connect_start"));
  assert_int_equal(last_dns_done.u.dns_done.literal, 1);
  h2t_client_del(c);
}

static void test_tls_hook_order_and_verify(void **state) {
  const char *cert, *key;
  assert_int_equal(h2t_test_make_cert(&cert, &key), 0);
  h2t_client *c = new_client(cert, 0);
  char url[128];
  snprintf(url, sizeof url, "https://localhost:%d/6", tls_port);
  h2t_response resp;
  rec[0] = '\0';
  assert_int_equal(fetch(c, url, &resp), 0);
  assert_int_equal(resp.status, 200);
  assert_string_equal((char *)resp.body, "abcdef");
  h2t_response_free(&resp);
  assert_string_equal(
      rec, "get_conn dns_start dns_done connect_start connect_done "
           "tls_handshake_start tls_handshake_done got_conn stream_opened "
           "field wrote_headers wrote_request settings "
           "got_first_response_byte got_headers got_data put_idle_conn "
           "done ");
  assert_int_equal(last_tls_done.u.tls.error, 0);
  assert_string_equal(last_tls_done.u.tls.alpn, "h2");
  assert_int_equal(last_tls_done.u.tls.verify_result, 0);
  h2t_client_del(c);
}

static void test_tls_ip_literal_verified(void **state) {
  const char *cert, *key;
  assert_int_equal(h2t_test_make_cert(&cert, &key), 0);
  h2t_client *c = new_client(cert, 0);
  char url[128];
  snprintf(url, sizeof url, "https://127.0.0.1:%d/6", tls_port);
  h2t_response resp;
  assert_int_equal(fetch(c, url, &resp), 0);
  h2t_response_free(&resp);
  h2t_client_del(c);
}

static void test_tls_untrusted_fails_verify(void **state) {
  h2t_client *c = new_client(NULL, 0); /* system CAs: ours is not there */
  char url[128];
  snprintf(url, sizeof url, "https://localhost:%d/6", tls_port);
  h2t_response resp;
  rec[0] = '\0';
  assert_int_equal(fetch(c, url, &resp), H2T_ERR_TLS_VERIFY);
  assert_int_equal(last_tls_done.u.tls.error, H2T_ERR_TLS_VERIFY);
  assert_int_not_equal(last_tls_done.u.tls.verify_result, 0);
  assert_non_null(last_tls_done.u.tls.verify_error);
  assert_non_null(strstr(rec, "tls_handshake_done done"));
  h2t_client_del(c);

  c = new_client(NULL, 1); /* insecure: accepted */
  assert_int_equal(fetch(c, url, &resp), 0);
  h2t_response_free(&resp);
  h2t_client_del(c);
}

static void test_tls_wrong_host_fails(void **state) {
  /* a trusted certificate for another name, served on 127.0.0.1 */
  const char *d = h2t_test_tmpdir();
  char crt[300], key[300];
  snprintf(crt, sizeof crt, "%s/other.pem", d);
  snprintf(key, sizeof key, "%s/other.key", d);
  char *argv[] = {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                  "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", key,
                  "-out", crt, "-days", "2", "-subj", "/CN=other.example",
                  "-addext", "subjectAltName=DNS:other.example", NULL};
  assert_int_equal(h2t_test_run(argv, 20000, NULL), 0);
  int port = h2t_test_free_port();
  char pbuf[16];
  snprintf(pbuf, sizeof pbuf, "%d", port);
  char *srv[] = {"nghttpd", "--address=127.0.0.1", pbuf, key, crt, NULL};
  pid_t pid = h2t_test_spawn(srv, NULL);
  assert_true(pid > 0);
  assert_int_equal(h2t_test_wait_port(port, 5000), 0);
  h2t_client *c = new_client(crt, 0);
  char url[128];
  snprintf(url, sizeof url, "https://localhost:%d/", port);
  h2t_response resp;
  assert_int_equal(fetch(c, url, &resp), H2T_ERR_TLS_VERIFY);
  assert_int_equal(last_tls_done.u.tls.verify_result,
                   62 /* X509_V_ERR_HOSTNAME_MISMATCH */);
  h2t_client_del(c);
  h2t_test_stop(pid);
}

static void test_bad_ca_file_fails_at_new(void **state) {
  h2t_client_config cfg = {H2T_CLIENT_CONFIG_INIT};
  cfg.ca_file = "/nonexistent/ca.pem";
  h2t_client *c = NULL;
  assert_int_equal(h2t_client_new(&c, &cfg), H2T_ERR_TLS);
  assert_null(c);
}

typedef struct par {
  int done, err, status;
  uint64_t conn_id;
  int reused;
} par;

static void par_got_conn(const h2t_event *ev, void *user) {
  par *p = user;
  p->conn_id = ev->conn_id;
  p->reused = ev->u.got_conn.reused;
}

static void par_done(h2t_request *r, int err, void *user) {
  par *p = user;
  p->done = 1;
  p->err = err;
  p->status = h2t_request_status(r);
}

static void test_parallel_requests_multiplex(void **state) {
  h2t_client *c = new_client(NULL, 0);
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/6", h2c_port);
  enum { N = 8 };
  par p[N];
  h2t_client_trace tr[N];
  memset(p, 0, sizeof p);
  for (int i = 0; i < N; i++) {
    tr[i] = (h2t_client_trace){H2T_CLIENT_TRACE_INIT,
                               .got_conn = par_got_conn, .user = &p[i]};
    h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = url,
                          .on_done = par_done, .user = &p[i],
                          .trace = &tr[i]};
    assert_int_equal(h2t_request_submit(c, &o, NULL), 0);
  }
  assert_int_equal(h2t_client_pending(c), N);
  assert_int_equal(h2t_client_run(c), 0);
  for (int i = 0; i < N; i++) {
    assert_true(p[i].done);
    assert_int_equal(p[i].err, 0);
    assert_int_equal(p[i].status, 200);
    assert_int_equal(p[i].conn_id, p[0].conn_id);
  }
  h2t_client_stats st;
  h2t_client_stats_get(c, &st);
  assert_int_equal(st.conns_opened, 1);
  h2t_client_del(c);
}

static void test_bad_url_at_submit(void **state) {
  h2t_client *c = new_client(NULL, 0);
  const char *bad[] = {"ftp://x/", "http://", "http:///x", "http://a b/",
                       "http://u@host/", "http://host:99999/", "nope",
                       "http://[::1/"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = bad[i],
                          .on_done = par_done};
    assert_int_equal(h2t_request_submit(c, &o, NULL), H2T_ERR_BAD_URL);
  }
  assert_int_equal(h2t_client_pending(c), 0);
  h2t_client_del(c);
}

static void test_post_body_and_headers(void **state) {
  h2t_client *c = new_client(NULL, 0);
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/6", h2c_port);
  h2t_header hdrs[] = {{"X-Test", "1"}, {"Connection", "close"}};
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = url, .body = "hello",
                        .body_len = 5, .headers = hdrs, .nheaders = 2,
                        .trace = &rec_trace};
  h2t_response resp;
  rec[0] = '\0';
  assert_int_equal(h2t_client_fetch(c, &o, &resp), 0);
  assert_int_equal(resp.status, 200);
  h2t_response_free(&resp);
  /* HEADERS without END_STREAM, then the DATA ends the request */
  assert_non_null(strstr(rec, "wrote_headers wrote_request"));
  h2t_client_del(c);
}

/* Bodies far beyond every flow-control window, both ways, h2c and TLS. */
static void test_large_bodies_both_ways(void **state) {
  const char *cert, *key;
  assert_int_equal(h2t_test_make_cert(&cert, &key), 0);
  h2t_client *c = new_client(cert, 0);
  enum { BIG = 3 * 1024 * 1024 + 17 };
  uint8_t *up = malloc(BIG);
  for (size_t i = 0; i < BIG; i++)
    up[i] = (uint8_t)(i * 7);
  int ports[2] = {h2c_port, tls_port};
  const char *schemes[2] = {"http", "https"};
  for (int k = 0; k < 2; k++) {
    char url[128];
    snprintf(url, sizeof url, "%s://localhost:%d/big", schemes[k], ports[k]);
    h2t_response resp;
    h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = url};
    assert_int_equal(h2t_client_fetch(c, &o, &resp), 0);
    assert_int_equal(resp.status, 200);
    assert_int_equal(resp.body_len, BIG);
    assert_memory_equal(resp.body, up, BIG);
    h2t_response_free(&resp);
    /* and an upload nghttpd reads fully before answering */
    o.method = "POST";
    o.body = up;
    o.body_len = BIG;
    assert_int_equal(h2t_client_fetch(c, &o, &resp), 0);
    assert_int_equal(resp.status, 200);
    h2t_response_free(&resp);
  }
  free(up);
  h2t_client_del(c);
}

static char order[64];
static void mark_req(const h2t_event *ev, void *u) { strcat(order, "R"); }
static void mark_cli(const h2t_event *ev, void *u) { strcat(order, "C"); }

/* The request's trace runs first, then the client's default. */
static void test_default_trace_runs_after_request_trace(void **state) {
  h2t_client_trace dflt = {H2T_CLIENT_TRACE_INIT, .got_conn = mark_cli,
                           .done = mark_cli};
  h2t_client_trace mine = {H2T_CLIENT_TRACE_INIT, .got_conn = mark_req};
  h2t_client_config cfg = {H2T_CLIENT_CONFIG_INIT};
  cfg.trace = &dflt;
  h2t_client *c;
  assert_int_equal(h2t_client_new(&c, &cfg), 0);
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/6", h2c_port);
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = url, .trace = &mine};
  h2t_response resp;
  order[0] = '\0';
  assert_int_equal(h2t_client_fetch(c, &o, &resp), 0);
  h2t_response_free(&resp);
  assert_string_equal(order, "RCC");
  o.trace = NULL; /* only the default */
  order[0] = '\0';
  assert_int_equal(h2t_client_fetch(c, &o, &resp), 0);
  h2t_response_free(&resp);
  assert_string_equal(order, "CC");
  h2t_client_del(c);
}

static void test_api_misuse(void **state) {
  h2t_client *c;
  assert_int_equal(h2t_client_new(NULL, NULL), H2T_ERR_INVALID_ARG);
  h2t_client_config bad = {.struct_size = 1};
  assert_int_equal(h2t_client_new(&c, &bad), H2T_ERR_INVALID_ARG);
  h2t_client_config v = {H2T_CLIENT_CONFIG_INIT};
  v.ip_version = 5;
  assert_int_equal(h2t_client_new(&c, &v), H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_client_new(&c, NULL), 0);
  assert_non_null(h2t_client_loop(c));
  assert_int_equal(h2t_request_submit(c, NULL, NULL), H2T_ERR_INVALID_ARG);
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = "http://x/",
                        .body_len = 3};
  assert_int_equal(h2t_request_submit(c, &o, NULL), H2T_ERR_INVALID_ARG);
  h2t_header h[] = {{"bad name", "v"}};
  h2t_request_opts o2 = {H2T_REQUEST_OPTS_INIT, .url = "http://x/",
                         .headers = h, .nheaders = 1};
  assert_int_equal(h2t_request_submit(c, &o2, NULL), H2T_ERR_INVALID_ARG);
  h2t_header h2[] = {{"x", "a\r\nb"}};
  o2.headers = h2;
  assert_int_equal(h2t_request_submit(c, &o2, NULL), H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_request_cancel(NULL), H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_client_pending(c), 0);
  assert_int_equal(h2t_client_run(c), 0); /* nothing pending: returns */
  h2t_client_del(c);
  h2t_client_del(NULL);
}

static void test_tls_session_resumed_on_next_conn(void **state) {
  const char *cert, *key;
  assert_int_equal(h2t_test_make_cert(&cert, &key), 0);
  h2t_client_config cfg = {H2T_CLIENT_CONFIG_INIT};
  cfg.ca_file = cert;
  cfg.idle_timeout_ms = 50;
  h2t_client *c;
  assert_int_equal(h2t_client_new(&c, &cfg), 0);
  char url[128];
  snprintf(url, sizeof url, "https://localhost:%d/6", tls_port);
  h2t_response resp;
  assert_int_equal(fetch(c, url, &resp), 0);
  h2t_response_free(&resp);
  assert_int_equal(last_tls_done.u.tls.resumed, 0);
  uint64_t first = last_got_conn.conn_id;
  /* let the conn idle out, then connect again */
  h2t_client_stats st;
  for (int i = 0; i < 100; i++) {
    h2t_client_stats_get(c, &st);
    if (!st.conns_open)
      break;
    ev_run(h2t_client_loop(c), EVRUN_ONCE);
  }
  assert_int_equal(st.conns_open, 0);
  assert_int_equal(fetch(c, url, &resp), 0);
  h2t_response_free(&resp);
  assert_int_not_equal(last_got_conn.conn_id, first);
  assert_int_equal(last_got_conn.u.got_conn.new_reason, H2T_CONN_IDLE_TIMEOUT);
  assert_int_equal(last_tls_done.u.tls.resumed, 1);
  h2t_client_del(c);
}

int main(void) {
  {
    /* the default docroot plus a file larger than every window */
    char p[400];
    snprintf(p, sizeof p, "%s/www", h2t_test_tmpdir());
    mkdir(p, 0755);
    snprintf(p, sizeof p, "%s/www/big", h2t_test_tmpdir());
    FILE *f = fopen(p, "wb");
    for (size_t i = 0; i < 3 * 1024 * 1024 + 17; i++)
      fputc((int)(uint8_t)(i * 7), f);
    fclose(f);
  }
  pid_t a = h2t_test_nghttpd(0, NULL, NULL, &h2c_port);
  pid_t b = h2t_test_nghttpd(1, NULL, NULL, &tls_port);
  if (a < 0 || b < 0) {
    fprintf(stderr, "cannot start nghttpd\n");
    return 1;
  }
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_h2c_first_request_hook_order),
      cmocka_unit_test(test_ip_literal_fires_dns_hooks),
      cmocka_unit_test(test_tls_hook_order_and_verify),
      cmocka_unit_test(test_tls_ip_literal_verified),
      cmocka_unit_test(test_tls_untrusted_fails_verify),
      cmocka_unit_test(test_tls_wrong_host_fails),
      cmocka_unit_test(test_bad_ca_file_fails_at_new),
      cmocka_unit_test(test_parallel_requests_multiplex),
      cmocka_unit_test(test_bad_url_at_submit),
      cmocka_unit_test(test_post_body_and_headers),
      cmocka_unit_test(test_large_bodies_both_ways),
      cmocka_unit_test(test_api_misuse),
      cmocka_unit_test(test_default_trace_runs_after_request_trace),
      cmocka_unit_test(test_tls_session_resumed_on_next_conn),
  };
  int rv = cmocka_run_group_tests(tests, NULL, NULL);
  h2t_test_stop(a);
  h2t_test_stop(b);
  return rv;
}
