/*
 * The nghttp2 client session over a connection: nghttp2's callbacks turned
 * into reports to the layer above (conn.h's h2t__conn_cbs), and opening,
 * resetting and resuming streams.  Decides nothing about requests.
 */
#include <string.h>

#include "h2/client/conn.h"
#include "trace/trace_int.h"

#define CONN_WINDOW (1 << 24)

static void *stream_su(nghttp2_session *s, int32_t id) {
  return id > 0 ? nghttp2_session_get_stream_user_data(s, id) : NULL;
}

static const h2t__conn_cbs *cbs_of(h2t__conn *cn) { return cn->ctx->cbs; }

static void conn_event_goaway(h2t__conn *cn, const nghttp2_frame *f,
                              int by_peer) {
  h2t_event ev;
  memset(&ev, 0, sizeof ev);
  ev.type = H2T_EV_GOAWAY;
  ev.conn_id = cn->id;
  ev.t_us = cn->ctx->ts ? cn->ctx->ts : h2t_now_us();
  ev.u.goaway.last_stream_id = f->goaway.last_stream_id;
  ev.u.goaway.error_code = f->goaway.error_code;
  ev.u.goaway.by_peer = by_peer;
  h2t__metrics_event(&ev); /* once, whoever listens */
  cbs_of(cn)->conn_event(cn, &ev);
}

static int on_frame_send(nghttp2_session *s, const nghttp2_frame *f,
                         void *ud) {
  h2t__conn *cn = ud;
  void *su = stream_su(s, f->hd.stream_id);
  switch (f->hd.type) {
  case NGHTTP2_HEADERS:
    if (su)
      cbs_of(cn)->sent_headers(su, (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0);
    break;
  case NGHTTP2_DATA:
    if (su && (f->hd.flags & NGHTTP2_FLAG_END_STREAM))
      cbs_of(cn)->sent_body_end(su);
    break;
  case NGHTTP2_RST_STREAM:
    /* nghttp2 reset it (a malformed response, a failing body source) */
    if (su)
      cbs_of(cn)->stream_reset(su, f->rst_stream.error_code, 0);
    break;
  case NGHTTP2_GOAWAY:
    if (f->goaway.error_code != NGHTTP2_NO_ERROR && !cn->error)
      cn->error = H2T_ERR_PROTOCOL;
    if (cn->drain_reason == H2T_CONN_NONE)
      cn->drain_reason = cn->error ? H2T_CONN_DEAD : H2T_CONN_GOAWAY;
    h2t__connreg_goaway(cn->reg, 1);
    conn_event_goaway(cn, f, 0);
    break;
  default:
    break;
  }
  return 0;
}

static int on_frame_not_send(nghttp2_session *s, const nghttp2_frame *f,
                             int lib_error_code, void *ud) {
  return 0; /* the stream is then closed: on_stream_close reports it */
}

static int on_begin_headers(nghttp2_session *s, const nghttp2_frame *f,
                            void *ud) {
  h2t__conn *cn = ud;
  /* the block's fields come next: look the stream up once for all of them
   * (a hook that resets it clears hdr_su, in h2t__conn_reset) */
  cn->hdr_sid = f->hd.stream_id;
  cn->hdr_su = stream_su(s, f->hd.stream_id);
  if (cn->hdr_su && f->hd.type == NGHTTP2_HEADERS)
    cbs_of(cn)->begin_headers(cn->hdr_su);
  return 0;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *f,
                     nghttp2_rcbuf *name, nghttp2_rcbuf *value, uint8_t flags,
                     void *ud) {
  h2t__conn *cn = ud;
  if (f->hd.type != NGHTTP2_HEADERS)
    return 0;
  void *su = f->hd.stream_id == cn->hdr_sid ? cn->hdr_su
                                            : stream_su(s, f->hd.stream_id);
  if (!su)
    return 0;
  /* a refusal resets the stream (nghttp2 sends RST_STREAM INTERNAL_ERROR and
   * keeps decoding the block, so the connection's HPACK state stays whole) */
  if (cbs_of(cn)->header(su, name, value) == 0)
    return 0;
  cn->hdr_su = NULL; /* nghttp2 resets it and skips the rest of the block */
  return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
}

static int on_frame_recv(nghttp2_session *s, const nghttp2_frame *f,
                         void *ud) {
  h2t__conn *cn = ud;
  void *su;
  switch (f->hd.type) {
  case NGHTTP2_HEADERS:
    if ((su = stream_su(s, f->hd.stream_id)))
      cbs_of(cn)->headers_done(su, (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0);
    break;
  case NGHTTP2_DATA:
    if ((su = stream_su(s, f->hd.stream_id)))
      cbs_of(cn)->data_frame(
          su, f->hd.length - (f->data.padlen ? f->data.padlen : 0),
          (f->hd.flags & NGHTTP2_FLAG_END_STREAM) != 0,
          nghttp2_session_get_stream_local_window_size(s, f->hd.stream_id),
          nghttp2_session_get_local_window_size(s));
    break;
  case NGHTTP2_RST_STREAM:
    if ((su = stream_su(s, f->hd.stream_id)))
      cbs_of(cn)->stream_reset(su, f->rst_stream.error_code, 1);
    break;
  case NGHTTP2_SETTINGS: {
    if (f->hd.flags & NGHTTP2_FLAG_ACK)
      break;
    if (!cn->settings_seen) {
      cn->settings_seen = 1;
      ev_timer_stop(cn->ctx->loop, &cn->timer); /* connected */
    }
    cn->max_streams = nghttp2_session_get_remote_settings(
        s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
    h2t__connreg_set_max_streams(cn->reg, cn->max_streams);
    cbs_of(cn)->settings(cn);
    if (cn->nstreams == 0)
      h2t__conn_idle(cn);
    break;
  }
  case NGHTTP2_GOAWAY:
    cn->goaway_last_id = f->goaway.last_stream_id;
    cn->drain_reason = H2T_CONN_GOAWAY;
    if (f->goaway.error_code != NGHTTP2_NO_ERROR && !cn->error)
      cn->error = H2T_ERR_GOAWAY;
    h2t__connreg_goaway(cn->reg, 0);
    conn_event_goaway(cn, f, 1);
    break;
  default:
    break;
  }
  return 0;
}

static int on_data_chunk(nghttp2_session *s, uint8_t flags, int32_t sid,
                         const uint8_t *data, size_t len, void *ud) {
  h2t__conn *cn = ud;
  void *su = stream_su(s, sid);
  if (su && cbs_of(cn)->data(su, data, len) != 0)
    h2t__conn_reset(cn, sid, NGHTTP2_CANCEL, su);
  return 0;
}

void h2t__conn_stream_gone(h2t__conn *cn) {
  h2t__connreg_stream_close(cn->reg);
  if (--cn->nstreams == 0)
    h2t__conn_idle(cn);
}

static int on_stream_close(nghttp2_session *s, int32_t sid, uint32_t code,
                           void *ud) {
  h2t__conn *cn = ud;
  void *su = stream_su(s, sid);
  if (sid == cn->hdr_sid)
    cn->hdr_su = NULL;
  if (!su)
    return 0; /* taken off already (reset or detached) */
  cbs_of(cn)->stream_closed(su, sid, code);
  h2t__conn_stream_gone(cn);
  return 0;
}

static ssize_t body_read(nghttp2_session *s, int32_t sid, uint8_t *buf,
                         size_t len, uint32_t *flags, nghttp2_data_source *src,
                         void *ud) {
  h2t__conn *cn = ud;
  void *su = stream_su(s, sid);
  if (!su) {
    *flags |= NGHTTP2_DATA_FLAG_EOF;
    return 0;
  }
  ssize_t n = cbs_of(cn)->body_read(su, buf, len, flags);
  if (n >= 0 && (*flags & NGHTTP2_DATA_FLAG_EOF))
    h2t__conn_body_done(cn);
  return n;
}

static int send_data(nghttp2_session *s, nghttp2_frame *f, const uint8_t *hd,
                     size_t len, nghttp2_data_source *src, void *ud) {
  h2t__conn *cn = ud;
  void *su = stream_su(s, f->hd.stream_id);
  if (!su || f->data.padlen)
    return NGHTTP2_ERR_CALLBACK_FAILURE;
  return cbs_of(cn)->body_send(su, hd, len);
}

int h2t__session_callbacks_new(nghttp2_session_callbacks **out) {
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
  nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
  nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
  nghttp2_session_callbacks_set_send_data_callback(cb, send_data);
  *out = cb;
  return 0;
}

int h2t__session_start(h2t__conn *cn) {
  h2t__conn_ctx *ctx = cn->ctx;
  if (nghttp2_session_client_new3(&cn->sess, ctx->ngcbs, cn, ctx->ngopt,
                                  h2t__conn_ngmem(ctx)) != 0)
    return H2T_ERR_NOMEM;
  nghttp2_settings_entry iv[] = {
      {NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
      {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, ctx->initial_window_size},
      {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, ctx->max_header_list},
  };
  nghttp2_submit_settings(cn->sess, NGHTTP2_FLAG_NONE, iv,
                          sizeof iv / sizeof iv[0]);
  nghttp2_session_set_local_window_size(cn->sess, NGHTTP2_FLAG_NONE, 0,
                                        CONN_WINDOW);
  return 0;
}

/* --- streams ------------------------------------------------------------- */

int32_t h2t__conn_submit(h2t__conn *cn, const nghttp2_nv *nv, size_t nnv,
                         int has_body, void *su) {
  nghttp2_data_provider prd, *pp = NULL;
  if (has_body) {
    prd.source.ptr = NULL;
    prd.read_callback = body_read;
    pp = &prd;
  }
  int32_t id = nghttp2_submit_request(cn->sess, NULL, nv, nnv, pp, su);
  if (id < 0) {
    if (id == NGHTTP2_ERR_STREAM_ID_NOT_AVAILABLE) {
      cn->drain_reason = H2T_CONN_STREAM_IDS;
      return H2T_ERR_LIMIT;
    }
    return H2T_ERR_NOMEM;
  }
  if (pp)
    cn->nbody_pending++;
  h2t__connreg_stream_open(cn->reg);
  if (cn->nstreams++ == 0 && cn->settings_seen && ev_is_active(&cn->timer))
    ev_timer_stop(cn->ctx->loop, &cn->timer); /* the idle timer */
  h2t__conn_mark_dirty(cn);
  return id;
}

void h2t__conn_body_done(h2t__conn *cn) { cn->nbody_pending--; }

void h2t__conn_reset(h2t__conn *cn, int32_t sid, uint32_t code, void *su) {
  if (!cn->sess || sid <= 0)
    return;
  /* also for a stream whose HEADERS are still queued: nghttp2 then drops
   * them (no frame goes out) and the stream's close reports nothing */
  nghttp2_session_set_stream_user_data(cn->sess, sid, NULL);
  if (sid == cn->hdr_sid)
    cn->hdr_su = NULL;
  nghttp2_submit_rst_stream(cn->sess, NGHTTP2_FLAG_NONE, sid, code);
  cbs_of(cn)->stream_reset(su, code, 0);
  h2t__conn_mark_dirty(cn);
  h2t__conn_stream_gone(cn);
}

void h2t__conn_resume(h2t__conn *cn, int32_t sid) {
  if (!cn->sess || sid <= 0)
    return;
  nghttp2_session_resume_data(cn->sess, sid);
  h2t__conn_mark_dirty(cn);
}

void h2t__conn_windows(h2t__conn *cn, int32_t sid, int32_t *stream,
                       int32_t *conn) {
  *stream = nghttp2_session_get_stream_remote_window_size(cn->sess, sid);
  *conn = nghttp2_session_get_remote_window_size(cn->sess);
}

void h2t__conn_settings_event(h2t__conn *cn, h2t_event *ev) {
  nghttp2_session *s = cn->sess;
  ev->u.settings.max_concurrent_streams = nghttp2_session_get_remote_settings(
      s, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS);
  ev->u.settings.initial_window_size = nghttp2_session_get_remote_settings(
      s, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE);
  ev->u.settings.max_frame_size =
      nghttp2_session_get_remote_settings(s, NGHTTP2_SETTINGS_MAX_FRAME_SIZE);
  ev->u.settings.header_table_size = nghttp2_session_get_remote_settings(
      s, NGHTTP2_SETTINGS_HEADER_TABLE_SIZE);
  ev->u.settings.max_header_list_size = nghttp2_session_get_remote_settings(
      s, NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE);
  ev->u.settings.enable_push =
      nghttp2_session_get_remote_settings(s, NGHTTP2_SETTINGS_ENABLE_PUSH);
}
