/* The diagnostics endpoint: libmicrohttpd on its own thread, JSON through
 * jansson.  Everything it shows is copied out of the in-flight table and the
 * connection registry, so it never waits for an application loop. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>

#include <jansson.h>
#include <microhttpd.h>

#include <h2trace/diag.h>
#include "diag/diag_int.h"
#include "trace/abi_int.h"

#define DIAG_MAX_BODY 4096         /* a cancel needs none */
#define DIAG_CONN_MEMORY (32 * 1024) /* per connection: headers + URL */
#define DIAG_MAX_LIST 64           /* cors_origins, hosts */

/* One client connection, from MHD's "started" to its "closed"
 * notification, in the list that the connection budget and the deadline
 * watch read (under h2t_diag.lock). */
struct conn {
  struct h2t_diag *d;
  struct conn *prev, *next;
  int fd;
  uint64_t since_us;  /* accepted, or its previous answer sent */
  int busy;           /* a request is being answered */
  int cut;            /* shut down by us: MHD closes it at its next read */
  unsigned char ip[16];
  size_t iplen;
};

struct h2t_diag {
  struct MHD_Daemon *mhd;
  char *token;
  size_t token_len;
  uint16_t port;
  char **origins, **hosts;
  size_t norigins, nhosts;
  char listen_host[64]; /* as it appears in a Host header */
  int wildcard;         /* listening on 0.0.0.0 or :: */
  int show_query;
  unsigned max_conns, max_per_ip;
  uint64_t deadline_us;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  pthread_t watch;
  int watching, stopping;
  struct conn *head, *tail;
  unsigned nlive;        /* in the list and not cut */
};

static atomic_int diag_running;

struct req_state {
  int too_big;
  size_t body; /* bytes of request body seen so far */
};

/* The connection's own record (NULL only when its allocation failed). */
static struct conn *conn_of(struct MHD_Connection *c) {
  const union MHD_ConnectionInfo *ci =
      MHD_get_connection_info(c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
  return ci ? ci->socket_context : NULL;
}

/* --- responses ------------------------------------------------------------ */

static int listed(char *const *list, size_t n, const char *s, size_t len) {
  for (size_t i = 0; i < n; i++)
    if (strlen(list[i]) == len && !strncasecmp(list[i], s, len))
      return 1;
  return 0;
}

/* The request's Origin if the application listed it, else NULL. */
static const char *listed_origin(struct MHD_Connection *c) {
  struct conn *k = conn_of(c);
  const char *o = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
  if (!k || !o || !listed(k->d->origins, k->d->norigins, o, strlen(o)))
    return NULL;
  return o;
}

/* Only a listed origin may read an answer: "*" let any page on the machine
 * (or a DNS-rebinding one) read paths, peers and stacks. */
static void add_cors(struct MHD_Connection *c, struct MHD_Response *r) {
  struct conn *k = conn_of(c);
  if (!k || !k->d->norigins)
    return;
  MHD_add_response_header(r, "Vary", "Origin");
  const char *o = listed_origin(c);
  if (o)
    MHD_add_response_header(r, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN, o);
}

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
    add_cors(c, r);
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

/* The 16 bytes of a trace_filter() id (32 lowercase hex digits). */
static void trace_id_bytes(const char *hex, uint8_t id[16]) {
  for (int i = 0; i < 16; i++) {
    int hi = hex[2 * i], lo = hex[2 * i + 1];
    id[i] = (uint8_t)(((isdigit(hi) ? hi - '0' : hi - 'a' + 10) << 4) |
                      (isdigit(lo) ? lo - '0' : lo - 'a' + 10));
  }
}

/* The request has trace id `id` (compared as bytes: the filter is decoded
 * once, not each request's ids formatted), and ids trace_json() shows. */
static int trace_match(const h2t_inflight_info *r, const uint8_t id[16]) {
  static const h2t_trace_context none;
  return !memcmp(r->trace.trace_id, id, 16) &&
         memcmp(r->trace.trace_id, none.trace_id, 16) &&
         memcmp(r->trace.span_id, none.span_id, 8);
}

/* Length of the well-formed UTF-8 character at s (of n bytes), 0 if none
 * (no overlong form, surrogate or code point past U+10FFFF). */
static size_t utf8_char(const unsigned char *s, size_t n) {
  unsigned char b = s[0];
  size_t len;
  uint32_t cp;
  if (b < 0x80)
    return 1;
  if (b >= 0xc2 && b <= 0xdf)
    len = 2, cp = b & 0x1f;
  else if (b >= 0xe0 && b <= 0xef)
    len = 3, cp = b & 0x0f;
  else if (b >= 0xf0 && b <= 0xf4)
    len = 4, cp = b & 0x07;
  else
    return 0;
  if (n < len)
    return 0;
  for (size_t i = 1; i < len; i++) {
    if ((s[i] & 0xc0) != 0x80)
      return 0;
    cp = cp << 6 | (s[i] & 0x3f);
  }
  if ((len == 3 && cp < 0x800) || (len == 4 && (cp < 0x10000 || cp > 0x10ffff)) ||
      (cp >= 0xd800 && cp <= 0xdfff))
    return 0;
  return len;
}

static int utf8_ok(const char *s, size_t n) {
  for (size_t i = 0, k; i < n; i += k)
    if (!(k = utf8_char((const unsigned char *)s + i, n - i)))
      return 0;
  return 1;
}

/* A JSON string of what the table holds, which came from the network: a
 * byte that is not UTF-8 becomes U+FFFD, so that the document stays valid
 * (jansson refuses such a string, and the key would go missing). */
static json_t *jstrn(const char *s, size_t n) {
  if (utf8_ok(s, n))
    return json_stringn(s, n);
  char *t = malloc(n * 3 + 1);
  if (!t)
    return NULL;
  size_t o = 0;
  for (size_t i = 0, k; i < n; i += k) {
    k = utf8_char((const unsigned char *)s + i, n - i);
    if (k) {
      memcpy(t + o, s + i, k);
      o += k;
    } else {
      memcpy(t + o, "\xef\xbf\xbd", 3);
      o += 3;
      k = 1;
    }
  }
  json_t *j = json_stringn(t, o);
  free(t);
  return j;
}

static json_t *jstr(const char *s) { return jstrn(s, strlen(s)); }

/* The path, its query replaced by "redacted" unless the application asked
 * to see queries: they often carry tokens or a user's data. */
static json_t *jpath(const char *path, int show_query) {
  const char *q = show_query ? NULL : strchr(path, '?');
  if (!q)
    return jstr(path);
  size_t n = (size_t)(q - path) + 1;
  char *t = malloc(n + sizeof "redacted");
  if (!t)
    return NULL;
  memcpy(t, path, n);
  memcpy(t + n, "redacted", sizeof "redacted");
  json_t *j = jstr(t);
  free(t);
  return j;
}

static int shows_query(struct MHD_Connection *c) {
  struct conn *k = conn_of(c);
  return k && k->d->show_query;
}

static json_t *request_json(const h2t_inflight_info *r, uint64_t now,
                            int detail, int show_query) {
  json_t *o = json_object();
  uint64_t end = r->finished ? r->end_us : now;
  json_object_set_new(o, "id", json_integer((json_int_t)r->id));
  json_object_set_new(o, "kind", json_string(h2t_inflight_kind_name(r->kind)));
  json_object_set_new(o, "method", jstr(r->method));
  json_object_set_new(o, "scheme", jstr(r->scheme));
  json_object_set_new(o, "authority", jstr(r->authority));
  json_object_set_new(o, "path", jpath(r->path, show_query));
  json_object_set_new(o, "state", json_string(h2t_inflight_state_name(r->state)));
  json_object_set_new(o, "state_text",
                      json_string(h2t_inflight_state_text(r->state)));
  json_object_set_new(o, "age_us", json_integer((json_int_t)(end - r->start_us)));
  json_object_set_new(o, "state_age_us",
                      json_integer((json_int_t)(end - r->state_since_us)));
  json_object_set_new(o, "conn", json_integer((json_int_t)r->conn_id));
  json_object_set_new(o, "stream", json_integer(r->stream_id));
  json_object_set_new(o, "status", jstr(r->status));
  json_object_set_new(o, "http_status", json_integer(r->http_status));
  json_object_set_new(o, "bytes_in", json_integer((json_int_t)r->bytes_in));
  json_object_set_new(o, "bytes_out", json_integer((json_int_t)r->bytes_out));
  json_object_set_new(o, "start_us", json_integer((json_int_t)r->start_us));
  trace_json(o, r);
  if (r->canceled) {
    json_object_set_new(o, "canceled", json_true());
    json_object_set_new(o, "cancel_reason", jstr(r->cancel_reason));
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
        json_object_set_new(step, "reason", jstr(r->cancel_reason));
      json_array_append_new(h, step);
    }
    json_object_set_new(o, "history", h);
    json_object_set_new(o, "history_dropped", json_integer(r->history_dropped));
  }
  return o;
}

/* The requests of arr (freed here) with trace id want (NULL: all), and
 * how many. */
static json_t *request_list(struct MHD_Connection *c, h2t_inflight_info *arr,
                            size_t n, const char *want, uint64_t now,
                            int detail, size_t *shown) {
  int show_query = shows_query(c);
  uint8_t id[16];
  if (want)
    trace_id_bytes(want, id);
  json_t *list = json_array();
  *shown = 0;
  for (size_t i = 0; i < n; i++)
    if (!want || trace_match(&arr[i], id)) {
      json_array_append_new(list, request_json(&arr[i], now, detail,
                                               show_query));
      ++*shown;
    }
  h2t_inflight_info_free(arr);
  return list;
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
  size_t shown; /* the snapshot is oldest first */
  json_t *list = request_list(c, arr, n, want, now, 0, &shown);
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
  h2t_export_reader_redact_query(rd, !shows_query(c));
  struct MHD_Response *r = MHD_create_response_from_callback(
      MHD_SIZE_UNKNOWN, 16 * 1024, export_read, rd, export_free);
  if (!r) {
    h2t_export_reader_del(rd);
    return MHD_NO;
  }
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
  MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  add_cors(c, r);
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
  size_t shown;
  json_t *list = request_list(c, arr, n, want, now, 1, &shown);
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
  json_t *o = request_json(&r, now, 1, shows_query(c));
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
    json_object_set_new(o, "peer", jstr(k->peer));
    json_object_set_new(o, "authority", jstr(k->authority));
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
  return json_pack("{s:s,s:o,s:I,s:I,s:I,s:I,s:o}", "kind",
                   h2t_inflight_kind_name(r->kind), "authority",
                   jstr(r->authority),
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

/* The whole Authorization value against "Bearer <token>" (the scheme's
 * case aside, RFC 7235), in time that depends on the length of what the
 * client sent only: no prefix, no suffix, no extra space, nothing after a
 * NUL byte passes. */
static int token_ok(const struct h2t_diag *d, const char *given, size_t glen) {
  static const char scheme[] = "bearer ";
  size_t want = sizeof scheme - 1 + d->token_len;
  unsigned char diff = (unsigned char)(glen != want);
  for (size_t i = 0; i < glen; i++) {
    unsigned char g = (unsigned char)given[i], w;
    if (i < sizeof scheme - 1) {
      g = (unsigned char)tolower(g);
      w = (unsigned char)scheme[i];
    } else {
      size_t t = i - (sizeof scheme - 1);
      w = (unsigned char)d->token[t < d->token_len ? t : 0];
    }
    diff |= g ^ w;
  }
  return diff == 0;
}

static enum MHD_Result count_auth(void *cls, enum MHD_ValueKind kind,
                                  const char *key, size_t key_size,
                                  const char *value, size_t value_size) {
  if (!strcasecmp(key, MHD_HTTP_HEADER_AUTHORIZATION))
    ++*(int *)cls;
  return MHD_YES;
}

static enum MHD_Result post_cancel(struct h2t_diag *d, struct MHD_Connection *c,
                                   uint64_t id) {
  if (!d->token)
    return send_error(c, MHD_HTTP_FORBIDDEN,
                      "cancel disabled: no token configured");
  const char *auth;
  size_t alen;
  int nauth = 0;
  MHD_get_connection_values_n(c, MHD_HEADER_KIND, count_auth, &nauth);
  if (nauth > 1)
    return send_error(c, MHD_HTTP_BAD_REQUEST, "more than one Authorization");
  if (MHD_lookup_connection_value_n(c, MHD_HEADER_KIND,
                                    MHD_HTTP_HEADER_AUTHORIZATION,
                                    sizeof MHD_HTTP_HEADER_AUTHORIZATION - 1,
                                    &auth, &alen) != MHD_YES ||
      alen < 7 || strncasecmp(auth, "Bearer ", 7) != 0)
    return send_error(c, MHD_HTTP_UNAUTHORIZED, "bearer token required");
  if (!token_ok(d, auth, alen))
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
                   1);
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

static int parse_port(const char *s, uint16_t *port);

/* A Host this endpoint answers: a loopback literal or localhost, the listen
 * address, a name the application listed, or (listening on every address)
 * any IP literal.  A DNS-rebinding page reaches 127.0.0.1 through a name of
 * its own, and the browser sends that name. */
static int host_ok(const struct h2t_diag *d, const char *host) {
  char name[256];
  const char *end, *port;
  uint16_t p;
  if (host[0] == '[') {
    if (!(end = strchr(host, ']')))
      return 0;
    host++;
    port = end[1] ? end + 1 : NULL;
  } else {
    end = strchr(host, ':');
    port = end;
    if (!end)
      end = host + strlen(host);
  }
  size_t n = (size_t)(end - host);
  if (!n || n >= sizeof name || (port && (*port != ':' || parse_port(port + 1, &p))))
    return 0;
  memcpy(name, host, n);
  name[n] = '\0';
  if (!strcasecmp(name, "localhost") || !strcasecmp(name, d->listen_host) ||
      listed(d->hosts, d->nhosts, name, n))
    return 1;
  struct in_addr a4;
  struct in6_addr a6;
  if (inet_pton(AF_INET, name, &a4) == 1)
    return d->wildcard || (ntohl(a4.s_addr) >> 24) == 127;
  if (inet_pton(AF_INET6, name, &a6) == 1)
    return d->wildcard || IN6_IS_ADDR_LOOPBACK(&a6);
  return 0;
}

/* The request's Origin is this endpoint's own ("http://" + Host). */
static int same_origin(const char *origin, const char *host) {
  return host && !strncasecmp(origin, "http://", 7) &&
         !strcasecmp(origin + 7, host);
}

static enum MHD_Result check_utf8(void *cls, enum MHD_ValueKind kind,
                                  const char *key, size_t key_size,
                                  const char *value, size_t value_size) {
  if (!utf8_ok(key, key_size) || (value && !utf8_ok(value, value_size))) {
    *(int *)cls = 1;
    return MHD_NO;
  }
  return MHD_YES;
}

/* OPTIONS with Access-Control-Request-Method: a listed origin may GET and
 * POST with an Authorization header (the web page's cancel). */
static enum MHD_Result preflight(struct MHD_Connection *c) {
  const char *o = listed_origin(c);
  if (!o)
    return send_error(c, MHD_HTTP_FORBIDDEN, "origin not allowed");
  struct MHD_Response *r =
      MHD_create_response_from_buffer(0, NULL, MHD_RESPMEM_PERSISTENT);
  if (!r)
    return MHD_NO;
  MHD_add_response_header(r, MHD_HTTP_HEADER_ACCESS_CONTROL_ALLOW_ORIGIN, o);
  MHD_add_response_header(r, "Vary", "Origin");
  MHD_add_response_header(r, "Access-Control-Allow-Methods", "GET, HEAD, POST");
  MHD_add_response_header(r, "Access-Control-Allow-Headers", "Authorization");
  MHD_add_response_header(r, "Access-Control-Max-Age", "600");
  MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  enum MHD_Result rc = MHD_queue_response(c, MHD_HTTP_NO_CONTENT, r);
  MHD_destroy_response(r);
  return rc;
}

/* First call, headers in: every check that needs no body.  MHD_YES to go
 * on; else *rc is the answer (already queued). */
static int admit(struct h2t_diag *d, struct MHD_Connection *c, const char *url,
                 const char *method, enum MHD_Result *rc) {
  const char *host =
      MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_HOST);
  if (host && !host_ok(d, host)) {
    *rc = send_error(c, MHD_HTTP_MISDIRECTED_REQUEST,
                     "Host not allowed: use 127.0.0.1, [::1], localhost or "
                     "the listen address (see h2t_diag_config.hosts)");
    return 0;
  }
  int bad = !utf8_ok(url, strlen(url));
  if (!bad)
    MHD_get_connection_values_n(c, MHD_GET_ARGUMENT_KIND, check_utf8, &bad);
  if (bad) {
    *rc = send_error(c, MHD_HTTP_BAD_REQUEST, "path or query is not UTF-8");
    return 0;
  }
  const char *origin = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Origin");
  if (!strcmp(method, MHD_HTTP_METHOD_OPTIONS) &&
      MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                  "Access-Control-Request-Method")) {
    *rc = preflight(c);
    return 0;
  }
  /* a page of another origin changes nothing (reads it cannot see anyway) */
  if (origin && strcmp(method, MHD_HTTP_METHOD_GET) &&
      strcmp(method, MHD_HTTP_METHOD_HEAD) && !listed_origin(c) &&
      !same_origin(origin, host)) {
    *rc = send_error(c, MHD_HTTP_FORBIDDEN, "origin not allowed");
    return 0;
  }
  const char *cl = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                               MHD_HTTP_HEADER_CONTENT_LENGTH);
  if (cl && strtoull(cl, NULL, 10) > DIAG_MAX_BODY) {
    *rc = send_error(c, MHD_HTTP_CONTENT_TOO_LARGE, "request too large");
    return 0;
  }
  return 1;
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
    struct conn *k = conn_of(c);
    if (k)
      k->busy = 1; /* read by the budget, on this thread */
    enum MHD_Result rc;
    if (!admit(d, c, url, method, &rc)) {
      st->too_big = 1; /* answered: a body that follows is not read */
      return rc;
    }
    return MHD_YES;
  }
  if (*upload_size) {
    /* bodies are ignored, but counted: a chunked one is cut off when the
     * total grows too big, however small its chunks */
    st->body += *upload_size;
    st->too_big |= st->body > DIAG_MAX_BODY;
    *upload_size = 0;
    return st->too_big ? MHD_NO : MHD_YES;
  }
  if (st->too_big)
    return MHD_NO;
  return route(d, c, url, method);
}

static void on_completed(void *cls, struct MHD_Connection *c, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  struct h2t_diag *d = cls;
  struct conn *k = conn_of(c);
  if (k) { /* the next request's deadline counts from here */
    pthread_mutex_lock(&d->lock);
    k->busy = 0;
    k->since_us = h2t_now_us();
    pthread_mutex_unlock(&d->lock);
  }
  free(*con_cls);
  *con_cls = NULL;
}

/* --- connection budget and deadline ------------------------------------- */

/* MHD closes it when it next reads (EOF).  The fd stays open until MHD's
 * "closed" notification has taken k out of the list, under the same lock,
 * so it is never someone else's fd. */
static void cut(struct h2t_diag *d, struct conn *k) {
  shutdown(k->fd, SHUT_RDWR);
  k->cut = 1;
  d->nlive--;
}

static int same_ip(const struct conn *a, const struct conn *b) {
  return a->iplen == b->iplen && !memcmp(a->ip, b->ip, a->iplen);
}

/* Over a budget: make room by cutting the connection that has waited
 * longest without a request being answered (idle keep-alive or trickling
 * headers), from the same address when `ip`; the newcomer itself when
 * every other one is being answered. */
static void make_room(struct h2t_diag *d, struct conn *nk, int ip) {
  struct conn *v = NULL;
  for (struct conn *k = d->head; k; k = k->next)
    if (k != nk && !k->cut && !k->busy && (!ip || same_ip(k, nk)) &&
        (!v || k->since_us < v->since_us))
      v = k;
  cut(d, v ? v : nk);
}

static void on_connection(void *cls, struct MHD_Connection *c,
                          void **socket_context,
                          enum MHD_ConnectionNotificationCode code) {
  struct h2t_diag *d = cls;
  struct conn *k = *socket_context;
  if (code == MHD_CONNECTION_NOTIFY_CLOSED) {
    if (!k)
      return;
    pthread_mutex_lock(&d->lock);
    if (!k->cut)
      d->nlive--;
    if (k->prev)
      k->prev->next = k->next;
    else
      d->head = k->next;
    if (k->next)
      k->next->prev = k->prev;
    else
      d->tail = k->prev;
    pthread_mutex_unlock(&d->lock);
    free(k);
    *socket_context = NULL;
    return;
  }
  const union MHD_ConnectionInfo *fi =
      MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
  const union MHD_ConnectionInfo *ai =
      MHD_get_connection_info(c, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
  if (!fi)
    return;
  if (!(k = calloc(1, sizeof *k))) { /* untracked is unbounded: refuse it */
    shutdown(fi->connect_fd, SHUT_RDWR);
    return;
  }
  k->d = d;
  k->fd = fi->connect_fd;
  k->since_us = h2t_now_us();
  if (ai && ai->client_addr && ai->client_addr->sa_family == AF_INET) {
    memcpy(k->ip, &((const struct sockaddr_in *)(const void *)ai->client_addr)->sin_addr, 4);
    k->iplen = 4;
  } else if (ai && ai->client_addr && ai->client_addr->sa_family == AF_INET6) {
    memcpy(k->ip, &((const struct sockaddr_in6 *)(const void *)ai->client_addr)->sin6_addr, 16);
    k->iplen = 16;
  }
  *socket_context = k;
  pthread_mutex_lock(&d->lock);
  k->prev = d->tail;
  if (d->tail)
    d->tail->next = k;
  else
    d->head = k;
  d->tail = k;
  d->nlive++;
  unsigned same = 0;
  for (struct conn *o = d->head; o; o = o->next)
    same += !o->cut && same_ip(o, k);
  if (same > d->max_per_ip)
    make_room(d, k, 1);
  else if (d->nlive > d->max_conns)
    make_room(d, k, 0);
  pthread_cond_signal(&d->cond);
  pthread_mutex_unlock(&d->lock);
}

/* MHD's timeout is an idle one: a client that sends a byte every few
 * seconds would keep its connection forever.  This thread cuts every
 * connection whose request has not been answered within the deadline. */
static void *watch_main(void *arg) {
  struct h2t_diag *d = arg;
  pthread_mutex_lock(&d->lock);
  while (!d->stopping) {
    uint64_t now = h2t_now_us(), next = UINT64_MAX;
    for (struct conn *k = d->head; k; k = k->next) {
      if (k->cut)
        continue;
      if (now - k->since_us >= d->deadline_us)
        cut(d, k);
      else if (k->since_us + d->deadline_us < next)
        next = k->since_us + d->deadline_us;
    }
    if (next == UINT64_MAX) {
      pthread_cond_wait(&d->cond, &d->lock);
    } else {
      struct timespec ts = {.tv_sec = (time_t)(next / 1000000),
                            .tv_nsec = (long)(next % 1000000) * 1000};
      pthread_cond_timedwait(&d->cond, &d->lock, &ts);
    }
  }
  pthread_mutex_unlock(&d->lock);
  return NULL;
}

static void stop_watch(struct h2t_diag *d) {
  if (!d->watching)
    return;
  pthread_mutex_lock(&d->lock);
  d->stopping = 1;
  pthread_cond_signal(&d->cond);
  pthread_mutex_unlock(&d->lock);
  pthread_join(d->watch, NULL);
  d->watching = 0;
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

static void free_list(char **l, size_t n) {
  for (size_t i = 0; i < n && l; i++)
    free(l[i]);
  free(l);
}

/* Copy a caller's list of non-empty strings.  0, H2T_ERR_INVALID_ARG,
 * H2T_ERR_NOMEM. */
static int copy_list(char ***out, size_t *nout, const char *const *l, size_t n) {
  *out = NULL;
  *nout = 0;
  if (!n)
    return 0;
  if (!l || n > DIAG_MAX_LIST)
    return H2T_ERR_INVALID_ARG;
  for (size_t i = 0; i < n; i++)
    if (!l[i] || !l[i][0] || strlen(l[i]) > 255)
      return H2T_ERR_INVALID_ARG;
  char **c = calloc(n, sizeof *c);
  if (!c)
    return H2T_ERR_NOMEM;
  for (size_t i = 0; i < n; i++)
    if (!(c[i] = strdup(l[i]))) {
      free_list(c, n);
      return H2T_ERR_NOMEM;
    }
  *out = c;
  *nout = n;
  return 0;
}

static void diag_free(struct h2t_diag *d) {
  if (!d)
    return;
  free(d->token);
  free_list(d->origins, d->norigins);
  free_list(d->hosts, d->nhosts);
  free(d);
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
  if ((rc = copy_list(&d->origins, &d->norigins, cfg->cors_origins,
                      cfg->ncors_origins)) != 0 ||
      (rc = copy_list(&d->hosts, &d->nhosts, cfg->hosts, cfg->nhosts)) != 0)
    goto fail;
  if (ss.ss_family == AF_INET) {
    const struct sockaddr_in *a = (const void *)&ss;
    inet_ntop(AF_INET, &a->sin_addr, d->listen_host, sizeof d->listen_host);
    d->wildcard = a->sin_addr.s_addr == htonl(INADDR_ANY);
  } else {
    const struct sockaddr_in6 *a = (const void *)&ss;
    inet_ntop(AF_INET6, &a->sin6_addr, d->listen_host, sizeof d->listen_host);
    d->wildcard = IN6_IS_ADDR_UNSPECIFIED(&a->sin6_addr);
  }
  d->show_query = cfg->show_query != 0;
  d->max_conns = cfg->max_connections ? cfg->max_connections : 16;
  d->max_per_ip = cfg->max_connections_per_ip ? cfg->max_connections_per_ip
                                              : d->max_conns / 2;
  if (!d->max_per_ip)
    d->max_per_ip = 1;
  d->deadline_us =
      (uint64_t)(cfg->request_deadline_ms ? cfg->request_deadline_ms : 10000) *
      1000;
  pthread_condattr_t ca;
  pthread_condattr_init(&ca);
  pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* h2t_now_us()'s clock */
  pthread_mutex_init(&d->lock, NULL);
  pthread_cond_init(&d->cond, &ca);
  pthread_condattr_destroy(&ca);
  if (pthread_create(&d->watch, NULL, watch_main, d) != 0) {
    rc = H2T_ERR_SYSTEM;
    goto fail_sync;
  }
  d->watching = 1;
  if ((rc = h2t_inflight_hold()) != 0)
    goto fail_sync;
  if ((rc = h2t__stacks_init()) != 0) {
    h2t_inflight_release();
    goto fail_sync;
  }
  unsigned timeout = cfg->timeout_s ? cfg->timeout_s : 10;
  /* epoll (else poll): select() refuses descriptors past 1023, which a busy
   * process has; the limits given to MHD leave room above the budget so that
   * a newcomer reaches on_connection(), which makes room.  ITC: the daemon's
   * thread wakes for a connection handed to it with MHD_add_connection()
   * (h2t__diag_adopt), not only for its listener. */
  unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ITC;
  if (ss.ss_family == AF_INET6)
    flags |= MHD_USE_IPv6;
  d->mhd = MHD_start_daemon(
      flags, 0, NULL, NULL, on_request, d, MHD_OPTION_SOCK_ADDR,
      (struct sockaddr *)&ss, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
      (size_t)DIAG_CONN_MEMORY, MHD_OPTION_CONNECTION_LIMIT,
      d->max_conns * 2 + 2, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
      d->max_per_ip * 2 + 2, MHD_OPTION_CONNECTION_TIMEOUT, timeout,
      MHD_OPTION_NOTIFY_COMPLETED, on_completed, d,
      MHD_OPTION_NOTIFY_CONNECTION, on_connection, d, MHD_OPTION_END);
  if (!d->mhd) {
    h2t__stacks_fini();
    h2t_inflight_release();
    rc = H2T_ERR_BIND;
    goto fail_sync;
  }
  const union MHD_DaemonInfo *info =
      MHD_get_daemon_info(d->mhd, MHD_DAEMON_INFO_BIND_PORT);
  d->port = info ? info->port : 0;
  *out = d;
  return 0;
fail_sync:
  stop_watch(d);
  pthread_cond_destroy(&d->cond);
  pthread_mutex_destroy(&d->lock);
fail:
  diag_free(d);
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
  MHD_stop_daemon(d->mhd); /* every connection's "closed" empties the list */
  stop_watch(d);
  pthread_cond_destroy(&d->cond);
  pthread_mutex_destroy(&d->lock);
  h2t__stacks_fini();
  h2t_inflight_release();
  diag_free(d);
  atomic_store(&diag_running, 0);
}
