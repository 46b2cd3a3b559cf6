/* Client against the scripted HTTP/2 server: GOAWAY and REFUSED_STREAM
 * retries, resets, timeouts, garbage, abrupt closes, stream limits, queue,
 * cancel, streaming bodies, expect-continue, client_del. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <pthread.h>
#include <netinet/in.h>
#include <unistd.h>

#include <ev.h>
#include <h2trace/client.h>
#include "h2/client/client_int.h"
#include "peer.h"
#include "scripted_server.h"

typedef struct rq {
  int done, err, status;
  uint64_t conn_id;
  int reused;
  h2t_conn_reason new_reason;
  int retries;
  h2t_retry_reason retry_reason;
  int resets;
  uint32_t reset_code;
  int reset_by_peer;
  unsigned attempts;
  int flow_blocked;
  uint32_t settings_mcs;
  size_t data_bytes;
  int32_t last_stream_window;
  char body[64];
  size_t body_len;
  char events[1024];
  h2t_request *req;
} rq;

static void gc_record(const h2t_event *ev, void *user);
static void on_ev(const h2t_event *ev, void *user) {
  rq *q = user;
  if (strlen(q->events) + 40 < sizeof q->events &&
      ev->type != H2T_EV_WROTE_HEADER_FIELD) {
    strcat(q->events, h2t_event_name(ev->type));
    strcat(q->events, " ");
  }
  switch (ev->type) {
  case H2T_EV_GOT_CONN:
    gc_record(ev, user);
    q->conn_id = ev->conn_id;
    q->reused = ev->u.got_conn.reused;
    q->new_reason = ev->u.got_conn.new_reason;
    break;
  case H2T_EV_RETRY:
    q->retries++;
    q->retry_reason = ev->u.retry.reason;
    break;
  case H2T_EV_STREAM_RESET:
    q->resets++;
    q->reset_code = ev->u.stream_reset.error_code;
    q->reset_by_peer = ev->u.stream_reset.by_peer;
    break;
  case H2T_EV_DONE:
    q->attempts = ev->u.done.attempts;
    break;
  case H2T_EV_FLOW_BLOCKED:
    q->flow_blocked++;
    break;
  case H2T_EV_SETTINGS:
    q->settings_mcs = ev->u.settings.max_concurrent_streams;
    break;
  case H2T_EV_GOT_DATA:
    q->data_bytes += ev->u.data.bytes;
    q->last_stream_window = ev->u.data.stream_window;
    break;
  default:
    break;
  }
}

static int on_data(h2t_request *r, const uint8_t *d, size_t n, void *user) {
  rq *q = user;
  if (q->body_len + n < sizeof q->body) {
    memcpy(q->body + q->body_len, d, n);
    q->body_len += n;
  }
  return 0;
}

static void on_done(h2t_request *r, int err, void *user) {
  rq *q = user;
  q->done = 1;
  q->err = err;
  q->status = h2t_request_status(r);
  q->req = NULL;
}

static const h2t_client_trace *next_trace;

typedef struct env {
  h2t_scripted_server *srv;
  int port;
  h2t_client *c;
  h2t_client_trace tr[16];
  char url[64]; /* http://127.0.0.1:port/x */
} env;

static void env_start(env *e, const h2t_script *s, h2t_client_config *cfg) {
  memset(e, 0, sizeof *e);
  e->srv = h2t_scripted_server_start(s, &e->port);
  assert_non_null(e->srv);
  snprintf(e->url, sizeof e->url, "http://127.0.0.1:%d/x", e->port);
  h2t_client_config dflt = {H2T_CLIENT_CONFIG_INIT};
  if (!cfg)
    cfg = &dflt;
  cfg->connect_timeout_ms = 5000;
  assert_int_equal(h2t_client_new(&e->c, cfg), 0);
}

static void env_stop(env *e) {
  h2t_client_del(e->c);
  h2t_scripted_server_stop(e->srv);
}

static void submit(env *e, int i, rq *q, const char *method, h2t_request_opts
                   *extra) {
  e->tr[i] = (h2t_client_trace){H2T_CLIENT_TRACE_INIT, .any = on_ev,
                                .user = q, .next = next_trace};
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT};
  if (extra)
    o = *extra;
  o.url = e->url;
  o.method = method;
  o.on_data = on_data;
  o.on_done = on_done;
  o.user = q;
  o.trace = &e->tr[i];
  assert_int_equal(h2t_request_submit(e->c, &o, &q->req), 0);
}

static void test_goaway_retries_on_new_conn(void **state) {
  env e;
  h2t_script s = {.goaway_after = 1};
  env_start(&e, &s, NULL);
  rq q[3];
  memset(q, 0, sizeof q);
  for (int i = 0; i < 3; i++)
    submit(&e, i, &q[i], NULL, NULL);
  h2t_client_run(e.c);
  for (int i = 0; i < 3; i++) {
    assert_true(q[i].done);
    assert_int_equal(q[i].err, 0);
    assert_int_equal(q[i].status, 200);
  }
  assert_int_equal(q[0].retries, 0);
  for (int i = 1; i < 3; i++) {
    assert_int_equal(q[i].retries, 1);
    assert_int_equal(q[i].retry_reason, H2T_RETRY_GOAWAY);
    assert_int_equal(q[i].attempts, 2);
    assert_int_not_equal(q[i].conn_id, q[0].conn_id);
    assert_non_null(strstr(q[i].events, "goaway"));
  }
  /* the retried request that opened the new conn says why */
  assert_true(q[1].new_reason == H2T_CONN_GOAWAY ||
              q[2].new_reason == H2T_CONN_GOAWAY);
  h2t_client_stats st;
  h2t_client_stats_get(e.c, &st);
  assert_int_equal(st.retries, 2);
  assert_int_equal(st.conns_opened, 2);
  env_stop(&e);
}

static void test_goaway_without_budget_fails(void **state) {
  env e;
  h2t_script s = {.goaway_immediately = 1};
  h2t_client_config cfg = {H2T_CLIENT_CONFIG_INIT};
  /* streams above last_stream_id were not processed: their retries are
   * bounded by max_unprocessed_retries, not max_retries */
  cfg.max_retries = 1;
  cfg.max_unprocessed_retries = 2;
  env_start(&e, &s, &cfg);
  rq q = {0};
  submit(&e, 0, &q, NULL, NULL);
  h2t_client_run(e.c);
  assert_int_equal(q.err, H2T_ERR_GOAWAY);
  assert_int_equal(q.retries, 2);
  assert_int_equal(q.attempts, 3);
  assert_int_equal(h2t_scripted_server_conns(e.srv), 3);
  env_stop(&e);
}

static void test_refused_stream_retried(void **state) {
  env e;
  h2t_script s = {.refuse_first = 1};
  env_start(&e, &s, NULL);
  rq q = {0};
  submit(&e, 0, &q, NULL, NULL);
  h2t_client_run(e.c);
  assert_int_equal(q.err, 0);
  assert_int_equal(q.retries, 1);
  assert_int_equal(q.retry_reason, H2T_RETRY_REFUSED_STREAM);
  assert_int_equal(q.reset_code, 7 /* REFUSED_STREAM */);
  assert_int_equal(q.new_reason, H2T_CONN_RETRY);
  assert_string_equal(q.body, "ok 0");
  env_stop(&e);
}

static void test_refused_stream_retried_on_only_conn(void **state) {
  env e;
  h2t_script s = {.refuse_first = 1};
  h2t_client_config cfg = {H2T_CLIENT_CONFIG_INIT};
  cfg.max_conns_per_origin = 1; /* no other conn to go to */
  env_start(&e, &s, &cfg);
  rq q = {0};
  submit(&e, 0, &q, NULL, NULL);
  h2t_client_run(e.c);
  assert_int_equal(q.err, 0);
  assert_int_equal(q.retries, 1);
  assert_int_equal(h2t_scripted_server_conns(e.srv), 1);
  env_stop(&e);
}

static void test_refused_stream_exhausted(void **state) {
  env e;
  h2t_script s = {.refuse_first = 1000};
  h2t_client_config cfg = {H2T_CLIENT_CONFIG_INIT};
  cfg.max_unprocessed_retries = 1;
  env_start(&e, &s, &cfg);
  rq q = {0};
  submit(&e, 0, &q, NULL, NULL);
  h2t_client_run(e.c);
  assert_int_equal(q.err, H2T_ERR_REFUSED_STREAM);
  assert_int_equal(q.attempts, 2);
  env_stop(&e);
}

static void test_stream_reset_by_peer(void **state) {
  env e;
  h2t_script s = {.reset_code = 2 /* INTERNAL_ERROR */};
  env_start(&e, &s, NULL);
  rq q = {0};
  submit(&e, 0, &q, NULL, NULL);
  h2t_client_run(e.c);
  assert_int_equal(q.err, H2T_ERR_STREAM_RESET);
  assert_int_equal(q.reset_code, 2);
  assert_int_equal(q.reset_by_peer, 1);
  assert_int_equal(q.retries, 0);
  env_stop(&e);
}

static void test_request_timeout_resets_stream(void **state) {
  env e;
  h2t_script s = {.delay_ms = 3000};
  env_start(&e, &s, NULL);
  rq q = {0};
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .timeout_ms = 150};
  uint64_t t0 = h2t_now_us();
  submit(&e, 0, &q, NULL, &o);
  h2t_client_run(e.c);
  assert_int_equal(q.err, H2T_ERR_TIMEOUT);
  assert_true(h2t_now_us() - t0 < 2000000);
  assert_int_equal(q.reset_code, 8 /* CANCEL */);
  assert_int_equal(q.reset_by_peer, 0);
  env_stop(&e);
}

static void test_http1_answer_is_not_http2(void **state) {
  env e;
  h2t_script s = {.garbage = 1}; /* "HTTP/1.1 400 Bad Request..." */
  env_start(&e, &s, NULL);
  rq q = {0};
  submit(&e, 0, &q, NULL, NULL);
  h2t_client_run(e.c);
  assert_int_equal(q.err, H2T_ERR_NOT_HTTP2);
  env_stop(&e);
}

static void test_conn_closed_get_retried_post_not(void **state) {
  env e;
  h2t_script s = {.close_conns = 1};
  env_start(&e, &s, NULL);
  rq q = {0};
  submit(&e, 0, &q, NULL, NULL);
  h2t_client_run(e.c);
  assert_int_equal(q.err, 0);
  assert_int_equal(q.retries, 1);
  assert_int_equal(q.retry_reason, H2T_RETRY_CONN_CLOSED);
  assert_int_equal(q.new_reason, H2T_CONN_CLOSED);
  env_stop(&e);

  s.close_conns = 100;
  env_start(&e, &s, NULL);
  rq p = {0};
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .body = "abc", .body_len = 3};
  submit(&e, 0, &p, "POST", &o);
  h2t_client_run(e.c);
  assert_int_equal(p.err, H2T_ERR_CONN_CLOSED);
  assert_int_equal(p.retries, 0);
  env_stop(&e);
}

static void test_max_streams_opens_new_conn_then_queues(void **state) {
  env e;
  h2t_script s = {.max_concurrent_streams = 1, .delay_ms = 100};
  h2t_client_config cfg = {H2T_CLIENT_CONFIG_INIT};
  cfg.max_conns_per_origin = 2;
  cfg.max_queued = 1;
  env_start(&e, &s, &cfg);
  rq first = {0};
  submit(&e, 0, &first, NULL, NULL); /* learns the peer's limit */
  h2t_client_run(e.c);
  assert_int_equal(first.err, 0);
  rq q[3];
  memset(q, 0, sizeof q);
  submit(&e, 1, &q[0], NULL, NULL);
  submit(&e, 2, &q[1], NULL, NULL);
  submit(&e, 3, &q[2], NULL, NULL); /* no conn left: queued */
  /* the queue holds one */
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = e.url};
  assert_int_equal(h2t_request_submit(e.c, &o, NULL), H2T_ERR_LIMIT);
  h2t_client_stats st;
  h2t_client_stats_get(e.c, &st);
  assert_int_equal(st.requests_queued, 1);
  h2t_client_run(e.c);
  for (int i = 0; i < 3; i++)
    assert_int_equal(q[i].err, 0);
  assert_int_equal(q[0].conn_id, first.conn_id);
  assert_int_equal(q[0].reused, 1);
  assert_int_not_equal(q[1].conn_id, first.conn_id);
  assert_int_equal(q[1].new_reason, H2T_CONN_MAX_STREAMS);
  h2t_client_stats_get(e.c, &st);
  assert_int_equal(st.conns_opened, 2);
  assert_int_equal(st.new_conn_reason[H2T_CONN_MAX_STREAMS], 1);
  env_stop(&e);
}

static void cancel_in_hook(const h2t_event *ev, void *user) {
  if (ev->type == H2T_EV_WROTE_REQUEST)
    assert_int_equal(h2t_request_cancel(ev->req), 0);
}

static void test_cancel_resets_and_completes(void **state) {
  env e;
  h2t_script s = {.delay_ms = 3000};
  env_start(&e, &s, NULL);
  rq q = {0};
  h2t_client_trace canceller = {H2T_CLIENT_TRACE_INIT,
                                .wrote_request = cancel_in_hook};
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT};
  next_trace = &canceller; /* not copied: reached through `next` */
  submit(&e, 0, &q, NULL, &o);
  next_trace = NULL;
  h2t_client_run(e.c);
  assert_int_equal(q.err, H2T_ERR_CANCELED);
  assert_int_equal(q.reset_code, 8);
  assert_non_null(strstr(q.events, "stream_reset put_idle_conn done"));

  /* a direct cancel: on_done runs before h2t_request_cancel returns */
  rq p = {0};
  submit(&e, 1, &p, NULL, NULL);
  h2t_request *r = p.req;
  assert_int_equal(h2t_request_cancel(r), 0);
  assert_true(p.done);
  assert_int_equal(p.err, H2T_ERR_CANCELED);
  assert_int_equal(h2t_client_pending(e.c), 0);
  env_stop(&e);
}

typedef struct body_src {
  int chunks, deferred;
  int pause_with_zero; /* pause by returning 0 without eof */
  int paused;          /* until the resume timer fires */
  int calls_while_paused;
  ev_timer resume;
  h2t_request *req;
} body_src;

static body_src *cur_body;

static ssize_t read_body(h2t_request *r, uint8_t *buf, size_t len, int *eof,
                         void *user) {
  body_src *b = cur_body;
  if (!b->deferred) {
    b->deferred = 1;
    b->paused = 1;
    b->req = r;
  }
  if (b->paused) {
    b->calls_while_paused++;
    return b->pause_with_zero ? 0 : H2T_BODY_DEFER;
  }
  memset(buf, 'x', 1000);
  if (++b->chunks == 5)
    *eof = 1;
  return 1000;
}

static void resume_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  body_src *b = w->data;
  b->paused = 0;
  assert_int_equal(h2t_request_resume(b->req), 0);
}

static void run_streaming_body(int pause_with_zero) {
  env e;
  h2t_script s = {0};
  env_start(&e, &s, NULL);
  body_src b = {.pause_with_zero = pause_with_zero};
  rq q = {0};
  cur_body = &b;
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .body_read = read_body,
                        .body_length = 5000};
  submit(&e, 0, &q, "PUT", &o);
  ev_timer_init(&b.resume, resume_cb, 0.05, 0.);
  b.resume.data = &b;
  ev_timer_start(h2t_client_loop(e.c), &b.resume);
  h2t_client_run(e.c);
  assert_int_equal(q.err, 0);
  assert_int_equal(b.chunks, 5);
  assert_int_equal(b.calls_while_paused, 1); /* paused, not polled */
  q.body[q.body_len] = '\0';
  assert_string_equal(q.body, "ok 5000");
  env_stop(&e);
}

static void test_streaming_body_with_defer(void **state) {
  run_streaming_body(0);
}

/* A source with nothing yet may also return 0 without eof: that pauses it
 * like H2T_BODY_DEFER instead of spinning the loop. */
static void test_streaming_body_zero_pauses(void **state) {
  run_streaming_body(1);
}

static ssize_t failing_body(h2t_request *r, uint8_t *buf, size_t len,
                            int *eof, void *user) {
  return H2T_ERR_IO;
}

static void test_failing_body_source_resets_stream(void **state) {
  env e;
  h2t_script s = {.delay_ms = 500};
  env_start(&e, &s, NULL);
  rq q = {0};
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .body_read = failing_body,
                        .body_length = -1};
  submit(&e, 0, &q, "POST", &o);
  h2t_client_run(e.c);
  assert_int_equal(q.err, H2T_ERR_IO);
  assert_int_equal(q.resets, 1);
  assert_int_equal(q.reset_by_peer, 0);
  assert_int_equal(q.reset_code, 2 /* INTERNAL_ERROR */);
  env_stop(&e);
}

static void test_expect_continue(void **state) {
  h2t_header hdr[] = {{"expect", "100-continue"}};
  /* with a 100 from the server */
  env e;
  h2t_script s = {.send_100 = 1};
  env_start(&e, &s, NULL);
  rq q = {0};
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .body = "abcd", .body_len = 4,
                        .headers = hdr, .nheaders = 1};
  submit(&e, 0, &q, "POST", &o);
  h2t_client_run(e.c);
  assert_int_equal(q.err, 0);
  assert_string_equal(q.body, "ok 4");
  assert_non_null(strstr(q.events, "wrote_headers wait_100_continue "));
  /* the body goes only after the 100 */
  assert_non_null(strstr(q.events, "got_first_response_byte "
                                   "got_100_continue got_1xx_response "
                                   "wrote_request got_headers"));
  env_stop(&e);

  /* without: the body goes after expect_continue_timeout_ms */
  s.send_100 = 0;
  h2t_client_config cfg = {H2T_CLIENT_CONFIG_INIT};
  cfg.expect_continue_timeout_ms = 100;
  env_start(&e, &s, &cfg);
  rq p = {0};
  uint64_t t0 = h2t_now_us();
  submit(&e, 0, &p, "POST", &o);
  h2t_client_run(e.c);
  assert_int_equal(p.err, 0);
  assert_string_equal(p.body, "ok 4");
  assert_true(h2t_now_us() - t0 >= 90000);
  assert_null(strstr(p.events, "got_100_continue"));
  env_stop(&e);
}

static void test_client_del_cancels_pending(void **state) {
  env e;
  h2t_script s = {.delay_ms = 3000};
  env_start(&e, &s, NULL);
  rq q[3];
  memset(q, 0, sizeof q);
  for (int i = 0; i < 3; i++)
    submit(&e, i, &q[i], NULL, NULL);
  ev_run(h2t_client_loop(e.c), EVRUN_NOWAIT);
  ev_run(h2t_client_loop(e.c), EVRUN_NOWAIT);
  h2t_client_del(e.c);
  for (int i = 0; i < 3; i++) {
    assert_true(q[i].done);
    assert_int_equal(q[i].err, H2T_ERR_CANCELED);
  }
  /* the conn said goodbye with a GOAWAY */
  for (int i = 0; i < 100 && !h2t_scripted_server_goaways(e.srv); i++)
    usleep(10000);
  assert_int_equal(h2t_scripted_server_goaways(e.srv), 1);
  h2t_scripted_server_stop(e.srv);
}

static void test_connect_refused_and_dns_failure(void **state) {
  h2t_client *c;
  h2t_client_config cfg = {H2T_CLIENT_CONFIG_INIT};
  assert_int_equal(h2t_client_new(&c, &cfg), 0);
  int port = h2t_test_free_port(); /* nothing listens there */
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/", port);
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = url};
  h2t_response resp;
  assert_int_equal(h2t_client_fetch(c, &o, &resp), H2T_ERR_CONNECT_REFUSED);
  /* RFC 6761: .invalid never resolves, and is never sent to a server */
  o.url = "http://no-such-host.invalid/";
  assert_int_equal(h2t_client_fetch(c, &o, &resp), H2T_ERR_DNS);
  h2t_client_del(c);
}

static void test_connect_timeout(void **state) {
  /* a listening socket whose backlog is full never completes a connect */
  h2t_client *c;
  h2t_client_config cfg = {H2T_CLIENT_CONFIG_INIT};
  cfg.connect_timeout_ms = 200;
  assert_int_equal(h2t_client_new(&c, &cfg), 0);
  /* 10.255.255.1 etc. would leave the machine: use a full backlog instead */
  int lfd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET};
  sa.sin_addr.s_addr = htonl(0x7f000001);
  socklen_t len = sizeof sa;
  assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof sa), 0);
  assert_int_equal(listen(lfd, 0), 0);
  getsockname(lfd, (struct sockaddr *)&sa, &len);
  int fill[4];
  for (int i = 0; i < 4; i++) { /* fill the accept queue */
    fill[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
    connect(fill[i], (struct sockaddr *)&sa, sizeof sa);
  }
  char url[128];
  snprintf(url, sizeof url, "http://127.0.0.1:%d/", ntohs(sa.sin_port));
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = url};
  h2t_response resp;
  int rv = h2t_client_fetch(c, &o, &resp);
  /* either the SYN is dropped (timeout) or, if the kernel accepted it into
   * the queue, no SETTINGS ever come and no response: also bounded */
  assert_true(rv == H2T_ERR_CONNECT_TIMEOUT);
  for (int i = 0; i < 4; i++)
    close(fill[i]);
  close(lfd);
  h2t_client_del(c);
}

static void stop_loop(struct ev_loop *loop, ev_timer *w, int revents) {
  ev_break(loop, EVBREAK_ONE);
}

/* Run the client's loop for ms milliseconds. */
static void run_for(h2t_client *c, int ms) {
  ev_timer t;
  ev_timer_init(&t, stop_loop, ms / 1000., 0.);
  ev_timer_start(h2t_client_loop(c), &t);
  ev_run(h2t_client_loop(c), 0);
  ev_timer_stop(h2t_client_loop(c), &t);
}

static void test_idle_timeout_closes_conn(void **state) {
  env e;
  h2t_script s = {0};
  h2t_client_config cfg = {H2T_CLIENT_CONFIG_INIT};
  cfg.idle_timeout_ms = 100;
  env_start(&e, &s, &cfg);
  rq a = {0}, b = {0};
  submit(&e, 0, &a, NULL, NULL);
  h2t_client_run(e.c);
  assert_int_equal(a.err, 0);
  h2t_client_stats st;
  h2t_client_stats_get(e.c, &st);
  assert_int_equal(st.conns_open, 1);
  run_for(e.c, 300);
  h2t_client_stats_get(e.c, &st);
  assert_int_equal(st.conns_open, 0);
  submit(&e, 1, &b, NULL, NULL);
  h2t_client_run(e.c);
  assert_int_equal(b.err, 0);
  assert_int_equal(b.reused, 0);
  assert_int_equal(b.new_reason, H2T_CONN_IDLE_TIMEOUT);
  env_stop(&e);
}

static void test_dead_idle_conn_never_handed_out(void **state) {
  env e;
  h2t_script s = {.close_after_response = 1};
  env_start(&e, &s, NULL);
  rq a = {0}, b = {0};
  submit(&e, 0, &a, NULL, NULL);
  h2t_client_run(e.c);
  assert_int_equal(a.err, 0);
  run_for(e.c, 100); /* the EOF is seen on the idle conn */
  h2t_client_stats st;
  h2t_client_stats_get(e.c, &st);
  assert_int_equal(st.conns_open, 0);
  submit(&e, 1, &b, NULL, NULL);
  h2t_client_run(e.c);
  assert_int_equal(b.err, 0);
  assert_int_equal(b.retries, 0);
  assert_int_equal(b.new_reason, H2T_CONN_CLOSED);
  assert_int_not_equal(b.conn_id, a.conn_id);
  env_stop(&e);
}

typedef struct xcancel {
  h2t_client *c;
  uint64_t id;
} xcancel;

static void *cancel_thread(void *arg) {
  xcancel *x = arg;
  h2t__postq_id(&x->c->cancels, x->id);
  return NULL;
}

static void test_cancel_from_another_thread(void **state) {
  env e;
  h2t_script s = {.delay_ms = 3000};
  env_start(&e, &s, NULL);
  rq q = {0};
  submit(&e, 0, &q, NULL, NULL);
  xcancel x = {e.c, h2t_request_id(q.req)};
  pthread_t th;
  pthread_create(&th, NULL, cancel_thread, &x);
  pthread_join(th, NULL);
  h2t_client_run(e.c);
  assert_int_equal(q.err, H2T_ERR_CANCELED);
  /* an id that is gone is ignored */
  h2t__postq_id(&e.c->cancels, x.id);
  run_for(e.c, 20);
  env_stop(&e);
}

static void test_flow_blocked_on_big_upload(void **state) {
  env e;
  h2t_script s = {0};
  env_start(&e, &s, NULL);
  static uint8_t big[300000];
  memset(big, 'b', sizeof big);
  rq q = {0};
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .body = big,
                        .body_len = sizeof big};
  submit(&e, 0, &q, "POST", &o);
  h2t_client_run(e.c);
  assert_int_equal(q.err, 0);
  assert_string_equal(q.body, "ok 300000");
  /* the peer's 65535-byte windows stop the body at least once */
  assert_true(q.flow_blocked >= 1);
  /* no MAX_CONCURRENT_STREAMS in the peer's SETTINGS: unlimited */
  assert_int_equal(q.settings_mcs, UINT32_MAX);
  assert_int_equal(q.data_bytes, 9);
  assert_true(q.last_stream_window > 0);
  env_stop(&e);
}


static int gc_n, gc_known[8];
static uint32_t gc_max[8];
static uint64_t gc_idle[8];
static void gc_record(const h2t_event *ev, void *user) {
  if (gc_n < 8) {
    gc_idle[gc_n] = ev->u.got_conn.idle_us;
    gc_known[gc_n] = ev->u.got_conn.max_streams_known;
    gc_max[gc_n++] = ev->u.got_conn.max_streams;
  }
}

/* A flow_blocked hook that cancels its own request, on the inline path (a
 * trace with that one hook): the walk over the connection's streams must not
 * read the freed request (ASan found it; release builds recycle requests). */
static int fb_done, fb_err;
static void fb_cancel(const h2t_event *ev, void *user) {
  assert_int_equal(h2t_request_cancel(ev->req), 0);
}
static void fb_on_done(h2t_request *r, int err, void *user) {
  fb_done++;
  fb_err = err;
}

static void test_cancel_from_inline_flow_blocked(void **state) {
  env e;
  h2t_script s = {.delay_ms = 200};
  env_start(&e, &s, NULL);
  static uint8_t big[300000];
  memset(big, 'b', sizeof big);
  h2t_client_trace tr = {H2T_CLIENT_TRACE_INIT, .flow_blocked = fb_cancel};
  fb_done = 0;
  /* several uploads on one conn, so the walk has a next to go on with */
  for (int i = 0; i < 3; i++) {
    h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = e.url, .body = big,
                          .body_len = sizeof big, .on_done = fb_on_done,
                          .trace = &tr};
    assert_int_equal(h2t_request_submit(e.c, &o, NULL), 0);
  }
  h2t_client_run(e.c);
  assert_int_equal(fb_done, 3);
  assert_int_equal(fb_err, H2T_ERR_CANCELED);
  env_stop(&e);
}

/* got_conn before the peer's SETTINGS: the limit is not known yet, and is
 * not made up; once they came, the peer's own value. */
static void test_got_conn_max_streams_unknown_until_settings(void **state) {
  env e;
  h2t_script s = {.max_concurrent_streams = 7};
  env_start(&e, &s, NULL);
  rq q = {0};
  gc_n = 0;
  submit(&e, 0, &q, NULL, NULL);
  h2t_client_run(e.c);
  assert_int_equal(q.err, 0);
  rq p = {0};
  submit(&e, 1, &p, NULL, NULL);
  h2t_client_run(e.c);
  assert_int_equal(p.err, 0);
  assert_int_equal(p.reused, 1);
  assert_int_equal(gc_n, 2);
  assert_int_equal(gc_known[0], 0);
  assert_int_equal(gc_max[0], 0);
  assert_int_equal(gc_known[1], 1);
  assert_int_equal(gc_max[1], 7);
  /* idle since the first request ended: well under a second here */
  assert_true(gc_idle[1] > 0 && gc_idle[1] < 1000000);
  env_stop(&e);
}

static void test_cancel_while_connecting_and_queued(void **state) {
  env e;
  h2t_script s = {.max_concurrent_streams = 1, .delay_ms = 50};
  h2t_client_config cfg = {H2T_CLIENT_CONFIG_INIT};
  cfg.max_conns_per_origin = 1;
  env_start(&e, &s, &cfg);
  rq a = {0};
  submit(&e, 0, &a, NULL, NULL); /* waits for the conn it opened */
  assert_int_equal(h2t_request_cancel(a.req), 0);
  assert_int_equal(a.err, H2T_ERR_CANCELED);
  assert_null(strstr(a.events, "dns_start")); /* setup runs from the loop */
  run_for(e.c, 100); /* the conn comes up anyway, idle */
  rq b = {0}, q = {0};
  submit(&e, 1, &b, NULL, NULL);
  submit(&e, 2, &q, NULL, NULL); /* the one conn is full: queued */
  h2t_client_stats st;
  h2t_client_stats_get(e.c, &st);
  assert_int_equal(st.requests_queued, 1);
  assert_int_equal(h2t_request_cancel(q.req), 0);
  assert_int_equal(q.err, H2T_ERR_CANCELED);
  h2t_client_stats_get(e.c, &st);
  assert_int_equal(st.requests_queued, 0);
  h2t_client_run(e.c);
  assert_int_equal(b.err, 0);
  assert_int_equal(b.reused, 0); /* the conn never served anyone before */
  /* on_done cleared the handle: a NULL handle is INVALID_ARG, not STATE */
  assert_int_equal(h2t_request_cancel(b.req), H2T_ERR_INVALID_ARG);
  env_stop(&e);
}

static h2t_event_type chaos_type;
static int chaos_fired, chaos_dones;

static void chaos_hook(const h2t_event *ev, void *user) {
  if (ev->type == chaos_type && !chaos_fired) {
    chaos_fired = 1;
    int rv = h2t_request_cancel(ev->req);
    /* in `done` the request is already completing */
    assert_int_equal(rv, ev->type == H2T_EV_DONE ? H2T_ERR_STATE : 0);
  }
}

static void chaos_done(h2t_request *r, int err, void *user) {
  int *e = user;
  *e = err;
  chaos_dones++;
}

/* A hook may cancel its request from any event: it completes exactly once,
 * nothing is used after free (ASan), and the client carries on. */
static void test_cancel_from_every_hook(void **state) {
  env e;
  h2t_script s = {.send_100 = 1};
  env_start(&e, &s, NULL);
  h2t_header hdr[] = {{"expect", "100-continue"}};
  h2t_client_trace tr = {H2T_CLIENT_TRACE_INIT, .any = chaos_hook};
  for (int t = 0; t < H2T_EV_FIRST_SERVER_; t++) {
    chaos_type = (h2t_event_type)t;
    chaos_fired = chaos_dones = 0;
    int err = 1;
    h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = e.url,
                          .method = "POST", .body = "abc", .body_len = 3,
                          .headers = hdr, .nheaders = 1, .trace = &tr,
                          .on_done = chaos_done, .user = &err};
    assert_int_equal(h2t_request_submit(e.c, &o, NULL), 0);
    h2t_client_run(e.c);
    assert_int_equal(chaos_dones, 1);
    if (chaos_fired && t != H2T_EV_DONE)
      assert_int_equal(err, H2T_ERR_CANCELED);
    else
      assert_int_equal(err, 0);
  }
  /* and a normal request still works on what is left */
  rq q = {0};
  submit(&e, 0, &q, NULL, NULL);
  h2t_client_run(e.c);
  assert_int_equal(q.err, 0);
  env_stop(&e);
}


/* h2t_client_fetch leaves `user` to the application: a hook finds it with
 * h2t_request_user(), as for any request. */
static void *fetch_seen_user;
static void fetch_user_hook(const h2t_event *ev, void *user) {
  fetch_seen_user = h2t_request_user(ev->req);
}

static void test_fetch_keeps_user(void **state) {
  env e;
  h2t_script s = {0};
  env_start(&e, &s, NULL);
  int marker = 42;
  h2t_client_trace tr = {H2T_CLIENT_TRACE_INIT, .got_conn = fetch_user_hook};
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = e.url, .trace = &tr,
                        .user = &marker};
  h2t_response resp;
  fetch_seen_user = NULL;
  assert_int_equal(h2t_client_fetch(e.c, &o, &resp), 0);
  assert_ptr_equal(fetch_seen_user, &marker);
  assert_string_equal((const char *)resp.body, "ok 0");
  h2t_response_free(&resp);
  env_stop(&e);
}

/* The client's traceparent: the first on a connection is indexed (so that
 * later ones send the name's table index), every later one is a "never
 * indexed" literal, since its value never repeats. */
static void test_traceparent_indexing(void **state) {
  env e;
  h2t_script s = {0};
  env_start(&e, &s, NULL);
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = e.url};
  for (int i = 0; i < 3; i++) {
    h2t_response resp;
    assert_int_equal(h2t_client_fetch(e.c, &o, &resp), 0);
    assert_int_equal(resp.status, 200);
    h2t_response_free(&resp);
  }
  int never;
  assert_int_equal(h2t_scripted_server_traceparents(e.srv, &never), 3);
  assert_int_equal(never, 2);
  assert_int_equal(h2t_scripted_server_conns(e.srv), 1);
  env_stop(&e);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_goaway_retries_on_new_conn),
      cmocka_unit_test(test_goaway_without_budget_fails),
      cmocka_unit_test(test_refused_stream_retried),
      cmocka_unit_test(test_refused_stream_retried_on_only_conn),
      cmocka_unit_test(test_refused_stream_exhausted),
      cmocka_unit_test(test_stream_reset_by_peer),
      cmocka_unit_test(test_request_timeout_resets_stream),
      cmocka_unit_test(test_http1_answer_is_not_http2),
      cmocka_unit_test(test_conn_closed_get_retried_post_not),
      cmocka_unit_test(test_max_streams_opens_new_conn_then_queues),
      cmocka_unit_test(test_cancel_resets_and_completes),
      cmocka_unit_test(test_streaming_body_with_defer),
      cmocka_unit_test(test_streaming_body_zero_pauses),
      cmocka_unit_test(test_expect_continue),
      cmocka_unit_test(test_failing_body_source_resets_stream),
      cmocka_unit_test(test_client_del_cancels_pending),
      cmocka_unit_test(test_connect_refused_and_dns_failure),
      cmocka_unit_test(test_connect_timeout),
      cmocka_unit_test(test_idle_timeout_closes_conn),
      cmocka_unit_test(test_dead_idle_conn_never_handed_out),
      cmocka_unit_test(test_cancel_from_another_thread),
      cmocka_unit_test(test_flow_blocked_on_big_upload),
      cmocka_unit_test(test_cancel_while_connecting_and_queued),
      cmocka_unit_test(test_cancel_from_every_hook),
      cmocka_unit_test(test_cancel_from_inline_flow_blocked),
      cmocka_unit_test(test_fetch_keeps_user),
      cmocka_unit_test(test_traceparent_indexing),
      cmocka_unit_test(test_got_conn_max_streams_unknown_until_settings),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
