/* trace/inflight.c: the in-flight table driven the way h2/ drives it —
 * h2t__inflight_begin, trace events through a trace chain, h2t__inflight_end. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include <h2trace/inflight.h>
#include "trace/inflight_int.h"

static int setup(void **state) {
  h2t_inflight_config cfg = {H2T_INFLIGHT_CONFIG_INIT};
  cfg.recent = 8;
  return h2t_inflight_enable(&cfg);
}

static int teardown(void **state) { return h2t_inflight_disable(); }

static void ev_at(struct inflight_entry *e, h2t_event_type type, uint64_t t,
                  uint64_t conn, int32_t stream) {
  h2t_event ev = {.type = type, .t_us = t, .conn_id = conn,
                  .stream_id = stream};
  h2t__inflight_event(e, &ev);
}

static struct inflight_entry *client_req(uint64_t id, const char *authority,
                                         const char *path) {
  return h2t__inflight_begin(INFLIGHT_CLIENT, id, "GET", "https", authority, path,
                        NULL, NULL);
}

static void test_off_costs_nothing(void **state) {
  assert_int_equal(h2t_inflight_disable(), 0);
  assert_false(h2t_inflight_enabled());
  assert_null(client_req(1, "a", "/"));
  assert_int_equal(h2t__inflight_mask(INFLIGHT_CLIENT), 0);
  assert_int_equal(h2t__inflight_mask(INFLIGHT_SERVER), 0);
  h2t_inflight_info *arr = (void *)1;
  size_t n = 9;
  assert_int_equal(h2t_inflight_snapshot(&arr, &n), 0);
  assert_null(arr);
  assert_int_equal(n, 0);
  /* calls with a NULL entry are no-ops, so h2/ needs no special case */
  h2t__inflight_event(NULL, &(h2t_event){.type = H2T_EV_GOT_DATA});
  h2t__inflight_set_status(NULL, "x");
  h2t__inflight_end(NULL, 0);
  assert_int_equal(setup(NULL), 0);
  /* already on: NULL asks for nothing new, so nothing changes */
  assert_int_equal(h2t_inflight_enable(NULL), 0);
  assert_true(h2t_inflight_enabled());
  assert_int_not_equal(h2t__inflight_mask(INFLIGHT_CLIENT) &
                           (UINT64_C(1) << H2T_EV_GOT_CONN),
                       0);
  assert_int_not_equal(h2t__inflight_mask(INFLIGHT_SERVER) &
                           (UINT64_C(1) << H2T_EV_SRV_HANDLER_STARTED),
                       0);
}

/* 512 bytes of request and 32 of W3C trace ids */
static void test_entry_fits_544_bytes(void **state) {
  assert_true(sizeof(struct inflight_entry) <= 544);
}

static void test_client_states_history_and_times(void **state) {
  struct inflight_entry *e = client_req(42, "slownode:8484", "/blob/9f2c");
  assert_non_null(e);
  uint64_t b = e->start_us;
  ev_at(e, H2T_EV_GET_CONN, b + 10, 0, 0);
  ev_at(e, H2T_EV_DNS_START, b + 20, 0, 0);
  ev_at(e, H2T_EV_CONNECT_START, b + 30, 0, 0);
  ev_at(e, H2T_EV_TLS_HANDSHAKE_START, b + 40, 3, 0);
  h2t_event gc = {.type = H2T_EV_GOT_CONN, .t_us = b + 50, .conn_id = 3};
  gc.u.got_conn.active_streams = 1;
  gc.u.got_conn.max_streams = 100;
  h2t__inflight_event(e, &gc);
  ev_at(e, H2T_EV_STREAM_OPENED, b + 60, 3, 17);
  ev_at(e, H2T_EV_WROTE_HEADERS, b + 70, 3, 17);
  ev_at(e, H2T_EV_WROTE_REQUEST, b + 100, 3, 17);

  h2t_inflight_info r;
  assert_int_equal(h2t_inflight_get(42, &r), 0);
  assert_int_equal(r.state, H2T_IFS_WAIT_RESPONSE);
  assert_int_equal(r.conn_id, 3);
  assert_int_equal(r.stream_id, 17);
  assert_string_equal(r.method, "GET");
  assert_string_equal(r.authority, "slownode:8484");
  assert_string_equal(r.path, "/blob/9f2c");
  assert_int_equal(r.kind, H2T_INFLIGHT_CLIENT);
  assert_false(r.finished);

  h2t_event d = {.type = H2T_EV_GOT_DATA, .t_us = b + 200, .conn_id = 3,
                 .stream_id = 17};
  d.u.data.bytes = 1000;
  h2t__inflight_event(e, &d);
  d.t_us = b + 300;
  h2t__inflight_event(e, &d);
  h2t__inflight_set_status(e, "fetching blob");
  assert_int_equal(h2t_inflight_get(42, &r), 0);
  assert_int_equal(r.state, H2T_IFS_RECEIVING);
  assert_int_equal(r.bytes_in, 2000);
  assert_string_equal(r.status, "fetching blob");
  static const h2t_inflight_state want[] = {
      H2T_IFS_QUEUED, H2T_IFS_DNS, H2T_IFS_CONNECTING, H2T_IFS_TLS,
      H2T_IFS_SENDING, H2T_IFS_WAIT_RESPONSE, H2T_IFS_RECEIVING};
  assert_int_equal(r.nhistory, 7);
  assert_int_equal(r.history_dropped, 0);
  for (unsigned i = 0; i < 7; i++)
    assert_int_equal(r.history[i].state, want[i]);
  assert_int_equal(r.history[0].entered_us, b);
  assert_int_equal(r.history[0].duration_us, 20); /* queued until dns */
  assert_int_equal(r.history[1].duration_us, 10);
  assert_int_equal(r.history[4].entered_us, b + 50);
  assert_int_equal(r.history[4].duration_us, 50); /* sending */
  assert_int_equal(r.history[5].duration_us, 100); /* waiting */

  h2t_event done = {.type = H2T_EV_DONE, .t_us = b + 400};
  done.u.done.status = 200;
  done.u.done.bytes_recv = 2000;
  done.u.done.bytes_sent = 5;
  h2t__inflight_event(e, &done);
  h2t__inflight_end(e, 0);
  assert_int_equal(h2t_inflight_get(42, &r), 0); /* from the recent ring */
  assert_true(r.finished);
  assert_int_equal(r.state, H2T_IFS_DONE);
  assert_int_equal(r.error, 0);
  assert_int_equal(r.http_status, 200);
  assert_int_equal(r.bytes_out, 5);
  assert_int_equal(r.history[r.nhistory - 1].state, H2T_IFS_DONE);
  size_t n;
  h2t_inflight_info *arr;
  assert_int_equal(h2t_inflight_snapshot(&arr, &n), 0);
  assert_int_equal(n, 0);
  h2t_inflight_info_free(arr);
}

static void test_wait_stream_flow_blocked_retry(void **state) {
  struct inflight_entry *e = client_req(7, "busy:443", "/upload");
  uint64_t b = e->start_us;
  h2t_event gc = {.type = H2T_EV_GOT_CONN, .t_us = b + 5, .conn_id = 1};
  gc.u.got_conn.reused = 1;
  gc.u.got_conn.active_streams = 101; /* it counted itself: over the limit */
  gc.u.got_conn.max_streams = 100;
  h2t__inflight_event(e, &gc);
  h2t_inflight_info r;
  h2t_inflight_get(7, &r);
  assert_int_equal(r.state, H2T_IFS_WAIT_STREAM);
  ev_at(e, H2T_EV_STREAM_OPENED, b + 10, 1, 5);
  ev_at(e, H2T_EV_FLOW_BLOCKED, b + 20, 1, 5);
  struct inflight_entry *q = client_req(8, "busy:443", "/queued");
  h2t__inflight_wait_stream(q); /* the pool queued it: every conn is full */
  h2t__inflight_wait_stream(NULL);
  h2t_inflight_get(8, &r);
  assert_int_equal(r.state, H2T_IFS_WAIT_STREAM);
  h2t__inflight_end(q, 0);
  h2t_inflight_get(7, &r);
  assert_int_equal(r.state, H2T_IFS_FLOW_BLOCKED);
  ev_at(e, H2T_EV_WROTE_REQUEST, b + 30, 1, 5);
  ev_at(e, H2T_EV_RETRY, b + 40, 1, 5);
  ev_at(e, H2T_EV_GET_CONN, b + 41, 0, 0);
  h2t_inflight_get(7, &r);
  assert_int_equal(r.state, H2T_IFS_QUEUED);
  assert_int_equal(r.history[r.nhistory - 2].state, H2T_IFS_RETRYING);
  h2t__inflight_end(e, H2T_ERR_REFUSED_STREAM);
  h2t_inflight_get(7, &r);
  assert_int_equal(r.error, H2T_ERR_REFUSED_STREAM);
}

static void test_server_states(void **state) {
  struct inflight_entry *e = h2t__inflight_begin(INFLIGHT_SERVER, 9, NULL, NULL,
                                            NULL, NULL, NULL, NULL);
  uint64_t b = e->start_us;
  h2t_inflight_info r;
  h2t_inflight_get(9, &r);
  assert_int_equal(r.state, H2T_IFS_READ_HEADERS);
  h2t_event rh = {.type = H2T_EV_SRV_REQUEST_HEADERS, .t_us = b + 1,
                  .conn_id = 4, .stream_id = 3};
  rh.u.request_headers.method = "POST";
  rh.u.request_headers.path = "/api/items";
  rh.u.request_headers.authority = "me.example:8443";
  rh.u.request_headers.scheme = "https";
  h2t__inflight_event(e, &rh);
  h2t_inflight_get(9, &r);
  assert_int_equal(r.state, H2T_IFS_READ_BODY);
  assert_string_equal(r.method, "POST");
  assert_string_equal(r.path, "/api/items");
  assert_string_equal(r.authority, "me.example:8443");
  assert_int_equal(r.kind, H2T_INFLIGHT_SERVER);
  h2t_event bd = {.type = H2T_EV_SRV_REQUEST_BODY_DONE, .t_us = b + 2};
  bd.u.body.bytes = 321;
  h2t__inflight_event(e, &bd);
  ev_at(e, H2T_EV_SRV_HANDLER_STARTED, b + 3, 4, 3);
  h2t__inflight_set_status(e, "querying inventory");
  h2t_inflight_get(9, &r);
  assert_int_equal(r.state, H2T_IFS_HANDLER);
  assert_string_equal(r.status, "querying inventory");
  assert_int_equal(r.bytes_in, 321);
  h2t_event wh = {.type = H2T_EV_SRV_WROTE_HEADERS, .t_us = b + 4};
  wh.u.response.status = 201;
  h2t__inflight_event(e, &wh);
  ev_at(e, H2T_EV_SRV_FLOW_BLOCKED, b + 5, 0, 0);
  h2t_inflight_get(9, &r);
  assert_int_equal(r.state, H2T_IFS_SRV_FLOW_BLOCKED);
  h2t_event wr = {.type = H2T_EV_SRV_WROTE_RESPONSE, .t_us = b + 6};
  wr.u.body.bytes = 9999;
  h2t__inflight_event(e, &wr);
  h2t_inflight_get(9, &r);
  assert_int_equal(r.state, H2T_IFS_WRITING);
  assert_int_equal(r.bytes_out, 9999);
  assert_int_equal(r.http_status, 201);
  h2t__inflight_end(e, 0);
}

static void test_history_keeps_last_steps_and_profile_counts_all(void **state) {
  struct inflight_entry *e = client_req(11, "flappy:1", "/big");
  uint64_t b = e->start_us;
  ev_at(e, H2T_EV_STREAM_OPENED, b + 100, 1, 1);
  for (uint64_t i = 0; i < 40; i++) { /* 80 steps, blocked 5 µs each time */
    ev_at(e, H2T_EV_FLOW_BLOCKED, b + 110 + i * 10, 1, 1);
    ev_at(e, H2T_EV_STREAM_OPENED, b + 115 + i * 10, 1, 1);
  }
  h2t_inflight_info r;
  h2t_inflight_get(11, &r);
  assert_int_equal(r.nhistory, H2T_INFLIGHT_MAX_HISTORY);
  assert_int_equal(r.nhistory + r.history_dropped, 2 + 40 * 2);
  assert_int_equal(r.history[r.nhistory - 1].state, H2T_IFS_SENDING);
  h2t__inflight_end(e, 0);
  h2t_inflight_profile_data *p;
  assert_int_equal(h2t_inflight_profile(&p), 0);
  const h2t_inflight_profile_row *row = NULL;
  for (size_t i = 0; i < p->nrows; i++)
    if (!strcmp(p->rows[i].authority, "flappy:1"))
      row = &p->rows[i];
  assert_non_null(row);
  /* every flow-blocked step lasted 5 µs, dropped ones included */
  assert_int_equal(row->states[H2T_IFS_FLOW_BLOCKED].total_us, 40 * 5);
  assert_int_equal(row->states[H2T_IFS_FLOW_BLOCKED].requests, 1);
  h2t_inflight_profile_free(p);
}

static void test_recent_ring_is_bounded_newest_first(void **state) {
  for (uint64_t id = 100; id < 120; id++)
    h2t__inflight_end(client_req(id, "r:1", "/"), id == 119 ? H2T_ERR_TIMEOUT : 0);
  h2t_inflight_info *arr;
  size_t n;
  assert_int_equal(h2t_inflight_recent(&arr, &n), 0);
  assert_int_equal(n, 8);
  assert_int_equal(arr[0].id, 119);
  assert_int_equal(arr[0].error, H2T_ERR_TIMEOUT);
  assert_int_equal(arr[7].id, 112);
  assert_true(arr[0].finished);
  h2t_inflight_info_free(arr);
  h2t_inflight_info r;
  assert_int_equal(h2t_inflight_get(100, &r), H2T_ERR_NOT_FOUND);
}

static uint64_t canceled_id;
static char canceled_why[64];
static void *canceled_arg;

static void on_cancel(void *arg, uint64_t id, const char *why) {
  canceled_id = id;
  canceled_arg = arg;
  snprintf(canceled_why, sizeof canceled_why, "%s", why);
}

static void test_cancel_calls_owner_and_is_recorded(void **state) {
  int owner;
  struct inflight_entry *e = h2t__inflight_begin(
      INFLIGHT_CLIENT, 77, "GET", "http", "h:1", "/slow", on_cancel, &owner);
  struct inflight_entry *nocancel = client_req(78, "h:1", "/x");
  ev_at(e, H2T_EV_WROTE_REQUEST, e->start_us + 1, 2, 3);
  canceled_id = 0;
  assert_int_equal(h2t_inflight_cancel(77, "operator asked"), 0);
  assert_int_equal(canceled_id, 77);
  assert_ptr_equal(canceled_arg, &owner);
  assert_string_equal(canceled_why, "operator asked");
  assert_int_equal(h2t_inflight_cancel(77, "again"), H2T_ERR_STATE);
  assert_int_equal(h2t_inflight_cancel(999, "x"), H2T_ERR_NOT_FOUND);
  assert_int_equal(h2t_inflight_cancel(78, "x"), H2T_ERR_UNSUPPORTED);
  /* a late DATA frame must not make it look alive again */
  ev_at(e, H2T_EV_GOT_DATA, h2t_now_us(), 2, 3);
  h2t_inflight_info r;
  h2t_inflight_get(77, &r);
  assert_int_equal(r.state, H2T_IFS_CANCELING);
  assert_true(r.canceled);
  assert_string_equal(r.cancel_reason, "operator asked");
  h2t__inflight_end(e, H2T_ERR_CANCELED);
  h2t__inflight_end(nocancel, 0);
  assert_int_equal(h2t_inflight_cancel(77, "late"), H2T_ERR_NOT_FOUND);
  h2t_inflight_get(77, &r);
  assert_int_equal(r.error, H2T_ERR_CANCELED);
  assert_int_equal(r.history[r.nhistory - 2].state, H2T_IFS_CANCELING);
}

static void test_strings_truncate_and_status_by_id(void **state) {
  char longpath[600];
  memset(longpath, 'p', sizeof longpath - 1);
  longpath[0] = '/';
  longpath[sizeof longpath - 1] = '\0';
  struct inflight_entry *e = h2t__inflight_begin(INFLIGHT_CLIENT, 5, "PROPFINDX",
                                            "https", "host:1", longpath, NULL,
                                            NULL);
  h2t_inflight_info r;
  assert_int_equal(h2t_inflight_set_status(5, "step 2 of 3"), 0);
  assert_int_equal(h2t_inflight_set_status(6, "x"), H2T_ERR_NOT_FOUND);
  h2t_inflight_get(5, &r);
  assert_string_equal(r.authority, "host:1");
  assert_true(strlen(r.path) > 50);
  assert_string_equal(r.path + strlen(r.path) - 3, "...");
  assert_string_equal(r.method + strlen(r.method) - 3, "...");
  assert_string_equal(r.status, "step 2 of 3");
  assert_int_equal(h2t_inflight_disable(), H2T_ERR_STATE); /* 5 in flight */
  /* the limits inflight.h states: 7 bytes of method, 126 of authority and
   * path together, 39 of status */
  assert_int_equal(strlen(r.method), 7);
  assert_int_equal(strlen(r.authority) + strlen(r.path), 126);
  assert_int_equal(h2t_inflight_set_status(5, longpath), 0);
  h2t_inflight_get(5, &r);
  assert_int_equal(strlen(r.status), 39);
  assert_string_equal(r.status + 36, "...");
  h2t__inflight_end(e, 0);
  /* and 63 of authority */
  e = h2t__inflight_begin(INFLIGHT_CLIENT, 6, "GET", "https", longpath, "/",
                          NULL, NULL);
  h2t_inflight_get(6, &r);
  assert_int_equal(strlen(r.authority), 63);
  assert_string_equal(r.path, "/");
  h2t__inflight_end(e, 0);
}

static void test_table_full_drops_not_fails(void **state) {
  assert_int_equal(h2t_inflight_disable(), 0);
  h2t_inflight_config cfg = {H2T_INFLIGHT_CONFIG_INIT};
  cfg.max_entries = 2;
  assert_int_equal(h2t_inflight_enable(&cfg), 0);
  struct inflight_entry *a = client_req(1, "x", "/"), *b = client_req(2, "x", "/");
  assert_non_null(a);
  assert_non_null(b);
  assert_null(client_req(3, "x", "/"));
  assert_int_equal(atomic_load(&h2t__ifl.dropped), 1);
  h2t__inflight_end(a, 0);
  struct inflight_entry *c = client_req(4, "x", "/");
  /* room again (a itself stays the recent ring's until lapped) */
  assert_non_null(c);
  assert_ptr_not_equal(c, b);
  h2t__inflight_end(b, 0);
  h2t__inflight_end(c, 0);
}

static void test_events_reach_entry_through_trace_chain(void **state) {
  trace_chain tc;
  h2t__trace_chain_clear(&tc, 0);
  struct inflight_entry *e = client_req(55, "c:1", "/");
  h2t__trace_chain_set_inflight(&tc, e);
  assert_true(TRACE_WANTS(&tc, H2T_EV_WROTE_REQUEST));
  assert_false(TRACE_WANTS(&tc, H2T_EV_WROTE_HEADER_FIELD));
  h2t_event ev = {.type = H2T_EV_WROTE_REQUEST, .conn_id = 8, .stream_id = 1};
  trace_emit(&tc, &ev);
  h2t_inflight_info r;
  h2t_inflight_get(55, &r);
  assert_int_equal(r.state, H2T_IFS_WAIT_RESPONSE);
  assert_int_equal(r.conn_id, 8);
  h2t__inflight_end(e, 0);
}

static void test_sensitive_headers(void **state) {
  assert_true(h2t_header_is_sensitive("Authorization"));
  assert_true(h2t_header_is_sensitive("cookie"));
  assert_true(h2t_header_is_sensitive("SET-COOKIE"));
  assert_true(h2t_header_is_sensitive("proxy-authorization"));
  assert_false(h2t_header_is_sensitive("content-type"));
  assert_false(h2t_header_is_sensitive(NULL));
  assert_false(h2t_header_is_sensitive("x-api-key"));
  assert_int_equal(h2t_header_add_sensitive("X-Api-Key"), 0);
  assert_true(h2t_header_is_sensitive("x-api-key"));
  assert_int_equal(h2t_header_add_sensitive(""), H2T_ERR_INVALID_ARG);
  assert_true(h2t__header_is_sensitive_n("cookie: x", 6));
  assert_false(h2t__header_is_sensitive_n("cookie", 5)); /* a prefix is not */
  assert_true(h2t__header_is_sensitive_n("X-API-KEYS", 9));
  /* names from the table's config are added too */
  assert_int_equal(h2t_inflight_disable(), 0);
  const char *extra[] = {"x-session"};
  h2t_inflight_config cfg = {H2T_INFLIGHT_CONFIG_INIT};
  cfg.sensitive_headers = extra;
  cfg.nsensitive_headers = 1;
  assert_int_equal(h2t_inflight_enable(&cfg), 0);
  assert_true(h2t_header_is_sensitive("X-Session"));
}

/* --- 10 000 concurrent entries, written while read -------------------------- */

#define NTHREADS 4
#define PER_THREAD 2500

static atomic_int phase; /* 1: all begun; 2: stop churning */
static atomic_uint_fast64_t worst_event_ns; /* longest h2t__inflight_event() */

static void *writer(void *arg) {
  uintptr_t t = (uintptr_t)arg;
  struct inflight_entry **mine = calloc(PER_THREAD, sizeof *mine);
  for (int i = 0; i < PER_THREAD; i++) {
    char path[32];
    snprintf(path, sizeof path, "/t%u/%d", (unsigned)t, i);
    mine[i] = h2t__inflight_begin(INFLIGHT_CLIENT, 1000000 + t * PER_THREAD + (uint64_t)i,
                             "GET", "http", "many:80", path, NULL, NULL);
  }
  atomic_fetch_add(&phase, 1);
  /* stream_id and bytes_in move together: a torn copy would split them */
  for (int32_t round = 1; atomic_load(&phase) < NTHREADS + 1; round++)
    for (int i = 0; i < PER_THREAD; i += 7) {
      h2t_event ev = {.type = H2T_EV_GOT_DATA, .t_us = h2t_now_us(),
                      .stream_id = round, .conn_id = 1};
      ev.u.data.bytes = 1;
      if (mine[i]) {
        h2t__ife_lock(mine[i]);
        mine[i]->bytes_in = (uint64_t)round - 1;
        h2t__ife_unlock(mine[i]);
        struct timespec a, b;
        clock_gettime(CLOCK_MONOTONIC, &a);
        h2t__inflight_event(mine[i], &ev);
        clock_gettime(CLOCK_MONOTONIC, &b);
        uint64_t ns = (uint64_t)((b.tv_sec - a.tv_sec) * 1000000000L +
                                 (b.tv_nsec - a.tv_nsec));
        uint64_t w = atomic_load(&worst_event_ns);
        while (ns > w && !atomic_compare_exchange_weak(&worst_event_ns, &w, ns))
          ;
      }
    }
  for (int i = 0; i < PER_THREAD; i++)
    h2t__inflight_end(mine[i], 0);
  free(mine);
  return NULL;
}

static void test_10k_concurrent_snapshot(void **state) {
  pthread_t th[NTHREADS];
  atomic_store(&phase, 0);
  for (uintptr_t t = 0; t < NTHREADS; t++)
    pthread_create(&th[t], NULL, writer, (void *)t);
  while (atomic_load(&phase) < NTHREADS)
    sched_yield();
  double best = 1e9;
  for (int rep = 0; rep < 5; rep++) {
    h2t_inflight_info *arr;
    size_t n;
    uint64_t t0 = h2t_now_us();
    assert_int_equal(h2t_inflight_snapshot(&arr, &n), 0);
    uint64_t dt = h2t_now_us() - t0;
    if (dt < best)
      best = (double)dt;
    assert_int_equal(n, NTHREADS * PER_THREAD);
    char *seen = calloc(NTHREADS * PER_THREAD, 1);
    for (size_t i = 0; i < n; i++) {
      if (i)
        assert_true(arr[i - 1].start_us <= arr[i].start_us); /* oldest first */
      uint64_t k = arr[i].id - 1000000;
      assert_true(k < NTHREADS * PER_THREAD);
      assert_false(seen[k]);
      seen[k] = 1;
      char path[32];
      snprintf(path, sizeof path, "/t%u/%u", (unsigned)(k / PER_THREAD),
               (unsigned)(k % PER_THREAD));
      assert_string_equal(arr[i].path, path);
      if (arr[i].stream_id)
        assert_int_equal(arr[i].bytes_in, (uint64_t)arr[i].stream_id);
    }
    free(seen);
    h2t_inflight_info_free(arr);
  }
  printf("# snapshot of %d in-flight entries (4 writers churning): best %.2f ms,"
         " entry %zu bytes, info %zu bytes; slowest state change meanwhile"
         " %.1f us (includes preemption: 6 threads, 2 cores)\n",
         NTHREADS * PER_THREAD, best / 1000.0, sizeof(struct inflight_entry),
         sizeof(h2t_inflight_info), (double)atomic_load(&worst_event_ns) / 1000.0);
  atomic_fetch_add(&phase, 1);
  for (int t = 0; t < NTHREADS; t++)
    pthread_join(th[t], NULL);
  h2t_inflight_info *arr;
  size_t n;
  h2t_inflight_snapshot(&arr, &n);
  assert_int_equal(n, 0);
}

static void test_10k_snapshot_quiet(void **state) {
  enum { N = 10000 };
  struct inflight_entry **e = calloc(N, sizeof *e);
  for (int i = 0; i < N; i++) {
    char path[32];
    snprintf(path, sizeof path, "/q/%d", i);
    e[i] = h2t__inflight_begin(INFLIGHT_CLIENT, 5000000 + (uint64_t)i, "GET",
                          "http", "quiet:80", path, NULL, NULL);
    ev_at(e[i], H2T_EV_WROTE_REQUEST, h2t_now_us(), 1, 2 * i + 1);
  }
  double best = 1e9, sum = 0;
  for (int rep = 0; rep < 10; rep++) {
    h2t_inflight_info *arr;
    size_t n;
    uint64_t t0 = h2t_now_us();
    assert_int_equal(h2t_inflight_snapshot(&arr, &n), 0);
    double dt = (double)(h2t_now_us() - t0);
    sum += dt;
    best = dt < best ? dt : best;
    assert_int_equal(n, N);
    assert_int_equal(arr[N - 1].stream_id, 2 * (N - 1) + 1);
    h2t_inflight_info_free(arr);
  }
  printf("# snapshot of %d in-flight entries (quiet): best %.2f ms, mean %.2f ms\n",
         N, best / 1000.0, sum / 10000.0);
  for (int i = 0; i < N; i++)
    h2t__inflight_end(e[i], 0);
  free(e);
}

/* Cancels racing with ends: cancel_fn only ever runs while its request
 * exists (the owner clears `alive` after h2t__inflight_end returns). */
#define RACE_N 20000
static atomic_uint_fast64_t race_current; /* id begun and not yet ended */
static atomic_int race_alive, race_stop, race_bad, race_canceled;

static void race_cancel_fn(void *arg, uint64_t id, const char *why) {
  if (!atomic_load(&race_alive) || atomic_load(&race_current) != id)
    atomic_store(&race_bad, 1);
  atomic_fetch_add(&race_canceled, 1);
}

static void *race_canceler(void *arg) {
  while (!atomic_load(&race_stop)) {
    uint64_t id = atomic_load(&race_current);
    if (id)
      h2t_inflight_cancel(id, "race");
  }
  return NULL;
}

static void test_cancel_races_end(void **state) {
  pthread_t th;
  pthread_create(&th, NULL, race_canceler, NULL);
  for (uint64_t id = 1; id <= RACE_N; id++) {
    atomic_store(&race_current, id + 900000);
    atomic_store(&race_alive, 1);
    struct inflight_entry *e = h2t__inflight_begin(
        INFLIGHT_CLIENT, id + 900000, "GET", "http", "race:1", "/", race_cancel_fn, NULL);
    h2t_event ev = {.type = H2T_EV_GOT_DATA, .t_us = h2t_now_us()};
    h2t__inflight_event(e, &ev);
    if (id % 100 == 0) { /* now and then, live long enough to be canceled */
      int before = atomic_load(&race_canceled);
      uint64_t t0 = h2t_now_us();
      while (atomic_load(&race_canceled) == before && h2t_now_us() - t0 < 2000)
        ;
    }
    h2t__inflight_end(e, 0);
    atomic_store(&race_alive, 0);
  }
  atomic_store(&race_stop, 1);
  pthread_join(th, NULL);
  printf("# %d requests, %d canceled while racing their end\n", RACE_N,
         atomic_load(&race_canceled));
  assert_int_equal(atomic_load(&race_bad), 0);
  assert_true(atomic_load(&race_canceled) > 0);
}

static void test_state_change_cost(void **state) {
  struct inflight_entry *e = client_req(31337, "bench:1", "/");
  enum { N = 1000000 };
  h2t_event a = {.type = H2T_EV_FLOW_BLOCKED, .t_us = 1};
  h2t_event b = {.type = H2T_EV_GOT_DATA, .t_us = 1};
  uint64_t t0 = h2t_now_us();
  for (int i = 0; i < N; i++) {
    h2t__inflight_event(e, &a);
    h2t__inflight_event(e, &b);
  }
  uint64_t dt = h2t_now_us() - t0;
  printf("# state change: %.1f ns each (%d changes, single thread)\n",
         (double)dt * 1000.0 / (2.0 * N), 2 * N);
  h2t__inflight_end(e, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_off_costs_nothing, setup, teardown),
      cmocka_unit_test(test_entry_fits_544_bytes),
      cmocka_unit_test_setup_teardown(test_client_states_history_and_times,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_wait_stream_flow_blocked_retry,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_server_states, setup, teardown),
      cmocka_unit_test_setup_teardown(
          test_history_keeps_last_steps_and_profile_counts_all, setup,
          teardown),
      cmocka_unit_test_setup_teardown(test_recent_ring_is_bounded_newest_first,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_cancel_calls_owner_and_is_recorded,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_strings_truncate_and_status_by_id,
                                      setup, teardown),
      cmocka_unit_test_setup_teardown(test_table_full_drops_not_fails, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(
          test_events_reach_entry_through_trace_chain, setup, teardown),
      cmocka_unit_test_setup_teardown(test_sensitive_headers, setup, teardown),
      cmocka_unit_test_setup_teardown(test_10k_concurrent_snapshot, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_10k_snapshot_quiet, setup, teardown),
      cmocka_unit_test_setup_teardown(test_cancel_races_end, setup, teardown),
      cmocka_unit_test_setup_teardown(test_state_change_cost, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
