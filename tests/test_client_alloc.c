/* Allocation failure at every point of a client's life: the Nth allocation
 * through h2t_mem fails; the result is a clean error, never a crash, a hang
 * or a leak (run under ASan for the leak part). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <h2trace/client.h>
#include "peer.h"

static long countdown = -1; /* -1: never fail */
static long allocs;

static int fail_now(void) {
  allocs++;
  return countdown >= 0 && countdown-- == 0;
}
static void *t_malloc(size_t n, void *u) { return fail_now() ? NULL : malloc(n); }
static void t_free(void *p, void *u) { free(p); }
static void *t_calloc(size_t a, size_t b, void *u) {
  return fail_now() ? NULL : calloc(a, b);
}
static void *t_realloc(void *p, size_t n, void *u) {
  return fail_now() ? NULL : realloc(p, n);
}
static const h2t_mem mem = {NULL, t_malloc, t_free, t_calloc, t_realloc};

static int port;

static int one_run(void) {
  h2t_client_config cfg = {H2T_CLIENT_CONFIG_INIT};
  cfg.mem = &mem;
  cfg.connect_timeout_ms = 3000;
  h2t_client *c;
  int rv = h2t_client_new(&c, &cfg);
  if (rv)
    return rv;
  char url[128];
  snprintf(url, sizeof url, "http://localhost:%d/6", port);
  h2t_header h[] = {{"x-a", "1"}};
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = url, .headers = h,
                        .nheaders = 1};
  h2t_response resp;
  for (int i = 0; i < 2 && rv == 0; i++) { /* a new conn, then reuse */
    rv = h2t_client_fetch(c, &o, &resp);
    if (rv == 0) {
      assert_string_equal((char *)resp.body, "abcdef");
      h2t_response_free(&resp);
    }
  }
  h2t_client_del(c);
  return rv;
}

static void test_every_allocation_can_fail(void **state) {
  countdown = -1;
  allocs = 0;
  assert_int_equal(one_run(), 0);
  long total = allocs;
  assert_true(total > 5);
  for (long n = 0; n < total; n++) {
    countdown = n;
    int rv = one_run();
    if (rv != 0 && rv != H2T_ERR_NOMEM)
      fail_msg("allocation %ld failing gave %s", n, h2t_errname(rv));
  }
  countdown = -1;
}

int main(void) {
  pid_t pid = h2t_test_nghttpd(0, NULL, NULL, &port);
  if (pid < 0)
    return 1;
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_allocation_can_fail),
  };
  int rv = cmocka_run_group_tests(tests, NULL, NULL);
  h2t_test_stop(pid);
  return rv;
}
