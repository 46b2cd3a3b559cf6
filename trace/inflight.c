/* In-flight table: entries, state machine, snapshots, recent ring, cancel. */
#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "trace/inflight_int.h"
#include "trace/tracectx_int.h"

struct ifl_table h2t__ifl = {.mu = PTHREAD_MUTEX_INITIALIZER};
atomic_int h2t__ifl_on;
pthread_rwlock_t h2t__ifl_life = PTHREAD_RWLOCK_INITIALIZER;
atomic_int h2t__ifl_users;

static const char *const state_names[H2T_IFS_COUNT_] = {
#define XX(id, name, text) name,
    H2T_INFLIGHT_STATE_MAP(XX)
#undef XX
};
static const char *const state_texts[H2T_IFS_COUNT_] = {
#define XX(id, name, text) text,
    H2T_INFLIGHT_STATE_MAP(XX)
#undef XX
};

const char *h2t_inflight_state_name(h2t_inflight_state s) {
  return (unsigned)s < H2T_IFS_COUNT_ ? state_names[s] : NULL;
}

const char *h2t_inflight_state_text(h2t_inflight_state s) {
  return (unsigned)s < H2T_IFS_COUNT_ ? state_texts[s] : NULL;
}

const char *h2t_inflight_kind_name(h2t_inflight_kind k) {
  return k == H2T_INFLIGHT_CLIENT ? "client"
         : k == H2T_INFLIGHT_SERVER ? "server"
                                    : NULL;
}

/* --- entry lock ----------------------------------------------------------- */

void h2t__ife_lock(struct inflight_entry *e) {
  for (unsigned spins = 0;; spins++) {
    unsigned s = atomic_load_explicit(&e->lock, memory_order_relaxed);
    if (!(s & 1u) &&
        atomic_compare_exchange_weak_explicit(&e->lock, &s, s + 1,
                                              memory_order_acquire,
                                              memory_order_relaxed))
      return;
    if (spins > 64)
      sched_yield(); /* the holder may have been preempted */
  }
}

void h2t__ife_unlock(struct inflight_entry *e) {
  unsigned s = atomic_load_explicit(&e->lock, memory_order_relaxed);
  atomic_store_explicit(&e->lock, s + 1, memory_order_release);
}

/*
 * Readers never take the lock: the lock word doubles as a sequence count
 * (odd while a writer holds it), so a reader copies the entry and keeps the
 * copy only if the count was even and unchanged around it (a seqlock).  A
 * loop thread therefore never waits for a reader, even one that is
 * preempted mid-copy.  The copy itself races with the writer by design and
 * is thrown away when it did; it is done word by word through volatile so
 * the compiler makes no assumption, and kept out of ThreadSanitizer's view.
 */
#if defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 8)
#define NO_TSAN __attribute__((no_sanitize("thread")))
#else
#define NO_TSAN
#endif

NO_TSAN static void racy_copy(struct inflight_entry *dst,
                              const struct inflight_entry *src) {
  const volatile uint64_t *s = (const volatile uint64_t *)(const void *)src;
  uint64_t *d = (uint64_t *)(void *)dst;
  for (size_t i = 0; i < sizeof *dst / sizeof *d; i++)
    d[i] = s[i];
}

_Static_assert(sizeof(struct inflight_entry) % sizeof(uint64_t) == 0,
               "entries are copied in 8-byte words");

/* A write section is a few stores, but its writer may be preempted in it:
 * then yield so that it can finish, and after 100 ms give up on this entry
 * (a reader never makes a writer wait; it only ever waits for one). */
static int raw_read(struct inflight_entry *dst, const struct inflight_entry *src) {
  struct inflight_entry *e = (struct inflight_entry *)src;
  uint64_t t0 = 0;
  for (unsigned tries = 0;; tries++) {
    unsigned s1 = atomic_load_explicit(&e->lock, memory_order_acquire);
    if (s1 & 1u) {
      if (tries < 32)
        continue;
      if (!t0)
        t0 = h2t_now_us();
      else if (h2t_now_us() - t0 > 100000)
        return -1;
      sched_yield();
      continue;
    }
    racy_copy(dst, src);
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&e->lock, memory_order_relaxed) == s1) {
      atomic_init(&dst->lock, 0);
      return 0;
    }
  }
}

static void side_merge(const struct inflight_entry *slot,
                       struct inflight_entry *copy);

int h2t__ife_read(struct inflight_entry *dst, const struct inflight_entry *src) {
  if (raw_read(dst, src) != 0)
    return -1;
  if (atomic_load_explicit(&dst->pending, memory_order_relaxed) & IFE_PEND_SIDE)
    side_merge(src, dst);
  return 0;
}

/* Owner write sections: the sequence count made odd, then even again, with
 * plain stores (only the owner writes an entry in flight). */
static void ow_begin(struct inflight_entry *e) {
  unsigned s = atomic_load_explicit(&e->lock, memory_order_relaxed);
  atomic_store_explicit(&e->lock, s + 1, memory_order_relaxed);
  atomic_thread_fence(memory_order_release);
}

static void ow_end(struct inflight_entry *e) {
  unsigned s = atomic_load_explicit(&e->lock, memory_order_relaxed);
  atomic_store_explicit(&e->lock, s + 1, memory_order_release);
}

/* --- side records: what other threads ask of an entry in flight ---------- */

struct side {
  struct side *next;
  const struct inflight_entry *slot;
  uint64_t id, cancel_us;
  int cancel, has_status;
  char reason[IFE_REASON];
  char status[IFE_STATUS];
};

static pthread_mutex_t side_mu = PTHREAD_MUTEX_INITIALIZER;
static struct side *sides;

static struct side *side_find(const struct inflight_entry *slot, uint64_t id) {
  for (struct side *d = sides; d; d = d->next)
    if (d->slot == slot && d->id == id)
      return d;
  return NULL;
}

static size_t copy_trunc(char *dst, size_t cap, const char *src);
static inline void step_to(struct inflight_entry *e, unsigned st, uint64_t t);

static void side_apply(const struct side *d, struct inflight_entry *e) {
  if (d->has_status)
    memcpy(e->status, d->status, sizeof e->status);
  if (d->cancel && !(e->flags & IFE_CANCELED) && e->state != H2T_IFS_DONE) {
    e->flags |= IFE_CANCELED;
    memcpy(e->cancel_reason, d->reason, sizeof e->cancel_reason);
    step_to(e, H2T_IFS_CANCELING, d->cancel_us);
  }
}

/* A reader's copy shows what is asked even while the loop is stuck. */
static void side_merge(const struct inflight_entry *slot,
                       struct inflight_entry *copy) {
  pthread_mutex_lock(&side_mu);
  const struct side *d = side_find(slot, copy->id);
  if (d)
    side_apply(d, copy);
  pthread_mutex_unlock(&side_mu);
}

/* The owner, in a write section: fold the slot's records in and drop
 * them (also stale ones of an earlier request in the slot). */
static void side_fold(struct inflight_entry *e) {
  pthread_mutex_lock(&side_mu);
  atomic_fetch_and(&e->pending, (unsigned char)~IFE_PEND_SIDE);
  for (struct side **pp = &sides; *pp;) {
    struct side *d = *pp;
    if (d->slot != e) {
      pp = &d->next;
      continue;
    }
    if (d->id == e->id)
      side_apply(d, e);
    *pp = d->next;
    free(d);
  }
  pthread_mutex_unlock(&side_mu);
}

static void sides_free(void) {
  pthread_mutex_lock(&side_mu);
  while (sides) {
    struct side *d = sides;
    sides = d->next;
    free(d);
  }
  pthread_mutex_unlock(&side_mu);
}

#define FOLD(e)                                                                \
  do {                                                                         \
    if (__builtin_expect(atomic_load_explicit(&(e)->pending,                   \
                                              memory_order_relaxed) &          \
                             IFE_PEND_SIDE,                                    \
                         0))                                                   \
      side_fold(e);                                                            \
  } while (0)

static struct inflight_entry *slot(uint32_t idx) {
  return &h2t__ifl.chunks[idx / IFL_CHUNK][idx % IFL_CHUNK];
}

/* --- enable / disable ---------------------------------------------------- */

static void table_free(void) {
  size_t n = atomic_load(&h2t__ifl.nchunks);
  for (size_t i = 0; i < n; i++)
    free(h2t__ifl.chunks[i]);
  free(h2t__ifl.chunks);
  free(h2t__ifl.ring);
  h2t__ifl.chunks = NULL;
  h2t__ifl.ring = NULL;
  atomic_store(&h2t__ifl.nchunks, 0);
  h2t__ifl.allocated = 0;
  h2t__ifl.free_head = 0;
  h2t__ifl.ring_cap = 0;
  atomic_store(&h2t__ifl.ring_seq, 0);
  h2t__profile_fini();
  sides_free();
}

/* Sizes a table can have: slot indices (live entries and the ring's) fit
 * in 32 bits. */
static int sizes_ok(size_t max, size_t ring, size_t nauth) {
  return max <= (size_t)UINT32_MAX - 1 - ((size_t)1 << 24) &&
         ring <= ((size_t)1 << 24) && nauth <= H2T_METRICS_AUTHORITIES_MAX;
}

static int table_init(const h2t_inflight_config *cfg) {
  size_t max = cfg && cfg->max_entries ? cfg->max_entries : 65536;
  size_t ring = cfg && cfg->recent ? cfg->recent : 256;
  size_t nauth = cfg && cfg->metrics_authorities
                     ? cfg->metrics_authorities
                     : H2T_METRICS_AUTHORITIES_DEFAULT;
  if (!sizes_ok(max, ring, nauth))
    return H2T_ERR_INVALID_ARG;
  h2t__ifl.max_entries = max;
  /* finished entries wait in their slots while the ring holds them */
  h2t__ifl.max_chunks = (max + ring + IFL_CHUNK - 1) / IFL_CHUNK;
  h2t__ifl.chunks = calloc(h2t__ifl.max_chunks, sizeof *h2t__ifl.chunks);
  h2t__ifl.ring = calloc(ring, sizeof *h2t__ifl.ring);
  h2t__ifl.ring_cap = ring;
  atomic_store(&h2t__ifl.ring_seq, 0);
  atomic_fetch_add(&h2t__ifl.gen, 1); /* thread caches of an older table: void */
  atomic_store(&h2t__ifl.live, 0);
  atomic_store(&h2t__ifl.dropped, 0);
  if (!h2t__ifl.chunks || !h2t__ifl.ring || h2t__profile_init() != 0 ||
      h2t__hist_reset(nauth) != 0) {
    table_free();
    return H2T_ERR_NOMEM;
  }
  h2t__ifl.metrics_authorities = nauth;
  h2t__metrics_reset();
  return 0;
}

/* Names are checked before anything is added: a bad list changes nothing. */
#define SENS_LEN 64
static int sens_list_ok(const h2t_inflight_config *cfg) {
  if (!cfg->nsensitive_headers)
    return 1;
  if (!cfg->sensitive_headers)
    return 0;
  for (size_t i = 0; i < cfg->nsensitive_headers; i++) {
    const char *n = cfg->sensitive_headers[i];
    if (n && (!n[0] || strlen(n) >= SENS_LEN))
      return 0;
  }
  return 1;
}

/* A size in cfg that the table now on does not have (0 in cfg: keep). */
static int sizes_differ(const h2t_inflight_config *cfg) {
  return cfg && ((cfg->max_entries && cfg->max_entries != h2t__ifl.max_entries) ||
                 (cfg->recent && cfg->recent != h2t__ifl.ring_cap) ||
                 (cfg->metrics_authorities &&
                  cfg->metrics_authorities != h2t__ifl.metrics_authorities));
}

/*
 * One call for "turn it on" and "apply my configuration": whoever turned
 * the table on first (the diagnostics endpoint and the signal dump do, with
 * defaults), the application's configuration holds.  Its sensitive headers
 * are added before anything else, so they hold even when the sizes cannot
 * change (requests in flight: H2T_ERR_STATE).
 */
int h2t_inflight_enable(const h2t_inflight_config *cfgp) {
  h2t_inflight_config c = {H2T_INFLIGHT_CONFIG_INIT};
  if (cfgp && h2t__struct_in(&c, sizeof c, cfgp, H2T__INFLIGHT_CONFIG_V1))
    return H2T_ERR_INVALID_ARG;
  const h2t_inflight_config *cfg = cfgp ? &c : NULL;
  if (cfg && !sens_list_ok(cfg))
    return H2T_ERR_INVALID_ARG;
  if (cfg &&
      !sizes_ok(cfg->max_entries, cfg->recent, cfg->metrics_authorities))
    return H2T_ERR_INVALID_ARG;
  if (cfg)
    for (size_t i = 0; i < cfg->nsensitive_headers; i++)
      if (cfg->sensitive_headers[i]) {
        int rc = h2t_header_add_sensitive(cfg->sensitive_headers[i]);
        if (rc != 0)
          return rc; /* H2T_ERR_LIMIT */
      }
  pthread_rwlock_wrlock(&h2t__ifl_life);
  pthread_mutex_lock(&h2t__ifl.mu);
  int rc = 0;
  if (!atomic_load(&h2t__ifl_on)) {
    rc = table_init(cfg);
    if (rc == 0)
      atomic_store(&h2t__ifl_on, 1);
  } else if (sizes_differ(cfg)) {
    /* New sizes mean a new table, only while nothing is in flight: off
     * first, then count, as h2t_inflight_disable() does. */
    atomic_store(&h2t__ifl_on, 0);
    if (atomic_load(&h2t__ifl.live))
      rc = H2T_ERR_STATE;
    else {
      h2t_inflight_config old = {.struct_size = sizeof old,
                                 .max_entries = h2t__ifl.max_entries,
                                 .recent = h2t__ifl.ring_cap,
                                 .metrics_authorities =
                                     h2t__ifl.metrics_authorities};
      table_free();
      rc = table_init(cfg);
      if (rc != 0 && table_init(&old) != 0) {
        pthread_mutex_unlock(&h2t__ifl.mu);
        pthread_rwlock_unlock(&h2t__ifl_life);
        return rc; /* no memory even for the old sizes: the table is off */
      }
    }
    atomic_store(&h2t__ifl_on, 1);
  }
  pthread_mutex_unlock(&h2t__ifl.mu);
  pthread_rwlock_unlock(&h2t__ifl_life);
  return rc;
}

int h2t__ifl_ensure_on(void) { return h2t_inflight_enable(NULL); }

int h2t_inflight_enabled(void) { return atomic_load(&h2t__ifl_on); }

int h2t_inflight_hold(void) {
  for (;;) {
    int rc = h2t__ifl_ensure_on();
    if (rc != 0)
      return rc;
    /* disable() decides under the same lock: counted while on, or retried */
    pthread_mutex_lock(&h2t__ifl.mu);
    int on = atomic_load(&h2t__ifl_on);
    if (on)
      atomic_fetch_add(&h2t__ifl_users, 1);
    pthread_mutex_unlock(&h2t__ifl.mu);
    if (on)
      return 0;
  }
}

int h2t_inflight_release(void) {
  int n = atomic_load(&h2t__ifl_users);
  while (n > 0 && !atomic_compare_exchange_weak(&h2t__ifl_users, &n, n - 1))
    ;
  return n > 0 ? 0 : H2T_ERR_STATE;
}

int h2t_inflight_disable(void) {
  pthread_rwlock_wrlock(&h2t__ifl_life);
  pthread_mutex_lock(&h2t__ifl.mu);
  int rc = 0;
  if (!atomic_load(&h2t__ifl_on) || atomic_load(&h2t__ifl_users))
    rc = H2T_ERR_STATE;
  else {
    /* Off first, then count: a begin that raced past its check has already
     * counted itself live (seq_cst on both sides), and one that did not
     * will see the table off before it touches an entry. */
    atomic_store(&h2t__ifl_on, 0);
    if (atomic_load(&h2t__ifl.live)) {
      atomic_store(&h2t__ifl_on, 1);
      rc = H2T_ERR_STATE;
    } else
      table_free();
  }
  pthread_mutex_unlock(&h2t__ifl.mu);
  pthread_rwlock_unlock(&h2t__ifl_life);
  return rc;
}

/* --- the hot path ------------------------------------------------------- */

/* Grow by one chunk; with h2t__ifl.mu held.  0 or -1. */
static int grow(void) {
  size_t n = atomic_load_explicit(&h2t__ifl.nchunks, memory_order_relaxed);
  if (n >= h2t__ifl.max_chunks)
    return -1;
  struct inflight_entry *c = calloc(IFL_CHUNK, sizeof *c);
  if (!c)
    return -1;
  h2t__ifl.chunks[n] = c;
  size_t room =
      h2t__ifl.max_entries + h2t__ifl.ring_cap - h2t__ifl.allocated;
  size_t use = room < IFL_CHUNK ? room : IFL_CHUNK;
  /* push in reverse so the lowest index is handed out first */
  for (size_t i = use; i-- > 0;) {
    c[i].next_free = h2t__ifl.free_head;
    h2t__ifl.free_head = (uint32_t)(n * IFL_CHUNK + i + 1);
  }
  h2t__ifl.allocated += use;
  atomic_store_explicit(&h2t__ifl.nchunks, n + 1, memory_order_release);
  return 0;
}

/* Copies src (NULL: "") into dst of cap bytes, cut on a character boundary
 * with "..." when too long; returns the length copied.  Byte by byte: the
 * strings are a few bytes long (a method, a scheme, an authority, a path),
 * and two calls into libc per string cost more than the copy. */
static size_t copy_trunc(char *dst, size_t cap, const char *src) {
  if (!src)
    src = "";
  size_t i = 0;
  /* four bytes a round: one bound check for four */
  for (; i + 4 <= cap; i += 4) {
    if (!(dst[i] = src[i]))
      return i;
    if (!(dst[i + 1] = src[i + 1]))
      return i + 1;
    if (!(dst[i + 2] = src[i + 2]))
      return i + 2;
    if (!(dst[i + 3] = src[i + 3]))
      return i + 3;
  }
  for (; i < cap; i++)
    if (!(dst[i] = src[i]))
      return i;
  /* on a character boundary: half a UTF-8 sequence breaks every JSON
   * reader of the table */
  size_t n0 = cap - 4;
  while (n0 > 0 && ((unsigned char)src[n0] & 0xc0) == 0x80)
    n0--;
  memcpy(dst + n0, "...", 4);
  return n0 + 3;
}

/* The request line; authority\0path\0 into target, the authority at most
 * half.  Apart from the event path, which it would crowd. */
__attribute__((noinline)) static void
set_strings(struct inflight_entry *e, const char *method, const char *scheme,
            const char *authority, const char *path) {
  copy_trunc(e->method, sizeof e->method, method);
  copy_trunc(e->scheme, sizeof e->scheme, scheme);
  char *t = e->target;
  size_t alen = copy_trunc(t, IFE_TARGET / 2, authority) + 1;
  copy_trunc(t + alen, IFE_TARGET - alen, path);
}

/* Time per state is not added up at each step: the steps in hist[] hold
 * it, and the request's end reads them once (h2t__hist_request).  Only a step
 * that hist[] is about to lose (more than IFE_HIST steps) gives its time to
 * state_tot first; state_tot is valid only once nhist went past IFE_HIST. */
__attribute__((noinline, cold)) static void
step_lost(struct inflight_entry *e, uint32_t n) {
  if (n == IFE_HIST)
    memset(e->state_tot, 0, sizeof e->state_tot);
  uint64_t old = e->hist[n % IFE_HIST];
  uint64_t next = e->hist[(n + 1) % IFE_HIST] & IFE_T_MASK;
  unsigned os = (unsigned)(old >> 56);
  uint64_t tot = e->state_tot[os] + (next - (old & IFE_T_MASK));
  e->state_tot[os] = tot > UINT32_MAX ? UINT32_MAX : (uint32_t)tot;
}

/* (unused where the probes are not built) */
__attribute__((noinline, cold, unused)) static void
step_probe(const struct inflight_entry *e) {
  (void)e;
  h2t__probe_state(e->id, e->conn_id, e->stream_id, e->state_us, e->state,
                   e->kind);
}

/* The stores of a step, when hist[] has room and no probe is attached. */
static inline __attribute__((always_inline)) void
step_store(struct inflight_entry *e, unsigned st, uint64_t t, uint32_t n) {
  e->hist[n % IFE_HIST] = ((uint64_t)st << 56) | (t & IFE_T_MASK);
  if (n < UINT32_MAX)
    e->nhist = n + 1;
  e->visited |= 1u << st;
  e->state = (uint8_t)st;
  e->state_us = t;
}

/* Inlined in the event path: a handful of stores, the rare parts apart. */
static inline __attribute__((always_inline)) void
push_step(struct inflight_entry *e, unsigned st, uint64_t t) {
  uint32_t n = e->nhist;
  if (__builtin_expect(n >= IFE_HIST, 0))
    step_lost(e, n);
  step_store(e, st, t, n);
  if (__builtin_expect(H2T_PROBE_SEMA(H2T_PROBE_STATE_), 0))
    step_probe(e);
}

static inline __attribute__((always_inline)) void
step_to(struct inflight_entry *e, unsigned st, uint64_t t) {
  if (e->state == st || e->state == H2T_IFS_DONE)
    return;
  if (t < e->state_us)
    t = e->state_us;
  push_step(e, st, t);
}

/*
 * Free entries go through a small per-thread cache, so that a loop thread
 * starting and ending requests touches the shared freelist (and its mutex)
 * once per TCACHE requests.  A cache belongs to one table generation; an
 * exiting thread hands its cache back.
 */
#define TCACHE 16

struct tcache {
  uint64_t gen;
  uint32_t n;
  int registered;
  uint32_t idx[2 * TCACHE];
};

/* initial-exec: a plain TLS access on the hot path, not a call (the cache
 * is small enough for the static TLS surplus that dlopen() may use) */
static _Thread_local struct tcache tcache
    __attribute__((tls_model("initial-exec")));
static pthread_key_t tcache_key;
static pthread_once_t tcache_once = PTHREAD_ONCE_INIT;

/* Give n cached indices back to the shared freelist; with h2t__ifl.mu held. */
static void tcache_flush_locked(struct tcache *tc, uint32_t n) {
  while (n-- && tc->n) {
    uint32_t idx = tc->idx[--tc->n];
    slot(idx)->next_free = h2t__ifl.free_head;
    h2t__ifl.free_head = idx + 1;
  }
}

static void tcache_exit(void *arg) {
  struct tcache *tc = arg;
  pthread_mutex_lock(&h2t__ifl.mu);
  if (atomic_load(&h2t__ifl_on) && tc->gen == atomic_load(&h2t__ifl.gen))
    tcache_flush_locked(tc, 2 * TCACHE);
  tc->n = 0;
  pthread_mutex_unlock(&h2t__ifl.mu);
}

static void tcache_key_init(void) { pthread_key_create(&tcache_key, tcache_exit); }

/* Take up to TCACHE free entries; 0 if the table is full or off. */
static uint32_t tcache_refill(struct tcache *tc) {
  pthread_mutex_lock(&h2t__ifl.mu);
  if (atomic_load_explicit(&h2t__ifl_on, memory_order_relaxed)) {
    while (tc->n < TCACHE && (h2t__ifl.free_head || grow() == 0)) {
      uint32_t idx = h2t__ifl.free_head - 1;
      h2t__ifl.free_head = slot(idx)->next_free;
      tc->idx[tc->n++] = idx;
    }
  }
  pthread_mutex_unlock(&h2t__ifl.mu);
  return tc->n;
}

struct inflight_entry *h2t__inflight_begin(inflight_kind kind, uint64_t req_id,
                                      const char *method, const char *scheme,
                                      const char *authority, const char *path,
                                      inflight_cancel_fn cancel,
                                      void *cancel_arg) {
  return h2t__inflight_begin_at(kind, req_id, method, scheme, authority, path,
                           cancel, cancel_arg, 0);
}

struct inflight_entry *h2t__inflight_begin_at(inflight_kind kind, uint64_t req_id,
                                         const char *method, const char *scheme,
                                         const char *authority,
                                         const char *path,
                                         inflight_cancel_fn cancel,
                                         void *cancel_arg, uint64_t start_us) {
  if (!atomic_load_explicit(&h2t__ifl_on, memory_order_relaxed))
    return NULL;
  /* counted live before looking again: see h2t_inflight_disable() */
  size_t nlive = atomic_fetch_add(&h2t__ifl.live, 1);
  struct tcache *tc = &tcache;
  if (!atomic_load(&h2t__ifl_on)) {
    atomic_fetch_sub(&h2t__ifl.live, 1);
    return NULL;
  }
  if (nlive >= h2t__ifl.max_entries) { /* slots may be free: the ring's */
    atomic_fetch_sub(&h2t__ifl.live, 1);
    atomic_fetch_add_explicit(&h2t__ifl.dropped, 1, memory_order_relaxed);
    return NULL;
  }
  /* Read after `on`: a table made anew while this thread was between its
   * two looks (disable + enable, or enable with new sizes) has a new gen,
   * and the cached indices of the old one must not be used. */
  uint64_t gen = atomic_load(&h2t__ifl.gen);
  if (tc->gen != gen) {
    tc->gen = gen;
    tc->n = 0;
    if (!tc->registered) {
      pthread_once(&tcache_once, tcache_key_init);
      pthread_setspecific(tcache_key, tc);
      tc->registered = 1;
    }
  }
  if (!tc->n && !tcache_refill(tc)) {
    atomic_fetch_sub(&h2t__ifl.live, 1);
    if (atomic_load_explicit(&h2t__ifl_on, memory_order_relaxed))
      atomic_fetch_add_explicit(&h2t__ifl.dropped, 1, memory_order_relaxed);
    return NULL;
  }
  uint32_t idx = tc->idx[--tc->n];
  struct inflight_entry *e = slot(idx);

  uint64_t now = start_us ? start_us : h2t_now_us();
  ow_begin(e);
  e->kind = (uint8_t)kind;
  e->flags = 0;
  e->visited = 0;
  e->stream_id = 0;
  e->id = req_id;
  e->conn_id = 0;
  e->start_us = now;
  e->bytes_in = e->bytes_out = 0;
  e->cancel = cancel;
  e->cancel_arg = cancel_arg;
  e->error = 0;
  e->nhist = 0;
  e->http_status = 0;
  e->next_free = idx; /* while live: its own index, for h2t__inflight_end */
  e->goaway_us = 0;
  e->reset_code = 0;
  if (method || scheme || authority || path) {
    set_strings(e, method, scheme, authority, path);
  } else { /* a server request: its request_headers event brings them */
    e->method[0] = e->scheme[0] = '\0';
    e->target[0] = e->target[1] = '\0';
  }
  e->status[0] = '\0';
  e->cancel_reason[0] = '\0';
  memset(e->trace_id, 0, sizeof e->trace_id); /* h2t__inflight_set_trace */
  push_step(e,
            kind == INFLIGHT_SERVER
                ? (method ? H2T_IFS_READ_BODY : H2T_IFS_READ_HEADERS)
                : H2T_IFS_QUEUED,
            now);
  atomic_store_explicit(&e->live, 1, memory_order_relaxed);
  ow_end(e);
  return e;
}

#define EVBIT(t) (UINT64_C(1) << H2T_EV_##t)

/* Only the events that change a state or a byte count: with the table on,
 * every event in the mask costs h2/ a clock read and us a lock.  A GET on a
 * reused connection is got_conn, wrote_request, got_first_response_byte,
 * got_data per frame and done; a served request is handler_started,
 * wrote_headers and stream_closed.  (wrote_response, request_headers and
 * request_body_done are still understood when they arrive.) */
uint64_t h2t__inflight_mask(inflight_kind kind) {
  if (!atomic_load_explicit(&h2t__ifl_on, memory_order_relaxed))
    return 0;
  if (kind == INFLIGHT_SERVER)
    return EVBIT(SRV_REQUEST_HEADERS) | EVBIT(SRV_REQUEST_BODY_DONE) |
           EVBIT(SRV_HANDLER_STARTED) | EVBIT(SRV_WROTE_HEADERS) |
           EVBIT(SRV_FLOW_BLOCKED) | EVBIT(SRV_STREAM_CLOSED) |
           EVBIT(SRV_STREAM_RESET) | EVBIT(SRV_GOAWAY_SENT);
  /* goaway and stream_reset are rare: kept for the exports' instants */
  return EVBIT(DNS_START) | EVBIT(CONNECT_START) | EVBIT(TLS_HANDSHAKE_START) |
         EVBIT(GOT_CONN) | EVBIT(WAIT_100_CONTINUE) | EVBIT(GOT_100_CONTINUE) |
         EVBIT(WROTE_REQUEST) | EVBIT(GOT_FIRST_RESPONSE_BYTE) |
         EVBIT(GOT_DATA) | EVBIT(FLOW_BLOCKED) | EVBIT(RETRY) | EVBIT(DONE) |
         EVBIT(GOAWAY) | EVBIT(STREAM_RESET);
}

/* The first GOAWAY on its connection and the RST_STREAM that ended it, for
 * the exports (h2t_export_reader). */
static void note_goaway(struct inflight_entry *e, uint64_t t, int by_peer) {
  if (e->goaway_us)
    return;
  uint64_t dt = t > e->start_us ? t - e->start_us : 0;
  e->goaway_us = dt >= UINT32_MAX ? UINT32_MAX : (uint32_t)dt + 1;
  if (by_peer)
    e->flags |= IFE_GOAWAY_BY_PEER;
}

static void note_reset(struct inflight_entry *e, uint32_t code, int by_peer) {
  if (e->reset_code)
    return;
  e->reset_code = code >= 254 ? 255 : (uint8_t)(code + 1);
  if (by_peer)
    e->flags |= IFE_RESET_BY_PEER;
}

/* The events that call out (a string copy, the connection metrics):
 * apply_heavy(), on event_full()'s path. */
#define HEAVY (EVBIT(GOT_CONN) | EVBIT(SRV_REQUEST_HEADERS))
_Static_assert(H2T_EV_COUNT_ <= 64, "an event type is a bit of a uint64_t");

static int apply_heavy(struct inflight_entry *e, const h2t_event *ev) {
  if (ev->type == H2T_EV_GOT_CONN) {
    h2t__metrics_got_conn(ev);
    /* It counted itself in: above the peer's limit it waits for a slot. */
    return ev->u.got_conn.max_streams &&
                   ev->u.got_conn.active_streams > ev->u.got_conn.max_streams
               ? H2T_IFS_WAIT_STREAM
               : H2T_IFS_SENDING;
  }
  /* H2T_EV_SRV_REQUEST_HEADERS */
  if (!e->method[0])
    set_strings(e, ev->u.request_headers.method, ev->u.request_headers.scheme,
                ev->u.request_headers.authority, ev->u.request_headers.path);
  if (!ev->u.request_headers.end_stream)
    e->flags |= IFE_BODY_OPEN;
  return e->state == H2T_IFS_READ_HEADERS ? H2T_IFS_READ_BODY : -1;
}

/* The state an event moves the request to, or -1; also keeps counters.
 * Not for the HEAVY events. */
static inline __attribute__((always_inline)) int
apply(struct inflight_entry *e, const h2t_event *ev) {
  switch (ev->type) {
  case H2T_EV_GET_CONN:
    return H2T_IFS_QUEUED;
  case H2T_EV_DNS_START:
    return H2T_IFS_DNS;
  case H2T_EV_CONNECT_START:
    return H2T_IFS_CONNECTING;
  case H2T_EV_TLS_HANDSHAKE_START:
    return H2T_IFS_TLS;
  case H2T_EV_STREAM_OPENED:
  case H2T_EV_GOT_100_CONTINUE:
    return H2T_IFS_SENDING;
  case H2T_EV_WROTE_HEADERS:
    return h2t__ifl_before_sending(e->state) ? H2T_IFS_SENDING : -1;
  case H2T_EV_WAIT_100_CONTINUE:
    return H2T_IFS_WAIT_CONTINUE;
  case H2T_EV_WROTE_REQUEST:
    /* the response may already be arriving (early response) */
    return e->state == H2T_IFS_RECEIVING ? -1 : H2T_IFS_WAIT_RESPONSE;
  case H2T_EV_GOT_HEADERS:
    e->http_status = (uint16_t)ev->u.response.status;
    return H2T_IFS_RECEIVING;
  case H2T_EV_GOT_FIRST_RESPONSE_BYTE:
    return H2T_IFS_RECEIVING;
  case H2T_EV_GOT_DATA:
    e->bytes_in += ev->u.data.bytes;
    return H2T_IFS_RECEIVING;
  case H2T_EV_FLOW_BLOCKED:
    return H2T_IFS_FLOW_BLOCKED;
  case H2T_EV_GOAWAY:
    note_goaway(e, ev->t_us, ev->u.goaway.by_peer);
    return -1;
  case H2T_EV_SRV_GOAWAY_SENT:
    note_goaway(e, ev->t_us, 0);
    return -1;
  case H2T_EV_STREAM_RESET:
  case H2T_EV_SRV_STREAM_RESET:
    note_reset(e, ev->u.stream_reset.error_code, ev->u.stream_reset.by_peer);
    return -1;
  case H2T_EV_RETRY:
    return H2T_IFS_RETRYING;
  case H2T_EV_DONE: /* its time is the end: h2t__inflight_end reads no clock */
    e->bytes_in = ev->u.done.bytes_recv;
    e->bytes_out = ev->u.done.bytes_sent;
    if (ev->u.done.status)
      e->http_status = (uint16_t)ev->u.done.status;
    return H2T_IFS_DONE;
  case H2T_EV_SRV_REQUEST_BODY_DONE:
    e->bytes_in = ev->u.body.bytes;
    e->flags &= (uint8_t)~IFE_BODY_OPEN;
    /* a handler that started while the body came is in it from now */
    return e->state == H2T_IFS_READ_BODY && (e->flags & IFE_HANDLER_WAIT)
               ? H2T_IFS_HANDLER
               : -1;
  case H2T_EV_SRV_HANDLER_STARTED:
    /* while the peer still owes body bytes the request waits on it, not on
     * the handler: it stays "reading body" (a stalled upload shows so) */
    if (e->flags & IFE_BODY_OPEN) {
      e->flags |= IFE_HANDLER_WAIT;
      return -1;
    }
    return H2T_IFS_HANDLER;
  case H2T_EV_SRV_WROTE_HEADERS:
    e->http_status = (uint16_t)ev->u.response.status;
    return H2T_IFS_WRITING;
  case H2T_EV_SRV_WROTE_FIRST_BYTE:
    return H2T_IFS_WRITING;
  case H2T_EV_SRV_WROTE_RESPONSE:
    e->bytes_out = ev->u.body.bytes;
    return e->state == H2T_IFS_SRV_FLOW_BLOCKED ? H2T_IFS_WRITING : -1;
  case H2T_EV_SRV_FLOW_BLOCKED:
    return H2T_IFS_SRV_FLOW_BLOCKED;
  case H2T_EV_SRV_STREAM_CLOSED:
    e->bytes_in = ev->u.stream_closed.bytes_in;
    e->bytes_out = ev->u.stream_closed.bytes_out;
    return H2T_IFS_DONE;
  default:
    return -1;
  }
}

static inline void set_ids(struct inflight_entry *e, const h2t_event *ev) {
  if (ev->conn_id)
    e->conn_id = ev->conn_id;
  if (ev->stream_id)
    e->stream_id = ev->stream_id;
}

/* Once canceled, late events must not make it look alive again; once done,
 * nothing moves it. */
static inline int moves(const struct inflight_entry *e, int st) {
  return st >= 0 && e->state != H2T_IFS_DONE &&
         (!(e->flags & IFE_CANCELED) || st == H2T_IFS_DONE);
}

/* Any event, with all it may need: side records to fold, a clock read. */
__attribute__((noinline)) static void event_full(struct inflight_entry *e,
                                                 const h2t_event *ev) {
  uint64_t t = ev->t_us ? ev->t_us : h2t_now_us();
  ow_begin(e);
  FOLD(e);
  set_ids(e, ev);
  int st = (HEAVY >> ev->type) & 1 ? apply_heavy(e, ev) : apply(e, ev);
  if (moves(e, st))
    step_to(e, (unsigned)st, t);
  ow_end(e);
}

/* A step whose history is full or that a probe wants; then the end of the
 * write section. */
__attribute__((noinline)) static void step_slow(struct inflight_entry *e,
                                                unsigned st, uint64_t t) {
  push_step(e, st, t);
  ow_end(e);
}

/* The usual event is a few stores and no call that returns here (each call
 * below is the function's last act, a jump), so it saves no register. */
void h2t__inflight_event(struct inflight_entry *e, const h2t_event *ev) {
  if (!e)
    return;
  uint64_t t = ev->t_us;
  if (__builtin_expect(!t || ((HEAVY >> ev->type) & 1) ||
                           (atomic_load_explicit(&e->pending,
                                                 memory_order_relaxed) &
                            IFE_PEND_SIDE),
                       0)) {
    event_full(e, ev);
    return;
  }
  ow_begin(e);
  set_ids(e, ev);
  int st = apply(e, ev);
  if (moves(e, st) && e->state != st) {
    if (t < e->state_us)
      t = e->state_us;
    uint32_t n = e->nhist;
    if (__builtin_expect(
            n >= IFE_HIST || H2T_PROBE_SEMA(H2T_PROBE_STATE_), 0)) {
      step_slow(e, (unsigned)st, t);
      return;
    }
    step_store(e, (unsigned)st, t, n);
  }
  ow_end(e);
}

void h2t__inflight_set_status(struct inflight_entry *e, const char *text) {
  if (!e)
    return;
  ow_begin(e);
  FOLD(e);
  copy_trunc(e->status, sizeof e->status, text);
  ow_end(e);
}

void h2t__inflight_set_trace(struct inflight_entry *e,
                             const h2t_trace_context *ctx) {
  if (!e)
    return;
  ow_begin(e);
  if (ctx) {
    memcpy(e->trace_id, ctx->trace_id, sizeof e->trace_id);
    memcpy(e->span_id, ctx->span_id, sizeof e->span_id);
    memcpy(e->parent_span_id, ctx->parent_span_id, sizeof e->parent_span_id);
    if (ctx->flags & H2T_TRACE_SAMPLED)
      e->flags |= IFE_SAMPLED;
  } else
    memset(e->trace_id, 0, sizeof e->trace_id);
  ow_end(e);
}

void h2t__inflight_wait_stream(struct inflight_entry *e) {
  if (!e)
    return;
  uint64_t now = h2t_now_us();
  ow_begin(e);
  FOLD(e);
  if (!(e->flags & IFE_CANCELED) && e->state != H2T_IFS_DONE)
    step_to(e, H2T_IFS_WAIT_STREAM, now);
  ow_end(e);
}

/* Publish finished entry e (slot idx, in its owner's write section) as
 * ring entry seq: one atomic add and one exchange, no copy.  next_free of
 * a finished entry holds its sequence number, so readers can tell it from
 * a newer one.  Returns the slot the ring let go of (1 + index), 0: none;
 * the caller frees it. */
static uint32_t ring_push(struct inflight_entry *e, uint32_t idx) {
  if (!h2t__ifl.ring_cap)
    return idx + 1;
  uint64_t seq = atomic_fetch_add_explicit(&h2t__ifl.ring_seq, 1,
                                           memory_order_relaxed);
  e->next_free = (uint32_t)seq;
  return atomic_exchange_explicit(&h2t__ifl.ring[seq % h2t__ifl.ring_cap],
                                  idx + 1, memory_order_acq_rel);
}

/* A slot the ring let go of: no reader may take it for a finished request
 * any more (its id is what they check), then it is free. */
static void ring_evict(struct inflight_entry *e) {
  ow_begin(e);
  e->id = 0;
  ow_end(e);
}

/* Copy ring entry `seq` into out if it still holds it; 0 or -1. */
static int ring_get(uint64_t seq, struct inflight_entry *out) {
  uint32_t v = atomic_load_explicit(&h2t__ifl.ring[seq % h2t__ifl.ring_cap],
                                    memory_order_acquire);
  if (!v || raw_read(out, slot(v - 1)) != 0)
    return -1;
  return out->next_free == (uint32_t)seq && out->id &&
                 !atomic_load_explicit(&out->live, memory_order_relaxed)
             ? 0
             : -1;
}

void h2t__inflight_end(struct inflight_entry *e, int error) {
  if (!e)
    return;
  /* Not live any more, then wait for a cancel that saw it live: its
   * cancel_fn may use cancel_arg only while the request exists.  (The
   * cancel sets BUSY, then looks at `live`: seq_cst on both sides, so one
   * of us sees the other.) */
  atomic_store(&e->live, 0);
  while (atomic_load(&e->pending) & IFE_PEND_BUSY)
    sched_yield();
  ow_begin(e);
  FOLD(e);
  /* usually the done/stream_closed event already ended the timeline */
  if (e->state != H2T_IFS_DONE)
    step_to(e, H2T_IFS_DONE, h2t_now_us());
  e->error = error;
  uint32_t idx = e->next_free;
  int kind = e->kind;
  e->cancel = NULL;
  h2t__hist_request(e); /* histograms and profile; reads the entry */
  /* the entry itself is now the ring's: it stays as it is until lapped */
  uint32_t out = ring_push(e, idx);
  ow_end(e);
  h2t__metrics_request_done(kind, error);
  if (!out)
    goto counted;
  idx = out - 1;
  e = slot(idx);
  ring_evict(e);

  struct tcache *tc = &tcache;
  if (tc->gen != atomic_load_explicit(&h2t__ifl.gen, memory_order_relaxed) ||
      tc->n == 2 * TCACHE) {
    /* ended on a thread whose cache is from another table, or full */
    pthread_mutex_lock(&h2t__ifl.mu);
    if (tc->gen == atomic_load_explicit(&h2t__ifl.gen, memory_order_relaxed))
      tcache_flush_locked(tc, TCACHE);
    e->next_free = h2t__ifl.free_head;
    h2t__ifl.free_head = idx + 1;
    pthread_mutex_unlock(&h2t__ifl.mu);
  } else
    tc->idx[tc->n++] = idx;
counted:
  atomic_fetch_sub(&h2t__ifl.live, 1);
}

/* --- readers ------------------------------------------------------------ */

/* The slot of the live entry with this id, and a copy of it; NULL if
 * none. */
static struct inflight_entry *find_by_id(uint64_t id,
                                         struct inflight_entry *copy) {
  if (!atomic_load(&h2t__ifl_on))
    return NULL;
  size_t n = atomic_load_explicit(&h2t__ifl.nchunks, memory_order_acquire);
  for (size_t c = 0; c < n; c++) {
    struct inflight_entry *chunk = h2t__ifl.chunks[c];
    for (size_t i = 0; i < IFL_CHUNK; i++) {
      struct inflight_entry *e = &chunk[i];
      if (atomic_load_explicit(&e->live, memory_order_relaxed) &&
          h2t__ife_read(copy, e) == 0 && copy->id == id &&
          atomic_load_explicit(&copy->live, memory_order_relaxed))
        return e;
    }
  }
  return NULL;
}

/* Record what another thread asks in the slot's side record (made if
 * needed); with side_mu held.  NULL when out of memory. */
static struct side *side_get(struct inflight_entry *slot, uint64_t id) {
  struct side *d = side_find(slot, id);
  if (!d && (d = calloc(1, sizeof *d))) {
    d->slot = slot;
    d->id = id;
    d->next = sides;
    sides = d;
  }
  return d;
}

int h2t__ifl_foreach_read(int (*fn)(const struct inflight_entry *copy, void *arg),
                     void *arg) {
  if (!atomic_load(&h2t__ifl_on))
    return 0;
  struct inflight_entry tmp;
  size_t n = atomic_load_explicit(&h2t__ifl.nchunks, memory_order_acquire);
  for (size_t c = 0; c < n; c++) {
    struct inflight_entry *chunk = h2t__ifl.chunks[c];
    for (size_t i = 0; i < IFL_CHUNK; i++) {
      if (!atomic_load_explicit(&chunk[i].live, memory_order_relaxed))
        continue;
      if (h2t__ife_read(&tmp, &chunk[i]) != 0 ||
          !atomic_load_explicit(&tmp.live, memory_order_relaxed))
        continue;
      int rc = fn(&tmp, arg);
      if (rc)
        return rc;
    }
  }
  return 0;
}

/* snprintf is the snapshot's hot spot at 10 000 entries: copy by hand. */
static void scopy(char *dst, size_t cap, const char *src, size_t srccap) {
  size_t n = strnlen(src, cap - 1 < srccap ? cap - 1 : srccap);
  memcpy(dst, src, n);
  dst[n] = '\0';
}

void h2t__ife_to_info(const struct inflight_entry *e, uint64_t now_us,
                 h2t_inflight_info *o) {
  o->id = e->id;
  o->kind = (h2t_inflight_kind)e->kind;
  scopy(o->method, sizeof o->method, e->method, sizeof e->method);
  scopy(o->scheme, sizeof o->scheme, e->scheme, sizeof e->scheme);
  size_t alen = strnlen(e->target, IFE_TARGET - 1);
  scopy(o->authority, sizeof o->authority, e->target, alen);
  scopy(o->path, sizeof o->path, e->target + alen + 1,
        IFE_TARGET - alen - 1);
  o->conn_id = e->conn_id;
  o->stream_id = e->stream_id;
  o->http_status = e->http_status;
  o->start_us = e->start_us;
  o->state = (h2t_inflight_state)e->state;
  o->state_since_us = e->state_us;
  scopy(o->status, sizeof o->status, e->status, sizeof e->status);
  o->bytes_in = e->bytes_in;
  o->bytes_out = e->bytes_out;
  o->canceled = (e->flags & IFE_CANCELED) != 0;
  scopy(o->cancel_reason, sizeof o->cancel_reason, e->cancel_reason,
        sizeof e->cancel_reason);
  unsigned n = e->nhist < IFE_HIST ? e->nhist : IFE_HIST;
  o->nhistory = n;
  o->history_dropped = e->nhist - n;
  o->finished = e->state == H2T_IFS_DONE;
  o->end_us = o->finished ? e->state_us : 0;
  o->error = e->error;
  uint64_t end = o->finished ? e->state_us : now_us;
  for (unsigned i = 0; i < n; i++) {
    uint64_t v = e->hist[(e->nhist - n + i) % IFE_HIST];
    h2t_inflight_step *s = &o->history[i];
    s->state = (h2t_inflight_state)(v >> 56);
    s->entered_us = v & IFE_T_MASK;
    uint64_t next = i + 1 < n
                        ? (e->hist[(e->nhist - n + i + 1) % IFE_HIST] &
                           IFE_T_MASK)
                        : end;
    s->duration_us = next > s->entered_us ? next - s->entered_us : 0;
  }
  if (n < IFE_HIST)
    memset(&o->history[n], 0, (IFE_HIST - n) * sizeof o->history[0]);
  h2t_trace_context *t = &o->trace;
  memcpy(t->trace_id, e->trace_id, sizeof t->trace_id);
  if (h2t__zero_id(e->trace_id, sizeof e->trace_id)) {
    memset(t, 0, sizeof *t);
    return;
  }
  memcpy(t->span_id, e->span_id, sizeof t->span_id);
  memcpy(t->parent_span_id, e->parent_span_id, sizeof t->parent_span_id);
  t->flags = (e->flags & IFE_SAMPLED) ? H2T_TRACE_SAMPLED : 0;
}

struct snap {
  struct inflight_entry *copies;
  size_t n, cap;
  int oom;
};

/* Copy every live entry straight into s (no intermediate copy). */
static void snap_all(struct snap *s) {
  size_t n = atomic_load_explicit(&h2t__ifl.nchunks, memory_order_acquire);
  for (size_t c = 0; c < n && !s->oom; c++) {
    struct inflight_entry *chunk = h2t__ifl.chunks[c];
    for (size_t i = 0; i < IFL_CHUNK; i++) {
      if (!atomic_load_explicit(&chunk[i].live, memory_order_relaxed))
        continue;
      if (s->n == s->cap) { /* rare: the buffer was sized for what was live */
        size_t cap = s->cap ? s->cap * 2 : 256;
        struct inflight_entry *p = realloc(s->copies, cap * sizeof *p);
        if (!p) {
          s->oom = 1;
          return;
        }
        s->copies = p;
        s->cap = cap;
      }
      struct inflight_entry *d = &s->copies[s->n];
      if (h2t__ife_read(d, &chunk[i]) == 0 &&
          atomic_load_explicit(&d->live, memory_order_relaxed) && d->id)
        s->n++;
    }
  }
}

struct age {
  uint64_t start_us, id;
  size_t idx;
};

static int by_age(const void *a, const void *b) {
  const struct age *x = a, *y = b;
  if (x->start_us != y->start_us)
    return x->start_us < y->start_us ? -1 : 1;
  return x->id < y->id ? -1 : x->id > y->id;
}

int h2t_inflight_snapshot(h2t_inflight_info **out, size_t *n) {
  if (!out || !n)
    return H2T_ERR_INVALID_ARG;
  *out = NULL;
  *n = 0;
  pthread_rwlock_rdlock(&h2t__ifl_life);
  struct snap s = {0};
  /* size for what is live now so the copy loop rarely reallocates */
  s.cap = atomic_load(&h2t__ifl.live) + 64;
  s.copies = malloc(s.cap * sizeof *s.copies);
  if (!s.copies) {
    pthread_rwlock_unlock(&h2t__ifl_life);
    return H2T_ERR_NOMEM;
  }
  if (atomic_load(&h2t__ifl_on))
    snap_all(&s);
  pthread_rwlock_unlock(&h2t__ifl_life);
  if (s.oom) {
    free(s.copies);
    return H2T_ERR_NOMEM;
  }
  if (s.n) {
    h2t_inflight_info *arr = malloc(s.n * sizeof *arr);
    struct age *ord = malloc(s.n * sizeof *ord);
    if (!arr || !ord) {
      free(arr);
      free(ord);
      free(s.copies);
      return H2T_ERR_NOMEM;
    }
    /* oldest first: sort small keys, not the 512-byte copies */
    for (size_t i = 0; i < s.n; i++) {
      ord[i].start_us = s.copies[i].start_us;
      ord[i].id = s.copies[i].id;
      ord[i].idx = i;
    }
    qsort(ord, s.n, sizeof *ord, by_age);
    uint64_t now = h2t_now_us();
    for (size_t i = 0; i < s.n; i++)
      h2t__ife_to_info(&s.copies[ord[i].idx], now, &arr[i]);
    free(ord);
    *out = arr;
    *n = s.n;
  }
  free(s.copies);
  return 0;
}

int h2t_inflight_recent(h2t_inflight_info **out, size_t *n) {
  if (!out || !n)
    return H2T_ERR_INVALID_ARG;
  *out = NULL;
  *n = 0;
  pthread_rwlock_rdlock(&h2t__ifl_life);
  if (!atomic_load(&h2t__ifl_on)) {
    pthread_rwlock_unlock(&h2t__ifl_life);
    return 0;
  }
  uint64_t seq = atomic_load(&h2t__ifl.ring_seq);
  size_t cnt = seq < h2t__ifl.ring_cap ? (size_t)seq : h2t__ifl.ring_cap;
  struct inflight_entry *copies = cnt ? malloc(cnt * sizeof *copies) : NULL;
  if (cnt && !copies) {
    pthread_rwlock_unlock(&h2t__ifl_life);
    return H2T_ERR_NOMEM;
  }
  size_t got = 0;
  for (size_t i = 0; i < cnt; i++) /* newest first */
    if (ring_get(seq - 1 - i, &copies[got]) == 0)
      got++;
  pthread_rwlock_unlock(&h2t__ifl_life);
  cnt = got;
  if (!cnt) {
    free(copies);
    return 0;
  }
  h2t_inflight_info *arr = malloc(cnt * sizeof *arr);
  if (!arr) {
    free(copies);
    return H2T_ERR_NOMEM;
  }
  uint64_t now = h2t_now_us();
  for (size_t i = 0; i < cnt; i++)
    h2t__ife_to_info(&copies[i], now, &arr[i]);
  free(copies);
  *out = arr;
  *n = cnt;
  return 0;
}

void h2t_inflight_info_free(h2t_inflight_info *arr) { free(arr); }

void h2t__ifl_recent_range(uint64_t *gen, uint64_t *first, uint64_t *end) {
  *gen = *first = *end = 0;
  pthread_rwlock_rdlock(&h2t__ifl_life);
  if (atomic_load(&h2t__ifl_on)) {
    uint64_t seq = atomic_load(&h2t__ifl.ring_seq);
    *gen = atomic_load(&h2t__ifl.gen);
    *end = seq;
    *first = seq > h2t__ifl.ring_cap ? seq - h2t__ifl.ring_cap : 0;
  }
  pthread_rwlock_unlock(&h2t__ifl_life);
}

int h2t__ifl_recent_at(uint64_t gen, uint64_t seq, struct inflight_entry *out) {
  int rc = -1;
  pthread_rwlock_rdlock(&h2t__ifl_life);
  if (atomic_load(&h2t__ifl_on) && atomic_load(&h2t__ifl.gen) == gen)
    rc = ring_get(seq, out);
  pthread_rwlock_unlock(&h2t__ifl_life);
  return rc;
}

struct find {
  uint64_t id;
  struct inflight_entry copy;
};

static int find_one(const struct inflight_entry *e, void *arg) {
  struct find *f = arg;
  if (e->id != f->id)
    return 0;
  memcpy(&f->copy, e, sizeof *e);
  return 1;
}

int h2t_inflight_get(uint64_t id, h2t_inflight_info *out) {
  if (!out || !id)
    return H2T_ERR_INVALID_ARG;
  struct find f = {.id = id};
  int found = 0;
  pthread_rwlock_rdlock(&h2t__ifl_life);
  if (h2t__ifl_foreach_read(find_one, &f))
    found = 1;
  else if (atomic_load(&h2t__ifl_on)) {
    uint64_t seq = atomic_load(&h2t__ifl.ring_seq);
    size_t cnt = seq < h2t__ifl.ring_cap ? (size_t)seq : h2t__ifl.ring_cap;
    for (size_t i = 0; i < cnt && !found; i++)
      if (ring_get(seq - 1 - i, &f.copy) == 0 && f.copy.id == id)
        found = 1;
  }
  pthread_rwlock_unlock(&h2t__ifl_life);
  if (!found)
    return H2T_ERR_NOT_FOUND;
  h2t__ife_to_info(&f.copy, h2t_now_us(), out);
  return 0;
}

int h2t_inflight_cancel(uint64_t id, const char *reason) {
  if (!id)
    return H2T_ERR_NOT_FOUND;
  struct inflight_entry copy;
  pthread_rwlock_rdlock(&h2t__ifl_life);
  struct inflight_entry *e = find_by_id(id, &copy);
  int rc = H2T_ERR_NOT_FOUND;
  if (!e)
    goto out;
  /* BUSY first, then check it is still this request and live: its end
   * waits for BUSY to clear, so cancel_fn runs while the request exists */
  atomic_fetch_or(&e->pending, IFE_PEND_BUSY);
  if (!atomic_load(&e->live) || h2t__ife_read(&copy, e) != 0 || copy.id != id ||
      copy.state == H2T_IFS_DONE)
    goto unbusy; /* over, or ending */
  if (copy.flags & IFE_CANCELED) {
    rc = H2T_ERR_STATE;
    goto unbusy;
  }
  if (!copy.cancel) {
    rc = H2T_ERR_UNSUPPORTED;
    goto unbusy;
  }
  pthread_mutex_lock(&side_mu);
  struct side *d = side_get(e, id);
  if (d) {
    d->cancel = 1;
    d->cancel_us = h2t_now_us();
    copy_trunc(d->reason, sizeof d->reason, reason ? reason : "canceled");
    atomic_fetch_or(&e->pending, IFE_PEND_SIDE);
  }
  char why[IFE_REASON];
  memcpy(why, d ? d->reason : "canceled", d ? sizeof why : 9);
  pthread_mutex_unlock(&side_mu);
  copy.cancel(copy.cancel_arg, id, why);
  rc = 0;
unbusy:
  atomic_fetch_and(&e->pending, (unsigned char)~IFE_PEND_BUSY);
out:
  pthread_rwlock_unlock(&h2t__ifl_life);
  return rc;
}

int h2t_inflight_set_status(uint64_t id, const char *text) {
  if (!id || !text)
    return H2T_ERR_INVALID_ARG;
  struct inflight_entry copy;
  int rc = H2T_ERR_NOT_FOUND;
  pthread_rwlock_rdlock(&h2t__ifl_life);
  struct inflight_entry *e = find_by_id(id, &copy);
  if (e) {
    pthread_mutex_lock(&side_mu);
    struct side *d = side_get(e, id);
    if (d) {
      d->has_status = 1;
      copy_trunc(d->status, sizeof d->status, text);
      atomic_fetch_or(&e->pending, IFE_PEND_SIDE);
      rc = 0;
    } else
      rc = H2T_ERR_NOMEM;
    pthread_mutex_unlock(&side_mu);
  }
  pthread_rwlock_unlock(&h2t__ifl_life);
  return rc;
}

/* --- sensitive headers ----------------------------------------------------- */

#define SENS_MAX 64
static char sens_names[SENS_MAX][SENS_LEN];
static atomic_int sens_n;
static pthread_mutex_t sens_mu = PTHREAD_MUTEX_INITIALIZER;

int h2t__header_is_sensitive_n(const char *name, size_t len) {
  static const char *const builtin[] = {"authorization", "cookie",
                                        "set-cookie", "proxy-authorization"};
  if (!name)
    return 0;
  for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++)
    if (strlen(builtin[i]) == len && !strncasecmp(name, builtin[i], len))
      return 1;
  int n = atomic_load_explicit(&sens_n, memory_order_acquire);
  for (int i = 0; i < n; i++)
    if (strlen(sens_names[i]) == len && !strncasecmp(name, sens_names[i], len))
      return 1;
  return 0;
}

int h2t_header_is_sensitive(const char *name) {
  return name ? h2t__header_is_sensitive_n(name, strlen(name)) : 0;
}

int h2t_header_add_sensitive(const char *name) {
  if (!name || !name[0] || strlen(name) >= SENS_LEN)
    return H2T_ERR_INVALID_ARG;
  if (h2t_header_is_sensitive(name))
    return 0;
  pthread_mutex_lock(&sens_mu);
  int n = atomic_load_explicit(&sens_n, memory_order_relaxed);
  int rc = 0;
  if (n >= SENS_MAX)
    rc = H2T_ERR_LIMIT;
  else {
    /* the slot is written before the count that publishes it */
    snprintf(sens_names[n], SENS_LEN, "%s", name);
    atomic_store_explicit(&sens_n, n + 1, memory_order_release);
  }
  pthread_mutex_unlock(&sens_mu);
  return rc;
}
