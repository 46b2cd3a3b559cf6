/*
 * h2t_event_json(): every event type, with arbitrary bytes in every string
 * field the event has (peers choose many of them: paths, authorities, SNI,
 * header fields), arbitrary numbers elsewhere.  The line must be valid
 * JSON in valid UTF-8 whatever the bytes, its length what the sizing call
 * said, and a truncated write a prefix of it (h2t_fuzz_event_check).
 */
#include <string.h>

#include "fuzz.h"

/* Take the next n bytes of input, or zeros past its end. */
static void take(const uint8_t **d, size_t *n, void *out, size_t k) {
  size_t c = *n < k ? *n : k;
  memset(out, 0, k);
  memcpy(out, *d, c);
  *d += c;
  *n -= c;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 8192)
    return 0;
  h2t_event ev;
  take(&data, &size, &ev, sizeof ev); /* the numbers, and junk pointers */
  ev.req = NULL;
  ev.sreq = NULL;
  /* the trace ids: none, or ids taken from the input (any bytes) */
  static h2t_trace_context tctx;
  int with_trace = (ev.stream_id & 1) != 0;
  take(&data, &size, &tctx, sizeof tctx);
  ev.trace = with_trace ? &tctx : NULL;
  ev.type = (h2t_event_type)((unsigned)ev.type % (H2T_EV_COUNT_ + 1));
  /* The rest: NUL-separated strings for the payload's pointer fields.  One
   * copy with a NUL at the end, so the last one ends too. */
  char str[8193];
  memcpy(str, data, size);
  str[size] = '\0';
  const char *s[8];
  size_t lens[8], k = 0;
  for (size_t i = 0; k < 8; k++) {
    s[k] = str + (i <= size ? i : size);
    lens[k] = strlen(s[k]);
    i += lens[k] + 1;
  }
  memset(&ev.u, 0, sizeof ev.u);
  uint64_t nums[4];
  memcpy(nums, &ev.t_us, sizeof ev.t_us); /* numbers from the header bytes */
  nums[1] = ev.req_id;
  nums[2] = ev.conn_id;
  nums[3] = (uint64_t)ev.stream_id * 2654435761u;
  switch (ev.type) {
  case H2T_EV_GET_CONN:
    ev.u.get_conn.scheme = s[0];
    ev.u.get_conn.authority = s[1];
    break;
  case H2T_EV_DNS_START:
    ev.u.dns_start.host = s[0];
    break;
  case H2T_EV_DNS_DONE:
    ev.u.dns_done.addrs = (nums[0] & 1) ? NULL : s;
    ev.u.dns_done.naddrs = nums[1] % 9;
    ev.u.dns_done.error = (int)(int32_t)nums[2];
    ev.u.dns_done.literal = (int)(nums[3] & 1);
    break;
  case H2T_EV_CONNECT_START:
  case H2T_EV_CONNECT_DONE:
    ev.u.connect.addr = s[0];
    ev.u.connect.error = (int)(int32_t)nums[1];
    break;
  case H2T_EV_TLS_HANDSHAKE_START:
  case H2T_EV_TLS_HANDSHAKE_DONE:
  case H2T_EV_SRV_TLS_HANDSHAKE_DONE:
    ev.u.tls.sni = s[0];
    ev.u.tls.version = (nums[0] & 1) ? NULL : s[1];
    ev.u.tls.cipher = s[2];
    ev.u.tls.alpn = (nums[0] & 2) ? NULL : s[3];
    ev.u.tls.verify_result = (long)nums[1];
    ev.u.tls.verify_error = s[4];
    ev.u.tls.resumed = (int)nums[2];
    ev.u.tls.error = (int)(int32_t)nums[3];
    break;
  case H2T_EV_GOT_CONN:
    ev.u.got_conn.reused = (int)(nums[0] & 1);
    ev.u.got_conn.was_idle = (int)(nums[0] & 2);
    ev.u.got_conn.idle_us = nums[1];
    ev.u.got_conn.new_reason = (h2t_conn_reason)(nums[2] % 16);
    ev.u.got_conn.active_streams = (uint32_t)nums[3];
    ev.u.got_conn.max_streams = (uint32_t)(nums[3] >> 32);
    break;
  case H2T_EV_WROTE_HEADER_FIELD:
    ev.u.header_field.name = (nums[0] & 1) ? NULL : s[0];
    ev.u.header_field.value = (nums[0] & 2) ? NULL : s[1];
    /* a length that is given counts bytes, NULs included */
    if (nums[0] & 4) {
      ev.u.header_field.namelen = ev.u.header_field.name ? lens[0] : 0;
      ev.u.header_field.valuelen =
          ev.u.header_field.value ? lens[1] + (lens[1] ? 1 + lens[2] : 0) : 0;
    }
    break;
  case H2T_EV_GOT_1XX_RESPONSE:
  case H2T_EV_GOT_HEADERS:
  case H2T_EV_SRV_WROTE_HEADERS:
    ev.u.response.status = (int)(int32_t)nums[1];
    break;
  case H2T_EV_WROTE_REQUEST:
    ev.u.wrote_request.error = (int)(int32_t)nums[1];
    break;
  case H2T_EV_PUT_IDLE_CONN:
    ev.u.put_idle_conn.reusable = (int)(nums[0] & 1);
    ev.u.put_idle_conn.reason = (h2t_conn_reason)(nums[1] % 16);
    ev.u.put_idle_conn.active_streams = (uint32_t)nums[2];
    break;
  case H2T_EV_GOT_DATA:
    ev.u.data.bytes = (size_t)nums[1];
    ev.u.data.stream_window = (int32_t)nums[2];
    ev.u.data.conn_window = (int32_t)nums[3];
    break;
  case H2T_EV_FLOW_BLOCKED:
  case H2T_EV_SRV_FLOW_BLOCKED:
    ev.u.flow_blocked.conn_level = (int)(nums[0] & 1);
    ev.u.flow_blocked.stream_window = (int32_t)nums[2];
    ev.u.flow_blocked.conn_window = (int32_t)nums[3];
    break;
  case H2T_EV_STREAM_RESET:
  case H2T_EV_SRV_STREAM_RESET:
    ev.u.stream_reset.error_code = (uint32_t)nums[1];
    ev.u.stream_reset.by_peer = (int)(nums[0] & 1);
    break;
  case H2T_EV_GOAWAY:
    ev.u.goaway.last_stream_id = (int32_t)nums[2];
    ev.u.goaway.error_code = (uint32_t)nums[1];
    ev.u.goaway.by_peer = (int)(nums[0] & 1);
    break;
  case H2T_EV_SETTINGS:
    ev.u.settings.max_concurrent_streams = (nums[0] & 1) ? UINT32_MAX
                                                         : (uint32_t)nums[1];
    ev.u.settings.initial_window_size = (uint32_t)(nums[1] >> 32);
    ev.u.settings.max_frame_size = (uint32_t)nums[2];
    ev.u.settings.header_table_size = (uint32_t)(nums[2] >> 32);
    ev.u.settings.max_header_list_size = (uint32_t)nums[3];
    ev.u.settings.enable_push = (uint32_t)(nums[3] >> 32);
    break;
  case H2T_EV_RETRY:
    ev.u.retry.reason = (h2t_retry_reason)(nums[1] % 8);
    ev.u.retry.attempt = (unsigned)nums[2];
    break;
  case H2T_EV_DONE:
    ev.u.done.error = (int)(int32_t)nums[1];
    ev.u.done.status = (int)(int32_t)(nums[1] >> 32);
    ev.u.done.bytes_sent = nums[2];
    ev.u.done.bytes_recv = nums[3];
    ev.u.done.total_us = nums[0];
    ev.u.done.attempts = (unsigned)(nums[0] >> 32);
    break;
  case H2T_EV_SRV_CONN_ACCEPTED:
    ev.u.conn_accepted.peer = s[0];
    ev.u.conn_accepted.local = (nums[0] & 1) ? NULL : s[1];
    break;
  case H2T_EV_SRV_REQUEST_HEADERS:
    ev.u.request_headers.method = s[0];
    ev.u.request_headers.path = s[1];
    ev.u.request_headers.authority = (nums[0] & 1) ? NULL : s[2];
    ev.u.request_headers.scheme = s[3];
    break;
  case H2T_EV_SRV_REQUEST_BODY_DONE:
  case H2T_EV_SRV_WROTE_RESPONSE:
    ev.u.body.bytes = nums[1];
    break;
  case H2T_EV_SRV_HANDLER_STARTED:
    ev.u.handler_started.route = s[0];
    break;
  case H2T_EV_SRV_STREAM_CLOSED:
    ev.u.stream_closed.error_code = (uint32_t)nums[1];
    ev.u.stream_closed.bytes_in = nums[2];
    ev.u.stream_closed.bytes_out = nums[3];
    ev.u.stream_closed.total_us = nums[0];
    break;
  case H2T_EV_SRV_GOAWAY_SENT:
    ev.u.goaway_sent.last_stream_id = (int32_t)nums[2];
    ev.u.goaway_sent.error_code = (uint32_t)nums[1];
    break;
  case H2T_EV_SRV_LOAD_SHED:
    ev.u.load_shed.reason = (h2t_shed_reason)(nums[1] % 5);
    ev.u.load_shed.action = (h2t_shed_action)(nums[2] % 5);
    break;
  default:
    break;
  }
  if (ev.type == H2T_EV_COUNT_) {
    if (h2t_event_json(&ev, NULL, 0) != H2T_ERR_INVALID_ARG)
      h2t_fuzz_fail("an unknown event type was written");
    return 0;
  }
  h2t_fuzz_event_check(&ev, NULL);
  return 0;
}
