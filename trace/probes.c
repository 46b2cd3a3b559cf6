/* USDT probes: what fires them, and their semaphores (probes_int.h). */
#include "trace/trace_int.h"

#ifdef H2T_PROBES
#include <stdlib.h>
#include <string.h>

#define _SDT_HAS_SEMAPHORES 1
#define SDT_USE_VARIADIC 1
#include <sys/sdt.h>

unsigned short h2t__probe_sema[H2T_PROBE_NSEMA_]
    __attribute__((section(".probes"), aligned(8)));

/* <sys/sdt.h> names each probe's semaphore h2trace_<probe>_semaphore.
 * Here each name is an alias of its slot in the array, a local symbol (the
 * probes are all fired from this file): the assembler sets it, a
 * declaration lets the C side of the macro refer to it. */
#define SEMA_DECL(probe, slot)                                                 \
  extern unsigned short h2trace_##probe##_semaphore                            \
      __attribute__((visibility("hidden")));
#define SEMA_SET(probe, slot)                                                  \
  __asm__(".set h2trace_" #probe "_semaphore, h2t__probe_sema + %c0" ::"i"(   \
      2 * (slot)));
#define CLIENT_SEMA(up, low) SEMA_DECL(client__##low, H2T_EV_##up)
#define SERVER_SEMA(up, low) SEMA_DECL(server__##low, H2T_EV_##up)
H2T_CLIENT_EVENT_MAP(CLIENT_SEMA)
H2T_SERVER_EVENT_MAP(SERVER_SEMA)
SEMA_DECL(json, H2T_PROBE_JSON_)
SEMA_DECL(inflight__state, H2T_PROBE_STATE_)
#undef CLIENT_SEMA
#undef SERVER_SEMA

/* Never called: its assembly holds the aliases (directives, no code). */
void h2t__probe_sema_aliases(void);
void h2t__probe_sema_aliases(void) {
#define CLIENT_SET(up, low) SEMA_SET(client__##low, H2T_EV_##up)
#define SERVER_SET(up, low) SEMA_SET(server__##low, H2T_EV_##up)
  H2T_CLIENT_EVENT_MAP(CLIENT_SET)
  H2T_SERVER_EVENT_MAP(SERVER_SET)
  SEMA_SET(json, H2T_PROBE_JSON_)
  SEMA_SET(inflight__state, H2T_PROBE_STATE_)
#undef CLIENT_SET
#undef SERVER_SET
}

/* Every event probe: req_id, conn_id, stream_id, t_us, the event (layout
 * in <h2trace/trace.h>), then its main fields.  Tools that read six
 * arguments (bpftrace 0.17) reach the rest through the event. */
#define FIRE(...) STAP_PROBEV(h2trace, __VA_ARGS__)
#define EV(up, probe, ...)                                                     \
  case H2T_EV_##up:                                                            \
    if (h2trace_##probe##_semaphore)                                           \
      FIRE(probe, ev->req_id, ev->conn_id, ev->stream_id, ev->t_us, ev,        \
           ##__VA_ARGS__);                                                     \
    break;

static void fire_event(const h2t_event *ev) {
  const __typeof__(ev->u) *u = &ev->u;
  switch (ev->type) {
    EV(GET_CONN, client__get_conn, u->get_conn.scheme, u->get_conn.authority)
    EV(DNS_START, client__dns_start, u->dns_start.host)
    EV(DNS_DONE, client__dns_done, u->dns_done.error, u->dns_done.naddrs,
       u->dns_done.addrs, u->dns_done.literal)
    EV(CONNECT_START, client__connect_start, u->connect.addr)
    EV(CONNECT_DONE, client__connect_done, u->connect.addr, u->connect.error)
    EV(TLS_HANDSHAKE_START, client__tls_handshake_start, u->tls.sni)
    EV(TLS_HANDSHAKE_DONE, client__tls_handshake_done, u->tls.error,
       u->tls.version, u->tls.alpn, u->tls.sni, u->tls.cipher, u->tls.resumed,
       u->tls.verify_result)
    EV(GOT_CONN, client__got_conn, u->got_conn.reused, u->got_conn.was_idle,
       u->got_conn.idle_us, u->got_conn.new_reason, u->got_conn.active_streams,
       u->got_conn.max_streams)
  case H2T_EV_WROTE_HEADER_FIELD:
    if (h2trace_client__wrote_header_field_semaphore) {
      /* values of sensitive headers stay out of traces, as in the JSON */
      const char *n = u->header_field.name ? u->header_field.name : "";
      size_t nl = u->header_field.name && !u->header_field.namelen
                      ? strlen(n)
                      : u->header_field.namelen;
      const char *v = u->header_field.value ? u->header_field.value : "";
      size_t vl = u->header_field.value && !u->header_field.valuelen
                      ? strlen(v)
                      : u->header_field.valuelen;
      if (h2t__header_is_sensitive_n(n, nl))
        v = "[redacted]", vl = 10;
      FIRE(client__wrote_header_field, ev->req_id, ev->conn_id, ev->stream_id,
           ev->t_us, ev, n, nl, v, vl);
    }
    break;
    EV(WROTE_HEADERS, client__wrote_headers)
    EV(WAIT_100_CONTINUE, client__wait_100_continue)
    EV(GOT_100_CONTINUE, client__got_100_continue)
    EV(GOT_1XX_RESPONSE, client__got_1xx_response, u->response.status)
    EV(WROTE_REQUEST, client__wrote_request, u->wrote_request.error)
    EV(GOT_FIRST_RESPONSE_BYTE, client__got_first_response_byte)
    EV(PUT_IDLE_CONN, client__put_idle_conn, u->put_idle_conn.reusable,
       u->put_idle_conn.reason, u->put_idle_conn.active_streams)
    EV(STREAM_OPENED, client__stream_opened)
    EV(GOT_HEADERS, client__got_headers, u->response.status)
    EV(GOT_DATA, client__got_data, u->data.bytes, u->data.stream_window,
       u->data.conn_window)
    EV(FLOW_BLOCKED, client__flow_blocked, u->flow_blocked.conn_level,
       u->flow_blocked.stream_window, u->flow_blocked.conn_window)
    EV(STREAM_RESET, client__stream_reset, u->stream_reset.error_code,
       u->stream_reset.by_peer)
    EV(GOAWAY, client__goaway, u->goaway.error_code, u->goaway.last_stream_id,
       u->goaway.by_peer)
    EV(SETTINGS, client__settings, u->settings.max_concurrent_streams,
       u->settings.initial_window_size, u->settings.max_frame_size,
       u->settings.header_table_size, u->settings.max_header_list_size,
       u->settings.enable_push)
    EV(RETRY, client__retry, u->retry.reason, u->retry.attempt)
    EV(DONE, client__done, u->done.error, u->done.status, u->done.total_us,
       u->done.bytes_sent, u->done.bytes_recv, u->done.attempts,
       u->done.reset_code)
    EV(SRV_CONN_ACCEPTED, server__conn_accepted, u->conn_accepted.peer,
       u->conn_accepted.local)
    EV(SRV_TLS_HANDSHAKE_DONE, server__tls_handshake_done, u->tls.error,
       u->tls.version, u->tls.alpn, u->tls.sni, u->tls.cipher, u->tls.resumed,
       u->tls.verify_result)
    EV(SRV_REQUEST_HEADERS, server__request_headers, u->request_headers.path,
       u->request_headers.method, u->request_headers.authority,
       u->request_headers.scheme)
    EV(SRV_REQUEST_BODY_DONE, server__request_body_done, u->body.bytes)
    EV(SRV_HANDLER_STARTED, server__handler_started, u->handler_started.route)
    EV(SRV_WROTE_HEADERS, server__wrote_headers, u->response.status)
    EV(SRV_WROTE_FIRST_BYTE, server__wrote_first_byte)
    EV(SRV_WROTE_RESPONSE, server__wrote_response, u->body.bytes)
    EV(SRV_FLOW_BLOCKED, server__flow_blocked, u->flow_blocked.conn_level,
       u->flow_blocked.stream_window, u->flow_blocked.conn_window)
    EV(SRV_STREAM_RESET, server__stream_reset, u->stream_reset.error_code,
       u->stream_reset.by_peer)
    EV(SRV_STREAM_CLOSED, server__stream_closed, u->stream_closed.total_us,
       u->stream_closed.error_code, u->stream_closed.bytes_in,
       u->stream_closed.bytes_out)
    EV(SRV_GOAWAY_SENT, server__goaway_sent, u->goaway_sent.error_code,
       u->goaway_sent.last_stream_id)
    EV(SRV_LOAD_SHED, server__load_shed, u->load_shed.reason,
       u->load_shed.action)
  case H2T_EV_COUNT_:
    break;
  }
}

/* The h2stat --json line, in pieces of at most H2T_PROBE_CHUNK bytes: a
 * tracer reads bounded strings.  json(type, req_id, conn_id, seq, last,
 * piece); a reader joins a thread's pieces 0..last. */
static void fire_json(const h2t_event *ev) {
  char line[2048], piece[H2T_PROBE_CHUNK + 1];
  char *p = line;
  int n = h2t_event_json(ev, line, sizeof line);
  if (n < 0)
    return;
  if ((size_t)n >= sizeof line) { /* long header values: rare, and traced */
    p = malloc((size_t)n + 1);
    if (!p || h2t_event_json(ev, p, (size_t)n + 1) != n) {
      free(p);
      return;
    }
  }
  unsigned last = n ? (unsigned)(n - 1) / H2T_PROBE_CHUNK : 0;
  for (unsigned seq = 0; seq <= last; seq++) {
    size_t off = (size_t)seq * H2T_PROBE_CHUNK, len = (size_t)n - off;
    if (len > H2T_PROBE_CHUNK)
      len = H2T_PROBE_CHUNK;
    memcpy(piece, p + off, len);
    piece[len] = '\0';
    STAP_PROBE6(h2trace, json, (int)ev->type, ev->req_id, ev->conn_id, seq,
                last, piece);
  }
  if (p != line)
    free(p);
}

void h2t__probe_event(const h2t_event *ev) {
  if ((unsigned)ev->type >= H2T_EV_COUNT_)
    return;
  fire_event(ev);
  if (h2trace_json_semaphore)
    fire_json(ev);
}

void h2t__probe_state(uint64_t req_id, uint64_t conn_id, int32_t stream_id,
                      uint64_t t_us, unsigned state, unsigned kind) {
  STAP_PROBE6(h2trace, inflight__state, req_id, conn_id, stream_id, t_us,
              state, kind);
}
#endif
