/*
 * trace/ private interface, used by h2/.  trace/ never calls into h2/.
 */
#ifndef H2T_TRACE_INT_H
#define H2T_TRACE_INT_H

#include <stddef.h>

#include <h2trace/common.h>
#include <h2trace/trace.h>
#include "trace/abi_int.h"
#include "trace/probes_int.h"

/* --- allocation through the optional h2t_mem --------------------------- */
void *h2t_xmalloc(const h2t_mem *m, size_t n);
void *h2t_xcalloc(const h2t_mem *m, size_t nmemb, size_t n);
void *h2t_xrealloc(const h2t_mem *m, void *p, size_t n);
void h2t_xfree(const h2t_mem *m, void *p);
char *h2t_xstrdup(const h2t_mem *m, const char *s);
char *h2t_xstrndup(const h2t_mem *m, const char *s, size_t n);
/* Append n bytes of d to *buf (*len in use of *cap), NUL-terminated: the
 * buffer doubles from first_cap as needed.  0, or -1 when out of memory
 * (the buffer is as it was). */
int h2t__buf_append(const h2t_mem *m, uint8_t **buf, size_t *len, size_t *cap,
                    size_t first_cap, const uint8_t *d, size_t n);

/* h2t_header_is_sensitive() for a name that is not NUL-terminated (as
 * nghttp2 hands them out).  Thread-safe, lock-free. */
int h2t__header_is_sensitive_n(const char *name, size_t len);

/* Process-unique ids for requests and connections (thread-safe). */
uint64_t h2t_next_req_id(void);
uint64_t h2t_next_conn_id(void);

/*
 * A trace chain: up to TRACE_MAX_HEADS trace structs (each possibly with its
 * own `next` chain), newest first, plus a mask with bit (1 << type) set when
 * at least one hook would run for that event type.  The mask is computed once
 * (per request, per server) so that each trace point is one branch when off.
 */
#define TRACE_MAX_HEADS 3

struct inflight_entry;

typedef struct trace_chain {
  uint64_t mask;
  /* Set when the chain is one full-size trace struct with no `next`, no
   * `any` and no in-flight entry (the common case): its hooks are called
   * straight from the inline trace_emit().  Kept by the functions below. */
  const void *direct;
  /* The same shape but with an in-flight entry: the walk's short way. */
  const void *single;
  /* The in-flight entry when the chain is it and at most `single` (the
   * common case of a served request, with or without one plain user
   * trace): trace_emit() hands the event to both itself, with no walk. */
  struct inflight_entry *ife_fast;
  uint8_t nheads;
  uint8_t server; /* heads are h2t_server_trace, else h2t_client_trace */
  const void *heads[TRACE_MAX_HEADS];
  struct inflight_entry *ife; /* the request's in-flight entry, or NULL */
} trace_chain;

/* Reset to "nothing traced". */
void h2t__trace_chain_clear(trace_chain *tc, int server);
/* Append a trace (NULL is ignored; over TRACE_MAX_HEADS it is dropped and
 * the function returns -1).  Recomputes the mask. */
int h2t__trace_chain_add(trace_chain *tc, const void *trace);
/* The struct_size rule for a trace a caller gives (a client's, a server's, a
 * request's): it and every trace reached through `next` (up to 64) hold at
 * least the first version's hooks.  NULL is fine.  0 or H2T_ERR_INVALID_ARG.
 * (A trace that shrinks afterwards is skipped when events are dispatched.) */
int h2t__trace_ok(const void *trace, int server);

/* A hook, the in-flight table or an attached probe wants the event.  The
 * probe's semaphore is ORed in, not tested apart: still one branch. */
#define TRACE_MASKED(tc, type) ((int)(((tc)->mask >> (type)) & 1u))
#define TRACE_WANTS(tc, type)                                                  \
  __builtin_expect(TRACE_MASKED(tc, type) | H2T_PROBE_ON(type), 0)

/* Append a trace whose mask is already known (cached by the caller). */
int h2t__trace_chain_push(trace_chain *tc, const void *trace, uint64_t mask);

/* Attach the request's in-flight entry (NULL: none): its events then also
 * reach the in-flight table, which keeps state, history and bytes. */
void h2t__trace_chain_set_inflight(trace_chain *tc, struct inflight_entry *e);

/* Offset of each event's hook in its trace struct (client or server),
 * made from the same lists as the enum: an event without its field in its
 * side's struct does not compile, and no slot can be left 0 (that is
 * struct_size's offset, which would be called as a function).  Here, not
 * in a .c file, so that a call site whose event type is a constant finds
 * its hook at a constant offset (no table load). */
#define TRACE_OFF_C_(up, low) [H2T_EV_##up] = offsetof(h2t_client_trace, low),
#define TRACE_OFF_S_(up, low) [H2T_EV_##up] = offsetof(h2t_server_trace, low),
static const uint16_t h2t__trace_hook_off[H2T_EV_COUNT_] = {
    H2T_CLIENT_EVENT_MAP(TRACE_OFF_C_) H2T_SERVER_EVENT_MAP(TRACE_OFF_S_)};
#undef TRACE_OFF_C_
#undef TRACE_OFF_S_

/* The general walk: every head, its `next` chain, `any`, the in-flight
 * entry. */
void h2t__trace_emit_slow(const trace_chain *tc, h2t_event *ev);
/* (trace/inflight.c, below) */
void h2t__inflight_event(struct inflight_entry *e, const h2t_event *ev);

/* Call one trace struct's hook for ev (reads nothing of it afterwards). */
static inline void trace_call_one(const void *trace, h2t_event *ev) {
  const char *t = (const char *)trace;
  h2t_hook fn;
  void *user;
  __builtin_memcpy(&fn, t + h2t__trace_hook_off[ev->type], sizeof fn);
  __builtin_memcpy(&user, t + sizeof(size_t), sizeof user);
  if (fn)
    fn(ev, user);
}

/* Run every hook for ev->type along the chain; reads the clock if ev->t_us
 * is 0; fires the event's attached probes first.  Call only after
 * TRACE_WANTS().  Inline so that the common chain costs a few loads and
 * the hook's call, not a call into the walk. */
static inline void trace_emit(const trace_chain *tc, h2t_event *ev) {
  if (__builtin_expect(H2T_PROBE_ON(ev->type), 0)) {
    if (!ev->t_us)
      ev->t_us = h2t_now_us();
    h2t__probe_event(ev);
    if (!TRACE_MASKED(tc, ev->type))
      return; /* only the probe wanted it */
  }
  if (__builtin_expect(tc->direct != NULL, 1)) {
    if (!ev->t_us)
      ev->t_us = h2t_now_us();
    trace_call_one(tc->direct, ev);
    return;
  }
  if (__builtin_expect(tc->ife_fast != NULL, 1)) {
    if (!ev->t_us)
      ev->t_us = h2t_now_us();
    h2t__inflight_event(tc->ife_fast, ev);
    if (tc->single)
      trace_call_one(tc->single, ev);
    return;
  }
  h2t__trace_emit_slow(tc, ev);
}

/* Is the hook for `type` set in this one struct (not its chain)?  For a
 * struct_size too small to hold it: no. */
h2t_hook h2t__trace_hook_get(const void *trace, int server, h2t_event_type type);

/*
 * --- In-flight table, as h2/ sees it (trace/inflight.c) -----------------
 * h2/ calls h2t__inflight_begin() when a request starts and h2t__inflight_end() when it
 * is done; everything in between arrives as the request's trace events
 * (trace_emit forwards them when the chain has an entry).  All return/accept
 * NULL when the table is off, so h2/ needs no special case.
 */
typedef enum inflight_kind { INFLIGHT_CLIENT = 0, INFLIGHT_SERVER = 1 } inflight_kind;

/* Called from any thread (the diagnostics endpoint's): must only post the
 * cancel to the owning loop (ev_async), never touch the request.  While it
 * runs, h2t__inflight_end() of that request waits for it, so the request cannot
 * end meanwhile (its cancel_arg stays valid): it must not call inflight_*
 * nor take a lock that the loop holds while it emits events or ends
 * requests.
 * h2t__inflight_begin/event/set_status/wait_stream/end are for the loop thread
 * that owns the request only (its writes take no lock). */
typedef void (*inflight_cancel_fn)(void *arg, uint64_t req_id, const char *why);

struct inflight_entry *h2t__inflight_begin(inflight_kind kind, uint64_t req_id,
                                      const char *method, const char *scheme,
                                      const char *authority, const char *path,
                                      inflight_cancel_fn cancel,
                                      void *cancel_arg);
/* The same with the start time h2/ already read (h2t_now_us() clock; 0:
 * read it here): one clock read less per request. */
struct inflight_entry *h2t__inflight_begin_at(inflight_kind kind, uint64_t req_id,
                                         const char *method, const char *scheme,
                                         const char *authority,
                                         const char *path,
                                         inflight_cancel_fn cancel,
                                         void *cancel_arg, uint64_t start_us);
void h2t__inflight_event(struct inflight_entry *e, const h2t_event *ev);
void h2t__inflight_set_status(struct inflight_entry *e, const char *text);
/* The client queued the request because every connection it may use is at
 * the peer's MAX_CONCURRENT_STREAMS (no event says so): "waiting for a
 * stream slot" until its got_conn. */
void h2t__inflight_wait_stream(struct inflight_entry *e);
void h2t__inflight_end(struct inflight_entry *e, int error);
/* Events the table needs, by side; 0 while the table is off. */
uint64_t h2t__inflight_mask(inflight_kind kind);

/*
 * --- Connection registry (trace/connreg.c), for GET /debug/connections ---
 * h2/ registers each client and server connection when it is established
 * and removes it when it is freed; in between it bumps counters, from the
 * connection's loop thread only (they are plain relaxed stores: no lock,
 * no locked instruction; GOAWAY flags may come from any thread).
 * h2t__connreg_add() returns NULL while the in-flight table is off, and every
 * function accepts NULL, so h2/ needs no special case.
 */
struct connreg_entry;
struct connreg_entry *h2t__connreg_add(inflight_kind kind, uint64_t conn_id,
                                  const char *peer, const char *authority);
void h2t__connreg_remove(struct connreg_entry *c);
void h2t__connreg_stream_open(struct connreg_entry *c);  /* a request started */
void h2t__connreg_stream_close(struct connreg_entry *c); /* ... and ended */
void h2t__connreg_set_max_streams(struct connreg_entry *c, uint32_t max);
void h2t__connreg_reused(struct connreg_entry *c);       /* picked from the pool */
void h2t__connreg_goaway(struct connreg_entry *c, int sent); /* 1 sent, 0 got */
void h2t__connreg_bytes(struct connreg_entry *c, uint64_t in, uint64_t out); /* add */

/*
 * --- Metrics (trace/metrics.c), for GET /metrics ----------------------
 * Request outcomes, in-flight states and got_conn reasons come from the
 * in-flight table.  h2/ reports what has no request entry:
 */
/* Count a connection-level event that has no in-flight entry (load_shed,
 * goaway, conn_accepted).  Cheap: a relaxed atomic add.  Any thread. */
void h2t__metrics_event(const h2t_event *ev);
/* Writer queue depth, a process-wide gauge: h2/ adds +n when it queues
 * work for a writer thread and -n when the writer takes it. */
void h2t__metrics_writer_queue_add(int64_t delta);
/* Or, free on the hot path: register a function that reads a writer's
 * depth; GET /metrics calls it (from the diag thread: it must be
 * thread-safe) and adds it to the gauge.  Unregister before `arg` goes
 * away (no call is running or will run once it returns).  0 or
 * H2T_ERR_NOMEM / H2T_ERR_NOT_FOUND. */
int h2t__metrics_writer_register(uint32_t (*depth)(const void *arg), const void *arg);
int h2t__metrics_writer_unregister(const void *arg);

/* --- Coz causal-profiling points (-DH2TRACE_COZ=ON; doc/profiling.md) ---
 * A progress point where a request completes and a latency pair around it,
 * client and server.  Nothing at all in a normal build. */
#ifdef H2T_COZ
#include <coz.h>
#define H2T_COZ_PROGRESS(name) COZ_PROGRESS_NAMED(name)
#define H2T_COZ_BEGIN(name) COZ_BEGIN(name)
#define H2T_COZ_END(name) COZ_END(name)
#else
#define H2T_COZ_PROGRESS(name) ((void)0)
#define H2T_COZ_BEGIN(name) ((void)0)
#define H2T_COZ_END(name) ((void)0)
#endif

#endif
