/* The diagnostics endpoint: libmicrohttpd on its own thread, JSON through
 * jansson.  Everything it shows is copied out of the in-flight table and the
 * connection registry, so it never waits for an application loop. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>

#include <jansson.h>
#include <microhttpd.h>

#include <h2trace/diag.h>
#include "diag/diag_int.h"
#include "trace/abi_int.h"

#define DIAG_MAX_BODY 4096         /* a cancel needs none */
#define DIAG_CONN_MEMORY (32 * 1024) /* per connection: headers + URL */

struct h2t_diag {
  struct MHD_Daemon *mhd;
  char *token;
  size_t token_len;
  uint16_t port;
};

static atomic_int diag_running;

struct req_state {
  int too_big;
};

/* --- responses ------------------------------------------------------------ */

static enum MHD_Result send_text(struct MHD_Connection *c, unsigned status,
                                 const char *ctype, char *body, size_t len,
                                 int cors) {
  struct MHD_Response *r =
      MHD_create_response_from_buffer_with_free_callback(len, body, free);
  if (!r) {
    free(body);
    return MHD_NO;
  }
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, ctype);
  MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  if (cors)
    MHD_add_response_header(r, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN,
                            "*");
  if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
    MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD, POST");
  if (status == MHD_HTTP_UNAUTHORIZED)
    MHD_add_response_header(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer");
  enum MHD_Result rc = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return rc;
}

/* Takes the reference. */
static enum MHD_Result send_json(struct MHD_Connection *c, unsigned status,
                                 json_t *j, int cors) {
  char *s = j ? json_dumps(j, JSON_COMPACT) : NULL;
  json_decref(j);
  if (!s) {
    char *msg = strdup("out of memory\n");
    return msg ? send_text(c, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain",
                           msg, strlen(msg), 0)
               : MHD_NO; /* drop the connection: nothing to say it with */
  }
  return send_text(c, status, "application/json", s, strlen(s), cors);
}

static enum MHD_Result send_error(struct MHD_Connection *c, unsigned status,
                                  const char *msg) {
  return send_json(c, status, json_pack("{s:s,s:i}", "error", msg, "status",
                                        (int)status),
                   1);
}

/* --- JSON of the table ------------------------------------------------- */

/* A request's W3C ids as hex (trace 33, spans 17 bytes with the NUL), from
 * the public formatter; 0, or -1 when it has none. */
static int trace_hex(const h2t_trace_context *t, char *tid, char *sid,
                     char *pid) {
  char tp[H2T_TRACEPARENT_LEN + 1];
  if (h2t_trace_context_format(t, tp, sizeof tp) < 0)
    return -1;
  memcpy(tid, tp + 3, 32);
  tid[32] = '\0';
  memcpy(sid, tp + 36, 16);
  sid[16] = '\0';
  h2t_trace_context p = *t;
  memcpy(p.span_id, t->parent_span_id, sizeof p.span_id);
  pid[0] = '\0';
  if (h2t_trace_context_format(&p, tp, sizeof tp) >= 0) {
    memcpy(pid, tp + 36, 16);
    pid[16] = '\0';
  }
  return 0;
}

static void trace_json(json_t *o, const h2t_inflight_info *r) {
  char tid[33], sid[17], pid[17];
  if (trace_hex(&r->trace, tid, sid, pid) != 0)
    return;
  json_object_set_new(o, "trace_id", json_string(tid));
  json_object_set_new(o, "span_id", json_string(sid));
  if (pid[0])
    json_object_set_new(o, "parent_span_id", json_string(pid));
}

/* ?trace_id=: NULL when absent, "" when malformed, else the id. */
static const char *trace_filter(struct MHD_Connection *c) {
  const char *t = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND,
                                              "trace_id");
  if (!t)
    return NULL;
  size_t n = 0;
  for (; t[n]; n++)
    if (!isdigit((unsigned char)t[n]) && !(t[n] >= 'a' && t[n] <= 'f'))
      return "";
  return n == 32 ? t : "";
}

static int trace_match(const h2t_inflight_info *r, const char *want) {
  char tid[33], sid[17], pid[17];
  return !want || (trace_hex(&r->trace, tid, sid, pid) == 0 &&
                   !strcmp(tid, want));
}

static json_t *request_json(const h2t_inflight_info *r, uint64_t now,
                            int detail) {
  json_t *o = json_object();
  uint64_t end = r->finished ? r->end_us : now;
  json_object_set_new(o, "id", json_integer((json_int_t)r->id));
  json_object_set_new(o, "kind", json_string(h2t_inflight_kind_name(r->kind)));
  json_object_set_new(o, "method", json_string(r->method));
  json_object_set_new(o, "scheme", json_string(r->scheme));
  json_object_set_new(o, "authority", json_string(r->authority));
  json_object_set_new(o, "path", json_string(r->path));
  json_object_set_new(o, "state", json_string(h2t_inflight_state_name(r->state)));
  json_object_set_new(o, "state_text",
                      json_string(h2t_inflight_state_text(r->state)));
  json_object_set_new(o, "age_us", json_integer((json_int_t)(end - r->start_us)));
  json_object_set_new(o, "state_age_us",
                      json_integer((json_int_t)(end - r->state_since_us)));
  json_object_set_new(o, "conn", json_integer((json_int_t)r->conn_id));
  json_object_set_new(o, "stream", json_integer(r->stream_id));
  json_object_set_new(o, "status", json_string(r->status));
  json_object_set_new(o, "http_status", json_integer(r->http_status));
  json_object_set_new(o, "bytes_in", json_integer((json_int_t)r->bytes_in));
  json_object_set_new(o, "bytes_out", json_integer((json_int_t)r->bytes_out));
  json_object_set_new(o, "start_us", json_integer((json_int_t)r->start_us));
  trace_json(o, r);
  if (r->canceled) {
    json_object_set_new(o, "canceled", json_true());
    json_object_set_new(o, "cancel_reason", json_string(r->cancel_reason));
  }
  if (r->finished) {
    json_object_set_new(o, "outcome",
                        json_string(r->error ? "error" : "ok"));
    json_object_set_new(o, "error", json_integer(r->error));
    if (r->error)
      json_object_set_new(o, "error_name", json_string(h2t_errname(r->error)));
    json_object_set_new(o, "error_text", json_string(h2t_strerror(r->error)));
    json_object_set_new(o, "end_us", json_integer((json_int_t)r->end_us));
  }
  if (detail) {
    json_t *h = json_array();
    for (unsigned i = 0; i < r->nhistory; i++) {
      const h2t_inflight_step *s = &r->history[i];
      json_t *step = json_pack(
          "{s:s,s:s,s:I,s:I}", "state", h2t_inflight_state_name(s->state),
          "state_text", h2t_inflight_state_text(s->state), "entered_us",
          (json_int_t)s->entered_us, "duration_us",
          (json_int_t)s->duration_us);
      if (s->state == H2T_IFS_CANCELING && r->canceled)
        json_object_set_new(step, "reason", json_string(r->cancel_reason));
      json_array_append_new(h, step);
    }
    json_object_set_new(o, "history", h);
    json_object_set_new(o, "history_dropped", json_integer(r->history_dropped));
  }
  return o;
}

#define BAD_TRACE_ID "trace_id must be 32 lowercase hex digits"

static enum MHD_Result get_requests(struct MHD_Connection *c) {
  const char *want = trace_filter(c);
  if (want && !*want)
    return send_error(c, MHD_HTTP_BAD_REQUEST, BAD_TRACE_ID);
  h2t_inflight_info *arr;
  size_t n;
  if (h2t_inflight_snapshot(&arr, &n) != 0)
    return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
  uint64_t now = h2t_now_us();
  json_t *list = json_array(); /* the snapshot is oldest first */
  size_t shown = 0;
  for (size_t i = 0; i < n; i++)
    if (trace_match(&arr[i], want)) {
      json_array_append_new(list, request_json(&arr[i], now, 0));
      shown++;
    }
  h2t_inflight_info_free(arr);
  return send_json(c, MHD_HTTP_OK,
                   json_pack("{s:o,s:I,s:I}", "requests", list, "count",
                             (json_int_t)shown, "server_time_us",
                             (json_int_t)now),
                   1);
}

/* ?format=har / ?format=chrome: streamed from the ring by the library's
 * reader, a request at a time, so the response costs the memory of one
 * request however large the ring. */
static ssize_t export_read(void *cls, uint64_t pos, char *buf, size_t max) {
  ssize_t n = h2t_export_reader_read(cls, buf, max);
  if (n == 0)
    return MHD_CONTENT_READER_END_OF_STREAM;
  return n < 0 ? MHD_CONTENT_READER_END_WITH_ERROR : n;
}

static void export_free(void *cls) { h2t_export_reader_del(cls); }

static enum MHD_Result get_recent_export(struct MHD_Connection *c,
                                         h2t_export_format fmt) {
  h2t_export_reader *rd;
  if (h2t_export_reader_new(&rd, NULL, fmt) != 0)
    return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
  struct MHD_Response *r = MHD_create_response_from_callback(
      MHD_SIZE_UNKNOWN, 16 * 1024, export_read, rd, export_free);
  if (!r) {
    h2t_export_reader_del(rd);
    return MHD_NO;
  }
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
  MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  MHD_add_response_header(r, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN, "*");
  MHD_add_response_header(r, "Content-Disposition",
                          fmt == H2T_EXPORT_HAR
                              ? "attachment; filename=\"recent.har\""
                              : "attachment; filename=\"recent-trace.json\"");
  enum MHD_Result rc = MHD_queue_response(c, MHD_HTTP_OK, r);
  MHD_destroy_response(r);
  return rc;
}

static enum MHD_Result get_recent(struct MHD_Connection *c) {
  const char *format =
      MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "format");
  if (format && !strcmp(format, "har"))
    return get_recent_export(c, H2T_EXPORT_HAR);
  if (format && !strcmp(format, "chrome"))
    return get_recent_export(c, H2T_EXPORT_CHROME);
  if (format && strcmp(format, "json"))
    return send_error(c, MHD_HTTP_BAD_REQUEST,
                      "format must be json, har or chrome");
  const char *want = trace_filter(c);
  if (want && !*want)
    return send_error(c, MHD_HTTP_BAD_REQUEST, BAD_TRACE_ID);
  h2t_inflight_info *arr;
  size_t n;
  if (h2t_inflight_recent(&arr, &n) != 0)
    return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
  uint64_t now = h2t_now_us();
  json_t *list = json_array();
  for (size_t i = 0; i < n; i++)
    if (trace_match(&arr[i], want))
      json_array_append_new(list, request_json(&arr[i], now, 1));
  h2t_inflight_info_free(arr);
  return send_json(c, MHD_HTTP_OK,
                   json_pack("{s:o,s:I}", "recent", list, "server_time_us",
                             (json_int_t)now),
                   1);
}

static enum MHD_Result get_one(struct MHD_Connection *c, uint64_t id) {
  h2t_inflight_info r;
  if (h2t_inflight_get(id, &r) != 0)
    return send_error(c, MHD_HTTP_NOT_FOUND, "no such request");
  uint64_t now = h2t_now_us();
  json_t *o = request_json(&r, now, 1);
  json_object_set_new(o, "server_time_us", json_integer((json_int_t)now));
  return send_json(c, MHD_HTTP_OK, o, 1);
}

static enum MHD_Result get_connections(struct MHD_Connection *c) {
  h2t_inflight_conn *arr;
  size_t n;
  if (h2t_inflight_connections(&arr, &n) != 0)
    return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
  uint64_t now = h2t_now_us();
  json_t *list = json_array();
  for (size_t i = 0; i < n; i++) {
    const h2t_inflight_conn *k = &arr[i];
    json_t *o = json_object();
    json_object_set_new(o, "id", json_integer((json_int_t)k->id));
    json_object_set_new(o, "kind", json_string(h2t_inflight_kind_name(k->kind)));
    json_object_set_new(o, "peer", json_string(k->peer));
    json_object_set_new(o, "authority", json_string(k->authority));
    json_object_set_new(o, "age_us",
                        json_integer((json_int_t)(now - k->opened_us)));
    json_object_set_new(o, "streams_active", json_integer(k->streams_active));
    json_object_set_new(o, "streams_max", json_integer(k->streams_max));
    if (k->idle_since_us)
      json_object_set_new(o, "idle_us",
                          json_integer((json_int_t)(now - k->idle_since_us)));
    else
      json_object_set_new(o, "idle_us", json_null());
    json_object_set_new(o, "requests", json_integer((json_int_t)k->requests));
    json_object_set_new(o, "reuses", json_integer((json_int_t)k->reuses));
    json_object_set_new(o, "goaway",
                        json_string(k->goaway_sent && k->goaway_received
                                        ? "both"
                                    : k->goaway_sent     ? "sent"
                                    : k->goaway_received ? "received"
                                                         : "none"));
    json_object_set_new(o, "bytes_in", json_integer((json_int_t)k->bytes_in));
    json_object_set_new(o, "bytes_out", json_integer((json_int_t)k->bytes_out));
    json_array_append_new(list, o);
  }
  h2t_inflight_conn_free(arr);
  return send_json(c, MHD_HTTP_OK,
                   json_pack("{s:o,s:I}", "connections", list,
                             "server_time_us", (json_int_t)now),
                   1);
}

static json_t *profile_row_json(const h2t_inflight_profile_row *r) {
  json_t *states = json_object();
  for (unsigned s = 0; s < H2T_IFS_COUNT_; s++) {
    const h2t_inflight_state_stat *st = &r->states[s];
    if (!st->requests || s == H2T_IFS_DONE)
      continue;
    json_object_set_new(
        states, h2t_inflight_state_name((h2t_inflight_state)s),
        json_pack("{s:I,s:I,s:I,s:f}", "requests", (json_int_t)st->requests,
                  "total_us", (json_int_t)st->total_us, "mean_us",
                  (json_int_t)(st->total_us / st->requests), "share",
                  r->total_us ? (double)st->total_us / (double)r->total_us
                              : 0.0));
  }
  return json_pack("{s:s,s:s,s:I,s:I,s:I,s:I,s:o}", "kind",
                   h2t_inflight_kind_name(r->kind), "authority", r->authority,
                   "requests", (json_int_t)r->requests, "errors",
                   (json_int_t)r->errors, "total_us", (json_int_t)r->total_us,
                   "mean_us",
                   (json_int_t)(r->requests ? r->total_us / r->requests : 0),
                   "states", states);
}

static enum MHD_Result get_profile(struct MHD_Connection *c) {
  h2t_inflight_profile_data *p;
  if (h2t_inflight_profile(&p) != 0)
    return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "no profile");
  json_t *overall = json_array(), *rows = json_array();
  for (int k = 0; k < 2; k++)
    json_array_append_new(overall, profile_row_json(&p->overall[k]));
  for (size_t i = 0; i < p->nrows; i++)
    json_array_append_new(rows, profile_row_json(&p->rows[i]));
  h2t_inflight_profile_free(p);
  return send_json(c, MHD_HTTP_OK,
                   json_pack("{s:o,s:o}", "overall", overall, "by_authority",
                             rows),
                   1);
}

static enum MHD_Result get_threads(struct MHD_Connection *c) {
  char *s;
  if (h2t_diag_threads_json(&s) != 0)
    return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "sampling failed");
  return send_text(c, MHD_HTTP_OK, "application/json", s, strlen(s), 1);
}

static enum MHD_Result get_metrics(struct MHD_Connection *c) {
  char *s;
  size_t len;
  if (h2t_diag_metrics(&s, &len) != 0)
    return send_error(c, MHD_HTTP_SERVICE_UNAVAILABLE, "out of memory");
  return send_text(c, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8",
                   s, len, 1);
}

static enum MHD_Result get_index(struct MHD_Connection *c) {
  return send_json(
      c, MHD_HTTP_OK,
      json_pack("{s:[s,s,s,s,s,s,s,s,s,s,s]}", "endpoints", "GET /debug/ui",
                "GET /debug/requests", "GET /debug/requests?trace_id=HEX",
                "GET /debug/requests/{id}", "POST /debug/requests/{id}/cancel",
                "GET /debug/recent", "GET /debug/recent?format=har",
                "GET /debug/recent?format=chrome", "GET /debug/connections",
                "GET /debug/profile", "GET /debug/threads", "GET /metrics"),
      1);
}

/* --- cancel ------------------------------------------------------------- */

/* Constant time in the length of what the client sent, whatever the token. */
static int token_ok(const struct h2t_diag *d, const char *given) {
  size_t glen = strlen(given);
  unsigned char diff = (unsigned char)(glen != d->token_len);
  for (size_t i = 0; i < glen; i++)
    diff |= (unsigned char)given[i] ^
            (unsigned char)d->token[i < d->token_len ? i : 0];
  return diff == 0;
}

static enum MHD_Result post_cancel(struct h2t_diag *d, struct MHD_Connection *c,
                                   uint64_t id) {
  if (!d->token)
    return send_error(c, MHD_HTTP_FORBIDDEN,
                      "cancel disabled: no token configured");
  const char *auth = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                 MHD_HTTP_HEADER_AUTHORIZATION);
  if (!auth)
    return send_error(c, MHD_HTTP_UNAUTHORIZED, "bearer token required");
  if (strncasecmp(auth, "Bearer ", 7) != 0)
    return send_error(c, MHD_HTTP_UNAUTHORIZED, "bearer token required");
  const char *tok = auth + 7;
  while (*tok == ' ')
    tok++;
  if (!token_ok(d, tok))
    return send_error(c, MHD_HTTP_FORBIDDEN, "wrong token");
  const char *reason =
      MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "reason");
  if (!reason || !reason[0])
    reason = "diag endpoint";
  int rc = h2t_inflight_cancel(id, reason);
  if (rc == H2T_ERR_NOT_FOUND)
    return send_error(c, MHD_HTTP_NOT_FOUND, "no such request in flight");
  if (rc == H2T_ERR_STATE)
    return send_error(c, MHD_HTTP_CONFLICT, "already canceling");
  if (rc != 0)
    return send_error(c, MHD_HTTP_CONFLICT, h2t_strerror(rc));
  return send_json(c, MHD_HTTP_OK,
                   json_pack("{s:I,s:b,s:s}", "id", (json_int_t)id, "canceled",
                             1, "reason", reason),
                   0);
}

/* --- routing ------------------------------------------------------------ */

/* Decimal id without sign, leading zeros or overflow; 0 if not one. */
static uint64_t parse_id(const char *s, size_t len) {
  if (!len || len > 20 || s[0] == '0')
    return 0;
  uint64_t v = 0;
  for (size_t i = 0; i < len; i++) {
    if (s[i] < '0' || s[i] > '9')
      return 0;
    uint64_t nv = v * 10 + (uint64_t)(s[i] - '0');
    if (nv / 10 != v)
      return 0;
    v = nv;
  }
  return v;
}

static enum MHD_Result route(struct h2t_diag *d, struct MHD_Connection *c,
                             const char *url, const char *method) {
  int get = !strcmp(method, MHD_HTTP_METHOD_GET) ||
            !strcmp(method, MHD_HTTP_METHOD_HEAD);
  int post = !strcmp(method, MHD_HTTP_METHOD_POST);
  if (h2t__ui_match(url)) /* the web page: ui.c */
    return h2t__ui_serve(c, url, get);
  static const struct {
    const char *path;
    enum MHD_Result (*fn)(struct MHD_Connection *);
  } gets[] = {{"/debug/requests", get_requests},
              {"/debug/recent", get_recent},
              {"/debug/connections", get_connections},
              {"/debug/profile", get_profile},
              {"/debug/threads", get_threads},
              {"/metrics", get_metrics},
              {"/debug", get_index},
              {"/", get_index}};
  for (size_t i = 0; i < sizeof gets / sizeof gets[0]; i++)
    if (!strcmp(url, gets[i].path)) {
      if (!get)
        return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed");
      return gets[i].fn(c);
    }
  static const char pre[] = "/debug/requests/";
  if (!strncmp(url, pre, sizeof pre - 1)) {
    const char *rest = url + sizeof pre - 1;
    const char *slash = strchr(rest, '/');
    size_t idlen = slash ? (size_t)(slash - rest) : strlen(rest);
    uint64_t id = parse_id(rest, idlen);
    if (!id)
      return send_error(c, MHD_HTTP_NOT_FOUND, "bad request id");
    if (!slash) {
      if (!get)
        return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed");
      return get_one(c, id);
    }
    if (!strcmp(slash, "/cancel")) {
      if (!post)
        return send_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "use POST");
      return post_cancel(d, c, id);
    }
  }
  return send_error(c, MHD_HTTP_NOT_FOUND, "not found");
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *c,
                                  const char *url, const char *method,
                                  const char *version, const char *upload,
                                  size_t *upload_size, void **con_cls) {
  struct h2t_diag *d = cls;
  struct req_state *st = *con_cls;
  if (!st) {
    st = calloc(1, sizeof *st);
    if (!st)
      return MHD_NO;
    *con_cls = st;
    const char *cl = MHD_lookup_connection_value(
        c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoull(cl, NULL, 10) > DIAG_MAX_BODY) {
      st->too_big = 1;
      return send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "request too large");
    }
    return MHD_YES;
  }
  if (*upload_size) {
    /* bodies are ignored; a chunked one that grows too big is cut off */
    st->too_big |= *upload_size > DIAG_MAX_BODY;
    *upload_size = 0;
    return st->too_big ? MHD_NO : MHD_YES;
  }
  if (st->too_big)
    return MHD_NO;
  return route(d, c, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  free(*con_cls);
  *con_cls = NULL;
}

/* --- start / stop ------------------------------------------------------- */

static int is_loopback(const struct sockaddr *sa) {
  if (sa->sa_family == AF_INET) {
    const struct sockaddr_in *a = (const void *)sa;
    return (ntohl(a->sin_addr.s_addr) >> 24) == 127;
  }
  const struct sockaddr_in6 *a = (const void *)sa;
  if (IN6_IS_ADDR_LOOPBACK(&a->sin6_addr))
    return 1;
  return IN6_IS_ADDR_V4MAPPED(&a->sin6_addr) && a->sin6_addr.s6_addr[12] == 127;
}

static int parse_port(const char *s, uint16_t *port) {
  char *end;
  if (!*s || !isdigit((unsigned char)*s))
    return -1;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (*end || errno || v > 65535)
    return -1;
  *port = (uint16_t)v;
  return 0;
}

/* "ADDR:PORT", "[V6]:PORT", "PORT".  0 or -1. */
static int parse_listen(const char *s, struct sockaddr_storage *ss) {
  char host[64] = "127.0.0.1";
  const char *portstr = s;
  uint16_t port;
  memset(ss, 0, sizeof *ss);
  if (s[0] == '[') {
    const char *e = strchr(s, ']');
    if (!e || e[1] != ':' || (size_t)(e - s - 1) >= sizeof host)
      return -1;
    memcpy(host, s + 1, (size_t)(e - s - 1));
    host[e - s - 1] = '\0';
    portstr = e + 2;
  } else if (strchr(s, ':')) {
    const char *e = strrchr(s, ':');
    if ((size_t)(e - s) >= sizeof host || strchr(s, ':') != e)
      return -1;
    memcpy(host, s, (size_t)(e - s));
    host[e - s] = '\0';
    portstr = e + 1;
  }
  if (parse_port(portstr, &port) != 0)
    return -1;
  if (!strcmp(host, "localhost"))
    strcpy(host, "127.0.0.1");
  struct sockaddr_in *a4 = (void *)ss;
  struct sockaddr_in6 *a6 = (void *)ss;
  if (inet_pton(AF_INET, host, &a4->sin_addr) == 1) {
    a4->sin_family = AF_INET;
    a4->sin_port = htons(port);
  } else if (inet_pton(AF_INET6, host, &a6->sin6_addr) == 1) {
    a6->sin6_family = AF_INET6;
    a6->sin6_port = htons(port);
  } else
    return -1;
  return 0;
}

int h2t_diag_start(h2t_diag **out, const h2t_diag_config *cfgp) {
  h2t_diag_config cfg_ = {H2T_DIAG_CONFIG_INIT}, *cfg = &cfg_;
  if (!out)
    return H2T_ERR_INVALID_ARG;
  *out = NULL;
  if (cfgp && h2t__struct_in(cfg, sizeof *cfg, cfgp, H2T__DIAG_CONFIG_V1))
    return H2T_ERR_INVALID_ARG;
  struct sockaddr_storage ss;
  if (parse_listen(cfg->listen ? cfg->listen : "127.0.0.1:0", &ss))
    return H2T_ERR_INVALID_ARG;
  if (!is_loopback((struct sockaddr *)&ss) && !cfg->allow_remote)
    return H2T_ERR_INVALID_ARG;
  int expected = 0;
  if (!atomic_compare_exchange_strong(&diag_running, &expected, 1))
    return H2T_ERR_STATE;

  int rc;
  struct h2t_diag *d = calloc(1, sizeof *d);
  if (!d) {
    rc = H2T_ERR_NOMEM;
    goto fail;
  }
  if (cfg->token && cfg->token[0]) {
    d->token = strdup(cfg->token);
    if (!d->token) {
      rc = H2T_ERR_NOMEM;
      goto fail;
    }
    d->token_len = strlen(d->token);
  }
  if ((rc = h2t_inflight_hold()) != 0)
    goto fail;
  if ((rc = h2t__stacks_init()) != 0) {
    h2t_inflight_release();
    goto fail;
  }
  unsigned maxconn = cfg->max_connections ? cfg->max_connections : 16;
  unsigned timeout = cfg->timeout_s ? cfg->timeout_s : 10;
  /* ITC: the daemon's thread wakes for a connection handed to it with
   * MHD_add_connection() (h2t__diag_adopt), not only for its listener */
  unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ITC;
  if (ss.ss_family == AF_INET6)
    flags |= MHD_USE_IPv6;
  d->mhd = MHD_start_daemon(
      flags, 0, NULL, NULL, on_request, d, MHD_OPTION_SOCK_ADDR,
      (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
      (size_t)DIAG_CONN_MEMORY, MHD_OPTION_CONNECTION_LIMIT, maxconn,
      MHD_OPTION_CONNECTION_TIMEOUT, timeout, MHD_OPTION_NOTIFY_COMPLETED,
      on_completed, NULL, MHD_OPTION_END);
  if (!d->mhd) {
    h2t__stacks_fini();
    h2t_inflight_release();
    rc = H2T_ERR_BIND;
    goto fail;
  }
  const union MHD_DaemonInfo *info =
      MHD_get_daemon_info(d->mhd, MHD_DAEMON_INFO_BIND_PORT);
  d->port = info ? info->port : 0;
  *out = d;
  return 0;
fail:
  if (d)
    free(d->token);
  free(d);
  atomic_store(&diag_running, 0);
  return rc;
}

int h2t__diag_adopt(h2t_diag *d, int fd) {
  struct sockaddr_in lo = {.sin_family = AF_INET,
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  /* MHD closes fd when this fails, too */
  return MHD_add_connection(d->mhd, fd, (struct sockaddr *)&lo, sizeof lo) ==
                 MHD_YES
             ? 0
             : -1;
}

uint16_t h2t_diag_port(const h2t_diag *d) { return d ? d->port : 0; }

void h2t_diag_stop(h2t_diag *d) {
  if (!d)
    return;
  MHD_stop_daemon(d->mhd);
  h2t__stacks_fini();
  h2t_inflight_release();
  free(d->token);
  free(d);
  atomic_store(&diag_running, 0);
}
