/*
 * trace/ private: hand-written JSON for the core library (which links no
 * JSON library).  Used by the event lines (event_json.c) and the exporters
 * (export.c), so both escape the same way.
 */
#ifndef H2T_JSON_INT_H
#define H2T_JSON_INT_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <h2trace/trace.h>

/* Counts every byte the text needs; stores what fits in buf, keeping one
 * byte for the NUL (snprintf's contract). */
typedef struct h2t__jbuf {
  char *buf;
  size_t cap, n;
  int fields; /* written so far in the current object: the next needs a comma */
} h2t__jbuf;

static inline void h2t__json_raw(h2t__jbuf *j, const char *s, size_t len) {
  if (j->n < j->cap) {
    size_t room = j->cap - 1 - j->n, c = len < room ? len : room;
    memcpy(j->buf + j->n, s, c);
  }
  j->n += len;
}

static inline void h2t__json_rawc(h2t__jbuf *j, char c) {
  h2t__json_raw(j, &c, 1);
}

/* A JSON string, quotes included, escaped as jansson's compact dump does.
 * A string that is not valid UTF-8 has each non-ASCII byte written as '?',
 * so the output still parses. */
void h2t__json_str(h2t__jbuf *j, const char *s, size_t len);

/* A member's key and colon, after a comma unless it is the object's first.
 * Our own keys only: they are not escaped. */
static inline void h2t__json_key(h2t__jbuf *j, const char *k) {
  if (j->fields++)
    h2t__json_rawc(j, ',');
  h2t__json_rawc(j, '"');
  h2t__json_raw(j, k, strlen(k));
  h2t__json_raw(j, "\":", 2);
}

static inline void h2t__json_int(h2t__jbuf *j, const char *k, long long v) {
  char b[24];
  int n = snprintf(b, sizeof b, "%lld", v);
  h2t__json_key(j, k);
  h2t__json_raw(j, b, (size_t)n);
}

/* JSON integers here are signed 64-bit, as jansson's were: clamp. */
static inline void h2t__json_u64(h2t__jbuf *j, const char *k, uint64_t v) {
  h2t__json_int(j, k, v > INT64_MAX ? INT64_MAX : (long long)v);
}

static inline void h2t__json_bool(h2t__jbuf *j, const char *k, int v) {
  h2t__json_key(j, k);
  if (v)
    h2t__json_raw(j, "true", 4);
  else
    h2t__json_raw(j, "false", 5);
}

/* A request's W3C ids as lowercase hex strings under the keys the format
 * wants (kt, ks, kp); nothing when t is NULL or has no trace id, and no
 * parent when it has none. */
void h2t__json_trace(h2t__jbuf *j, const h2t_trace_context *t, const char *kt,
                     const char *ks, const char *kp);

#endif
