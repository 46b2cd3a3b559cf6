/* Pool selection and URL parsing, without sockets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "h2/client/client_int.h"

static void test_url_parse(void **state) {
  h2_url u;
  assert_int_equal(h2t__url_parse(NULL, "http://Example.COM/a?b=1#frag", &u), 0);
  assert_string_equal(u.host, "example.com");
  assert_string_equal(u.authority, "Example.COM");
  assert_string_equal(u.path, "/a?b=1");
  assert_int_equal(u.port, 80);
  assert_int_equal(u.tls, 0);
  assert_int_equal(u.host_is_ip, 0);
  h2t__url_free(NULL, &u);

  assert_int_equal(h2t__url_parse(NULL, "https://h:8443", &u), 0);
  assert_string_equal(u.path, "/");
  assert_string_equal(u.authority, "h:8443");
  assert_string_equal(u.scheme, "https");
  assert_int_equal(u.port, 8443);
  h2t__url_free(NULL, &u);

  assert_int_equal(h2t__url_parse(NULL, "https://h?q", &u), 0);
  assert_string_equal(u.path, "/?q");
  assert_int_equal(u.port, 443);
  h2t__url_free(NULL, &u);

  assert_int_equal(h2t__url_parse(NULL, "http://[::1]:81/x", &u), 0);
  assert_string_equal(u.host, "::1");
  assert_string_equal(u.authority, "[::1]:81");
  assert_int_equal(u.host_is_ip, 6);
  h2t__url_free(NULL, &u);

  assert_int_equal(h2t__url_parse(NULL, "http://10.1.2.3/", &u), 0);
  assert_int_equal(u.host_is_ip, 4);
  h2t__url_free(NULL, &u);

  const char *bad[] = {NULL, "", "http://", "http://:80/", "https://h:0/",
                       "https://h:65536/", "http://h:8x/", "http://u:p@h/",
                       "http://[zz]/", "http://[::1/", "http://h/a b",
                       "gopher://h/", "http://h\x01/", "http://[::1]x/"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    assert_int_equal(h2t__url_parse(NULL, bad[i], &u), H2T_ERR_BAD_URL);
}

/* A pool with hand-made conns in given states: no sockets involved. */
static h2t__conn conns[4];
static h2t__origin origin;

static void setup_pool(int n) {
  memset(conns, 0, sizeof conns);
  memset(&origin, 0, sizeof origin);
  TAILQ_INIT(&origin.conns);
  TAILQ_INIT(&origin.queue);
  for (int i = 0; i < n; i++) {
    conns[i].id = (uint64_t)i + 1;
    conns[i].state = H2T__CONN_READY;
    conns[i].settings_seen = 1;
    conns[i].max_streams = 2;
    conns[i].origin = &origin;
    TAILQ_INSERT_TAIL(&origin.conns, &conns[i], link);
    origin.nconns++;
  }
}

static void test_pick_prefers_first_conn_with_room(void **state) {
  setup_pool(2);
  assert_ptr_equal(h2t__pool_pick(&origin, 0), &conns[0]);
  conns[0].nattached = 2; /* at the peer's MAX_CONCURRENT_STREAMS */
  assert_ptr_equal(h2t__pool_pick(&origin, 0), &conns[1]);
  conns[1].nattached = 2;
  assert_null(h2t__pool_pick(&origin, 0));
  assert_int_equal(h2t__pool_new_reason(&origin), H2T_CONN_MAX_STREAMS);
}

static void test_pick_skips_draining_closing_and_avoided(void **state) {
  setup_pool(3);
  conns[0].drain_reason = H2T_CONN_GOAWAY;
  conns[1].close_pending = 1;
  assert_ptr_equal(h2t__pool_pick(&origin, 0), &conns[2]);
  assert_null(h2t__pool_pick(&origin, conns[2].id)); /* a retry avoids it */
  conns[2].drain_reason = H2T_CONN_GOAWAY;
  assert_null(h2t__pool_pick(&origin, 0));
  assert_int_equal(h2t__pool_new_reason(&origin), H2T_CONN_GOAWAY);
}

static void test_new_reason_without_conns(void **state) {
  setup_pool(0);
  assert_int_equal(h2t__pool_new_reason(&origin), H2T_CONN_NO_CONN);
  origin.last_close = H2T_CONN_IDLE_TIMEOUT;
  assert_int_equal(h2t__pool_new_reason(&origin), H2T_CONN_IDLE_TIMEOUT);
}

static void test_coalesce_onto_connecting_conn(void **state) {
  setup_pool(1);
  conns[0].state = H2T__CONN_TLS;
  conns[0].settings_seen = 0;
  origin.peer_max_known = 1; /* expected capacity: what it said last time */
  origin.peer_max_streams = 2;
  assert_null(h2t__pool_pick(&origin, 0)); /* not ready yet */
  assert_ptr_equal(h2t__pool_pick_connecting(&origin), &conns[0]);
  conns[0].nwaiters = 2;
  assert_null(h2t__pool_pick_connecting(&origin));
}

/* A conn told MAX_CONCURRENT_STREAMS 0 can take no stream: it must not keep
 * a request from opening another (the pool used to wedge on it). */
static void test_zero_streams_conn_does_not_count(void **state) {
  setup_pool(1);
  h2t__pool p;
  h2t_client_stats st;
  memset(&st, 0, sizeof st);
  h2t__pool_init(&p, NULL, NULL, 1, &st);
  h2t__conn *cn = NULL;
  h2t_conn_reason why = H2T_CONN_NONE;
  conns[0].nattached = 2;
  assert_int_equal(h2t__pool_choose(&p, &origin, 0, &cn, &why), H2T__PICK_QUEUE);
  conns[0].nattached = 0;
  conns[0].max_streams = 0;
  assert_int_equal(h2t__pool_choose(&p, &origin, 0, &cn, &why), H2T__PICK_OPEN);
  assert_int_equal(why, H2T_CONN_MAX_STREAMS);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_url_parse),
      cmocka_unit_test(test_pick_prefers_first_conn_with_room),
      cmocka_unit_test(test_pick_skips_draining_closing_and_avoided),
      cmocka_unit_test(test_new_reason_without_conns),
      cmocka_unit_test(test_coalesce_onto_connecting_conn),
      cmocka_unit_test(test_zero_streams_conn_does_not_count),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
