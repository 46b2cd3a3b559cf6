/* Client TLS against real peers: ALPN required (openssl s_server without
 * h2), context options. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <h2trace/client.h>
#include "h2/client/client_int.h"
#include "peer.h"

static char alpn_seen[32];
static int tls_error;

static void on_tls_done(const h2t_event *ev, void *user) {
  snprintf(alpn_seen, sizeof alpn_seen, "%s",
           ev->u.tls.alpn ? ev->u.tls.alpn : "(none)");
  tls_error = ev->u.tls.error;
}

static void alpn_case(int with_alpn) {
  const char *cert, *key;
  assert_int_equal(h2t_test_make_cert(&cert, &key), 0);
  int port = h2t_test_free_port();
  char pbuf[16];
  snprintf(pbuf, sizeof pbuf, "%d", port);
  char *argv[] = {"openssl", "s_server", "-accept", pbuf, "-cert",
                  (char *)cert, "-key", (char *)key, "-www", "-quiet",
                  "-alpn", "http/1.1", NULL};
  if (!with_alpn) /* no ALPN at all: the server selects nothing */
    argv[10] = NULL;
  pid_t pid = h2t_test_spawn(argv, NULL);
  assert_true(pid > 0);
  assert_int_equal(h2t_test_wait_port(port, 5000), 0);
  h2t_client_config cfg = {H2T_CLIENT_CONFIG_INIT};
  cfg.ca_file = cert;
  h2t_client *c;
  assert_int_equal(h2t_client_new(&c, &cfg), 0);
  char url[128];
  snprintf(url, sizeof url, "https://localhost:%d/", port);
  h2t_client_trace tr = {H2T_CLIENT_TRACE_INIT,
                         .tls_handshake_done = on_tls_done};
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = url, .trace = &tr};
  h2t_response resp;
  assert_int_equal(h2t_client_fetch(c, &o, &resp), H2T_ERR_ALPN);
  assert_int_equal(tls_error, H2T_ERR_ALPN);
  assert_string_not_equal(alpn_seen, "h2");
  h2t_client_del(c);
  h2t_test_stop(pid);
}

/* The server refuses with a no_application_protocol alert (RFC 7301). */
static void test_alpn_alert_is_alpn_error(void **state) { alpn_case(1); }

/* The server ignores ALPN: the handshake completes without h2. */
static void test_no_alpn_is_alpn_error(void **state) { alpn_case(0); }

static void test_ctx_options(void **state) {
  SSL_CTX *ctx;
  assert_int_equal(h2t__tls_ctx_new(&ctx, NULL, NULL, 0), 0);
  assert_int_equal(SSL_CTX_get_min_proto_version(ctx), TLS1_2_VERSION);
  assert_int_equal(SSL_CTX_get_verify_mode(ctx), SSL_VERIFY_PEER);
  SSL *ssl = h2t__tls_new(ctx, -1, "example.org", 0, 0);
  assert_non_null(ssl);
  assert_string_equal(SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name),
                      "example.org");
  SSL_free(ssl);
  ssl = h2t__tls_new(ctx, -1, "127.0.0.1", 4, 0); /* no SNI for literals */
  assert_non_null(ssl);
  assert_null(SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name));
  SSL_free(ssl);
  SSL_CTX_free(ctx);
  assert_int_equal(h2t__tls_ctx_new(&ctx, NULL, NULL, 1), 0);
  assert_int_equal(SSL_CTX_get_verify_mode(ctx), SSL_VERIFY_NONE);
  SSL_CTX_free(ctx);
  assert_int_equal(h2t__tls_ctx_new(&ctx, "/nonexistent", NULL, 0),
                   H2T_ERR_TLS);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_alpn_alert_is_alpn_error),
      cmocka_unit_test(test_no_alpn_is_alpn_error),
      cmocka_unit_test(test_ctx_options),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
