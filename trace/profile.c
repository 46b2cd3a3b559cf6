/* State profile: time per state over finished requests, overall and per
 * (kind, authority).  This file names the rows; the counts are each
 * thread's own (metrics_hist.c's shards, recorded with the histograms at a
 * request's end, no shared lock) and are summed here when read.  The
 * overall row of a kind is the sum of its rows, so it is not recorded at
 * all. */
#include <stdlib.h>
#include <string.h>

#include "trace/inflight_int.h"

#define PROF_SLOTS 256 /* hash slots, > H2T_PROF_ROWS */

struct prof_name {
  int kind;
  char authority[H2T_INFLIGHT_AUTHORITY_MAX];
};

/* prof_mu: the names, taken by a loop thread only for an authority it has
 * not seen since the table was made. */
static pthread_mutex_t prof_mu = PTHREAD_MUTEX_INITIALIZER;
static struct prof_name *prof_names; /* H2T_PROF_ROWS; NULL: table off */
static size_t prof_nrows;
static int16_t prof_slot[PROF_SLOTS]; /* row index + 1 */

int h2t__profile_init(void) {
  pthread_mutex_lock(&prof_mu);
  free(prof_names);
  prof_names = calloc(H2T_PROF_ROWS, sizeof *prof_names);
  prof_nrows = 0;
  memset(prof_slot, 0, sizeof prof_slot);
  int rc = prof_names ? 0 : -1;
  pthread_mutex_unlock(&prof_mu);
  return rc;
}

void h2t__profile_fini(void) {
  pthread_mutex_lock(&prof_mu);
  free(prof_names);
  prof_names = NULL;
  prof_nrows = 0;
  pthread_mutex_unlock(&prof_mu);
}

static uint32_t hash(int kind, const char *s) {
  uint32_t h = 2166136261u ^ (uint32_t)kind;
  for (; *s; s++)
    h = (h ^ (uint8_t)*s) * 16777619u;
  return h;
}

/* With prof_mu held and the names allocated. */
static int row_for(int kind, const char *authority) {
  uint32_t h = hash(kind, authority);
  for (unsigned i = 0; i < PROF_SLOTS; i++) {
    unsigned s = (h + i) % PROF_SLOTS;
    if (prof_slot[s]) {
      const struct prof_name *r = &prof_names[prof_slot[s] - 1];
      if (r->kind == kind && !strcmp(r->authority, authority))
        return prof_slot[s] - 1;
      continue;
    }
    if (prof_nrows >= H2T_PROF_ROWS)
      break;
    struct prof_name *r = &prof_names[prof_nrows];
    prof_slot[s] = (int16_t)(++prof_nrows);
    r->kind = kind;
    size_t n = strlen(authority);
    if (n >= sizeof r->authority)
      n = sizeof r->authority - 1;
    memcpy(r->authority, authority, n);
    r->authority[n] = '\0';
    return prof_slot[s] - 1;
  }
  return H2T_PROF_ROWS + kind; /* "(other)" */
}

int h2t__profile_row(int kind, const char *authority) {
  kind = kind ? 1 : 0;
  pthread_mutex_lock(&prof_mu);
  int row = prof_names ? row_for(kind, authority) : -1;
  pthread_mutex_unlock(&prof_mu);
  return row;
}

static void row_fill(h2t_inflight_profile_row *r, int kind,
                     const char *authority, const uint64_t *c) {
  memset(r, 0, sizeof *r);
  r->kind = (h2t_inflight_kind)kind;
  strcpy(r->authority, authority); /* < H2T_INFLIGHT_AUTHORITY_MAX */
  if (!c)
    return;
  r->requests = c[H2T_PROF_REQ];
  r->errors = c[H2T_PROF_ERR];
  r->total_us = c[H2T_PROF_US];
  for (unsigned s = 0; s < H2T_IFS_DONE; s++) {
    r->states[s].requests = c[H2T_PROF_STATE(s)];
    r->states[s].total_us = c[H2T_PROF_STATE(s) + 1];
  }
  /* every finished request ended done, which has no time */
  r->states[H2T_IFS_DONE].requests = r->requests;
}

static void row_add(h2t_inflight_profile_row *dst,
                    const h2t_inflight_profile_row *r) {
  dst->requests += r->requests;
  dst->errors += r->errors;
  dst->total_us += r->total_us;
  for (unsigned s = 0; s < H2T_IFS_COUNT_; s++) {
    dst->states[s].requests += r->states[s].requests;
    dst->states[s].total_us += r->states[s].total_us;
  }
}

/* The rows of sum that have a name (or are an "(other)" that counted), and
 * the overall rows, into p.  0 or H2T_ERR_NOMEM. */
static int profile_fold(h2t_inflight_profile_data *p,
                        const uint64_t (*sum)[H2T_PROF_SERIES],
                        const struct prof_name *names, size_t nnames) {
  p->rows = malloc(H2T_PROF_NROWS * sizeof *p->rows);
  if (!p->rows)
    return H2T_ERR_NOMEM;
  for (int k = 0; k < 2; k++)
    row_fill(&p->overall[k], k, "*", NULL);
  for (size_t i = 0; i < nnames; i++)
    row_fill(&p->rows[p->nrows++], names[i].kind, names[i].authority, sum[i]);
  for (int k = 0; k < 2; k++)
    if (sum[H2T_PROF_ROWS + k][H2T_PROF_REQ])
      row_fill(&p->rows[p->nrows++], k, "(other)", sum[H2T_PROF_ROWS + k]);
  for (size_t i = 0; i < p->nrows; i++)
    row_add(&p->overall[p->rows[i].kind ? 1 : 0], &p->rows[i]);
  if (!p->nrows) { /* as before: no rows, no array */
    free(p->rows);
    p->rows = NULL;
  }
  return 0;
}

int h2t_inflight_profile(h2t_inflight_profile_data **out) {
  if (!out)
    return H2T_ERR_INVALID_ARG;
  *out = NULL;
  h2t_inflight_profile_data *p = calloc(1, sizeof *p);
  uint64_t(*sum)[H2T_PROF_SERIES] = calloc(H2T_PROF_NROWS, sizeof *sum);
  struct prof_name *names = malloc(H2T_PROF_ROWS * sizeof *names);
  int rc = 0;
  /* The table's life held: its counts and its names are of one table.
   * Counts first: every row counted by then is named by then. */
  pthread_rwlock_rdlock(&h2t__ifl_life);
  if (!atomic_load(&h2t__ifl_on))
    rc = H2T_ERR_STATE;
  else if (!p || !sum || !names)
    rc = H2T_ERR_NOMEM;
  size_t nnames = 0;
  if (rc == 0) {
    h2t__hist_profile(sum);
    pthread_mutex_lock(&prof_mu);
    if (prof_names) {
      nnames = prof_nrows;
      memcpy(names, prof_names, nnames * sizeof *names);
    }
    pthread_mutex_unlock(&prof_mu);
  }
  pthread_rwlock_unlock(&h2t__ifl_life);
  if (rc == 0)
    rc = profile_fold(p, (const uint64_t(*)[H2T_PROF_SERIES])sum, names,
                      nnames);
  free(sum);
  free(names);
  if (rc != 0) {
    h2t_inflight_profile_free(p);
    return rc;
  }
  *out = p;
  return 0;
}

void h2t_inflight_profile_free(h2t_inflight_profile_data *p) {
  if (p) {
    free(p->rows);
    free(p);
  }
}
