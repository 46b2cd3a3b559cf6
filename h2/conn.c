/*
 * One client HTTP/2 connection: DNS → TCP → (TLS) → nghttp2 session.
 *
 * Output is batched: nghttp2_session_mem_send() fills cn->out, written with
 * one send()/SSL_write() per flush; a flush runs after each read and, for
 * submissions made outside a read, once per loop iteration (ev_prepare).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "h2/h2_int.h"

#define READ_CHUNK (32 * 1024)
#define OUT_HIGH (64 * 1024) /* stop pulling frames past this much */
#define CONN_WINDOW (1 << 24)

static void do_close(h2_conn *cn);
static void start_tls(h2_conn *cn);
static void try_connect(h2_conn *cn);

/* --- events to the requests on a conn ---------------------------------- */

static int list_wants(struct req_list *l, h2t_event_type t) {
  h2t_request *r;
  TAILQ_FOREACH(r, l, link) {
    if (TRACE_WANTS(&r->tc, t))
      return 1;
  }
  return 0;
}

/* Send tmpl (type + payload) to every request on l that wants it.  A hook
 * may cancel any request: the next one is held so the walk can go on, and
 * stops if that one completed. */
static void emit_list(struct req_list *l, h2t_event *tmpl) {
  h2t_request *r, *next;
  for (r = TAILQ_FIRST(l); r; r = next) {
    next = TAILQ_NEXT(r, link);
    if (!TRACE_WANTS(&r->tc, tmpl->type))
      continue;
    h2t_event ev = *tmpl;
    ev.stream_id = r->stream_id;
    ev.req_id = r->id;
    ev.req = r;
    if (next)
      h2_req_hold(next);
    trace_emit(&r->tc, &ev);
    if (next && !h2_req_release(next))
      break;
  }
}

static void tmpl_init(h2t_event *ev, h2_conn *cn, h2t_event_type t) {
  memset(ev, 0, sizeof *ev);
  ev->type = t;
  ev->conn_id = cn->id;
  ev->t_us = cn->client->ts ? cn->client->ts : h2t_now_us();
}

/* --- setup ------------------------------------------------------------- */

static void start_dns(h2_conn *cn);
static void end_io(h2_conn *cn);

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  h2_conn *cn = w->data;
  if (cn->state != CONN_READY) {
    h2_conn_close(cn, H2T_CONN_DEAD, H2T_ERR_CONNECT_TIMEOUT);
    return;
  }
  if (cn->nstreams == 0) {
    /* idle timeout: say goodbye properly, then close */
    cn->in_io++;
    cn->drain_reason = H2T_CONN_IDLE_TIMEOUT;
    nghttp2_session_terminate_session(cn->sess, NGHTTP2_NO_ERROR);
    h2_conn_flush(cn);
    h2_conn_close(cn, H2T_CONN_IDLE_TIMEOUT, H2T_ERR_CONN_CLOSED);
    end_io(cn);
  }
}

static void kick_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  start_dns(w->data);
}

static void dns_done(void *arg, int error,
                     const struct sockaddr_storage *addrs, size_t n) {
  h2_conn *cn = arg;
  cn->dnsq = NULL;
  if (!error) {
    cn->addrs = h2t_xcalloc(cn->client->mem, n, sizeof *addrs);
    if (!cn->addrs)
      error = H2T_ERR_NOMEM;
    else {
      memcpy(cn->addrs, addrs, n * sizeof *addrs);
      cn->naddrs = n;
    }
  }
  uint16_t port = htons(cn->origin->port);
  for (size_t i = 0; i < cn->naddrs; i++) {
    if (cn->addrs[i].ss_family == AF_INET6)
      ((struct sockaddr_in6 *)&cn->addrs[i])->sin6_port = port;
    else
      ((struct sockaddr_in *)&cn->addrs[i])->sin_port = port;
  }
  if (list_wants(&cn->waiters, H2T_EV_DNS_DONE)) {
    char strs[8][INET6_ADDRSTRLEN + 8];
    const char *ptrs[8];
    size_t k = cn->naddrs < 8 ? cn->naddrs : 8;
    for (size_t i = 0; i < k; i++) {
      char tmp[80];
      h2_sockaddr_str(&cn->addrs[i], tmp, sizeof tmp);
      /* numeric address without the port */
      char *e = strrchr(tmp, ':');
      if (e)
        *e = '\0';
      char *s = tmp;
      if (*s == '[') {
        s++;
        char *rb = strchr(s, ']');
        if (rb)
          *rb = '\0';
      }
      size_t sl = strnlen(s, sizeof strs[i] - 1);
      memcpy(strs[i], s, sl);
      strs[i][sl] = '\0';
      ptrs[i] = strs[i];
    }
    h2t_event ev;
    tmpl_init(&ev, cn, H2T_EV_DNS_DONE);
    ev.u.dns_done.addrs = ptrs;
    ev.u.dns_done.naddrs = k;
    ev.u.dns_done.error = error;
    ev.u.dns_done.literal = cn->origin->host_is_ip != 0;
    emit_list(&cn->waiters, &ev);
  }
  if (error) {
    h2_conn_close(cn, H2T_CONN_DEAD, error);
    return;
  }
  try_connect(cn);
}

static int literal_addr(h2_conn *cn, struct sockaddr_storage *sa) {
  memset(sa, 0, sizeof *sa);
  const char *h = cn->origin->host;
  int want = cn->client->ip_version;
  if (cn->origin->host_is_ip == 4 && want != 6) {
    struct sockaddr_in *s4 = (void *)sa;
    s4->sin_family = AF_INET;
    return inet_pton(AF_INET, h, &s4->sin_addr) == 1 ? 0 : -1;
  }
  if (cn->origin->host_is_ip == 6 && want != 4) {
    struct sockaddr_in6 *s6 = (void *)sa;
    s6->sin6_family = AF_INET6;
    return inet_pton(AF_INET6, h, &s6->sin6_addr) == 1 ? 0 : -1;
  }
  return -1;
}

static void end_io(h2_conn *cn);

static void start_dns(h2_conn *cn) {
  if (list_wants(&cn->waiters, H2T_EV_DNS_START)) {
    h2t_event ev;
    tmpl_init(&ev, cn, H2T_EV_DNS_START);
    ev.u.dns_start.host = cn->origin->host;
    emit_list(&cn->waiters, &ev);
  }
  if (cn->origin->host_is_ip) {
    /* no lookup, but the hooks fire in the usual order */
    struct sockaddr_storage sa;
    if (literal_addr(cn, &sa) == 0)
      dns_done(cn, 0, &sa, 1);
    else
      dns_done(cn, H2T_ERR_DNS, NULL, 0);
    return;
  }
  cn->dnsq = h2_dns_lookup(cn->client->dns, cn->origin->host,
                           cn->client->ip_version, dns_done, cn);
  if (!cn->dnsq)
    h2_conn_close(cn, H2T_CONN_DEAD, H2T_ERR_NOMEM);
}

h2_conn *h2_conn_new(h2t_client *c, h2_origin *o, h2t_conn_reason why) {
  h2_conn *cn = h2t_xcalloc(c->mem, 1, sizeof *cn);
  if (!cn)
    return NULL;
  cn->client = c;
  cn->origin = o;
  cn->id = h2t_next_conn_id();
  cn->fd = -1;
  cn->state = CONN_DNS;
  cn->open_reason = why;
  cn->goaway_last_id = -1;
  /* until its SETTINGS arrive, expect what this origin said last time, or
   * nghttp2's own assumption */
  cn->max_streams = o->peer_max_streams ? o->peer_max_streams : 100;
  TAILQ_INIT(&cn->waiters);
  TAILQ_INIT(&cn->streams);
  ev_timer_init(&cn->timer, timer_cb, c->connect_timeout_ms / 1000., 0.);
  cn->timer.data = cn;
  TAILQ_INSERT_TAIL(&o->conns, cn, link);
  o->nconns++;
  o->last_close = H2T_CONN_NONE;
  c->stats.conns_opened++;
  c->stats.conns_open++;
  if (why < H2T_CONN_REASON_COUNT_)
    c->stats.new_conn_reason[why]++;
  return cn;
}

void h2_conn_start(h2_conn *cn) {
  /* From the loop, not from inside h2t_request_submit(): hooks and a fast
   * failure must not run under the caller, and requests submitted in the
   * same iteration all join before dns_start. */
  ev_timer_start(cn->client->loop, &cn->timer);
  ev_timer_init(&cn->kick, kick_cb, 0., 0.);
  cn->kick.data = cn;
  ev_timer_start(cn->client->loop, &cn->kick);
}

static void emit_connect(h2_conn *cn, h2t_event_type t, int error) {
  if (!list_wants(&cn->waiters, t))
    return;
  h2t_event ev;
  tmpl_init(&ev, cn, t);
  ev.u.connect.addr = cn->addr_str;
  ev.u.connect.error = error;
  emit_list(&cn->waiters, &ev);
}

static int map_connect_errno(int e) {
  switch (e) {
  case ECONNREFUSED:
    return H2T_ERR_CONNECT_REFUSED;
  case ETIMEDOUT:
    return H2T_ERR_CONNECT_TIMEOUT;
  default:
    return H2T_ERR_CONNECT;
  }
}

static void connect_cb(struct ev_loop *loop, ev_io *w, int revents) {
  h2_conn *cn = w->data;
  ev_io_stop(loop, &cn->wio);
  int e = h2_tcp_connect_result(cn->fd);
  emit_connect(cn, H2T_EV_CONNECT_DONE, e ? map_connect_errno(e) : 0);
  if (e) {
    close(cn->fd);
    cn->fd = -1;
    cn->error = map_connect_errno(e);
    cn->addr_idx++;
    try_connect(cn);
    return;
  }
  if (cn->origin->tls)
    start_tls(cn);
  else
    h2_conn_ready(cn);
}

static void try_connect(h2_conn *cn) {
  struct ev_loop *loop = cn->client->loop;
  cn->state = CONN_CONNECTING;
  while (cn->addr_idx < cn->naddrs) {
    const struct sockaddr_storage *sa = &cn->addrs[cn->addr_idx];
    h2_sockaddr_str(sa, cn->addr_str, sizeof cn->addr_str);
    emit_connect(cn, H2T_EV_CONNECT_START, 0);
    int fd = h2_tcp_connect(sa);
    if (fd < 0) {
      cn->error = map_connect_errno(-fd);
      emit_connect(cn, H2T_EV_CONNECT_DONE, cn->error);
      cn->addr_idx++;
      continue;
    }
    cn->fd = fd;
    ev_io_init(&cn->wio, connect_cb, fd, EV_WRITE);
    cn->wio.data = cn;
    ev_io_start(loop, &cn->wio);
    return;
  }
  h2_conn_close(cn, H2T_CONN_DEAD, cn->error ? cn->error : H2T_ERR_CONNECT);
}

/* --- TLS handshake ----------------------------------------------------- */

static void tls_done(h2_conn *cn, int error) {
  if (!list_wants(&cn->waiters, H2T_EV_TLS_HANDSHAKE_DONE))
    return;
  h2t_event ev;
  tmpl_init(&ev, cn, H2T_EV_TLS_HANDSHAKE_DONE);
  SSL *ssl = cn->ssl;
  ev.u.tls.sni = cn->origin->host_is_ip ? NULL : cn->origin->host;
  char alpn[32];
  if (ssl) {
    long vr = SSL_get_verify_result(ssl);
    ev.u.tls.verify_result = vr;
    ev.u.tls.verify_error = X509_verify_cert_error_string(vr);
    if (!error || error == H2T_ERR_ALPN) {
      ev.u.tls.version = SSL_get_version(ssl);
      ev.u.tls.cipher = SSL_get_cipher_name(ssl);
      ev.u.tls.resumed = SSL_session_reused(ssl);
      const unsigned char *a = NULL;
      unsigned alen = 0;
      SSL_get0_alpn_selected(ssl, &a, &alen);
      if (a && alen && alen < sizeof alpn) {
        memcpy(alpn, a, alen);
        alpn[alen] = '\0';
        ev.u.tls.alpn = alpn;
      }
    }
  }
  ev.u.tls.error = error;
  emit_list(&cn->waiters, &ev);
}

static void handshake_step(h2_conn *cn);

int h2_conn_tls_new_session(SSL *ssl, SSL_SESSION *sess) {
  h2_conn *cn = SSL_get_app_data(ssl);
  if (!cn)
    return 0;
  /* sessions are kept per origin: the verify settings are client-wide, so a
   * session verified once for this host:port stays valid for it */
  if (cn->origin->tls_session)
    SSL_SESSION_free(cn->origin->tls_session);
  cn->origin->tls_session = sess;
  return 1; /* we keep the reference */
}

static void tls_io_cb(struct ev_loop *loop, ev_io *w, int revents) {
  handshake_step(w->data);
}

static void handshake_step(h2_conn *cn) {
  struct ev_loop *loop = cn->client->loop;
  ERR_clear_error();
  int rv = SSL_do_handshake(cn->ssl);
  if (rv == 1) {
    ev_io_stop(loop, &cn->rio);
    ev_io_stop(loop, &cn->wio);
    const unsigned char *a = NULL;
    unsigned alen = 0;
    SSL_get0_alpn_selected(cn->ssl, &a, &alen);
    if (alen != 2 || memcmp(a, "h2", 2) != 0) {
      tls_done(cn, H2T_ERR_ALPN);
      h2_conn_close(cn, H2T_CONN_DEAD, H2T_ERR_ALPN);
      return;
    }
    tls_done(cn, 0);
    h2_conn_ready(cn);
    return;
  }
  int err = SSL_get_error(cn->ssl, rv);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) {
    ev_io *on = err == SSL_ERROR_WANT_READ ? &cn->rio : &cn->wio;
    ev_io *off = err == SSL_ERROR_WANT_READ ? &cn->wio : &cn->rio;
    ev_io_stop(loop, off);
    ev_io_start(loop, on);
    return;
  }
  ev_io_stop(loop, &cn->rio);
  ev_io_stop(loop, &cn->wio);
  int e = SSL_get_verify_result(cn->ssl) != X509_V_OK ? H2T_ERR_TLS_VERIFY
                                                       : H2T_ERR_TLS;
  /* RFC 7301 §3.2: a server without a common protocol may refuse with an
   * alert instead of just not selecting one */
  if (ERR_GET_REASON(ERR_peek_last_error()) ==
      SSL_R_TLSV1_ALERT_NO_APPLICATION_PROTOCOL)
    e = H2T_ERR_ALPN;
  ERR_clear_error();
  tls_done(cn, e);
  h2_conn_close(cn, H2T_CONN_DEAD, e);
}

static void start_tls(h2_conn *cn) {
  h2t_client *c = cn->client;
  cn->state = CONN_TLS;
  if (list_wants(&cn->waiters, H2T_EV_TLS_HANDSHAKE_START)) {
    h2t_event ev;
    tmpl_init(&ev, cn, H2T_EV_TLS_HANDSHAKE_START);
    ev.u.tls.sni = cn->origin->host_is_ip ? NULL : cn->origin->host;
    emit_list(&cn->waiters, &ev);
  }
  cn->ssl = h2_tls_new(c->ssl_ctx, cn->fd, cn->origin->host,
                       cn->origin->host_is_ip, c->insecure);
  if (!cn->ssl) {
    tls_done(cn, H2T_ERR_TLS);
    h2_conn_close(cn, H2T_CONN_DEAD, H2T_ERR_TLS);
    return;
  }
  SSL_set_app_data(cn->ssl, cn);
  if (cn->origin->tls_session)
    SSL_set_session(cn->ssl, cn->origin->tls_session); /* best effort */
  ev_io_init(&cn->rio, tls_io_cb, cn->fd, EV_READ);
  ev_io_init(&cn->wio, tls_io_cb, cn->fd, EV_WRITE);
  cn->rio.data = cn->wio.data = cn;
  handshake_step(cn);
}

/* --- I/O --------------------------------------------------------------- */

static void read_cb(struct ev_loop *loop, ev_io *w, int revents);
static void write_cb(struct ev_loop *loop, ev_io *w, int revents);

static void fail_io(h2_conn *cn, int eof) {
  /* EOF: the peer closed it; else an I/O error: dead */
  h2_conn_close(cn, eof ? H2T_CONN_CLOSED : H2T_CONN_DEAD,
                cn->error ? cn->error : H2T_ERR_CONN_CLOSED);
}

static void end_io(h2_conn *cn) {
  if (--cn->in_io == 0 && cn->close_pending)
    do_close(cn);
}

static void read_cb(struct ev_loop *loop, ev_io *w, int revents) {
  h2_conn *cn = w->data;
  uint8_t buf[READ_CHUNK];
  cn->in_io++;
  for (;;) {
    ssize_t n;
    if (cn->ssl) {
      ERR_clear_error();
      int rv = SSL_read(cn->ssl, buf, sizeof buf);
      if (rv <= 0) {
        int err = SSL_get_error(cn->ssl, rv);
        if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE)
          break;
        ERR_clear_error();
        fail_io(cn, err == SSL_ERROR_ZERO_RETURN ||
                        (err == SSL_ERROR_SYSCALL && errno == 0));
        goto out;
      }
      n = rv;
    } else {
      n = recv(cn->fd, buf, sizeof buf, 0);
      if (n == 0) {
        fail_io(cn, 1);
        goto out;
      }
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
          break;
        fail_io(cn, errno == ECONNRESET);
        goto out;
      }
    }
    cn->client->ts = h2t_now_us();
    if (cn->reg)
      connreg_bytes(cn->reg, (uint64_t)n, 0);
    ssize_t rv = nghttp2_session_mem_recv(cn->sess, buf, (size_t)n);
    cn->client->ts = 0;
    if (rv < 0) {
      cn->error = H2T_ERR_PROTOCOL;
      h2_conn_close(cn, H2T_CONN_DEAD, H2T_ERR_PROTOCOL);
      goto out;
    }
    if (cn->close_pending)
      goto out;
    if ((size_t)n < sizeof buf && (!cn->ssl || !SSL_has_pending(cn->ssl)))
      break; /* drained: no EAGAIN read needed */
  }
  h2_conn_flush(cn);
out:
  end_io(cn);
}

static void write_cb(struct ev_loop *loop, ev_io *w, int revents) {
  h2_conn *cn = w->data;
  h2_conn_flush(cn);
}

/* Write what is in cn->out.  1: all written; 0: would block; -1: error. */
static int write_out(h2_conn *cn) {
  while (cn->outoff < cn->outlen) {
    size_t len = cn->outlen - cn->outoff;
    ssize_t n;
    if (cn->ssl) {
      ERR_clear_error();
      int rv = SSL_write(cn->ssl, cn->out + cn->outoff,
                         len > INT32_MAX ? INT32_MAX : (int)len);
      if (rv <= 0) {
        int err = SSL_get_error(cn->ssl, rv);
        ERR_clear_error();
        if (err == SSL_ERROR_WANT_WRITE || err == SSL_ERROR_WANT_READ)
          return 0;
        return -1;
      }
      n = rv;
    } else {
      n = send(cn->fd, cn->out + cn->outoff, len, MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
          return 0;
        return -1;
      }
    }
    cn->outoff += (size_t)n;
    if (cn->reg)
      connreg_bytes(cn->reg, 0, (uint64_t)n);
  }
  cn->outoff = cn->outlen = 0;
  return 1;
}

static int out_append(h2_conn *cn, const uint8_t *data, size_t n) {
  if (cn->outlen + n > cn->outcap) {
    size_t cap = cn->outcap ? cn->outcap : 16384;
    while (cap < cn->outlen + n)
      cap *= 2;
    uint8_t *p = h2t_xrealloc(cn->client->mem, cn->out, cap);
    if (!p)
      return -1;
    cn->out = p;
    cn->outcap = cap;
  }
  memcpy(cn->out + cn->outlen, data, n);
  cn->outlen += n;
  return 0;
}

static void check_flow_blocked(h2_conn *cn) {
  h2t_request *r;
  TAILQ_FOREACH(r, &cn->streams, link) {
    if (!r->has_body || r->body_eof || r->body_deferred || r->waiting_100 ||
        r->flow_blocked || !r->headers_sent ||
        !TRACE_WANTS(&r->tc, H2T_EV_FLOW_BLOCKED))
      continue;
    int32_t sw =
        nghttp2_session_get_stream_remote_window_size(cn->sess, r->stream_id);
    int32_t cw = nghttp2_session_get_remote_window_size(cn->sess);
    if (sw > 0 && cw > 0)
      continue;
    r->flow_blocked = 1;
    h2t_event ev;
    h2_ev_init(&ev, r, H2T_EV_FLOW_BLOCKED);
    ev.u.flow_blocked.conn_level = cw <= 0;
    ev.u.flow_blocked.stream_window = sw;
    ev.u.flow_blocked.conn_window = cw;
    trace_emit(&r->tc, &ev);
  }
}

void h2_conn_flush(h2_conn *cn) {
  h2t_client *c = cn->client;
  if (cn->dirty) {
    cn->dirty = 0;
    TAILQ_REMOVE(&c->dirty, cn, dirty_link);
  }
  if (cn->state != CONN_READY || cn->close_pending)
    return;
  cn->in_io++;
  for (;;) {
    while (cn->outlen < OUT_HIGH) {
      const uint8_t *data;
      ssize_t n = nghttp2_session_mem_send(cn->sess, &data);
      if (n < 0) {
        cn->error = H2T_ERR_PROTOCOL;
        h2_conn_close(cn, H2T_CONN_DEAD, H2T_ERR_PROTOCOL);
        goto out;
      }
      if (n == 0)
        break;
      if (out_append(cn, data, (size_t)n) != 0) {
        h2_conn_close(cn, H2T_CONN_DEAD, H2T_ERR_NOMEM);
        goto out;
      }
    }
    if (cn->close_pending)
      goto out;
    if (cn->outlen == 0)
      break;
    int w = write_out(cn);
    if (w < 0) {
      h2_conn_close(cn, H2T_CONN_DEAD, cn->error ? cn->error : H2T_ERR_IO);
      goto out;
    }
    if (w == 0) {
      if (!ev_is_active(&cn->wio))
        ev_io_start(c->loop, &cn->wio);
      goto blocked;
    }
    if (!nghttp2_session_want_write(cn->sess))
      break;
  }
  if (ev_is_active(&cn->wio))
    ev_io_stop(c->loop, &cn->wio);
blocked:
  if (cn->nbody_pending)
    check_flow_blocked(cn);
  if (!nghttp2_session_want_read(cn->sess) &&
      !nghttp2_session_want_write(cn->sess) && cn->outlen == 0) {
    h2t_conn_reason why = cn->drain_reason != H2T_CONN_NONE
                              ? cn->drain_reason
                              : H2T_CONN_CLOSED;
    h2_conn_close(cn, why, cn->error ? cn->error : H2T_ERR_CONN_CLOSED);
  }
out:
  end_io(cn);
}

void h2_conn_mark_dirty(h2_conn *cn) {
  if (cn->dirty || cn->state != CONN_READY)
    return;
  h2t_client *c = cn->client;
  cn->dirty = 1;
  TAILQ_INSERT_TAIL(&c->dirty, cn, dirty_link);
  if (!ev_is_active(&c->flush_w))
    ev_prepare_start(c->loop, &c->flush_w);
}

/* --- nghttp2 callbacks ------------------------------------------------- */

static h2t_request *stream_req(nghttp2_session *s, int32_t id) {
  return id > 0 ? nghttp2_session_get_stream_user_data(s, id) : NULL;
}

/* Events fired for one frame share one clock read. */
static uint64_t now_once(uint64_t *t) {
  if (!*t)
    *t = h2t_now_us();
  return *t;
}

static void emit_header_fields(h2t_request *r, uint64_t *t) {
  for (size_t i = 0; i < r->nnv && r->state == REQ_ACTIVE; i++) {
    h2t_event ev;
    h2_ev_init(&ev, r, H2T_EV_WROTE_HEADER_FIELD);
    ev.t_us = now_once(t);
    ev.u.header_field.name = (const char *)r->nv[i].name;
    ev.u.header_field.namelen = r->nv[i].namelen;
    ev.u.header_field.value = (const char *)r->nv[i].value;
    ev.u.header_field.valuelen = r->nv[i].valuelen;
    trace_emit(&r->tc, &ev);
  }
}

static void simple_event_at(h2t_request *r, h2t_event_type type,
                            uint64_t *t) {
  if (TRACE_WANTS(&r->tc, type)) {
    h2t_event ev;
    h2_ev_init(&ev, r, type);
    if (t)
      ev.t_us = now_once(t);
    trace_emit(&r->tc, &ev);
  }
}

static void simple_event(h2t_request *r, h2t_event_type type) {
  simple_event_at(r, type, NULL);
}

static void wrote_request(h2t_request *r, uint64_t *t) {
  if (TRACE_WANTS(&r->tc, H2T_EV_WROTE_REQUEST)) {
    h2t_event ev;
    h2_ev_init(&ev, r, H2T_EV_WROTE_REQUEST);
    ev.t_us = now_once(t);
    ev.u.wrote_request.error = 0;
    trace_emit(&r->tc, &ev);
  }
}

static void expect_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  h2t_request *r = w->data;
  /* no 100 in time: send the body anyway (RFC 9110 §10.1.1) */
  if (r->waiting_100 && r->conn && r->conn->sess) {
    r->waiting_100 = 0;
    if (r->body_deferred) {
      r->body_deferred = 0;
      nghttp2_session_resume_data(r->conn->sess, r->stream_id);
      h2_conn_mark_dirty(r->conn);
    }
  }
}

/* To the conn's requests, and once to the metrics (no request owns it). */
static void goaway_event(h2_conn *cn, const nghttp2_frame *f, int by_peer) {
  h2t_event ev;
  tmpl_init(&ev, cn, H2T_EV_GOAWAY);
  ev.u.goaway.last_stream_id = f->goaway.last_stream_id;
  ev.u.goaway.error_code = f->goaway.error_code;
  ev.u.goaway.by_peer = by_peer;
  metrics_event(&ev);
  if (list_wants(&cn->streams, H2T_EV_GOAWAY))
    emit_list(&cn->streams, &ev);
}

#define EVBIT(t) (UINT64_C(1) << (t))
#define HEADERS_EVENTS                                                         \
  (EVBIT(H2T_EV_STREAM_OPENED) | EVBIT(H2T_EV_WROTE_HEADER_FIELD) |            \
   EVBIT(H2T_EV_WROTE_HEADERS) | EVBIT(H2T_EV_WROTE_REQUEST) |                 \
   EVBIT(H2T_EV_WAIT_100_CONTINUE))

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *f,
                         void *ud) {
  h2_conn *cn = ud;
  uint64_t t = 0;
  h2t_request *r = stream_req(s, f->hd.stream_id);
  switch (f->hd.type) {
  case NGHTTP2_HEADERS:
    if (!r)
      break;
    r->headers_sent = 1;
    if (!(r->tc.mask & HEADERS_EVENTS) && !r->expect_100)
      break; /* nothing traced: the common fast path */
    h2_req_hold(r);
    simple_event_at(r, H2T_EV_STREAM_OPENED, &t);
    if (r->state == REQ_ACTIVE &&
        TRACE_WANTS(&r->tc, H2T_EV_WROTE_HEADER_FIELD))
      emit_header_fields(r, &t);
    if (r->state == REQ_ACTIVE)
      simple_event_at(r, H2T_EV_WROTE_HEADERS, &t);
    if (r->state != REQ_ACTIVE) {
    } else if (f->hd.flags & NGHTTP2_FLAG_END_STREAM) {
      wrote_request(r, &t);
    } else if (r->expect_100 && r->waiting_100) {
      ev_timer_init(&r->expect_w, expect_cb,
                    cn->client->expect_continue_timeout_ms / 1000., 0.);
      r->expect_w.data = r;
      ev_timer_start(cn->client->loop, &r->expect_w);
      simple_event_at(r, H2T_EV_WAIT_100_CONTINUE, &t);
    }
    h2_req_release(r);
    break;
  case NGHTTP2_DATA:
    if (r && (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
      wrote_request(r, &t);
    break;
  case NGHTTP2_GOAWAY: {
    if (f->goaway.error_code != NGHTTP2_NO_ERROR && !cn->error)
      cn->error = H2T_ERR_PROTOCOL;
    if (cn->drain_reason == H2T_CONN_NONE)
      cn->drain_reason = cn->error ? H2T_CONN_DEAD : H2T_CONN_GOAWAY;
    connreg_goaway(cn->reg, 1);
    goaway_event(cn, f, 0);
    break;
  }
  default:
    break;
  }
  return 0;
}

static int on_frame_not_send(nghttp2_session *s, const nghttp2_frame *f,
                             int lib_error_code, void *ud) {
  return 0; /* the stream is then closed: on_stream_close decides */
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f,
                            void *ud) {
  h2t_request *r = stream_req(s, f->hd.stream_id);
  if (!r || f->hd.type != NGHTTP2_HEADERS)
    return 0;
  r->pending_status = 0;
  if (!r->got_first_byte) {
    r->got_first_byte = 1;
    simple_event(r, H2T_EV_GOT_FIRST_RESPONSE_BYTE);
  }
  return 0;
}

static void hdrs_release(h2t_request *r) {
  for (size_t i = 0; i < 2 * r->nhdrs; i++)
    nghttp2_rcbuf_decref(r->rcs[i]);
  r->nhdrs = 0;
}

static int hdrs_grow(h2t_request *r) {
  const h2t_mem *m = r->client->mem;
  size_t cap = r->hdrs_cap * 2;
  h2t_header *h = h2t_xmalloc(m, cap * sizeof *h);
  nghttp2_rcbuf **rc = h2t_xmalloc(m, 2 * cap * sizeof *rc);
  if (!h || !rc) {
    h2t_xfree(m, h);
    h2t_xfree(m, rc);
    return -1;
  }
  memcpy(h, r->hdrs, r->nhdrs * sizeof *h);
  memcpy(rc, r->rcs, 2 * r->nhdrs * sizeof *rc);
  if (r->hdrs != r->hdrs_inline) {
    h2t_xfree(m, r->hdrs);
    h2t_xfree(m, r->rcs);
  }
  r->hdrs = h;
  r->rcs = rc;
  r->hdrs_cap = cap;
  return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f,
                     nghttp2_rcbuf *name, nghttp2_rcbuf *value,
                     uint8_t flags, void *ud) {
  h2t_request *r = stream_req(s, f->hd.stream_id);
  if (!r || f->hd.type != NGHTTP2_HEADERS)
    return 0;
  nghttp2_vec n = nghttp2_rcbuf_get_buf(name);
  if (n.len == 7 && !memcmp(n.base, ":status", 7)) {
    nghttp2_vec v = nghttp2_rcbuf_get_buf(value);
    int st = 0;
    for (size_t i = 0; i < v.len && i < 3; i++)
      st = st * 10 + (v.base[i] - '0');
    r->pending_status = st;
    return 0;
  }
  if (r->got_final || r->pending_status < 200 || !r->on_headers)
    return 0;
  if (r->nhdrs == r->hdrs_cap && hdrs_grow(r) != 0)
    return 0; /* out of memory: that header is not delivered */
  nghttp2_vec v = nghttp2_rcbuf_get_buf(value);
  nghttp2_rcbuf_incref(name);
  nghttp2_rcbuf_incref(value);
  r->rcs[2 * r->nhdrs] = name;
  r->rcs[2 * r->nhdrs + 1] = value;
  /* nghttp2 keeps header names and values NUL-terminated */
  r->hdrs[r->nhdrs].name = (const char *)n.base;
  r->hdrs[r->nhdrs].value = (const char *)v.base;
  r->nhdrs++;
  return 0;
}

/* Cancel from inside a callback: the stream is reset, r completes. */
static void abort_req(h2_conn *cn, h2t_request *r, int error) {
  h2_conn_reset_stream(cn, r, NGHTTP2_CANCEL);
  h2_req_finish(r, error);
}

static void release_body(h2_conn *cn, h2t_request *r) {
  ev_timer_stop(cn->client->loop, &r->expect_w);
  if (r->body_deferred) {
    r->body_deferred = 0;
    nghttp2_session_resume_data(cn->sess, r->stream_id);
  }
}

static void got_headers2(h2_conn *cn, h2t_request *r);

static void got_headers(h2_conn *cn, h2t_request *r, const nghttp2_frame *f) {
  h2_req_hold(r);
  got_headers2(cn, r);
  h2_req_release(r);
}

/* r is held: after each hook, stop if it completed (state DONE) */
static void got_headers2(h2_conn *cn, h2t_request *r) {
  int st = r->pending_status;
  if (st >= 100 && st < 200) {
    if (st == 100 && r->waiting_100) {
      r->waiting_100 = 0;
      release_body(cn, r);
      simple_event(r, H2T_EV_GOT_100_CONTINUE);
      if (r->state == REQ_DONE)
        return;
    }
    if (TRACE_WANTS(&r->tc, H2T_EV_GOT_1XX_RESPONSE)) {
      h2t_event ev;
      h2_ev_init(&ev, r, H2T_EV_GOT_1XX_RESPONSE);
      ev.u.response.status = st;
      trace_emit(&r->tc, &ev);
    }
    return;
  }
  if (r->got_final)
    return; /* trailers */
  r->got_final = 1;
  r->status = st;
  if (r->waiting_100) {
    /* a final answer without 100: the body is not wanted */
    r->waiting_100 = 0;
    r->skip_body = 1;
    release_body(cn, r);
  }
  if (TRACE_WANTS(&r->tc, H2T_EV_GOT_HEADERS)) {
    h2t_event ev;
    h2_ev_init(&ev, r, H2T_EV_GOT_HEADERS);
    ev.u.response.status = st;
    trace_emit(&r->tc, &ev);
    if (r->state == REQ_DONE)
      return;
  }
  if (r->on_headers) {
    int rv = r->on_headers(r, st, r->hdrs, r->nhdrs, r->user);
    if (r->state == REQ_DONE)
      return; /* freeing it releases the headers */
    hdrs_release(r);
    if (rv != 0 && r->state == REQ_ACTIVE)
      abort_req(cn, r, H2T_ERR_CALLBACK);
  }
}

static void emit_settings(h2_conn *cn) {
  h2t_event ev;
  tmpl_init(&ev, cn, H2T_EV_SETTINGS);
  nghttp2_session *s = cn->sess;
  ev.u.settings.max_concurrent_streams = nghttp2_session_get_remote_settings(
      s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
  ev.u.settings.initial_window_size = nghttp2_session_get_remote_settings(
      s, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE);
  ev.u.settings.max_frame_size =
      nghttp2_session_get_remote_settings(s, NGHTTP2_SETTINGS_MAX_FRAME_SIZE);
  ev.u.settings.header_table_size = nghttp2_session_get_remote_settings(
      s, NGHTTP2_SETTINGS_HEADER_TABLE_SIZE);
  ev.u.settings.max_header_list_size = nghttp2_session_get_remote_settings(
      s, NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE);
  ev.u.settings.enable_push =
      nghttp2_session_get_remote_settings(s, NGHTTP2_SETTINGS_ENABLE_PUSH);
  emit_list(&cn->streams, &ev);
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f,
                         void *ud) {
  h2_conn *cn = ud;
  h2t_request *r;
  switch (f->hd.type) {
  case NGHTTP2_HEADERS:
    r = stream_req(s, f->hd.stream_id);
    if (!r)
      break;
    if (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
      r->got_eos = 1;
    got_headers(cn, r, f);
    break;
  case NGHTTP2_DATA:
    r = stream_req(s, f->hd.stream_id);
    if (!r)
      break;
    if (f->hd.flags & NGHTTP2_FLAG_END_STREAM)
      r->got_eos = 1;
    if (TRACE_WANTS(&r->tc, H2T_EV_GOT_DATA)) {
      h2t_event ev;
      h2_ev_init(&ev, r, H2T_EV_GOT_DATA);
      ev.u.data.bytes = f->hd.length - (f->data.padlen ? f->data.padlen : 0);
      ev.u.data.stream_window =
          nghttp2_session_get_stream_local_window_size(s, f->hd.stream_id);
      ev.u.data.conn_window = nghttp2_session_get_local_window_size(s);
      trace_emit(&r->tc, &ev);
    }
    break;
  case NGHTTP2_RST_STREAM:
    r = stream_req(s, f->hd.stream_id);
    if (!r)
      break;
    r->rst_code = f->rst_stream.error_code;
    r->rst_by_peer = 1;
    if (TRACE_WANTS(&r->tc, H2T_EV_STREAM_RESET)) {
      h2t_event ev;
      h2_ev_init(&ev, r, H2T_EV_STREAM_RESET);
      ev.u.stream_reset.error_code = f->rst_stream.error_code;
      ev.u.stream_reset.by_peer = 1;
      trace_emit(&r->tc, &ev);
    }
    break;
  case NGHTTP2_SETTINGS:
    if (f->hd.flags & NGHTTP2_FLAG_ACK)
      break;
    cn->settings_seen = 1;
    cn->max_streams = nghttp2_session_get_remote_settings(
        s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    cn->origin->peer_max_streams = cn->max_streams;
    connreg_set_max_streams(cn->reg, cn->max_streams);
    if (list_wants(&cn->streams, H2T_EV_SETTINGS))
      emit_settings(cn);
    h2_pool_dispatch(cn->client, cn->origin);
    break;
  case NGHTTP2_GOAWAY:
    cn->goaway_last_id = f->goaway.last_stream_id;
    cn->drain_reason = H2T_CONN_GOAWAY;
    if (f->goaway.error_code != NGHTTP2_NO_ERROR && !cn->error)
      cn->error = H2T_ERR_GOAWAY;
    connreg_goaway(cn->reg, 0);
    goaway_event(cn, f, 1);
    break;
  default:
    break;
  }
  return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t sid,
                         const uint8_t *data, size_t len, void *ud) {
  h2t_request *r = stream_req(s, sid);
  if (!r)
    return 0;
  r->bytes_recv += len;
  if (!r->on_data)
    return 0;
  h2_req_hold(r);
  int rv = r->on_data(r, data, len, r->user);
  if (rv != 0 && r->state == REQ_ACTIVE)
    abort_req(ud, r, H2T_ERR_CALLBACK);
  h2_req_release(r);
  return 0;
}

/* Detach r from cn's streams (its stream is over or being reset). */
static void detach(h2_conn *cn, h2t_request *r) {
  ev_timer_stop(cn->client->loop, &r->expect_w);
  connreg_stream_close(cn->reg);
  TAILQ_REMOVE(&cn->streams, r, link);
  cn->nstreams--;
  if (r->has_body && !r->body_eof)
    cn->nbody_pending--;
  if (cn->sess && r->stream_id > 0)
    nghttp2_session_set_stream_user_data(cn->sess, r->stream_id, NULL);
  h2_req_put_conn(r, cn);
  r->conn = NULL;
  r->state = REQ_NEW;
}

static void after_stream(h2_conn *cn) {
  if (cn->nstreams == 0 && cn->state == CONN_READY &&
      cn->drain_reason == H2T_CONN_NONE && !cn->close_pending)
    h2_pool_conn_idle(cn);
  if (cn->origin->nqueued)
    h2_pool_dispatch(cn->client, cn->origin);
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t code,
                           void *ud) {
  h2_conn *cn = ud;
  h2t_request *r = stream_req(s, sid);
  if (!r)
    return 0;
  detach(cn, r);
  if (r->got_final && r->got_eos) {
    h2_req_finish(r, 0);
  } else if (r->local_error) {
    h2_req_finish(r, r->local_error);
  } else if (!r->got_first_byte && cn->goaway_last_id >= 0 &&
             sid > cn->goaway_last_id) {
    h2_req_retry_or_fail(r, H2T_RETRY_GOAWAY, H2T_ERR_GOAWAY);
  } else if (r->rst_by_peer && code == NGHTTP2_REFUSED_STREAM) {
    h2_req_retry_or_fail(r, H2T_RETRY_REFUSED_STREAM,
                         H2T_ERR_REFUSED_STREAM);
  } else if (r->rst_by_peer) {
    h2_req_finish(r, H2T_ERR_STREAM_RESET);
  } else if (code == NGHTTP2_REFUSED_STREAM && !r->headers_sent) {
    /* never went out (e.g. the conn was going away): safe to retry */
    h2_req_retry_or_fail(r, H2T_RETRY_CONN_CLOSED, H2T_ERR_CONN_CLOSED);
  } else {
    h2_req_finish(r, cn->error ? cn->error : H2T_ERR_PROTOCOL);
  }
  after_stream(cn);
  return 0;
}

static ssize_t body_read(nghttp2_session *s, int32_t sid, uint8_t *buf,
                         size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *ud) {
  h2_conn *cn = ud;
  h2t_request *r = stream_req(s, sid);
  if (!r) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    return 0;
  }
  r->flow_blocked = 0;
  if (r->waiting_100) {
    r->body_deferred = 1;
    return NGHTTP2_ERR_DEFERRED;
  }
  size_t n;
  if (r->skip_body) {
    n = 0;
    r->body_eof = 1;
  } else if (r->body_read) {
    int eof = 0;
    ssize_t got = r->body_read(r, buf, len, &eof, r->user);
    if (got == H2T_BODY_DEFER) {
      r->body_deferred = 1;
      return NGHTTP2_ERR_DEFERRED;
    }
    if (got < 0 || (size_t)got > len) {
      r->local_error = got < 0 ? (int)got : H2T_ERR_CALLBACK;
      if (r->local_error > -7000 || r->local_error < -7999)
        r->local_error = H2T_ERR_CALLBACK;
      return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    }
    n = (size_t)got;
    r->body_eof = eof != 0;
  } else {
    n = r->body_len - r->body_off;
    if (n > len)
      n = len;
    memcpy(buf, r->body + r->body_off, n);
    r->body_off += n;
    r->body_eof = r->body_off == r->body_len;
  }
  r->bytes_sent += n;
  if (r->body_eof) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    cn->nbody_pending--;
  }
  return (ssize_t)n;
}

int h2_callbacks_new(nghttp2_session_callbacks **out) {
  nghttp2_session_callbacks *cb;
  if (nghttp2_session_callbacks_new(&cb) != 0)
    return H2T_ERR_NOMEM;
  nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
  nghttp2_session_callbacks_set_on_frame_not_send_callback(cb,
                                                           on_frame_not_send);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb,
                                                          on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback2(cb, on_header);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb,
                                                            on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
  *out = cb;
  return 0;
}

/* --- ready, submit, reset, close --------------------------------------- */

void h2_conn_ready(h2_conn *cn) {
  h2t_client *c = cn->client;
  struct ev_loop *loop = c->loop;
  ev_timer_stop(loop, &cn->timer);
  if (nghttp2_session_client_new2(&cn->sess, c->cbs, cn, c->opt) != 0) {
    h2_conn_close(cn, H2T_CONN_DEAD, H2T_ERR_NOMEM);
    return;
  }
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, c->initial_window_size},
  };
  nghttp2_submit_settings(cn->sess, NGHTTP2_FLAG_NONE, iv, 2);
  nghttp2_session_set_local_window_size(cn->sess, NGHTTP2_FLAG_NONE, 0,
                                        CONN_WINDOW);
  cn->state = CONN_READY;
  char auth[300];
  snprintf(auth, sizeof auth, cn->origin->host_is_ip == 6 ? "[%s]:%u" : "%s:%u",
           cn->origin->host, cn->origin->port);
  cn->reg = connreg_add(INFLIGHT_CLIENT, cn->id, cn->addr_str, auth);
  ev_io_stop(loop, &cn->rio);
  ev_io_stop(loop, &cn->wio);
  /* the read watcher stays on for the conn's life: EOF on an idle conn is
   * seen at once and the conn is never handed out dead */
  ev_io_init(&cn->rio, read_cb, cn->fd, EV_READ);
  ev_io_init(&cn->wio, write_cb, cn->fd, EV_WRITE);
  cn->rio.data = cn->wio.data = cn;
  ev_io_start(loop, &cn->rio);
  ev_timer_set(&cn->timer, c->idle_timeout_ms / 1000., 0.);
  cn->in_io++;
  h2_pool_conn_ready(cn);
  h2_conn_flush(cn);
  end_io(cn);
}

int h2_conn_usable(const h2_conn *cn) {
  return cn->state == CONN_READY && cn->drain_reason == H2T_CONN_NONE &&
         !cn->close_pending;
}

uint32_t h2_conn_capacity(const h2_conn *cn) { return cn->max_streams; }

int h2_conn_submit(h2_conn *cn, h2t_request *r) {
  nghttp2_data_provider prd, *pp = NULL;
  if (r->body_read || r->body_len) {
    prd.source.ptr = r;
    prd.read_callback = body_read;
    pp = &prd;
  }
  int32_t id = nghttp2_submit_request(cn->sess, NULL, r->nv, r->nnv, pp, r);
  if (id < 0) {
    if (id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE) {
      cn->drain_reason = H2T_CONN_STREAM_IDS;
      return H2T_ERR_LIMIT;
    }
    return H2T_ERR_NOMEM;
  }
  r->stream_id = id;
  r->state = REQ_ACTIVE;
  r->has_body = pp != NULL;
  if (pp)
    cn->nbody_pending++;
  TAILQ_INSERT_TAIL(&cn->streams, r, link);
  connreg_stream_open(cn->reg);
  if (cn->nstreams++ == 0 && ev_is_active(&cn->timer))
    ev_timer_stop(cn->client->loop, &cn->timer);
  if (!cn->in_io)
    h2_conn_mark_dirty(cn);
  return 0;
}

void h2_conn_reset_stream(h2_conn *cn, h2t_request *r, uint32_t code) {
  if (cn->sess && r->stream_id > 0) {
    nghttp2_submit_rst_stream(cn->sess, NGHTTP2_FLAG_NONE, r->stream_id,
                              code);
    if (TRACE_WANTS(&r->tc, H2T_EV_STREAM_RESET)) {
      h2t_event ev;
      h2_ev_init(&ev, r, H2T_EV_STREAM_RESET);
      ev.u.stream_reset.error_code = code;
      ev.u.stream_reset.by_peer = 0;
      trace_emit(&r->tc, &ev);
    }
    if (!cn->in_io)
      h2_conn_mark_dirty(cn);
  }
  ev_timer_stop(cn->client->loop, &r->expect_w);
  detach(cn, r);
  after_stream(cn);
}

void h2_conn_close(h2_conn *cn, h2t_conn_reason reason, int error) {
  if (cn->state == CONN_CLOSED)
    return;
  if (!cn->close_pending) {
    cn->close_pending = 1;
    cn->close_reason = reason;
    cn->close_error = error;
  }
  if (!cn->in_io)
    do_close(cn);
}

static void release(h2_conn *cn) {
  h2t_client *c = cn->client;
  struct ev_loop *loop = c->loop;
  ev_io_stop(loop, &cn->rio);
  ev_io_stop(loop, &cn->wio);
  ev_timer_stop(loop, &cn->timer);
  ev_timer_stop(loop, &cn->kick);
  connreg_remove(cn->reg);
  cn->reg = NULL;
  h2_dns_cancel(cn->dnsq);
  cn->dnsq = NULL;
  if (cn->dirty) {
    cn->dirty = 0;
    TAILQ_REMOVE(&c->dirty, cn, dirty_link);
  }
  if (cn->sess)
    nghttp2_session_del(cn->sess);
  if (cn->ssl) {
    /* close_notify on a healthy conn: without it OpenSSL marks the session
     * not resumable */
    if (cn->state == CONN_CLOSED && cn->sess &&
        (cn->close_reason == H2T_CONN_IDLE_TIMEOUT ||
         cn->close_reason == H2T_CONN_GOAWAY ||
         cn->close_reason == H2T_CONN_SHUTDOWN)) {
      ERR_clear_error();
      SSL_shutdown(cn->ssl);
      ERR_clear_error();
    }
    SSL_free(cn->ssl);
  }
  if (cn->fd >= 0)
    close(cn->fd);
  h2t_xfree(c->mem, cn->out);
  h2t_xfree(c->mem, cn->addrs);
  h2t_xfree(c->mem, cn);
}

static void do_close(h2_conn *cn) {
  h2t_client *c = cn->client;
  h2_origin *o = cn->origin;
  int error = cn->close_error;
  cn->state = CONN_CLOSED;
  h2_pool_conn_remove(cn, cn->close_reason);
  struct req_list waiters, streams;
  TAILQ_INIT(&waiters);
  TAILQ_INIT(&streams);
  h2t_request *r;
  while ((r = TAILQ_FIRST(&cn->streams))) {
    detach(cn, r);
    TAILQ_INSERT_TAIL(&streams, r, link);
  }
  TAILQ_CONCAT(&waiters, &cn->waiters, link);
  TAILQ_FOREACH(r, &waiters, link) {
    r->conn = NULL;
    r->state = REQ_NEW;
    h2_req_hold(r);
  }
  /* held: a callback below may cancel one that is still on these lists */
  TAILQ_FOREACH(r, &streams, link)
    h2_req_hold(r);
  release(cn);
  /* Now that the conn is gone, settle its requests. */
  while ((r = TAILQ_FIRST(&waiters))) {
    TAILQ_REMOVE(&waiters, r, link);
    if (r->state != REQ_DONE)
      h2_req_finish(r, error);
    h2_req_release(r);
  }
  while ((r = TAILQ_FIRST(&streams))) {
    TAILQ_REMOVE(&streams, r, link);
    int err = error;
    if (r->state == REQ_DONE)
      ;
    else if (err == H2T_ERR_CONN_CLOSED && !r->got_first_byte &&
             h2_req_safe_to_retry(r))
      h2_req_retry_or_fail(r, H2T_RETRY_CONN_CLOSED, err);
    else
      h2_req_finish(r, err);
    h2_req_release(r);
  }
  if (!c->closing)
    h2_pool_dispatch(c, o);
}

void h2_conn_free(h2_conn *cn) {
  /* client teardown: every request is already done */
  cn->in_io++; /* a close the flush decides on must not free cn here */
  if (cn->state == CONN_READY && cn->sess && !cn->close_pending) {
    nghttp2_session_terminate_session(cn->sess, NGHTTP2_NO_ERROR);
    h2_conn_flush(cn);
  }
  cn->state = CONN_CLOSED;
  cn->close_reason = H2T_CONN_SHUTDOWN;
  h2_pool_conn_remove(cn, H2T_CONN_SHUTDOWN);
  release(cn);
}
