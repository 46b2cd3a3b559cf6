/*
 * h2/writer: the frame writer in each mode over a socketpair — order and
 * completeness, back-pressure notifies, drain-then-close, abort, failure
 * when the peer goes away, queue depth.
 */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cmocka.h>

#include "modes.h"

#include "h2/server/server_int.h"

/* Read on its own thread while the test polls from the loop's: the
 * counters it shares are atomic. */
typedef struct reader {
  int fd;
  atomic_size_t got;
  atomic_int bad; /* a byte out of sequence */
  atomic_int eof;
  pthread_t th;
} reader;

static void *read_all(void *arg) {
  reader *r = arg;
  uint8_t buf[65536];
  for (;;) {
    ssize_t n = read(r->fd, buf, sizeof buf);
    if (n <= 0) {
      atomic_store(&r->eof, 1);
      return NULL;
    }
    size_t got = atomic_load(&r->got);
    for (ssize_t i = 0; i < n; i++)
      if (buf[i] != (uint8_t)((got + (size_t)i) % 251))
        atomic_store(&r->bad, 1);
    atomic_store(&r->got, got + (size_t)n);
  }
}

typedef struct ctx {
  struct ev_loop *loop;
  int notified;
  int failed_seen;
  wconn *wc;
} ctx;

static void on_notify(void *arg) {
  ctx *c = arg;
  c->notified++;
  if (h2t__writer_conn_failed(c->wc))
    c->failed_seen = 1;
}

static srv_writer *g_w;

static uint8_t *chunk(size_t from, size_t len) {
  size_t cap;
  uint8_t *b = h2t__writer_buf_grow(g_w, NULL, len, &cap);
  assert_non_null(b);
  assert_true(cap >= len);
  for (size_t i = 0; i < len; i++)
    b[i] = (uint8_t)((from + i) % 251);
  return b;
}

/* Run the loop until cond() or timeout (ms). */
static int run_until(struct ev_loop *loop, int (*cond)(void *), void *arg,
                     int timeout_ms) {
  for (int i = 0; i < timeout_ms / 5; i++) {
    if (cond(arg))
      return 1;
    ev_run(loop, EVRUN_NOWAIT);
    usleep(5000);
  }
  return cond(arg);
}

typedef struct pair {
  int a, b; /* a: the writer's end (non-blocking) */
} pair;

static pair mkpair(void) {
  int sv[2];
  assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
  fcntl(sv[0], F_SETFL, O_NONBLOCK);
  int small = 16384;
  setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
  setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  return (pair){sv[0], sv[1]};
}

static h2t_writer_mode mode_of(void **state) {
  return *(h2t_writer_mode *)*state;
}

typedef struct done_arg {
  reader *r;
  size_t want;
} done_arg;

static wconn *g_wc; /* queued must drop to 0 too: it trails the bytes */

static int got_all(void *arg) {
  done_arg *d = arg;
  return (d->r->got >= d->want && h2t__writer_conn_queued(g_wc) == 0) ||
         d->r->eof;
}

static int got_eof(void *arg) { return ((reader *)arg)->eof; }

/* (with writer_spin_us: the reused thread stays awake between pushes) */
static void test_order_and_drain_then_close(void **state) {
  struct ev_loop *loop = ev_loop_new(0);
  srv_writer *w;
  assert_int_equal(h2t__writer_new(&w, mode_of(state), loop, NULL, 5000000, 200), 0);
  g_w = w;
  pair p = mkpair();
  ctx c = {.loop = loop};
  c.wc = h2t__writer_conn_new(w, p.a, on_notify, &c);
  reader r = {.fd = p.b};
  pthread_create(&r.th, NULL, read_all, &r);
  size_t total = 0;
  for (int i = 0; i < 300; i++) {
    size_t len = 1 + (size_t)(i * 977) % 40000;
    assert_int_equal(h2t__writer_push(c.wc, chunk(total, len), len), 0);
    total += len;
    if (i % 16 == 0)
      ev_run(loop, EVRUN_NOWAIT);
  }
  g_wc = c.wc;
  done_arg d = {&r, total};
  assert_true(run_until(loop, got_all, &d, 10000));
  assert_int_equal(h2t__writer_conn_queued(c.wc), 0);
  assert_int_equal(r.got, total);
  assert_false(r.bad);
  assert_int_equal(h2t__writer_depth(w), 0);
  assert_true(h2t__writer_depth_max(w) >= 1);
  /* more, then close: everything still arrives, then EOF */
  assert_int_equal(h2t__writer_push(c.wc, chunk(total, 100000), 100000), 0);
  total += 100000;
  h2t__writer_conn_close(c.wc, 0);
  assert_true(run_until(loop, got_eof, &r, 10000));
  pthread_join(r.th, NULL);
  assert_int_equal(r.got, total);
  assert_false(r.bad);
  close(p.b);
  h2t__writer_del(w);
  ev_loop_destroy(loop);
}

static int notified(void *arg) { return ((ctx *)arg)->notified > 0; }

static void test_backpressure_notify(void **state) {
  struct ev_loop *loop = ev_loop_new(0);
  srv_writer *w;
  assert_int_equal(h2t__writer_new(&w, mode_of(state), loop, NULL, 5000000, 0), 0);
  g_w = w;
  pair p = mkpair();
  ctx c = {.loop = loop};
  c.wc = h2t__writer_conn_new(w, p.a, on_notify, &c);
  /* nobody reads: the queue stays full */
  size_t total = 0;
  for (int i = 0; i < 32; i++) {
    assert_int_equal(h2t__writer_push(c.wc, chunk(total, 32768), 32768), 0);
    total += 32768;
  }
  for (int i = 0; i < 20; i++) {
    ev_run(loop, EVRUN_NOWAIT);
    usleep(5000);
  }
  assert_true(h2t__writer_conn_queued(c.wc) > 256 * 1024);
  assert_int_equal(h2t__writer_conn_want_notify(c.wc, 64 * 1024), 0);
  assert_int_equal(c.notified, 0);
  reader r = {.fd = p.b};
  pthread_create(&r.th, NULL, read_all, &r);
  assert_true(run_until(loop, notified, &c, 10000));
  assert_true(h2t__writer_conn_queued(c.wc) <= 64 * 1024);
  assert_false(c.failed_seen);
  /* already below: no notify is promised */
  g_wc = c.wc;
  done_arg d = {&r, total};
  assert_true(run_until(loop, got_all, &d, 10000));
  assert_int_equal(h2t__writer_conn_want_notify(c.wc, 1024), 1);
  h2t__writer_conn_close(c.wc, 0);
  assert_true(run_until(loop, got_eof, &r, 10000));
  pthread_join(r.th, NULL);
  assert_int_equal(r.got, total);
  assert_false(r.bad);
  close(p.b);
  h2t__writer_del(w);
  ev_loop_destroy(loop);
}

static void test_abort_and_peer_gone(void **state) {
  struct ev_loop *loop = ev_loop_new(0);
  srv_writer *w;
  assert_int_equal(h2t__writer_new(&w, mode_of(state), loop, NULL, 5000000, 0), 0);
  g_w = w;
  /* abort with a full queue nobody reads: the fd is closed at once */
  pair p = mkpair();
  ctx c = {.loop = loop};
  c.wc = h2t__writer_conn_new(w, p.a, on_notify, &c);
  for (int i = 0; i < 16; i++)
    h2t__writer_push(c.wc, chunk(0, 65536), 65536);
  ev_run(loop, EVRUN_NOWAIT);
  h2t__writer_conn_close(c.wc, 1);
  reader r = {.fd = p.b};
  pthread_create(&r.th, NULL, read_all, &r);
  assert_true(run_until(loop, got_eof, &r, 3000));
  pthread_join(r.th, NULL);
  assert_true(r.got < 16 * 65536);
  close(p.b);
  /* the peer goes away: the writer fails and says so */
  p = mkpair();
  ctx c2 = {.loop = loop};
  c2.wc = h2t__writer_conn_new(w, p.a, on_notify, &c2);
  close(p.b);
  for (int i = 0; i < 4; i++)
    h2t__writer_push(c2.wc, chunk(0, 65536), 65536);
  assert_true(run_until(loop, notified, &c2, 5000));
  assert_true(c2.failed_seen);
  assert_int_equal(h2t__writer_conn_queued(c2.wc), 0);
  assert_int_equal(h2t__writer_push(c2.wc, chunk(0, 10), 10), H2T_ERR_IO);
  h2t__writer_conn_close(c2.wc, 1);
  for (int i = 0; i < 20; i++) {
    ev_run(loop, EVRUN_NOWAIT);
    usleep(2000);
  }
  h2t__writer_del(w);
  ev_loop_destroy(loop);
}


int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      H2T_TEST_PER_MODE(test_order_and_drain_then_close),
      H2T_TEST_PER_MODE(test_backpressure_notify),
      H2T_TEST_PER_MODE(test_abort_and_peer_gone),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
