/* c-ares on libev: real lookups that never leave the machine (the hosts
 * file's "localhost"; ".invalid" is answered locally, RFC 6761). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <cmocka.h>

#include "h2/client/client_int.h"

typedef struct res {
  int called, error;
  size_t n;
  char first[64];
} res;

static void on_dns(void *arg, int error, const struct sockaddr_storage *a,
                   size_t n) {
  res *r = arg;
  r->called++;
  r->error = error;
  r->n = n;
  if (n)
    h2t__sockaddr_str(&a[0], r->first, sizeof r->first);
}

static void run_until(struct ev_loop *loop, res *r) {
  for (int i = 0; i < 1000 && !r->called; i++)
    ev_run(loop, EVRUN_ONCE);
}

static void test_localhost_resolves_from_hosts_file(void **state) {
  struct ev_loop *loop = ev_loop_new(0);
  h2_dns *d;
  assert_int_equal(h2t__dns_new(&d, loop, NULL), 0);
  res r = {0};
  assert_non_null(h2t__dns_lookup(d, "localhost", 4, on_dns, &r));
  assert_int_equal(r.called, 0); /* never from inside the call */
  run_until(loop, &r);
  assert_int_equal(r.called, 1);
  assert_int_equal(r.error, 0);
  assert_true(r.n >= 1);
  assert_string_equal(r.first, "127.0.0.1:0");
  h2t__dns_del(d);
  ev_loop_destroy(loop);
}

static void test_invalid_tld_fails_without_network(void **state) {
  assert_true(h2t__dns_name_is_invalid("x.invalid"));
  assert_true(h2t__dns_name_is_invalid("x.INVALID."));
  assert_true(h2t__dns_name_is_invalid("invalid"));
  assert_false(h2t__dns_name_is_invalid("notinvalid"));
  assert_false(h2t__dns_name_is_invalid("invalid.example"));
  struct ev_loop *loop = ev_loop_new(0);
  h2_dns *d;
  assert_int_equal(h2t__dns_new(&d, loop, NULL), 0);
  res r = {0};
  uint64_t t0 = h2t_now_us();
  assert_non_null(h2t__dns_lookup(d, "nothing.invalid", 0, on_dns, &r));
  run_until(loop, &r);
  assert_int_equal(r.error, H2T_ERR_DNS);
  assert_true(h2t_now_us() - t0 < 100000);
  h2t__dns_del(d);
  ev_loop_destroy(loop);
}

static void test_cancel_suppresses_callback(void **state) {
  struct ev_loop *loop = ev_loop_new(0);
  h2_dns *d;
  assert_int_equal(h2t__dns_new(&d, loop, NULL), 0);
  res r = {0};
  h2_dns_query *q = h2t__dns_lookup(d, "localhost", 0, on_dns, &r);
  h2t__dns_cancel(q);
  for (int i = 0; i < 5; i++)
    ev_run(loop, EVRUN_NOWAIT);
  assert_int_equal(r.called, 0);
  h2t__dns_del(d);
  ev_loop_destroy(loop);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_localhost_resolves_from_hosts_file),
      cmocka_unit_test(test_invalid_tld_fails_without_network),
      cmocka_unit_test(test_cancel_suppresses_callback),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
