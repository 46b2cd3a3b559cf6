/*
 * h2/server: real clients (curl, nghttp, h2load) against an in-process
 * server on loopback, for every writer mode: h2c and TLS, bodies from
 * buffers, files, generators that defer, async answers, trailers, hook
 * order, cancel, timeouts, limits, load shedding, graceful shutdown.
 */
#include <fcntl.h>
#include <pthread.h>
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

#include "handlers.h"

#include <ev.h>
#include <h2trace/client.h>
#include <h2trace/server.h>
#include "h2/server/server_int.h"
#include "peer.h"

/* ---- the server under test, on its own thread ------------------------ */

#define MAX_EV 4096
typedef struct rec_ev {
  h2t_event_type type;
  int32_t stream_id;
  uint64_t req_id;
  uint32_t code;
  int status;
  uint64_t bytes;
  char path[64];
} rec_ev;

typedef struct tsrv {
  h2t_server *s;
  pthread_t th;
  int port, tls_port;
  h2t_writer_mode mode;
  h2t_server_trace tr;
  pthread_mutex_t mu;
  rec_ev ev[MAX_EV];
  size_t nev;
  uint64_t last_req_id;      /* of /hold */
  uint32_t closed_code;      /* /hold's on_close */
  int closed;
  char big_path[300];
} tsrv;

static void rec_any(const h2t_event *ev, void *user) {
  tsrv *t = user;
  pthread_mutex_lock(&t->mu);
  if (t->nev < MAX_EV) {
    rec_ev *r = &t->ev[t->nev++];
    memset(r, 0, sizeof *r);
    r->type = ev->type;
    r->stream_id = ev->stream_id;
    r->req_id = ev->req_id;
    switch (ev->type) {
    case H2T_EV_SRV_STREAM_CLOSED:
      r->code = ev->u.stream_closed.error_code;
      r->bytes = ev->u.stream_closed.bytes_out;
      break;
    case H2T_EV_SRV_STREAM_RESET:
      r->code = ev->u.stream_reset.error_code;
      break;
    case H2T_EV_SRV_GOAWAY_SENT:
      r->code = ev->u.goaway_sent.error_code;
      break;
    case H2T_EV_SRV_WROTE_HEADERS:
      r->status = ev->u.response.status;
      break;
    case H2T_EV_SRV_WROTE_RESPONSE:
      r->bytes = ev->u.body.bytes;
      break;
    case H2T_EV_SRV_REQUEST_HEADERS:
      snprintf(r->path, sizeof r->path, "%s %s", ev->u.request_headers.method,
               ev->u.request_headers.path);
      break;
    case H2T_EV_SRV_LOAD_SHED:
      r->code = ev->u.load_shed.action;
      break;
    default:
      break;
    }
  }
  pthread_mutex_unlock(&t->mu);
}

static void h_hello(h2t_server_req *r, void *user) {
  h2t_header h = {"content-type", "text/plain"};
  h2t_server_req_respond(r, 200, &h, 1, "hello\n", 6, 0);
}

/* /hdrs: the request's headers, kept by the server for as long as the
 * request, come back in the answer; names the API must refuse (capitals
 * in the first eight bytes, after them, pseudo, empty) are counted. */
static void h_hdrs(h2t_server_req *r, void *user) {
  (void)user;
  static const h2t_header bad[] = {{"X-Short", "v"},
                                   {"x-long-header-namE", "v"},
                                   {"x-long-header-name-Upper-tail", "v"},
                                   {":status", "v"},
                                   {"", "v"}};
  int refused = 0;
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    refused += h2t_server_req_respond(r, 200, &bad[i], 1, "x", 1, 0) ==
               H2T_ERR_INVALID_ARG;
  const char *echo = h2t_server_req_header(r, "x-echo");
  char body[512];
  int n = snprintf(body, sizeof body, "%s %s %s refused=%d\n",
                   h2t_server_req_method(r), h2t_server_req_path(r),
                   echo ? echo : "-", refused);
  h2t_header h[] = {{"x-echoed", echo ? echo : "-"},
                    {"x-a-long-lowercase-name-0123456789", "ok"}};
  h2t_server_req_respond(r, 200, h, 2, body, (size_t)n, 0);
}

/* /gen?n=N: a generator that defers every other call and resumes from a
 * zero-delay timer: the answer must still be N bytes, in order. */
typedef struct gen {
  ev_timer t;
  h2t_server_req *r;
  struct ev_loop *loop;
  size_t left, sent;
  int flip;
} gen;

static void gen_resume(struct ev_loop *loop, ev_timer *t, int revents) {
  gen *g = t->data;
  h2t_server_req_resume(g->r);
}

static ssize_t gen_fill(h2t_server_req *r, uint8_t *buf, size_t len, int *eof,
                        void *user) {
  gen *g = user;
  if ((g->flip ^= 1)) {
    ev_timer_start(g->loop, &g->t);
    return H2T_SERVER_BODY_DEFER;
  }
  size_t n = g->left < len ? g->left : len;
  if (n > 5000)
    n = 5000;
  for (size_t i = 0; i < n; i++)
    buf[i] = (uint8_t)('0' + (g->sent + i) % 10);
  g->sent += n;
  g->left -= n;
  *eof = g->left == 0;
  return (ssize_t)n;
}

static void gen_close(h2t_server_req *r, uint32_t code, void *user) {
  gen *g = user;
  ev_timer_stop(g->loop, &g->t);
  free(g);
}

static void h_gen(h2t_server_req *r, void *user) {
  gen *g = calloc(1, sizeof *g);
  const char *q = strstr(h2t_server_req_path(r), "n=");
  g->left = q ? strtoul(q + 2, NULL, 10) : 0;
  g->r = r;
  g->loop = h2t_server_loop(h2t_server_req_server(r));
  ev_timer_init(&g->t, gen_resume, 0., 0.);
  g->t.data = g;
  h2t_server_req_on(r, NULL, gen_close, g);
  h2t_header tr = {"x-checksum", "digits"};
  assert_int_equal(h2t_server_req_set_trailers(r, &tr, 1), 0);
  assert_int_equal(h2t_server_req_respond_gen(r, 200, NULL, 0, gen_fill, g), 0);
}

/* /sum: reads the whole body, answers with its length (async: on eof). */
typedef struct sum {
  size_t n;
} sum;

static int sum_body(h2t_server_req *r, const uint8_t *d, size_t len, int eof,
                    void *user) {
  sum *s = user;
  s->n += len;
  if (eof) {
    char b[32];
    int k = snprintf(b, sizeof b, "%zu", s->n);
    h2t_server_req_respond(r, 200, NULL, 0, b, (size_t)k, 0);
  }
  return 0;
}

static void sum_close(h2t_server_req *r, uint32_t code, void *user) {
  free(user);
}

static void h_sum(h2t_server_req *r, void *user) {
  h2t_server_req_on(r, sum_body, sum_close, calloc(1, sizeof(sum)));
}

/* /hold: never answers; records its id for a cancel from another thread */
static void hold_close(h2t_server_req *r, uint32_t code, void *user) {
  tsrv *t = user;
  pthread_mutex_lock(&t->mu);
  t->closed = 1;
  t->closed_code = code;
  pthread_mutex_unlock(&t->mu);
}

static void h_hold(h2t_server_req *r, void *user) {
  tsrv *t = user;
  h2t_server_req_on(r, NULL, hold_close, t);
  h2t_server_req_set_status(r, "holding");
  pthread_mutex_lock(&t->mu);
  t->last_req_id = h2t_server_req_id(r);
  pthread_mutex_unlock(&t->mu);
}

/* /fnv: answers "<length> <FNV-1a 64 of the body>" once it has all */
typedef struct fnv {
  size_t n;
  uint64_t h;
} fnv;

static uint64_t fnv_add(uint64_t h, const uint8_t *d, size_t len) {
  for (size_t i = 0; i < len; i++)
    h = (h ^ d[i]) * 0x100000001b3ull;
  return h;
}

static int fnv_body(h2t_server_req *r, const uint8_t *d, size_t len, int eof,
                    void *user) {
  fnv *f = user;
  f->n += len;
  f->h = fnv_add(f->h, d, len);
  if (eof) {
    char b[64];
    int k = snprintf(b, sizeof b, "%zu %016llx", f->n,
                     (unsigned long long)f->h);
    h2t_server_req_respond(r, 200, NULL, 0, b, (size_t)k, 0);
  }
  return 0;
}

static void h_fnv(h2t_server_req *r, void *user) {
  fnv *f = calloc(1, sizeof *f);
  f->h = 0xcbf29ce484222325ull;
  h2t_server_req_on(r, fnv_body, sum_close, f);
}

static void h_big(h2t_server_req *r, void *user) {
  tsrv *t = user;
  int fd = open(t->big_path, O_RDONLY);
  h2t_server_req_respond_file(r, 200, NULL, 0, fd, 0, -1);
}

/* /slice?k=file|nocopy&n=N: N bytes of big.bin from offset 7, as a file
 * range or as a NOCOPY buffer that on_close frees (ASan sees a writer that
 * reads it after on_close). */
static void slice_close(h2t_server_req *r, uint32_t code, void *user) {
  free(user);
}

static void h_slice(h2t_server_req *r, void *user) {
  tsrv *t = user;
  const char *p = h2t_server_req_path(r), *q = strstr(p, "n=");
  size_t n = q ? strtoul(q + 2, NULL, 10) : 0;
  int fd = open(t->big_path, O_RDONLY);
  assert_true(fd >= 0);
  if (strstr(p, "k=file")) {
    assert_int_equal(
        h2t_server_req_respond_file(r, 200, NULL, 0, fd, 7, (int64_t)n), 0);
    return;
  }
  uint8_t *b = malloc(n + 1);
  assert_int_equal(pread(fd, b, n, 7), (ssize_t)n);
  close(fd);
  h2t_server_req_on(r, NULL, slice_close, b);
  assert_int_equal(
      h2t_server_req_respond(r, 200, NULL, 0, b, n, H2T_RESPOND_NOCOPY), 0);
}

static void *srv_thread(void *arg) {
  h2t_server_run(arg);
  return NULL;
}

static tsrv *tsrv_start(h2t_writer_mode mode, h2t_server_config *cfg) {
  tsrv *t = calloc(1, sizeof *t);
  pthread_mutex_init(&t->mu, NULL);
  t->mode = mode;
  h2t_server_trace_set_all(&t->tr, rec_any, t);
  h2t_server_config c = {H2T_SERVER_CONFIG_INIT};
  if (cfg)
    c = *cfg;
  c.writer = mode;
  c.trace = &t->tr;
  assert_int_equal(h2t_server_new(&t->s, &c), 0);
  h2t_listen_opts lo = {H2T_LISTEN_OPTS_INIT};
  int idx = h2t_server_listen(t->s, &lo);
  assert_true(idx >= 0);
  t->port = h2t_server_port(t->s, idx);
  assert_true(t->port > 0);
  const char *cert, *key;
  assert_int_equal(h2t_test_make_cert(&cert, &key), 0);
  h2t_listen_opts tl = {H2T_LISTEN_OPTS_INIT, .cert_file = cert,
                        .key_file = key};
  idx = h2t_server_listen(t->s, &tl);
  assert_true(idx >= 0);
  t->tls_port = h2t_server_port(t->s, idx);
  snprintf(t->big_path, sizeof t->big_path, "%s/big.bin", h2t_test_tmpdir());
  if (access(t->big_path, R_OK) != 0) {
    FILE *f = fopen(t->big_path, "w");
    for (int i = 0; i < 3 * 1024 * 1024; i++)
      fputc('a' + i % 23, f);
    fclose(f);
  }
  h2t_server_handle(t->s, "/hello", h_hello, t);
  h2t_server_handle(t->s, "/gen", h_gen, t);
  h2t_server_handle(t->s, "/sum", h_sum, t);
  h2t_server_handle(t->s, "/delay", h2t_test_delay_handler, NULL);
  h2t_server_handle(t->s, "/hold", h_hold, t);
  h2t_server_handle(t->s, "/big", h_big, t);
  h2t_server_handle(t->s, "/slice", h_slice, t);
  h2t_server_handle(t->s, "/fnv", h_fnv, t);
  h2t_server_handle(t->s, "/hdrs", h_hdrs, t);
  assert_int_equal(pthread_create(&t->th, NULL, srv_thread, t->s), 0);
  return t;
}

static void tsrv_stop(tsrv *t) {
  h2t_server_shutdown_async(t->s);
  pthread_join(t->th, NULL);
  h2t_server_del(t->s);
  pthread_mutex_destroy(&t->mu);
  free(t);
}

static char *url(const tsrv *t, int tls, const char *path) {
  static char b[8][256];
  static int i;
  char *u = b[i++ % 8];
  snprintf(u, 256, "%s://127.0.0.1:%d%s", tls ? "https" : "http",
           tls ? t->tls_port : t->port, path);
  return u;
}

/* curl, returns its exit code; *out: body then "\n<code> <version>" */
static int curl(const tsrv *t, int tls, const char *path, const char *data,
                char **out) {
  char *argv[24];
  int n = 0;
  argv[n++] = "curl";
  argv[n++] = "-sS";
  argv[n++] = "--max-time";
  argv[n++] = "20";
  argv[n++] = tls ? "--http2" : "--http2-prior-knowledge";
  if (tls)
    argv[n++] = "-k";
  if (data) {
    argv[n++] = "--data-binary";
    argv[n++] = (char *)data;
  }
  argv[n++] = "-w";
  argv[n++] = "\n%{http_code} %{http_version}";
  argv[n++] = url(t, tls, path);
  argv[n] = NULL;
  return h2t_test_run(argv, 25000, out);
}

static size_t count_ev(tsrv *t, h2t_event_type type) {
  size_t n = 0;
  for (size_t i = 0; i < t->nev; i++)
    n += t->ev[i].type == type;
  return n;
}

static h2t_writer_mode mode_of(void **state) {
  return *(h2t_writer_mode *)*state;
}

/* ---- tests --------------------------------------------------------- */

static void test_curl_h2c_and_tls(void **state) {
  tsrv *t = tsrv_start(mode_of(state), NULL);
  for (int tls = 0; tls < 2; tls++) {
    char *out = NULL;
    assert_int_equal(curl(t, tls, "/hello", NULL, &out), 0);
    assert_string_equal(out, "hello\n\n200 2");
    free(out);
    assert_int_equal(curl(t, tls, "/nope", NULL, &out), 0);
    assert_non_null(strstr(out, "\n404 2"));
    free(out);
    /* a request body, read to the end before the answer */
    char data[8200];
    memset(data, 'q', sizeof data - 1);
    data[sizeof data - 1] = '\0';
    assert_int_equal(curl(t, tls, "/sum", data, &out), 0);
    assert_string_equal(out, "8199\n200 2");
    free(out);
  }
  tsrv_stop(t);
}

/* Request headers reach the handler intact (the server keeps nghttp2's
 * buffers rather than copying them); response header names with a
 * capital letter anywhere are refused, lowercase ones of any length go out
 * as given. */
static void test_header_strings(void **state) {
  tsrv *t = tsrv_start(mode_of(state), NULL);
  for (int round = 0; round < 2; round++) {
    /* two requests on one connection (TLS: curl 7.88 cannot reuse a
     * prior-knowledge h2c one): the second's headers come from HPACK's
     * dynamic table, buffers nghttp2 shares with it */
    char *u = url(t, round, "/hdrs?q=1");
    char *argv[] = {"curl", "-sS", "--max-time", "20", "-k",
                    round ? "--http2" : "--http2-prior-knowledge", "-i", "-H",
                    "x-echo: value-of-some-length-0123456789", u,
                    round ? u : NULL, NULL};
    char *out = NULL;
    assert_int_equal(h2t_test_run(argv, 25000, &out), 0);
    const char *first = strstr(out, "refused=5");
    assert_non_null(first);
    if (round)
      assert_non_null(strstr(first + 1, "refused=5"));
    assert_non_null(strstr(out, "HTTP/2 200"));
    assert_non_null(
        strstr(out, "x-echoed: value-of-some-length-0123456789\r\n"));
    assert_non_null(strstr(out, "x-a-long-lowercase-name-0123456789: ok\r\n"));
    assert_non_null(strstr(
        out, "GET /hdrs?q=1 value-of-some-length-0123456789 refused=5\n"));
    free(out);
  }
  tsrv_stop(t);
}

static void test_bodies_file_gen_trailers(void **state) {
  tsrv *t = tsrv_start(mode_of(state), NULL);
  for (int tls = 0; tls < 2; tls++) {
    char *out = NULL;
    /* a 3 MiB file: more than any window, so flow control must work */
    char *argv[] = {"sh", "-c", NULL, NULL};
    char cmd[600];
    snprintf(cmd, sizeof cmd,
             "curl -sSk --http2%s --max-time 20 %s | cmp - %s && echo SAME",
             tls ? "" : "-prior-knowledge", url(t, tls, "/big"), t->big_path);
    argv[2] = cmd;
    assert_int_equal(h2t_test_run(argv, 25000, &out), 0);
    assert_non_null(strstr(out, "SAME"));
    free(out);
    /* a deferring generator with trailers, through nghttp */
    char *ng[] = {"nghttp", "-v", url(t, tls, "/gen?n=123457"), NULL};
    assert_int_equal(h2t_test_run(ng, 25000, &out), 0);
    assert_non_null(strstr(out, "x-checksum: digits"));
    free(out);
    /* a client window of 1 KiB: the server's sends block on flow control,
     * and the flow_blocked hook says so */
    pthread_mutex_lock(&t->mu);
    size_t fb0 = count_ev(t, H2T_EV_SRV_FLOW_BLOCKED);
    pthread_mutex_unlock(&t->mu);
    char *ngw[] = {"nghttp", "-w", "10", "-W", "10", url(t, tls, "/big"), NULL};
    assert_int_equal(h2t_test_run(ngw, 25000, &out), 0);
    free(out);
    pthread_mutex_lock(&t->mu);
    size_t fb1 = count_ev(t, H2T_EV_SRV_FLOW_BLOCKED);
    pthread_mutex_unlock(&t->mu);
    assert_true(fb1 > fb0);
    snprintf(cmd, sizeof cmd, "nghttp '%s' 2>/dev/null | wc -c", url(t, tls, "/gen?n=123457"));
    assert_int_equal(h2t_test_run(argv, 25000, &out), 0);
    if (atoi(out) != 123457)
      print_error("%s: %s\n", cmd, out);
    assert_int_equal(atoi(out), 123457);
    free(out);
  }
  tsrv_stop(t);
}

/* File ranges and NOCOPY buffers go to the socket by reference (h2c) or
 * copied once into TLS records: byte-exact at frame (16384), window
 * (65535) and by-reference (1024) boundaries, and past 1 MiB. */
static void test_zero_copy_bodies_exact(void **state) {
  tsrv *t = tsrv_start(mode_of(state), NULL);
  static const char *sizes =
      "0 1 1023 1024 16383 16384 16385 65535 65536 65537 1048576 1048583";
  for (int tls = 0; tls < 2; tls++) {
    for (int k = 0; k < 2; k++) {
      char cmd[1200], *out = NULL;
      snprintf(cmd, sizeof cmd,
               "for n in %s; do "
               "curl -sSk --http2%s --max-time 20 '%s?k=%s&n='$n >%s/got || exit 1; "
               "tail -c +8 %s | head -c $n | cmp - %s/got || exit 1; "
               "done; echo SAME",
               sizes, tls ? "" : "-prior-knowledge", url(t, tls, "/slice"),
               k ? "file" : "nocopy", h2t_test_tmpdir(), t->big_path,
               h2t_test_tmpdir());
      char *argv[] = {"sh", "-c", cmd, NULL};
      assert_int_equal(h2t_test_run(argv, 60000, &out), 0);
      if (!strstr(out, "SAME"))
        print_error("tls=%d %s: %s\n", tls, k ? "file" : "nocopy", out);
      assert_non_null(strstr(out, "SAME"));
      free(out);
    }
    /* many at once on one connection, through a 1 KiB window */
    char cmd[600], *out = NULL;
    snprintf(cmd, sizeof cmd,
             "nghttp -w 10 -W 10 -m 8 '%s?k=file&n=100000' 2>/dev/null | wc -c; "
             "nghttp -m 8 '%s?k=nocopy&n=100000' 2>/dev/null | wc -c",
             url(t, tls, "/slice"), url(t, tls, "/slice"));
    char *argv[] = {"sh", "-c", cmd, NULL};
    assert_int_equal(h2t_test_run(argv, 60000, &out), 0);
    unsigned a = 0, b = 0;
    assert_int_equal(sscanf(out, "%u %u", &a, &b), 2);
    assert_int_equal(a, 800000);
    assert_int_equal(b, 800000);
    free(out);
  }
  tsrv_stop(t);
}

/* The client's buffer bodies (copied once, into its output) and the
 * server's body path (to the handler from nghttp2's buffer) keep every
 * byte, at frame and window boundaries and past 1 MiB, h2c and TLS. */
static void test_client_upload_exact(void **state) {
  tsrv *t = tsrv_start(mode_of(state), NULL);
  h2t_client_config cc = {H2T_CLIENT_CONFIG_INIT, .insecure = 1};
  h2t_client *c = NULL;
  assert_int_equal(h2t_client_new(&c, &cc), 0);
  static const size_t sizes[] = {1, 1023, 16383, 16384, 16385, 65535,
                                 65536, 1048576 + 7};
  uint8_t *up = malloc(1048576 + 7);
  for (size_t i = 0; i < 1048576 + 7; i++)
    up[i] = (uint8_t)(i * 131 + (i >> 9));
  for (int tls = 0; tls < 2; tls++)
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
      h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = url(t, tls, "/fnv"),
                            .method = "POST", .body = up,
                            .body_len = sizes[i]};
      h2t_response resp;
      assert_int_equal(h2t_client_fetch(c, &o, &resp), 0);
      assert_int_equal(resp.status, 200);
      char want[64];
      snprintf(want, sizeof want, "%zu %016llx", sizes[i],
               (unsigned long long)fnv_add(0xcbf29ce484222325ull, up,
                                           sizes[i]));
      if (resp.body_len != strlen(want) ||
          memcmp(resp.body, want, resp.body_len))
        fail_msg("tls=%d %zu bytes: got \"%.*s\", want \"%s\"", tls,
                 sizes[i], (int)resp.body_len, (const char *)resp.body, want);
      h2t_response_free(&resp);
    }
  free(up);
  h2t_client_del(c);
  tsrv_stop(t);
}

static int h2load_ok(const char *out, int n) {
  char want[96];
  snprintf(want, sizeof want, "%d succeeded, 0 failed, 0 errored", n);
  return strstr(out, want) != NULL;
}

static void test_h2load_no_failures(void **state) {
  /* the reused writer with writer_spin_us, the others without */
  h2t_server_config cfg = {H2T_SERVER_CONFIG_INIT, .writer_spin_us = 100};
  tsrv *t = tsrv_start(mode_of(state), &cfg);
  for (int tls = 0; tls < 2; tls++) {
    char *out = NULL;
    char *argv[] = {"h2load", "-n", "3000", "-c", "4", "-m", "10",
                    url(t, tls, "/hello"), NULL};
    assert_int_equal(h2t_test_run(argv, 30000, &out), 0);
    if (!h2load_ok(out, 3000))
      print_error("%s\n", out);
    assert_true(h2load_ok(out, 3000));
    free(out);
    /* concurrent async answers on one connection: 20 x 200 ms in parallel
     * must take well under 20 x 200 ms */
    char *argv2[] = {"h2load", "-n", "20", "-c", "1", "-m", "20",
                     url(t, tls, "/delay?ms=200"), NULL};
    uint64_t t0 = h2t_now_us();
    assert_int_equal(h2t_test_run(argv2, 30000, &out), 0);
    assert_true(h2load_ok(out, 20));
    assert_true(h2t_now_us() - t0 < 2000000);
    free(out);
  }
  h2t_server_stats st;
  tsrv_stop(t);
  (void)st;
}

static void test_hook_order(void **state) {
  tsrv *t = tsrv_start(mode_of(state), NULL);
  for (int tls = 0; tls < 2; tls++) {
    char *out = NULL;
    pthread_mutex_lock(&t->mu);
    t->nev = 0;
    pthread_mutex_unlock(&t->mu);
    assert_int_equal(curl(t, tls, "/sum", "abc", &out), 0);
    free(out);
    /* stream_closed may follow the client's exit */
    for (int i = 0; i < 300; i++) {
      pthread_mutex_lock(&t->mu);
      size_t n = count_ev(t, H2T_EV_SRV_STREAM_CLOSED);
      pthread_mutex_unlock(&t->mu);
      if (n)
        break;
      usleep(10000);
    }
    pthread_mutex_lock(&t->mu);
    static const h2t_event_type want_tls[] = {
        H2T_EV_SRV_CONN_ACCEPTED,     H2T_EV_SRV_TLS_HANDSHAKE_DONE,
        H2T_EV_SRV_REQUEST_HEADERS,   H2T_EV_SRV_HANDLER_STARTED,
        H2T_EV_SRV_REQUEST_BODY_DONE, H2T_EV_SRV_WROTE_HEADERS,
        H2T_EV_SRV_WROTE_FIRST_BYTE,  H2T_EV_SRV_WROTE_RESPONSE,
        H2T_EV_SRV_STREAM_CLOSED};
    h2t_event_type want[16];
    size_t nwant = 0, k = 0;
    for (size_t i = 0; i < sizeof want_tls / sizeof want_tls[0]; i++)
      if (tls || want_tls[i] != H2T_EV_SRV_TLS_HANDSHAKE_DONE)
        want[nwant++] = want_tls[i];
    uint64_t req_id = 0;
    assert_true(t->nev > 0);
    assert_int_equal(t->ev[0].type, H2T_EV_SRV_CONN_ACCEPTED);
    for (size_t i = 0; i < t->nev && k < nwant; i++) {
      if (t->ev[i].type != want[k])
        continue;
      if (t->ev[i].type == H2T_EV_SRV_REQUEST_HEADERS) {
        assert_string_equal(t->ev[i].path, "POST /sum");
        req_id = t->ev[i].req_id;
        assert_true(req_id > 0);
        assert_int_equal(t->ev[i].stream_id, 1);
      }
      if (req_id)
        assert_int_equal(t->ev[i].req_id, req_id);
      if (t->ev[i].type == H2T_EV_SRV_WROTE_HEADERS)
        assert_int_equal(t->ev[i].status, 200);
      if (t->ev[i].type == H2T_EV_SRV_STREAM_CLOSED) {
        assert_int_equal(t->ev[i].code, 0);
        assert_int_equal(t->ev[i].bytes, 1); /* "3" */
      }
      k++;
    }
    if (k != nwant)
      print_error("tls=%d: stopped at expected event %zu of %zu\n", tls, k,
                  nwant);
    assert_int_equal(k, nwant);
    assert_int_equal(count_ev(t, H2T_EV_SRV_REQUEST_HEADERS), 1);
    assert_int_equal(count_ev(t, H2T_EV_SRV_STREAM_CLOSED), 1);
    pthread_mutex_unlock(&t->mu);
  }
  tsrv_stop(t);
}

/* Cancel from another thread (the in-flight table's path): the client sees
 * RST_STREAM(CANCEL), the handler's on_close gets CANCEL. */
static void test_cancel_from_other_thread(void **state) {
  tsrv *t = tsrv_start(mode_of(state), NULL);
  char log[300];
  snprintf(log, sizeof log, "%s/cancel-%d.log", h2t_test_tmpdir(), t->mode);
  char *argv[] = {"nghttp", "-v", url(t, 0, "/hold"), NULL};
  pid_t pid = h2t_test_spawn(argv, log);
  uint64_t id = 0;
  for (int i = 0; i < 250 && !id; i++) {
    usleep(20000);
    pthread_mutex_lock(&t->mu);
    id = t->last_req_id;
    pthread_mutex_unlock(&t->mu);
  }
  assert_true(id > 0);
  h2t__srv_cancel_post(t->s, id, "test");
  int closed = 0;
  for (int i = 0; i < 250 && !closed; i++) {
    usleep(20000);
    pthread_mutex_lock(&t->mu);
    closed = t->closed;
    pthread_mutex_unlock(&t->mu);
  }
  assert_true(closed);
  assert_int_equal(t->closed_code, 8 /* CANCEL */);
  h2t_test_stop(pid);
  FILE *f = fopen(log, "r");
  char buf[8192] = "";
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  buf[n] = '\0';
  fclose(f);
  assert_non_null(strstr(buf, "RST_STREAM"));
  assert_non_null(strstr(buf, "CANCEL"));
  pthread_mutex_lock(&t->mu);
  int sent_cancel = 0;
  for (size_t i = 0; i < t->nev; i++)
    sent_cancel |= t->ev[i].type == H2T_EV_SRV_STREAM_RESET &&
                   t->ev[i].req_id == id && t->ev[i].code == 8;
  pthread_mutex_unlock(&t->mu);
  assert_true(sent_cancel);
  tsrv_stop(t);
}

static void test_stream_timeout_and_header_limit(void **state) {
  h2t_server_config cfg = {H2T_SERVER_CONFIG_INIT};
  cfg.stream_timeout_ms = 200;
  cfg.max_header_list_size = 4096;
  tsrv *t = tsrv_start(mode_of(state), &cfg);
  char *out = NULL;
  uint64_t t0 = h2t_now_us();
  assert_int_not_equal(curl(t, 0, "/delay?ms=5000", NULL, &out), 0);
  assert_true(h2t_now_us() - t0 < 3000000);
  free(out);
  /* a header list over the limit gets a 431, and the server goes on */
  char big[6000];
  memset(big, 'v', sizeof big - 1);
  memcpy(big, "x-big: ", 7);
  big[sizeof big - 1] = '\0';
  char *argv[] = {"curl", "-sS", "--http2-prior-knowledge", "-H", big, "-w",
                  "\n%{http_code}", url(t, 0, "/hello"), NULL};
  assert_int_equal(h2t_test_run(argv, 20000, &out), 0);
  assert_non_null(strstr(out, "\n431"));
  free(out);
  assert_int_equal(curl(t, 0, "/hello", NULL, &out), 0);
  assert_non_null(strstr(out, "200 2"));
  free(out);
  tsrv_stop(t);
}

static void test_shed_refused_stream(void **state) {
  h2t_server_config cfg = {H2T_SERVER_CONFIG_INIT};
  cfg.shed_inflight = 2;
  tsrv *t = tsrv_start(mode_of(state), &cfg);
  char *out = NULL;
  char *argv[] = {"nghttp", "-v", "-m", "6", url(t, 0, "/delay?ms=300"), NULL};
  h2t_test_run(argv, 20000, &out);
  assert_non_null(strstr(out, "REFUSED_STREAM"));
  free(out);
  char *argv2[] = {"h2load", "-n", "10", "-c", "1", "-m", "10",
                   url(t, 0, "/delay?ms=300"), NULL};
  h2t_test_run(argv2, 20000, &out);
  assert_null(strstr(out, "10 succeeded"));
  free(out);
  pthread_mutex_lock(&t->mu);
  size_t nref = 0;
  for (size_t i = 0; i < t->nev; i++)
    nref += t->ev[i].type == H2T_EV_SRV_LOAD_SHED &&
            t->ev[i].code == H2T_SHED_REFUSED_STREAM;
  pthread_mutex_unlock(&t->mu);
  assert_true(nref >= 4 + 8);
  tsrv_stop(t);
}

static void test_shed_503_and_conn_limit(void **state) {
  h2t_server_config cfg = {H2T_SERVER_CONFIG_INIT};
  cfg.shed_inflight = 2;
  cfg.shed_action = H2T_SHED_503;
  cfg.max_conns = 1;
  tsrv *t = tsrv_start(mode_of(state), &cfg);
  char *out = NULL;
  char *argv[] = {"h2load", "-n", "8", "-c", "1", "-m", "8",
                  url(t, 0, "/delay?ms=300"), NULL};
  assert_int_equal(h2t_test_run(argv, 20000, &out), 0);
  /* h2load: "status codes: 2 2xx, 0 3xx, 0 4xx, 6 5xx" */
  const char *sc = strstr(out, "status codes:");
  assert_non_null(sc);
  int c2 = -1, c5 = -1;
  assert_int_equal(sscanf(sc, "status codes: %d 2xx, %*d 3xx, %*d 4xx, %d 5xx",
                          &c2, &c5), 2);
  assert_int_equal(c2, 2);
  assert_int_equal(c5, 6);
  free(out);
  /* Hold the only connection slot, then a second connection is closed.
   * h2load's connection may still hold the slot when ours arrives: then
   * ours is shed (load_shed, no conn_accepted) and we try again. */
  int fd = -1;
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(t->port)};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  for (int attempt = 0; attempt < 50 && fd < 0; attempt++) {
    pthread_mutex_lock(&t->mu);
    size_t acc0 = count_ev(t, H2T_EV_SRV_CONN_ACCEPTED);
    size_t shed0 = count_ev(t, H2T_EV_SRV_LOAD_SHED);
    pthread_mutex_unlock(&t->mu);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    int held = 0, shed = 0;
    for (int i = 0; i < 300 && !held && !shed; i++) {
      pthread_mutex_lock(&t->mu);
      held = count_ev(t, H2T_EV_SRV_CONN_ACCEPTED) > acc0;
      shed = count_ev(t, H2T_EV_SRV_LOAD_SHED) > shed0;
      pthread_mutex_unlock(&t->mu);
      if (!held && !shed)
        usleep(10000);
    }
    if (!held) {
      close(fd);
      fd = -1;
      usleep(20000);
    }
  }
  assert_true(fd >= 0);
  /* A slot held by a connection with no request would be given to the
   * newcomer (eviction, tests/test_server_bounds.c): hold it with a request
   * in progress, GET /delay?ms=3000 in raw HPACK (static-table names). */
  static const uint8_t hold[] =
      "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
      "\x00\x00\x00\x04\x00\x00\x00\x00\x00"         /* SETTINGS */
      "\x00\x00\x1d\x01\x05\x00\x00\x00\x01"         /* HEADERS 1, ES|EH */
      "\x82\x86\x44\x0e/delay?ms=3000\x41\x09localhost";
  pthread_mutex_lock(&t->mu);
  size_t hs0 = count_ev(t, H2T_EV_SRV_HANDLER_STARTED);
  pthread_mutex_unlock(&t->mu);
  assert_int_equal(send(fd, hold, sizeof hold - 1, MSG_NOSIGNAL),
                   (ssize_t)(sizeof hold - 1));
  for (int i = 0; i < 300; i++) {
    pthread_mutex_lock(&t->mu);
    int started = count_ev(t, H2T_EV_SRV_HANDLER_STARTED) > hs0;
    pthread_mutex_unlock(&t->mu);
    if (started)
      break;
    usleep(10000);
  }
  assert_int_not_equal(curl(t, 0, "/hello", NULL, &out), 0);
  free(out);
  close(fd);
  int ok = 0; /* the slot frees once the server has seen the close */
  for (int i = 0; i < 20 && !ok; i++) {
    ok = curl(t, 0, "/hello", NULL, &out) == 0;
    free(out);
    if (!ok)
      usleep(50000);
  }
  assert_true(ok);
  pthread_mutex_lock(&t->mu);
  size_t n503 = 0, nclose = 0;
  for (size_t i = 0; i < t->nev; i++)
    if (t->ev[i].type == H2T_EV_SRV_LOAD_SHED) {
      n503 += t->ev[i].code == H2T_SHED_503;
      nclose += t->ev[i].code == H2T_SHED_CLOSE;
    }
  pthread_mutex_unlock(&t->mu);
  assert_int_equal(n503, 6);
  assert_true(nclose >= 1);
  h2t_server *s = t->s;
  h2t_server_shutdown_async(s);
  pthread_join(t->th, NULL);
  h2t_server_stats st;
  h2t_server_stats_get(s, &st);
  assert_int_equal(st.shed_503, 6);
  assert_true(st.shed_conns >= 1);
  h2t_server_del(s);
  pthread_mutex_destroy(&t->mu);
  free(t);
}

/* Shutdown with streams in flight: they finish, then the server stops. */
static void test_graceful_shutdown_drains(void **state) {
  tsrv *t = tsrv_start(mode_of(state), NULL);
  char *argv[] = {"h2load", "-n", "5", "-c", "1", "-m", "5",
                  url(t, 0, "/delay?ms=400"), NULL};
  h2t_test_bg b = {.argv = argv, .timeout_ms = 20000};
  assert_int_equal(h2t_test_bg_start(&b), 0);
  for (int i = 0; i < 200; i++) {
    usleep(10000);
    pthread_mutex_lock(&t->mu);
    size_t n = count_ev(t, H2T_EV_SRV_HANDLER_STARTED);
    pthread_mutex_unlock(&t->mu);
    if (n == 5)
      break;
  }
  uint64_t t0 = h2t_now_us();
  h2t_server_shutdown_async(t->s);
  pthread_join(t->th, NULL);
  uint64_t took = h2t_now_us() - t0;
  h2t_test_bg_join(&b);
  assert_true(h2load_ok(b.out, 5));
  assert_true(took > 200000 && took < 5000000);
  free(b.out);
  assert_true(count_ev(t, H2T_EV_SRV_GOAWAY_SENT) >= 1);
  /* new connections are refused after shutdown */
  char *out = NULL;
  assert_int_not_equal(curl(t, 0, "/hello", NULL, &out), 0);
  free(out);
  h2t_server_del(t->s);
  pthread_mutex_destroy(&t->mu);
  free(t);
}

/* A graceful shutdown on the application's loop: on_shutdown_done says
 * when it is over, after the in-flight response, so the program leaves its
 * loop on that signal instead of guessing when to ev_break. */
typedef struct sd_state {
  struct ev_loop *loop;
  h2t_server *s;
  ev_timer kick, guard;
  char order[16];   /* H: handler started, C: stream closed, S: done */
  uint32_t close_code;
  int done_calls, client_status, client_err, client_done;
} sd_state;

static void sd_append(sd_state *st, char c) {
  size_t n = strlen(st->order);
  if (n + 1 < sizeof st->order)
    st->order[n] = c;
}

static void sd_kick(struct ev_loop *loop, ev_timer *t, int revents) {
  sd_state *st = t->data;
  assert_int_equal(h2t_server_shutdown(st->s), 0);
  assert_int_equal(st->done_calls, 0); /* never from inside shutdown */
}

static void sd_guard(struct ev_loop *loop, ev_timer *t, int revents) {
  ev_break(loop, EVBREAK_ALL); /* the signal never came: fail below */
}

static void sd_hook(const h2t_event *ev, void *user) {
  sd_state *st = user;
  if (ev->type == H2T_EV_SRV_HANDLER_STARTED) {
    sd_append(st, 'H');
    ev_timer_start(st->loop, &st->kick); /* shut down with it in flight */
  } else if (ev->type == H2T_EV_SRV_STREAM_CLOSED) {
    sd_append(st, 'C');
    st->close_code = ev->u.stream_closed.error_code;
  }
}

static void sd_done(h2t_server *s, void *user) {
  sd_state *st = user;
  assert_ptr_equal(s, st->s);
  st->done_calls++;
  sd_append(st, 'S');
  ev_break(st->loop, EVBREAK_ALL);
}

static void sd_client_done(h2t_request *r, int err, void *user) {
  sd_state *st = user;
  st->client_done = 1;
  st->client_err = err;
  st->client_status = h2t_request_status(r);
}

static void test_shutdown_done_on_app_loop(void **state) {
  sd_state st = {.loop = ev_loop_new(EVFLAG_AUTO)};
  assert_non_null(st.loop);
  ev_timer_init(&st.kick, sd_kick, 0., 0.);
  st.kick.data = &st;
  ev_timer_init(&st.guard, sd_guard, 10., 0.);
  st.guard.data = &st;
  h2t_server_trace tr = {H2T_SERVER_TRACE_INIT, .user = &st,
                         .handler_started = sd_hook,
                         .stream_closed = sd_hook};
  h2t_server_config cfg = {H2T_SERVER_CONFIG_INIT, .loop = st.loop,
                           .writer = mode_of(state), .trace = &tr,
                           .on_shutdown_done = sd_done,
                           .shutdown_user = &st};
  assert_int_equal(h2t_server_new(&st.s, &cfg), 0);
  h2t_listen_opts lo = {H2T_LISTEN_OPTS_INIT};
  int idx = h2t_server_listen(st.s, &lo);
  assert_true(idx >= 0);
  assert_int_equal(h2t_server_handle(st.s, "/delay", h2t_test_delay_handler,
                                     NULL), 0);
  h2t_client *c;
  h2t_client_config cc = {H2T_CLIENT_CONFIG_INIT, .loop = st.loop};
  assert_int_equal(h2t_client_new(&c, &cc), 0);
  char u[96];
  snprintf(u, sizeof u, "http://127.0.0.1:%u/delay?ms=200",
           (unsigned)h2t_server_port(st.s, idx));
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = u,
                        .on_done = sd_client_done, .user = &st};
  assert_int_equal(h2t_request_submit(c, &o, NULL), 0);
  ev_timer_start(st.loop, &st.guard);
  /* The client keeps its connection's watchers: only a break ends this. */
  ev_run(st.loop, 0);
  ev_timer_stop(st.loop, &st.guard);
  assert_int_equal(st.done_calls, 1);
  assert_string_equal(st.order, "HCS"); /* after the response, once */
  assert_int_equal(st.close_code, 0);   /* drained, not reset */
  assert_int_equal(h2t_client_run(c), 0); /* the client reads what is left */
  assert_true(st.client_done);
  assert_int_equal(st.client_err, 0);
  assert_int_equal(st.client_status, 200);
  ev_run(st.loop, EVRUN_NOWAIT);
  assert_int_equal(st.done_calls, 1);
  h2t_client_del(c);
  h2t_server_del(st.s);
  ev_loop_destroy(st.loop);
}

/* With nothing in flight the signal still comes from the loop, also for a
 * server that runs its own loop with h2t_server_run(). */
static void test_shutdown_done_idle_and_run(void **state) {
  sd_state st = {0};
  h2t_server_config cfg = {H2T_SERVER_CONFIG_INIT, .on_shutdown_done = sd_done,
                           .shutdown_user = &st};
  assert_int_equal(h2t_server_new(&st.s, &cfg), 0);
  st.loop = h2t_server_loop(st.s);
  assert_int_equal(h2t_server_shutdown(st.s), 0);
  assert_int_equal(st.done_calls, 0);
  assert_int_equal(h2t_server_shutdown(st.s), 0); /* idempotent */
  assert_int_equal(h2t_server_run(st.s), 0);
  assert_int_equal(st.done_calls, 1);
  assert_string_equal(st.order, "S");
  h2t_server_del(st.s);
  /* deleted before the shutdown completed: never called */
  sd_state st2 = {0};
  cfg.shutdown_user = &st2;
  assert_int_equal(h2t_server_new(&st2.s, &cfg), 0);
  st2.loop = h2t_server_loop(st2.s);
  assert_int_equal(h2t_server_shutdown(st2.s), 0);
  h2t_server_del(st2.s);
  assert_int_equal(st2.done_calls, 0);
}

/* The suite a client gets is the server's choice: AES-128-GCM first, even
 * for a client that lists AES-256-GCM first (openssl s_client does); a
 * client that offers only AES-256 still gets it.  TLS 1.2 likewise. */
static void test_tls_suite_order(void **state) {
  (void)state;
  tsrv *t = tsrv_start(H2T_WRITER_REUSED, NULL);
  static const struct {
    const char *args, *want;
  } cases[] = {
      {"", "Ciphersuite: TLS_AES_128_GCM_SHA256"},
      {"-ciphersuites TLS_AES_256_GCM_SHA384",
       "Ciphersuite: TLS_AES_256_GCM_SHA384"},
      {"-tls1_2", "Ciphersuite: ECDHE-ECDSA-AES128-GCM-SHA256"}, /* EC key */
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char cmd[256];
    snprintf(cmd, sizeof cmd,
             "openssl s_client -connect 127.0.0.1:%d -alpn h2 -brief %s "
             "</dev/null",
             t->tls_port, cases[i].args);
    char *argv[] = {"sh", "-c", cmd, NULL}, *out = NULL;
    assert_int_equal(h2t_test_run(argv, 20000, &out), 0);
    if (!strstr(out, cases[i].want))
      fail_msg("%s: want \"%s\" in:\n%s", cmd, cases[i].want, out);
    free(out);
  }
  tsrv_stop(t);
}

static void test_api_misuse(void **state) {
  h2t_server *s = NULL;
  h2t_server_config bad = {H2T_SERVER_CONFIG_INIT};
  bad.writer = (h2t_writer_mode)7;
  assert_int_equal(h2t_server_new(&s, &bad), H2T_ERR_INVALID_ARG);
  bad.writer = H2T_WRITER_REUSED;
  bad.writer_spin_us = 10001;
  assert_int_equal(h2t_server_new(&s, &bad), H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_server_new(NULL, NULL), H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_server_new(&s, NULL), 0);
  h2t_listen_opts lo = {H2T_LISTEN_OPTS_INIT, .address = "not-an-ip"};
  assert_int_equal(h2t_server_listen(s, &lo), H2T_ERR_INVALID_ARG);
  h2t_listen_opts lt = {H2T_LISTEN_OPTS_INIT, .cert_file = "/nonexistent",
                        .key_file = "/nonexistent"};
  assert_int_equal(h2t_server_listen(s, &lt), H2T_ERR_TLS);
  h2t_listen_opts l6 = {H2T_LISTEN_OPTS_INIT, .address = "::1"};
  int i6 = h2t_server_listen(s, &l6);
  if (i6 >= 0) /* IPv6 may be off on this machine */
    assert_true(h2t_server_port(s, i6) > 0);
  assert_int_equal(h2t_server_port(s, 5), 0);
  assert_int_equal(h2t_server_handle(s, "nope", h_hello, NULL),
                   H2T_ERR_INVALID_ARG);
  h2t_writer_mode m;
  assert_int_equal(h2t_writer_mode_parse("spawn", &m), 0);
  assert_int_equal(m, H2T_WRITER_SPAWN);
  assert_int_equal(h2t_writer_mode_parse("fast", &m), H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_server_shutdown(s), 0);
  assert_int_equal(h2t_server_listen(s, &l6), H2T_ERR_STATE);
  h2t_server_del(s);
  h2t_server_del(NULL);
}


int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_api_misuse),
      cmocka_unit_test(test_tls_suite_order),
      cmocka_unit_test(test_shutdown_done_idle_and_run),
      H2T_TEST_PER_MODE(test_shutdown_done_on_app_loop),
      H2T_TEST_PER_MODE(test_curl_h2c_and_tls),
      H2T_TEST_PER_MODE(test_bodies_file_gen_trailers),
      H2T_TEST_PER_MODE(test_header_strings),
      H2T_TEST_PER_MODE(test_zero_copy_bodies_exact),
      H2T_TEST_PER_MODE(test_client_upload_exact),
      H2T_TEST_PER_MODE(test_h2load_no_failures),
      H2T_TEST_PER_MODE(test_hook_order),
      H2T_TEST_PER_MODE(test_cancel_from_other_thread),
      H2T_TEST_PER_MODE(test_stream_timeout_and_header_limit),
      H2T_TEST_PER_MODE(test_shed_refused_stream),
      H2T_TEST_PER_MODE(test_shed_503_and_conn_limit),
      H2T_TEST_PER_MODE(test_graceful_shutdown_drains),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
