/* Hook lookup, composition and dispatch. */
#include <stddef.h>
#include <string.h>

#include "trace/trace_int.h"

static const char *const event_names[H2T_EV_COUNT_] = {
#define XX(up, low) #low,
    H2T_EVENT_MAP(XX)
#undef XX
};

const char *h2t_event_name(h2t_event_type type) {
  return (unsigned)type < H2T_EV_COUNT_ ? event_names[type] : NULL;
}

const char *h2t_conn_reason_name(h2t_conn_reason r) {
  static const char *const names[] = {
#define XX(up, s) s,
      H2T_CONN_REASON_MAP(XX)
#undef XX
  };
  return (unsigned)r < H2T_CONN_REASON_COUNT_ ? names[r] : NULL;
}

const char *h2t_retry_reason_name(h2t_retry_reason r) {
  switch (r) {
  case H2T_RETRY_GOAWAY:
    return "goaway";
  case H2T_RETRY_REFUSED_STREAM:
    return "refused_stream";
  case H2T_RETRY_CONN_CLOSED:
    return "conn_closed";
  }
  return NULL;
}

const char *h2t_shed_reason_name(h2t_shed_reason r) {
  switch (r) {
  case H2T_SHED_INFLIGHT:
    return "inflight";
  case H2T_SHED_CONNECTIONS:
    return "connections";
  }
  return NULL;
}

const char *h2t_shed_action_name(h2t_shed_action a) {
  switch (a) {
  case H2T_SHED_REFUSED_STREAM:
    return "refused_stream";
  case H2T_SHED_503:
    return "503";
  case H2T_SHED_CLOSE:
    return "close";
  }
  return NULL;
}

/* Where each event's hook sits in its struct.  The client events map onto
 * h2t_client_trace fields and the server ones onto h2t_server_trace fields
 * of the same (short) name. */
#define CLIENT_OFF(up, low) [H2T_EV_##up] = offsetof(h2t_client_trace, low),
#define SERVER_OFF(up, low) [H2T_EV_##up] = offsetof(h2t_server_trace, low),
const uint16_t h2t__trace_hook_off[H2T_EV_COUNT_] = {
    CLIENT_OFF(GET_CONN, get_conn) CLIENT_OFF(DNS_START, dns_start)
    CLIENT_OFF(DNS_DONE, dns_done) CLIENT_OFF(CONNECT_START, connect_start)
    CLIENT_OFF(CONNECT_DONE, connect_done)
    CLIENT_OFF(TLS_HANDSHAKE_START, tls_handshake_start)
    CLIENT_OFF(TLS_HANDSHAKE_DONE, tls_handshake_done)
    CLIENT_OFF(GOT_CONN, got_conn)
    CLIENT_OFF(WROTE_HEADER_FIELD, wrote_header_field)
    CLIENT_OFF(WROTE_HEADERS, wrote_headers)
    CLIENT_OFF(WAIT_100_CONTINUE, wait_100_continue)
    CLIENT_OFF(GOT_100_CONTINUE, got_100_continue)
    CLIENT_OFF(GOT_1XX_RESPONSE, got_1xx_response)
    CLIENT_OFF(WROTE_REQUEST, wrote_request)
    CLIENT_OFF(GOT_FIRST_RESPONSE_BYTE, got_first_response_byte)
    CLIENT_OFF(PUT_IDLE_CONN, put_idle_conn)
    CLIENT_OFF(STREAM_OPENED, stream_opened)
    CLIENT_OFF(GOT_HEADERS, got_headers) CLIENT_OFF(GOT_DATA, got_data)
    CLIENT_OFF(FLOW_BLOCKED, flow_blocked)
    CLIENT_OFF(STREAM_RESET, stream_reset) CLIENT_OFF(GOAWAY, goaway)
    CLIENT_OFF(SETTINGS, settings) CLIENT_OFF(RETRY, retry)
    CLIENT_OFF(DONE, done)
    SERVER_OFF(SRV_CONN_ACCEPTED, conn_accepted)
    SERVER_OFF(SRV_TLS_HANDSHAKE_DONE, tls_handshake_done)
    SERVER_OFF(SRV_REQUEST_HEADERS, request_headers)
    SERVER_OFF(SRV_REQUEST_BODY_DONE, request_body_done)
    SERVER_OFF(SRV_HANDLER_STARTED, handler_started)
    SERVER_OFF(SRV_WROTE_HEADERS, wrote_headers)
    SERVER_OFF(SRV_WROTE_FIRST_BYTE, wrote_first_byte)
    SERVER_OFF(SRV_WROTE_RESPONSE, wrote_response)
    SERVER_OFF(SRV_FLOW_BLOCKED, flow_blocked)
    SERVER_OFF(SRV_STREAM_RESET, stream_reset)
    SERVER_OFF(SRV_STREAM_CLOSED, stream_closed)
    SERVER_OFF(SRV_GOAWAY_SENT, goaway_sent)
    SERVER_OFF(SRV_LOAD_SHED, load_shed)};
#undef CLIENT_OFF
#undef SERVER_OFF

/* Both trace structs begin with the same head. */
typedef struct trace_head {
  H2T_TRACE_HEAD_(trace_head);
} trace_head;

static h2t_hook hook_at(const void *trace, size_t off) {
  const trace_head *h = trace;
  h2t_hook fn;
  if (off + sizeof(h2t_hook) > h->struct_size)
    return NULL;
  memcpy(&fn, (const char *)trace + off, sizeof fn);
  return fn;
}

h2t_hook h2t__trace_hook_get(const void *trace, int server, h2t_event_type type) {
  if (server) {
    if (type < H2T_EV_FIRST_SERVER_ || type >= H2T_EV_COUNT_)
      return NULL;
    return hook_at(trace, h2t__trace_hook_off[type]);
  }
  if ((unsigned)type >= H2T_EV_FIRST_SERVER_)
    return NULL;
  return hook_at(trace, h2t__trace_hook_off[type]);
}

void h2t__trace_chain_clear(trace_chain *tc, int server) {
  memset(tc, 0, sizeof *tc);
  tc->server = (uint8_t)(server != 0);
}

static uint64_t mask_of(const trace_head *h, int server) {
  uint64_t m = 0;
  int first = server ? H2T_EV_FIRST_SERVER_ : 0;
  int last = server ? H2T_EV_COUNT_ : H2T_EV_FIRST_SERVER_;
  /* Bounded walk: a cycle in `next` must not hang the process. */
  for (int depth = 0; h && depth < 64; h = h->next, depth++) {
    if (h->struct_size < sizeof(trace_head))
      continue;
    for (int t = first; t < last; t++)
      if (h->any || h2t__trace_hook_get(h, server, (h2t_event_type)t))
        m |= UINT64_C(1) << t;
  }
  return m;
}

/* The chain may skip the general walk when it is exactly one struct of the
 * full current size, with no `next`, no `any` and no in-flight entry. */
static void fix_direct(trace_chain *tc) {
  const trace_head *h = tc->nheads == 1 ? tc->heads[0] : NULL;
  size_t full = tc->server ? sizeof(h2t_server_trace) : sizeof(h2t_client_trace);
  tc->single = h && !h->next && !h->any && h->struct_size >= full ? h : NULL;
  tc->direct = tc->ife ? NULL : tc->single;
}

int h2t__trace_chain_push(trace_chain *tc, const void *trace, uint64_t mask) {
  if (!trace)
    return 0;
  if (tc->nheads >= TRACE_MAX_HEADS)
    return -1;
  tc->heads[tc->nheads++] = trace;
  tc->mask |= mask;
  fix_direct(tc);
  return 0;
}

int h2t__trace_ok(const void *trace, int server) {
  size_t v1 = server ? H2T__SERVER_TRACE_V1 : H2T__CLIENT_TRACE_V1;
  const trace_head *h = trace;
  for (int depth = 0; h && depth < 64; h = h->next, depth++)
    if (h2t__struct_ok(h->struct_size, v1) != 0)
      return H2T_ERR_INVALID_ARG;
  return 0;
}

int h2t__trace_chain_add(trace_chain *tc, const void *trace) {
  return trace ? h2t__trace_chain_push(tc, trace, mask_of(trace, tc->server)) : 0;
}

void h2t__trace_chain_set_inflight(trace_chain *tc, struct inflight_entry *e) {
  if (!e && !tc->ife)
    return; /* the table is off: nothing changes */
  tc->ife = e;
  if (e)
    tc->mask |= h2t__inflight_mask(tc->server ? INFLIGHT_SERVER : INFLIGHT_CLIENT);
  fix_direct(tc);
}

/* More hooks than this for one event means a runaway `next` chain; the
 * rest are dropped (a trace failure degrades to less trace). */
#define MAX_CALLS 64

void h2t__trace_emit_slow(const trace_chain *tc, h2t_event *ev) {
  struct {
    h2t_hook fn;
    void *user;
  } calls[MAX_CALLS];
  unsigned n = 0;
  if (!ev->t_us)
    ev->t_us = h2t_now_us();
  if (tc->ife)
    h2t__inflight_event(tc->ife, ev);
  if (tc->single) { /* one plain trace and the table: nothing to gather */
    trace_call_one(tc->single, ev);
    return;
  }
  /* Gather first, call after: a hook may complete the request, and with it
   * free the chain and the copies it points to, or free its own traces. */
  for (unsigned i = 0; i < tc->nheads; i++) {
    const trace_head *h = tc->heads[i];
    for (int depth = 0; h && depth < MAX_CALLS && n < MAX_CALLS - 1;
         h = h->next, depth++) {
      if (h->struct_size < sizeof(trace_head))
        continue;
      h2t_hook fn = h2t__trace_hook_get(h, tc->server, ev->type);
      if (fn)
        calls[n++] = (typeof(calls[0])){fn, h->user};
      if (h->any)
        calls[n++] = (typeof(calls[0])){h->any, h->user};
    }
  }
  for (unsigned i = 0; i < n; i++)
    calls[i].fn(ev, calls[i].user);
}

static int set_all(void *trace, size_t size, int server, h2t_hook hook,
                   void *user) {
  if (!trace || !hook)
    return H2T_ERR_INVALID_ARG;
  /* The whole struct: a fresh local's `next` and `any` would otherwise be
   * whatever the stack held. */
  memset(trace, 0, size);
  trace_head *h = trace;
  h->struct_size = size;
  h->user = user;
  int first = server ? H2T_EV_FIRST_SERVER_ : 0;
  int last = server ? H2T_EV_COUNT_ : H2T_EV_FIRST_SERVER_;
  for (int t = first; t < last; t++) {
    size_t off = h2t__trace_hook_off[t];
    memcpy((char *)trace + off, &hook, sizeof hook);
  }
  return 0;
}

int h2t_client_trace_set_all(h2t_client_trace *tr, h2t_hook hook, void *user) {
  return set_all(tr, sizeof *tr, 0, hook, user);
}

int h2t_server_trace_set_all(h2t_server_trace *tr, h2t_hook hook, void *user) {
  return set_all(tr, sizeof *tr, 1, hook, user);
}
