/*
 * A server connection's bytes: socket input, TLS on memory BIOs, and output
 * batched once per loop iteration into one writer item.  It knows nothing
 * of HTTP/2: plaintext goes up, and output comes down, through the
 * srv_io_callbacks the session registered.
 */
#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>

#include "h2/server/server_int.h"

#define READ_CHUNK 65536
#define TLS_RECORD 16384
#define FLUSH_PIECE 32768
/* DATA payloads this big go to the writer by reference (h2c); smaller ones
 * are copied once into the flush's buffer, which costs less than an item
 * of their own and its release. */
#define REF_MIN 1024

void h2t__srv_io_flush(srv_io *io) {
  if (io->flush_queued || io->dying)
    return;
  io->flush_queued = 1;
  io->flush_next = io->x->flush_head;
  io->x->flush_head = io;
}

/* ------------------------------------------------------------------------
 * output
 */

static int out_reserve(srv_io *io, size_t n) {
  if (io->outcap - io->outlen >= n)
    return 0;
  size_t cap;
  uint8_t *p = h2t__writer_buf_grow(io->x->writer, io->out, io->outlen + n, &cap);
  if (!p)
    return -1;
  io->out = p;
  io->outcap = cap;
  return 0;
}

/* TLS output (records, alerts, handshake) lands here. */
static int tls_sink(void *arg, const uint8_t *data, size_t len) {
  srv_io *io = arg;
  if (out_reserve(io, len) != 0)
    return -1;
  memcpy(io->out + io->outlen, data, len);
  io->outlen += len;
  return 0;
}

static int tls_encrypt(srv_io *io) {
  if (!io->ptlen)
    return 0;
  int r = SSL_write(io->ssl, io->pt, (int)io->ptlen);
  io->ptlen = 0;
  if (r <= 0) {
    ERR_clear_error();
    return -1;
  }
  return 0;
}

static int out_append(srv_io *io, const uint8_t *data, size_t n) {
  if (!io->ssl) {
    if (out_reserve(io, n) != 0)
      return -1;
    memcpy(io->out + io->outlen, data, n);
    io->outlen += n;
    return 0;
  }
  if (!io->pt) {
    io->pt = h2t_xmalloc(io->x->mem, TLS_RECORD);
    if (!io->pt)
      return -1;
  }
  while (n) {
    if (!io->ptlen && n >= TLS_RECORD) { /* a whole record: no staging */
      int r = SSL_write(io->ssl, data, TLS_RECORD);
      if (r <= 0) {
        ERR_clear_error();
        return -1;
      }
      data += TLS_RECORD;
      n -= TLS_RECORD;
      continue;
    }
    size_t k = TLS_RECORD - io->ptlen < n ? TLS_RECORD - io->ptlen : n;
    memcpy(io->pt + io->ptlen, data, k);
    io->ptlen += k;
    data += k;
    n -= k;
    if (io->ptlen == TLS_RECORD && tls_encrypt(io) != 0)
      return -1;
  }
  return 0;
}

/* len bytes of file fd at off into the output, read straight into it. */
static int out_append_file(srv_io *io, int fd, off_t off, size_t len) {
  while (len) {
    uint8_t *dst;
    size_t room;
    if (!io->ssl) {
      if (out_reserve(io, len) != 0)
        return -1;
      dst = io->out + io->outlen;
      room = len;
    } else {
      if (!io->pt && !(io->pt = h2t_xmalloc(io->x->mem, TLS_RECORD)))
        return -1;
      dst = io->pt + io->ptlen;
      room = TLS_RECORD - io->ptlen < len ? TLS_RECORD - io->ptlen : len;
    }
    ssize_t k = pread(fd, dst, room, off);
    if (k < 0 && errno == EINTR)
      continue;
    if (k <= 0)
      return -1; /* an error, or a file shorter than promised */
    off += k;
    len -= (size_t)k;
    if (!io->ssl) {
      io->outlen += (size_t)k;
    } else {
      io->ptlen += (size_t)k;
      if (io->ptlen == TLS_RECORD && tls_encrypt(io) != 0)
        return -1;
    }
  }
  return 0;
}

/* The output buffer (*n bytes), detached for the writer, counted as one
 * flush of *n + extra bytes (extra: what goes with it by reference). */
static inline uint8_t *out_take(srv_io *io, size_t extra, size_t *n) {
  uint8_t *buf = io->out;
  *n = io->outlen;
  io->out = NULL;
  io->outlen = io->outcap = 0;
  io->x->st.bytes_out += *n + extra;
  io->x->st.writer_flushes++;
  h2t__connreg_bytes(io->reg, 0, *n + extra); /* inflight */
  return buf;
}

static int push_out(srv_io *io) {
  if (!io->outlen)
    return 0;
  size_t n;
  uint8_t *buf = out_take(io, 0, &n);
  return h2t__writer_push(io->wc, buf, n);
}

static int out_full(srv_io *io);

int h2t__srv_io_send_body(srv_io *io, const uint8_t *hd, size_t hdlen,
                          const uint8_t *data, int fd, off_t off, size_t len,
                          writer_release_fn rel, void *arg) {
  /* nghttp2 would otherwise pack a whole window of frames into one pull */
  int full = out_full(io);
  if (full)
    return full < 0 ? -1 : -2;
  if (out_append(io, hd, hdlen) != 0)
    return -1;
  if (io->ssl || len < REF_MIN) {
    /* TLS: a big payload is encrypted from where it is (its frame header
     * and what came before close the record under way); SSL_write's is
     * then its one plaintext copy */
    if (data && io->ssl && len >= TLS_RECORD && tls_encrypt(io) != 0)
      return -1;
    if (data)
      return out_append(io, data, len) != 0 ? -1 : 0;
    return out_append_file(io, fd, off, len) != 0 ? -1 : 0;
  }
  size_t n;
  uint8_t *buf = out_take(io, len, &n);
  return h2t__writer_push_ref(io->wc, buf, n, data, fd, off, len, rel, arg) != 0
             ? -1
             : 1;
}

/* The layer above ends the connection (and frees io). */
static void io_closed(srv_io *io, int abort) { io->cb->closed(io->arg, abort); }

/* Is the writer's queue full?  Hands over what is pending when it nears
 * the limit; 1 (a notify comes when it drained to half), 0, or -1 when
 * the connection must be aborted. */
static int out_full(srv_io *io) {
  srv_ctx *x = io->x;
  size_t limit = x->cfg.write_queue_limit;
  if (h2t__writer_conn_queued(io->wc) + io->outlen + io->ptlen < limit)
    return 0;
  if ((io->ssl && tls_encrypt(io) != 0) || push_out(io) != 0)
    return -1;
  if (h2t__writer_conn_queued(io->wc) < limit ||
      h2t__writer_conn_want_notify(io->wc, limit / 2))
    return 0;
  if (!io->blocked)
    x->st.writer_blocked++;
  io->blocked = 1;
  if (h2t__writer_conn_queued(io->wc) >= 2 * (size_t)limit &&
      !io->read_paused) {
    io->read_paused = 1;
    ev_io_stop(x->loop, &io->rio);
  }
  return 1;
}

/* Produce output until the session has nothing more or the writer queue is
 * full; hand it over as one item; close when the session is over. */
static void io_flush(srv_io *io) {
  if (!io->ssl || io->tls_done) {
    for (;;) {
      int full = out_full(io);
      if (full < 0) {
        io_closed(io, 1);
        return;
      }
      if (full)
        break;
      const uint8_t *data;
      ssize_t n = io->cb->pull(io->arg, &data);
      if (n < 0) {
        io_closed(io, 1);
        return;
      }
      if (n == 0)
        break;
      if (out_append(io, data, (size_t)n) != 0) {
        io_closed(io, 1);
        return;
      }
      /* A big TLS flush goes out in pieces: the writer (and the peer)
       * start on the first while we encrypt the rest.  (For h2c there is
       * nothing to overlap: one item is cheaper.) */
      if (io->ssl && io->outlen >= FLUSH_PIECE && push_out(io) != 0) {
        io_closed(io, 1);
        return;
      }
    }
    if (io->ssl && tls_encrypt(io) != 0) {
      io_closed(io, 1);
      return;
    }
  }
  if (push_out(io) != 0) {
    io_closed(io, 1);
    return;
  }
  if ((!io->ssl || io->tls_done) && io->cb->over(io->arg))
    io_closed(io, 0);
}

void h2t__srv_io_flush_pending(srv_ctx *x) {
  x->in_burst = 1;
  x->now_us = 0;
  srv_io *list = x->flush_head;
  x->flush_head = NULL;
  while (list) {
    srv_io *io = list;
    list = io->flush_next;
    io->flush_queued = 0;
    io_flush(io);
  }
  x->in_burst = 0;
}

static void writer_notify(void *arg) {
  srv_io *io = arg;
  if (h2t__writer_conn_failed(io->wc)) {
    io_closed(io, 1);
    return;
  }
  io->blocked = 0;
  if (io->read_paused) {
    io->read_paused = 0;
    ev_io_start(io->x->loop, &io->rio);
  }
  h2t__srv_io_flush(io);
}

/* ------------------------------------------------------------------------
 * input
 */

/* Plaintext up to the session.  Returns 0, or -1 when input is over. */
static int feed(srv_io *io, const uint8_t *data, size_t len) {
  if (io->cb->recv(io->arg, data, len) == 0)
    return 0;
  /* The session said GOAWAY and closes after it is written. */
  io->input_dead = 1;
  ev_io_stop(io->x->loop, &io->rio);
  return -1;
}

static void tls_handshake_trace(srv_io *io, int error) {
  if (!TRACE_WANTS(&io->x->tc, H2T_EV_SRV_TLS_HANDSHAKE_DONE))
    return;
  h2t_event ev = {.type = H2T_EV_SRV_TLS_HANDSHAKE_DONE};
  const unsigned char *alpn = NULL;
  unsigned alen = 0;
  char proto[32] = "";
  ev.u.tls.error = error;
  ev.u.tls.sni = SSL_get_servername(io->ssl, TLSEXT_NAMETYPE_host_name);
  if (!error) {
    SSL_get0_alpn_selected(io->ssl, &alpn, &alen);
    if (alpn && alen < sizeof proto) {
      memcpy(proto, alpn, alen);
      proto[alen] = '\0';
      ev.u.tls.alpn = proto;
    }
    ev.u.tls.version = SSL_get_version(io->ssl);
    ev.u.tls.cipher = SSL_get_cipher_name(io->ssl);
    ev.u.tls.resumed = SSL_session_reused(io->ssl);
  }
  srv_emit_conn(io->x, io->id, &ev);
}

/* Ciphertext in.  Returns 0, or -1 when the connection must go now. */
static int tls_feed(srv_io *io, const uint8_t *data, size_t len) {
  if (BIO_write(io->rbio, data, (int)len) != (int)len)
    return -1;
  if (!io->tls_done) {
    int r = SSL_do_handshake(io->ssl);
    if (r != 1) {
      int e = SSL_get_error(io->ssl, r);
      ERR_clear_error();
      if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        return 0;
      tls_handshake_trace(io, H2T_ERR_TLS);
      push_out(io); /* the alert */
      return -1;
    }
    const unsigned char *alpn = NULL;
    unsigned alen = 0;
    SSL_get0_alpn_selected(io->ssl, &alpn, &alen);
    if (alpn && !(alen == 2 && !memcmp(alpn, "h2", 2))) {
      tls_handshake_trace(io, H2T_ERR_ALPN);
      return -1;
    }
    io->tls_done = 1;
    tls_handshake_trace(io, 0);
  }
  uint8_t buf[TLS_RECORD];
  while (!io->input_dead) {
    int r = SSL_read(io->ssl, buf, sizeof buf);
    if (r > 0) {
      if (feed(io, buf, (size_t)r) != 0)
        break;
      continue;
    }
    int e = SSL_get_error(io->ssl, r);
    ERR_clear_error();
    if (e == SSL_ERROR_WANT_READ)
      break;
    return -1; /* close_notify or a TLS error */
  }
  return 0;
}

static void io_read(struct ev_loop *loop, srv_io *io) {
  uint8_t buf[READ_CHUNK];
  for (int i = 0; i < 4 && !io->input_dead; i++) {
    ssize_t n = recv(io->fd, buf, sizeof buf, 0);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        break;
      io_closed(io, 1);
      return;
    }
    if (n == 0) {
      io_closed(io, 1);
      return;
    }
    io->x->st.bytes_in += (uint64_t)n;
    h2t__connreg_bytes(io->reg, (uint64_t)n, 0); /* inflight */
    /* h2c failures end in a GOAWAY written by the next flush; TLS ones
     * (handshake, alert, close_notify) end the connection now. */
    if (!io->ssl) {
      feed(io, buf, (size_t)n);
    } else if (tls_feed(io, buf, (size_t)n) != 0) {
      io_closed(io, 0);
      return;
    }
    if ((size_t)n < sizeof buf)
      break;
  }
  io->last_activity = ev_now(loop);
  h2t__srv_io_flush(io);
}

static void read_cb(struct ev_loop *loop, ev_io *w, int revents) {
  srv_io *io = w->data;
  srv_ctx *x = io->x;
  x->in_burst = 1;
  x->now_us = 0;
  io_read(loop, io);
  x->in_burst = 0;
}

/* ------------------------------------------------------------------------
 * life
 */

int h2t__srv_io_init(srv_io *io, srv_ctx *x, int fd, uint64_t id,
                     SSL_CTX *ssl_ctx, const srv_io_callbacks *cb, void *arg) {
  memset(io, 0, sizeof *io);
  io->x = x;
  io->cb = cb;
  io->arg = arg;
  io->fd = fd;
  io->id = id;
  if (ssl_ctx) {
    io->sink = (srv_tls_sink){tls_sink, io};
    io->ssl = h2t__srv_tls_conn_new(ssl_ctx, &io->rbio, &io->sink);
    if (!io->ssl)
      return -1;
  }
  io->wc = h2t__writer_conn_new(x->writer, fd, writer_notify, io);
  if (!io->wc) {
    if (io->ssl)
      SSL_free(io->ssl);
    io->ssl = NULL;
    return -1;
  }
  io->last_activity = ev_now(x->loop);
  ev_io_init(&io->rio, read_cb, fd, EV_READ);
  io->rio.data = io;
  ev_io_start(x->loop, &io->rio);
  return 0;
}

void h2t__srv_io_stop(srv_io *io) {
  srv_ctx *x = io->x;
  /* The layers above may still answer requests while they let go: that
   * must not queue io for a flush any more. */
  io->dying = 1;
  if (io->flush_queued) {
    for (srv_io **p = &x->flush_head; *p; p = &(*p)->flush_next)
      if (*p == io) {
        *p = io->flush_next;
        break;
      }
    io->flush_queued = 0;
  }
  ev_io_stop(x->loop, &io->rio);
}

void h2t__srv_io_close(srv_io *io, int abort) {
  srv_ctx *x = io->x;
  if (!abort && io->ssl && io->tls_done) {
    SSL_shutdown(io->ssl); /* close_notify, into the output */
    ERR_clear_error();
  }
  if (io->ssl)
    SSL_free(io->ssl);
  if (!abort)
    push_out(io);
  h2t__writer_buf_put(x->writer, io->out);
  h2t_xfree(x->mem, io->pt);
  h2t__writer_conn_close(io->wc, abort); /* the writer closes the fd */
}
