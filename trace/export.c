/*
 * HAR and Chrome-trace export (export.h): a recorder fed by a client
 * trace's `any` hook, the in-flight table's recent ring, and a reader that
 * turns either into a document one request at a time.
 *
 * Written by hand like event_json.c, with its escaping (json_int.h): the
 * core library links no JSON library.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <h2trace/export.h>
#include <h2trace/inflight.h>
#include <h2trace/version.h>

#include "trace/inflight_int.h"
#include "trace/json_int.h"
#include "trace/abi_int.h"
#include "trace/trace_int.h"
#include "trace/tracectx_int.h"

/* --- what the writers see of one request, from either source ------------- */

#define XSTEPS 32 /* the recorder's; the ring keeps H2T_INFLIGHT_MAX_HISTORY */

typedef struct xview {
  uint64_t id, conn_id, start_us, end_us;
  int32_t stream_id;
  int kind, status, error;
  uint64_t bytes_in, bytes_out;
  const char *method, *scheme, *authority, *path;
  unsigned nsteps;
  uint8_t st[XSTEPS];
  uint64_t t[XSTEPS];
  const char *hdrs; /* "name\0value\0"..., values already redacted */
  size_t hdrs_len;
  int goaway, goaway_by_peer, goaway_has_code;
  uint64_t goaway_t;
  uint32_t goaway_code;
  int32_t goaway_last; /* -1: unknown */
  int reset, reset_by_peer;
  uint64_t reset_t;
  uint32_t reset_code;
  h2t_trace_context trace; /* trace_id all zero: none */
} xview;

/* --- the recorder ---------------------------------------------------------- */

#define XCHUNK 256 /* records per chunk */

typedef struct xrec {
  uint64_t id, conn_id, start_us, last_us, end_us, bytes_in, bytes_out;
  uint64_t goaway_us, reset_us;
  char *authority, *scheme; /* from get_conn */
  char *hdrs;               /* name\0value\0 pairs as sent */
  size_t hdrs_len;
  int32_t stream_id, goaway_last;
  int status, error;
  uint32_t goaway_code, reset_code;
  uint32_t dt[XSTEPS]; /* µs after start_us, saturating */
  uint8_t st[XSTEPS], nsteps, state, finished;
  uint8_t goaway, goaway_by_peer, reset, reset_by_peer;
  h2t_trace_context trace; /* from its first event that has one */
} xrec;

struct h2t_export {
  h2t_mem mem;
  int has_mem;
  h2t_client_trace trace;
  size_t max;
  xrec **chunks;       /* chunks[i] holds records of seq chunk0 + i */
  size_t nchunks, chunks_cap;
  uint64_t chunk0;     /* chunk number of chunks[0] */
  uint64_t next_seq;   /* sequence of the next record */
  /* running requests: req_id -> seq, open addressing, 0 = empty */
  struct slot { uint64_t id, seq; } *map;
  size_t map_cap, map_n;
};

static const h2t_mem *mem_of(const h2t_export *x) {
  return x->has_mem ? &x->mem : NULL;
}

static uint64_t first_seq(const h2t_export *x) { return x->chunk0 * XCHUNK; }

static xrec *rec_at(const h2t_export *x, uint64_t seq) {
  if (seq < first_seq(x) || seq >= x->next_seq)
    return NULL;
  return &x->chunks[seq / XCHUNK - x->chunk0][seq % XCHUNK];
}

static size_t hash64(uint64_t v, size_t cap) {
  v ^= v >> 33;
  v *= UINT64_C(0xff51afd7ed558ccd);
  v ^= v >> 33;
  return (size_t)v & (cap - 1);
}

static struct slot *map_find(h2t_export *x, uint64_t id) {
  if (!x->map_cap)
    return NULL;
  for (size_t i = hash64(id, x->map_cap);; i = (i + 1) & (x->map_cap - 1)) {
    if (x->map[i].id == id)
      return &x->map[i];
    if (!x->map[i].id)
      return NULL;
  }
}

static int map_put(h2t_export *x, uint64_t id, uint64_t seq) {
  if ((x->map_n + 1) * 2 > x->map_cap) {
    size_t cap = x->map_cap ? x->map_cap * 2 : 64;
    struct slot *m = h2t_xcalloc(mem_of(x), cap, sizeof *m);
    if (!m)
      return -1;
    for (size_t i = 0; i < x->map_cap; i++)
      if (x->map[i].id) {
        size_t j = hash64(x->map[i].id, cap);
        while (m[j].id)
          j = (j + 1) & (cap - 1);
        m[j] = x->map[i];
      }
    h2t_xfree(mem_of(x), x->map);
    x->map = m;
    x->map_cap = cap;
  }
  size_t i = hash64(id, x->map_cap);
  while (x->map[i].id)
    i = (i + 1) & (x->map_cap - 1);
  x->map[i].id = id;
  x->map[i].seq = seq;
  x->map_n++;
  return 0;
}

/* Backward-shift deletion: no tombstones to sweep. */
static void map_del(h2t_export *x, struct slot *s) {
  size_t cap = x->map_cap, i = (size_t)(s - x->map), j = i;
  x->map[i].id = 0;
  x->map_n--;
  for (;;) {
    j = (j + 1) & (cap - 1);
    if (!x->map[j].id)
      return;
    size_t k = hash64(x->map[j].id, cap);
    /* move j back to i unless its home lies cyclically in (i, j] */
    if ((j > i && (k <= i || k > j)) || (j < i && (k <= i && k > j))) {
      x->map[i] = x->map[j];
      x->map[j].id = 0;
      i = j;
    }
  }
}

static void rec_free(const h2t_export *x, xrec *r) {
  h2t_xfree(mem_of(x), r->authority);
  h2t_xfree(mem_of(x), r->scheme);
  h2t_xfree(mem_of(x), r->hdrs);
}

/* Drop the oldest chunk when over the limit. */
static void trim(h2t_export *x) {
  while (x->max && x->nchunks > 1 &&
         x->next_seq - first_seq(x) - XCHUNK >= x->max) {
    xrec *c = x->chunks[0];
    for (size_t i = 0; i < XCHUNK; i++)
      rec_free(x, &c[i]);
    h2t_xfree(mem_of(x), c);
    memmove(x->chunks, x->chunks + 1, --x->nchunks * sizeof *x->chunks);
    x->chunk0++;
  }
}

static xrec *rec_new(h2t_export *x, const h2t_event *ev) {
  uint64_t seq = x->next_seq;
  if (seq % XCHUNK == 0) {
    if (x->nchunks == x->chunks_cap) {
      size_t cap = x->chunks_cap ? x->chunks_cap * 2 : 16;
      xrec **c = h2t_xrealloc(mem_of(x), x->chunks, cap * sizeof *c);
      if (!c)
        return NULL;
      x->chunks = c;
      x->chunks_cap = cap;
    }
    xrec *c = h2t_xcalloc(mem_of(x), XCHUNK, sizeof *c);
    if (!c)
      return NULL;
    x->chunks[x->nchunks++] = c;
  }
  if (map_put(x, ev->req_id, seq) != 0) {
    if (seq % XCHUNK == 0)
      h2t_xfree(mem_of(x), x->chunks[--x->nchunks]);
    return NULL;
  }
  x->next_seq++;
  xrec *r = rec_at(x, seq);
  memset(r, 0, sizeof *r);
  r->id = ev->req_id;
  r->start_us = r->last_us = ev->t_us;
  r->goaway_last = -1;
  r->st[0] = H2T_IFS_QUEUED;
  r->state = H2T_IFS_QUEUED;
  r->nsteps = 1;
  trim(x);
  return rec_at(x, seq);
}

static void step(xrec *r, unsigned st, uint64_t t) {
  if (r->state == st || r->finished)
    return;
  r->state = (uint8_t)st;
  if (r->nsteps == XSTEPS)
    return; /* a long tail of flow-blocked toggles: keep the start */
  uint64_t dt = t > r->start_us ? t - r->start_us : 0;
  r->dt[r->nsteps] = dt > UINT32_MAX ? UINT32_MAX : (uint32_t)dt;
  r->st[r->nsteps++] = (uint8_t)st;
}

static char *dup_or_keep(const h2t_export *x, char *old, const char *s) {
  if (old || !s)
    return old;
  return h2t_xstrdup(mem_of(x), s);
}

static void add_header(h2t_export *x, xrec *r, const h2t_event *ev) {
  const char *n = ev->u.header_field.name, *v = ev->u.header_field.value;
  if (!n)
    return;
  size_t nl = ev->u.header_field.namelen ? ev->u.header_field.namelen : strlen(n);
  size_t vl = v ? (ev->u.header_field.valuelen ? ev->u.header_field.valuelen
                                               : strlen(v))
                : 0;
  if (h2t__header_is_sensitive_n(n, nl)) { /* never kept, so never leaked */
    v = "[redacted]";
    vl = strlen(v);
  }
  if (nl > 65536 || vl > 65536)
    return;
  char *h = h2t_xrealloc(mem_of(x), r->hdrs, r->hdrs_len + nl + vl + 2);
  if (!h)
    return; /* a trace failure is less trace */
  memcpy(h + r->hdrs_len, n, nl);
  h[r->hdrs_len + nl] = '\0';
  if (vl)
    memcpy(h + r->hdrs_len + nl + 1, v, vl);
  h[r->hdrs_len + nl + 1 + vl] = '\0';
  r->hdrs = h;
  r->hdrs_len += nl + vl + 2;
}

/* The same states as the in-flight table's, from the same events. */
static void on_any(const h2t_event *ev, void *user) {
  h2t_export *x = user;
  if (!ev->req_id || (unsigned)ev->type >= H2T_EV_FIRST_SERVER_)
    return;
  struct slot *s = map_find(x, ev->req_id);
  xrec *r = s ? rec_at(x, s->seq) : NULL;
  if (s && (!r || r->id != ev->req_id)) { /* its record was dropped */
    map_del(x, s);
    return;
  }
  if (!r && !(r = rec_new(x, ev)))
    return;
  uint64_t t = ev->t_us;
  if (t > r->last_us)
    r->last_us = t;
  if (ev->conn_id)
    r->conn_id = ev->conn_id;
  if (ev->stream_id)
    r->stream_id = ev->stream_id;
  if (ev->trace && h2t__zero_id(r->trace.trace_id, 16))
    r->trace = *ev->trace;
  switch (ev->type) {
  case H2T_EV_GET_CONN:
    r->authority = dup_or_keep(x, r->authority, ev->u.get_conn.authority);
    r->scheme = dup_or_keep(x, r->scheme, ev->u.get_conn.scheme);
    break;
  case H2T_EV_DNS_START:
    step(r, H2T_IFS_DNS, t);
    break;
  case H2T_EV_CONNECT_START:
    step(r, H2T_IFS_CONNECTING, t);
    break;
  case H2T_EV_TLS_HANDSHAKE_START:
    step(r, H2T_IFS_TLS, t);
    break;
  case H2T_EV_GOT_CONN:
    step(r,
         ev->u.got_conn.max_streams &&
                 ev->u.got_conn.active_streams > ev->u.got_conn.max_streams
             ? H2T_IFS_WAIT_STREAM
             : H2T_IFS_SENDING,
         t);
    break;
  case H2T_EV_WROTE_HEADER_FIELD:
    add_header(x, r, ev);
    break;
  case H2T_EV_STREAM_OPENED:
  case H2T_EV_GOT_100_CONTINUE:
    step(r, H2T_IFS_SENDING, t);
    break;
  case H2T_EV_WROTE_HEADERS:
    if (h2t__ifl_before_sending(r->state))
      step(r, H2T_IFS_SENDING, t);
    break;
  case H2T_EV_WAIT_100_CONTINUE:
    step(r, H2T_IFS_WAIT_CONTINUE, t);
    break;
  case H2T_EV_WROTE_REQUEST:
    if (r->state != H2T_IFS_RECEIVING)
      step(r, H2T_IFS_WAIT_RESPONSE, t);
    break;
  case H2T_EV_GOT_HEADERS:
    r->status = ev->u.response.status;
    step(r, H2T_IFS_RECEIVING, t);
    break;
  case H2T_EV_GOT_FIRST_RESPONSE_BYTE:
  case H2T_EV_GOT_DATA:
    step(r, H2T_IFS_RECEIVING, t);
    break;
  case H2T_EV_FLOW_BLOCKED:
    step(r, H2T_IFS_FLOW_BLOCKED, t);
    break;
  case H2T_EV_RETRY:
    step(r, H2T_IFS_RETRYING, t);
    break;
  case H2T_EV_GOAWAY:
    if (!r->goaway) {
      r->goaway = 1;
      r->goaway_us = t;
      r->goaway_code = ev->u.goaway.error_code;
      r->goaway_last = ev->u.goaway.last_stream_id;
      r->goaway_by_peer = (uint8_t)(ev->u.goaway.by_peer != 0);
    }
    break;
  case H2T_EV_STREAM_RESET:
    if (!r->reset) {
      r->reset = 1;
      r->reset_us = t;
      r->reset_code = ev->u.stream_reset.error_code;
      r->reset_by_peer = (uint8_t)(ev->u.stream_reset.by_peer != 0);
    }
    break;
  case H2T_EV_DONE:
    step(r, H2T_IFS_DONE, t);
    r->finished = 1;
    r->end_us = t;
    r->error = ev->u.done.error;
    if (ev->u.done.status)
      r->status = ev->u.done.status;
    r->bytes_in = ev->u.done.bytes_recv;
    r->bytes_out = ev->u.done.bytes_sent;
    if (ev->u.done.reset_code && !r->reset) {
      r->reset = 1;
      r->reset_us = t;
      r->reset_code = ev->u.done.reset_code;
    }
    map_del(x, s ? s : map_find(x, ev->req_id));
    break;
  default:
    break;
  }
}

int h2t_export_new(h2t_export **out, const h2t_export_config *cfg) {
  if (!out)
    return H2T_ERR_INVALID_ARG;
  *out = NULL;
  h2t_export_config c;
  if (cfg && h2t__struct_in(&c, sizeof c, cfg, H2T__EXPORT_CONFIG_V1))
    return H2T_ERR_INVALID_ARG;
  cfg = cfg ? &c : NULL;
  const h2t_mem *m = cfg ? cfg->mem : NULL;
  h2t_export *x = h2t_xcalloc(m, 1, sizeof *x);
  if (!x)
    return H2T_ERR_NOMEM;
  if (m) {
    x->mem = *m;
    x->has_mem = 1;
  }
  x->max = cfg ? cfg->max_requests : 0;
  x->trace = (h2t_client_trace){H2T_CLIENT_TRACE_INIT, .user = x, .any = on_any};
  *out = x;
  return 0;
}

void h2t_export_del(h2t_export *x) {
  if (!x)
    return;
  for (uint64_t seq = first_seq(x); seq < x->next_seq; seq++)
    rec_free(x, rec_at(x, seq));
  for (size_t i = 0; i < x->nchunks; i++)
    h2t_xfree(mem_of(x), x->chunks[i]);
  h2t_xfree(mem_of(x), x->chunks);
  h2t_xfree(mem_of(x), x->map);
  h2t_mem m = x->mem;
  int has = x->has_mem;
  h2t_xfree(has ? &m : NULL, x);
}

const h2t_client_trace *h2t_export_trace(h2t_export *x) {
  return x ? &x->trace : NULL;
}

size_t h2t_export_count(const h2t_export *x) {
  return x ? (size_t)(x->next_seq - first_seq(x)) : 0;
}

/* Pseudo-header value from a record's headers; NULL if absent. */
static const char *hdr_get(const char *h, size_t len, const char *name) {
  for (size_t i = 0; i < len;) {
    const char *n = h + i, *v = n + strlen(n) + 1;
    if (!strcmp(n, name))
      return v;
    i = (size_t)(v + strlen(v) + 1 - h);
  }
  return NULL;
}

static void view_of_rec(const xrec *r, xview *v) {
  memset(v, 0, sizeof *v);
  v->id = r->id;
  v->kind = H2T_INFLIGHT_CLIENT;
  v->conn_id = r->conn_id;
  v->stream_id = r->stream_id;
  v->start_us = r->start_us;
  v->end_us = r->finished ? r->end_us : r->last_us;
  v->status = r->status;
  v->error = r->error;
  v->bytes_in = r->bytes_in;
  v->bytes_out = r->bytes_out;
  v->hdrs = r->hdrs;
  v->hdrs_len = r->hdrs_len;
  const char *m = hdr_get(r->hdrs, r->hdrs_len, ":method");
  const char *p = hdr_get(r->hdrs, r->hdrs_len, ":path");
  const char *a = hdr_get(r->hdrs, r->hdrs_len, ":authority");
  const char *s = hdr_get(r->hdrs, r->hdrs_len, ":scheme");
  v->method = m ? m : "";
  v->path = p ? p : "/";
  v->authority = a ? a : r->authority ? r->authority : "";
  v->scheme = s ? s : r->scheme ? r->scheme : "http";
  v->nsteps = 0;
  for (unsigned i = 0; i < r->nsteps; i++) {
    if (r->st[i] == H2T_IFS_DONE)
      break;
    v->st[v->nsteps] = r->st[i];
    v->t[v->nsteps++] = r->start_us + r->dt[i];
  }
  v->goaway = r->goaway;
  v->goaway_has_code = 1;
  v->goaway_t = r->goaway_us;
  v->goaway_code = r->goaway_code;
  v->goaway_last = r->goaway_last;
  v->goaway_by_peer = r->goaway_by_peer;
  v->reset = r->reset;
  v->reset_t = r->reset_us;
  v->reset_code = r->reset_code;
  v->reset_by_peer = r->reset_by_peer;
  v->trace = r->trace;
}

/* A ring entry; info is scratch space the view points into. */
static void view_of_entry(const struct inflight_entry *e, h2t_inflight_info *info,
                          xview *v) {
  h2t__ife_to_info(e, h2t_now_us(), info);
  memset(v, 0, sizeof *v);
  v->id = info->id;
  v->kind = info->kind;
  v->conn_id = info->conn_id;
  v->stream_id = info->stream_id;
  v->start_us = info->start_us;
  v->end_us = info->end_us;
  v->status = info->http_status;
  v->error = info->error;
  v->bytes_in = info->bytes_in;
  v->bytes_out = info->bytes_out;
  v->method = info->method;
  v->scheme = info->scheme[0] ? info->scheme : "http";
  v->authority = info->authority;
  v->path = info->path[0] ? info->path : "/";
  v->trace = info->trace;
  /* steps the ring forgot (history_dropped) count as queued from start */
  if (info->history_dropped && info->nhistory) {
    v->st[v->nsteps] = H2T_IFS_QUEUED;
    v->t[v->nsteps++] = info->start_us;
  }
  for (unsigned i = 0; i < info->nhistory && v->nsteps < XSTEPS; i++) {
    if (info->history[i].state == H2T_IFS_DONE)
      break;
    v->st[v->nsteps] = (uint8_t)info->history[i].state;
    v->t[v->nsteps++] = info->history[i].entered_us;
  }
  if (e->goaway_us) {
    v->goaway = 1;
    v->goaway_t = e->start_us + e->goaway_us - 1;
    v->goaway_by_peer = (e->flags & IFE_GOAWAY_BY_PEER) != 0;
    v->goaway_last = -1;
  }
  if (e->reset_code) {
    v->reset = 1;
    v->reset_t = v->end_us; /* the reset ended it */
    v->reset_code = e->reset_code == 255 ? 254 : e->reset_code - 1u;
    v->reset_by_peer = (e->flags & IFE_RESET_BY_PEER) != 0;
  }
}

/* --- formatting -------------------------------------------------------------- */

typedef h2t__jbuf jbuf;

static void raws(jbuf *j, const char *s) { h2t__json_raw(j, s, strlen(s)); }

static void strv(jbuf *j, const char *s) { h2t__json_str(j, s, strlen(s)); }

#define key(j, k) h2t__json_key(j, k)

static void kstr(jbuf *j, const char *k, const char *s) {
  key(j, k);
  strv(j, s);
}

#define kint(j, k, v) h2t__json_int(j, k, v)
#define ku64(j, k, v) h2t__json_u64(j, k, v)
#define kbool(j, k, v) h2t__json_bool(j, k, v)

/* Milliseconds with µs precision, from µs; -1 stays -1. */
static void kms(jbuf *j, const char *k, int64_t us) {
  char b[32];
  int n = us < 0 ? snprintf(b, sizeof b, "-1")
                 : snprintf(b, sizeof b, "%lld.%03lld", (long long)(us / 1000),
                            (long long)(us % 1000));
  key(j, k);
  h2t__json_raw(j, b, (size_t)n);
}

/* Open and close objects and arrays; fields restart inside. */
static int open_obj(jbuf *j, const char *k, char c) {
  if (k)
    key(j, k);
  else if (j->fields++)
    h2t__json_rawc(j, ',');
  h2t__json_rawc(j, c);
  int saved = j->fields;
  j->fields = 0;
  return saved;
}

static void close_obj(jbuf *j, int saved, char c) {
  h2t__json_rawc(j, c);
  j->fields = saved;
}

static uint64_t step_end(const xview *v, unsigned i) {
  uint64_t e = i + 1 < v->nsteps ? v->t[i + 1] : v->end_us;
  return e > v->t[i] ? e : v->t[i];
}

/* HAR phase of a state, for either kind of request. */
enum { P_BLOCKED, P_DNS, P_CONNECT, P_SSL, P_SEND, P_WAIT, P_RECEIVE, P_COUNT };

static int har_phase(unsigned st) {
  switch (st) {
  case H2T_IFS_QUEUED:
  case H2T_IFS_WAIT_STREAM:
  case H2T_IFS_RETRYING:
    return P_BLOCKED;
  case H2T_IFS_DNS:
    return P_DNS;
  case H2T_IFS_CONNECTING:
    return P_CONNECT;
  case H2T_IFS_TLS:
    return P_SSL;
  case H2T_IFS_SENDING:
  case H2T_IFS_WAIT_CONTINUE:
  case H2T_IFS_FLOW_BLOCKED:
  case H2T_IFS_READ_HEADERS: /* served: receiving the request */
  case H2T_IFS_READ_BODY:
    return P_SEND;
  case H2T_IFS_WAIT_RESPONSE:
  case H2T_IFS_HANDLER:
    return P_WAIT;
  default: /* receiving, writing, flow-blocked writing, canceling */
    return P_RECEIVE;
  }
}

static void iso_time(char *b, size_t len, uint64_t wall_us) {
  time_t s = (time_t)(wall_us / 1000000);
  struct tm tm;
  gmtime_r(&s, &tm);
  size_t n = strftime(b, len, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(b + n, len - n, ".%03uZ", (unsigned)(wall_us / 1000 % 1000));
}

static void har_entry(jbuf *j, const xview *v, int64_t wall_off) {
  int64_t ph[P_COUNT];
  int seen[P_COUNT] = {0};
  memset(ph, 0, sizeof ph);
  for (unsigned i = 0; i < v->nsteps; i++) {
    int p = har_phase(v->st[i]);
    seen[p] = 1;
    ph[p] += (int64_t)(step_end(v, i) - v->t[i]);
  }
  /* ssl is part of connect (HAR 1.2); a phase never entered is -1, but
   * send, wait and receive are required numbers: 0 */
  int64_t connect = seen[P_CONNECT] || seen[P_SSL] ? ph[P_CONNECT] + ph[P_SSL] : -1;
  int64_t total = ph[P_BLOCKED] + ph[P_DNS] + (connect > 0 ? connect : 0) +
                  ph[P_SEND] + ph[P_WAIT] + ph[P_RECEIVE];
  char date[40], num[24];
  iso_time(date, sizeof date, (uint64_t)((int64_t)v->start_us + wall_off));

  int e = open_obj(j, NULL, '{');
  kstr(j, "startedDateTime", date);
  kms(j, "time", total);

  int rq = open_obj(j, "request", '{');
  kstr(j, "method", v->method);
  key(j, "url");
  {
    /* scheme://authority/path, escaped as one string */
    size_t sl = strlen(v->scheme), al = strlen(v->authority), pl = strlen(v->path);
    char stack[512], *u = sl + al + pl + 4 <= sizeof stack ? stack : malloc(sl + al + pl + 4);
    if (u) {
      memcpy(u, v->scheme, sl);
      memcpy(u + sl, "://", 3);
      memcpy(u + sl + 3, v->authority, al);
      memcpy(u + sl + 3 + al, v->path, pl + 1);
      strv(j, u);
      if (u != stack)
        free(u);
    } else
      strv(j, v->path);
  }
  kstr(j, "httpVersion", "HTTP/2");
  int a = open_obj(j, "cookies", '[');
  close_obj(j, a, ']');
  a = open_obj(j, "headers", '[');
  for (size_t i = 0; i < v->hdrs_len;) {
    const char *n = v->hdrs + i, *val = n + strlen(n) + 1;
    int h = open_obj(j, NULL, '{');
    kstr(j, "name", n);
    kstr(j, "value", val);
    close_obj(j, h, '}');
    i = (size_t)(val + strlen(val) + 1 - v->hdrs);
  }
  close_obj(j, a, ']');
  a = open_obj(j, "queryString", '[');
  close_obj(j, a, ']');
  kint(j, "headersSize", -1);
  ku64(j, "bodySize", v->bytes_out);
  close_obj(j, rq, '}');

  int rs = open_obj(j, "response", '{');
  kint(j, "status", v->status);
  kstr(j, "statusText", "");
  kstr(j, "httpVersion", "HTTP/2");
  a = open_obj(j, "cookies", '[');
  close_obj(j, a, ']');
  a = open_obj(j, "headers", '[');
  close_obj(j, a, ']');
  int c = open_obj(j, "content", '{');
  ku64(j, "size", v->bytes_in);
  kstr(j, "mimeType", "");
  close_obj(j, c, '}');
  kstr(j, "redirectURL", "");
  kint(j, "headersSize", -1);
  ku64(j, "bodySize", v->bytes_in);
  if (v->error)
    kstr(j, "_error", h2t_errname(v->error));
  close_obj(j, rs, '}');

  c = open_obj(j, "cache", '{');
  close_obj(j, c, '}');
  int t = open_obj(j, "timings", '{');
  kms(j, "blocked", seen[P_BLOCKED] ? ph[P_BLOCKED] : -1);
  kms(j, "dns", seen[P_DNS] ? ph[P_DNS] : -1);
  kms(j, "connect", connect);
  kms(j, "ssl", seen[P_SSL] ? ph[P_SSL] : -1);
  kms(j, "send", ph[P_SEND]);
  kms(j, "wait", ph[P_WAIT]);
  kms(j, "receive", ph[P_RECEIVE]);
  close_obj(j, t, '}');
  snprintf(num, sizeof num, "%llu", (unsigned long long)v->conn_id);
  if (v->conn_id)
    kstr(j, "connection", num);
  ku64(j, "_id", v->id);
  kstr(j, "_kind", h2t_inflight_kind_name((h2t_inflight_kind)v->kind));
  kint(j, "_stream", v->stream_id);
  if (v->reset)
    kstr(j, "_reset", h2t_http2_strerror(v->reset_code));
  h2t__json_trace(j, &v->trace, "_trace_id", "_span_id", "_parent_span_id");
  close_obj(j, e, '}');
}

/* Chrome lanes: pid = connection (0: none), tid = stream, or for a request
 * that never had one, a number of its own past any stream id. */
static int64_t lane_tid(const xview *v) {
  return v->stream_id > 0 ? v->stream_id
                          : (int64_t)0x80000000 + (int64_t)(v->id & 0x3fffffff);
}

static void chrome_head(jbuf *j, const char *ph, const char *name,
                        const char *cat, uint64_t pid, int64_t tid) {
  j->fields = 0;
  key(j, "name");
  strv(j, name);
  if (cat)
    kstr(j, "cat", cat);
  kstr(j, "ph", ph);
  ku64(j, "pid", pid);
  kint(j, "tid", tid);
}

static void ev_sep(jbuf *j, int *first) {
  if (!*first)
    h2t__json_rawc(j, ',');
  *first = 0;
  h2t__json_rawc(j, '{');
}

static void chrome_entry(jbuf *j, const xview *v, int name_conn, int with_goaway,
                         int *first) {
  uint64_t pid = v->conn_id;
  int64_t tid = lane_tid(v);
  char name[96];
  if (name_conn) {
    ev_sep(j, first);
    chrome_head(j, "M", "process_name", NULL, pid, 0);
    if (pid)
      snprintf(name, sizeof name, "conn #%llu %s%s", (unsigned long long)pid,
               v->authority, v->kind == H2T_INFLIGHT_SERVER ? " (served)" : "");
    else
      snprintf(name, sizeof name, "no connection");
    int a = open_obj(j, "args", '{');
    kstr(j, "name", name);
    close_obj(j, a, '}');
    h2t__json_rawc(j, '}');
    ev_sep(j, first);
    chrome_head(j, "M", "process_sort_index", NULL, pid, 0);
    a = open_obj(j, "args", '{');
    ku64(j, "sort_index", pid);
    close_obj(j, a, '}');
    h2t__json_rawc(j, '}');
  }
  ev_sep(j, first);
  chrome_head(j, "M", "thread_name", NULL, pid, tid);
  if (v->stream_id > 0)
    snprintf(name, sizeof name, "stream %d", (int)v->stream_id);
  else
    snprintf(name, sizeof name, "request %llu (no stream)",
             (unsigned long long)v->id);
  int a = open_obj(j, "args", '{');
  kstr(j, "name", name);
  close_obj(j, a, '}');
  h2t__json_rawc(j, '}');

  /* the request, with its phases nested in it */
  ev_sep(j, first);
  j->fields = 0;
  key(j, "name");
  {
    size_t ml = strlen(v->method), pl = strlen(v->path);
    char stack[320], *s = ml + pl + 2 <= sizeof stack ? stack : malloc(ml + pl + 2);
    if (s) {
      memcpy(s, v->method, ml);
      s[ml] = ' ';
      memcpy(s + ml + 1, v->path, pl + 1);
      strv(j, s);
      if (s != stack)
        free(s);
    } else
      strv(j, v->path);
  }
  kstr(j, "cat", "request");
  kstr(j, "ph", "X");
  ku64(j, "ts", v->start_us);
  ku64(j, "dur", v->end_us > v->start_us ? v->end_us - v->start_us : 0);
  ku64(j, "pid", pid);
  kint(j, "tid", tid);
  a = open_obj(j, "args", '{');
  ku64(j, "req_id", v->id);
  kstr(j, "kind", h2t_inflight_kind_name((h2t_inflight_kind)v->kind));
  kstr(j, "authority", v->authority);
  kint(j, "status", v->status);
  kstr(j, "error", h2t_errname(v->error));
  ku64(j, "bytes_in", v->bytes_in);
  ku64(j, "bytes_out", v->bytes_out);
  h2t__json_trace(j, &v->trace, "trace_id", "span_id", "parent_span_id");
  close_obj(j, a, '}');
  h2t__json_rawc(j, '}');
  for (unsigned i = 0; i < v->nsteps; i++) {
    ev_sep(j, first);
    chrome_head(j, "X", h2t_inflight_state_name((h2t_inflight_state)v->st[i]),
                "phase", pid, tid);
    ku64(j, "ts", v->t[i]);
    ku64(j, "dur", step_end(v, i) - v->t[i]);
    a = open_obj(j, "args", '{');
    ku64(j, "req_id", v->id);
    close_obj(j, a, '}');
    h2t__json_rawc(j, '}');
  }
  if (v->reset) {
    ev_sep(j, first);
    chrome_head(j, "i", "RST_STREAM", "h2", pid, tid);
    kstr(j, "s", "t");
    ku64(j, "ts", v->reset_t);
    a = open_obj(j, "args", '{');
    kstr(j, "error_code", h2t_http2_strerror(v->reset_code));
    kbool(j, "by_peer", v->reset_by_peer);
    ku64(j, "req_id", v->id);
    close_obj(j, a, '}');
    h2t__json_rawc(j, '}');
  }
  if (with_goaway) {
    ev_sep(j, first);
    chrome_head(j, "i", "GOAWAY", "h2", pid, 0);
    kstr(j, "s", "p");
    ku64(j, "ts", v->goaway_t);
    a = open_obj(j, "args", '{');
    if (v->goaway_has_code)
      kstr(j, "error_code", h2t_http2_strerror(v->goaway_code));
    if (v->goaway_last >= 0)
      kint(j, "last_stream_id", v->goaway_last);
    kbool(j, "by_peer", v->goaway_by_peer);
    close_obj(j, a, '}');
    h2t__json_rawc(j, '}');
  }
}

/* --- the reader ------------------------------------------------------------- */

#define SEEN 64 /* connections recently named / whose GOAWAY was written */

struct h2t_export_reader {
  const h2t_export *exp; /* NULL: the ring */
  h2t_export_format fmt;
  int stage;             /* 0 head, 1 requests, 2 tail, 3 end */
  int first;             /* no element written yet */
  uint64_t seq, end, gen;
  int64_t wall_off;      /* realtime µs - h2t_now_us() */
  char *buf;
  size_t cap, len, off;
  uint64_t named[SEEN], gone[SEEN];
  unsigned nnamed, ngone;
  struct inflight_entry ecopy;
  h2t_inflight_info info;
  xview view;
  int redact_query;
  char *rpath; /* the view's path with its query redacted */
  size_t rcap;
};

static int seen_before(uint64_t *ring, unsigned *n, uint64_t id) {
  unsigned k = *n < SEEN ? *n : SEEN;
  for (unsigned i = 0; i < k; i++)
    if (ring[i] == id)
      return 1;
  ring[(*n)++ % SEEN] = id;
  return 0;
}

int h2t_export_reader_new(h2t_export_reader **out, const h2t_export *exp,
                          h2t_export_format fmt) {
  if (!out)
    return H2T_ERR_INVALID_ARG;
  *out = NULL;
  if (fmt != H2T_EXPORT_HAR && fmt != H2T_EXPORT_CHROME)
    return H2T_ERR_INVALID_ARG;
  h2t_export_reader *r = calloc(1, sizeof *r);
  if (!r)
    return H2T_ERR_NOMEM;
  r->exp = exp;
  r->fmt = fmt;
  r->first = 1;
  if (exp) {
    r->seq = first_seq(exp);
    r->end = exp->next_seq;
  } else
    h2t__ifl_recent_range(&r->gen, &r->seq, &r->end);
  struct timespec rt;
  clock_gettime(CLOCK_REALTIME, &rt);
  r->wall_off = ((int64_t)rt.tv_sec * 1000000 + rt.tv_nsec / 1000) -
                (int64_t)h2t_now_us();
  *out = r;
  return 0;
}

void h2t_export_reader_del(h2t_export_reader *r) {
  if (!r)
    return;
  free(r->buf);
  free(r->rpath);
  free(r);
}

int h2t_export_reader_redact_query(h2t_export_reader *r, int on) {
  if (!r)
    return H2T_ERR_INVALID_ARG;
  r->redact_query = on != 0;
  return 0;
}

/* "/p?q" -> "/p?redacted" in the reader's buffer (as is if that fails). */
static void redact_view(h2t_export_reader *r, xview *v) {
  const char *q = strchr(v->path, '?');
  if (!q)
    return;
  size_t n = (size_t)(q - v->path) + 1, need = n + sizeof "redacted";
  if (need > r->rcap) {
    char *p = realloc(r->rpath, need);
    if (!p)
      return;
    r->rpath = p;
    r->rcap = need;
  }
  memcpy(r->rpath, v->path, n);
  memcpy(r->rpath + n, "redacted", sizeof "redacted");
  v->path = r->rpath;
}

/* The next request's view, or NULL at the end. */
static const xview *next_view(h2t_export_reader *r) {
  while (r->seq < r->end) {
    uint64_t seq = r->seq++;
    if (r->exp) {
      const xrec *x = rec_at(r->exp, seq);
      if (!x)
        continue;
      view_of_rec(x, &r->view);
    } else {
      if (h2t__ifl_recent_at(r->gen, seq, &r->ecopy) != 0)
        continue; /* overwritten meanwhile */
      view_of_entry(&r->ecopy, &r->info, &r->view);
    }
    if (r->redact_query)
      redact_view(r, &r->view);
    return &r->view;
  }
  return NULL;
}

static void fmt_head(h2t_export_reader *r, jbuf *j) {
  if (r->fmt == H2T_EXPORT_HAR) {
    raws(j, "{\"log\":{\"version\":\"1.2\",\"creator\":{\"name\":\"h2trace\","
            "\"version\":");
    strv(j, h2t_version());
    raws(j, "},\"entries\":[");
  } else
    raws(j, "{\"traceEvents\":[");
}

static void fmt_tail(h2t_export_reader *r, jbuf *j) {
  if (r->fmt == H2T_EXPORT_HAR)
    raws(j, "]}}\n");
  else {
    raws(j, "],\"displayTimeUnit\":\"ms\",\"otherData\":{\"creator\":\"h2trace ");
    raws(j, h2t_version());
    raws(j, "\"}}\n");
  }
}

static void fmt_view(h2t_export_reader *r, jbuf *j, const xview *v, int name_conn,
                     int goaway, int *first) {
  if (r->fmt == H2T_EXPORT_HAR) {
    j->fields = !*first;
    *first = 0;
    har_entry(j, v, r->wall_off);
  } else
    chrome_entry(j, v, name_conn, goaway, first);
}

/* Fill r->buf with the next piece; 0, 1 at the end, or H2T_ERR_NOMEM. */
static int produce(h2t_export_reader *r) {
  const xview *v = NULL;
  int name_conn = 0, goaway = 0;
  if (r->stage == 1 && !(v = next_view(r)))
    r->stage = 2;
  if (r->stage == 3)
    return 1;
  if (v && r->fmt == H2T_EXPORT_CHROME) {
    name_conn = !seen_before(r->named, &r->nnamed, v->conn_id);
    goaway = v->goaway && !seen_before(r->gone, &r->ngone, v->conn_id);
  }
  for (;;) {
    jbuf j = {r->buf, r->cap, 0, 0};
    int first = r->first;
    if (r->stage == 0)
      fmt_head(r, &j);
    else if (r->stage == 2)
      fmt_tail(r, &j);
    else
      fmt_view(r, &j, v, name_conn, goaway, &first);
    if (j.n < r->cap) {
      r->len = j.n;
      r->off = 0;
      r->first = first;
      r->stage = r->stage == 1 ? 1 : r->stage + 1;
      return 0;
    }
    /* one request did not fit: grow to it and write it again */
    size_t cap = j.n + 1 > 2 * r->cap ? j.n + 1 : 2 * r->cap;
    char *b = realloc(r->buf, cap < 4096 ? 4096 : cap);
    if (!b)
      return H2T_ERR_NOMEM;
    r->buf = b;
    r->cap = cap < 4096 ? 4096 : cap;
  }
}

ssize_t h2t_export_reader_read(h2t_export_reader *r, char *buf, size_t len) {
  if (!r || (!buf && len))
    return H2T_ERR_INVALID_ARG;
  size_t got = 0;
  while (got < len) {
    if (r->off == r->len) {
      int rc = produce(r);
      if (rc < 0)
        return got ? (ssize_t)got : rc;
      if (rc == 1)
        break;
      continue;
    }
    size_t n = r->len - r->off < len - got ? r->len - r->off : len - got;
    memcpy(buf + got, r->buf + r->off, n);
    r->off += n;
    got += n;
  }
  return (ssize_t)got;
}

int h2t_export_write(const h2t_export *exp, h2t_export_format fmt,
                     h2t_export_write_fn fn, void *user) {
  if (!fn)
    return H2T_ERR_INVALID_ARG;
  h2t_export_reader *r;
  int rc = h2t_export_reader_new(&r, exp, fmt);
  if (rc)
    return rc;
  /* hand out whole pieces: one call per request, no copy */
  for (;;) {
    if (r->off == r->len) {
      rc = produce(r);
      if (rc) {
        rc = rc == 1 ? 0 : rc;
        break;
      }
      continue;
    }
    if (fn(r->buf + r->off, r->len - r->off, user)) {
      rc = H2T_ERR_CALLBACK;
      break;
    }
    r->off = r->len;
  }
  h2t_export_reader_del(r);
  return rc;
}
