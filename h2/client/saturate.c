/*
 * Replica-aware dispatch (saturate.h), above the client: it uses the public
 * client API only, plus the in-flight table for its tasks.
 *
 * FREE_SLOT keeps one FIFO of tasks; whenever a worker is free anywhere (and
 * the total bound allows), the head task goes to the freest replica it has
 * not tried yet, else to any free one.  The other policies choose a replica
 * when the task is queued (or retried) and the task then waits in that
 * replica's own FIFO, as a client that picks first and waits after does.
 */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#include <h2trace/saturate.h>
#include "trace/abi_int.h"
#include "trace/trace_int.h"

#define MAX_REPLICAS 64

typedef struct task {
  TAILQ_ENTRY(task) link; /* a queue (global or a replica's) */
  TAILQ_ENTRY(task) all;
  h2t_saturate *s;
  uint64_t id;
  h2t_request_opts o;     /* method, headers, body point into `copy` */
  char *copy;             /* path, method, header strings, body */
  const char *path;
  h2t_saturate_done_cb done;
  void *user;
  uint64_t t_submit, t_wait, waited_us;
  unsigned attempts;
  uint64_t tried;         /* replicas tried, one bit each */
  int replica;            /* of the attempt under way, or the last */
  int queued_on;          /* -1: the global queue; -2: none */
  struct inflight_entry *ife;
  h2t_request *req;       /* the attempt under way */
  int status;
  uint8_t *body;
  size_t body_len, body_cap;
  char *url;
  size_t url_cap;
} task;

TAILQ_HEAD(task_list, task);

typedef struct replica {
  char *base;             /* "http://host:port", no trailing slash */
  const char *hostport;   /* into base */
  uint32_t workers, busy;
  struct task_list queue; /* policies other than FREE_SLOT */
  size_t nqueued;
} replica;

struct h2t_saturate {
  h2t_client *client;
  replica r[MAX_REPLICAS];
  size_t n;
  uint32_t max_inflight, active, max_tries;
  h2t_saturate_policy policy;
  unsigned rr, seed;
  void (*on_dispatch)(const h2t_saturate_dispatch *d, void *user);
  void *user;
  struct task_list queue; /* FREE_SLOT */
  size_t nqueued;         /* everywhere */
  struct task_list tasks; /* every task not done */
  size_t pending;
  int closing;
  char authority[128];    /* for the in-flight table: "3 replicas" */
};

static void dispatch(h2t_saturate *s);

const char *h2t_saturate_policy_name(h2t_saturate_policy p) {
  switch (p) {
  case H2T_SATURATE_FREE_SLOT:
    return "free_slot";
  case H2T_SATURATE_RANDOM:
    return "random";
  case H2T_SATURATE_ROUND_ROBIN:
    return "round_robin";
  case H2T_SATURATE_LEAST_OUTSTANDING:
    return "least_outstanding";
  }
  return NULL;
}

/* --- choosing ------------------------------------------------------------- */

static int has_room(const h2t_saturate *s, size_t k) {
  return s->r[k].busy < s->r[k].workers;
}

/* Is a less loaded than b (busy/workers)? */
static int less_loaded(const replica *a, const replica *b) {
  return (uint64_t)a->busy * b->workers < (uint64_t)b->busy * a->workers;
}

/* The replicas t should not go to: those it tried, while any remains
 * untried (a retry goes elsewhere); none once it has tried them all. */
static uint64_t avoid_of(const h2t_saturate *s, const task *t) {
  uint64_t all = s->n == 64 ? UINT64_MAX : (UINT64_C(1) << s->n) - 1;
  return (t->tried & all) == all ? 0 : t->tried;
}

/* FREE_SLOT: the freest replica with room that t may use; -1 if none. */
static int pick_free(const h2t_saturate *s, const task *t) {
  uint64_t avoid = avoid_of(s, t);
  int best = -1;
  for (size_t k = 0; k < s->n; k++) {
    if (!has_room(s, k) || ((avoid >> k) & 1))
      continue;
    if (best < 0 || less_loaded(&s->r[k], &s->r[best]))
      best = (int)k;
  }
  return best;
}

/* The other policies, at queueing time (avoiding as avoid_of says). */
static int pick_by_policy(h2t_saturate *s, const task *t) {
  uint64_t avoid = avoid_of(s, t);
  size_t cand[MAX_REPLICAS] = {0}, nc = 0;
  for (size_t k = 0; k < s->n; k++)
    if (!((avoid >> k) & 1))
      cand[nc++] = k;
  switch (s->policy) {
  case H2T_SATURATE_RANDOM:
    return (int)cand[rand_r(&s->seed) % nc];
  case H2T_SATURATE_ROUND_ROBIN:
    for (size_t i = 0; i < s->n; i++) {
      size_t k = s->rr++ % s->n;
      if (!((avoid >> k) & 1))
        return (int)k;
    }
    return (int)cand[0];
  default: { /* LEAST_OUTSTANDING */
    size_t best = cand[0];
    for (size_t i = 1; i < nc; i++) {
      const replica *a = &s->r[cand[i]], *b = &s->r[best];
      if ((uint64_t)(a->busy + a->nqueued) * b->workers <
          (uint64_t)(b->busy + b->nqueued) * a->workers)
        best = cand[i];
    }
    return (int)best;
  }
  }
}

/* --- a task's life -------------------------------------------------------- */

static void set_status(task *t, const char *fmt, int k) {
  if (!t->ife)
    return;
  char buf[160];
  snprintf(buf, sizeof buf, fmt, k, t->s->r[k].hostport);
  h2t__inflight_set_status(t->ife, buf);
}

static void enqueue(h2t_saturate *s, task *t) {
  t->t_wait = h2t_now_us();
  if (s->policy == H2T_SATURATE_FREE_SLOT) {
    TAILQ_INSERT_TAIL(&s->queue, t, link);
    t->queued_on = -1;
    if (t->ife)
      h2t__inflight_set_status(t->ife, "waiting for a free worker");
  } else {
    int k = pick_by_policy(s, t);
    TAILQ_INSERT_TAIL(&s->r[k].queue, t, link);
    s->r[k].nqueued++;
    t->queued_on = k;
    set_status(t, "waiting for replica %d (%s)", k);
  }
  s->nqueued++;
}

static void finish(task *t, int error) {
  h2t_saturate *s = t->s;
  h2t_saturate_result res = {
      .task_id = t->id,
      .error = error,
      .status = t->status,
      .body = t->body ? t->body : (const uint8_t *)"",
      .body_len = t->body_len,
      .replica = t->replica < 0 ? 0 : (size_t)t->replica,
      .attempts = t->attempts,
      .total_us = h2t_now_us() - t->t_submit,
      .waited_us = t->waited_us,
  };
  TAILQ_REMOVE(&s->tasks, t, all);
  s->pending--;
  h2t__inflight_end(t->ife, error);
  if (t->done)
    t->done(&res, t->user);
  free(t->body);
  free(t->url);
  free(t->copy);
  free(t);
}

static int on_headers(h2t_request *req, int status, const h2t_header *h,
                      size_t n, void *user) {
  ((task *)user)->status = status;
  return 0;
}

static int on_data(h2t_request *req, const uint8_t *d, size_t len,
                   void *user) {
  task *t = user;
  /* out of memory: the attempt fails with H2T_ERR_CALLBACK */
  return h2t__buf_append(NULL, &t->body, &t->body_len, &t->body_cap, 256, d,
                         len) != 0;
}

static int retryable(int error, int status) {
  return error != 0 || status == 502 || status == 503 || status == 504;
}

/* An attempt ended: retry elsewhere, or finish; then fill freed slots. */
static void attempt_done(task *t, int error) {
  h2t_saturate *s = t->s;
  t->req = NULL;
  s->r[t->replica].busy--;
  s->active--;
  if (!s->closing && t->attempts < s->max_tries &&
      retryable(error, t->status)) {
    t->status = 0;
    t->body_len = 0;
    enqueue(s, t);
  } else {
    finish(t, error);
  }
  if (!s->closing)
    dispatch(s);
}

static void on_done(h2t_request *req, int error, void *user) {
  attempt_done(user, error);
}

/* Run t on replica k now. */
static void start(h2t_saturate *s, task *t, int k) {
  replica *r = &s->r[k];
  uint64_t now = h2t_now_us();
  uint64_t waited = now - t->t_wait;
  t->waited_us += waited;
  t->attempts++;
  t->tried |= UINT64_C(1) << k;
  t->replica = k;
  r->busy++;
  s->active++;
  s->nqueued--;
  t->queued_on = -2;
  if (s->on_dispatch) {
    h2t_saturate_dispatch d = {
        .task_id = t->id, .replica = (size_t)k, .origin = r->base,
        .attempt = t->attempts, .waited_us = waited, .policy = s->policy,
        .busy = r->busy, .workers = r->workers, .queued = s->nqueued};
    s->on_dispatch(&d, s->user);
  }
  set_status(t, "on replica %d (%s)", k);
  size_t need = strlen(r->base) + strlen(t->path) + 1;
  if (need > t->url_cap) {
    char *u = realloc(t->url, need);
    if (!u) {
      attempt_done(t, H2T_ERR_NOMEM);
      return;
    }
    t->url = u;
    t->url_cap = need;
  }
  memcpy(t->url, r->base, strlen(r->base));
  strcpy(t->url + strlen(r->base), t->path);
  t->o.url = t->url;
  int rv = h2t_request_submit(s->client, &t->o, &t->req);
  if (rv != 0)
    attempt_done(t, rv); /* no callback will come */
}

static void dispatch(h2t_saturate *s) {
  if (s->policy == H2T_SATURATE_FREE_SLOT) {
    /* FIFO, except that a retry whose untried replicas are all busy lets
     * the tasks behind it use the free ones (looking a bounded way ahead) */
    task *t = TAILQ_FIRST(&s->queue);
    for (int ahead = 0; t && ahead < 64 && s->active < s->max_inflight;) {
      task *next = TAILQ_NEXT(t, link);
      int k = pick_free(s, t);
      if (k >= 0) {
        TAILQ_REMOVE(&s->queue, t, link);
        start(s, t, k);
        next = TAILQ_FIRST(&s->queue); /* start may have run callbacks */
        ahead = 0;
      } else if (!t->tried) {
        return; /* a first attempt with no room: nobody behind has room */
      } else {
        ahead++;
      }
      t = next;
    }
    return;
  }
  for (size_t k = 0; k < s->n; k++) {
    replica *r = &s->r[k];
    task *t;
    while (s->active < s->max_inflight && has_room(s, k) &&
           (t = TAILQ_FIRST(&r->queue))) {
      TAILQ_REMOVE(&r->queue, t, link);
      r->nqueued--;
      start(s, t, (int)k);
    }
  }
}

/* --- API ------------------------------------------------------------------ */

int h2t_saturate_new(h2t_saturate **out, const h2t_saturate_config *cfgp) {
  if (!out)
    return H2T_ERR_INVALID_ARG;
  *out = NULL;
  h2t_saturate_config c;
  if (h2t__struct_in(&c, sizeof c, cfgp, H2T__SATURATE_CONFIG_V1))
    return H2T_ERR_INVALID_ARG;
  const h2t_saturate_config *cfg = &c;
  if (!cfg->client || !cfg->replicas || cfg->nreplicas < 1 ||
      cfg->nreplicas > MAX_REPLICAS ||
      !h2t_saturate_policy_name(cfg->policy))
    return H2T_ERR_INVALID_ARG;
  h2t_saturate *s = calloc(1, sizeof *s);
  if (!s)
    return H2T_ERR_NOMEM;
  s->client = cfg->client;
  s->n = cfg->nreplicas;
  s->policy = cfg->policy;
  s->seed = cfg->seed ? cfg->seed : 1;
  s->on_dispatch = cfg->on_dispatch;
  s->user = cfg->user;
  TAILQ_INIT(&s->queue);
  TAILQ_INIT(&s->tasks);
  uint32_t total = 0;
  int rv = 0;
  for (size_t k = 0; k < s->n && !rv; k++) {
    replica *r = &s->r[k];
    const char *u = cfg->replicas[k];
    TAILQ_INIT(&r->queue);
    r->workers = cfg->workers && cfg->workers[k] ? cfg->workers[k]
                 : cfg->workers_each             ? cfg->workers_each
                                                 : 4;
    total += r->workers;
    size_t skip = !u                              ? 0
                  : !strncmp(u, "http://", 7)     ? 7
                  : !strncmp(u, "https://", 8)    ? 8
                                                  : 0;
    size_t len = u ? strlen(u) : 0;
    while (len > skip && u[len - 1] == '/')
      len--;
    /* a base URL: scheme://authority, no path */
    if (!skip || len == skip || memchr(u + skip, '/', len - skip) ||
        memchr(u + skip, '?', len - skip)) {
      rv = H2T_ERR_INVALID_ARG;
      break;
    }
    if (!(r->base = malloc(len + 1))) {
      rv = H2T_ERR_NOMEM;
      break;
    }
    memcpy(r->base, u, len);
    r->base[len] = '\0';
    r->hostport = r->base + skip;
  }
  if (rv) {
    for (size_t k = 0; k < s->n; k++)
      free(s->r[k].base);
    free(s);
    return rv;
  }
  s->max_inflight = cfg->max_inflight ? cfg->max_inflight : total;
  s->max_tries = cfg->max_tries ? cfg->max_tries : (uint32_t)s->n;
  snprintf(s->authority, sizeof s->authority, "%zu replica%s: %s%s", s->n,
           s->n == 1 ? "" : "s", s->r[0].hostport, s->n > 1 ? ",..." : "");
  *out = s;
  return 0;
}

void h2t_saturate_del(h2t_saturate *s) {
  if (!s)
    return;
  s->closing = 1;
  task *t;
  /* running attempts: cancelling one finishes its task (no retry now) */
  for (t = TAILQ_FIRST(&s->tasks); t;) {
    task *next = TAILQ_NEXT(t, all);
    if (t->req)
      h2t_request_cancel(t->req); /* frees t */
    t = next;
  }
  while ((t = TAILQ_FIRST(&s->tasks))) {
    if (t->queued_on == -1)
      TAILQ_REMOVE(&s->queue, t, link);
    else if (t->queued_on >= 0) {
      TAILQ_REMOVE(&s->r[t->queued_on].queue, t, link);
      s->r[t->queued_on].nqueued--;
    }
    s->nqueued--;
    finish(t, H2T_ERR_CANCELED);
  }
  for (size_t k = 0; k < s->n; k++)
    free(s->r[k].base);
  free(s);
}

size_t h2t_saturate_pending(const h2t_saturate *s) {
  return s ? s->pending : 0;
}

int h2t_saturate_submit(h2t_saturate *s, const h2t_request_opts *opts,
                        h2t_saturate_done_cb done, void *user,
                        uint64_t *task_id) {
  if (task_id)
    *task_id = 0;
  h2t_request_opts o;
  if (!s || s->closing ||
      h2t__struct_in(&o, sizeof o, opts, H2T__REQUEST_OPTS_V1))
    return H2T_ERR_INVALID_ARG;
  if (!o.url || o.url[0] != '/' || o.body_read || (o.body_len && !o.body) ||
      (o.nheaders && !o.headers))
    return H2T_ERR_INVALID_ARG;
  /* one allocation for what the task keeps of the caller's options: the
   * header array, then the path, method, header strings and body */
  size_t need = strlen(o.url) + 1 + (o.method ? strlen(o.method) + 1 : 0) +
                o.body_len;
  for (size_t i = 0; i < o.nheaders; i++) {
    if (!o.headers[i].name || !o.headers[i].value)
      return H2T_ERR_INVALID_ARG;
    need += strlen(o.headers[i].name) + strlen(o.headers[i].value) + 2;
  }
  task *t = calloc(1, sizeof *t);
  char *p = malloc(o.nheaders * sizeof(h2t_header) + need);
  if (!t || !p) {
    free(t);
    free(p);
    return H2T_ERR_NOMEM;
  }
  t->copy = p;
  h2t_header *hs = (h2t_header *)(void *)p;
  p += o.nheaders * sizeof(h2t_header);
#define KEEP(dst, src)                                                         \
  do {                                                                         \
    size_t l_ = strlen(src) + 1;                                               \
    memcpy(p, src, l_);                                                        \
    dst = p;                                                                   \
    p += l_;                                                                   \
  } while (0)
  KEEP(t->path, o.url);
  if (o.method)
    KEEP(o.method, o.method);
  for (size_t i = 0; i < o.nheaders; i++) {
    KEEP(hs[i].name, o.headers[i].name);
    KEEP(hs[i].value, o.headers[i].value);
  }
#undef KEEP
  if (o.body_len) {
    memcpy(p, o.body, o.body_len);
    o.body = p;
  }
  o.headers = o.nheaders ? hs : NULL;
  o.on_headers = on_headers;
  o.on_data = on_data;
  o.on_done = on_done;
  o.user = t;
  t->o = o;
  t->s = s;
  t->id = h2t_next_req_id();
  t->done = done;
  t->user = user;
  t->replica = -1;
  t->t_submit = h2t_now_us();
  t->ife = h2t__inflight_begin_at(INFLIGHT_CLIENT, t->id, "TASK", "saturate",
                                  s->authority, t->path, NULL, NULL,
                                  t->t_submit);
  TAILQ_INSERT_TAIL(&s->tasks, t, all);
  s->pending++;
  if (task_id)
    *task_id = t->id;
  enqueue(s, t);
  dispatch(s);
  return 0;
}
