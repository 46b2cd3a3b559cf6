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

int h2t__conn_list_wants(struct req_list *l, h2t_event_type t) {
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
void h2t__conn_emit_list(struct req_list *l, h2t_event *tmpl) {
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
    h2_req_emit(r, &ev);
    if (next && !h2t__req_release(next))
      break;
  }
}

void h2t__conn_tmpl_init(h2t_event *ev, h2_conn *cn, h2t_event_type t) {
  memset(ev, 0, sizeof *ev);
  ev->type = t;
  ev->conn_id = cn->id;
  ev->t_us = cn->client->ts ? cn->client->ts : h2t_now_us();
}

/* --- setup ------------------------------------------------------------- */

static void start_dns(h2_conn *cn);

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  h2_conn *cn = w->data;
  if (cn->state != CONN_READY) {
    h2t__conn_close(cn, H2T_CONN_DEAD, H2T_ERR_CONNECT_TIMEOUT);
    return;
  }
  if (cn->nstreams == 0) {
    /* idle timeout: say goodbye properly, then close */
    cn->in_io++;
    cn->drain_reason = H2T_CONN_IDLE_TIMEOUT;
    nghttp2_session_terminate_session(cn->sess, NGHTTP2_NO_ERROR);
    h2t__conn_flush(cn);
    h2t__conn_close(cn, H2T_CONN_IDLE_TIMEOUT, H2T_ERR_CONN_CLOSED);
    h2t__conn_end_io(cn);
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
  if (h2t__conn_list_wants(&cn->waiters, H2T_EV_DNS_DONE)) {
    char strs[8][INET6_ADDRSTRLEN + 8];
    const char *ptrs[8];
    size_t k = cn->naddrs < 8 ? cn->naddrs : 8;
    for (size_t i = 0; i < k; i++) {
      char tmp[80];
      h2t__sockaddr_str(&cn->addrs[i], tmp, sizeof tmp);
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
    h2t__conn_tmpl_init(&ev, cn, H2T_EV_DNS_DONE);
    ev.u.dns_done.addrs = ptrs;
    ev.u.dns_done.naddrs = k;
    ev.u.dns_done.error = error;
    ev.u.dns_done.literal = cn->origin->host_is_ip != 0;
    h2t__conn_emit_list(&cn->waiters, &ev);
  }
  if (error) {
    h2t__conn_close(cn, H2T_CONN_DEAD, error);
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


static void start_dns(h2_conn *cn) {
  if (h2t__conn_list_wants(&cn->waiters, H2T_EV_DNS_START)) {
    h2t_event ev;
    h2t__conn_tmpl_init(&ev, cn, H2T_EV_DNS_START);
    ev.u.dns_start.host = cn->origin->host;
    h2t__conn_emit_list(&cn->waiters, &ev);
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
  cn->dnsq = h2t__dns_lookup(cn->client->dns, cn->origin->host,
                           cn->client->ip_version, dns_done, cn);
  if (!cn->dnsq)
    h2t__conn_close(cn, H2T_CONN_DEAD, H2T_ERR_NOMEM);
}

h2_conn *h2t__conn_new(h2t_client *c, h2_origin *o, h2t_conn_reason why) {
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

void h2t__conn_start(h2_conn *cn) {
  /* From the loop, not from inside h2t_request_submit(): hooks and a fast
   * failure must not run under the caller, and requests submitted in the
   * same iteration all join before dns_start. */
  ev_timer_start(cn->client->loop, &cn->timer);
  ev_timer_init(&cn->kick, kick_cb, 0., 0.);
  cn->kick.data = cn;
  ev_timer_start(cn->client->loop, &cn->kick);
}

static void emit_connect(h2_conn *cn, h2t_event_type t, int error) {
  if (!h2t__conn_list_wants(&cn->waiters, t))
    return;
  h2t_event ev;
  h2t__conn_tmpl_init(&ev, cn, t);
  ev.u.connect.addr = cn->addr_str;
  ev.u.connect.error = error;
  h2t__conn_emit_list(&cn->waiters, &ev);
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
  int e = h2t__tcp_connect_result(cn->fd);
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
    h2t__conn_ready(cn);
}

static void try_connect(h2_conn *cn) {
  struct ev_loop *loop = cn->client->loop;
  cn->state = CONN_CONNECTING;
  while (cn->addr_idx < cn->naddrs) {
    const struct sockaddr_storage *sa = &cn->addrs[cn->addr_idx];
    h2t__sockaddr_str(sa, cn->addr_str, sizeof cn->addr_str);
    emit_connect(cn, H2T_EV_CONNECT_START, 0);
    int fd = h2t__tcp_connect(sa);
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
  h2t__conn_close(cn, H2T_CONN_DEAD, cn->error ? cn->error : H2T_ERR_CONNECT);
}

/* --- TLS handshake ----------------------------------------------------- */

static void tls_done(h2_conn *cn, int error) {
  if (!h2t__conn_list_wants(&cn->waiters, H2T_EV_TLS_HANDSHAKE_DONE))
    return;
  h2t_event ev;
  h2t__conn_tmpl_init(&ev, cn, H2T_EV_TLS_HANDSHAKE_DONE);
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
  h2t__conn_emit_list(&cn->waiters, &ev);
}

static void handshake_step(h2_conn *cn);

int h2t__conn_tls_new_session(SSL *ssl, SSL_SESSION *sess) {
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
      h2t__conn_close(cn, H2T_CONN_DEAD, H2T_ERR_ALPN);
      return;
    }
    tls_done(cn, 0);
    h2t__conn_ready(cn);
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
  h2t__conn_close(cn, H2T_CONN_DEAD, e);
}

static void start_tls(h2_conn *cn) {
  h2t_client *c = cn->client;
  cn->state = CONN_TLS;
  if (h2t__conn_list_wants(&cn->waiters, H2T_EV_TLS_HANDSHAKE_START)) {
    h2t_event ev;
    h2t__conn_tmpl_init(&ev, cn, H2T_EV_TLS_HANDSHAKE_START);
    ev.u.tls.sni = cn->origin->host_is_ip ? NULL : cn->origin->host;
    h2t__conn_emit_list(&cn->waiters, &ev);
  }
  int rv = h2t__client_ssl_ctx(c);
  if (rv == 0 && !(cn->ssl = h2t__tls_new(c->ssl_ctx, cn->fd, cn->origin->host,
                                        cn->origin->host_is_ip, c->insecure)))
    rv = H2T_ERR_TLS;
  if (rv != 0) {
    tls_done(cn, H2T_ERR_TLS);
    h2t__conn_close(cn, H2T_CONN_DEAD, H2T_ERR_TLS);
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
  h2t__conn_close(cn, eof ? H2T_CONN_CLOSED : H2T_CONN_DEAD,
                cn->error ? cn->error : H2T_ERR_CONN_CLOSED);
}

void h2t__conn_end_io(h2_conn *cn) {
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
      h2t__connreg_bytes(cn->reg, (uint64_t)n, 0);
    ssize_t rv = nghttp2_session_mem_recv(cn->sess, buf, (size_t)n);
    cn->client->ts = 0;
    if (rv < 0) {
      cn->error = H2T_ERR_PROTOCOL;
      h2t__conn_close(cn, H2T_CONN_DEAD, H2T_ERR_PROTOCOL);
      goto out;
    }
    if (cn->close_pending)
      goto out;
    if ((size_t)n < sizeof buf && (!cn->ssl || !SSL_has_pending(cn->ssl)))
      break; /* drained: no EAGAIN read needed */
  }
  h2t__conn_flush(cn);
out:
  h2t__conn_end_io(cn);
}

static void write_cb(struct ev_loop *loop, ev_io *w, int revents) {
  h2_conn *cn = w->data;
  h2t__conn_flush(cn);
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
      h2t__connreg_bytes(cn->reg, 0, (uint64_t)n);
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
    h2_req_emit(r, &ev);
  }
}

void h2t__conn_flush(h2_conn *cn) {
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
        h2t__conn_close(cn, H2T_CONN_DEAD, H2T_ERR_PROTOCOL);
        goto out;
      }
      if (n == 0)
        break;
      if (out_append(cn, data, (size_t)n) != 0) {
        h2t__conn_close(cn, H2T_CONN_DEAD, H2T_ERR_NOMEM);
        goto out;
      }
    }
    if (cn->close_pending)
      goto out;
    if (cn->outlen == 0)
      break;
    int w = write_out(cn);
    if (w < 0) {
      h2t__conn_close(cn, H2T_CONN_DEAD, cn->error ? cn->error : H2T_ERR_IO);
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
    h2t__conn_close(cn, why, cn->error ? cn->error : H2T_ERR_CONN_CLOSED);
  }
out:
  h2t__conn_end_io(cn);
}

void h2t__conn_mark_dirty(h2_conn *cn) {
  if (cn->dirty || cn->state != CONN_READY)
    return;
  h2t_client *c = cn->client;
  cn->dirty = 1;
  TAILQ_INSERT_TAIL(&c->dirty, cn, dirty_link);
  if (!ev_is_active(&c->flush_w))
    ev_prepare_start(c->loop, &c->flush_w);
}

/* --- ready, submit, reset, close --------------------------------------- */

void h2t__conn_ready(h2_conn *cn) {
  h2t_client *c = cn->client;
  struct ev_loop *loop = c->loop;
  ev_timer_stop(loop, &cn->timer);
  if (nghttp2_session_client_new2(&cn->sess, c->cbs, cn, c->opt) != 0) {
    h2t__conn_close(cn, H2T_CONN_DEAD, H2T_ERR_NOMEM);
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
  cn->reg = h2t__connreg_add(INFLIGHT_CLIENT, cn->id, cn->addr_str, auth);
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
  h2t__pool_conn_ready(cn);
  h2t__conn_flush(cn);
  /* With read-ahead, the handshake may have pulled the peer's first frames
   * into OpenSSL already: the socket will not signal them again. */
  if (cn->ssl && !cn->close_pending && SSL_has_pending(cn->ssl))
    ev_feed_event(loop, &cn->rio, EV_READ);
  h2t__conn_end_io(cn);
}

int h2t__conn_usable(const h2_conn *cn) {
  return cn->state == CONN_READY && cn->drain_reason == H2T_CONN_NONE &&
         !cn->close_pending;
}

uint32_t h2t__conn_capacity(const h2_conn *cn) { return cn->max_streams; }

void h2t__conn_close(h2_conn *cn, h2t_conn_reason reason, int error) {
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
  h2t__connreg_remove(cn->reg);
  cn->reg = NULL;
  h2t__dns_cancel(cn->dnsq);
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
  h2t__pool_conn_remove(cn, cn->close_reason);
  struct req_list waiters, streams;
  TAILQ_INIT(&waiters);
  TAILQ_INIT(&streams);
  h2t_request *r;
  while ((r = TAILQ_FIRST(&cn->streams))) {
    h2_req_hold(r); /* held: a callback below may cancel it */
    h2t__conn_detach(cn, r);
    TAILQ_INSERT_TAIL(&streams, r, link);
  }
  TAILQ_CONCAT(&waiters, &cn->waiters, link);
  TAILQ_FOREACH(r, &waiters, link) {
    r->conn = NULL;
    r->state = REQ_NEW;
    h2_req_hold(r);
  }
  release(cn);
  /* Now that the conn is gone, settle its requests. */
  while ((r = TAILQ_FIRST(&waiters))) {
    TAILQ_REMOVE(&waiters, r, link);
    if (r->state != REQ_DONE)
      h2t__req_finish(r, error);
    h2t__req_release(r);
  }
  while ((r = TAILQ_FIRST(&streams))) {
    TAILQ_REMOVE(&streams, r, link);
    int err = error;
    if (r->state == REQ_DONE)
      ;
    else if (err == H2T_ERR_CONN_CLOSED && !r->got_first_byte &&
             h2t__req_safe_to_retry(r))
      h2t__req_retry_or_fail(r, H2T_RETRY_CONN_CLOSED, err);
    else
      h2t__req_finish(r, err);
    h2t__req_release(r);
  }
  if (!c->closing)
    h2t__pool_dispatch(c, o);
}

void h2t__conn_free(h2_conn *cn) {
  /* client teardown: every request is already done */
  cn->in_io++; /* a close the flush decides on must not free cn here */
  if (cn->state == CONN_READY && cn->sess && !cn->close_pending) {
    nghttp2_session_terminate_session(cn->sess, NGHTTP2_NO_ERROR);
    h2t__conn_flush(cn);
  }
  cn->state = CONN_CLOSED;
  cn->close_reason = H2T_CONN_SHUTDOWN;
  h2t__pool_conn_remove(cn, H2T_CONN_SHUTDOWN);
  release(cn);
}
