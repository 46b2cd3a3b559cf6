/* Histograms for GET /metrics: request duration by (kind, authority,
 * outcome), time per state by (kind, state), connection lifetime and
 * requests per connection by kind.
 *
 * Recording is on the loop thread that ends a request or closes a
 * connection, so it must cost little: every thread records into a shard of
 * its own (owner-only relaxed load + store, no locked instruction), the
 * bucket is found from the value's log2 and at most two comparisons, and
 * the authority's label slot is looked up once per request (lock-free after
 * its first sight).  A scrape sums the shards under hist_mu.
 *
 * The state profile's counts (profile.c names its rows) are recorded here
 * too, in the same shard and with the same look-up of the authority.
 *
 * Label values are bounded: the first `metrics_authorities` authorities of
 * the table's life get a slot each, later ones (and any that is empty or
 * not plain printable ASCII) fold into "other". */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trace/inflight_int.h"

/* Upper bounds in µs: 0.1 ms to 30 s, 1-2.5-5 steps.  A bucket more is +Inf. */
#define NB 17
static const uint64_t bound_us[NB] = {
    100,    250,    500,     1000,    2500,    5000,     10000,    25000, 50000,
    100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000, 30000000};
#define NBK (NB + 1) /* buckets */
#define SUM NBK      /* a series is NBK buckets then the sum */
#define SERIES (NBK + 1)

/* first_ge[k]: the first bound >= 2^k.  Bounds below it are < 2^k, and the
 * bounds step by at least 2, so a value of log2 k is in bucket first_ge[k]
 * or one of the next two. */
#define P(k) (UINT64_C(1) << (k))
#define FGE(k)                                                                 \
  (P(k) <= 100        ? 0                                                      \
   : P(k) <= 250      ? 1                                                      \
   : P(k) <= 500      ? 2                                                      \
   : P(k) <= 1000     ? 3                                                      \
   : P(k) <= 2500     ? 4                                                      \
   : P(k) <= 5000     ? 5                                                      \
   : P(k) <= 10000    ? 6                                                      \
   : P(k) <= 25000    ? 7                                                      \
   : P(k) <= 50000    ? 8                                                      \
   : P(k) <= 100000   ? 9                                                      \
   : P(k) <= 250000   ? 10                                                     \
   : P(k) <= 500000   ? 11                                                     \
   : P(k) <= 1000000  ? 12                                                     \
   : P(k) <= 2500000  ? 13                                                     \
   : P(k) <= 5000000  ? 14                                                     \
   : P(k) <= 10000000 ? 15                                                     \
   : P(k) <= 30000000 ? 16                                                     \
                      : NB)
#define F8(b)                                                                  \
  FGE(b), FGE(b + 1), FGE(b + 2), FGE(b + 3), FGE(b + 4), FGE(b + 5),          \
      FGE(b + 6), FGE(b + 7)
static const uint8_t first_ge[64] = {F8(0),  F8(8),  F8(16), F8(24),
                                     F8(32), F8(40), F8(48), F8(56)};

static unsigned bucket_of(uint64_t us) {
  unsigned i = first_ge[us ? 63 - __builtin_clzll(us) : 0];
  while (i < NB && us > bound_us[i])
    i++;
  return i;
}

/* Requests per connection: a connection's reuse. */
#define NRB 11
static const uint64_t reqs_bound[NRB] = {1,  2,   5,   10,   20,   50,
                                         100, 200, 500, 1000, 10000};
#define RSERIES (NRB + 2)

/* Outcome classes of the H2T_ERR_ codes: a bounded label. */
#define NOUT 6
static const char *const outcome_names[NOUT] = {
    "ok", "canceled", "timeout", "connect", "reset", "error"};

static unsigned outcome_of(int error) {
  switch (error) {
  case 0:
    return 0;
  case H2T_ERR_CANCELED:
    return 1;
  case H2T_ERR_TIMEOUT:
  case H2T_ERR_CONNECT_TIMEOUT:
    return 2;
  case H2T_ERR_DNS:
  case H2T_ERR_CONNECT_REFUSED:
  case H2T_ERR_CONNECT:
  case H2T_ERR_TLS:
  case H2T_ERR_TLS_VERIFY:
  case H2T_ERR_ALPN:
  case H2T_ERR_NOT_HTTP2:
    return 3;
  case H2T_ERR_STREAM_RESET:
  case H2T_ERR_REFUSED_STREAM:
  case H2T_ERR_GOAWAY:
  case H2T_ERR_CONN_CLOSED:
    return 4;
  default:
    return 5;
  }
}

#define NSTATE H2T_IFS_DONE /* done has no time of its own */
#define AUTH_LEN 64 /* an authority label, NUL included (the table keeps 63) */

typedef atomic_uint_fast64_t counter;

/* One thread's counts (or, when `owned` is 0, those of threads that
 * exited).  req is [kind][authority slot (nauth = "other")][outcome]. */
struct shard {
  struct shard *next;
  uint64_t gen;
  int owned;
  size_t nauth;
  /* The last authority this thread resolved, its slot and its profile
   * row by kind (-1: not looked up yet): a loop mostly sees the same one,
   * and a compare costs less than the hash. */
  int last_ok;
  size_t last_len, last_slot;
  int last_row[2];
  char last_auth[AUTH_LEN];
  counter prof[H2T_PROF_NROWS][H2T_PROF_SERIES];
  counter state[2][NSTATE][SERIES];
  counter conn_life[2][SERIES];
  counter conn_reqs[2][RSERIES];
  counter req[]; /* 2 * (nauth + 1) * NOUT * SERIES */
};

static size_t req_counters(size_t nauth) {
  return 2 * (nauth + 1) * NOUT * SERIES;
}

/* hist_mu: the shard list, the retired shard, authority inserts and the
 * arrays' life.  Loop threads take it only for a new thread or a new
 * authority. */
static pthread_mutex_t hist_mu = PTHREAD_MUTEX_INITIALIZER;
static struct shard *shards;
static atomic_uint_fast64_t hist_gen = 1; /* bumped by each reset */
static size_t cur_nauth = H2T_METRICS_AUTHORITIES_DEFAULT;

/* Authorities: names[i] for slot i, found through an open-addressing table
 * of slot + 1 (0: empty), published with release after the name. */
static char (*auth_names)[AUTH_LEN];
static atomic_uint *auth_hash;
static size_t auth_cap; /* power of two, > 2 * cur_nauth */
static atomic_size_t auth_n;
static atomic_int auth_full;

static _Thread_local struct shard *my_shard
    __attribute__((tls_model("initial-exec")));
static pthread_key_t shard_key;
static pthread_once_t shard_once = PTHREAD_ONCE_INIT;

#define BUMP(c, n)                                                             \
  atomic_store_explicit(&(c), atomic_load_explicit(&(c), memory_order_relaxed) + \
                                  (n),                                         \
                        memory_order_relaxed)

static void unlink_locked(struct shard *s) {
  for (struct shard **pp = &shards; *pp; pp = &(*pp)->next)
    if (*pp == s) {
      *pp = s->next;
      return;
    }
}

static void add_n(counter *dst, const counter *src, size_t n) {
  for (size_t i = 0; i < n; i++)
    atomic_store_explicit(&dst[i],
                          atomic_load_explicit(&dst[i], memory_order_relaxed) +
                              atomic_load_explicit(&src[i], memory_order_relaxed),
                          memory_order_relaxed);
}

/* dst += src; both of the same nauth */
static void add_into(struct shard *dst, const struct shard *src) {
  add_n(&dst->state[0][0][0], &src->state[0][0][0], 2 * NSTATE * SERIES);
  add_n(&dst->conn_life[0][0], &src->conn_life[0][0], 2 * SERIES);
  add_n(&dst->conn_reqs[0][0], &src->conn_reqs[0][0], 2 * RSERIES);
  add_n(dst->req, src->req, req_counters(src->nauth));
  add_n(&dst->prof[0][0], &src->prof[0][0], H2T_PROF_NROWS * H2T_PROF_SERIES);
}

static struct shard *retired_locked(void) {
  uint64_t g = atomic_load(&hist_gen);
  for (struct shard *s = shards; s; s = s->next)
    if (!s->owned && s->gen == g)
      return s;
  return NULL;
}

/* A thread exits: its counts go on in the retired shard (no allocation:
 * the first to exit becomes it). */
static void shard_exit(void *arg) {
  struct shard *s = arg;
  pthread_mutex_lock(&hist_mu);
  if (s->gen == atomic_load(&hist_gen)) {
    struct shard *r = retired_locked();
    if (r) {
      add_into(r, s);
      unlink_locked(s);
      free(s);
    } else
      s->owned = 0;
  } else {
    unlink_locked(s);
    free(s);
  }
  pthread_mutex_unlock(&hist_mu);
  if (my_shard == s)
    my_shard = NULL;
}

static void shard_key_init(void) { pthread_key_create(&shard_key, shard_exit); }

/* This thread's first shard, or a new one after a reset; NULL without
 * memory (nothing is recorded then). */
static struct shard *shard_renew(void) {
  pthread_once(&shard_once, shard_key_init);
  pthread_mutex_lock(&hist_mu);
  struct shard *old = my_shard;
  if (old) {
    unlink_locked(old);
    free(old);
  }
  struct shard *s =
      calloc(1, sizeof *s + req_counters(cur_nauth) * sizeof(counter));
  if (s) {
    s->gen = atomic_load(&hist_gen);
    s->owned = 1;
    s->nauth = cur_nauth;
    s->next = shards;
    shards = s;
  }
  my_shard = s;
  pthread_mutex_unlock(&hist_mu);
  pthread_setspecific(shard_key, s);
  return s;
}

static inline struct shard *shard_get(void) {
  struct shard *s = my_shard;
  if (__builtin_expect(
          !s || s->gen != atomic_load_explicit(&hist_gen, memory_order_relaxed),
          0))
    s = shard_renew();
  return s;
}

int h2t__hist_reset(size_t nauth) {
  if (!nauth)
    nauth = H2T_METRICS_AUTHORITIES_DEFAULT;
  size_t cap = 64;
  while (cap <= 2 * nauth)
    cap *= 2;
  char(*names)[AUTH_LEN] = calloc(nauth, AUTH_LEN);
  atomic_uint *hash = calloc(cap, sizeof *hash);
  if (!names || !hash) {
    free(names);
    free(hash);
    return H2T_ERR_NOMEM;
  }
  pthread_mutex_lock(&hist_mu);
  /* shards of the old generation: their owners drop them at their next
   * record (or exit); the retired one has no owner */
  for (struct shard *s = shards, *next; s; s = next) {
    next = s->next;
    if (!s->owned) {
      unlink_locked(s);
      free(s);
    }
  }
  free(auth_names);
  free(auth_hash);
  auth_names = names;
  auth_hash = hash;
  auth_cap = cap;
  atomic_store(&auth_n, 0);
  atomic_store(&auth_full, 0);
  cur_nauth = nauth;
  atomic_fetch_add(&hist_gen, 1);
  pthread_mutex_unlock(&hist_mu);
  return 0;
}

/* Plain printable ASCII without quote or backslash, 1 to AUTH_LEN - 1
 * bytes: a label value as is.  FNV-1a; UINT32_MAX: not acceptable. */
static uint32_t auth_hash_of(const char *a) {
  uint32_t h = 2166136261u;
  const char *start = a;
  if (!*a)
    return UINT32_MAX;
  for (; *a; a++) {
    if (a - start >= AUTH_LEN - 1)
      return UINT32_MAX;
    unsigned char c = (unsigned char)*a;
    if (c <= 0x20 || c >= 0x7f || c == '"' || c == '\\')
      return UINT32_MAX;
    h = (h ^ c) * 16777619u;
  }
  return h == UINT32_MAX ? 0 : h;
}

/* The label slot of an authority, nauth for "other".  The caller is a
 * request's end: the table is on, so no reset runs meanwhile. */
static size_t auth_slot(const char *a, size_t nauth) {
  uint32_t h = auth_hash_of(a);
  if (h == UINT32_MAX || !auth_hash)
    return nauth;
  size_t mask = auth_cap - 1, i = h & mask;
  for (;; i = (i + 1) & mask) {
    unsigned v = atomic_load_explicit(&auth_hash[i], memory_order_acquire);
    if (!v)
      break;
    if (!strcmp(auth_names[v - 1], a))
      return v - 1 < nauth ? v - 1 : nauth;
  }
  if (atomic_load_explicit(&auth_full, memory_order_relaxed))
    return nauth;
  pthread_mutex_lock(&hist_mu);
  /* another thread may have added it since: go on from where we stopped */
  size_t slot = nauth;
  for (;; i = (i + 1) & mask) {
    unsigned v = atomic_load_explicit(&auth_hash[i], memory_order_relaxed);
    if (v && !strcmp(auth_names[v - 1], a)) {
      slot = v - 1;
      break;
    }
    if (v)
      continue;
    size_t n = atomic_load_explicit(&auth_n, memory_order_relaxed);
    if (n >= cur_nauth) {
      atomic_store(&auth_full, 1);
      break;
    }
    memcpy(auth_names[n], a, strlen(a) + 1); /* < AUTH_LEN: auth_hash_of */
    atomic_store_explicit(&auth_hash[i], (unsigned)n + 1, memory_order_release);
    atomic_store_explicit(&auth_n, n + 1, memory_order_relaxed);
    slot = n;
    break;
  }
  pthread_mutex_unlock(&hist_mu);
  return slot < nauth ? slot : nauth;
}

static uint64_t load(const counter *c) {
  return atomic_load_explicit(c, memory_order_relaxed);
}

static inline void observe(counter *series, uint64_t us) {
  BUMP(series[bucket_of(us)], 1);
  BUMP(series[SUM], us);
}

/* a is the cached authority: its last_len + 1 bytes (NUL included), a
 * word at a time, which strcmp() cannot know it may do (a is an entry's
 * target and last_auth as long: both have AUTH_LEN bytes and more). */
static inline int auth_same(const struct shard *s, const char *a) {
  size_t n = s->last_len + 1, i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t x, y;
    memcpy(&x, s->last_auth + i, 8);
    memcpy(&y, a + i, 8);
    if (x != y)
      return 0;
  }
  for (; i < n; i++)
    if (s->last_auth[i] != a[i])
      return 0;
  return 1;
}

_Static_assert(IFE_TARGET >= AUTH_LEN,
               "auth_same() reads AUTH_LEN bytes of a target");

/* The shard's cached slot and row for authority a (an entry's target),
 * looked up when it is not the last one; the row is -1 when the table went
 * off meanwhile. */
static size_t auth_cached(struct shard *s, const char *a, int kind, int *row) {
  if (!s->last_ok || !auth_same(s, a)) {
    size_t n = strnlen(a, AUTH_LEN);
    s->last_ok = n < AUTH_LEN;
    if (s->last_ok) {
      memcpy(s->last_auth, a, n + 1);
      s->last_len = n;
    }
    s->last_slot = auth_slot(a, s->nauth);
    s->last_row[0] = s->last_row[1] = -1;
  }
  if (s->last_row[kind] < 0)
    s->last_row[kind] = h2t__profile_row(kind, a);
  *row = s->last_row[kind];
  return s->last_slot;
}

/* One state's time in a finished request: its histogram and its profile
 * row (p NULL: none). */
static inline void state_time(struct shard *s, counter *p, int kind,
                              unsigned st, uint64_t us) {
  observe(s->state[kind][st], us);
  if (p) {
    BUMP(p[H2T_PROF_STATE(st)], 1);
    BUMP(p[H2T_PROF_STATE(st) + 1], us);
  }
}

/* (the baseline x86-64 has no popcount instruction: a libgcc call) */
static inline uint32_t popcount32(uint32_t v) {
  v = v - ((v >> 1) & 0x55555555u);
  v = (v & 0x33333333u) + ((v >> 2) & 0x33333333u);
  v = (v + (v >> 4)) & 0x0f0f0f0fu;
  return (v * 0x01010101u) >> 24;
}

static uint32_t sat32(uint64_t v) {
  return v > UINT32_MAX ? UINT32_MAX : (uint32_t)v;
}

/* µs per state of a finished entry (saturating), none for done: what
 * state_tot kept of the steps hist[] lost, plus the steps it still has
 * (each lasts until the next; the last is done). */
static void ife_totals(const struct inflight_entry *e, uint32_t tot[NSTATE]) {
  uint32_t n = e->nhist, k = n < IFE_HIST ? n : IFE_HIST;
  if (n > IFE_HIST)
    memcpy(tot, e->state_tot, sizeof e->state_tot);
  else
    memset(tot, 0, sizeof e->state_tot);
  uint64_t prev = e->hist[(n - k) % IFE_HIST];
  for (uint32_t i = n - k + 1; i < n; i++) {
    uint64_t cur = e->hist[i % IFE_HIST];
    unsigned ps = (unsigned)(prev >> 56);
    if (ps < NSTATE)
      tot[ps] = sat32(tot[ps] + ((cur & IFE_T_MASK) - (prev & IFE_T_MASK)));
    prev = cur;
  }
}

void h2t__hist_request(const struct inflight_entry *e) {
  struct shard *s = shard_get();
  if (!s)
    return;
  int kind = e->kind ? 1 : 0, row;
  size_t slot = auth_cached(s, e->target, kind, &row);
  counter *series =
      &s->req[((kind * (s->nauth + 1) + slot) * NOUT + outcome_of(e->error)) *
              SERIES];
  uint64_t dur = e->state_us > e->start_us ? e->state_us - e->start_us : 0;
  observe(series, dur);
  counter *p = row >= 0 ? s->prof[row] : NULL;
  if (p) {
    BUMP(p[H2T_PROF_REQ], 1);
    BUMP(p[H2T_PROF_ERR], e->error != 0);
    BUMP(p[H2T_PROF_US], dur);
  } /* (done: every request ends there; profile.c counts it from requests) */
  /* The usual request enters each state once (as many steps as states
   * visited): a step's time is its state's, straight from the history. */
  uint32_t n = e->nhist;
  if (n <= IFE_HIST && n == popcount32(e->visited)) {
    for (uint32_t i = 1; i < n; i++) {
      uint64_t prev = e->hist[i - 1];
      unsigned st = (unsigned)(prev >> 56);
      if (st < NSTATE)
        state_time(s, p, kind, st,
                   sat32((e->hist[i] & IFE_T_MASK) - (prev & IFE_T_MASK)));
    }
    return;
  }
  uint32_t tot[NSTATE];
  ife_totals(e, tot);
  for (uint32_t v = e->visited & ((1u << NSTATE) - 1); v; v &= v - 1) {
    unsigned st = (unsigned)__builtin_ctz(v);
    state_time(s, p, kind, st, tot[st]);
  }
}

void h2t__hist_profile(uint64_t (*sum)[H2T_PROF_SERIES]) {
  pthread_mutex_lock(&hist_mu);
  uint64_t g = atomic_load(&hist_gen);
  for (struct shard *s = shards; s; s = s->next)
    if (s->gen == g)
      for (size_t r = 0; r < H2T_PROF_NROWS; r++)
        for (size_t i = 0; i < H2T_PROF_SERIES; i++)
          sum[r][i] += load(&s->prof[r][i]);
  pthread_mutex_unlock(&hist_mu);
}

void h2t__hist_conn(int kind, uint64_t opened_us, uint64_t requests) {
  struct shard *s = shard_get();
  if (!s)
    return;
  kind = kind ? 1 : 0;
  uint64_t now = h2t_now_us();
  observe(s->conn_life[kind], now > opened_us ? now - opened_us : 0);
  unsigned i = 0;
  while (i < NRB && requests > reqs_bound[i])
    i++;
  BUMP(s->conn_reqs[kind][i], 1);
  BUMP(s->conn_reqs[kind][NRB + 1], requests);
}

/* --- exposition ---------------------------------------------------------- */

static const char *const kinds[2] = {"client", "server"};

/* One series: cumulative buckets, _sum in seconds (or plain), _count.
 * Nothing when it never counted. */
static void put_series(FILE *f, const char *name, const char *labels,
                       const counter *c, const uint64_t *bounds, unsigned nb,
                       double scale) {
  uint64_t cum = 0, tot = 0;
  for (unsigned i = 0; i <= nb; i++)
    tot += load(&c[i]);
  if (!tot)
    return;
  for (unsigned i = 0; i <= nb; i++) {
    cum += load(&c[i]);
    if (i < nb)
      fprintf(f, "%s_bucket{%s,le=\"%g\"} %llu\n", name, labels,
              (double)bounds[i] / scale, (unsigned long long)cum);
    else
      fprintf(f, "%s_bucket{%s,le=\"+Inf\"} %llu\n", name, labels,
              (unsigned long long)cum);
  }
  if (scale == 1)
    fprintf(f, "%s_sum{%s} %llu\n", name, labels,
            (unsigned long long)load(&c[nb + 1]));
  else
    fprintf(f, "%s_sum{%s} %.6f\n", name, labels,
            (double)load(&c[nb + 1]) / scale);
  fprintf(f, "%s_count{%s} %llu\n", name, labels, (unsigned long long)tot);
}

static void head(FILE *f, const char *name, const char *help) {
  fprintf(f, "# HELP %s %s\n# TYPE %s histogram\n", name, help, name);
}

int h2t__hist_write(FILE *f) {
  /* sum the shards of this generation under the lock, write after it */
  pthread_mutex_lock(&hist_mu);
  size_t nauth = cur_nauth, nnames = atomic_load(&auth_n);
  struct shard *sum =
      calloc(1, sizeof *sum + req_counters(nauth) * sizeof(counter));
  char(*names)[AUTH_LEN] = nnames ? malloc(nnames * AUTH_LEN) : NULL;
  if (!sum || (nnames && !names)) {
    pthread_mutex_unlock(&hist_mu);
    free(sum);
    free(names);
    return H2T_ERR_NOMEM;
  }
  sum->nauth = nauth;
  uint64_t g = atomic_load(&hist_gen);
  for (struct shard *s = shards; s; s = s->next)
    if (s->gen == g)
      add_into(sum, s);
  if (nnames)
    memcpy(names, auth_names, nnames * AUTH_LEN);
  pthread_mutex_unlock(&hist_mu);

  char labels[160];
  head(f, "h2t_request_duration_seconds",
       "Request duration, start to end, by side, authority (beyond the "
       "configured number: other) and outcome class.");
  for (int k = 0; k < 2; k++)
    for (size_t a = 0; a <= nauth; a++)
      for (unsigned o = 0; o < NOUT; o++) {
        if (a < nauth && a >= nnames)
          continue;
        snprintf(labels, sizeof labels,
                 "kind=\"%s\",authority=\"%s\",outcome=\"%s\"", kinds[k],
                 a < nauth ? names[a] : "other", outcome_names[o]);
        put_series(f, "h2t_request_duration_seconds", labels,
                   &sum->req[((k * (nauth + 1) + a) * NOUT + o) * SERIES],
                   bound_us, NB, 1e6);
      }
  head(f, "h2t_request_state_seconds",
       "Time finished requests spent in each in-flight state, by side.");
  for (int k = 0; k < 2; k++)
    for (unsigned st = 0; st < NSTATE; st++) {
      snprintf(labels, sizeof labels, "kind=\"%s\",state=\"%s\"", kinds[k],
               h2t_inflight_state_name((h2t_inflight_state)st));
      put_series(f, "h2t_request_state_seconds", labels, sum->state[k][st],
                 bound_us, NB, 1e6);
    }
  head(f, "h2t_connection_duration_seconds",
       "Lifetime of closed connections, by side.");
  for (int k = 0; k < 2; k++) {
    snprintf(labels, sizeof labels, "kind=\"%s\"", kinds[k]);
    put_series(f, "h2t_connection_duration_seconds", labels,
               sum->conn_life[k], bound_us, NB, 1e6);
  }
  head(f, "h2t_connection_requests",
       "Requests carried by each closed connection (its reuse), by side.");
  for (int k = 0; k < 2; k++) {
    snprintf(labels, sizeof labels, "kind=\"%s\"", kinds[k]);
    put_series(f, "h2t_connection_requests", labels, sum->conn_reqs[k],
               reqs_bound, NRB, 1);
  }
  free(sum);
  free(names);
  return 0;
}
