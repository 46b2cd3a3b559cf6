/* Scripted HTTP/2 server for tests: see scripted_server.h. */
#include "scripted_server.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>
#include <nghttp2/nghttp2.h>

struct h2t_scripted_server {
  h2t_script s;
  struct ev_loop *loop;
  pthread_t th;
  ev_io accept_w;
  ev_async stop_w;
  int lfd;
  atomic_int nconns, nstreams, ngoaways;
  atomic_int ntp, ntp_never; /* traceparent fields; never-indexed ones */
  struct sconn *conns;
};

typedef struct sconn {
  struct h2t_scripted_server *srv;
  struct sconn *next;
  int fd, index, answered, gone_away;
  int32_t last_answered;
  struct sstream *streams;
  nghttp2_session *sess;
  ev_io rio, wio;
} sconn;

typedef struct sstream {
  sconn *sc;
  struct sstream *next;
  int32_t id;
  size_t body;
  int expect;
  ev_timer delay;
  char out[32];
  size_t outlen, outoff;
} sstream;

static void sconn_free(sconn *sc) {
  struct h2t_scripted_server *srv = sc->srv;
  for (sconn **pp = &srv->conns; *pp; pp = &(*pp)->next)
    if (*pp == sc) {
      *pp = sc->next;
      break;
    }
  ev_io_stop(srv->loop, &sc->rio);
  ev_io_stop(srv->loop, &sc->wio);
  if (sc->sess)
    nghttp2_session_del(sc->sess); /* does not run on_stream_close */
  while (sc->streams) {
    sstream *st = sc->streams;
    sc->streams = st->next;
    ev_timer_stop(srv->loop, &st->delay);
    free(st);
  }
  close(sc->fd);
  free(sc);
}

static void flush(sconn *sc) {
  for (;;) {
    const uint8_t *d;
    ssize_t n = nghttp2_session_mem_send(sc->sess, &d);
    if (n <= 0)
      break;
    ssize_t w = send(sc->fd, d, (size_t)n, MSG_NOSIGNAL); /* loopback */
    if (w != n)
      break;
  }
  if ((sc->srv->s.close_after_response && sc->answered &&
       !nghttp2_session_want_write(sc->sess)) ||
      (!nghttp2_session_want_read(sc->sess) &&
      !nghttp2_session_want_write(sc->sess)))
    sconn_free(sc);
}

static ssize_t body_cb(nghttp2_session *s, int32_t id, uint8_t *buf,
                       size_t len, uint32_t *flags, nghttp2_data_source *src,
                       void *ud) {
  sstream *st = src->ptr;
  size_t n = st->outlen - st->outoff;
  if (n > len)
    n = len;
  memcpy(buf, st->out + st->outoff, n);
  st->outoff += n;
  if (st->outoff == st->outlen)
    *flags |= NGHTTP2_DATA_FLAG_EOF;
  return (ssize_t)n;
}

static void respond(sconn *sc, sstream *st) {
  st->outlen = (size_t)snprintf(st->out, sizeof st->out, "ok %zu", st->body);
  nghttp2_nv nv[] = {{(uint8_t *)":status", (uint8_t *)"200", 7, 3, 0}};
  nghttp2_data_provider prd = {.source.ptr = st, .read_callback = body_cb};
  nghttp2_submit_response(sc->sess, st->id, nv, 1, &prd);
  sc->answered++;
  sc->last_answered = st->id;
}

static void delay_cb(struct ev_loop *loop, ev_timer *w, int revents) {
  sstream *st = w->data;
  respond(st->sc, st);
  flush(st->sc);
}

/* The request is complete: decide what the script says. */
static void on_request(sconn *sc, sstream *st) {
  const h2t_script *s = &sc->srv->s;
  int n = atomic_fetch_add(&sc->srv->nstreams, 1);
  int goaway_conns = s->goaway_conns ? s->goaway_conns : 1;
  if (sc->gone_away)
    return;
  if (s->goaway_immediately) {
    sc->gone_away = 1;
    nghttp2_submit_goaway(sc->sess, 0, 0, NGHTTP2_NO_ERROR, NULL, 0);
    return;
  }
  if (s->goaway_after && sc->index < goaway_conns &&
      sc->answered >= s->goaway_after) {
    sc->gone_away = 1;
    nghttp2_submit_goaway(sc->sess, 0, sc->last_answered, NGHTTP2_NO_ERROR,
                          NULL, 0);
    return;
  }
  if (n < s->refuse_first) {
    nghttp2_submit_rst_stream(sc->sess, 0, st->id, NGHTTP2_REFUSED_STREAM);
    return;
  }
  if (s->reset_code) {
    nghttp2_submit_rst_stream(sc->sess, 0, st->id, s->reset_code);
    return;
  }
  if (s->delay_ms) {
    ev_timer_init(&st->delay, delay_cb, s->delay_ms / 1000., 0.);
    st->delay.data = st;
    ev_timer_start(sc->srv->loop, &st->delay);
    return;
  }
  respond(sc, st);
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f,
                            void *ud) {
  if (f->hd.type != NGHTTP2_HEADERS)
    return 0;
  sstream *st = calloc(1, sizeof *st);
  sconn *sc = ud;
  st->sc = sc;
  st->next = sc->streams;
  sc->streams = st;
  st->id = f->hd.stream_id;
  nghttp2_session_set_stream_user_data(s, f->hd.stream_id, st);
  return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f,
                     const uint8_t *name, size_t nlen, const uint8_t *value,
                     size_t vlen, uint8_t flags, void *ud) {
  sstream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
  sconn *sc = ud;
  if (st && nlen == 6 && !memcmp(name, "expect", 6))
    st->expect = 1;
  if (nlen == 11 && !memcmp(name, "traceparent", 11)) {
    atomic_fetch_add(&sc->srv->ntp, 1);
    if (flags & NGHTTP2_NV_FLAG_NO_INDEX)
      atomic_fetch_add(&sc->srv->ntp_never, 1);
  }
  return 0;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f,
                         void *ud) {
  sconn *sc = ud;
  if (f->hd.type == NGHTTP2_GOAWAY)
    atomic_fetch_add(&sc->srv->ngoaways, 1);
  sstream *st = nghttp2_session_get_stream_user_data(s, f->hd.stream_id);
  if (!st)
    return 0;
  if (f->hd.type == NGHTTP2_HEADERS && st->expect && sc->srv->s.send_100 &&
      !(f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
    nghttp2_nv nv[] = {{(uint8_t *)":status", (uint8_t *)"100", 7, 3, 0}};
    nghttp2_submit_headers(s, 0, st->id, NULL, nv, 1, NULL);
  }
  if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
      (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
    if (sc->index < sc->srv->s.close_conns) {
      shutdown(sc->fd, SHUT_RDWR);
      return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    on_request(sc, st);
  }
  return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t id,
                   const uint8_t *d, size_t len, void *ud) {
  sstream *st = nghttp2_session_get_stream_user_data(s, id);
  if (st)
    st->body += len;
  return 0;
}

static int on_close(nghttp2_session *s, int32_t id, uint32_t code, void *ud) {
  sconn *sc = ud;
  sstream *st = nghttp2_session_get_stream_user_data(s, id);
  if (st) {
    for (sstream **pp = &sc->streams; *pp; pp = &(*pp)->next)
      if (*pp == st) {
        *pp = st->next;
        break;
      }
    ev_timer_stop(sc->srv->loop, &st->delay);
    free(st);
  }
  return 0;
}

static void read_cb(struct ev_loop *loop, ev_io *w, int revents) {
  sconn *sc = w->data;
  uint8_t buf[16384];
  ssize_t n = recv(sc->fd, buf, sizeof buf, 0);
  if (n <= 0 && !(n < 0 && errno == EAGAIN)) {
    sconn_free(sc);
    return;
  }
  if (n < 0)
    return;
  if (nghttp2_session_mem_recv(sc->sess, buf, (size_t)n) < 0) {
    sconn_free(sc);
    return;
  }
  flush(sc);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents) {
  struct h2t_scripted_server *srv = w->data;
  int fd = accept4(srv->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
  if (fd < 0)
    return;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int idx = atomic_fetch_add(&srv->nconns, 1);
  if (srv->s.garbage) {
    static const char junk[] = "HTTP/1.1 400 Bad Request\r\n\r\ngarbage!";
    if (send(fd, junk, sizeof junk - 1, MSG_NOSIGNAL) < 0) {
      /* the client may be gone already */
    }
  }
  sconn *sc = calloc(1, sizeof *sc);
  sc->srv = srv;
  sc->fd = fd;
  sc->index = idx;
  sc->next = srv->conns;
  srv->conns = sc;
  nghttp2_session_callbacks *cb;
  nghttp2_session_callbacks_new(&cb);
  nghttp2_session_callbacks_set_on_begin_headers_callback(cb,
                                                          on_begin_headers);
  nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
  nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_close);
  nghttp2_session_server_new(&sc->sess, cb, sc);
  nghttp2_session_callbacks_del(cb);
  nghttp2_settings_entry iv[1];
  size_t niv = 0;
  if (srv->s.max_concurrent_streams)
    iv[niv++] = (nghttp2_settings_entry){
        NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS,
        srv->s.max_concurrent_streams};
  if (!srv->s.garbage)
    nghttp2_submit_settings(sc->sess, 0, iv, niv);
  ev_io_init(&sc->rio, read_cb, fd, EV_READ);
  sc->rio.data = sc;
  ev_io_start(loop, &sc->rio);
  if (!srv->s.garbage)
    flush(sc);
}

static void stop_cb(struct ev_loop *loop, ev_async *w, int revents) {
  ev_break(loop, EVBREAK_ALL);
}

static void *thread_main(void *arg) {
  struct h2t_scripted_server *srv = arg;
  ev_run(srv->loop, 0);
  return NULL;
}

h2t_scripted_server *h2t_scripted_server_start(const h2t_script *s,
                                               int *port) {
  struct h2t_scripted_server *srv = calloc(1, sizeof *srv);
  srv->s = *s;
  srv->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET};
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  int one = 1;
  setsockopt(srv->lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(srv->lfd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
      listen(srv->lfd, 64) != 0 ||
      getsockname(srv->lfd, (struct sockaddr *)&sa, &len) != 0) {
    close(srv->lfd);
    free(srv);
    return NULL;
  }
  *port = ntohs(sa.sin_port);
  srv->loop = ev_loop_new(EVFLAG_AUTO);
  ev_io_init(&srv->accept_w, accept_cb, srv->lfd, EV_READ);
  srv->accept_w.data = srv;
  ev_io_start(srv->loop, &srv->accept_w);
  ev_async_init(&srv->stop_w, stop_cb);
  ev_async_start(srv->loop, &srv->stop_w);
  pthread_create(&srv->th, NULL, thread_main, srv);
  return srv;
}

void h2t_scripted_server_stop(h2t_scripted_server *srv) {
  if (!srv)
    return;
  ev_async_send(srv->loop, &srv->stop_w);
  pthread_join(srv->th, NULL);
  while (srv->conns)
    sconn_free(srv->conns);
  ev_io_stop(srv->loop, &srv->accept_w);
  ev_async_stop(srv->loop, &srv->stop_w);
  ev_loop_destroy(srv->loop);
  close(srv->lfd);
  free(srv);
}

int h2t_scripted_server_conns(h2t_scripted_server *srv) {
  return atomic_load(&srv->nconns);
}

int h2t_scripted_server_streams(h2t_scripted_server *srv) {
  return atomic_load(&srv->nstreams);
}

int h2t_scripted_server_goaways(h2t_scripted_server *srv) {
  return atomic_load(&srv->ngoaways);
}

int h2t_scripted_server_traceparents(h2t_scripted_server *srv,
                                     int *never_indexed) {
  *never_indexed = atomic_load(&srv->ntp_never);
  return atomic_load(&srv->ntp);
}
