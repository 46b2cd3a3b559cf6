/* trace/event_json.c: every event becomes one parseable line with its fields. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>
#include <jansson.h>

#include <h2trace/inflight.h>
#include <h2trace/trace.h>

static char buf[4096];

/* Serialize, check it is one line, parse it back and check the common
 * fields.  The caller owns the returned object. */
static json_t *roundtrip(const h2t_event *ev) {
  int n = h2t_event_json(ev, buf, sizeof buf);
  assert_true(n > 0);
  assert_int_equal((size_t)n, strlen(buf));
  assert_null(strchr(buf, '\n'));
  json_error_t err;
  json_t *o = json_loads(buf, 0, &err);
  if (!o)
    fail_msg("not JSON: %s: %s", err.text, buf);
  assert_true(json_is_object(o));
  assert_string_equal(json_string_value(json_object_get(o, "event")),
                      h2t_event_name(ev->type));
  assert_int_equal(json_integer_value(json_object_get(o, "t_us")), ev->t_us);
  assert_int_equal(json_integer_value(json_object_get(o, "req_id")), ev->req_id);
  assert_int_equal(json_integer_value(json_object_get(o, "conn")), ev->conn_id);
  assert_int_equal(json_integer_value(json_object_get(o, "stream")),
                   ev->stream_id);
  return o;
}

static const char *str(json_t *o, const char *k) {
  json_t *v = json_object_get(o, k);
  if (!json_is_string(v))
    fail_msg("field %s missing or not a string in %s", k, buf);
  return json_string_value(v);
}

static json_int_t num(json_t *o, const char *k) {
  json_t *v = json_object_get(o, k);
  if (!json_is_integer(v))
    fail_msg("field %s missing or not an integer in %s", k, buf);
  return json_integer_value(v);
}

static int boolean(json_t *o, const char *k) {
  json_t *v = json_object_get(o, k);
  if (!json_is_boolean(v))
    fail_msg("field %s missing or not a boolean in %s", k, buf);
  return json_is_true(v);
}

static h2t_event mk(h2t_event_type t) {
  h2t_event ev = {.type = t, .stream_id = 3, .t_us = 123456789012ull,
                  .req_id = 42, .conn_id = 7};
  return ev;
}

static void test_every_event_type_is_valid_json(void **state) {
  static const char *const addrs[] = {"127.0.0.1", "::1"};
  for (int t = 0; t < H2T_EV_COUNT_; t++) {
    h2t_event ev = mk(t);
    /* a payload with pointers set wherever some event has pointers */
    switch (t) {
    case H2T_EV_GET_CONN:
      ev.u.get_conn.scheme = "https";
      ev.u.get_conn.authority = "example.com";
      break;
    case H2T_EV_DNS_START:
      ev.u.dns_start.host = "example.com";
      break;
    case H2T_EV_DNS_DONE:
      ev.u.dns_done.addrs = addrs;
      ev.u.dns_done.naddrs = 2;
      break;
    case H2T_EV_CONNECT_START:
    case H2T_EV_CONNECT_DONE:
      ev.u.connect.addr = "127.0.0.1:443";
      break;
    case H2T_EV_TLS_HANDSHAKE_START:
    case H2T_EV_TLS_HANDSHAKE_DONE:
    case H2T_EV_SRV_TLS_HANDSHAKE_DONE:
      ev.u.tls.sni = "example.com";
      break;
    case H2T_EV_WROTE_HEADER_FIELD:
      ev.u.header_field.name = ":path";
      ev.u.header_field.value = "/";
      ev.u.header_field.namelen = 5;
      ev.u.header_field.valuelen = 1;
      break;
    case H2T_EV_SRV_CONN_ACCEPTED:
      ev.u.conn_accepted.peer = "127.0.0.1:5000";
      ev.u.conn_accepted.local = "127.0.0.1:443";
      break;
    case H2T_EV_SRV_REQUEST_HEADERS:
      ev.u.request_headers.method = "GET";
      ev.u.request_headers.path = "/";
      break;
    case H2T_EV_SRV_HANDLER_STARTED:
      ev.u.handler_started.route = "/api";
      break;
    }
    json_t *o = roundtrip(&ev);
    json_decref(o);
  }
}

static void test_got_conn_fields(void **state) {
  h2t_event ev = mk(H2T_EV_GOT_CONN);
  ev.u.got_conn.reused = 1;
  ev.u.got_conn.was_idle = 1;
  ev.u.got_conn.idle_us = 12000;
  ev.u.got_conn.new_reason = H2T_CONN_GOAWAY; /* ignored when reused */
  ev.u.got_conn.active_streams = 1;
  ev.u.got_conn.max_streams = 100;
  json_t *o = roundtrip(&ev);
  assert_true(boolean(o, "reused"));
  assert_true(boolean(o, "was_idle"));
  assert_int_equal(num(o, "idle_us"), 12000);
  assert_null(json_object_get(o, "new_reason"));
  assert_int_equal(num(o, "active_streams"), 1);
  assert_int_equal(num(o, "max_streams"), 100);
  json_decref(o);

  ev.u.got_conn.reused = 0;
  ev.u.got_conn.was_idle = 0;
  o = roundtrip(&ev);
  assert_false(boolean(o, "reused"));
  assert_string_equal(str(o, "new_reason"), "goaway");
  json_decref(o);
}

static void test_dns_done_fields(void **state) {
  static const char *const addrs[] = {"127.0.0.1", "::1"};
  h2t_event ev = mk(H2T_EV_DNS_DONE);
  ev.u.dns_done.addrs = addrs;
  ev.u.dns_done.naddrs = 2;
  json_t *o = roundtrip(&ev);
  json_t *a = json_object_get(o, "addrs");
  assert_int_equal(json_array_size(a), 2);
  assert_string_equal(json_string_value(json_array_get(a, 1)), "::1");
  assert_null(json_object_get(o, "error")); /* 0 is left out */
  assert_false(boolean(o, "literal"));
  json_decref(o);

  ev.u.dns_done.naddrs = 0;
  ev.u.dns_done.addrs = NULL;
  ev.u.dns_done.error = H2T_ERR_DNS;
  o = roundtrip(&ev);
  assert_int_equal(json_array_size(json_object_get(o, "addrs")), 0);
  assert_string_equal(str(o, "error"), "H2T_ERR_DNS");
  json_decref(o);
}

static void test_tls_fields(void **state) {
  h2t_event ev = mk(H2T_EV_TLS_HANDSHAKE_DONE);
  ev.u.tls.sni = "localhost";
  ev.u.tls.version = "TLSv1.3";
  ev.u.tls.cipher = "TLS_AES_256_GCM_SHA384";
  ev.u.tls.alpn = "h2";
  ev.u.tls.verify_result = 18;
  ev.u.tls.verify_error = "self-signed certificate";
  ev.u.tls.resumed = 1;
  ev.u.tls.error = H2T_ERR_TLS_VERIFY;
  json_t *o = roundtrip(&ev);
  assert_string_equal(str(o, "version"), "TLSv1.3");
  assert_string_equal(str(o, "cipher"), "TLS_AES_256_GCM_SHA384");
  assert_string_equal(str(o, "alpn"), "h2");
  assert_int_equal(num(o, "verify_result"), 18);
  assert_string_equal(str(o, "verify_error"), "self-signed certificate");
  assert_true(boolean(o, "resumed"));
  assert_string_equal(str(o, "error"), "H2T_ERR_TLS_VERIFY");
  json_decref(o);
}

static void test_header_redaction(void **state) {
  static const char *const secret[] = {"authorization", "Cookie", "SET-COOKIE",
                                       "proxy-authorization"};
  h2t_event ev = mk(H2T_EV_WROTE_HEADER_FIELD);
  for (size_t i = 0; i < 4; i++) {
    ev.u.header_field.name = secret[i];
    ev.u.header_field.namelen = strlen(secret[i]);
    ev.u.header_field.value = "Bearer s3cret";
    ev.u.header_field.valuelen = 13;
    json_t *o = roundtrip(&ev);
    assert_string_equal(str(o, "name"), secret[i]);
    assert_string_equal(str(o, "value"), "[redacted]");
    assert_null(strstr(buf, "s3cret"));
    json_decref(o);
  }
  /* names the application declared sensitive are redacted too */
  assert_int_equal(h2t_header_add_sensitive("X-Api-Key"), 0);
  ev.u.header_field.name = "x-api-key";
  ev.u.header_field.namelen = 9;
  json_t *k = roundtrip(&ev);
  assert_string_equal(str(k, "value"), "[redacted]");
  json_decref(k);
  /* a prefix of a sensitive name is not sensitive */
  ev.u.header_field.name = "cookies-enabled";
  ev.u.header_field.namelen = 15;
  json_t *o = roundtrip(&ev);
  assert_string_equal(str(o, "value"), "Bearer s3cret");
  json_decref(o);
  /* lengths win over NUL: a name cut by namelen is what was on the wire */
  ev.u.header_field.name = "cookieX";
  ev.u.header_field.namelen = 6;
  o = roundtrip(&ev);
  assert_string_equal(str(o, "name"), "cookie");
  assert_string_equal(str(o, "value"), "[redacted]");
  json_decref(o);
  /* bytes that are not UTF-8 do not lose the event */
  ev.u.header_field.name = "x-bin";
  ev.u.header_field.namelen = 5;
  ev.u.header_field.value = "a\xff\xfe";
  ev.u.header_field.valuelen = 3;
  o = roundtrip(&ev);
  assert_string_equal(str(o, "value"), "a??");
  json_decref(o);
}

static void test_stream_and_conn_fields(void **state) {
  h2t_event ev = mk(H2T_EV_STREAM_RESET);
  ev.u.stream_reset.error_code = 8;
  ev.u.stream_reset.by_peer = 1;
  json_t *o = roundtrip(&ev);
  assert_string_equal(str(o, "error_code"), "CANCEL");
  assert_int_equal(num(o, "error_code_num"), 8);
  assert_true(boolean(o, "by_peer"));
  json_decref(o);

  ev = mk(H2T_EV_GOAWAY);
  ev.u.goaway.last_stream_id = 5;
  ev.u.goaway.error_code = 0;
  o = roundtrip(&ev);
  assert_int_equal(num(o, "last_stream_id"), 5);
  assert_string_equal(str(o, "error_code"), "NO_ERROR");
  json_decref(o);

  ev = mk(H2T_EV_GOT_DATA);
  ev.u.data.bytes = 16384;
  ev.u.data.stream_window = -5;
  ev.u.data.conn_window = 1000;
  o = roundtrip(&ev);
  assert_int_equal(num(o, "bytes"), 16384);
  assert_int_equal(num(o, "stream_window"), -5);
  assert_int_equal(num(o, "conn_window"), 1000);
  json_decref(o);

  ev = mk(H2T_EV_GOT_HEADERS);
  ev.u.response.status = 204;
  o = roundtrip(&ev);
  assert_int_equal(num(o, "status"), 204);
  json_decref(o);

  ev = mk(H2T_EV_SETTINGS);
  ev.u.settings.max_concurrent_streams = UINT32_MAX;
  ev.u.settings.initial_window_size = 65535;
  o = roundtrip(&ev);
  assert_null(json_object_get(o, "max_concurrent_streams"));
  assert_int_equal(num(o, "initial_window_size"), 65535);
  json_decref(o);

  ev = mk(H2T_EV_RETRY);
  ev.u.retry.reason = H2T_RETRY_REFUSED_STREAM;
  ev.u.retry.attempt = 2;
  o = roundtrip(&ev);
  assert_string_equal(str(o, "reason"), "refused_stream");
  assert_int_equal(num(o, "attempt"), 2);
  json_decref(o);

  ev = mk(H2T_EV_PUT_IDLE_CONN);
  ev.u.put_idle_conn.reusable = 0;
  ev.u.put_idle_conn.reason = H2T_CONN_IDLE_TIMEOUT;
  o = roundtrip(&ev);
  assert_false(boolean(o, "reusable"));
  assert_string_equal(str(o, "reason"), "idle_timeout");
  json_decref(o);
}

static void test_done_fields(void **state) {
  h2t_event ev = mk(H2T_EV_DONE);
  ev.u.done.status = 200;
  ev.u.done.bytes_sent = 10;
  ev.u.done.bytes_recv = 6;
  ev.u.done.total_us = 1500;
  ev.u.done.attempts = 1;
  json_t *o = roundtrip(&ev);
  assert_string_equal(str(o, "error"), "H2T_OK");
  assert_int_equal(num(o, "status"), 200);
  assert_int_equal(num(o, "bytes_sent"), 10);
  assert_int_equal(num(o, "bytes_recv"), 6);
  assert_int_equal(num(o, "total_us"), 1500);
  assert_int_equal(num(o, "attempts"), 1);
  json_decref(o);
  ev.u.done.error = H2T_ERR_TIMEOUT;
  o = roundtrip(&ev);
  assert_string_equal(str(o, "error"), "H2T_ERR_TIMEOUT");
  json_decref(o);
}

static void test_server_fields(void **state) {
  h2t_event ev = mk(H2T_EV_SRV_STREAM_CLOSED);
  ev.u.stream_closed.error_code = 7;
  ev.u.stream_closed.bytes_in = 1;
  ev.u.stream_closed.bytes_out = 2;
  ev.u.stream_closed.total_us = 3;
  json_t *o = roundtrip(&ev);
  assert_string_equal(str(o, "event"), "stream_closed");
  assert_string_equal(str(o, "error_code"), "REFUSED_STREAM");
  assert_int_equal(num(o, "bytes_out"), 2);
  json_decref(o);

  ev = mk(H2T_EV_SRV_LOAD_SHED);
  ev.u.load_shed.reason = H2T_SHED_INFLIGHT;
  ev.u.load_shed.action = H2T_SHED_503;
  o = roundtrip(&ev);
  assert_string_equal(str(o, "reason"), "inflight");
  assert_string_equal(str(o, "action"), "503");
  json_decref(o);

  ev = mk(H2T_EV_SRV_REQUEST_HEADERS);
  ev.u.request_headers.method = "POST";
  ev.u.request_headers.path = "/x?\"q\"";
  o = roundtrip(&ev);
  assert_string_equal(str(o, "path"), "/x?\"q\"");
  assert_null(json_object_get(o, "authority")); /* NULL: left out */
  json_decref(o);
}

static void test_truncation_is_like_snprintf(void **state) {
  h2t_event ev = mk(H2T_EV_GOT_CONN);
  int full = h2t_event_json(&ev, NULL, 0);
  assert_true(full > 20);
  char small[16];
  memset(small, 'x', sizeof small);
  assert_int_equal(h2t_event_json(&ev, small, sizeof small), full);
  assert_int_equal(strlen(small), sizeof small - 1);
  char exact[4096];
  assert_int_equal(h2t_event_json(&ev, exact, sizeof exact), full);
  assert_memory_equal(small, exact, sizeof small - 1);
  /* room for everything but the NUL: still truncated by one */
  char *tight = malloc((size_t)full);
  assert_int_equal(h2t_event_json(&ev, tight, (size_t)full), full);
  assert_int_equal(strlen(tight), (size_t)full - 1);
  free(tight);
}

static void test_bad_arguments(void **state) {
  h2t_event ev = mk(H2T_EV_COUNT_);
  assert_int_equal(h2t_event_json(&ev, buf, sizeof buf), H2T_ERR_INVALID_ARG);
  assert_int_equal(h2t_event_json(NULL, buf, sizeof buf), H2T_ERR_INVALID_ARG);
  ev = mk(H2T_EV_DONE);
  assert_int_equal(h2t_event_json(&ev, NULL, 10), H2T_ERR_INVALID_ARG);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_event_type_is_valid_json),
      cmocka_unit_test(test_got_conn_fields),
      cmocka_unit_test(test_dns_done_fields),
      cmocka_unit_test(test_tls_fields),
      cmocka_unit_test(test_header_redaction),
      cmocka_unit_test(test_stream_and_conn_fields),
      cmocka_unit_test(test_done_fields),
      cmocka_unit_test(test_server_fields),
      cmocka_unit_test(test_truncation_is_like_snprintf),
      cmocka_unit_test(test_bad_arguments),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
