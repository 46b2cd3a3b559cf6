/* One trace event as a single-line JSON object (h2t_event_json). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "trace/json_int.h"
#include "trace/trace_int.h"

typedef h2t__jbuf jobj;
#define raw h2t__json_raw
#define rawc h2t__json_rawc
#define str_value h2t__json_str

/* Written by hand, not with jansson: the core library links no JSON
 * library (that is the diagnostics library's), and a line written straight
 * into the caller's buffer needs no allocation.  The output is what
 * jansson's json_dumps(JSON_COMPACT) gave: same key order, same escapes. */

#define key(j, k) h2t__json_key(j, k)
#define put_int(j, k, v) h2t__json_int(j, k, v)
#define put_u64(j, k, v) h2t__json_u64(j, k, v)
#define put_bool(j, k, v) h2t__json_bool(j, k, v)

static void put_strn(jobj *j, const char *k, const char *s, size_t len) {
  key(j, k);
  str_value(j, s, len);
}

static void put_str(jobj *j, const char *k, const char *s) {
  if (s)
    put_strn(j, k, s, strlen(s));
}

static void put_err(jobj *j, const char *key, int err) {
  if (err)
    put_str(j, key, h2t_errname(err));
}

static void put_h2err(jobj *j, uint32_t code) {
  put_str(j, "error_code", h2t_http2_strerror(code));
  put_u64(j, "error_code_num", code);
}

static void put_tls(jobj *j, const h2t_event *ev, int done) {
  put_str(j, "sni", ev->u.tls.sni);
  if (!done)
    return;
  put_str(j, "version", ev->u.tls.version);
  put_str(j, "cipher", ev->u.tls.cipher);
  put_str(j, "alpn", ev->u.tls.alpn);
  put_int(j, "verify_result", ev->u.tls.verify_result);
  put_str(j, "verify_error", ev->u.tls.verify_error);
  put_bool(j, "resumed", ev->u.tls.resumed);
  put_err(j, "error", ev->u.tls.error);
}

static const char *or_unknown(const char *s) { return s ? s : "unknown"; }

static void put_payload(jobj *j, const h2t_event *ev) {
  switch (ev->type) {
  case H2T_EV_GET_CONN:
    put_str(j, "scheme", ev->u.get_conn.scheme);
    put_str(j, "authority", ev->u.get_conn.authority);
    break;
  case H2T_EV_DNS_START:
    put_str(j, "host", ev->u.dns_start.host);
    break;
  case H2T_EV_DNS_DONE:
    key(j, "addrs");
    rawc(j, '[');
    for (size_t i = 0, n = 0; ev->u.dns_done.addrs && i < ev->u.dns_done.naddrs; i++)
      if (ev->u.dns_done.addrs[i]) {
        if (n++)
          rawc(j, ',');
        str_value(j, ev->u.dns_done.addrs[i], strlen(ev->u.dns_done.addrs[i]));
      }
    rawc(j, ']');
    put_err(j, "error", ev->u.dns_done.error);
    put_bool(j, "literal", ev->u.dns_done.literal);
    break;
  case H2T_EV_CONNECT_START:
  case H2T_EV_CONNECT_DONE:
    put_str(j, "addr", ev->u.connect.addr);
    put_err(j, "error", ev->u.connect.error);
    break;
  case H2T_EV_TLS_HANDSHAKE_START:
    put_tls(j, ev, 0);
    break;
  case H2T_EV_TLS_HANDSHAKE_DONE:
  case H2T_EV_SRV_TLS_HANDSHAKE_DONE:
    put_tls(j, ev, 1);
    break;
  case H2T_EV_GOT_CONN:
    put_bool(j, "reused", ev->u.got_conn.reused);
    put_bool(j, "was_idle", ev->u.got_conn.was_idle);
    put_u64(j, "idle_us", ev->u.got_conn.idle_us);
    if (!ev->u.got_conn.reused) {
      const char *r = h2t_conn_reason_name(ev->u.got_conn.new_reason);
      put_str(j, "new_reason", r ? r : "unknown");
    }
    put_u64(j, "active_streams", ev->u.got_conn.active_streams);
    put_u64(j, "max_streams", ev->u.got_conn.max_streams);
    break;
  case H2T_EV_WROTE_HEADER_FIELD: {
    const char *n = ev->u.header_field.name, *v = ev->u.header_field.value;
    size_t nl = n ? (ev->u.header_field.namelen ? ev->u.header_field.namelen
                                                : strlen(n))
                  : 0;
    size_t vl = v ? (ev->u.header_field.valuelen ? ev->u.header_field.valuelen
                                                 : strlen(v))
                  : 0;
    put_strn(j, "name", n ? n : "", nl);
    /* the process-wide list, so names the application added count too */
    if (h2t__header_is_sensitive_n(n ? n : "", nl))
      put_str(j, "value", "[redacted]");
    else
      put_strn(j, "value", v ? v : "", vl);
    break;
  }
  case H2T_EV_GOT_1XX_RESPONSE:
  case H2T_EV_GOT_HEADERS:
  case H2T_EV_SRV_WROTE_HEADERS:
    put_int(j, "status", ev->u.response.status);
    break;
  case H2T_EV_WROTE_REQUEST:
    put_err(j, "error", ev->u.wrote_request.error);
    break;
  case H2T_EV_PUT_IDLE_CONN:
    put_bool(j, "reusable", ev->u.put_idle_conn.reusable);
    if (!ev->u.put_idle_conn.reusable) {
      const char *r = h2t_conn_reason_name(ev->u.put_idle_conn.reason);
      put_str(j, "reason", r ? r : "unknown");
    }
    put_u64(j, "active_streams", ev->u.put_idle_conn.active_streams);
    break;
  case H2T_EV_GOT_DATA:
    put_u64(j, "bytes", ev->u.data.bytes);
    put_int(j, "stream_window", ev->u.data.stream_window);
    put_int(j, "conn_window", ev->u.data.conn_window);
    break;
  case H2T_EV_FLOW_BLOCKED:
  case H2T_EV_SRV_FLOW_BLOCKED:
    put_bool(j, "conn_level", ev->u.flow_blocked.conn_level);
    put_int(j, "stream_window", ev->u.flow_blocked.stream_window);
    put_int(j, "conn_window", ev->u.flow_blocked.conn_window);
    break;
  case H2T_EV_STREAM_RESET:
  case H2T_EV_SRV_STREAM_RESET:
    put_h2err(j, ev->u.stream_reset.error_code);
    put_bool(j, "by_peer", ev->u.stream_reset.by_peer);
    break;
  case H2T_EV_GOAWAY:
    put_int(j, "last_stream_id", ev->u.goaway.last_stream_id);
    put_h2err(j, ev->u.goaway.error_code);
    put_bool(j, "by_peer", ev->u.goaway.by_peer);
    break;
  case H2T_EV_SETTINGS:
    /* UINT32_MAX: the peer did not send it, so there is no limit to show */
    if (ev->u.settings.max_concurrent_streams != UINT32_MAX)
      put_u64(j, "max_concurrent_streams",
              ev->u.settings.max_concurrent_streams);
    put_u64(j, "initial_window_size", ev->u.settings.initial_window_size);
    put_u64(j, "max_frame_size", ev->u.settings.max_frame_size);
    put_u64(j, "header_table_size", ev->u.settings.header_table_size);
    put_u64(j, "max_header_list_size", ev->u.settings.max_header_list_size);
    put_u64(j, "enable_push", ev->u.settings.enable_push);
    break;
  case H2T_EV_RETRY: {
    const char *r = h2t_retry_reason_name(ev->u.retry.reason);
    put_str(j, "reason", r ? r : "unknown");
    put_u64(j, "attempt", ev->u.retry.attempt);
    break;
  }
  case H2T_EV_DONE:
    /* always present here: "did it work" is the question done answers */
    put_str(j, "error", h2t_errname(ev->u.done.error));
    put_int(j, "status", ev->u.done.status);
    put_u64(j, "bytes_sent", ev->u.done.bytes_sent);
    put_u64(j, "bytes_recv", ev->u.done.bytes_recv);
    put_u64(j, "total_us", ev->u.done.total_us);
    put_u64(j, "attempts", ev->u.done.attempts);
    break;
  case H2T_EV_SRV_CONN_ACCEPTED:
    put_str(j, "peer", ev->u.conn_accepted.peer);
    put_str(j, "local", ev->u.conn_accepted.local);
    break;
  case H2T_EV_SRV_REQUEST_HEADERS:
    put_str(j, "method", ev->u.request_headers.method);
    put_str(j, "path", ev->u.request_headers.path);
    put_str(j, "authority", ev->u.request_headers.authority);
    put_str(j, "scheme", ev->u.request_headers.scheme);
    break;
  case H2T_EV_SRV_REQUEST_BODY_DONE:
  case H2T_EV_SRV_WROTE_RESPONSE:
    put_u64(j, "bytes", ev->u.body.bytes);
    break;
  case H2T_EV_SRV_HANDLER_STARTED:
    put_str(j, "route", ev->u.handler_started.route);
    break;
  case H2T_EV_SRV_STREAM_CLOSED:
    put_h2err(j, ev->u.stream_closed.error_code);
    put_u64(j, "bytes_in", ev->u.stream_closed.bytes_in);
    put_u64(j, "bytes_out", ev->u.stream_closed.bytes_out);
    put_u64(j, "total_us", ev->u.stream_closed.total_us);
    break;
  case H2T_EV_SRV_GOAWAY_SENT:
    put_int(j, "last_stream_id", ev->u.goaway_sent.last_stream_id);
    put_h2err(j, ev->u.goaway_sent.error_code);
    break;
  case H2T_EV_SRV_LOAD_SHED:
    put_str(j, "reason", or_unknown(h2t_shed_reason_name(ev->u.load_shed.reason)));
    put_str(j, "action", or_unknown(h2t_shed_action_name(ev->u.load_shed.action)));
    break;
  /* events whose timestamp is all there is to say */
  case H2T_EV_WROTE_HEADERS:
  case H2T_EV_WAIT_100_CONTINUE:
  case H2T_EV_GOT_100_CONTINUE:
  case H2T_EV_GOT_FIRST_RESPONSE_BYTE:
  case H2T_EV_STREAM_OPENED:
  case H2T_EV_SRV_WROTE_FIRST_BYTE:
  case H2T_EV_COUNT_:
    break;
  }
}

int h2t_event_json(const h2t_event *ev, char *buf, size_t len) {
  if (!ev || (!buf && len) || !h2t_event_name(ev->type))
    return H2T_ERR_INVALID_ARG;
  jobj j = {buf, len, 0, 0};
  rawc(&j, '{');
  put_str(&j, "event", h2t_event_name(ev->type));
  put_u64(&j, "t_us", ev->t_us);
  put_u64(&j, "req_id", ev->req_id);
  put_u64(&j, "conn", ev->conn_id);
  put_int(&j, "stream", ev->stream_id);
  put_payload(&j, ev);
  /* the ids that link this request to the ones it caused or came from */
  h2t__json_trace(&j, ev->trace, "trace_id", "span_id", "parent_span_id");
  rawc(&j, '}');
  if (len)
    buf[j.n < len ? j.n : len - 1] = '\0';
  return j.n > INT32_MAX ? H2T_ERR_LIMIT : (int)j.n;
}
