/* trace/: hook lookup, composition order, masks, names, errors. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include <h2trace/trace.h>
#include "trace/trace_int.h"

static char order[64];

static void hook_a(const h2t_event *ev, void *user) { strcat(order, "A"); }
static void hook_b(const h2t_event *ev, void *user) { strcat(order, "B"); }
static void hook_any(const h2t_event *ev, void *user) { strcat(order, "*"); }

static void test_newer_runs_first_and_older_still_runs(void **state) {
  h2t_client_trace older = {H2T_CLIENT_TRACE_INIT, .got_conn = hook_b};
  h2t_client_trace newer = {H2T_CLIENT_TRACE_INIT, .got_conn = hook_a,
                            .next = &older, .any = hook_any};
  trace_chain tc;
  h2t__trace_chain_clear(&tc, 0);
  assert_int_equal(h2t__trace_chain_add(&tc, &newer), 0);
  assert_true(TRACE_WANTS(&tc, H2T_EV_GOT_CONN));
  assert_true(TRACE_WANTS(&tc, H2T_EV_DONE)); /* through `any` */
  order[0] = '\0';
  h2t_event ev = {.type = H2T_EV_GOT_CONN};
  trace_emit(&tc, &ev);
  assert_string_equal(order, "A*B");
  assert_true(ev.t_us > 0);
}

static void *seen_user;
static void hook_user(const h2t_event *ev, void *user) {
  seen_user = user;
  strcat(order, "U");
}

/* One full-size trace is dispatched inline; the shape decides the path, and
 * both paths call the same hooks with the same user pointer. */
static void test_direct_path_matches_walk(void **state) {
  int tag;
  h2t_client_trace t = {H2T_CLIENT_TRACE_INIT, .user = &tag,
                        .got_data = hook_user};
  trace_chain tc;
  h2t__trace_chain_clear(&tc, 0);
  h2t__trace_chain_add(&tc, &t);
  assert_ptr_equal(tc.direct, &t);
  order[0] = '\0';
  h2t_event ev = {.type = H2T_EV_GOT_DATA};
  trace_emit(&tc, &ev);
  assert_string_equal(order, "U");
  assert_ptr_equal(seen_user, &tag);
  assert_true(ev.t_us > 0);
  h2t_event other = {.type = H2T_EV_DONE, .t_us = 7};
  trace_emit(&tc, &other); /* unset hook: nothing runs, clock untouched */
  assert_string_equal(order, "U");
  assert_int_equal(other.t_us, 7);

  /* a second head, an `any`, or an older struct size: the general walk */
  h2t_client_trace t2 = {H2T_CLIENT_TRACE_INIT, .got_data = hook_a};
  h2t__trace_chain_add(&tc, &t2);
  assert_null(tc.direct);
  order[0] = '\0';
  trace_emit(&tc, &ev);
  assert_string_equal(order, "UA");
  t.struct_size = offsetof(h2t_client_trace, done);
  h2t__trace_chain_clear(&tc, 0);
  h2t__trace_chain_add(&tc, &t);
  assert_null(tc.direct);
  order[0] = '\0';
  trace_emit(&tc, &ev);
  assert_string_equal(order, "U");
}

static h2t_client_trace *victim;
static void hook_tear_down(const h2t_event *ev, void *user) {
  strcat(order, "T");
  memset(victim, 0xff, sizeof *victim); /* as if freed and reused */
}

/* A hook may complete its request, which frees the chain's copies: the
 * walk must not read a trace after a hook ran. */
static void test_walk_reads_no_trace_after_a_hook(void **state) {
  h2t_client_trace older = {H2T_CLIENT_TRACE_INIT, .done = hook_b};
  h2t_client_trace newer = {H2T_CLIENT_TRACE_INIT, .done = hook_tear_down,
                            .next = &older};
  victim = &newer;
  trace_chain tc;
  h2t__trace_chain_clear(&tc, 0);
  h2t__trace_chain_add(&tc, &newer);
  assert_null(tc.direct);
  order[0] = '\0';
  h2t_event ev = {.type = H2T_EV_DONE};
  trace_emit(&tc, &ev);
  assert_string_equal(order, "TB");
}

static void test_unset_hooks_leave_mask_clear(void **state) {
  h2t_client_trace t = {H2T_CLIENT_TRACE_INIT, .dns_done = hook_a};
  trace_chain tc;
  h2t__trace_chain_clear(&tc, 0);
  h2t__trace_chain_add(&tc, &t);
  assert_int_equal(tc.mask, UINT64_C(1) << H2T_EV_DNS_DONE);
  /* a struct from an older, smaller header has no hooks past its size */
  t.struct_size = offsetof(h2t_client_trace, dns_done);
  h2t__trace_chain_clear(&tc, 0);
  h2t__trace_chain_add(&tc, &t);
  assert_int_equal(tc.mask, 0);
}

/* The hook table: each event's slot is its own hook field, named like the
 * event, in its side's struct; none is the head (struct_size, user, next,
 * any), no two events share one.  Checked through the public structs: a
 * trace with only the hook of that name set must be found for that event
 * and for no other. */
static void test_each_event_has_its_own_hook(void **state) {
  for (int t = 0; t < H2T_EV_COUNT_; t++) {
    int srv = t >= H2T_EV_FIRST_SERVER_;
    size_t off = h2t__trace_hook_off[t];
    size_t head = srv ? offsetof(h2t_server_trace, any)
                      : offsetof(h2t_client_trace, any);
    size_t size = srv ? sizeof(h2t_server_trace) : sizeof(h2t_client_trace);
    assert_true(off > head);
    assert_true(off + sizeof(h2t_hook) <= size);
    for (int u = 0; u < t; u++)
      if ((u >= H2T_EV_FIRST_SERVER_) == srv)
        assert_int_not_equal(h2t__trace_hook_off[u], off);
  }
  /* and by name, for a few whose field names differ from the union's */
  h2t_client_trace c = {H2T_CLIENT_TRACE_INIT, .got_data = hook_a};
  for (int t = 0; t < H2T_EV_FIRST_SERVER_; t++)
    assert_int_equal(h2t__trace_hook_get(&c, 0, t) != NULL,
                     t == H2T_EV_GOT_DATA);
  h2t_server_trace s = {H2T_SERVER_TRACE_INIT, .stream_closed = hook_a};
  for (int t = H2T_EV_FIRST_SERVER_; t < H2T_EV_COUNT_; t++)
    assert_int_equal(h2t__trace_hook_get(&s, 1, t) != NULL,
                     t == H2T_EV_SRV_STREAM_CLOSED);
}

static void test_set_all_covers_every_event(void **state) {
  h2t_client_trace c;
  h2t_server_trace s;
  memset(&c, 0xa5, sizeof c); /* as a fresh local may hold */
  memset(&s, 0xa5, sizeof s);
  assert_int_equal(h2t_client_trace_set_all(&c, hook_a, NULL), 0);
  assert_int_equal(h2t_server_trace_set_all(&s, hook_a, NULL), 0);
  for (int t = 0; t < H2T_EV_COUNT_; t++) {
    int srv = t >= H2T_EV_FIRST_SERVER_;
    assert_non_null(h2t__trace_hook_get(srv ? (void *)&s : (void *)&c, srv, t));
    assert_null(h2t__trace_hook_get(srv ? (void *)&c : (void *)&s, !srv, t));
    assert_non_null(h2t_event_name(t));
  }
  assert_null(c.next);
  assert_null(c.any);
  assert_null(s.next);
  assert_null(s.any);
  trace_chain tc; /* and the chain can be walked */
  h2t__trace_chain_clear(&tc, 1);
  assert_int_equal(h2t__trace_chain_add(&tc, &s), 0);
  assert_ptr_equal(tc.direct, &s);
  assert_string_equal(h2t_event_name(H2T_EV_GOT_CONN), "got_conn");
  assert_string_equal(h2t_event_name(H2T_EV_SRV_WROTE_HEADERS), "wrote_headers");
  assert_null(h2t_event_name(H2T_EV_COUNT_));
}

static void test_errors_have_names_and_text(void **state) {
  assert_string_equal(h2t_strerror(H2T_ERR_DNS), "host name could not be resolved");
  assert_string_equal(h2t_errname(H2T_ERR_TLS_VERIFY), "H2T_ERR_TLS_VERIFY");
  assert_string_equal(h2t_strerror(12345), "unknown error");
  assert_string_equal(h2t_http2_strerror(8), "CANCEL");
  assert_string_equal(h2t_http2_strerror(99), "UNKNOWN");
  assert_string_equal(h2t_conn_reason_name(H2T_CONN_MAX_STREAMS), "max_streams");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_newer_runs_first_and_older_still_runs),
      cmocka_unit_test(test_unset_hooks_leave_mask_clear),
      cmocka_unit_test(test_direct_path_matches_walk),
      cmocka_unit_test(test_walk_reads_no_trace_after_a_hook),
      cmocka_unit_test(test_each_event_has_its_own_hook),
      cmocka_unit_test(test_set_all_covers_every_event),
      cmocka_unit_test(test_errors_have_names_and_text),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
