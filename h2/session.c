/*
 * The HTTP/2 side of a client connection: nghttp2 callbacks turned into the
 * requests' hooks and callbacks, opening and resetting streams, deciding
 * how a closed stream ends (success, retry, error).
 */
#include <string.h>

#include "h2/h2_int.h"

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
  h2t_event ev;
  h2_ev_init(&ev, r, H2T_EV_WROTE_HEADER_FIELD);
  ev.t_us = now_once(t);
  for (size_t i = 0; i < r->nnv && r->state == REQ_ACTIVE; i++) {
    ev.u.header_field.name = (const char *)r->nv[i].name;
    ev.u.header_field.namelen = r->nv[i].namelen;
    ev.u.header_field.value = (const char *)r->nv[i].value;
    ev.u.header_field.valuelen = r->nv[i].valuelen;
    h2_req_emit(r, &ev);
  }
}

static void simple_event_at(h2t_request *r, h2t_event_type type,
                            uint64_t *t) {
  if (TRACE_WANTS(&r->tc, type)) {
    h2t_event ev;
    h2_ev_init(&ev, r, type);
    if (t)
      ev.t_us = now_once(t);
    h2_req_emit(r, &ev);
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
    h2_req_emit(r, &ev);
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
      h2t__conn_mark_dirty(r->conn);
    }
  }
}

/* To the conn's requests, and once to the metrics (no request owns it). */
static void goaway_event(h2_conn *cn, const nghttp2_frame *f, int by_peer) {
  h2t_event ev;
  h2t__conn_tmpl_init(&ev, cn, H2T_EV_GOAWAY);
  ev.u.goaway.last_stream_id = f->goaway.last_stream_id;
  ev.u.goaway.error_code = f->goaway.error_code;
  ev.u.goaway.by_peer = by_peer;
  h2t__metrics_event(&ev);
  if (h2t__conn_list_wants(&cn->streams, H2T_EV_GOAWAY))
    h2t__conn_emit_list(&cn->streams, &ev);
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
    h2t__req_release(r);
    break;
  case NGHTTP2_DATA:
    if (r && (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
      wrote_request(r, &t);
    break;
  case NGHTTP2_RST_STREAM:
    /* nghttp2 reset it (a malformed response, a failing body source) */
    if (r && TRACE_WANTS(&r->tc, H2T_EV_STREAM_RESET)) {
      h2t_event ev;
      h2_ev_init(&ev, r, H2T_EV_STREAM_RESET);
      ev.u.stream_reset.error_code = f->rst_stream.error_code;
      ev.u.stream_reset.by_peer = 0;
      h2_req_emit(r, &ev);
    }
    break;
  case NGHTTP2_GOAWAY: {
    if (f->goaway.error_code != NGHTTP2_NO_ERROR && !cn->error)
      cn->error = H2T_ERR_PROTOCOL;
    if (cn->drain_reason == H2T_CONN_NONE)
      cn->drain_reason = cn->error ? H2T_CONN_DEAD : H2T_CONN_GOAWAY;
    h2t__connreg_goaway(cn->reg, 1);
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
  h2t__conn_reset_stream(cn, r, NGHTTP2_CANCEL);
  h2t__req_finish(r, error);
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
  h2t__req_release(r);
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
      h2_req_emit(r, &ev);
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
    h2_req_emit(r, &ev);
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
  h2t__conn_tmpl_init(&ev, cn, H2T_EV_SETTINGS);
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
  h2t__conn_emit_list(&cn->streams, &ev);
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
      h2_req_emit(r, &ev);
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
      h2_req_emit(r, &ev);
    }
    break;
  case NGHTTP2_SETTINGS:
    if (f->hd.flags & NGHTTP2_FLAG_ACK)
      break;
    cn->settings_seen = 1;
    cn->max_streams = nghttp2_session_get_remote_settings(
        s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    cn->origin->peer_max_streams = cn->max_streams;
    h2t__connreg_set_max_streams(cn->reg, cn->max_streams);
    if (h2t__conn_list_wants(&cn->streams, H2T_EV_SETTINGS))
      emit_settings(cn);
    h2t__pool_dispatch(cn->client, cn->origin);
    break;
  case NGHTTP2_GOAWAY:
    cn->goaway_last_id = f->goaway.last_stream_id;
    cn->drain_reason = H2T_CONN_GOAWAY;
    if (f->goaway.error_code != NGHTTP2_NO_ERROR && !cn->error)
      cn->error = H2T_ERR_GOAWAY;
    h2t__connreg_goaway(cn->reg, 0);
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
  h2t__req_release(r);
  return 0;
}

/* Detach r from cn's streams (its stream is over or being reset). */
void h2t__conn_detach(h2_conn *cn, h2t_request *r) {
  ev_timer_stop(cn->client->loop, &r->expect_w);
  h2t__connreg_stream_close(cn->reg);
  TAILQ_REMOVE(&cn->streams, r, link);
  cn->nstreams--;
  if (r->has_body && !r->body_eof)
    cn->nbody_pending--;
  if (cn->sess && r->stream_id > 0)
    nghttp2_session_set_stream_user_data(cn->sess, r->stream_id, NULL);
  /* off the conn before the hook runs: a cancel from it finds nothing left
   * to unlink */
  r->conn = NULL;
  r->state = REQ_NEW;
  h2t__req_put_conn(r, cn);
}

static void after_stream(h2_conn *cn) {
  if (cn->nstreams == 0 && cn->state == CONN_READY &&
      cn->drain_reason == H2T_CONN_NONE && !cn->close_pending)
    h2t__pool_conn_idle(cn);
  if (cn->origin->nqueued)
    h2t__pool_dispatch(cn->client, cn->origin);
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t code,
                           void *ud) {
  h2_conn *cn = ud;
  h2t_request *r = stream_req(s, sid);
  if (!r)
    return 0;
  h2_req_hold(r); /* put_idle_conn's hooks may cancel it */
  h2t__conn_detach(cn, r);
  if (r->state == REQ_DONE) {
  } else if (r->got_final && r->got_eos) {
    h2t__req_finish(r, 0);
  } else if (r->local_error) {
    h2t__req_finish(r, r->local_error);
  } else if (!r->got_first_byte && cn->goaway_last_id >= 0 &&
             sid > cn->goaway_last_id) {
    h2t__req_retry_or_fail(r, H2T_RETRY_GOAWAY, H2T_ERR_GOAWAY);
  } else if (r->rst_by_peer && code == NGHTTP2_REFUSED_STREAM) {
    h2t__req_retry_or_fail(r, H2T_RETRY_REFUSED_STREAM,
                         H2T_ERR_REFUSED_STREAM);
  } else if (r->rst_by_peer) {
    h2t__req_finish(r, H2T_ERR_STREAM_RESET);
  } else if (code == NGHTTP2_REFUSED_STREAM && !r->headers_sent) {
    /* never went out (e.g. the conn was going away): safe to retry */
    h2t__req_retry_or_fail(r, H2T_RETRY_CONN_CLOSED, H2T_ERR_CONN_CLOSED);
  } else {
    h2t__req_finish(r, cn->error ? cn->error : H2T_ERR_PROTOCOL);
  }
  h2t__req_release(r);
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
    /* Nothing and no end is a pause too: asking again at once would spin
     * the loop until the source has data. */
    if (got == H2T_BODY_DEFER || (got == 0 && !eof)) {
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

int h2t__callbacks_new(nghttp2_session_callbacks **out) {
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

int h2t__conn_submit(h2_conn *cn, h2t_request *r) {
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
  h2t__connreg_stream_open(cn->reg);
  if (cn->nstreams++ == 0 && ev_is_active(&cn->timer))
    ev_timer_stop(cn->client->loop, &cn->timer);
  if (!cn->in_io)
    h2t__conn_mark_dirty(cn);
  return 0;
}

void h2t__conn_reset_stream(h2_conn *cn, h2t_request *r, uint32_t code) {
  if (cn->sess && r->stream_id > 0) {
    nghttp2_submit_rst_stream(cn->sess, NGHTTP2_FLAG_NONE, r->stream_id,
                              code);
    if (TRACE_WANTS(&r->tc, H2T_EV_STREAM_RESET)) {
      h2t_event ev;
      h2_ev_init(&ev, r, H2T_EV_STREAM_RESET);
      ev.u.stream_reset.error_code = code;
      ev.u.stream_reset.by_peer = 0;
      h2_req_emit(r, &ev);
    }
    if (!cn->in_io)
      h2t__conn_mark_dirty(cn);
  }
  ev_timer_stop(cn->client->loop, &r->expect_w);
  h2t__conn_detach(cn, r);
  after_stream(cn);
}

