/* The client against misbehaving HTTP/2 servers (issue 7, item 5).
 *
 * Each case starts tests/peers/h2peer.py in one --mode, drives the client
 * through the public API only, and asserts the outcome the client's rules
 * promise (client.h): which error, how many attempts, what the application
 * received, what the peer saw.  In every case on_done runs exactly once per
 * request and nothing hangs: the loop runs under a deadline (a request still
 * pending then is an assertion failure), and an alarm() ends the process if
 * even that does not return.  Each case stops the peers it started, by PID. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <signal.h>
#include <unistd.h>

#include <ev.h>
#include <h2trace/client.h>
#include "peer.h"

#define PEER_SCRIPT H2T_SOURCE_DIR "/tests/peers/h2peer.py"
#define CASE_ALARM_S 25 /* last resort: no case may take this long */

/* --- what one request saw ----------------------------------------------- */

typedef struct rq {
  int ndone, ndone_late; /* on_done calls before / during teardown */
  int err, status;
  int got_conns;
  uint64_t conn_id;
  int reused;
  h2t_conn_reason new_reason;
  int max_streams_known;
  uint32_t max_streams;
  int32_t first_sid;
  int retries;
  h2t_retry_reason retry_reason;
  int done_events;
  unsigned attempts;
  uint32_t reset_code;
  int flow_blocked;
  int local_goaways;
  uint32_t local_goaway_code;
  char body[512];
  size_t body_len;
  uint64_t t_submit, t_done;
} rq;

/* Connection events reach the client's default trace even when no request
 * is attached to them. */
typedef struct connrec {
  int local_goaways;
  uint32_t local_goaway_code;
} connrec;

static int in_teardown;

static void on_req_ev(const h2t_event *ev, void *user) {
  rq *q = user;
  switch (ev->type) {
  case H2T_EV_GOT_CONN:
    q->got_conns++;
    q->conn_id = ev->conn_id;
    q->reused = ev->u.got_conn.reused;
    q->new_reason = ev->u.got_conn.new_reason;
    q->max_streams_known = ev->u.got_conn.max_streams_known;
    q->max_streams = ev->u.got_conn.max_streams;
    break;
  case H2T_EV_STREAM_OPENED:
    if (!q->first_sid)
      q->first_sid = ev->stream_id;
    break;
  case H2T_EV_RETRY:
    q->retries++;
    q->retry_reason = ev->u.retry.reason;
    break;
  case H2T_EV_FLOW_BLOCKED:
    q->flow_blocked++;
    break;
  case H2T_EV_GOAWAY:
    if (!ev->u.goaway.by_peer) {
      q->local_goaways++;
      q->local_goaway_code = ev->u.goaway.error_code;
    }
    break;
  case H2T_EV_DONE:
    q->done_events++;
    q->attempts = ev->u.done.attempts;
    q->reset_code = ev->u.done.reset_code;
    break;
  default:
    break;
  }
}

static void on_conn_ev(const h2t_event *ev, void *user) {
  connrec *r = user;
  if (ev->type == H2T_EV_GOAWAY && !ev->u.goaway.by_peer) {
    r->local_goaways++;
    r->local_goaway_code = ev->u.goaway.error_code;
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
  if (in_teardown) {
    q->ndone_late++;
    return;
  }
  q->ndone++;
  q->err = err;
  q->status = h2t_request_status(r);
  q->t_done = h2t_now_us();
}

/* --- one case's peer and client ----------------------------------------- */

typedef struct fx {
  pid_t peer;
  int port;
  char log[512];
  h2t_client *c;
  connrec conn;
  h2t_client_trace ctr; /* the client's default trace: must outlive it */
  int hung;             /* a request was still pending at the deadline */
} fx;

static pid_t live_peer; /* for the alarm handler */

static void on_alarm(int sig) {
  static const char msg[] = "test_fault_matrix: case hung, giving up\n";
  if (live_peer > 0)
    kill(live_peer, SIGKILL);
  if (write(2, msg, sizeof msg - 1) < 0) {
    /* nothing more to do */
  }
  _exit(3);
}

/* Start the peer: mode, then extra "--opt", "value" pairs, NULL-ended. */
static void peer_start(fx *f, const char *mode, ...) {
  static int seq;
  char *argv[24];
  int n = 0;
  argv[n++] = "/usr/bin/python3";
  argv[n++] = PEER_SCRIPT;
  argv[n++] = "--mode";
  argv[n++] = (char *)mode;
  va_list ap;
  va_start(ap, mode);
  for (const char *a; n < 22 && (a = va_arg(ap, const char *));)
    argv[n++] = (char *)a;
  va_end(ap);
  argv[n] = NULL;
  snprintf(f->log, sizeof f->log, "%s/peer-%d-%s.log", h2t_test_tmpdir(),
           ++seq, mode);
  f->peer = h2t_test_spawn_port(argv, f->log, 5000, &f->port);
  if (f->peer < 0)
    fail_msg("could not start %s --mode %s", PEER_SCRIPT, mode);
  live_peer = f->peer;
}

static void client_start(fx *f, h2t_client_config *cfg) {
  h2t_client_config dflt = {H2T_CLIENT_CONFIG_INIT};
  if (!cfg)
    cfg = &dflt;
  f->ctr = (h2t_client_trace){H2T_CLIENT_TRACE_INIT, .any = on_conn_ev,
                              .user = &f->conn};
  cfg->trace = &f->ctr;
  if (!cfg->connect_timeout_ms)
    cfg->connect_timeout_ms = 5000;
  assert_int_equal(h2t_client_new(&f->c, cfg), 0);
  alarm(CASE_ALARM_S);
}

static void fx_start(fx *f, h2t_client_config *cfg, const char *mode, ...) {
  memset(f, 0, sizeof *f);
  if (mode) {
    /* at most 3 option pairs are passed on */
    va_list ap;
    const char *a[7] = {0};
    va_start(ap, mode);
    for (int i = 0; i < 6 && (a[i] = va_arg(ap, const char *)); i++)
      ;
    va_end(ap);
    peer_start(f, mode, a[0], a[1], a[2], a[3], a[4], a[5], NULL);
  }
  client_start(f, cfg);
}

static void submit_url(fx *f, rq *q, const char *url, const char *method,
                       const void *body, size_t body_len, uint32_t timeout) {
  h2t_client_trace tr = {H2T_CLIENT_TRACE_INIT, .any = on_req_ev, .user = q};
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = url, .method = method,
                        .body = body, .body_len = body_len,
                        .on_data = on_data, .on_done = on_done, .user = q,
                        .trace = &tr, .timeout_ms = timeout};
  q->t_submit = h2t_now_us();
  assert_int_equal(h2t_request_submit(f->c, &o, NULL), 0);
}

static void submit(fx *f, rq *q, const char *path, const char *method,
                   const void *body, size_t body_len, uint32_t timeout) {
  char url[256];
  snprintf(url, sizeof url, "http://127.0.0.1:%d%s", f->port, path);
  submit_url(f, q, url, method, body, body_len, timeout);
}

static void get(fx *f, rq *q, const char *path) {
  submit(f, q, path, NULL, NULL, 0, 0);
}

static void wake(struct ev_loop *loop, ev_timer *w, int revents) {}

/* Run the loop until no request is pending or ms have passed; f->hung says
 * which. */
static void run(fx *f, int ms) {
  struct ev_loop *loop = h2t_client_loop(f->c);
  ev_timer w;
  ev_now_update(loop);
  ev_timer_init(&w, wake, ms / 1000., 0.);
  ev_timer_start(loop, &w);
  uint64_t end = h2t_now_us() + (uint64_t)ms * 1000;
  while (h2t_client_pending(f->c) && h2t_now_us() < end)
    ev_run(loop, EVRUN_ONCE);
  ev_timer_stop(loop, &w);
  f->hung = h2t_client_pending(f->c) > 0;
}

/* Run the loop for ms whatever is pending (connections stay open). */
static void run_loop_for(fx *f, int ms) {
  struct ev_loop *loop = h2t_client_loop(f->c);
  ev_timer w;
  ev_now_update(loop);
  ev_timer_init(&w, wake, ms / 1000., 0.);
  ev_timer_start(loop, &w);
  uint64_t end = h2t_now_us() + (uint64_t)ms * 1000;
  while (h2t_now_us() < end)
    ev_run(loop, EVRUN_ONCE);
  ev_timer_stop(loop, &w);
}

/* Free the client (late on_done calls are counted apart) and stop the
 * peer.  Done before the assertions, so a failing case leaks nothing. */
static void fx_stop_client(fx *f) {
  in_teardown = 1;
  h2t_client_del(f->c);
  in_teardown = 0;
  f->c = NULL;
}

static void fx_stop_peer(fx *f) {
  if (f->peer > 0)
    h2t_test_stop(f->peer);
  live_peer = 0;
  if (f->peer > 0 && getenv("H2T_PEER_LOGS")) { /* for whoever debugs */
    FILE *fp = fopen(f->log, "r");
    char line[512];
    fprintf(stderr, "--- %s\n", f->log);
    while (fp && fgets(line, sizeof line, fp))
      fputs(line, stderr);
    if (fp)
      fclose(fp);
  }
  alarm(0);
}

static void fx_stop(fx *f) {
  fx_stop_client(f);
  fx_stop_peer(f);
}

/* Lines of the peer's log containing needle (waiting up to ms for at least
 * `want` of them). */
static int peer_saw(fx *f, const char *needle, int want, int ms) {
  int n = 0;
  for (int waited = 0;; waited += 20) {
    FILE *fp = fopen(f->log, "r");
    char line[512];
    n = 0;
    while (fp && fgets(line, sizeof line, fp))
      if (strstr(line, needle))
        n++;
    if (fp)
      fclose(fp);
    if (n >= want || waited >= ms)
      return n;
    usleep(20000);
  }
}

/* --- assertions that name things ---------------------------------------- */

#define assert_not_hung(f, what)                                               \
  do {                                                                         \
    if ((f)->hung)                                                             \
      fail_msg("%s: still pending at the deadline (hang)", what);              \
  } while (0)

static void check_done_once(const rq *q, const char *what) {
  if (q->ndone != 1 || q->ndone_late != 0)
    fail_msg("%s: on_done ran %d times (+%d at client_del), want once", what,
             q->ndone, q->ndone_late);
}

static void check_err(const rq *q, int want, const char *what) {
  if (q->err != want)
    fail_msg("%s: error %s (%s), want %s; attempts %u, retries %d, "
             "reset_code %u, status %d", what, h2t_errname(q->err),
             h2t_strerror(q->err), h2t_errname(want), q->attempts, q->retries,
             q->reset_code, q->status);
}

static void check_body(const rq *q, const char *want, const char *what) {
  if (q->body_len != strlen(want) || memcmp(q->body, want, q->body_len))
    fail_msg("%s: the application received \"%.*s\", want \"%s\"", what,
             (int)q->body_len, q->body, want);
}

static void check_attempts(const rq *q, unsigned want, const char *what) {
  if (q->attempts != want || q->done_events != 1)
    fail_msg("%s: done.attempts %u (in %d done events), want %u; "
             "retries seen %d", what, q->attempts, q->done_events, want,
             q->retries);
}

static double secs(const rq *q) { return (q->t_done - q->t_submit) / 1e6; }

/* --- the cases ------------------------------------------------------------ */

/* 1. Headers and part of the body, then the TCP connection closes. */
static void test_killed_mid_body(void **state) {
  fx f;
  rq q = {0};
  fx_start(&f, NULL, "midbody", NULL);
  get(&f, &q, "/x");
  run(&f, 5000);
  fx_stop(&f);
  assert_not_hung(&f, "GET");
  check_done_once(&q, "GET");
  check_err(&q, H2T_ERR_CONN_CLOSED, "GET");
  check_attempts(&q, 1, "GET");
  assert_int_equal(q.retries, 0);
  assert_int_equal(q.status, 200);
  check_body(&q, "partial", "GET");
}

/* 2. The peer reads the request and closes before any response byte: a GET
 * is replayed on a new connection, a POST with a body is not. */
static void test_killed_before_response(void **state) {
  fx f;
  rq q = {0};
  fx_start(&f, NULL, "close_before_response", "--count", "1", NULL);
  get(&f, &q, "/x");
  run(&f, 5000);
  int conns = peer_saw(&f, "conn conn=", 2, 500);
  fx_stop(&f);
  assert_not_hung(&f, "GET");
  check_done_once(&q, "GET");
  check_err(&q, 0, "GET");
  assert_int_equal(q.retries, 1);
  assert_int_equal(q.retry_reason, H2T_RETRY_CONN_CLOSED);
  check_attempts(&q, 2, "GET");
  check_body(&q, "ok 0", "GET");
  assert_int_equal(conns, 2);

  rq p = {0};
  fx_start(&f, NULL, "close_before_response", "--count", "100", NULL);
  submit(&f, &p, "/x", "POST", "abc", 3, 0);
  run(&f, 5000);
  conns = peer_saw(&f, "conn conn=", 2, 200);
  int posts = peer_saw(&f, "POST", 1, 0);
  fx_stop(&f);
  assert_not_hung(&f, "POST");
  check_done_once(&p, "POST");
  check_err(&p, H2T_ERR_CONN_CLOSED, "POST");
  check_attempts(&p, 1, "POST");
  assert_int_equal(p.retries, 0);
  assert_int_equal(posts, 1);
  assert_int_equal(conns, 1);
}

/* 3. Response HEADERS, then nothing: the request timeout ends it and the
 * stream is cancelled on the wire. */
static void test_stall_after_headers(void **state) {
  fx f;
  rq q = {0};
  fx_start(&f, NULL, "stall", NULL);
  submit(&f, &q, "/x", NULL, NULL, 0, 500);
  run(&f, 5000);
  /* The reset must reach the wire without the application running the
   * loop again: h2t_client_run() returns once nothing is pending, and many
   * programs then call h2t_client_del(). */
  int cancels = peer_saw(&f, "rst conn=1 sid=1 code=8", 1, 1000);
  int later = 0;
  if (!cancels && !f.hung) { /* is it only queued? say so if it is */
    run_loop_for(&f, 300);
    later = peer_saw(&f, "rst conn=1 sid=1 code=8", 1, 300);
  }
  fx_stop_client(&f);
  int at_del = cancels || later
                   ? 0 : peer_saw(&f, "rst conn=1 sid=1 code=8", 1, 500);
  fx_stop_peer(&f);
  assert_not_hung(&f, "GET");
  check_done_once(&q, "GET");
  check_err(&q, H2T_ERR_TIMEOUT, "GET");
  if (secs(&q) < 0.45 || secs(&q) > 1.5)
    fail_msg("timed out after %.3f s, want about 0.5 s", secs(&q));
  assert_int_equal(q.status, 200);
  if (cancels != 1)
    fail_msg("the peer saw no RST_STREAM(CANCEL) within 1 s of the timeout "
             "(%s)", later ? "it went out once the loop ran again"
                     : at_del ? "it came with h2t_client_del"
                              : "not when the loop ran again, nor at del");
}

/* 4. RST_STREAM after part of the body, for every error code: never
 * retried (bytes were delivered), and the application sees only them. */
static void test_reset_mid_body_every_code(void **state) {
  fx f;
  rq q[14];
  memset(q, 0, sizeof q);
  fx_start(&f, NULL, "rst_midbody", NULL);
  for (int code = 0; code < 14; code++) {
    char path[32];
    snprintf(path, sizeof path, "/rst/%d", code);
    get(&f, &q[code], path);
    run(&f, 3000);
    if (f.hung)
      break;
  }
  fx_stop(&f);
  char bad[256] = "";
  size_t len = 0;
  for (int code = 0; code < 14; code++) {
    rq *r = &q[code];
    char want[32];
    snprintf(want, sizeof want, "partial-%d", code);
    if (r->ndone != 1 || r->ndone_late || r->err != H2T_ERR_STREAM_RESET ||
        r->reset_code != (uint32_t)code || r->attempts != 1 ||
        r->retries != 0 || r->body_len != strlen(want) ||
        memcmp(r->body, want, r->body_len)) {
      fprintf(stderr, "  code %d: on_done %d (+%d), %s, reset_code %u, "
              "attempts %u, retries %d, body \"%.*s\"\n", code, r->ndone,
              r->ndone_late, h2t_errname(r->err), r->reset_code, r->attempts,
              r->retries, (int)r->body_len, r->body);
      if (len < sizeof bad - 8)
        len += snprintf(bad + len, sizeof bad - len, " %d", code);
    }
  }
  assert_not_hung(&f, "a reset GET");
  if (bad[0])
    fail_msg("want H2T_ERR_STREAM_RESET, reset_code = the code, 1 attempt, "
             "the partial body only; wrong for codes%s (above)", bad);
}

/* 5. REFUSED_STREAM before any response byte: replayed, succeeds. */
static void test_refused_before_response(void **state) {
  fx f;
  rq q = {0};
  fx_start(&f, NULL, "refuse", "--count", "1", NULL);
  get(&f, &q, "/x");
  run(&f, 5000);
  /* The peer logs a refusal after sending it: the retry may be answered
   * (on another of its threads) first. */
  int refused = peer_saw(&f, "refused ", 1, 1000);
  fx_stop(&f);
  assert_not_hung(&f, "GET");
  check_done_once(&q, "GET");
  check_err(&q, 0, "GET");
  assert_int_equal(q.retries, 1);
  assert_int_equal(q.retry_reason, H2T_RETRY_REFUSED_STREAM);
  check_attempts(&q, 2, "GET");
  check_body(&q, "ok 0", "GET");
  assert_int_equal(refused, 1);
}

/* 6. GOAWAY(NO_ERROR, last_stream_id 3) with 10 streams in flight: the 8
 * above 3 were not processed, go to a new connection, and do not spend
 * max_retries (1 here). */
static void test_goaway_low_last_stream_id(void **state) {
  fx f;
  rq q[10];
  memset(q, 0, sizeof q);
  h2t_client_config cfg = {H2T_CLIENT_CONFIG_INIT};
  cfg.max_retries = 1;
  cfg.max_conns_per_origin = 1; /* all ten on the one connection */
  fx_start(&f, &cfg, "goaway_low", "--count", "10", NULL);
  for (int i = 0; i < 10; i++)
    get(&f, &q[i], "/x");
  run(&f, 8000);
  int on_first = peer_saw(&f, "req conn=1 ", 10, 0);
  fx_stop(&f);
  assert_not_hung(&f, "the 10 GETs");
  assert_int_equal(on_first, 10); /* the scenario happened */
  int ok = 0;
  for (int i = 0; i < 10; i++) {
    check_done_once(&q[i], "a GET");
    int low = q[i].first_sid == 1 || q[i].first_sid == 3;
    if (q[i].err == 0 && q[i].status == 200 &&
        (low ? q[i].attempts == 1 && q[i].retries == 0
             : q[i].attempts == 2 && q[i].retries == 1 &&
                   q[i].retry_reason == H2T_RETRY_GOAWAY))
      ok++;
    else
      fprintf(stderr, "  stream %d: %s, attempts %u, retries %d (reason "
              "%d)\n", q[i].first_sid, h2t_errname(q[i].err), q[i].attempts,
              q[i].retries, (int)q[i].retry_reason);
  }
  if (ok != 10)
    fail_msg("%d of 10 as promised; the others above", ok);
}

/* 6b. The same over three connections in a row: a request may be pushed
 * off three times, and still none of that spends max_retries (1). */
static void test_goaway_low_three_times(void **state) {
  fx f;
  rq q[10];
  memset(q, 0, sizeof q);
  h2t_client_config cfg = {H2T_CLIENT_CONFIG_INIT};
  cfg.max_retries = 1;
  cfg.max_conns_per_origin = 1;
  fx_start(&f, &cfg, "goaway_low", "--count", "10", "--conns", "3", NULL);
  for (int i = 0; i < 10; i++)
    get(&f, &q[i], "/x");
  run(&f, 10000);
  int conns = peer_saw(&f, "conn conn=", 0, 0);
  fx_stop(&f);
  assert_not_hung(&f, "the 10 GETs");
  int ok = 0, first_bad = -1, max_attempts = 0;
  for (int i = 0; i < 10; i++) {
    check_done_once(&q[i], "a GET");
    if (q[i].err == 0 && q[i].status == 200 &&
        (q[i].retries == 0 || q[i].retry_reason == H2T_RETRY_GOAWAY))
      ok++;
    else if (first_bad < 0)
      first_bad = i;
    if ((int)q[i].attempts > max_attempts)
      max_attempts = (int)q[i].attempts;
  }
  if (ok != 10)
    fail_msg("%d of 10 succeeded; #%d: %s after %u attempts (%d retries); "
             "%d connections", ok, first_bad, h2t_errname(q[first_bad].err),
             q[first_bad].attempts, q[first_bad].retries, conns);
  assert_int_equal(max_attempts, 4); /* the scenario happened */
}

/* 7. nginx defaults: MAX_CONCURRENT_STREAMS 4, GOAWAY after 5 requests per
 * connection; 50 requests at once, 3 times. */
static void test_nginx_like_keepalive_requests(void **state) {
  for (int round = 0; round < 3; round++) {
    fx f;
    rq q[50];
    memset(q, 0, sizeof q);
    fx_start(&f, NULL, "nginx", "--max-streams", "4", "--keepalive", "5",
             NULL);
    for (int i = 0; i < 50; i++)
      get(&f, &q[i], "/x");
    run(&f, 10000);
    int over = peer_saw(&f, "over_limit", 0, 0);
    int conns = peer_saw(&f, "conn conn=", 0, 0);
    fx_stop(&f);
    int ok = 0, first_bad = -1;
    for (int i = 0; i < 50; i++) {
      if (q[i].ndone == 1 && q[i].err == 0 && q[i].status == 200)
        ok++;
      else if (first_bad < 0)
        first_bad = i;
    }
    if (f.hung || ok != 50)
      fail_msg("round %d: %d of 50 succeeded%s; first failure #%d: done %d, "
               "%s, attempts %u, retries %d; %d connections", round, ok,
               f.hung ? " (the rest hung)" : "", first_bad,
               q[first_bad].ndone, h2t_errname(q[first_bad].err),
               q[first_bad].attempts, q[first_bad].retries, conns);
    for (int i = 0; i < 50; i++)
      check_done_once(&q[i], "a GET");
    assert_int_equal(over, 0); /* MAX_CONCURRENT_STREAMS was kept */
    assert_true(conns >= 10);
  }
}

/* 8. Graceful shutdown: GOAWAY(2^31-1), the in-flight responses, GOAWAY
 * with the real last id, close.  All in flight succeed; the next request
 * opens a new connection and says why. */
static void test_graceful_goaway(void **state) {
  fx f;
  rq q[3], n = {0};
  memset(q, 0, sizeof q);
  fx_start(&f, NULL, "graceful", "--count", "3", NULL);
  for (int i = 0; i < 3; i++)
    get(&f, &q[i], "/x");
  run(&f, 5000);
  int hung_first = f.hung;
  if (!hung_first) {
    get(&f, &n, "/x");
    run(&f, 5000);
  }
  int conn2 = peer_saw(&f, "req conn=2 ", 1, 0);
  fx_stop(&f);
  if (hung_first)
    fail_msg("the in-flight GETs hung");
  for (int i = 0; i < 3; i++) {
    check_done_once(&q[i], "in-flight GET");
    check_err(&q[i], 0, "in-flight GET");
    check_attempts(&q[i], 1, "in-flight GET");
    assert_int_equal(q[i].conn_id, q[0].conn_id);
  }
  assert_not_hung(&f, "the GET after");
  check_done_once(&n, "GET after");
  check_err(&n, 0, "GET after");
  assert_int_equal(conn2, 1);
  assert_int_equal(n.reused, 0);
  assert_int_not_equal(n.conn_id, q[0].conn_id);
  if (n.new_reason != H2T_CONN_GOAWAY)
    fail_msg("new connection's new_reason is %s, want goaway",
             h2t_conn_reason_name(n.new_reason));
}

/* 9. MAX_CONCURRENT_STREAMS 1, then 0 after each response, one connection
 * allowed: the pool must not wedge on a connection that takes no stream. */
static void test_max_streams_drops_to_zero(void **state) {
  fx f;
  rq q[5];
  memset(q, 0, sizeof q);
  h2t_client_config cfg = {H2T_CLIENT_CONFIG_INIT};
  cfg.max_conns_per_origin = 1;
  fx_start(&f, &cfg, "mcs_zero_after", NULL);
  for (int i = 0; i < 5; i++)
    get(&f, &q[i], "/x");
  run(&f, 5000);
  int conns = peer_saw(&f, "conn conn=", 0, 0);
  fx_stop(&f);
  int ok = 0;
  for (int i = 0; i < 5; i++)
    ok += q[i].ndone == 1 && q[i].err == 0;
  if (f.hung || ok != 5)
    fail_msg("%d of 5 succeeded%s (%d connections opened)", ok,
             f.hung ? ", the rest hung" : "", conns);
  for (int i = 0; i < 5; i++)
    check_done_once(&q[i], "a GET");
}

/* 10. MAX_CONCURRENT_STREAMS 0 on every connection, forever. */
static void test_max_streams_zero_forever(void **state) {
  fx f;
  rq q = {0};
  fx_start(&f, NULL, "mcs_zero", NULL);
  get(&f, &q, "/x");
  run(&f, 8000);
  int conns = peer_saw(&f, "conn conn=", 0, 0);
  fx_stop(&f);
  if (f.hung)
    fail_msg("GET still pending after 8 s (%d connections opened)", conns);
  check_done_once(&q, "GET");
  check_err(&q, H2T_ERR_REFUSED_STREAM, "GET");
  if (secs(&q) > 5.0)
    fail_msg("failed after %.2f s, want under 5 s", secs(&q));
}

/* 11. 1-byte stream windows granted back 1 byte at a time.  A GET first, so
 * the POST starts with the peer's SETTINGS known (before them a client may
 * send 65535 bytes). */
static void test_one_byte_windows(void **state) {
  fx f;
  rq g = {0}, q = {0};
  static char body[200];
  memset(body, 'b', sizeof body);
  fx_start(&f, NULL, "tiny_window", NULL);
  get(&f, &g, "/x");
  run(&f, 3000);
  submit(&f, &q, "/x", "POST", body, sizeof body, 0);
  run(&f, 10000);
  int frames = peer_saw(&f, "data conn=1 sid=3 ", 0, 0);
  fx_stop(&f);
  assert_not_hung(&f, "POST");
  check_done_once(&g, "warm-up GET");
  check_err(&g, 0, "warm-up GET");
  check_done_once(&q, "POST");
  check_err(&q, 0, "POST");
  check_body(&q, "ok 200", "POST");
  assert_int_equal(q.reused, 1);
  assert_true(frames >= 100); /* the window did cut the body up */
  if (q.flow_blocked < 1)
    fail_msg("flow_blocked never fired (%d DATA frames)", frames);
}

/* 12. A response header block over max_response_header_bytes: the request
 * fails, the connection (and its HPACK state) stays usable. */
static void big_headers_case(uint32_t limit, const char *big,
                             const char *fits, int conn_survives) {
  fx f;
  rq a = {0}, b = {0}, c = {0};
  h2t_client_config cfg = {H2T_CLIENT_CONFIG_INIT};
  cfg.max_response_header_bytes = limit;
  fx_start(&f, &cfg, "big_headers", NULL);
  get(&f, &a, big);
  run(&f, 5000);
  if (!f.hung) {
    get(&f, &b, "/x");
    run(&f, 5000);
  }
  if (!f.hung && fits) {
    get(&f, &c, fits);
    run(&f, 5000);
  }
  fx_stop(&f);
  assert_not_hung(&f, big);
  check_done_once(&a, big);
  check_err(&a, H2T_ERR_HEADERS_TOO_LARGE, big);
  check_done_once(&b, "GET after");
  check_err(&b, 0, "GET after");
  if (conn_survives && (!b.reused || b.conn_id != a.conn_id))
    fail_msg("GET after: reused %d, conn %llu (the big one's: %llu)",
             b.reused, (unsigned long long)b.conn_id,
             (unsigned long long)a.conn_id);
  if (fits) { /* the limit is not "fail everything" */
    check_done_once(&c, fits);
    check_err(&c, 0, fits);
  }
}

/* 300 x 1 KiB decoded (> the default 256 KiB), one field repeated so
 * HPACK keeps it small on the wire; 200 of them fit. */
static void test_header_block_too_large_default(void **state) {
  big_headers_case(0, "/same/300/1024", "/same/200/1024", 1);
}

/* 10 x 1 KiB > a configured 4 KiB; 2 x 1 KiB fit. */
static void test_header_block_too_large_configured(void **state) {
  big_headers_case(4096, "/big/10/1024", "/big/2/1024", 1);
}

/* 300 different 1 KiB headers: ~190 KB of HPACK, 12 CONTINUATION frames at
 * the default 16 KiB SETTINGS_MAX_FRAME_SIZE (the peer uses what the client
 * allows).  nghttp2 1.52 (Debian's, with the CVE-2024-28182 fix) treats
 * more than 8 CONTINUATIONs as a connection error: the connection cannot be
 * kept, but the request still fails with the cause named
 * (H2T_ERR_HEADERS_TOO_LARGE) and the next GET gets a new connection.  200
 * (8 frames) fit. */
static void test_header_block_too_large_many_frames(void **state) {
  big_headers_case(0, "/big/300/1024", "/big/200/1024", 0);
}

/* 13. A PING flood from a peer that does not read. */
static void test_ping_flood(void **state) {
  fx f;
  rq q = {0};
  fx_start(&f, NULL, "ping_flood", "--count", "200000", "--rcvbuf", "4096",
           NULL);
  get(&f, &q, "/x");
  run(&f, 8000);
  fx_stop(&f);
  assert_not_hung(&f, "GET");
  check_done_once(&q, "GET");
  check_err(&q, H2T_ERR_FLOOD, "GET");
  int gs = q.local_goaways + f.conn.local_goaways;
  uint32_t code = q.local_goaways ? q.local_goaway_code
                                  : f.conn.local_goaway_code;
  if (gs < 1 || code != 0xb)
    fail_msg("want a goaway event by_peer 0, ENHANCE_YOUR_CALM; saw %d, "
             "code 0x%x", gs, code);
}

/* 14. TCP accepted, nothing ever sent: the connect timeout covers the wait
 * for the peer's SETTINGS. */
static void test_silent_peer(void **state) {
  fx f;
  rq q = {0};
  h2t_client_config cfg = {H2T_CLIENT_CONFIG_INIT};
  cfg.connect_timeout_ms = 500;
  fx_start(&f, &cfg, "silent", NULL);
  get(&f, &q, "/x");
  run(&f, 4000);
  fx_stop(&f);
  assert_not_hung(&f, "GET");
  check_done_once(&q, "GET");
  check_err(&q, H2T_ERR_CONNECT_TIMEOUT, "GET");
  if (secs(&q) > 1.5)
    fail_msg("failed after %.2f s, want within ~1.5 s", secs(&q));
}

/* 15. An HTTP/1.1 server answering the preface. */
static void test_http1_answer(void **state) {
  fx f;
  rq q = {0};
  fx_start(&f, NULL, "http1", NULL);
  get(&f, &q, "/x");
  run(&f, 5000);
  fx_stop(&f);
  assert_not_hung(&f, "GET");
  check_done_once(&q, "GET");
  check_err(&q, H2T_ERR_NOT_HTTP2, "GET");
}

/* 16. Nothing listens on the port. */
static void test_connection_refused(void **state) {
  fx f;
  rq q = {0};
  fx_start(&f, NULL, NULL);
  f.port = h2t_test_free_port(); /* bound, then closed */
  get(&f, &q, "/x");
  run(&f, 5000);
  fx_stop(&f);
  assert_not_hung(&f, "GET");
  check_done_once(&q, "GET");
  check_err(&q, H2T_ERR_CONNECT_REFUSED, "GET");
}

/* 17. RFC 6761: .invalid never resolves. */
static void test_invalid_name(void **state) {
  fx f;
  rq q = {0};
  fx_start(&f, NULL, NULL);
  submit_url(&f, &q, "http://nothing.invalid:1/", NULL, NULL, 0, 0);
  run(&f, 5000);
  fx_stop(&f);
  assert_not_hung(&f, "GET");
  check_done_once(&q, "GET");
  check_err(&q, H2T_ERR_DNS, "GET");
}

/* 18. Every stream refused: 1 + max_unprocessed_retries attempts, whatever
 * max_retries says (those retries are not its to spend). */
static void refuse_all_case(uint32_t max_retries) {
  fx f;
  rq q = {0};
  h2t_client_config cfg = {H2T_CLIENT_CONFIG_INIT};
  cfg.max_retries = max_retries;
  cfg.max_unprocessed_retries = 3;
  fx_start(&f, &cfg, "refuse", "--count", "1000000", NULL);
  get(&f, &q, "/x");
  run(&f, 8000);
  int refused = peer_saw(&f, "refused ", 4, 1000);
  fx_stop(&f);
  assert_not_hung(&f, "GET");
  check_done_once(&q, "GET");
  check_err(&q, H2T_ERR_REFUSED_STREAM, "GET");
  if (q.attempts != 4 || refused != 4)
    fail_msg("max_retries %u: %u attempts (%d streams refused), want 1 + "
             "max_unprocessed_retries = 4", max_retries, q.attempts, refused);
  if (secs(&q) > 5.0)
    fail_msg("failed after %.2f s", secs(&q));
}

static void test_refuse_everything(void **state) {
  refuse_all_case(1);
  refuse_all_case(6);
}

/* 19. got_conn before the peer's SETTINGS arrived says so; after, it carries
 * the peer's MAX_CONCURRENT_STREAMS. */
static void test_max_streams_known(void **state) {
  fx f;
  rq a = {0}, b = {0};
  fx_start(&f, NULL, "delay_settings", "--delay-ms", "200", "--max-streams",
           "7", NULL);
  get(&f, &a, "/x");
  run(&f, 5000);
  if (!f.hung) {
    get(&f, &b, "/x");
    run(&f, 5000);
  }
  fx_stop(&f);
  assert_not_hung(&f, "GET");
  check_done_once(&a, "first GET");
  check_err(&a, 0, "first GET");
  check_done_once(&b, "second GET");
  check_err(&b, 0, "second GET");
  assert_int_equal(a.got_conns, 1);
  assert_int_equal(a.reused, 0);
  if (a.max_streams_known != 0)
    fail_msg("first got_conn: max_streams_known %d (max_streams %u) before "
             "the peer's SETTINGS", a.max_streams_known, a.max_streams);
  assert_int_equal(b.reused, 1);
  assert_int_equal(b.conn_id, a.conn_id);
  if (b.max_streams_known != 1 || b.max_streams != 7)
    fail_msg("second got_conn: max_streams_known %d, max_streams %u; want "
             "1 and 7", b.max_streams_known, b.max_streams);
}

int main(void) {
  signal(SIGALRM, on_alarm);
  if (getenv("H2T_TEST_FILTER")) /* e.g. "test_ping_flood" or "*stall*" */
    cmocka_set_test_filter(getenv("H2T_TEST_FILTER"));
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_killed_mid_body),
      cmocka_unit_test(test_killed_before_response),
      cmocka_unit_test(test_stall_after_headers),
      cmocka_unit_test(test_reset_mid_body_every_code),
      cmocka_unit_test(test_refused_before_response),
      cmocka_unit_test(test_goaway_low_last_stream_id),
      cmocka_unit_test(test_goaway_low_three_times),
      cmocka_unit_test(test_nginx_like_keepalive_requests),
      cmocka_unit_test(test_graceful_goaway),
      cmocka_unit_test(test_max_streams_drops_to_zero),
      cmocka_unit_test(test_max_streams_zero_forever),
      cmocka_unit_test(test_one_byte_windows),
      cmocka_unit_test(test_header_block_too_large_default),
      cmocka_unit_test(test_header_block_too_large_configured),
      cmocka_unit_test(test_header_block_too_large_many_frames),
      cmocka_unit_test(test_ping_flood),
      cmocka_unit_test(test_silent_peer),
      cmocka_unit_test(test_http1_answer),
      cmocka_unit_test(test_connection_refused),
      cmocka_unit_test(test_invalid_name),
      cmocka_unit_test(test_refuse_everything),
      cmocka_unit_test(test_max_streams_known),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
