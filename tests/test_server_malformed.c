/*
 * h2/server against malformed input, written as raw bytes over a socket:
 * each case gets the protocol's answer (GOAWAY or RST_STREAM with the right
 * code, or a 431), and afterwards the server still serves a real client.
 * Every writer mode.
 */
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <setjmp.h>
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

#include "modes.h"

#include <nghttp2/nghttp2.h>
#include <h2trace/server.h>
#include "frames.h"
#include "peer.h"

typedef struct tsrv {
  h2t_server *s;
  pthread_t th;
  int port, tls_port;
} tsrv;

static void h_hello(h2t_server_req *r, void *user) {
  h2t_server_req_respond(r, 200, NULL, 0, "hello\n", 6, 0);
}

static void *srv_thread(void *arg) {
  h2t_server_run(arg);
  return NULL;
}

static tsrv *start_cfg(void **state, const h2t_server_config *cfg) {
  tsrv *t = calloc(1, sizeof *t);
  h2t_server_config c = {H2T_SERVER_CONFIG_INIT};
  if (cfg)
    c = *cfg;
  c.writer = *(h2t_writer_mode *)*state;
  c.max_header_list_size = 4096;
  assert_int_equal(h2t_server_new(&t->s, &c), 0);
  h2t_listen_opts lo = {H2T_LISTEN_OPTS_INIT};
  t->port = h2t_server_port(t->s, h2t_server_listen(t->s, &lo));
  const char *cert, *key;
  assert_int_equal(h2t_test_make_cert(&cert, &key), 0);
  h2t_listen_opts tl = {H2T_LISTEN_OPTS_INIT, .cert_file = cert,
                        .key_file = key};
  t->tls_port = h2t_server_port(t->s, h2t_server_listen(t->s, &tl));
  assert_true(t->port > 0 && t->tls_port > 0);
  h2t_server_handle(t->s, "/", h_hello, NULL);
  assert_int_equal(pthread_create(&t->th, NULL, srv_thread, t->s), 0);
  return t;
}

static tsrv *start(void **state) { return start_cfg(state, NULL); }

/* The server must still answer a real client, then stop cleanly. */
static void still_serves_and_stop(tsrv *t) {
  char u[64], *out = NULL;
  snprintf(u, sizeof u, "http://127.0.0.1:%d/", t->port);
  char *argv[] = {"curl", "-sS", "--max-time", "10", "--http2-prior-knowledge",
                  u, NULL};
  assert_int_equal(h2t_test_run(argv, 15000, &out), 0);
  assert_string_equal(out, "hello\n");
  free(out);
  h2t_server_shutdown_async(t->s);
  pthread_join(t->th, NULL);
  h2t_server_del(t->s);
  free(t);
}

static int dial(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
  return fd;
}

static void start_conn(buf *b) {
  put(b, PREFACE, sizeof PREFACE - 1);
  frame(b, NGHTTP2_SETTINGS, 0, 0, NULL, 0);
}

/* A request HEADERS frame for `path`, plus an extra header if given. */
static void request(buf *b, nghttp2_hd_deflater *d, uint32_t sid,
                    const char *path, const char *xname, const char *xval,
                    int end_stream) {
#define NVS(n, v)                                                              \
  {(uint8_t *)(n), (uint8_t *)(v), strlen(n), strlen(v), NGHTTP2_NV_FLAG_NONE}
  nghttp2_nv nva[5] = {NVS(":method", "GET"), NVS(":scheme", "http"),
                       NVS(":path", path), NVS(":authority", "localhost"),
                       NVS(xname ? xname : "x", xval ? xval : "")};
  uint8_t hb[20000];
  ssize_t n = nghttp2_hd_deflate_hd(d, hb, sizeof hb, nva, xname ? 5 : 4);
  assert_true(n > 0);
  frame(b, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS |
                                (end_stream ? NGHTTP2_FLAG_END_STREAM : 0),
        sid, hb, (size_t)n);
}

static void send_all(int fd, const buf *b) {
  size_t off = 0;
  while (off < b->len) {
    ssize_t r = send(fd, b->p + off, b->len - off, MSG_NOSIGNAL);
    if (r <= 0)
      return; /* the server may close early: that is fine */
    off += (size_t)r;
  }
}

/* What came back: the first GOAWAY's and RST_STREAM's codes, the status of
 * the first response HEADERS, whether the server closed. */
typedef struct answer {
  int goaway;
  uint32_t goaway_code;
  int rst;
  uint32_t rst_code;
  int status;
  int closed;
} answer;

static answer read_answer(int fd, int want_status, int timeout_ms) {
  answer a = {.goaway_code = 0xffffffff, .rst_code = 0xffffffff};
  buf in = {0};
  nghttp2_hd_inflater *inf;
  nghttp2_hd_inflate_new(&inf);
  uint64_t end = h2t_now_us() + (uint64_t)timeout_ms * 1000;
  for (;;) {
    /* parse what we have */
    size_t off = 0;
    frame_in f;
    while (frame_next(&in, &off, &f)) {
      if (f.type == NGHTTP2_GOAWAY && !a.goaway && f.len >= 8) {
        a.goaway = 1;
        a.goaway_code = be32(f.pl + 4);
      } else if (f.type == NGHTTP2_RST_STREAM && !a.rst && f.len == 4) {
        a.rst = 1;
        a.rst_code = be32(f.pl);
      } else if (f.type == NGHTTP2_HEADERS && !a.status) {
        const uint8_t *p = f.pl;
        size_t left = f.len;
        if (f.flags & NGHTTP2_FLAG_PADDED) {
          p++;
          left--;
        }
        if (f.flags & NGHTTP2_FLAG_PRIORITY) {
          p += 5;
          left -= 5;
        }
        for (;;) {
          nghttp2_nv nv;
          int fl = 0;
          ssize_t k = nghttp2_hd_inflate_hd2(inf, &nv, &fl, p, left, 1);
          if (k < 0)
            break;
          p += k;
          left -= (size_t)k;
          if ((fl & NGHTTP2_HD_INFLATE_EMIT) && nv.namelen == 7 &&
              !memcmp(nv.name, ":status", 7))
            a.status = atoi((const char *)nv.value);
          if (fl & NGHTTP2_HD_INFLATE_FINAL) {
            nghttp2_hd_inflate_end_headers(inf);
            break;
          }
          if (k == 0 && left == 0)
            break;
        }
      }
    }
    drop(&in, off);
    if (a.goaway || a.rst || (want_status && a.status) || a.closed)
      break;
    int got = recv_more(fd, &in, end);
    if (got == 0)
      break;
    if (got < 0)
      a.closed = 1;
  }
  nghttp2_hd_inflate_del(inf);
  free(in.p);
  return a;
}

/* After a GOAWAY the server closes: read until EOF (bounded). */
static int closes_soon(int fd) {
  uint8_t tmp[4096];
  for (int i = 0; i < 100; i++) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (poll(&p, 1, 50) > 0) {
      ssize_t r = recv(fd, tmp, sizeof tmp, 0);
      if (r <= 0)
        return 1;
    }
  }
  return 0;
}

static answer exchange(tsrv *t, buf *b, int want_status) {
  int fd = dial(t->port);
  send_all(fd, b);
  answer a = read_answer(fd, want_status, 3000);
  if (a.goaway)
    a.closed = closes_soon(fd);
  close(fd);
  free(b->p);
  b->p = NULL;
  b->len = b->cap = 0;
  return a;
}

static void test_bad_preface(void **state) {
  tsrv *t = start(state);
  buf b = {0};
  put(&b, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27);
  answer a = exchange(t, &b, 0);
  assert_true(a.goaway);
  assert_int_equal(a.goaway_code, NGHTTP2_PROTOCOL_ERROR);
  assert_true(a.closed);
  still_serves_and_stop(t);
}

static void test_invalid_frames(void **state) {
  tsrv *t = start(state);
  buf b = {0};
  /* DATA on stream 0 */
  start_conn(&b);
  frame(&b, NGHTTP2_DATA, 0, 0, "x", 1);
  answer a = exchange(t, &b, 0);
  assert_true(a.goaway && a.closed);
  assert_int_equal(a.goaway_code, NGHTTP2_PROTOCOL_ERROR);
  /* SETTINGS with a length that is not a multiple of 6 */
  start_conn(&b);
  frame(&b, NGHTTP2_SETTINGS, 0, 0, "12345", 5);
  a = exchange(t, &b, 0);
  assert_true(a.goaway);
  assert_int_equal(a.goaway_code, NGHTTP2_FRAME_SIZE_ERROR);
  /* a frame over SETTINGS_MAX_FRAME_SIZE (16384) */
  start_conn(&b);
  static uint8_t huge[20000];
  frame(&b, NGHTTP2_PING, 0, 0, huge, sizeof huge);
  a = exchange(t, &b, 0);
  assert_true(a.goaway);
  assert_int_equal(a.goaway_code, NGHTTP2_FRAME_SIZE_ERROR);
  /* WINDOW_UPDATE of 0 on the connection */
  start_conn(&b);
  frame(&b, NGHTTP2_WINDOW_UPDATE, 0, 0, "\0\0\0\0", 4);
  a = exchange(t, &b, 0);
  assert_true(a.goaway);
  assert_int_equal(a.goaway_code, NGHTTP2_PROTOCOL_ERROR);
  /* garbage after the preface */
  start_conn(&b);
  for (int i = 0; i < 64; i++)
    put(&b, "\xff\xfe\x01\x07", 4);
  a = exchange(t, &b, 0);
  assert_true(a.goaway);
  still_serves_and_stop(t);
}

static void test_stream_id_backwards(void **state) {
  tsrv *t = start(state);
  nghttp2_hd_deflater *d;
  nghttp2_hd_deflate_new(&d, 4096);
  buf b = {0};
  start_conn(&b);
  request(&b, d, 5, "/", NULL, NULL, 1);
  request(&b, d, 3, "/", NULL, NULL, 1);
  answer a = exchange(t, &b, 0);
  if (!a.goaway)
    print_error("rst=%d code=%u status=%d closed=%d\n", a.rst, a.rst_code,
                a.status, a.closed);
  assert_true(a.goaway);
  assert_int_equal(a.goaway_code, NGHTTP2_PROTOCOL_ERROR);
  /* an even (server-initiated) stream id from a client */
  nghttp2_hd_deflate_del(d);
  nghttp2_hd_deflate_new(&d, 4096);
  start_conn(&b);
  request(&b, d, 2, "/", NULL, NULL, 1);
  a = exchange(t, &b, 0);
  assert_true(a.goaway);
  assert_int_equal(a.goaway_code, NGHTTP2_PROTOCOL_ERROR);
  nghttp2_hd_deflate_del(d);
  still_serves_and_stop(t);
}

static void test_oversized_headers_and_bad_request(void **state) {
  tsrv *t = start(state);
  nghttp2_hd_deflater *d;
  nghttp2_hd_deflate_new(&d, 4096);
  buf b = {0};
  start_conn(&b);
  char *big = malloc(6001);
  memset(big, 'v', 6000);
  big[6000] = '\0';
  request(&b, d, 1, "/", "x-big", big, 1);
  answer a = exchange(t, &b, 1);
  assert_int_equal(a.status, 431);
  assert_false(a.goaway);
  free(big);
  /* a request without :path is malformed: RST_STREAM(PROTOCOL_ERROR) */
  nghttp2_hd_deflate_del(d);
  nghttp2_hd_deflate_new(&d, 4096);
  start_conn(&b);
  nghttp2_nv nva[3] = {NVS(":method", "GET"), NVS(":scheme", "http"),
                       NVS(":authority", "x")};
  uint8_t hb[256];
  ssize_t n = nghttp2_hd_deflate_hd(d, hb, sizeof hb, nva, 3);
  frame(&b, NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS | NGHTTP2_FLAG_END_STREAM,
        1, hb, (size_t)n);
  int fd = dial(t->port);
  send_all(fd, &b);
  a = read_answer(fd, 0, 1000);
  close(fd);
  free(b.p);
  assert_true(a.rst);
  assert_int_equal(a.rst_code, NGHTTP2_PROTOCOL_ERROR);
  /* an upper-case field name makes a request malformed (RFC 9113 §8.2.1):
   * nghttp2 resets the stream with PROTOCOL_ERROR and no handler runs */
  nghttp2_hd_deflate_del(d);
  nghttp2_hd_deflate_new(&d, 4096);
  b.p = NULL; /* freed above */
  b.len = b.cap = 0;
  start_conn(&b);
  request(&b, d, 1, "/", "X-Upper", "v", 1);
  fd = dial(t->port);
  send_all(fd, &b);
  a = read_answer(fd, 1, 1000);
  close(fd);
  free(b.p);
  b.p = NULL;
  b.len = b.cap = 0;
  assert_true(a.rst);
  assert_int_equal(a.rst_code, NGHTTP2_PROTOCOL_ERROR);
  assert_int_equal(a.status, 0);
  nghttp2_hd_deflate_del(d);
  still_serves_and_stop(t);
}

/* CVE-2023-44487: open-and-reset in a loop ends in GOAWAY. */
static void test_rapid_reset(void **state) {
  tsrv *t = start(state);
  nghttp2_hd_deflater *d;
  nghttp2_hd_deflate_new(&d, 4096);
  buf b = {0};
  start_conn(&b);
  for (uint32_t i = 0; i < 1500; i++) {
    uint32_t sid = 1 + 2 * i;
    request(&b, d, sid, "/", NULL, NULL, 0);
    frame(&b, NGHTTP2_RST_STREAM, 0, sid, "\0\0\0\x08", 4);
  }
  answer a = exchange(t, &b, 0);
  assert_true(a.goaway);
  assert_true(a.goaway_code == NGHTTP2_ENHANCE_YOUR_CALM ||
              a.goaway_code == NGHTTP2_INTERNAL_ERROR);
  nghttp2_hd_deflate_del(d);
  still_serves_and_stop(t);
}

/* Closing mid-preface, mid-frame, mid-handshake, or TLS garbage: the server
 * just drops the connection. */
static void test_truncated_and_tls_garbage(void **state) {
  tsrv *t = start(state);
  int fd = dial(t->port);
  send(fd, PREFACE, 10, MSG_NOSIGNAL);
  close(fd);
  fd = dial(t->port);
  send(fd, PREFACE "\0\0\x10\x04", sizeof PREFACE - 1 + 4, MSG_NOSIGNAL);
  close(fd);
  fd = dial(t->tls_port);
  send(fd, "\x16\x03\x01\x00\x05hello-not-tls", 18, MSG_NOSIGNAL);
  answer a = read_answer(fd, 0, 2000);
  assert_true(a.closed);
  close(fd);
  fd = dial(t->tls_port);
  send(fd, PREFACE, sizeof PREFACE - 1, MSG_NOSIGNAL);
  a = read_answer(fd, 0, 2000);
  assert_true(a.closed);
  close(fd);
  still_serves_and_stop(t);
}

/* Connection timeouts: no preface in time → closed; idle after the
 * preface → GOAWAY(NO_ERROR), then closed. */
static void test_connection_timeouts(void **state) {
  h2t_server_config cfg = {H2T_SERVER_CONFIG_INIT};
  cfg.handshake_timeout_ms = 300;
  cfg.idle_timeout_ms = 400;
  tsrv *t = start_cfg(state, &cfg);
  uint64_t t0 = h2t_now_us();
  int fd = dial(t->port);
  answer a = read_answer(fd, 0, 3000);
  close(fd);
  assert_true(a.closed);
  assert_true(h2t_now_us() - t0 < 2000000);
  buf b = {0};
  start_conn(&b);
  fd = dial(t->port);
  send_all(fd, &b);
  free(b.p);
  t0 = h2t_now_us();
  a = read_answer(fd, 0, 3000);
  uint64_t took = h2t_now_us() - t0;
  assert_true(a.goaway);
  assert_int_equal(a.goaway_code, NGHTTP2_NO_ERROR);
  assert_true(took > 300000 && took < 2500000);
  assert_true(closes_soon(fd));
  close(fd);
  still_serves_and_stop(t);
}

/* Headers trickled and never finished: the stream timeout resets it. */
static void test_trickled_headers_time_out(void **state) {
  h2t_server_config cfg = {H2T_SERVER_CONFIG_INIT};
  cfg.stream_timeout_ms = 300;
  tsrv *t = start_cfg(state, &cfg);
  nghttp2_hd_deflater *d;
  nghttp2_hd_deflate_new(&d, 4096);
  buf b = {0};
  start_conn(&b);
  request(&b, d, 1, "/", NULL, NULL, 1);
  /* keep the frame header and 3 payload bytes of the request only */
  size_t pre = sizeof PREFACE - 1 + 9;
  b.len = pre + 9 + 3;
  int fd = dial(t->port);
  send_all(fd, &b);
  free(b.p);
  uint64_t t0 = h2t_now_us();
  answer a = read_answer(fd, 0, 3000);
  close(fd);
  assert_true(a.rst);
  assert_int_equal(a.rst_code, NGHTTP2_CANCEL);
  assert_true(h2t_now_us() - t0 < 2500000);
  nghttp2_hd_deflate_del(d);
  still_serves_and_stop(t);
}


int main(void) {
  signal(SIGPIPE, SIG_IGN);
  const struct CMUnitTest tests[] = {
      H2T_TEST_PER_MODE(test_bad_preface),
      H2T_TEST_PER_MODE(test_invalid_frames),
      H2T_TEST_PER_MODE(test_stream_id_backwards),
      H2T_TEST_PER_MODE(test_oversized_headers_and_bad_request),
      H2T_TEST_PER_MODE(test_rapid_reset),
      H2T_TEST_PER_MODE(test_truncated_and_tls_garbage),
      H2T_TEST_PER_MODE(test_connection_timeouts),
      H2T_TEST_PER_MODE(test_trickled_headers_time_out),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
