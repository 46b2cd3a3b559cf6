/*
 * Asynchronous DNS: c-ares driven by the client's libev loop (io watchers
 * from c-ares's socket-state callback, one timer for its timeouts), so the
 * loop never blocks in getaddrinfo.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>
#include <strings.h>

#include <ares.h>

#include "h2/net/net.h"
#include "trace/trace_int.h"

typedef struct dns_sock {
  ev_io w;
  struct h2_dns *d;
  struct dns_sock *next;
} dns_sock;

struct h2_dns_query {
  h2_dns *d;
  h2_dns_cb cb;
  void *arg;
  int canceled, resolved;
  int error;
  struct sockaddr_storage *addrs;
  size_t n;
  ev_timer deliver; /* results always arrive from the loop, never inline */
};

struct h2_dns {
  struct ev_loop *loop;
  const h2t_mem *mem;
  ares_channel ch;
  dns_sock *socks;
  ev_timer timer;
  int inited;
  unsigned nq;
};

static void arm_timer(h2_dns *d) {
  ev_timer_stop(d->loop, &d->timer);
  if (!d->nq)
    return;
  struct timeval tv, *tvp = ares_timeout(d->ch, NULL, &tv);
  double after = tvp ? (double)tvp->tv_sec + tvp->tv_usec / 1e6 : 1.0;
  ev_timer_set(&d->timer, after, 0.);
  ev_timer_start(d->loop, &d->timer);
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents) {
  dns_sock *s = (dns_sock *)w;
  h2_dns *d = s->d;
  ares_process_fd(d->ch, (revents & EV_READ) ? w->fd : ARES_SOCKET_BAD,
                  (revents & EV_WRITE) ? w->fd : ARES_SOCKET_BAD);
  arm_timer(d);
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  h2_dns *d = w->data;
  ares_process_fd(d->ch, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
  arm_timer(d);
}

static void sock_state_cb(void *data, ares_socket_t fd, int readable,
                          int writable) {
  h2_dns *d = data;
  dns_sock **pp = &d->socks, *s;
  while ((s = *pp) && s->w.fd != fd)
    pp = &s->next;
  if (!readable && !writable) {
    if (s) {
      ev_io_stop(d->loop, &s->w);
      *pp = s->next;
      h2t_xfree(d->mem, s);
    }
    return;
  }
  if (!s) {
    s = h2t_xcalloc(d->mem, 1, sizeof *s);
    if (!s)
      return; /* the query then times out */
    s->d = d;
    s->next = d->socks;
    d->socks = s;
    ev_io_init(&s->w, io_cb, fd, 0);
  }
  ev_io_stop(d->loop, &s->w);
  ev_io_set(&s->w, fd, (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0));
  ev_io_start(d->loop, &s->w);
}

int h2t__dns_new(h2_dns **out, struct ev_loop *loop, const h2t_mem *mem) {
  h2_dns *d = h2t_xcalloc(mem, 1, sizeof *d);
  if (!d)
    return H2T_ERR_NOMEM;
  d->loop = loop;
  d->mem = mem;
  ev_timer_init(&d->timer, timer_cb, 1., 0.);
  d->timer.data = d;
  struct ares_options o;
  memset(&o, 0, sizeof o);
  o.sock_state_cb = sock_state_cb;
  o.sock_state_cb_data = d;
  o.timeout = 2000; /* ms per try; the conn's connect timeout bounds all */
  o.tries = 2;
  if (ares_init_options(&d->ch, &o,
                        ARES_OPT_SOCK_STATE_CB | ARES_OPT_TIMEOUTMS |
                            ARES_OPT_TRIES) != ARES_SUCCESS) {
    h2t_xfree(mem, d);
    return H2T_ERR_SYSTEM;
  }
  d->inited = 1;
  *out = d;
  return 0;
}

static void query_free(h2_dns_query *q) {
  h2_dns *d = q->d;
  ev_timer_stop(d->loop, &q->deliver);
  h2t_xfree(d->mem, q->addrs);
  h2t_xfree(d->mem, q);
}

void h2t__dns_del(h2_dns *d) {
  if (!d)
    return;
  ares_destroy(d->ch); /* runs outstanding callbacks with ARES_EDESTRUCTION */
  ev_timer_stop(d->loop, &d->timer);
  while (d->socks) {
    dns_sock *s = d->socks;
    d->socks = s->next;
    ev_io_stop(d->loop, &s->w);
    h2t_xfree(d->mem, s);
  }
  h2t_xfree(d->mem, d);
}

static void deliver_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  h2_dns_query *q = w->data;
  if (!q->canceled)
    q->cb(q->arg, q->error, q->addrs, q->n);
  query_free(q);
}

static void schedule(h2_dns_query *q) {
  q->resolved = 1;
  if (q->canceled) {
    query_free(q);
    return;
  }
  ev_timer_set(&q->deliver, 0., 0.);
  ev_timer_start(q->d->loop, &q->deliver);
}

static void ai_cb(void *arg, int status, int timeouts,
                  struct ares_addrinfo *res) {
  h2_dns_query *q = arg;
  h2_dns *d = q->d;
  d->nq--;
  q->error = H2T_ERR_DNS;
  if (status == ARES_SUCCESS && res) {
    size_t n = 0;
    for (struct ares_addrinfo_node *a = res->nodes; a; a = a->ai_next)
      n++;
    q->addrs = n ? h2t_xcalloc(d->mem, n, sizeof *q->addrs) : NULL;
    if (q->addrs) {
      for (struct ares_addrinfo_node *a = res->nodes; a; a = a->ai_next) {
        if ((a->ai_family != AF_INET && a->ai_family != AF_INET6) ||
            a->ai_addrlen > sizeof *q->addrs)
          continue;
        memcpy(&q->addrs[q->n++], a->ai_addr, a->ai_addrlen);
      }
      q->error = q->n ? 0 : H2T_ERR_DNS;
    } else if (n) {
      q->error = H2T_ERR_NOMEM;
    }
  }
  if (res)
    ares_freeaddrinfo(res);
  if (status == ARES_EDESTRUCTION)
    q->canceled = 1;
  schedule(q);
}

int h2t__dns_name_is_invalid(const char *host) {
  size_t n = strlen(host);
  if (n && host[n - 1] == '.')
    n--;
  return (n == 7 && !strncasecmp(host, "invalid", 7)) ||
         (n > 7 && !strncasecmp(host + n - 8, ".invalid", 8));
}

h2_dns_query *h2t__dns_lookup(h2_dns *d, const char *host, int ip_version,
                            h2_dns_cb cb, void *arg) {
  h2_dns_query *q = h2t_xcalloc(d->mem, 1, sizeof *q);
  if (!q)
    return NULL;
  q->d = d;
  q->cb = cb;
  q->arg = arg;
  ev_timer_init(&q->deliver, deliver_cb, 0., 0.);
  q->deliver.data = q;
  if (h2t__dns_name_is_invalid(host)) {
    /* RFC 6761 §6.4: resolvers answer "no such name" for .invalid at once,
     * without asking a server; c-ares 1.18 would ask one. */
    q->error = H2T_ERR_DNS;
    schedule(q);
    return q;
  }
  struct ares_addrinfo_hints hints;
  memset(&hints, 0, sizeof hints);
  hints.ai_family = ip_version == 4 ? AF_INET
                    : ip_version == 6 ? AF_INET6
                                      : AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  d->nq++;
  ares_getaddrinfo(d->ch, host, NULL, &hints, ai_cb, q);
  arm_timer(d);
  return q;
}

void h2t__dns_cancel(h2_dns_query *q) {
  if (!q)
    return;
  q->canceled = 1;
  if (q->resolved)
    query_free(q);
  /* else: c-ares still owns it; ai_cb frees it when the lookup ends */
}
