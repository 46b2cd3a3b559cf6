/* JSON strings for the hand-written JSON of the core (json_int.h). */
#include <stdint.h>
#include <string.h>

#include "trace/json_int.h"
#include "trace/tracectx_int.h"

/* Valid UTF-8 as jansson checks it: no overlong forms, no surrogates,
 * nothing above U+10FFFF. */
static int utf8_valid(const unsigned char *s, size_t len) {
  for (size_t i = 0; i < len;) {
    unsigned c = s[i], need;
    uint32_t v;
    if (c < 0x80) {
      i++;
      continue;
    }
    if (c >= 0xC2 && c <= 0xDF)
      need = 1, v = c & 0x1F;
    else if (c >= 0xE0 && c <= 0xEF)
      need = 2, v = c & 0x0F;
    else if (c >= 0xF0 && c <= 0xF4)
      need = 3, v = c & 0x07;
    else
      return 0;
    if (len - i <= need)
      return 0;
    for (unsigned k = 1; k <= need; k++) {
      if ((s[i + k] & 0xC0) != 0x80)
        return 0;
      v = (v << 6) | (s[i + k] & 0x3F);
    }
    if ((need == 2 && v < 0x800) || (need == 3 && v < 0x10000) ||
        v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
      return 0;
    i += need + 1;
  }
  return 1;
}

/* Peers send arbitrary bytes: see json_int.h for what invalid UTF-8 becomes. */
void h2t__json_str(h2t__jbuf *j, const char *s, size_t len) {
  const unsigned char *u = (const unsigned char *)s;
  int ascii_only = !utf8_valid(u, len);
  h2t__json_rawc(j, '"');
  size_t run = 0; /* bytes copied as they are, flushed before an escape */
  for (size_t i = 0; i < len; i++) {
    unsigned char c = u[i];
    const char *esc = NULL;
    char ubuf[8];
    if (c == '"')
      esc = "\\\"";
    else if (c == '\\')
      esc = "\\\\";
    else if (c == '\b')
      esc = "\\b";
    else if (c == '\f')
      esc = "\\f";
    else if (c == '\n')
      esc = "\\n";
    else if (c == '\r')
      esc = "\\r";
    else if (c == '\t')
      esc = "\\t";
    else if (c < 0x20) {
      static const char hex[] = "0123456789ABCDEF";
      memcpy(ubuf, "\\u00", 4);
      ubuf[4] = hex[c >> 4];
      ubuf[5] = hex[c & 15];
      ubuf[6] = '\0';
      esc = ubuf;
    } else if (c >= 0x80 && ascii_only)
      esc = "?";
    if (!esc) {
      run++;
      continue;
    }
    h2t__json_raw(j, s + i - run, run);
    run = 0;
    h2t__json_raw(j, esc, strlen(esc));
  }
  h2t__json_raw(j, s + len - run, run);
  h2t__json_rawc(j, '"');
}


static void json_hex(h2t__jbuf *j, const char *k, const uint8_t *id,
                     size_t n) {
  char hex[34];
  h2t__hex(id, n, hex + 1);
  hex[0] = hex[2 * n + 1] = '"';
  h2t__json_key(j, k);
  h2t__json_raw(j, hex, 2 * n + 2);
}

void h2t__json_trace(h2t__jbuf *j, const h2t_trace_context *t, const char *kt,
                     const char *ks, const char *kp) {
  if (!t || h2t__zero_id(t->trace_id, 16))
    return;
  json_hex(j, kt, t->trace_id, 16);
  json_hex(j, ks, t->span_id, 8);
  if (!h2t__zero_id(t->parent_span_id, 8))
    json_hex(j, kp, t->parent_span_id, 8);
}
