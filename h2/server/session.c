/*
 * A server connection: its nghttp2 session and callbacks, its handshake and
 * idle timer, its end.  Bytes come from io.c (srv_io_callbacks); what
 * happens to streams goes up to request.c through x->sess_cb.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <h2trace/inflight.h>
#include "h2/server/server_int.h"

static void conn_finish(srv_conn *c, int abort);

/* ------------------------------------------------------------------------
 * for request.c
 */

static ssize_t data_read(nghttp2_session *sess, int32_t sid, uint8_t *buf,
                         size_t length, uint32_t *flags,
                         nghttp2_data_source *src, void *user) {
  srv_conn *c = user;
  return c->x->sess_cb->body_read(src->ptr, buf, length, flags);
}

/* ------------------------------------------------------------------------
 * a stream's request: nghttp2's stream user data, behind sid_cache
 */

/* sid's entry (client streams are odd: sid >> 1 numbers them) */
static inline srv_sid_slot *sid_entry(srv_conn *c, int32_t sid) {
  return &c->sid_cache[((uint32_t)sid >> 1) % SRV_SID_CACHE];
}

static void *stream_req(srv_conn *c, int32_t sid) {
  srv_sid_slot *e = sid_entry(c, sid);
  if (e->sid != sid) {
    e->sid = sid;
    e->req = nghttp2_session_get_stream_user_data(c->sess, sid);
  }
  return e->req;
}

static void set_req(srv_conn *c, int32_t sid, void *r) {
  nghttp2_session_set_stream_user_data(c->sess, sid, r);
  *sid_entry(c, sid) = (srv_sid_slot){sid, r};
}

int h2t__srv_sess_respond(srv_conn *c, int32_t sid, const nghttp2_nv *nva,
                          size_t n, void *body_req) {
  nghttp2_data_provider prd = {.source.ptr = body_req, .read_callback = data_read};
  return nghttp2_submit_response(c->sess, sid, nva, n, body_req ? &prd : NULL);
}

int h2t__srv_sess_trailers(srv_conn *c, int32_t sid, const nghttp2_nv *nva,
                           size_t n) {
  return nghttp2_submit_trailer(c->sess, sid, nva, n);
}

int h2t__srv_sess_reset(srv_conn *c, int32_t sid, uint32_t code) {
  return nghttp2_submit_rst_stream(c->sess, NGHTTP2_FLAG_NONE, sid, code);
}

int h2t__srv_sess_resume(srv_conn *c, int32_t sid) {
  return nghttp2_session_resume_data(c->sess, sid);
}

void h2t__srv_sess_detach(srv_conn *c, int32_t sid) { set_req(c, sid, NULL); }

void h2t__srv_sess_windows(srv_conn *c, int32_t sid, int32_t *stream_window,
                           int32_t *conn_window) {
  *stream_window = nghttp2_session_get_stream_remote_window_size(c->sess, sid);
  *conn_window = nghttp2_session_get_remote_window_size(c->sess);
}

void h2t__srv_sess_flush(srv_conn *c) { h2t__srv_io_flush(&c->io); }

int h2t__srv_sess_send_body(srv_conn *c, const uint8_t *hd, const uint8_t *data,
                            int fd, off_t off, size_t len,
                            writer_release_fn rel, void *arg) {
  return h2t__srv_io_send_body(&c->io, hd, 9, data, fd, off,
                               len, rel, arg);
}

void h2t__srv_sess_consume(srv_conn *c, int32_t sid, size_t n) {
  if (!n)
    return;
  /* the stream may be gone: nghttp2 still credits the connection */
  nghttp2_session_consume(c->sess, sid, n);
  h2t__srv_io_flush(&c->io); /* the WINDOW_UPDATE, if one is due */
}

int h2t__srv_sess_peer_may_send(srv_conn *c, int32_t sid) {
  return nghttp2_session_get_stream_local_window_size(c->sess, sid) > 0 &&
         nghttp2_session_get_local_window_size(c->sess) > 0;
}

int h2t__srv_sess_write_blocked(srv_conn *c, int32_t sid) {
  return c->io.blocked ||
         nghttp2_session_get_stream_remote_window_size(c->sess, sid) <= 0 ||
         nghttp2_session_get_remote_window_size(c->sess) <= 0;
}

void h2t__srv_conn_shed(srv_conn *c, int32_t sid, h2t_shed_reason why,
                        h2t_shed_action what) {
  srv_ctx *x = c->x;
  h2t_event m = {.type = H2T_EV_SRV_LOAD_SHED, .stream_id = sid};
  m.u.load_shed.reason = why;
  m.u.load_shed.action = what;
  h2t__metrics_event(&m); /* inflight: counted whether traced or not */
  if (TRACE_WANTS(&x->tc, H2T_EV_SRV_LOAD_SHED))
    srv_emit_conn(x, c->io.id, &m);
}

/* ------------------------------------------------------------------------
 * nghttp2 callbacks
 */

/* RFC 9113 §5.1.1: a new stream id lower than one already used is a
 * connection error.  nghttp2 ignores such HEADERS when it cannot tell them
 * from trailers on a stream it forgot, so tell them apart here: trailers
 * can only target a stream that still exists or one we reset lately. */
static int on_begin_frame(nghttp2_session *sess, const nghttp2_frame_hd *hd,
                          void *user) {
  srv_conn *c = user;
  /* A header block runs from its HEADERS to the end of the frame with
   * END_HEADERS (on_frame_recv); nothing else may come in between, so one
   * time per connection is enough for header_timeout_ms.  Any other frame
   * means no block is open (one nghttp2 refused and skipped, say). */
  if (hd->type == NGHTTP2_HEADERS) {
    if (!c->hdr_since)
      c->hdr_since = ev_now(c->x->loop);
  } else if (hd->type != NGHTTP2_CONTINUATION) {
    c->hdr_since = 0;
  }
  if (hd->type != NGHTTP2_HEADERS || !(hd->stream_id & 1))
    return 0;
  if (hd->stream_id > c->max_sid) {
    c->max_sid = hd->stream_id;
    return 0;
  }
  if (nghttp2_session_find_stream(sess, hd->stream_id))
    return 0;
  for (unsigned i = 0; i < 32; i++)
    if (c->reset_ring[i] == hd->stream_id)
      return 0;
  return NGHTTP2_ERR_CALLBACK_FAILURE; /* recv answers with GOAWAY */
}

static int on_begin_headers(nghttp2_session *sess, const nghttp2_frame *f,
                            void *user) {
  srv_conn *c = user;
  if (f->hd.type != NGHTTP2_HEADERS || f->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0;
  c->ready = 1;
  void *r = c->x->sess_cb->stream_open(c, f->hd.stream_id);
  if (r) {
    c->nreqs++;
    set_req(c, f->hd.stream_id, r);
  }
  return 0;
}

static int on_header(nghttp2_session *sess, const nghttp2_frame *f,
                     nghttp2_rcbuf *name, nghttp2_rcbuf *value, uint8_t flags,
                     void *user) {
  srv_conn *c = user;
  void *r = stream_req(c, f->hd.stream_id);
  if (!r || f->hd.type != NGHTTP2_HEADERS ||
      f->headers.cat != NGHTTP2_HCAT_REQUEST)
    return 0;
  if (c->x->sess_cb->header(r, name, value) != 0)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  return 0;
}

static int on_frame_recv(nghttp2_session *sess, const nghttp2_frame *f,
                         void *user) {
  srv_conn *c = user;
  const srv_sess_callbacks *cb = c->x->sess_cb;
  void *r = NULL;
  switch (f->hd.type) {
  case NGHTTP2_HEADERS:
    c->hdr_since = 0;
    r = stream_req(c, f->hd.stream_id);
    if (!r)
      break;
    if (f->headers.cat == NGHTTP2_HCAT_REQUEST)
      c->t_useful = ev_now(c->x->loop);
    cb->headers(r, f->headers.cat == NGHTTP2_HCAT_REQUEST,
                (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0);
    /* the handler may have reset the stream: look again */
    r = stream_req(c, f->hd.stream_id);
    if (r && (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
      cb->body_eof(r);
    break;
  case NGHTTP2_DATA:
    r = stream_req(c, f->hd.stream_id);
    if (r && (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
      cb->body_eof(r);
    break;
  case NGHTTP2_RST_STREAM:
    c->x->st.resets_recv++;
    r = stream_req(c, f->hd.stream_id);
    cb->stream_reset(c, r, f->hd.stream_id, f->rst_stream.error_code, 1);
    break;
  case NGHTTP2_SETTINGS:
    c->ready = 1;
    break;
  default:
    break;
  }
  return 0;
}

static int on_data_chunk(nghttp2_session *sess, uint8_t flags, int32_t sid,
                         const uint8_t *data, size_t len, void *user) {
  srv_conn *c = user;
  void *r = stream_req(c, sid);
  if (!r) { /* nobody will read it: the window is the peer's again */
    nghttp2_session_consume(sess, sid, len);
    return 0;
  }
  /* the request layer consumes what its handler read (or drops) */
  if (c->x->sess_cb->body_chunk(r, data, len) != 0)
    return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
  return 0;
}

static int on_frame_send(nghttp2_session *sess, const nghttp2_frame *f,
                         void *user) {
  srv_conn *c = user;
  srv_ctx *x = c->x;
  void *r = NULL;
  if (f->hd.stream_id)
    r = stream_req(c, f->hd.stream_id);
  switch (f->hd.type) {
  case NGHTTP2_HEADERS:
  case NGHTTP2_DATA:
    if (r)
      x->sess_cb->frame_sent(r, f->hd.type, f->hd.length,
                             (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0);
    break;
  case NGHTTP2_RST_STREAM:
    x->st.resets_sent++;
    c->reset_ring[c->reset_pos++ % 32] = f->hd.stream_id;
    x->sess_cb->stream_reset(c, r, f->hd.stream_id, f->rst_stream.error_code, 0);
    break;
  case NGHTTP2_GOAWAY:
    c->goaway = 1;
    { /* inflight */
      h2t_event m = {.type = H2T_EV_SRV_GOAWAY_SENT};
      h2t__metrics_event(&m);
      h2t__connreg_goaway(c->io.reg, 1);
    }
    if (TRACE_WANTS(&x->tc, H2T_EV_SRV_GOAWAY_SENT)) {
      h2t_event ev = {.type = H2T_EV_SRV_GOAWAY_SENT};
      ev.u.goaway_sent.last_stream_id = f->goaway.last_stream_id;
      ev.u.goaway_sent.error_code = f->goaway.error_code;
      srv_emit_conn(x, c->io.id, &ev);
    }
    break;
  default:
    break;
  }
  return 0;
}

/* A NO_COPY DATA frame (we never pad): the payload goes without passing
 * through nghttp2's buffer. */
static int on_send_data(nghttp2_session *sess, nghttp2_frame *f,
                        const uint8_t *framehd, size_t length,
                        nghttp2_data_source *src, void *user) {
  srv_conn *c = user;
  if (f->data.padlen)
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  int rc = c->x->sess_cb->body_send(src->ptr, framehd, length);
  if (rc == -2) /* asked again when the writer's queue drained */
    return NGHTTP2_ERR_WOULDBLOCK;
  return rc ? NGHTTP2_ERR_CALLBACK_FAILURE : 0;
}

static int on_stream_close(nghttp2_session *sess, int32_t sid, uint32_t code,
                           void *user) {
  srv_conn *c = user;
  void *r = stream_req(c, sid);
  if (r) {
    /* nghttp2 forgets the stream after this: only our cache must */
    sid_entry(c, sid)->req = NULL;
    c->x->sess_cb->stream_close(r, code);
    c->nreqs--;
  }
  return 0;
}

static nghttp2_session_callbacks *callbacks;
static pthread_once_t callbacks_once = PTHREAD_ONCE_INIT;

static void callbacks_init(void) {
  nghttp2_session_callbacks *cb;
  if (nghttp2_session_callbacks_new(&cb) != 0)
    return;
  nghttp2_session_callbacks_set_on_begin_frame_callback(cb, on_begin_frame);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback2(cb, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
  nghttp2_session_callbacks_set_on_frame_send_callback(cb, on_frame_send);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
  nghttp2_session_callbacks_set_send_data_callback(cb, on_send_data);
  callbacks = cb;
}

/* ------------------------------------------------------------------------
 * what io.c reports
 */

/* Fatal for the session (bad preface, flood, callback failure): say so
 * with GOAWAY if nghttp2 has not already; io stops reading, and the
 * connection closes after the GOAWAY is written. */
static int io_recv(void *arg, const uint8_t *data, size_t len) {
  srv_conn *c = arg;
  ssize_t rv = nghttp2_session_mem_recv(c->sess, data, len);
  if (rv >= 0)
    return 0;
  nghttp2_session_terminate_session(
      c->sess, rv == NGHTTP2_ERR_FLOODED  ? NGHTTP2_ENHANCE_YOUR_CALM
               : rv == NGHTTP2_ERR_NOMEM ? NGHTTP2_INTERNAL_ERROR
                                         : NGHTTP2_PROTOCOL_ERROR);
  return -1;
}

static ssize_t io_pull(void *arg, const uint8_t **data) {
  srv_conn *c = arg;
  return nghttp2_session_mem_send(c->sess, data);
}

static int io_over(void *arg) {
  srv_conn *c = arg;
  return !nghttp2_session_want_read(c->sess) &&
         !nghttp2_session_want_write(c->sess);
}

static void io_closed(void *arg, int abort) { conn_finish(arg, abort); }

static const srv_io_callbacks io_callbacks = {
    .recv = io_recv, .pull = io_pull, .over = io_over, .closed = io_closed};

/* ------------------------------------------------------------------------
 * connection life
 */

static void conn_finish(srv_conn *c, int abort) {
  srv_ctx *x = c->x;
  h2t__srv_io_stop(&c->io);
  ev_timer_stop(x->loop, &c->timer);
  if (c->nreqs)
    x->sess_cb->conn_close(c);
  nghttp2_session_del(c->sess);
  h2t__srv_io_close(&c->io, abort);
  if (c->prev)
    c->prev->next = c->next;
  else
    x->conns = c->next;
  if (c->next)
    c->next->prev = c->prev;
  x->st.conns_open--;
  h2t__connreg_remove(c->io.reg); /* inflight */
  h2t_xfree(x->mem, c);
  x->sess_cb->conn_gone(x);
}

static void conn_goaway(srv_conn *c) {
  if (c->io.ssl && !c->io.tls_done) {
    conn_finish(c, 1);
    return;
  }
  if (!c->goaway) {
    c->goaway = 1;
    nghttp2_submit_goaway(c->sess, NGHTTP2_FLAG_NONE,
                          nghttp2_session_get_last_proc_stream_id(c->sess),
                          NGHTTP2_NO_ERROR, NULL, 0);
  }
  h2t__srv_io_flush(&c->io);
}

void h2t__srv_conn_goaway_all(srv_ctx *x) {
  for (srv_conn *c = x->conns, *next; c; c = next) {
    next = c->next;
    conn_goaway(c);
  }
}

/* Like nginx's reusable connections when it runs out of them: the one to
 * close for a newcomer is one that holds no request past its headers (none
 * at all, or one whose header block never ended) and writes nothing, the
 * longest without a complete request first. */
int h2t__srv_conn_evict(srv_ctx *x) {
  srv_conn *victim = NULL;
  for (srv_conn *c = x->conns; c; c = c->next) {
    if (c->io.dying || h2t__writer_conn_queued(c->io.wc))
      continue;
    if (!(c->nreqs == 0 || (c->nreqs == 1 && c->hdr_since)))
      continue;
    if (!victim || c->t_useful < victim->t_useful)
      victim = c;
  }
  if (!victim)
    return 0;
  x->st.conns_evicted++;
  h2t__srv_conn_shed(victim, 0, H2T_SHED_CONNECTIONS, H2T_SHED_EVICT);
  conn_finish(victim, 1);
  return 1;
}

void h2t__srv_conn_abort_all(srv_ctx *x) {
  while (x->conns)
    conn_finish(x->conns, 1);
}

static void conn_timer_cb(struct ev_loop *loop, ev_timer *t, int revents) {
  srv_conn *c = t->data;
  srv_ctx *x = c->x;
  ev_tstamp now = ev_now(loop);
  ev_tstamp next;
  if (!c->ready || (c->io.ssl && !c->io.tls_done)) {
    ev_tstamp dl = c->t_accept + x->cfg.handshake_timeout_ms / 1000.0;
    if (now >= dl) {
      conn_finish(c, 1);
      return;
    }
    next = dl - now;
  } else {
    ev_tstamp dl = c->io.last_activity + x->cfg.idle_timeout_ms / 1000.0;
    if (c->hdr_since && x->cfg.header_timeout_ms != H2T_SERVER_UNLIMITED &&
        now >= c->hdr_since + x->cfg.header_timeout_ms / 1000.0) {
      /* The peer owes the rest of a header block and nothing else may come
       * first: the connection is of no use any more. */
      x->st.header_timeouts++;
      h2t__srv_conn_shed(c, 0, H2T_SHED_HEADER_TIMEOUT, H2T_SHED_CLOSE);
      c->hdr_since = 0;
      if (c->goaway) {
        conn_finish(c, 1);
        return;
      }
      c->goaway = 1;
      nghttp2_session_terminate_session(c->sess, NGHTTP2_PROTOCOL_ERROR);
      h2t__srv_io_flush(&c->io);
      next = x->cfg.shutdown_timeout_ms / 1000.0;
    } else if (c->nreqs) {
      next = x->cfg.idle_timeout_ms / 1000.0;
    } else if (now >= dl) {
      if (c->goaway) { /* GOAWAY sent and still here: give up */
        conn_finish(c, 1);
        return;
      }
      conn_goaway(c);
      next = x->cfg.shutdown_timeout_ms / 1000.0;
    } else {
      next = dl - now;
    }
    /* Never sleep past a header block's deadline: then a block that
     * starts later never needs the timer moved. */
    if (x->cfg.header_timeout_ms != H2T_SERVER_UNLIMITED) {
      ev_tstamp ht = x->cfg.header_timeout_ms / 1000.0;
      if (c->hdr_since && c->hdr_since + ht - now < next)
        next = c->hdr_since + ht - now;
      else if (!c->hdr_since && ht < next)
        next = ht;
    }
    if (next < 0.001)
      next = 0.001;
  }
  ev_timer_set(t, next, 0.);
  ev_timer_start(loop, t);
}

/* inflight: the registry entry, and the conn_accepted event */
static void conn_register(srv_conn *c, int fd) {
  srv_ctx *x = c->x;
  int traced = TRACE_WANTS(&x->tc, H2T_EV_SRV_CONN_ACCEPTED);
  if (!traced && !h2t_inflight_enabled())
    return;
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  char peer[INET6_ADDRSTRLEN + 8] = "", local[INET6_ADDRSTRLEN + 8] = "";
  for (int k = 0; k < 2; k++) {
    char *dst = k ? local : peer;
    char a[INET6_ADDRSTRLEN] = "";
    sl = sizeof ss;
    if ((k ? getsockname(fd, (struct sockaddr *)&ss, &sl)
           : getpeername(fd, (struct sockaddr *)&ss, &sl)) != 0)
      continue;
    if (ss.ss_family == AF_INET) {
      struct sockaddr_in *in = (struct sockaddr_in *)&ss;
      inet_ntop(AF_INET, &in->sin_addr, a, sizeof a);
      snprintf(dst, sizeof peer, "%s:%u", a, ntohs(in->sin_port));
    } else if (ss.ss_family == AF_INET6) {
      struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
      inet_ntop(AF_INET6, &in6->sin6_addr, a, sizeof a);
      snprintf(dst, sizeof peer, "[%s]:%u", a, ntohs(in6->sin6_port));
    }
  }
  c->io.reg = h2t__connreg_add(INFLIGHT_SERVER, c->io.id, peer, NULL);
  h2t__connreg_set_max_streams(c->io.reg, x->cfg.max_concurrent_streams);
  if (traced) {
    h2t_event ev = {.type = H2T_EV_SRV_CONN_ACCEPTED};
    ev.u.conn_accepted.peer = peer;
    ev.u.conn_accepted.local = local;
    srv_emit_conn(x, c->io.id, &ev);
  }
}

void h2t__srv_conn_accept(srv_ctx *x, SSL_CTX *ssl_ctx, int fd) {
  pthread_once(&callbacks_once, callbacks_init);
  srv_conn *c = callbacks ? h2t_xcalloc(x->mem, 1, sizeof *c) : NULL;
  if (!c) {
    close(fd);
    return;
  }
  c->x = x;
  uint64_t id = h2t_next_conn_id();
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);

  nghttp2_option *opt = NULL;
  /* the slab sits on x->mem, so a user's allocator still sees it all */
  nghttp2_mem ngmem = {x->slab, h2t__slab_malloc, h2t__slab_free,
                       h2t__slab_calloc, h2t__slab_realloc};
  if (nghttp2_option_new(&opt) != 0)
    goto fail;
  nghttp2_option_set_stream_reset_rate_limit(opt, 1000, 33);
  /* Windows are refilled as handlers read (h2t__srv_sess_consume): a peer
   * cannot make us buffer more body than body_conn_budget. */
  nghttp2_option_set_no_auto_window_update(opt, 1);
  int rv = nghttp2_session_server_new3(&c->sess, callbacks, c, opt, &ngmem);
  nghttp2_option_del(opt);
  if (rv != 0) {
    c->sess = NULL;
    goto fail;
  }
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, x->cfg.max_concurrent_streams},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, x->cfg.initial_window_size},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, x->cfg.max_header_list_size},
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0}};
  if (nghttp2_submit_settings(c->sess, NGHTTP2_FLAG_NONE, iv, 4) != 0 ||
      nghttp2_session_set_local_window_size(c->sess, NGHTTP2_FLAG_NONE, 0,
                                            (int32_t)x->cfg.body_conn_budget) != 0)
    goto fail;
  if (h2t__srv_io_init(&c->io, x, fd, id, ssl_ctx, &io_callbacks, c) != 0)
    goto fail;

  c->t_accept = c->t_useful = c->io.last_activity;
  /* the first look no later than a header block's deadline (see
   * conn_timer_cb) */
  uint32_t first = x->cfg.handshake_timeout_ms;
  if (x->cfg.header_timeout_ms < first)
    first = x->cfg.header_timeout_ms;
  ev_timer_init(&c->timer, conn_timer_cb, first / 1000.0, 0.);
  c->timer.data = c;
  ev_timer_start(x->loop, &c->timer);
  c->next = x->conns;
  if (x->conns)
    x->conns->prev = c;
  x->conns = c;
  x->st.conns_accepted++;
  x->st.conns_open++;
  { /* inflight: /metrics */
    h2t_event m = {.type = H2T_EV_SRV_CONN_ACCEPTED};
    h2t__metrics_event(&m);
  }
  conn_register(c, fd);
  if (!c->io.ssl)
    h2t__srv_io_flush(&c->io); /* our SETTINGS go out at once */
  return;
fail:
  if (c->sess)
    nghttp2_session_del(c->sess);
  h2t_xfree(x->mem, c);
  close(fd);
}
