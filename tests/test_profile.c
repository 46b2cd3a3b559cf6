/* trace/profile.c: where finished requests spent their time, overall and
 * per (kind, authority). */
#include <pthread.h>
#include <setjmp.h>
#include <stdatomic.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <cmocka.h>

#include <h2trace/inflight.h>
#include "trace/inflight_int.h"

static int setup(void **state) { return h2t_inflight_enable(NULL); }
static int teardown(void **state) { return h2t_inflight_disable(); }

/* A client request that queued q µs, waited w µs for its response and
 * received for r µs.  Event times are in the future of its start, so its
 * end (now) is clamped to the last event: the durations are exact. */
static void one(const char *authority, uint64_t q, uint64_t w, uint64_t r,
                int error) {
  static atomic_uint_fast64_t id = 1;
  struct inflight_entry *e =
      h2t__inflight_begin(INFLIGHT_CLIENT, atomic_fetch_add(&id, 1), "GET",
                          "http", authority, "/", NULL, NULL);
  uint64_t b = e->start_us;
  h2t_event ev = {.type = H2T_EV_WROTE_REQUEST, .t_us = b + q};
  h2t__inflight_event(e, &ev);
  ev.type = H2T_EV_GOT_FIRST_RESPONSE_BYTE;
  ev.t_us = b + q + w;
  h2t__inflight_event(e, &ev);
  ev.type = H2T_EV_GOT_DATA;
  ev.t_us = b + q + w + r;
  h2t__inflight_event(e, &ev);
  ev.type = H2T_EV_RETRY; /* a last step that ends the receiving time */
  h2t__inflight_event(e, &ev);
  h2t__inflight_end(e, error);
}

static const h2t_inflight_profile_row *row(const h2t_inflight_profile_data *p,
                                           const char *authority) {
  for (size_t i = 0; i < p->nrows; i++)
    if (!strcmp(p->rows[i].authority, authority))
      return &p->rows[i];
  return NULL;
}

/* End e, then its authority's row in a new profile (*p: free it). */
static const h2t_inflight_profile_row *
end_and_row(struct inflight_entry *e, const char *authority,
            h2t_inflight_profile_data **p) {
  h2t__inflight_end(e, 0);
  assert_int_equal(h2t_inflight_profile(p), 0);
  const h2t_inflight_profile_row *r = row(*p, authority);
  assert_non_null(r);
  return r;
}

static void test_profile_per_authority(void **state) {
  one("slow:1", 10, 5000, 100, 0);
  one("slow:1", 30, 7000, 300, H2T_ERR_TIMEOUT);
  one("fast:1", 20, 100, 10, 0);
  h2t_inflight_profile_data *p;
  assert_int_equal(h2t_inflight_profile(&p), 0);
  assert_int_equal(p->nrows, 2);
  const h2t_inflight_profile_row *slow = row(p, "slow:1"), *fast = row(p, "fast:1");
  assert_non_null(slow);
  assert_non_null(fast);
  assert_int_equal(slow->kind, H2T_INFLIGHT_CLIENT);
  assert_int_equal(slow->requests, 2);
  assert_int_equal(slow->errors, 1);
  assert_int_equal(slow->states[H2T_IFS_QUEUED].total_us, 40);
  assert_int_equal(slow->states[H2T_IFS_WAIT_RESPONSE].total_us, 12000);
  assert_int_equal(slow->states[H2T_IFS_WAIT_RESPONSE].requests, 2);
  assert_int_equal(slow->states[H2T_IFS_RECEIVING].total_us, 400);
  assert_int_equal(slow->states[H2T_IFS_DNS].requests, 0);
  assert_int_equal(slow->total_us, 10 + 5000 + 100 + 30 + 7000 + 300);
  assert_int_equal(fast->states[H2T_IFS_WAIT_RESPONSE].total_us, 100);
  const h2t_inflight_profile_row *all = &p->overall[H2T_INFLIGHT_CLIENT];
  assert_string_equal(all->authority, "*");
  assert_int_equal(all->requests, 3);
  assert_int_equal(all->states[H2T_IFS_WAIT_RESPONSE].total_us, 12100);
  assert_int_equal(p->overall[H2T_INFLIGHT_SERVER].requests, 0);
  h2t_inflight_profile_free(p);
}

/* More steps than the entry's history keeps: the steps it lost still count
 * in the time per state. */
static void test_long_history_keeps_all_time(void **state) {
  struct inflight_entry *e = h2t__inflight_begin(INFLIGHT_CLIENT, 9999, "GET",
                                            "http", "long:1", "/", NULL, NULL);
  uint64_t t = e->start_us + 1;
  h2t_event ev = {.type = H2T_EV_WROTE_REQUEST, .t_us = t};
  h2t__inflight_event(e, &ev);
  for (int i = 0; i < 20; i++) { /* 40 steps: receiving 10 µs, blocked 5 */
    ev.type = H2T_EV_GOT_DATA;
    ev.t_us = t;
    h2t__inflight_event(e, &ev);
    t += 10;
    ev.type = H2T_EV_FLOW_BLOCKED;
    ev.t_us = t;
    h2t__inflight_event(e, &ev);
    t += 5;
  }
  ev.type = H2T_EV_RETRY;
  ev.t_us = t;
  h2t__inflight_event(e, &ev);
  h2t_inflight_profile_data *p;
  const h2t_inflight_profile_row *r = end_and_row(e, "long:1", &p);
  assert_int_equal(r->states[H2T_IFS_QUEUED].total_us, 1);
  assert_int_equal(r->states[H2T_IFS_RECEIVING].total_us, 200);
  assert_int_equal(r->states[H2T_IFS_FLOW_BLOCKED].total_us, 100);
  assert_int_equal(r->states[H2T_IFS_FLOW_BLOCKED].requests, 1);
  assert_int_equal(r->total_us, 301);
  h2t_inflight_profile_free(p);
}

static void test_many_authorities_share_other(void **state) {
  char a[32];
  for (int i = 0; i < 200; i++) {
    snprintf(a, sizeof a, "host%d:443", i);
    one(a, 1, 1, 1, 0);
  }
  h2t_inflight_profile_data *p;
  assert_int_equal(h2t_inflight_profile(&p), 0);
  const h2t_inflight_profile_row *other = row(p, "(other)");
  assert_non_null(other);
  assert_int_equal(p->nrows, 129);
  assert_int_equal(other->requests, 200 - 128);
  assert_int_equal(p->overall[0].requests, 200);
  h2t_inflight_profile_free(p);
}

static void *three(void *authority) {
  for (int i = 0; i < 3; i++)
    one(authority, 10000, 20000, 30000, 0);
  return NULL;
}

/* Each thread counts the requests it ends on its own: the profile sums
 * them, those of threads that have exited too; the overall row is the sum
 * of the rows and every request counts as done. */
static void test_profile_sums_threads(void **state) {
  pthread_t th[2];
  for (int i = 0; i < 2; i++)
    assert_int_equal(pthread_create(&th[i], NULL, three, "t:1"), 0);
  for (int i = 0; i < 2; i++)
    pthread_join(th[i], NULL);
  one("t:1", 10000, 20000, 30000, H2T_ERR_TIMEOUT);
  one("u:1", 1000, 2000, 3000, 0);
  h2t_inflight_profile_data *p;
  assert_int_equal(h2t_inflight_profile(&p), 0);
  const h2t_inflight_profile_row *t = row(p, "t:1"), *all = &p->overall[0];
  assert_non_null(t);
  assert_int_equal(t->requests, 7);
  assert_int_equal(t->errors, 1);
  assert_int_equal(t->total_us, 7 * 60000);
  assert_int_equal(t->states[H2T_IFS_QUEUED].total_us, 70000);
  assert_int_equal(t->states[H2T_IFS_WAIT_RESPONSE].total_us, 140000);
  assert_int_equal(t->states[H2T_IFS_RECEIVING].requests, 7);
  assert_int_equal(t->states[H2T_IFS_RECEIVING].total_us, 210000);
  assert_int_equal(t->states[H2T_IFS_DONE].requests, 7);
  assert_int_equal(all->requests, 8);
  assert_int_equal(all->errors, 1);
  assert_int_equal(all->total_us, 7 * 60000 + 6000);
  assert_int_equal(all->states[H2T_IFS_WAIT_RESPONSE].total_us, 142000);
  assert_int_equal(all->states[H2T_IFS_DONE].requests, 8);
  h2t_inflight_profile_free(p);
}

/* A state entered twice in a short history: one request in it, the time of
 * both visits. */
static void test_state_entered_twice(void **state) {
  struct inflight_entry *e = h2t__inflight_begin(INFLIGHT_CLIENT, 7777, "GET",
                                                 "http", "twice:1", "/", NULL,
                                                 NULL);
  uint64_t t = e->start_us;
  static const struct {
    h2t_event_type type;
    uint64_t dt;
  } steps[] = {{H2T_EV_WROTE_REQUEST, 1000}, {H2T_EV_GOT_DATA, 2000},
               {H2T_EV_FLOW_BLOCKED, 10000}, {H2T_EV_GOT_DATA, 5000},
               {H2T_EV_RETRY, 20000}}; /* µs, ahead of its end: exact */
  for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
    t += steps[i].dt;
    h2t_event ev = {.type = steps[i].type, .t_us = t};
    h2t__inflight_event(e, &ev);
  }
  h2t_inflight_profile_data *p;
  const h2t_inflight_profile_row *r = end_and_row(e, "twice:1", &p);
  assert_int_equal(r->states[H2T_IFS_RECEIVING].requests, 1);
  assert_int_equal(r->states[H2T_IFS_RECEIVING].total_us, 10000 + 20000);
  assert_int_equal(r->states[H2T_IFS_FLOW_BLOCKED].total_us, 5000);
  assert_int_equal(r->states[H2T_IFS_WAIT_RESPONSE].total_us, 2000);
  assert_int_equal(r->total_us, 38000);
  h2t_inflight_profile_free(p);
}

/* Nothing finished yet: no rows (and no array), two overall rows of 0. */
static void test_profile_empty(void **state) {
  h2t_inflight_profile_data *p;
  assert_int_equal(h2t_inflight_profile(&p), 0);
  assert_int_equal(p->nrows, 0);
  assert_null(p->rows);
  for (int k = 0; k < 2; k++) {
    assert_int_equal(p->overall[k].kind, k);
    assert_string_equal(p->overall[k].authority, "*");
    assert_int_equal(p->overall[k].requests, 0);
  }
  h2t_inflight_profile_free(p);
}

static void test_profile_off(void **state) {
  h2t_inflight_profile_data *p;
  assert_int_equal(h2t_inflight_profile(NULL), H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_inflight_profile(&p), H2T_ERR_STATE);
  assert_null(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_profile_per_authority, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_long_history_keeps_all_time, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_many_authorities_share_other, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_profile_sums_threads, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_state_entered_twice, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_profile_empty, setup, teardown),
      cmocka_unit_test(test_profile_off),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
