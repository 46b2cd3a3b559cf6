/*
 * One client connection's transport: DNS → TCP → (TLS) → bytes for the
 * nghttp2 session (session.c), and its timers.  Reports up through
 * ctx->cbs only (see conn.h).
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
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509.h>

#include "h2/client/conn.h"
#include "trace/trace_int.h"

#define READ_CHUNK (32 * 1024)
#define OUT_HIGH (64 * 1024) /* stop pulling frames past this much */

static void do_close(h2t__conn *cn);
static void start_tls(h2t__conn *cn);
static void try_connect(h2t__conn *cn);
static void start_dns(h2t__conn *cn);

/* --- nghttp2's allocations ------------------------------------------------ */

/* nghttp2 allocates a few blocks per stream (the stream, its outbound item,
 * the header copy) and frees them when the stream closes, many at once
 * when responses arrive together: past glibc's per-size cache into its
 * slower bins, ~700 instructions a request.  A block cache (the server's
 * too, h2/common/slab.c) keeps them for reuse.  Not with an application
 * allocator, which nghttp2 has never used. */
static void ngmem_init(h2t__conn_ctx *ctx) {
  ctx->slab = ctx->mem ? NULL : h2t__slab_new(NULL);
  if (ctx->slab) /* else (out of memory) nghttp2's own */
    ctx->ngmem = (nghttp2_mem){ctx->slab, h2t__slab_malloc, h2t__slab_free,
                               h2t__slab_calloc, h2t__slab_realloc};
}

nghttp2_mem *h2t__conn_ngmem(h2t__conn_ctx *ctx) {
  return ctx->slab ? &ctx->ngmem : NULL;
}

/* --- the shared context -------------------------------------------------- */

static void flush_cb(struct ev_loop *loop, ev_prepare *w, int revents) {
  h2t__conn_ctx *ctx = w->data;
  h2t__conn *cn;
  while ((cn = TAILQ_FIRST(&ctx->dirty)))
    h2t__conn_flush(cn); /* takes it off the list */
  ev_prepare_stop(loop, w);
  if (ctx->after_flush)
    ctx->after_flush(ctx);
}

int h2t__conn_ctx_init(h2t__conn_ctx *ctx) {
  TAILQ_INIT(&ctx->dirty);
  ngmem_init(ctx);
  ev_prepare_init(&ctx->flush_w, flush_cb);
  ctx->flush_w.data = ctx;
  if (h2t__session_callbacks_new(&ctx->ngcbs) != 0 ||
      nghttp2_option_new(&ctx->ngopt) != 0)
    return H2T_ERR_NOMEM;
  /* the client does its own stream accounting */
  nghttp2_option_set_no_closed_streams(ctx->ngopt, 1);
  int rv = h2t__dns_new(&ctx->dns, ctx->loop, ctx->mem);
  if (rv != 0)
    return rv;
  /* A CA the caller named is loaded now, so that a bad one fails here and
   * not per request.  The system's store is loaded on the first https
   * connection: it costs ~25 ms, which an h2c-only client never needs. */
  if (ctx->ca_file || ctx->ca_path)
    return h2t__conn_ctx_ssl(ctx);
  return 0;
}

void h2t__conn_ctx_fini(h2t__conn_ctx *ctx) {
  if (ctx->dns)
    h2t__dns_del(ctx->dns);
  ctx->dns = NULL;
  if (ctx->loop)
    ev_prepare_stop(ctx->loop, &ctx->flush_w);
  if (ctx->ssl_ctx)
    SSL_CTX_free(ctx->ssl_ctx);
  ctx->ssl_ctx = NULL;
  if (ctx->ngcbs)
    nghttp2_session_callbacks_del(ctx->ngcbs);
  ctx->ngcbs = NULL;
  if (ctx->ngopt)
    nghttp2_option_del(ctx->ngopt);
  ctx->ngopt = NULL;
  h2t__slab_del(ctx->slab); /* every session is gone (h2t__pool_fini) */
  ctx->slab = NULL;
}

static int new_session_cb(SSL *ssl, SSL_SESSION *sess);

int h2t__conn_ctx_ssl(h2t__conn_ctx *ctx) {
  if (ctx->ssl_ctx)
    return 0;
  int rv = h2t__tls_ctx_new(&ctx->ssl_ctx, ctx->ca_file, ctx->ca_path,
                            ctx->insecure);
  if (rv != 0)
    return rv;
  SSL_CTX_set_session_cache_mode(ctx->ssl_ctx,
                                 SSL_SESS_CACHE_CLIENT |
                                     SSL_SESS_CACHE_NO_INTERNAL_STORE);
  SSL_CTX_sess_set_new_cb(ctx->ssl_ctx, new_session_cb);
  return 0;
}

/* --- events to the layer above ------------------------------------------ */

static void tmpl_init(h2t_event *ev, h2t__conn *cn, h2t_event_type t) {
  memset(ev, 0, sizeof *ev);
  ev->type = t;
  ev->conn_id = cn->id;
  ev->t_us = cn->ctx->ts ? cn->ctx->ts : h2t_now_us();
}

static void report(h2t__conn *cn, h2t_event *ev) {
  cn->ctx->cbs->conn_event(cn, ev);
}

/* --- setup --------------------------------------------------------------- */

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  h2t__conn *cn = w->data;
  if (cn->state != H2T__CONN_READY || !cn->settings_seen) {
    /* the connect timeout covers DNS, TCP, TLS and the peer's first
     * SETTINGS: a peer that accepts and says nothing is not connected */
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

static void dns_done(void *arg, int error, const struct sockaddr_storage *addrs,
                     size_t n) {
  h2t__conn *cn = arg;
  cn->dnsq = NULL;
  if (!error) {
    cn->addrs = h2t_xcalloc(cn->ctx->mem, n, sizeof *addrs);
    if (!cn->addrs)
      error = H2T_ERR_NOMEM;
    else {
      memcpy(cn->addrs, addrs, n * sizeof *addrs);
      cn->naddrs = n;
    }
  }
  uint16_t port = htons(cn->port);
  for (size_t i = 0; i < cn->naddrs; i++) {
    if (cn->addrs[i].ss_family == AF_INET6)
      ((struct sockaddr_in6 *)&cn->addrs[i])->sin6_port = port;
    else
      ((struct sockaddr_in *)&cn->addrs[i])->sin_port = port;
  }
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
  tmpl_init(&ev, cn, H2T_EV_DNS_DONE);
  ev.u.dns_done.addrs = ptrs;
  ev.u.dns_done.naddrs = k;
  ev.u.dns_done.error = error;
  ev.u.dns_done.literal = cn->host_is_ip != 0;
  cn->in_io++;
  report(cn, &ev);
  if (error)
    h2t__conn_close(cn, H2T_CONN_DEAD, error);
  else if (!cn->close_pending)
    try_connect(cn);
  h2t__conn_end_io(cn);
}

static int literal_addr(h2t__conn *cn, struct sockaddr_storage *sa) {
  memset(sa, 0, sizeof *sa);
  int want = cn->ctx->ip_version;
  if (cn->host_is_ip == 4 && want != 6) {
    struct sockaddr_in *s4 = (void *)sa;
    s4->sin_family = AF_INET;
    return inet_pton(AF_INET, cn->host, &s4->sin_addr) == 1 ? 0 : -1;
  }
  if (cn->host_is_ip == 6 && want != 4) {
    struct sockaddr_in6 *s6 = (void *)sa;
    s6->sin6_family = AF_INET6;
    return inet_pton(AF_INET6, cn->host, &s6->sin6_addr) == 1 ? 0 : -1;
  }
  return -1;
}

static void start_dns(h2t__conn *cn) {
  h2t_event ev;
  tmpl_init(&ev, cn, H2T_EV_DNS_START);
  ev.u.dns_start.host = cn->host;
  cn->in_io++;
  report(cn, &ev);
  if (cn->close_pending) {
  } else if (cn->host_is_ip) {
    /* no lookup, but the hooks fire in the usual order */
    struct sockaddr_storage sa;
    if (literal_addr(cn, &sa) == 0)
      dns_done(cn, 0, &sa, 1);
    else
      dns_done(cn, H2T_ERR_DNS, NULL, 0);
  } else {
    cn->dnsq = h2t__dns_lookup(cn->ctx->dns, cn->host, cn->ctx->ip_version,
                               dns_done, cn);
    if (!cn->dnsq)
      h2t__conn_close(cn, H2T_CONN_DEAD, H2T_ERR_NOMEM);
  }
  h2t__conn_end_io(cn);
}

h2t__conn *h2t__conn_new(h2t__conn_ctx *ctx, const char *host, uint16_t port,
                         int tls, int host_is_ip, SSL_SESSION **tls_session) {
  h2t__conn *cn = h2t_xcalloc(ctx->mem, 1, sizeof *cn);
  if (!cn)
    return NULL;
  cn->ctx = ctx;
  cn->id = h2t_next_conn_id();
  cn->fd = -1;
  cn->state = H2T__CONN_DNS;
  cn->host = host;
  cn->port = port;
  cn->tls = tls;
  cn->host_is_ip = host_is_ip;
  cn->tls_session = tls_session;
  cn->goaway_last_id = -1;
  TAILQ_INIT(&cn->waiters);
  TAILQ_INIT(&cn->streams);
  ev_timer_init(&cn->timer, timer_cb, ctx->connect_timeout_ms / 1000., 0.);
  cn->timer.data = cn;
  ev_timer_init(&cn->kick, kick_cb, 0., 0.);
  cn->kick.data = cn;
  return cn;
}

void h2t__conn_start(h2t__conn *cn) {
  /* From the loop, not from inside h2t_request_submit(): hooks and a fast
   * failure must not run under the caller, and requests submitted in the
   * same iteration all join before dns_start. */
  ev_timer_start(cn->ctx->loop, &cn->timer);
  ev_timer_start(cn->ctx->loop, &cn->kick);
}

static void emit_connect(h2t__conn *cn, h2t_event_type t, int error) {
  h2t_event ev;
  tmpl_init(&ev, cn, t);
  ev.u.connect.addr = cn->addr_str;
  ev.u.connect.error = error;
  report(cn, &ev);
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

static void ready(h2t__conn *cn);

static void connect_cb(struct ev_loop *loop, ev_io *w, int revents) {
  h2t__conn *cn = w->data;
  ev_io_stop(loop, &cn->wio);
  int e = h2t__tcp_connect_result(cn->fd);
  cn->in_io++;
  emit_connect(cn, H2T_EV_CONNECT_DONE, e ? map_connect_errno(e) : 0);
  if (cn->close_pending) {
  } else if (e) {
    close(cn->fd);
    cn->fd = -1;
    cn->error = map_connect_errno(e);
    cn->addr_idx++;
    try_connect(cn);
  } else if (cn->tls) {
    start_tls(cn);
  } else {
    ready(cn);
  }
  h2t__conn_end_io(cn);
}

static void try_connect(h2t__conn *cn) {
  struct ev_loop *loop = cn->ctx->loop;
  cn->state = H2T__CONN_CONNECTING;
  while (cn->addr_idx < cn->naddrs && !cn->close_pending) {
    const struct sockaddr_storage *sa = &cn->addrs[cn->addr_idx];
    h2t__sockaddr_str(sa, cn->addr_str, sizeof cn->addr_str);
    emit_connect(cn, H2T_EV_CONNECT_START, 0);
    if (cn->close_pending)
      return;
    int fd = cn->ctx->connect_fn ? cn->ctx->connect_fn(sa, cn->ctx->connect_arg)
                                 : h2t__tcp_connect(sa);
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

/* --- TLS handshake ------------------------------------------------------- */

static void tls_done(h2t__conn *cn, int error) {
  h2t_event ev;
  tmpl_init(&ev, cn, H2T_EV_TLS_HANDSHAKE_DONE);
  SSL *ssl = cn->ssl;
  ev.u.tls.sni = cn->host_is_ip ? NULL : cn->host;
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
  report(cn, &ev);
}

static void handshake_step(h2t__conn *cn);

static int new_session_cb(SSL *ssl, SSL_SESSION *sess) {
  h2t__conn *cn = SSL_get_app_data(ssl);
  if (!cn || !cn->tls_session)
    return 0;
  /* sessions are kept per origin: the verify settings are client-wide, so a
   * session verified once for this host:port stays valid for it */
  if (*cn->tls_session)
    SSL_SESSION_free(*cn->tls_session);
  *cn->tls_session = sess;
  return 1; /* we keep the reference */
}

static void tls_io_cb(struct ev_loop *loop, ev_io *w, int revents) {
  h2t__conn *cn = w->data;
  cn->in_io++;
  handshake_step(cn);
  h2t__conn_end_io(cn);
}

static void handshake_step(h2t__conn *cn) {
  struct ev_loop *loop = cn->ctx->loop;
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
    if (!cn->close_pending)
      ready(cn);
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

static void start_tls(h2t__conn *cn) {
  h2t__conn_ctx *ctx = cn->ctx;
  cn->state = H2T__CONN_TLS;
  h2t_event ev;
  tmpl_init(&ev, cn, H2T_EV_TLS_HANDSHAKE_START);
  ev.u.tls.sni = cn->host_is_ip ? NULL : cn->host;
  report(cn, &ev);
  if (cn->close_pending)
    return;
  int rv = h2t__conn_ctx_ssl(ctx);
  if (rv == 0 && !(cn->ssl = h2t__tls_new(ctx->ssl_ctx, cn->fd, cn->host,
                                          cn->host_is_ip, ctx->insecure)))
    rv = H2T_ERR_TLS;
  if (rv != 0) {
    tls_done(cn, H2T_ERR_TLS);
    h2t__conn_close(cn, H2T_CONN_DEAD, H2T_ERR_TLS);
    return;
  }
  SSL_set_app_data(cn->ssl, cn);
  if (cn->tls_session && *cn->tls_session)
    SSL_set_session(cn->ssl, *cn->tls_session); /* best effort */
  ev_io_init(&cn->rio, tls_io_cb, cn->fd, EV_READ);
  ev_io_init(&cn->wio, tls_io_cb, cn->fd, EV_WRITE);
  cn->rio.data = cn->wio.data = cn;
  handshake_step(cn);
}

/* --- I/O ----------------------------------------------------------------- */

void h2t__conn_end_io(h2t__conn *cn) {
  if (--cn->in_io != 0)
    return;
  if (cn->close_pending)
    do_close(cn);
  else if (cn->dirty)
    h2t__conn_flush(cn); /* what the section queued (a reset after a
                            timeout, say) goes now, not after the next poll */
}

/* A fatal error of ours: tell the peer why (GOAWAY), best effort, and show
 * it in the trace like every GOAWAY the client sends. */
static void fail_with_goaway(h2t__conn *cn, uint32_t code, int error) {
  if (!cn->error)
    cn->error = error;
  /* length 8, type, flags 0, stream 0; last_stream_id 0; error code */
  uint8_t f[17] = {0, 0, 8, NGHTTP2_GOAWAY};
  f[13] = (uint8_t)(code >> 24);
  f[14] = (uint8_t)(code >> 16);
  f[15] = (uint8_t)(code >> 8);
  f[16] = (uint8_t)code;
  /* the session cannot be used after a fatal error: write the frame
   * directly, never waiting for the socket */
  if (cn->ssl) {
    ERR_clear_error();
    (void)SSL_write(cn->ssl, f, sizeof f);
    ERR_clear_error();
  } else if (cn->fd >= 0) {
    (void)!send(cn->fd, f, sizeof f, MSG_NOSIGNAL | MSG_DONTWAIT);
  }
  h2t__connreg_goaway(cn->reg, 1);
  h2t_event ev;
  tmpl_init(&ev, cn, H2T_EV_GOAWAY);
  ev.u.goaway.last_stream_id = 0;
  ev.u.goaway.error_code = code;
  ev.u.goaway.by_peer = 0;
  h2t__metrics_event(&ev);
  report(cn, &ev);
  h2t__conn_close(cn, H2T_CONN_DEAD, error);
}

static void fail_io(h2t__conn *cn, int eof) {
  /* EOF: the peer closed it; else an I/O error: dead */
  h2t__conn_close(cn, eof ? H2T_CONN_CLOSED : H2T_CONN_DEAD,
                  cn->error ? cn->error : H2T_ERR_CONN_CLOSED);
}

static void read_cb(struct ev_loop *loop, ev_io *w, int revents) {
  h2t__conn *cn = w->data;
  h2t__conn_ctx *ctx = cn->ctx;
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
      do /* a signal before any byte: read again, not "drained" */
        n = recv(cn->fd, buf, sizeof buf, 0);
      while (n < 0 && errno == EINTR);
      if (n == 0) {
        fail_io(cn, 1);
        goto out;
      }
      if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK)
          break;
        fail_io(cn, errno == ECONNRESET);
        goto out;
      }
    }
    if (!cn->got_bytes) {
      cn->got_bytes = 1;
      /* an HTTP/1.x server answering our preface (h2c prior knowledge to
       * a server that does not speak it) */
      if (n >= 5 && !memcmp(buf, "HTTP/", 5)) {
        cn->error = H2T_ERR_NOT_HTTP2;
        h2t__conn_close(cn, H2T_CONN_DEAD, H2T_ERR_NOT_HTTP2);
        goto out;
      }
    }
    ctx->ts = h2t_now_us();
    if (cn->reg)
      h2t__connreg_bytes(cn->reg, (uint64_t)n, 0);
    ssize_t rv = nghttp2_session_mem_recv(cn->sess, buf, (size_t)n);
    if (rv == NGHTTP2_ERR_FLOODED)
      fail_with_goaway(cn, NGHTTP2_ENHANCE_YOUR_CALM, H2T_ERR_FLOOD);
    else if (rv == NGHTTP2_ERR_TOO_MANY_CONTINUATIONS)
      /* nghttp2's own bound on a header block's frames (CVE-2024-28182):
       * the connection cannot be kept, but the cause has a name */
      fail_with_goaway(cn, NGHTTP2_ENHANCE_YOUR_CALM,
                       H2T_ERR_HEADERS_TOO_LARGE);
    else if (rv < 0)
      fail_with_goaway(cn, NGHTTP2_PROTOCOL_ERROR, H2T_ERR_PROTOCOL);
    ctx->ts = 0;
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
  h2t__conn_flush(w->data);
}

/* Write what is in cn->out.  1: all written; 0: would block; -1: error. */
static int write_out(h2t__conn *cn) {
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
        if (errno == EINTR)
          continue; /* not "would block": nothing wakes us for it */
        if (errno == EAGAIN || errno == EWOULDBLOCK)
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

static int out_append(h2t__conn *cn, const uint8_t *data, size_t n) {
  if (cn->outlen + n > cn->outcap) {
    size_t cap = cn->outcap ? cn->outcap : 16384;
    while (cap < cn->outlen + n)
      cap *= 2;
    uint8_t *p = h2t_xrealloc(cn->ctx->mem, cn->out, cap);
    if (!p)
      return -1;
    cn->out = p;
    cn->outcap = cap;
  }
  memcpy(cn->out + cn->outlen, data, n);
  cn->outlen += n;
  return 0;
}

int h2t__conn_send_body(h2t__conn *cn, const uint8_t *hd, size_t hdlen,
                        const uint8_t *data, size_t len) {
  /* nghttp2 would otherwise pack every frame the windows allow into one
   * mem_send call, past OUT_HIGH */
  if (cn->outlen >= OUT_HIGH)
    return NGHTTP2_ERR_WOULDBLOCK;
  if (out_append(cn, hd, hdlen) != 0 || out_append(cn, data, len) != 0)
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  return 0;
}

void h2t__conn_flush(h2t__conn *cn) {
  h2t__conn_ctx *ctx = cn->ctx;
  if (cn->dirty) {
    cn->dirty = 0;
    TAILQ_REMOVE(&ctx->dirty, cn, dirty_link);
  }
  if (cn->state != H2T__CONN_READY || cn->close_pending)
    return;
  /* events of the frames written here may read the clock into ctx->ts,
   * once for all of them: what it was is put back at the end */
  uint64_t ts = ctx->ts;
  cn->in_io++;
  for (;;) {
    while (cn->outlen < OUT_HIGH) {
      const uint8_t *data;
      ssize_t n = nghttp2_session_mem_send(cn->sess, &data);
      if (n < 0) {
        h2t__conn_close(cn, H2T_CONN_DEAD,
                        n == NGHTTP2_ERR_FLOODED ? H2T_ERR_FLOOD
                                                 : H2T_ERR_PROTOCOL);
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
        ev_io_start(ctx->loop, &cn->wio);
      goto blocked;
    }
    if (!nghttp2_session_want_write(cn->sess))
      break;
  }
  if (ev_is_active(&cn->wio))
    ev_io_stop(ctx->loop, &cn->wio);
blocked:
  if (cn->nbody_pending)
    ctx->cbs->flushed(cn);
  if (!cn->close_pending && !nghttp2_session_want_read(cn->sess) &&
      !nghttp2_session_want_write(cn->sess) && cn->outlen == 0) {
    h2t_conn_reason why = cn->drain_reason != H2T_CONN_NONE
                              ? cn->drain_reason
                              : H2T_CONN_CLOSED;
    h2t__conn_close(cn, why, cn->error ? cn->error : H2T_ERR_CONN_CLOSED);
  }
out:
  ctx->ts = ts;
  h2t__conn_end_io(cn);
}

void h2t__conn_mark_dirty(h2t__conn *cn) {
  if (cn->dirty || cn->state != H2T__CONN_READY)
    return;
  h2t__conn_ctx *ctx = cn->ctx;
  cn->dirty = 1;
  TAILQ_INSERT_TAIL(&ctx->dirty, cn, dirty_link);
  if (!ev_is_active(&ctx->flush_w))
    ev_prepare_start(ctx->loop, &ctx->flush_w);
}

/* --- ready, close -------------------------------------------------------- */

static void ready(h2t__conn *cn) {
  h2t__conn_ctx *ctx = cn->ctx;
  struct ev_loop *loop = ctx->loop;
  /* the connect timer keeps running until the peer's first SETTINGS */
  if (h2t__session_start(cn) != 0) {
    h2t__conn_close(cn, H2T_CONN_DEAD, H2T_ERR_NOMEM);
    return;
  }
  cn->state = H2T__CONN_READY;
  char auth[300];
  snprintf(auth, sizeof auth, cn->host_is_ip == 6 ? "[%s]:%u" : "%s:%u",
           cn->host, cn->port);
  cn->reg = h2t__connreg_add(INFLIGHT_CLIENT, cn->id, cn->addr_str, auth);
  ev_io_stop(loop, &cn->rio);
  ev_io_stop(loop, &cn->wio);
  /* the read watcher stays on for the conn's life: EOF on an idle conn is
   * seen at once and the conn is never handed out dead */
  ev_io_init(&cn->rio, read_cb, cn->fd, EV_READ);
  ev_io_init(&cn->wio, write_cb, cn->fd, EV_WRITE);
  cn->rio.data = cn->wio.data = cn;
  ev_io_start(loop, &cn->rio);
  cn->in_io++;
  ctx->cbs->ready(cn);
  h2t__conn_flush(cn);
  /* With read-ahead, the handshake may have pulled the peer's first frames
   * into OpenSSL already: the socket will not signal them again. */
  if (cn->ssl && !cn->close_pending && SSL_has_pending(cn->ssl))
    ev_feed_event(loop, &cn->rio, EV_READ);
  h2t__conn_end_io(cn);
}

void h2t__conn_idle(h2t__conn *cn) {
  h2t__conn_ctx *ctx = cn->ctx;
  if (cn->state != H2T__CONN_READY || cn->close_pending)
    return;
  if (h2t__conn_takes_none(cn) &&
      cn->drain_reason == H2T_CONN_NONE) {
    /* it can take no stream: make room for one that can */
    cn->drain_reason = H2T_CONN_MAX_STREAMS;
    cn->in_io++;
    nghttp2_session_terminate_session(cn->sess, NGHTTP2_NO_ERROR);
    h2t__conn_flush(cn);
    h2t__conn_close(cn, H2T_CONN_MAX_STREAMS, H2T_ERR_CONN_CLOSED);
    h2t__conn_end_io(cn);
    return;
  }
  if (!cn->settings_seen || cn->drain_reason != H2T_CONN_NONE)
    return; /* the connect timer runs; a draining conn closes by itself */
  ev_timer_stop(ctx->loop, &cn->timer);
  ev_timer_set(&cn->timer, ctx->idle_timeout_ms / 1000., 0.);
  ev_timer_start(ctx->loop, &cn->timer);
}

int h2t__conn_usable(const h2t__conn *cn) {
  return cn->state == H2T__CONN_READY && cn->drain_reason == H2T_CONN_NONE &&
         !cn->close_pending && !h2t__conn_takes_none(cn);
}

uint32_t h2t__conn_capacity(const h2t__conn *cn, uint32_t guess) {
  return cn->settings_seen ? cn->max_streams : guess;
}

void h2t__conn_close(h2t__conn *cn, h2t_conn_reason reason, int error) {
  if (cn->state == H2T__CONN_CLOSED)
    return;
  if (!cn->close_pending) {
    cn->close_pending = 1;
    cn->close_reason = reason;
    cn->close_error = error;
  }
  if (!cn->in_io)
    do_close(cn);
}

static void release(h2t__conn *cn) {
  h2t__conn_ctx *ctx = cn->ctx;
  struct ev_loop *loop = ctx->loop;
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
    TAILQ_REMOVE(&ctx->dirty, cn, dirty_link);
  }
  if (cn->sess)
    nghttp2_session_del(cn->sess);
  cn->sess = NULL;
  if (cn->ssl) {
    /* close_notify on a healthy conn: without it OpenSSL marks the session
     * not resumable */
    if (cn->close_reason == H2T_CONN_IDLE_TIMEOUT ||
        cn->close_reason == H2T_CONN_GOAWAY ||
        cn->close_reason == H2T_CONN_SHUTDOWN ||
        cn->close_reason == H2T_CONN_MAX_STREAMS) {
      ERR_clear_error();
      SSL_shutdown(cn->ssl);
      ERR_clear_error();
    }
    SSL_free(cn->ssl);
    cn->ssl = NULL;
  }
  if (cn->fd >= 0)
    close(cn->fd);
  cn->fd = -1;
  h2t_xfree(ctx->mem, cn->out);
  cn->out = NULL;
  h2t_xfree(ctx->mem, cn->addrs);
  cn->addrs = NULL;
}

static void do_close(h2t__conn *cn) {
  cn->state = H2T__CONN_CLOSED;
  release(cn);
  cn->in_io++; /* a callback closing it again must not free it twice */
  cn->ctx->cbs->closed(cn, cn->close_reason, cn->close_error);
  h2t_xfree(cn->ctx->mem, cn);
}

void h2t__conn_free(h2t__conn *cn) {
  cn->in_io++; /* a close the flush decides on must not free cn here */
  if (cn->state == H2T__CONN_READY && cn->sess && !cn->close_pending) {
    nghttp2_session_terminate_session(cn->sess, NGHTTP2_NO_ERROR);
    h2t__conn_flush(cn);
  }
  cn->state = H2T__CONN_CLOSED;
  cn->close_reason = H2T_CONN_SHUTDOWN;
  release(cn);
  h2t_xfree(cn->ctx->mem, cn);
}
