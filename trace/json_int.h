/*
 * trace/ private: hand-written JSON for the core library (which links no
 * JSON library).  Used by the event lines (event_json.c) and the exporters
 * (export.c), so both escape the same way.
 */
#ifndef H2T_JSON_INT_H
#define H2T_JSON_INT_H

#include <stddef.h>
#include <string.h>

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

#endif
