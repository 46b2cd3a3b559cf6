/*
 * In-flight table internals shared by trace/inflight.c, profile.c, dump.c,
 * metrics.c and connreg.c.  h2/ never includes this: its
 * view is the inflight_ / connreg_ / metrics_ section of trace_int.h.
 */
#ifndef H2T_INFLIGHT_INT_H
#define H2T_INFLIGHT_INT_H

#include <pthread.h>
#include <stdio.h>
#include <stdatomic.h>

#include <h2trace/inflight.h>
#include "trace/trace_int.h"

#define IFE_HIST H2T_INFLIGHT_MAX_HISTORY
#define IFE_TARGET 128 /* "authority\0path\0", truncated to fit */
#define IFE_STATUS 40
#define IFE_REASON 32
#define IFE_CANCELED 1u
#define IFE_GOAWAY_BY_PEER 2u /* the GOAWAY of goaway_us came from the peer */
#define IFE_RESET_BY_PEER 4u  /* the RST_STREAM of reset_code did */
#define IFE_BODY_OPEN 8u      /* server: headers done, body still coming */
#define IFE_HANDLER_WAIT 16u  /* server: handler started while body open */
#define IFE_SAMPLED 32u       /* the trace context's sampled flag */
#define IFE_PEND_SIDE 1u /* a cancel or status from another thread waits */
#define IFE_PEND_BUSY 2u /* a cancel is calling the owner's cancel_fn */

/* hist[] packs a step in 8 bytes: state in the top byte, time below. */
#define IFE_T_MASK ((UINT64_C(1) << 56) - 1)

/*
 * One request.  Only the owning loop writes it, so its writes need no lock:
 * `lock` is a sequence count the owner makes odd while it writes (plain
 * stores, no locked instruction).  Readers on other threads keep a copy only
 * if the count was even and unchanged around it (seqlock, see h2t__ife_read), so
 * neither side ever waits for the other.  What other threads want to change
 * (a cancel, a status) goes to a side record the owner folds in at its next
 * event, and that readers merge meanwhile; `pending` says there is one.
 * Entries live in chunks that are never freed while the table is on, so a
 * reader may look at a slot that was just recycled: it checks `live` and
 * the id in its copy.
 */
struct inflight_entry {
  atomic_uint lock;
  atomic_uchar live;
  uint8_t kind, state, flags;
  uint32_t visited; /* bit per state entered */
  int32_t stream_id;
  uint64_t id, conn_id, start_us, state_us, bytes_in, bytes_out;
  inflight_cancel_fn cancel;
  void *cancel_arg;
  int32_t error;
  uint32_t nhist; /* steps ever pushed; hist[] keeps the last IFE_HIST */
  uint16_t http_status;
  atomic_uchar pending; /* IFE_PEND_*: set by other threads */
  uint8_t reset_code; /* 0, or 1 + the RST_STREAM code that ended it
                       (255: 254 or more) */
  uint32_t next_free; /* free: next slot + 1 (0: end); live: own slot */
  uint64_t hist[IFE_HIST];
  /* µs per state of the steps hist[] has lost, saturating (valid once
   * nhist > IFE_HIST; the rest is summed at the end from hist[]); none for
   * done, the last state */
  uint32_t state_tot[H2T_IFS_DONE];
  /* A GOAWAY on its connection while it ran, for exports: 1 + µs after
   * start_us (saturating), 0: none.  (No room for its code.) */
  uint32_t goaway_us;
  char method[8];
  char scheme[8];
  char target[IFE_TARGET];
  char status[IFE_STATUS];
  char cancel_reason[IFE_REASON];
  /* W3C trace context, binary (hex only when read); trace_id all zero:
   * none.  Its sampled flag is IFE_SAMPLED. */
  uint8_t trace_id[16], span_id[8], parent_span_id[8];
};

_Static_assert(H2T_IFS_DONE == H2T_IFS_COUNT_ - 1, "done is the last state");
/* 512 bytes of request, then 32 of trace ids (doc/design.md) */
_Static_assert(sizeof(struct inflight_entry) <= 544,
               "an in-flight entry must fit in 544 bytes");

#define IFL_CHUNK 1024

struct ifl_table {
  pthread_mutex_t mu; /* freelist and chunk growth */
  size_t max_entries, max_chunks, allocated;
  size_t metrics_authorities; /* label slots of the histograms */
  struct inflight_entry **chunks;
  atomic_size_t nchunks;
  uint32_t free_head;
  atomic_size_t live;            /* begun and not ended (see disable) */
  atomic_uint_fast64_t dropped; /* begins refused: table full */
  atomic_uint_fast64_t gen;     /* bumped each time the table is made */

  /* Recent: ring[seq % ring_cap] is 1 + the table slot of finished request
   * seq (0: none yet).  A finished entry stays in its slot, untouched,
   * until the ring laps it; only then is the slot freed.  So a request's
   * end publishes an index instead of copying 544 bytes, and the table
   * holds max_entries + ring_cap slots (live entries stay capped at
   * max_entries). */
  atomic_uint *ring;
  size_t ring_cap;
  atomic_uint_fast64_t ring_seq; /* next sequence number to write */
};

extern struct ifl_table h2t__ifl;
extern atomic_int h2t__ifl_on;
/* Readers hold it shared; h2t_inflight_disable() exclusive. */
extern pthread_rwlock_t h2t__ifl_life;
/* Users that keep the table alive (diag endpoint, signal dump). */
extern atomic_int h2t__ifl_users;

/* A spinlock on the sequence count, for a slot with several writers
 * (tests).  Entries in flight use owner-only write sections. */
void h2t__ife_lock(struct inflight_entry *e);
void h2t__ife_unlock(struct inflight_entry *e);
/* Readers: a consistent private copy without blocking writers (seqlock);
 * 0, or -1 if a writer stayed in the middle of a write for long.  For an
 * entry in flight, side records (cancel, status) are merged in. */
int h2t__ife_read(struct inflight_entry *dst, const struct inflight_entry *src);

/* Call fn on a private copy of each live entry (never blocks the entry's
 * writer); stop when fn returns non-zero (that value is returned).  Caller
 * holds h2t__ifl_life shared. */
int h2t__ifl_foreach_read(int (*fn)(const struct inflight_entry *copy, void *arg),
                     void *arg);

/* Convert a private copy to the public struct; now_us for current durations. */
void h2t__ife_to_info(const struct inflight_entry *e, uint64_t now_us,
                 h2t_inflight_info *out);

/* The recent ring, one entry at a time (export.c streams it): the range
 * of sequence numbers it holds now and the table's generation (0 and
 * nothing when the table is off), then one entry by sequence number: 0, or
 * -1 when it was overwritten, or the table was remade since. */
void h2t__ifl_recent_range(uint64_t *gen, uint64_t *first, uint64_t *end);
int h2t__ifl_recent_at(uint64_t gen, uint64_t seq, struct inflight_entry *out);

/* A client state before the request is being sent: where "wrote headers"
 * moves it to sending (inflight.c's states and export.c's recorder). */
static inline int h2t__ifl_before_sending(unsigned st) {
  return st == H2T_IFS_QUEUED || st == H2T_IFS_DNS ||
         st == H2T_IFS_CONNECTING || st == H2T_IFS_TLS ||
         st == H2T_IFS_WAIT_STREAM || st == H2T_IFS_RETRYING;
}

/* Turn on with defaults if off (diag endpoint, signal dump).  0 or error. */
int h2t__ifl_ensure_on(void);

/* profile.c: the rows' names.  A row is a (kind, authority), registered
 * at its first finished request; the first H2T_PROF_ROWS get one each, the
 * others share "(other)" of their kind (row H2T_PROF_ROWS + kind).  The
 * counts are not here: each thread adds its own in its metrics_hist.c
 * shard, and h2t_inflight_profile() sums the shards (and the rows of a
 * kind, for the overall row) when it is read. */
#define H2T_PROF_ROWS 128
#define H2T_PROF_NROWS (H2T_PROF_ROWS + 2)
/* A row's counters: requests, errors, total µs, then for each state but
 * done (which every finished request entered, for no time) the requests
 * that entered it and the µs they spent in it. */
#define H2T_PROF_REQ 0
#define H2T_PROF_ERR 1
#define H2T_PROF_US 2
#define H2T_PROF_STATE(s) (3 + 2 * (s)) /* + 1: its µs */
#define H2T_PROF_SERIES H2T_PROF_STATE(H2T_IFS_DONE)
int h2t__profile_init(void);
void h2t__profile_fini(void);
/* The row of (kind, authority), registered if new; -1 when the table is
 * off.  Takes a lock: callers cache it (one per thread and authority). */
int h2t__profile_row(int kind, const char *authority);

/* metrics.c */
void h2t__metrics_request_done(int kind, int error);
/* metrics_hist.c: histograms, and the profile's counts.  reset
 * (table_init): counts start over with nauth authority labels (0: the
 * default); 0 or H2T_ERR_NOMEM.  request: at a request's end, on its loop
 * thread, before it stops counting live (in its write section: it reads
 * the entry only).  profile: add every thread's profile counts into sum (rows
 * H2T_PROF_NROWS); the caller holds h2t__ifl_life shared.  conn: a
 * registered connection closes.  write: the exposition, appended to f
 * (the rest of the metrics' stream); 0 or H2T_ERR_NOMEM. */
#define H2T_METRICS_AUTHORITIES_DEFAULT 32
#define H2T_METRICS_AUTHORITIES_MAX 4096
int h2t__hist_reset(size_t nauth);
void h2t__hist_request(const struct inflight_entry *e);
void h2t__hist_profile(uint64_t (*sum)[H2T_PROF_SERIES]);
void h2t__hist_conn(int kind, uint64_t opened_us, uint64_t requests);
int h2t__hist_write(FILE *f);
void h2t__metrics_got_conn(const h2t_event *ev);
void h2t__metrics_reset(void);

/* dump.c */
void h2t__fmt_duration(char *buf, size_t len, uint64_t us);

#endif
