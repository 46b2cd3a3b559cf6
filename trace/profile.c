/* State profile: time per state over finished requests, overall and per
 * (kind, authority).  Rows are preallocated so that ending a request (on a
 * loop thread) never allocates. */
#include <sched.h>
#include <stdlib.h>
#include <string.h>

#include "trace/inflight_int.h"

#define PROF_ROWS 128 /* authorities tracked; the rest share "(other)" */
#define PROF_SLOTS 256 /* hash slots, > PROF_ROWS */

/* A spinlock, not a mutex: ending a request holds it for a few dozen adds,
 * and a reader for one copy of the rows (~60 KB, microseconds). */
static atomic_flag prof_lock = ATOMIC_FLAG_INIT;

static void prof_acquire(void) {
  for (unsigned spins = 0;
       atomic_flag_test_and_set_explicit(&prof_lock, memory_order_acquire);
       spins++)
    if (spins > 64)
      sched_yield();
}

static void prof_release(void) {
  atomic_flag_clear_explicit(&prof_lock, memory_order_release);
}
static h2t_inflight_profile_row prof_overall[2];
static h2t_inflight_profile_row *prof_rows; /* PROF_ROWS + 2 "(other)" */
static size_t prof_nrows;
static int16_t prof_slot[PROF_SLOTS]; /* row index + 1 */
static unsigned prof_gen; /* bumped when the rows are made anew or freed */

/* The row this thread found last: a loop mostly serves one authority, and a
 * strcmp costs less than the hash and the probe.  A row once given to an
 * authority stays its own until the rows are made anew. */
struct prof_last {
  unsigned gen;
  int kind;
  h2t_inflight_profile_row *row;
  char authority[IFE_TARGET / 2];
};
static _Thread_local struct prof_last prof_last
    __attribute__((tls_model("initial-exec")));

int h2t__profile_init(void) {
  prof_acquire();
  free(prof_rows);
  prof_rows = calloc(PROF_ROWS + 2, sizeof *prof_rows);
  prof_nrows = 0;
  prof_gen++;
  memset(prof_slot, 0, sizeof prof_slot);
  memset(prof_overall, 0, sizeof prof_overall);
  for (int k = 0; k < 2; k++) {
    prof_overall[k].kind = (h2t_inflight_kind)k;
    strcpy(prof_overall[k].authority, "*");
  }
  int rc = prof_rows ? 0 : -1;
  prof_release();
  return rc;
}

void h2t__profile_fini(void) {
  prof_acquire();
  free(prof_rows);
  prof_rows = NULL;
  prof_nrows = 0;
  prof_gen++;
  prof_release();
}

static uint32_t hash(int kind, const char *s) {
  uint32_t h = 2166136261u ^ (uint32_t)kind;
  for (; *s; s++)
    h = (h ^ (uint8_t)*s) * 16777619u;
  return h;
}

static h2t_inflight_profile_row *row_for(int kind, const char *authority) {
  uint32_t h = hash(kind, authority);
  for (unsigned i = 0; i < PROF_SLOTS; i++) {
    unsigned s = (h + i) % PROF_SLOTS;
    if (prof_slot[s]) {
      h2t_inflight_profile_row *r = &prof_rows[prof_slot[s] - 1];
      if ((int)r->kind == kind && !strcmp(r->authority, authority))
        return r;
      continue;
    }
    if (prof_nrows >= PROF_ROWS)
      break;
    h2t_inflight_profile_row *r = &prof_rows[prof_nrows];
    prof_slot[s] = (int16_t)(++prof_nrows);
    r->kind = (h2t_inflight_kind)kind;
    size_t n = strlen(authority);
    if (n >= sizeof r->authority)
      n = sizeof r->authority - 1;
    memcpy(r->authority, authority, n);
    r->authority[n] = '\0';
    return r;
  }
  h2t_inflight_profile_row *other = &prof_rows[PROF_ROWS + (kind != 0)];
  if (!other->authority[0]) {
    other->kind = (h2t_inflight_kind)kind;
    strcpy(other->authority, "(other)");
  }
  return other;
}

static void add_to(h2t_inflight_profile_row *r, const struct inflight_entry *e,
                   const uint32_t tot[H2T_IFS_DONE]) {
  r->requests++;
  if (e->error)
    r->errors++;
  r->total_us += e->state_us - e->start_us;
  for (uint32_t v = e->visited; v; v &= v - 1) {
    unsigned s = (unsigned)__builtin_ctz(v);
    r->states[s].requests++;
    r->states[s].total_us += s < H2T_IFS_DONE ? tot[s] : 0;
  }
}

/* With prof_lock held. */
static h2t_inflight_profile_row *row_cached(int kind, const char *authority) {
  struct prof_last *l = &prof_last;
  if (l->row && l->gen == prof_gen && l->kind == kind &&
      !strcmp(l->authority, authority))
    return l->row;
  h2t_inflight_profile_row *r = row_for(kind, authority);
  size_t n = strlen(authority);
  if (n < sizeof l->authority) {
    memcpy(l->authority, authority, n + 1);
    l->gen = prof_gen;
    l->kind = kind;
    l->row = r;
  }
  return r;
}

void h2t__profile_add(const struct inflight_entry *e,
                      const uint32_t tot[H2T_IFS_DONE]) {
  int kind = e->kind ? 1 : 0;
  prof_acquire();
  if (prof_rows) {
    add_to(&prof_overall[kind], e, tot);
    add_to(row_cached(kind, e->target), e, tot);
  }
  prof_release();
}

int h2t_inflight_profile(h2t_inflight_profile_data **out) {
  if (!out)
    return H2T_ERR_INVALID_ARG;
  *out = NULL;
  h2t_inflight_profile_data *p = calloc(1, sizeof *p);
  if (!p)
    return H2T_ERR_NOMEM;
  prof_acquire();
  if (!prof_rows) {
    prof_release();
    free(p);
    return H2T_ERR_STATE;
  }
  size_t n = prof_nrows;
  for (int k = 0; k < 2; k++)
    n += prof_rows[PROF_ROWS + k].requests != 0;
  p->rows = n ? malloc(n * sizeof *p->rows) : NULL;
  if (n && !p->rows) {
    prof_release();
    free(p);
    return H2T_ERR_NOMEM;
  }
  memcpy(p->overall, prof_overall, sizeof prof_overall);
  if (prof_nrows)
    memcpy(p->rows, prof_rows, prof_nrows * sizeof *p->rows);
  p->nrows = prof_nrows;
  for (int k = 0; k < 2; k++)
    if (prof_rows[PROF_ROWS + k].requests)
      p->rows[p->nrows++] = prof_rows[PROF_ROWS + k];
  prof_release();
  *out = p;
  return 0;
}

void h2t_inflight_profile_free(h2t_inflight_profile_data *p) {
  if (p) {
    free(p->rows);
    free(p);
  }
}
