/*
 * W3C trace context: traceparent parse/format as the spec says (invalid
 * values ignored), the client sends one on every request (new, under a
 * parent, the application's, or none), the server parses it, gives the
 * handler a span of its own and shows the ids in the in-flight table.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>
#include <ev.h>

#include <h2trace/client.h>
#include <h2trace/inflight.h>
#include <h2trace/server.h>

#include "trace/tracectx_int.h"

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static void test_parse_valid(void **state) {
  (void)state;
  h2t_trace_context c;
  assert_int_equal(h2t_trace_context_parse(TP, &c), 0);
  static const uint8_t tid[16] = {0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3,
                                  0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d,
                                  0x0e, 0x0e, 0x47, 0x36};
  static const uint8_t sid[8] = {0x00, 0xf0, 0x67, 0xaa,
                                 0x0b, 0xa9, 0x02, 0xb7};
  assert_memory_equal(c.trace_id, tid, 16);
  assert_memory_equal(c.span_id, sid, 8);
  assert_true(h2t__zero_id(c.parent_span_id, 8));
  assert_int_equal(c.flags, H2T_TRACE_SAMPLED);
  char buf[H2T_TRACEPARENT_LEN + 1];
  assert_int_equal(h2t_trace_context_format(&c, buf, sizeof buf),
                   H2T_TRACEPARENT_LEN);
  assert_string_equal(buf, TP); /* round trip */
  /* not sampled; OWS around; reserved flag bits dropped */
  assert_int_equal(h2t_trace_context_parse(
                       " 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00\t",
                       &c), 0);
  assert_int_equal(c.flags, 0);
  assert_int_equal(h2t_trace_context_parse(
                       "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-ff",
                       &c), 0);
  assert_int_equal(c.flags, H2T_TRACE_SAMPLED);
  /* a later version: longer is fine after a '-' */
  assert_int_equal(h2t_trace_context_parse(
                       "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what",
                       &c), 0);
  assert_int_equal(h2t_trace_context_parse(
                       "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                       &c), 0);
}

static void test_parse_invalid_ignored(void **state) {
  (void)state;
  static const char *const bad[] = {
      "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", /* version ff */
      "00-00000000000000000000000000000000-00f067aa0ba902b7-01", /* zero trace */
      "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", /* zero span */
      "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", /* bad hex */
      "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", /* upper */
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0x", /* flags */
      "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", /* version */
      "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",  /* short id */
      "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01", /* long id */
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01",  /* short span */
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", /* 00 longer */
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",  /* short */
      "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", /* separator */
      "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", /* no '-' */
      "",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    h2t_trace_context c;
    memset(&c, 0xaa, sizeof c);
    if (h2t_trace_context_parse(bad[i], &c) != H2T_ERR_INVALID_ARG)
      fail_msg("accepted: '%s'", bad[i]);
    assert_true(h2t__zero_id(c.trace_id, 16)); /* zeroed */
  }
  h2t_trace_context c;
  assert_int_equal(h2t_trace_context_parse(NULL, &c), H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_trace_context_parse(TP, NULL), H2T_ERR_INVALID_ARG);
  char buf[H2T_TRACEPARENT_LEN + 1];
  memset(&c, 0, sizeof c);
  assert_int_equal(h2t_trace_context_format(&c, buf, sizeof buf),
                   H2T_ERR_INVALID_ARG); /* zero ids are never written */
  assert_int_equal(h2t_trace_context_parse(TP, &c), 0);
  assert_int_equal(h2t_trace_context_format(&c, buf, H2T_TRACEPARENT_LEN),
                   H2T_ERR_INVALID_ARG);
}

static void test_new_ids(void **state) {
  (void)state;
  h2t_trace_context a, b, child;
  h2t__trace_ctx_new(&a, NULL);
  h2t__trace_ctx_new(&b, NULL);
  assert_false(h2t__zero_id(a.trace_id, 16));
  assert_false(h2t__zero_id(a.span_id, 8));
  assert_true(h2t__zero_id(a.parent_span_id, 8));
  assert_int_equal(a.flags, H2T_TRACE_SAMPLED);
  assert_memory_not_equal(a.trace_id, b.trace_id, 16);
  h2t__trace_ctx_new(&child, &a);
  assert_memory_equal(child.trace_id, a.trace_id, 16);
  assert_memory_equal(child.parent_span_id, a.span_id, 8);
  assert_memory_not_equal(child.span_id, a.span_id, 8);
  /* the SSE2 writer and the plain hex agree */
  char w[H2T_TRACEPARENT_LEN + 1], h[33];
  h2t__trace_ctx_write(&child, w);
  h2t__hex(child.trace_id, 16, h);
  assert_memory_equal(w + 3, h, 32);
  h2t__hex(child.span_id, 8, h);
  assert_memory_equal(w + 36, h, 16);
  assert_memory_equal(w + 52, "-01", 3);
  h2t_trace_context back;
  w[H2T_TRACEPARENT_LEN] = '\0';
  assert_int_equal(h2t_trace_context_parse(w, &back), 0);
  assert_memory_equal(back.trace_id, child.trace_id, 16);
}

/* --- a client and a server on one loop ----------------------------------- */

typedef struct rig {
  struct ev_loop *loop;
  h2t_server *s;
  h2t_client *c;
  char url[64];
  char got_tp[128];   /* the traceparent the handler received */
  int ntp;            /* how many it received */
  h2t_trace_context srv_ctx; /* what the handler was given */
  h2t_inflight_info srv_info; /* the server entry, read in the handler */
  int srv_info_rc;
} rig;

static void record(h2t_server_req *r, void *user) {
  rig *g = user;
  size_t n;
  const h2t_header *h = h2t_server_req_headers(r, &n);
  g->ntp = 0;
  g->got_tp[0] = '\0';
  for (size_t i = 0; i < n; i++)
    if (!strcmp(h[i].name, "traceparent")) {
      g->ntp++;
      snprintf(g->got_tp, sizeof g->got_tp, "%s", h[i].value);
    }
  assert_int_equal(h2t_server_req_trace_context(r, &g->srv_ctx), 0);
  g->srv_info_rc = h2t_inflight_get(h2t_server_req_id(r), &g->srv_info);
  h2t_server_req_respond(r, 200, NULL, 0, "ok", 2, 0);
}

static void rig_up(rig *g, int no_traceparent) {
  memset(g, 0, sizeof *g);
  assert_int_equal(h2t_inflight_enable(NULL), 0);
  g->loop = ev_loop_new(EVFLAG_AUTO);
  h2t_server_config sc = {H2T_SERVER_CONFIG_INIT, .loop = g->loop,
                          .writer = H2T_WRITER_INLINE};
  assert_int_equal(h2t_server_new(&g->s, &sc), 0);
  h2t_listen_opts lo = {H2T_LISTEN_OPTS_INIT};
  int idx = h2t_server_listen(g->s, &lo);
  assert_true(idx >= 0);
  assert_int_equal(h2t_server_handle(g->s, "/", record, g), 0);
  snprintf(g->url, sizeof g->url, "http://127.0.0.1:%u/x",
           h2t_server_port(g->s, idx));
  h2t_client_config cc = {H2T_CLIENT_CONFIG_INIT, .loop = g->loop,
                          .no_traceparent = no_traceparent};
  assert_int_equal(h2t_client_new(&g->c, &cc), 0);
}

static void rig_down(rig *g) {
  h2t_client_del(g->c);
  h2t_server_del(g->s);
  ev_loop_destroy(g->loop);
}

/* The client's view of its last request, from its done hook: the getter
 * and the event carry the same ids. */
static h2t_trace_context last_client;
static int last_client_rc, last_event_has;
static void done_hook(const h2t_event *ev, void *user) {
  (void)user;
  last_client_rc = h2t_request_trace_context(ev->req, &last_client);
  last_event_has = ev->trace != NULL;
  if (ev->trace)
    assert_memory_equal(ev->trace, &last_client, sizeof last_client);
}

static void fetch(rig *g, const h2t_trace_context *parent,
                  const h2t_header *hdrs, size_t n) {
  h2t_client_trace tr = {H2T_CLIENT_TRACE_INIT, .done = done_hook};
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = g->url, .trace = &tr,
                        .parent = parent, .headers = hdrs, .nheaders = n};
  h2t_response resp;
  assert_int_equal(h2t_client_fetch(g->c, &o, &resp), 0);
  assert_int_equal(resp.status, 200);
  h2t_response_free(&resp);
}

static void hex(const uint8_t *p, size_t n, char *out) {
  h2t__hex(p, n, out);
  out[2 * n] = '\0';
}

static void test_client_sends_server_parses(void **state) {
  (void)state;
  rig g;
  rig_up(&g, 0);
  fetch(&g, NULL, NULL, 0);
  /* one traceparent, valid, and the server continued that trace */
  assert_int_equal(g.ntp, 1);
  h2t_trace_context sent;
  assert_int_equal(h2t_trace_context_parse(g.got_tp, &sent), 0);
  assert_memory_equal(g.srv_ctx.trace_id, sent.trace_id, 16);
  assert_memory_equal(g.srv_ctx.parent_span_id, sent.span_id, 8);
  assert_memory_not_equal(g.srv_ctx.span_id, sent.span_id, 8);
  assert_int_equal(last_client_rc, 0); /* the client says what it sent */
  assert_true(last_event_has);
  assert_memory_equal(last_client.trace_id, sent.trace_id, 16);
  assert_memory_equal(last_client.span_id, sent.span_id, 8);
  /* and shows it in the in-flight table */
  assert_int_equal(g.srv_info_rc, 0);
  assert_memory_equal(&g.srv_info.trace, &g.srv_ctx, sizeof g.srv_ctx);
  /* the client's finished entry has the ids it sent */
  h2t_inflight_info *arr;
  size_t n;
  assert_int_equal(h2t_inflight_recent(&arr, &n), 0);
  int found = 0;
  for (size_t i = 0; i < n; i++)
    if (arr[i].kind == H2T_INFLIGHT_CLIENT) {
      assert_memory_equal(arr[i].trace.trace_id, sent.trace_id, 16);
      assert_memory_equal(arr[i].trace.span_id, sent.span_id, 8);
      assert_true(h2t__zero_id(arr[i].trace.parent_span_id, 8));
      found = 1;
      break;
    }
  h2t_inflight_info_free(arr);
  assert_true(found);

  /* under a parent: same trace, the parent's span as parent */
  h2t_trace_context parent;
  assert_int_equal(h2t_trace_context_parse(TP, &parent), 0);
  fetch(&g, &parent, NULL, 0);
  assert_int_equal(g.ntp, 1);
  assert_int_equal(h2t_trace_context_parse(g.got_tp, &sent), 0);
  assert_memory_equal(sent.trace_id, parent.trace_id, 16);
  assert_memory_not_equal(sent.span_id, parent.span_id, 8);
  char s1[33];
  hex(parent.trace_id, 16, s1);
  assert_memory_equal(g.got_tp + 3, s1, 32);
  assert_int_equal(h2t_inflight_recent(&arr, &n), 0);
  assert_true(n > 0);
  for (size_t i = 0; i < n; i++)
    if (arr[i].kind == H2T_INFLIGHT_CLIENT) { /* newest first */
      assert_memory_equal(arr[i].trace.parent_span_id, parent.span_id, 8);
      break;
    }
  h2t_inflight_info_free(arr);

  /* the application's own traceparent wins: sent once, as given */
  h2t_header own = {"TraceParent", TP};
  fetch(&g, NULL, &own, 1);
  assert_int_equal(g.ntp, 1);
  assert_string_equal(g.got_tp, TP);
  assert_memory_equal(g.srv_ctx.trace_id, parent.trace_id, 16);
  assert_memory_equal(g.srv_ctx.parent_span_id, parent.span_id, 8);

  /* an invalid one reaching the server is ignored: a new trace, no parent */
  h2t_header badh = {"traceparent",
                     "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"};
  fetch(&g, NULL, &badh, 1);
  assert_int_equal(g.ntp, 1);
  assert_memory_not_equal(g.srv_ctx.trace_id, parent.trace_id, 16);
  assert_false(h2t__zero_id(g.srv_ctx.trace_id, 16));
  assert_true(h2t__zero_id(g.srv_ctx.parent_span_id, 8));
  rig_down(&g);
}

static void test_no_traceparent(void **state) {
  (void)state;
  rig g;
  rig_up(&g, 1);
  fetch(&g, NULL, NULL, 0);
  assert_int_equal(g.ntp, 0); /* nothing sent */
  assert_int_equal(last_client_rc, H2T_ERR_NOT_FOUND);
  assert_false(last_event_has);
  /* the server starts a trace of its own */
  assert_false(h2t__zero_id(g.srv_ctx.trace_id, 16));
  assert_true(h2t__zero_id(g.srv_ctx.parent_span_id, 8));
  h2t_inflight_info *arr;
  size_t n;
  assert_int_equal(h2t_inflight_recent(&arr, &n), 0);
  for (size_t i = 0; i < n; i++)
    if (arr[i].kind == H2T_INFLIGHT_CLIENT) {
      assert_true(h2t__zero_id(arr[i].trace.trace_id, 16)); /* none made */
      break;
    }
  h2t_inflight_info_free(arr);
  rig_down(&g);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_valid),
      cmocka_unit_test(test_parse_invalid_ignored),
      cmocka_unit_test(test_new_ids),
      cmocka_unit_test(test_client_sends_server_parses),
      cmocka_unit_test(test_no_traceparent),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
