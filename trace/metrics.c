/* Counters for GET /metrics and their Prometheus text exposition (0.0.4).
 * Counting is a relaxed atomic add; formatting happens on the reader. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <h2trace/diag.h>
#include "trace/inflight_int.h"

#define NERR 28 /* 0: ok, 1..27: -7001..-7027, 28: other */

static atomic_uint_fast64_t m_done[2][NERR + 1];
static atomic_uint_fast64_t m_conn_new[H2T_CONN_REASON_COUNT_];
static atomic_uint_fast64_t m_conn_reused[2]; /* [was_idle] */
#define SHED_R 7 /* 0: unknown, then h2t_shed_reason */
#define SHED_A 7 /* 0: unknown, then h2t_shed_action */
static atomic_uint_fast64_t m_shed[SHED_R][SHED_A]; /* [reason][action] */
static atomic_uint_fast64_t m_goaway[2];      /* sent, received */
static atomic_uint_fast64_t m_accepted;
static atomic_int_fast64_t m_writer_queue;

static unsigned err_index(int error) {
  if (!error)
    return 0;
  if (error <= -7001 && error >= -7000 - (NERR - 1))
    return (unsigned)(-error - 7000);
  return NERR;
}

void h2t__metrics_reset(void) {
  for (int k = 0; k < 2; k++)
    for (int i = 0; i <= NERR; i++)
      atomic_store(&m_done[k][i], 0);
  for (int i = 0; i < H2T_CONN_REASON_COUNT_; i++)
    atomic_store(&m_conn_new[i], 0);
  for (int i = 0; i < 2; i++) {
    atomic_store(&m_conn_reused[i], 0);
    atomic_store(&m_goaway[i], 0);
  }
  for (int r = 0; r < SHED_R; r++)
    for (int a = 0; a < SHED_A; a++)
      atomic_store(&m_shed[r][a], 0);
  atomic_store(&m_accepted, 0);
}

void h2t__metrics_request_done(int kind, int error) {
  atomic_fetch_add_explicit(&m_done[kind ? 1 : 0][err_index(error)], 1,
                            memory_order_relaxed);
}

void h2t__metrics_got_conn(const h2t_event *ev) {
  if (ev->u.got_conn.reused)
    atomic_fetch_add_explicit(&m_conn_reused[ev->u.got_conn.was_idle ? 1 : 0],
                              1, memory_order_relaxed);
  else if ((unsigned)ev->u.got_conn.new_reason < H2T_CONN_REASON_COUNT_)
    atomic_fetch_add_explicit(&m_conn_new[ev->u.got_conn.new_reason], 1,
                              memory_order_relaxed);
}

void h2t__metrics_event(const h2t_event *ev) {
  if (!ev)
    return;
  switch (ev->type) {
  case H2T_EV_SRV_LOAD_SHED: {
    unsigned r = (unsigned)ev->u.load_shed.reason;
    unsigned a = (unsigned)ev->u.load_shed.action;
    atomic_fetch_add_explicit(&m_shed[r < SHED_R ? r : 0][a < SHED_A ? a : 0], 1,
                              memory_order_relaxed);
    break;
  }
  case H2T_EV_SRV_GOAWAY_SENT:
    atomic_fetch_add_explicit(&m_goaway[0], 1, memory_order_relaxed);
    break;
  case H2T_EV_GOAWAY:
    atomic_fetch_add_explicit(&m_goaway[ev->u.goaway.by_peer ? 1 : 0], 1,
                              memory_order_relaxed);
    break;
  case H2T_EV_SRV_CONN_ACCEPTED:
    atomic_fetch_add_explicit(&m_accepted, 1, memory_order_relaxed);
    break;
  case H2T_EV_GOT_CONN:
    h2t__metrics_got_conn(ev);
    break;
  default:
    break;
  }
}

void h2t__metrics_writer_queue_add(int64_t delta) {
  atomic_fetch_add_explicit(&m_writer_queue, delta, memory_order_relaxed);
}

struct depth_src {
  struct depth_src *next;
  uint32_t (*fn)(const void *arg);
  const void *arg;
};

static pthread_mutex_t src_mu = PTHREAD_MUTEX_INITIALIZER;
static struct depth_src *srcs;

int h2t__metrics_writer_register(uint32_t (*depth)(const void *arg),
                            const void *arg) {
  struct depth_src *d = malloc(sizeof *d);
  if (!d)
    return H2T_ERR_NOMEM;
  d->fn = depth;
  d->arg = arg;
  pthread_mutex_lock(&src_mu);
  d->next = srcs;
  srcs = d;
  pthread_mutex_unlock(&src_mu);
  return 0;
}

int h2t__metrics_writer_unregister(const void *arg) {
  pthread_mutex_lock(&src_mu);
  struct depth_src **pp = &srcs, *d = NULL;
  for (; *pp; pp = &(*pp)->next)
    if ((*pp)->arg == arg) {
      d = *pp;
      *pp = d->next;
      break;
    }
  pthread_mutex_unlock(&src_mu);
  free(d);
  return d ? 0 : H2T_ERR_NOT_FOUND;
}

static int64_t writer_depth_sum(void) {
  int64_t sum = atomic_load_explicit(&m_writer_queue, memory_order_relaxed);
  pthread_mutex_lock(&src_mu);
  for (struct depth_src *d = srcs; d; d = d->next)
    sum += d->fn(d->arg);
  pthread_mutex_unlock(&src_mu);
  return sum;
}

/* --- exposition ---------------------------------------------------------- */

static void head(FILE *f, const char *name, const char *type,
                 const char *help) {
  fprintf(f, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* "H2T_ERR_CONNECT_REFUSED" -> "connect_refused" */
static void outcome_name(unsigned idx, char *buf, size_t len) {
  if (idx == 0) {
    snprintf(buf, len, "ok");
    return;
  }
  if (idx == NERR) {
    snprintf(buf, len, "other");
    return;
  }
  const char *n = h2t_errname(-(int)(7000 + idx)) + 8;
  size_t i = 0;
  for (; n[i] && i + 1 < len; i++)
    buf[i] = (char)tolower((unsigned char)n[i]);
  buf[i] = '\0';
}

struct state_count {
  uint64_t n[2][H2T_IFS_COUNT_];
};

static int count_one(const struct inflight_entry *e, void *arg) {
  struct state_count *c = arg;
  if (e->state < H2T_IFS_COUNT_)
    c->n[e->kind ? 1 : 0][e->state]++;
  return 0;
}

static const char *const kinds[2] = {"client", "server"};

int h2t_diag_metrics(char **out, size_t *len) {
  if (!out)
    return H2T_ERR_INVALID_ARG;
  *out = NULL;
  size_t n;
  FILE *f = open_memstream(out, &n);
  if (!f)
    return H2T_ERR_NOMEM;

  head(f, "h2t_requests_total", "counter",
       "Requests finished, by side and outcome.");
  char oc[40];
  for (int k = 0; k < 2; k++)
    for (unsigned i = 0; i <= NERR; i++) {
      uint64_t v = atomic_load_explicit(&m_done[k][i], memory_order_relaxed);
      if (!v && i)
        continue; /* keep the exposition short: errors appear once seen */
      outcome_name(i, oc, sizeof oc);
      fprintf(f, "h2t_requests_total{kind=\"%s\",outcome=\"%s\"} %llu\n",
                kinds[k], oc, (unsigned long long)v);
    }

  struct state_count sc;
  memset(&sc, 0, sizeof sc);
  pthread_rwlock_rdlock(&h2t__ifl_life);
  h2t__ifl_foreach_read(count_one, &sc);
  uint64_t dropped = atomic_load(&h2t__ifl.dropped);
  pthread_rwlock_unlock(&h2t__ifl_life);
  head(f, "h2t_requests_in_flight", "gauge",
       "Requests in flight, by side and current state.");
  for (int k = 0; k < 2; k++)
    for (unsigned s = 0; s < H2T_IFS_COUNT_; s++) {
      if (s == H2T_IFS_DONE)
        continue;
      /* each side only has its own states */
      int server_state = s >= H2T_IFS_READ_HEADERS && s <= H2T_IFS_SRV_FLOW_BLOCKED;
      if (s != H2T_IFS_CANCELING && server_state != k)
        continue;
      fprintf(f, "h2t_requests_in_flight{kind=\"%s\",state=\"%s\"} %llu\n",
                kinds[k], h2t_inflight_state_name((h2t_inflight_state)s),
                (unsigned long long)sc.n[k][s]);
    }
  head(f, "h2t_requests_untracked_total", "counter",
       "Requests not tracked because the in-flight table was full.");
  fprintf(f, "h2t_requests_untracked_total %llu\n",
            (unsigned long long)dropped);

  head(f, "h2t_client_connections_opened_total", "counter",
       "Client connections opened for a request, by why no existing one "
       "was reused.");
  for (int r = 1; r < H2T_CONN_REASON_COUNT_; r++)
    fprintf(f, "h2t_client_connections_opened_total{reason=\"%s\"} %llu\n",
              h2t_conn_reason_name((h2t_conn_reason)r),
              (unsigned long long)atomic_load(&m_conn_new[r]));
  head(f, "h2t_client_connections_reused_total", "counter",
       "Requests that got an existing connection, by whether it was idle.");
  for (int i = 0; i < 2; i++)
    fprintf(f, "h2t_client_connections_reused_total{was_idle=\"%s\"} %llu\n",
              i ? "true" : "false",
              (unsigned long long)atomic_load(&m_conn_reused[i]));
  head(f, "h2t_server_connections_accepted_total", "counter",
       "Server connections accepted.");
  fprintf(f, "h2t_server_connections_accepted_total %llu\n",
            (unsigned long long)atomic_load(&m_accepted));

  h2t_inflight_conn *conns;
  size_t nconns;
  uint64_t open[2] = {0, 0};
  if (h2t_inflight_connections(&conns, &nconns) == 0) {
    for (size_t i = 0; i < nconns; i++)
      open[conns[i].kind ? 1 : 0]++;
    h2t_inflight_conn_free(conns);
  }
  head(f, "h2t_connections_open", "gauge", "Connections open, by side.");
  for (int k = 0; k < 2; k++)
    fprintf(f, "h2t_connections_open{kind=\"%s\"} %llu\n", kinds[k],
              (unsigned long long)open[k]);

  head(f, "h2t_goaway_total", "counter", "GOAWAY frames, by direction.");
  fprintf(f, "h2t_goaway_total{direction=\"sent\"} %llu\n",
            (unsigned long long)atomic_load(&m_goaway[0]));
  fprintf(f, "h2t_goaway_total{direction=\"received\"} %llu\n",
            (unsigned long long)atomic_load(&m_goaway[1]));

  /* Each reason with the actions it can take (a series per pair that can
   * happen, zeros included, so a dashboard sees it before the first). */
  static const struct {
    h2t_shed_reason r;
    h2t_shed_action a;
  } shed_pairs[] = {
      {H2T_SHED_INFLIGHT, H2T_SHED_REFUSED_STREAM},
      {H2T_SHED_INFLIGHT, H2T_SHED_503},
      {H2T_SHED_INFLIGHT, H2T_SHED_CLOSE},
      {H2T_SHED_CONNECTIONS, H2T_SHED_REFUSED_STREAM},
      {H2T_SHED_CONNECTIONS, H2T_SHED_503},
      {H2T_SHED_CONNECTIONS, H2T_SHED_CLOSE},
      {H2T_SHED_CONNECTIONS, H2T_SHED_EVICT},
      {H2T_SHED_HEADER_TIMEOUT, H2T_SHED_CLOSE},
      {H2T_SHED_BODY_TIMEOUT, H2T_SHED_RESET},
      {H2T_SHED_IDLE_TIMEOUT, H2T_SHED_RESET},
      {H2T_SHED_BODY_BUDGET, H2T_SHED_RESET},
      {H2T_SHED_BODY_BUDGET, H2T_SHED_FLOW_CONTROL},
  };
  head(f, "h2t_load_shed_total", "counter",
       "Requests or connections shed by the server, by reason and action.");
  for (size_t i = 0; i < sizeof shed_pairs / sizeof shed_pairs[0]; i++)
    fprintf(f, "h2t_load_shed_total{reason=\"%s\",action=\"%s\"} %llu\n",
              h2t_shed_reason_name(shed_pairs[i].r),
              h2t_shed_action_name(shed_pairs[i].a),
              (unsigned long long)atomic_load(
                  &m_shed[shed_pairs[i].r][shed_pairs[i].a]));

  head(f, "h2t_writer_queue_depth", "gauge",
       "Work items queued for writer threads.");
  fprintf(f, "h2t_writer_queue_depth %lld\n", (long long)writer_depth_sum());

  int bad = h2t__hist_write(f) != 0 || ferror(f);
  if (fclose(f) != 0 || bad) {
    free(*out);
    *out = NULL;
    return H2T_ERR_NOMEM;
  }
  if (len)
    *len = n;
  return 0;
}
