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
  case H2T_SHED_HEADER_TIMEOUT:
    return "header_timeout";
  case H2T_SHED_BODY_TIMEOUT:
    return "body_timeout";
  case H2T_SHED_IDLE_TIMEOUT:
    return "idle_timeout";
  case H2T_SHED_BODY_BUDGET:
    return "body_budget";
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
  case H2T_SHED_RESET:
    return "reset";
  case H2T_SHED_FLOW_CONTROL:
    return "flow_control";
  case H2T_SHED_EVICT:
    return "evict";
  }
  return NULL;
}

/* h2t__trace_hook_off: trace_int.h. */

/* Each hook field lies past the common head, and the structs hold exactly
 * one hook per event of their side: a hook without an event, or two events
 * sharing one field, changes the count. */
#define ONE(up, low) +1
enum {
  NCLIENT_EVENTS = 0 H2T_CLIENT_EVENT_MAP(ONE),
  NSERVER_EVENTS = 0 H2T_SERVER_EVENT_MAP(ONE)
};
#undef ONE
_Static_assert((int)NCLIENT_EVENTS == (int)H2T_EV_FIRST_SERVER_,
               "client events come first");
_Static_assert((int)NCLIENT_EVENTS + NSERVER_EVENTS == (int)H2T_EV_COUNT_,
               "every event is a client or a server event");
_Static_assert(sizeof(h2t_client_trace) ==
                   offsetof(h2t_client_trace, any) +
                       (1 + NCLIENT_EVENTS) * sizeof(h2t_hook),
               "h2t_client_trace has one hook per client event");
_Static_assert(sizeof(h2t_server_trace) ==
                   offsetof(h2t_server_trace, any) +
                       (1 + NSERVER_EVENTS) * sizeof(h2t_hook),
               "h2t_server_trace has one hook per server event");
#define CLIENT_PAST_HEAD(up, low)                                              \
  _Static_assert(offsetof(h2t_client_trace, low) >                             \
                     offsetof(h2t_client_trace, any),                          \
                 #low " is a hook of h2t_client_trace");
#define SERVER_PAST_HEAD(up, low)                                              \
  _Static_assert(offsetof(h2t_server_trace, low) >                             \
                     offsetof(h2t_server_trace, any),                          \
                 #low " is a hook of h2t_server_trace");
H2T_CLIENT_EVENT_MAP(CLIENT_PAST_HEAD)
H2T_SERVER_EVENT_MAP(SERVER_PAST_HEAD)
#undef CLIENT_PAST_HEAD
#undef SERVER_PAST_HEAD

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
  tc->ife_fast = tc->single || !tc->nheads ? tc->ife : NULL;
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
