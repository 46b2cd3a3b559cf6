/*
 * h2/server's bounds (issue 11): what a peer can make the server hold.
 * Request bodies a handler does not read are bounded by flow control; a
 * header block that never ends, a body that stalls, connections that
 * never send a request: each is cut off (and seen meanwhile in the
 * in-flight table), and legitimate clients are still served; a client
 * that pauses reading and resumes within the timeouts gets everything.
 * Raw sockets (the peer's misbehaviour written as bytes), curl and h2load.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <cmocka.h>

#include <nghttp2/nghttp2.h>
#include <h2trace/inflight.h>
#include <h2trace/server.h>
#include "handlers.h"
#include "modes.h"
#include "frames.h"
#include "peer.h"

typedef struct tsrv {
  h2t_server *s;
  pthread_t th;
  int port;
} tsrv;

static void h_hello(h2t_server_req *r, void *user) {
  h2t_server_req_respond(r, 200, NULL, 0, "hello\n", 6, 0);
}

/* /big: BIG bytes from a generator (back-pressure), a known pattern */
#define BIG (8u << 20)
static ssize_t big_gen(h2t_server_req *r, uint8_t *out, size_t len, int *eof,
                       void *user) {
  size_t *left = user;
  size_t n = len < *left ? len : *left;
  memset(out, 'b', n);
  *left -= n;
  *eof = *left == 0;
  return (ssize_t)n;
}
static void big_close(h2t_server_req *r, uint32_t code, void *user) {
  free(user);
}
static void h_big(h2t_server_req *r, void *user) {
  size_t *left = malloc(sizeof *left);
  *left = BIG;
  h2t_server_req_on(r, NULL, big_close, left);
  h2t_server_req_respond_gen(r, 200, NULL, 0, big_gen, left);
}

static void *srv_thread(void *arg) {
  h2t_server_run(arg);
  return NULL;
}

static tsrv *start(h2t_writer_mode mode, h2t_server_config *c) {
  tsrv *t = calloc(1, sizeof *t);
  c->writer = mode;
  assert_int_equal(h2t_server_new(&t->s, c), 0);
  h2t_listen_opts lo = {H2T_LISTEN_OPTS_INIT, .backlog = 256};
  t->port = h2t_server_port(t->s, h2t_server_listen(t->s, &lo));
  assert_true(t->port > 0);
  h2t_server_handle(t->s, "/", h_hello, NULL);
  h2t_server_handle(t->s, "/delay", h2t_test_delay_handler, NULL);
  h2t_server_handle(t->s, "/big", h_big, NULL);
  assert_int_equal(pthread_create(&t->th, NULL, srv_thread, t->s), 0);
  return t;
}

/* Stop, and the server's counters. */
static h2t_server_stats stop(tsrv *t) {
  h2t_server_stats st;
  h2t_server_shutdown_async(t->s);
  pthread_join(t->th, NULL);
  h2t_server_stats_get(t->s, &st);
  h2t_server_del(t->s);
  free(t);
  return st;
}

static int curl_ok(tsrv *t, const char *path) {
  char u[96], *out = NULL;
  snprintf(u, sizeof u, "http://127.0.0.1:%d%s", t->port, path);
  char *argv[] = {"curl", "-sS", "--max-time", "10", "--http2-prior-knowledge",
                  u, NULL};
  int rc = h2t_test_run(argv, 15000, &out);
  int ok = rc == 0 && out && !strcmp(out, "hello\n");
  free(out);
  return ok;
}

static int dial(int port, int rcvbuf) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (rcvbuf)
    setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  return fd;
}

/* Preface and SETTINGS; big_windows: stream and connection windows of
 * 2^31-1, so that only the socket limits what the server sends. */
static void start_conn(buf *b, int big_windows) {
  put(b, PREFACE, sizeof PREFACE - 1);
  if (!big_windows) {
    frame(b, NGHTTP2_SETTINGS, 0, 0, NULL, 0);
    return;
  }
  uint8_t s[6] = {0, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 0x7f, 0xff, 0xff,
                  0xff};
  frame(b, NGHTTP2_SETTINGS, 0, 0, s, sizeof s);
  uint32_t inc = 0x7fffffff - 65535;
  uint8_t w[4] = {(uint8_t)(inc >> 24), (uint8_t)(inc >> 16),
                  (uint8_t)(inc >> 8), (uint8_t)inc};
  frame(b, NGHTTP2_WINDOW_UPDATE, 0, 0, w, sizeof w);
}

/* A request's header block for method/path; flags as given (END_HEADERS
 * left out makes a block that never ends). */
static void request(buf *b, uint32_t sid, const char *method,
                    const char *path, uint8_t flags) {
#define NVS(n, v)                                                              \
  {(uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE}
  nghttp2_nv nva[4] = {NVS(":method", method), NVS(":scheme", "http"),
                       NVS(":path", path), NVS(":authority", "localhost")};
  nghttp2_hd_deflater *d;
  nghttp2_hd_deflate_new(&d, 4096);
  uint8_t hb[512];
  ssize_t n = nghttp2_hd_deflate_hd(d, hb, sizeof hb, nva, 4);
  nghttp2_hd_deflate_del(d);
  assert_true(n > 0);
  frame(b, NGHTTP2_HEADERS, flags, sid, hb, (size_t)n);
}

static void send_all(int fd, buf *b) {
  size_t off = 0;
  while (off < b->len) {
    ssize_t r = send(fd, b->p + off, b->len - off, MSG_NOSIGNAL);
    if (r <= 0)
      break;
    off += (size_t)r;
  }
  free(b->p);
  *b = (buf){0};
}

/* Read frames for up to timeout_ms: the first GOAWAY and RST_STREAM codes,
 * stream 1's DATA bytes and END_STREAM, EOF. */
typedef struct answer {
  int goaway, rst, closed, ended;
  uint32_t goaway_code, rst_code;
  size_t data;
} answer;

static answer read_answer(int fd, int timeout_ms, int until_end) {
  answer a = {0};
  buf in = {0};
  uint64_t end = h2t_now_us() + (uint64_t)timeout_ms * 1000;
  for (;;) {
    size_t off = 0;
    frame_in f;
    while (frame_next(&in, &off, &f)) {
      if (f.type == NGHTTP2_GOAWAY && !a.goaway && f.len >= 8) {
        a.goaway = 1;
        a.goaway_code = be32(f.pl + 4);
      } else if (f.type == NGHTTP2_RST_STREAM && !a.rst && f.len == 4) {
        a.rst = 1;
        a.rst_code = be32(f.pl);
      } else if (f.type == NGHTTP2_DATA && f.sid == 1) {
        a.data += f.len;
        if (f.flags & NGHTTP2_FLAG_END_STREAM)
          a.ended = 1;
      }
    }
    drop(&in, off);
    if (a.closed || a.rst || a.ended || (a.goaway && !until_end))
      break;
    int got = recv_more(fd, &in, end);
    if (got == 0)
      break;
    if (got < 0)
      a.closed = 1;
  }
  free(in.p);
  return a;
}

/* The server request in the in-flight table, if exactly one: its state. */
static int server_state(void) {
  h2t_inflight_info *v = NULL;
  size_t n = 0;
  int st = -1;
  if (h2t_inflight_snapshot(&v, &n) == 0)
    for (size_t i = 0; i < n; i++)
      if (v[i].kind == H2T_INFLIGHT_SERVER)
        st = (int)v[i].state;
  h2t_inflight_info_free(v);
  return st;
}

static int wait_state(int want, int ms) {
  for (int i = 0; i < ms / 10; i++) {
    if (server_state() == want)
      return 1;
    usleep(10000);
  }
  return 0;
}

static long rss_kb(void) {
  FILE *f = fopen("/proc/self/statm", "r");
  long pages = 0, rss = 0;
  if (f) {
    if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
      rss = 0;
    fclose(f);
  }
  return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

/* ------------------------------------------------------------------------ */

typedef struct bg {
  char **argv;
  int rc;
} bg;

static void *bg_run(void *arg) {
  bg *b = arg;
  char *out = NULL;
  b->rc = h2t_test_run(b->argv, 30000, &out);
  free(out);
  return NULL;
}

/* The h2load run, scaled: 16 streams x 8 MiB to a handler that does
 * not read for 2 s.  The old server buffered all of it (128 MiB); now the
 * connection's window (body_conn_budget, 16 MiB) is all it can hold. */
static void test_unread_bodies_bounded(void **state) {
  h2t_server_config c = {H2T_SERVER_CONFIG_INIT};
  tsrv *t = start(H2T_WRITER_REUSED, &c);
  char path[256];
  snprintf(path, sizeof path, "%s/body8m", h2t_test_tmpdir());
  FILE *f = fopen(path, "w");
  assert_non_null(f);
  static char chunk[1 << 16];
  memset(chunk, 'x', sizeof chunk);
  for (int i = 0; i < 128; i++)
    fwrite(chunk, 1, sizeof chunk, f);
  fclose(f);
  char u[96];
  snprintf(u, sizeof u, "http://127.0.0.1:%d/delay?ms=2000", t->port);
  char *argv[] = {"h2load", "-n16", "-c1", "-m16", "-d", path, u, NULL};
  long rss0 = rss_kb(), peak = rss0;
  bg b = {.argv = argv};
  pthread_t th;
  pthread_create(&th, NULL, bg_run, &b);
  for (int i = 0; i < 30; i++) { /* the 2 s the handlers do not read */
    usleep(100000);
    long r = rss_kb();
    if (r > peak)
      peak = r;
  }
  pthread_join(th, NULL);
  assert_int_equal(b.rc, 0); /* every request answered in the end */
  h2t_server_stats st = stop(t);
  print_message("body: buffered max %llu bytes, RSS +%ld KiB\n",
                (unsigned long long)st.body_buffered_max, peak - rss0);
  assert_true(st.body_buffered_max <= (16u << 20));
  assert_true(st.body_buffered_max >= (1u << 20)); /* it did buffer */
  assert_int_equal(st.body_buffered, 0);
  assert_true(st.body_flow_held >= 1);
  assert_true(peak - rss0 < 48 * 1024);
}

/* HEADERS without END_HEADERS, then nothing: "reading headers" in the
 * table meanwhile, then GOAWAY(PROTOCOL_ERROR) and close at the header
 * timeout; the server still serves. */
static void test_slowloris_header_timeout(void **state) {
  assert_int_equal(h2t_inflight_enable(NULL), 0);
  h2t_server_config c = {H2T_SERVER_CONFIG_INIT, .header_timeout_ms = 600};
  tsrv *t = start(*(h2t_writer_mode *)*state, &c);
  int fd = dial(t->port, 0);
  buf b = {0};
  start_conn(&b, 0);
  request(&b, 1, "GET", "/", 0); /* no END_HEADERS */
  send_all(fd, &b);
  assert_true(wait_state(H2T_IFS_READ_HEADERS, 400));
  answer a = read_answer(fd, 3000, 0);
  assert_true(a.goaway);
  assert_int_equal(a.goaway_code, NGHTTP2_PROTOCOL_ERROR);
  assert_true(wait_state(-1, 2000)); /* gone from the table */
  close(fd);
  assert_true(curl_ok(t, "/"));
  h2t_server_stats st = stop(t);
  assert_int_equal(st.header_timeouts, 1);
  h2t_inflight_disable();
}

/* A body the peer could send and does not: "reading body", then
 * RST_STREAM(CANCEL) at the body timeout. */
static void test_body_stall_timeout(void **state) {
  assert_int_equal(h2t_inflight_enable(NULL), 0);
  h2t_server_config c = {H2T_SERVER_CONFIG_INIT, .body_timeout_ms = 600};
  tsrv *t = start(*(h2t_writer_mode *)*state, &c);
  int fd = dial(t->port, 0);
  buf b = {0};
  start_conn(&b, 0);
  request(&b, 1, "POST", "/delay?ms=10000", NGHTTP2_FLAG_END_HEADERS);
  frame(&b, NGHTTP2_DATA, 0, 1, "0123456789", 10);
  send_all(fd, &b);
  assert_true(wait_state(H2T_IFS_READ_BODY, 400));
  uint64_t t0 = h2t_now_us();
  answer a = read_answer(fd, 3000, 0);
  assert_true(a.rst);
  assert_int_equal(a.rst_code, NGHTTP2_CANCEL);
  assert_true(h2t_now_us() - t0 < 2000000);
  close(fd);
  h2t_server_stats st = stop(t);
  assert_int_equal(st.body_timeouts, 1);
  h2t_inflight_disable();
}

/* 100 connections that never finish a header block while the server is
 * at max_conns: the oldest of them make room, and real requests are
 * served at once. */
static void test_slowloris_conns_legit_served(void **state) {
  h2t_server_config c = {H2T_SERVER_CONFIG_INIT, .max_conns = 50};
  tsrv *t = start(*(h2t_writer_mode *)*state, &c);
  int fds[100];
  for (int i = 0; i < 100; i++) {
    fds[i] = dial(t->port, 0);
    buf b = {0};
    start_conn(&b, 0);
    request(&b, 1, "GET", "/", 0);
    send_all(fds[i], &b);
  }
  usleep(200000);
  uint64_t t0 = h2t_now_us();
  for (int i = 0; i < 5; i++)
    assert_true(curl_ok(t, "/"));
  assert_true(h2t_now_us() - t0 < 5000000);
  for (int i = 0; i < 100; i++)
    close(fds[i]);
  h2t_server_stats st = stop(t);
  print_message("evicted %llu, accepted %llu\n",
                (unsigned long long)st.conns_evicted,
                (unsigned long long)st.conns_accepted);
  /* each curl needed room; how many slowloris the backlog still held at
   * the end varies */
  assert_true(st.conns_evicted >= 5);
}

/* A client that stops reading (its socket buffer full) for longer than
 * the old SPAWN writer's 5 s poll, then reads: the whole response. */
static void test_paused_reader_resumes(void **state) {
  h2t_server_config c = {H2T_SERVER_CONFIG_INIT};
  tsrv *t = start(*(h2t_writer_mode *)*state, &c);
  int fd = dial(t->port, 32768);
  buf b = {0};
  start_conn(&b, 1);
  request(&b, 1, "GET", "/big",
          NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM);
  send_all(fd, &b);
  sleep(6);
  answer a = read_answer(fd, 20000, 1);
  assert_false(a.rst);
  assert_false(a.goaway);
  assert_true(a.ended);
  assert_int_equal(a.data, BIG);
  close(fd);
  stop(t);
}

int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_unread_bodies_bounded),
      H2T_TEST_PER_MODE(test_slowloris_header_timeout),
      H2T_TEST_PER_MODE(test_body_stall_timeout),
      H2T_TEST_PER_MODE(test_slowloris_conns_legit_served),
      H2T_TEST_PER_MODE(test_paused_reader_resumes),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
