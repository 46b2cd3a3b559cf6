/* One trace event as a single-line JSON object (h2t_event_json). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "trace/trace_int.h"

/* jansson refuses invalid UTF-8; peers send arbitrary bytes, so those become
 * '?' rather than losing the whole event. */
static json_t *jstr(const char *s, size_t len) {
  json_t *j = json_stringn(s, len);
  if (j)
    return j;
  char *copy = malloc(len ? len : 1);
  if (!copy)
    return NULL;
  for (size_t i = 0; i < len; i++)
    copy[i] = (unsigned char)s[i] < 0x80 ? s[i] : '?';
  j = json_stringn(copy, len);
  free(copy);
  return j;
}

/* Each setter records an allocation failure in *ok instead of returning it,
 * so the per-event code stays a flat list of fields. */
typedef struct jobj {
  json_t *o;
  int ok;
} jobj;

static void put(jobj *j, const char *key, json_t *v) {
  if (!v || json_object_set_new_nocheck(j->o, key, v) != 0)
    j->ok = 0;
}

static void put_str(jobj *j, const char *key, const char *s) {
  if (s)
    put(j, key, jstr(s, strlen(s)));
}

static void put_int(jobj *j, const char *key, json_int_t v) {
  put(j, key, json_integer(v));
}

static void put_u64(jobj *j, const char *key, uint64_t v) {
  put(j, key, json_integer(v > INT64_MAX ? INT64_MAX : (json_int_t)v));
}

static void put_bool(jobj *j, const char *key, int v) {
  put(j, key, json_boolean(v));
}

/* An h2t error as its name; 0 is left out (the field's absence means OK). */
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

static const char *shed_reason_name(h2t_shed_reason r) {
  switch (r) {
  case H2T_SHED_INFLIGHT:
    return "inflight";
  case H2T_SHED_CONNECTIONS:
    return "connections";
  }
  return "unknown";
}

static const char *shed_action_name(h2t_shed_action a) {
  switch (a) {
  case H2T_SHED_REFUSED_STREAM:
    return "refused_stream";
  case H2T_SHED_503:
    return "503";
  case H2T_SHED_CLOSE:
    return "close";
  }
  return "unknown";
}

static void put_payload(jobj *j, const h2t_event *ev) {
  switch (ev->type) {
  case H2T_EV_GET_CONN:
    put_str(j, "scheme", ev->u.get_conn.scheme);
    put_str(j, "authority", ev->u.get_conn.authority);
    break;
  case H2T_EV_DNS_START:
    put_str(j, "host", ev->u.dns_start.host);
    break;
  case H2T_EV_DNS_DONE: {
    json_t *a = json_array();
    if (a && ev->u.dns_done.addrs)
      for (size_t i = 0; i < ev->u.dns_done.naddrs; i++)
        if (ev->u.dns_done.addrs[i] &&
            json_array_append_new(
                a, jstr(ev->u.dns_done.addrs[i],
                        strlen(ev->u.dns_done.addrs[i]))) != 0)
          j->ok = 0;
    put(j, "addrs", a);
    put_err(j, "error", ev->u.dns_done.error);
    put_bool(j, "literal", ev->u.dns_done.literal);
    break;
  }
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
    put(j, "name", jstr(n ? n : "", nl));
    /* the process-wide list, so names the application added count too */
    if (h2t__header_is_sensitive_n(n ? n : "", nl))
      put_str(j, "value", "[redacted]");
    else
      put(j, "value", jstr(v ? v : "", vl));
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
    put_str(j, "reason", shed_reason_name(ev->u.load_shed.reason));
    put_str(j, "action", shed_action_name(ev->u.load_shed.action));
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
  jobj j = {json_object(), 1};
  if (!j.o)
    return H2T_ERR_NOMEM;
  put_str(&j, "event", h2t_event_name(ev->type));
  put_u64(&j, "t_us", ev->t_us);
  put_u64(&j, "req_id", ev->req_id);
  put_u64(&j, "conn", ev->conn_id);
  put_int(&j, "stream", ev->stream_id);
  put_payload(&j, ev);
  char *s = j.ok ? json_dumps(j.o, JSON_COMPACT) : NULL;
  json_decref(j.o);
  if (!s)
    return H2T_ERR_NOMEM;
  size_t n = strlen(s);
  if (len) {
    size_t c = n < len ? n : len - 1;
    memcpy(buf, s, c);
    buf[c] = '\0';
  }
  free(s);
  return n > INT32_MAX ? H2T_ERR_LIMIT : (int)n;
}
