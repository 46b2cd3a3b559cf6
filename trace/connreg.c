/* Connection registry: what GET /debug/connections lists.  h2/ adds and
 * removes entries (a mutex, once per connection) and bumps counters from
 * the connection's loop thread only, so a bump is a relaxed load and store
 * (no locked instruction); readers copy under the mutex. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trace/inflight_int.h"

struct connreg_entry {
  struct connreg_entry *prev, *next;
  uint64_t id, opened_us;
  int kind;
  char peer[64];
  char authority[H2T_INFLIGHT_AUTHORITY_MAX];
  atomic_uint active, max;
  atomic_uint_fast64_t idle_since, requests, reuses, bytes_in, bytes_out;
  atomic_int goaway; /* bit 0: sent, bit 1: received */
};

static pthread_mutex_t reg_mu = PTHREAD_MUTEX_INITIALIZER;
static struct connreg_entry *reg_head;
static atomic_size_t reg_n;

struct connreg_entry *h2t__connreg_add(inflight_kind kind, uint64_t conn_id,
                                  const char *peer, const char *authority) {
  if (!atomic_load_explicit(&h2t__ifl_on, memory_order_relaxed))
    return NULL;
  struct connreg_entry *c = calloc(1, sizeof *c);
  if (!c)
    return NULL; /* degrade to "not listed" */
  c->id = conn_id;
  c->kind = kind;
  c->opened_us = h2t_now_us();
  snprintf(c->peer, sizeof c->peer, "%s", peer ? peer : "");
  snprintf(c->authority, sizeof c->authority, "%s", authority ? authority : "");
  atomic_store(&c->idle_since, c->opened_us);
  pthread_mutex_lock(&reg_mu);
  c->next = reg_head;
  if (reg_head)
    reg_head->prev = c;
  reg_head = c;
  atomic_fetch_add(&reg_n, 1);
  pthread_mutex_unlock(&reg_mu);
  return c;
}

void h2t__connreg_remove(struct connreg_entry *c) {
  if (!c)
    return;
  pthread_mutex_lock(&reg_mu);
  if (c->prev)
    c->prev->next = c->next;
  else
    reg_head = c->next;
  if (c->next)
    c->next->prev = c->prev;
  atomic_fetch_sub(&reg_n, 1);
  pthread_mutex_unlock(&reg_mu);
  h2t__hist_conn(c->kind, c->opened_us, atomic_load(&c->requests));
  free(c);
}

#define BUMP(field, n)                                                         \
  atomic_store_explicit(&(field),                                              \
                        atomic_load_explicit(&(field), memory_order_relaxed) + \
                            (n),                                               \
                        memory_order_relaxed)

void h2t__connreg_stream_open(struct connreg_entry *c) {
  if (!c)
    return;
  if (!atomic_load_explicit(&c->active, memory_order_relaxed))
    atomic_store_explicit(&c->idle_since, 0, memory_order_relaxed);
  BUMP(c->active, 1);
  BUMP(c->requests, 1);
}

void h2t__connreg_stream_close(struct connreg_entry *c) {
  if (!c)
    return;
  unsigned a = atomic_load_explicit(&c->active, memory_order_relaxed);
  if (!a) /* never below zero if h2/ closes a stream it did not open here */
    return;
  atomic_store_explicit(&c->active, a - 1, memory_order_relaxed);
  if (a == 1)
    atomic_store_explicit(&c->idle_since, h2t_now_us(), memory_order_relaxed);
}

void h2t__connreg_set_max_streams(struct connreg_entry *c, uint32_t max) {
  if (c)
    atomic_store_explicit(&c->max, max, memory_order_relaxed);
}

void h2t__connreg_reused(struct connreg_entry *c) {
  if (c)
    BUMP(c->reuses, 1);
}

void h2t__connreg_goaway(struct connreg_entry *c, int sent) {
  if (c)
    atomic_fetch_or_explicit(&c->goaway, sent ? 1 : 2, memory_order_relaxed);
}

void h2t__connreg_bytes(struct connreg_entry *c, uint64_t in, uint64_t out) {
  if (!c)
    return;
  if (in)
    BUMP(c->bytes_in, in);
  if (out)
    BUMP(c->bytes_out, out);
}

void h2t_inflight_conn_free(h2t_inflight_conn *arr) { free(arr); }

int h2t_inflight_connections(h2t_inflight_conn **out, size_t *n) {
  if (!out || !n)
    return H2T_ERR_INVALID_ARG;
  *out = NULL;
  *n = 0;
  pthread_mutex_lock(&reg_mu);
  size_t cnt = atomic_load(&reg_n);
  h2t_inflight_conn *arr = cnt ? calloc(cnt, sizeof *arr) : NULL;
  if (cnt && !arr) {
    pthread_mutex_unlock(&reg_mu);
    return H2T_ERR_NOMEM;
  }
  size_t i = 0;
  for (struct connreg_entry *c = reg_head; c && i < cnt; c = c->next, i++) {
    h2t_inflight_conn *o = &arr[i];
    o->id = c->id;
    o->kind = (h2t_inflight_kind)c->kind;
    memcpy(o->peer, c->peer, sizeof o->peer);
    memcpy(o->authority, c->authority, sizeof o->authority);
    o->opened_us = c->opened_us;
    o->streams_active = atomic_load_explicit(&c->active, memory_order_relaxed);
    o->streams_max = atomic_load_explicit(&c->max, memory_order_relaxed);
    o->idle_since_us =
        o->streams_active
            ? 0
            : atomic_load_explicit(&c->idle_since, memory_order_relaxed);
    o->requests = atomic_load_explicit(&c->requests, memory_order_relaxed);
    o->reuses = atomic_load_explicit(&c->reuses, memory_order_relaxed);
    int g = atomic_load_explicit(&c->goaway, memory_order_relaxed);
    o->goaway_sent = (g & 1) != 0;
    o->goaway_received = (g & 2) != 0;
    o->bytes_in = atomic_load_explicit(&c->bytes_in, memory_order_relaxed);
    o->bytes_out = atomic_load_explicit(&c->bytes_out, memory_order_relaxed);
  }
  pthread_mutex_unlock(&reg_mu);
  *out = arr;
  *n = i;
  return 0;
}
