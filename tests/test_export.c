/* trace/export.c: the recorder fed synthetic events, the pull reader
 * against the push writer, and the streaming promise: exporting 100 000
 * requests (recorder or recent ring) peaks at the memory of exporting
 * 1 000.  The memory figures are printed (peak RSS of the export alone:
 * VmHWM reset through /proc/self/clear_refs before it). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include <h2trace/export.h>
#include <h2trace/inflight.h>
#include "trace/inflight_int.h"

/* --- a growing string as the write callback ------------------------------- */

typedef struct sbuf {
  char *p;
  size_t n, cap;
  unsigned calls;
} sbuf;

static int sbuf_write(const char *d, size_t len, void *user) {
  sbuf *s = user;
  if (s->n + len + 1 > s->cap) {
    s->cap = (s->n + len + 1) * 2;
    s->p = realloc(s->p, s->cap);
    assert_non_null(s->p);
  }
  memcpy(s->p + s->n, d, len);
  s->n += len;
  s->p[s->n] = '\0';
  s->calls++;
  return 0;
}

static int null_write(const char *d, size_t len, void *user) {
  *(size_t *)user += len;
  return 0;
}

static int stop_write(const char *d, size_t len, void *user) { return 1; }

/* --- synthetic client requests --------------------------------------------- */

static void fire(const h2t_client_trace *tr, h2t_event *ev, h2t_event_type t,
                 uint64_t at) {
  ev->type = t;
  ev->t_us = at;
  tr->any(ev, tr->user);
}

/* One GET on conn `conn`: a new connection (dns, connect, tls) or a reused
 * one; a cookie among its headers; `reset`: ends by RST_STREAM(CANCEL). */
static void one_request(const h2t_client_trace *tr, uint64_t id, uint64_t conn,
                        int32_t stream, int fresh, int reset, uint64_t t0) {
  h2t_event ev;
  memset(&ev, 0, sizeof ev);
  ev.req_id = id;
  uint64_t t = t0;
  ev.u.get_conn.scheme = "https";
  ev.u.get_conn.authority = "example.com";
  fire(tr, &ev, H2T_EV_GET_CONN, t);
  if (fresh) {
    ev.u.dns_start.host = "example.com";
    fire(tr, &ev, H2T_EV_DNS_START, t += 100);
    fire(tr, &ev, H2T_EV_CONNECT_START, t += 1000);
    fire(tr, &ev, H2T_EV_TLS_HANDSHAKE_START, t += 2000);
  }
  ev.conn_id = conn;
  memset(&ev.u, 0, sizeof ev.u);
  ev.u.got_conn.reused = !fresh;
  ev.u.got_conn.active_streams = 1;
  ev.u.got_conn.max_streams = 100;
  fire(tr, &ev, H2T_EV_GOT_CONN, t += 3000);
  ev.stream_id = stream;
  static const char *const hdr[][2] = {{":method", "GET"},
                                       {":scheme", "https"},
                                       {":authority", "example.com"},
                                       {":path", "/a?b=\"c\"\n"},
                                       {"cookie", "session=s3cret"},
                                       {"user-agent", "h2t\xff"}};
  for (size_t i = 0; i < sizeof hdr / sizeof hdr[0]; i++) {
    memset(&ev.u, 0, sizeof ev.u);
    ev.u.header_field.name = hdr[i][0];
    ev.u.header_field.value = hdr[i][1];
    fire(tr, &ev, H2T_EV_WROTE_HEADER_FIELD, t);
  }
  fire(tr, &ev, H2T_EV_WROTE_REQUEST, t += 10);
  ev.u.response.status = 200;
  fire(tr, &ev, H2T_EV_GOT_HEADERS, t += 500);
  memset(&ev.u, 0, sizeof ev.u);
  if (reset) {
    ev.u.stream_reset.error_code = 8; /* CANCEL */
    fire(tr, &ev, H2T_EV_STREAM_RESET, t += 40);
  }
  memset(&ev.u, 0, sizeof ev.u);
  ev.u.done.status = 200;
  ev.u.done.bytes_recv = 1234;
  ev.u.done.error = reset ? H2T_ERR_CANCELED : 0;
  fire(tr, &ev, H2T_EV_DONE, t += 60);
}

static void test_recorder_har(void **state) {
  h2t_export *x;
  assert_int_equal(h2t_export_new(&x, NULL), 0);
  const h2t_client_trace *tr = h2t_export_trace(x);
  one_request(tr, 1, 7, 1, 1, 0, 1000000);
  one_request(tr, 2, 7, 3, 0, 1, 1010000);
  assert_int_equal(h2t_export_count(x), 2);
  sbuf s = {0};
  assert_int_equal(h2t_export_write(x, H2T_EXPORT_HAR, sbuf_write, &s), 0);
  /* the new connection: dns 1 ms, connect 5 ms of which ssl 3 ms */
  assert_non_null(strstr(s.p, "\"timings\":{\"blocked\":0.100,\"dns\":1.000,"
                              "\"connect\":5.000,\"ssl\":3.000,\"send\":0.010,"
                              "\"wait\":0.500,\"receive\":0.060}"));
  /* the reused one: no dns, no connect, no ssl */
  assert_non_null(strstr(s.p, "\"timings\":{\"blocked\":3.000,\"dns\":-1,"
                              "\"connect\":-1,\"ssl\":-1,\"send\":0.010,"
                              "\"wait\":0.500,\"receive\":0.100}"));
  assert_non_null(strstr(s.p, "\"connection\":\"7\""));
  assert_non_null(strstr(s.p, "\"url\":\"https://example.com/a?b=\\\"c\\\"\\n\""));
  assert_non_null(strstr(s.p, "{\"name\":\"cookie\",\"value\":\"[redacted]\"}"));
  assert_null(strstr(s.p, "s3cret"));
  assert_non_null(strstr(s.p, "\"value\":\"h2t?\"")); /* not UTF-8 */
  assert_non_null(strstr(s.p, "\"_reset\":\"CANCEL\""));
  /* one call per piece: head, two entries, tail */
  assert_int_equal(s.calls, 4);
  free(s.p);
  /* a callback that stops */
  assert_int_equal(h2t_export_write(x, H2T_EXPORT_HAR, stop_write, NULL),
                   H2T_ERR_CALLBACK);
  h2t_export_del(x);
}

/* The pull reader gives the same bytes, whatever the read size. */
static void test_reader_sizes(void **state) {
  h2t_export *x;
  assert_int_equal(h2t_export_new(&x, NULL), 0);
  for (uint64_t i = 1; i <= 50; i++)
    one_request(h2t_export_trace(x), i, 1 + i / 10, (int32_t)(2 * i - 1),
                i % 10 == 1, i % 7 == 0, 1000000 + i * 20000);
  for (int fmt = H2T_EXPORT_HAR; fmt <= H2T_EXPORT_CHROME; fmt++) {
    sbuf whole = {0};
    assert_int_equal(h2t_export_write(x, fmt, sbuf_write, &whole), 0);
    static const size_t sizes[] = {1, 7, 4096, 1 << 20};
    for (size_t k = 0; k < sizeof sizes / sizeof sizes[0]; k++) {
      h2t_export_reader *r;
      assert_int_equal(h2t_export_reader_new(&r, x, fmt), 0);
      char *buf = malloc(sizes[k]);
      sbuf got = {0};
      ssize_t n;
      while ((n = h2t_export_reader_read(r, buf, sizes[k])) > 0)
        sbuf_write(buf, (size_t)n, &got);
      assert_int_equal(n, 0);
      assert_int_equal(h2t_export_reader_read(r, buf, sizes[k]), 0);
      assert_int_equal(got.n, whole.n);
      assert_memory_equal(got.p, whole.p, whole.n);
      free(got.p);
      free(buf);
      h2t_export_reader_del(r);
    }
    if (fmt == H2T_EXPORT_CHROME) {
      /* 6 connections named once each, a lane per connection */
      size_t named = 0;
      for (const char *p = whole.p; (p = strstr(p, "\"process_name\"")); p++)
        named++;
      assert_int_equal(named, 6);
      assert_non_null(strstr(whole.p, "\"name\":\"RST_STREAM\""));
    }
    free(whole.p);
  }
  h2t_export_reader *r;
  assert_int_equal(h2t_export_reader_new(&r, x, 3), H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_export_write(x, H2T_EXPORT_HAR, NULL, NULL),
                   H2T_ERR_INVALID_ARG);
  h2t_export_del(x);
}

/* max_requests: the oldest are dropped (by chunks), later events of a
 * dropped request are ignored. */
static void test_recorder_limit(void **state) {
  h2t_export *x;
  h2t_export_config cfg = {H2T_EXPORT_CONFIG_INIT, .max_requests = 300};
  assert_int_equal(h2t_export_new(&x, &cfg), 0);
  for (uint64_t i = 1; i <= 2000; i++)
    one_request(h2t_export_trace(x), i, 1, (int32_t)i, 0, 0, i * 10000);
  assert_true(h2t_export_count(x) >= 300 && h2t_export_count(x) < 300 + 256);
  size_t bytes = 0;
  assert_int_equal(h2t_export_write(x, H2T_EXPORT_HAR, null_write, &bytes), 0);
  assert_true(bytes > 0);
  h2t_export_del(x);
  cfg.struct_size = 4;
  assert_int_equal(h2t_export_new(&x, &cfg), H2T_ERR_INVALID_ARG);
}

/* --- memory --------------------------------------------------------------- */

static long status_kb(const char *field) {
  FILE *f = fopen("/proc/self/status", "r");
  char line[256];
  long v = -1;
  size_t fl = strlen(field);
  while (f && fgets(line, sizeof line, f))
    if (!strncmp(line, field, fl))
      v = strtol(line + fl + 1, NULL, 10);
  if (f)
    fclose(f);
  return v;
}

/* Reset the peak (VmHWM) to the current RSS; 0 or -1 where not possible. */
static int reset_peak(void) {
  FILE *f = fopen("/proc/self/clear_refs", "w");
  if (!f)
    return -1;
  int ok = fputs("5", f) >= 0;
  return fclose(f) == 0 && ok ? 0 : -1;
}

/* Export to nowhere; returns the peak RSS growth during the export, kB. */
static long export_peak_kb(const h2t_export *x, h2t_export_format fmt,
                           size_t *bytes) {
  if (reset_peak() != 0)
    return -1;
  long before = status_kb("VmRSS:");
  *bytes = 0;
  assert_int_equal(h2t_export_write(x, fmt, null_write, bytes), 0);
  return status_kb("VmHWM:") - before;
}

static void fill_ring(size_t n) {
  h2t_inflight_config cfg = {.struct_size = sizeof cfg, .recent = n};
  assert_int_equal(h2t_inflight_enable(&cfg), 0);
  h2t_event ev;
  for (size_t i = 1; i <= n; i++) {
    struct inflight_entry *e =
        h2t__inflight_begin(INFLIGHT_CLIENT, i, "GET", "https", "example.com",
                            "/some/path", NULL, NULL);
    assert_non_null(e);
    memset(&ev, 0, sizeof ev);
    ev.req_id = i;
    ev.conn_id = 1 + i / 100;
    ev.stream_id = (int32_t)(2 * (i % 100) + 1);
    ev.t_us = h2t_now_us();
    ev.type = H2T_EV_GOT_CONN;
    h2t__inflight_event(e, &ev);
    ev.type = H2T_EV_WROTE_REQUEST;
    h2t__inflight_event(e, &ev);
    ev.type = H2T_EV_GOT_FIRST_RESPONSE_BYTE;
    h2t__inflight_event(e, &ev);
    ev.type = H2T_EV_DONE;
    ev.u.done.status = 200;
    h2t__inflight_event(e, &ev);
    h2t__inflight_end(e, 0);
  }
}

static void test_streaming_memory(void **state) {
  static const size_t counts[] = {1000, 100000};
  long peak[2][2][2]; /* [source: recorder, ring][count][format] */
  size_t bytes[2][2][2];
  for (int k = 0; k < 2; k++) {
    size_t n = counts[k];
    h2t_export *x;
    assert_int_equal(h2t_export_new(&x, NULL), 0);
    for (uint64_t i = 1; i <= n; i++)
      one_request(h2t_export_trace(x), i, 1 + i / 100, (int32_t)(2 * i - 1),
                  i % 100 == 1, i % 1000 == 0, 1000000 + i * 1000);
    for (int f = 0; f < 2; f++)
      peak[0][k][f] = export_peak_kb(x, f ? H2T_EXPORT_CHROME : H2T_EXPORT_HAR,
                                     &bytes[0][k][f]);
    if (k == 1 && peak[0][k][0] >= 0) {
      /* the measure can fail: the same document kept whole shows */
      sbuf whole = {0};
      assert_int_equal(reset_peak(), 0);
      long before = status_kb("VmRSS:");
      assert_int_equal(h2t_export_write(x, H2T_EXPORT_HAR, sbuf_write, &whole), 0);
      long grown = status_kb("VmHWM:") - before;
      print_message("control: the 100k HAR kept in memory: peak RSS +%ld kB\n",
                    grown);
      assert_true(grown > (long)(whole.n / 1024 / 2));
      free(whole.p);
    }
    h2t_export_del(x);
    fill_ring(n);
    for (int f = 0; f < 2; f++)
      peak[1][k][f] = export_peak_kb(NULL, f ? H2T_EXPORT_CHROME : H2T_EXPORT_HAR,
                                     &bytes[1][k][f]);
    assert_int_equal(h2t_inflight_disable(), 0);
  }
  if (peak[0][0][0] < 0) {
    print_message("no /proc/self/clear_refs: memory not measured\n");
    return;
  }
  for (int s = 0; s < 2; s++)
    for (int f = 0; f < 2; f++) {
      print_message("export %s %s: 1k requests %zu bytes, peak RSS +%ld kB; "
                    "100k requests %zu bytes, peak RSS +%ld kB\n",
                    s ? "recent ring" : "recorder", f ? "chrome" : "har",
                    bytes[s][0][f], peak[s][0][f], bytes[s][1][f], peak[s][1][f]);
      /* 100 times the output, the same memory: within 256 kB */
      assert_true(bytes[s][1][f] > 50 * bytes[s][0][f]);
      assert_true(peak[s][1][f] < peak[s][0][f] + 256);
    }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_recorder_har),
      cmocka_unit_test(test_reader_sizes),
      cmocka_unit_test(test_recorder_limit),
      cmocka_unit_test(test_streaming_memory),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
