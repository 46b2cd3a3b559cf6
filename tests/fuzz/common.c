/* What the fuzz targets share: failing, a strict JSON check, and a trace
 * hook that puts every event through h2t_event_json(). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"

void h2t_fuzz_fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("fuzz: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  abort();
}

/* --- a strict JSON checker ------------------------------------------------ */

typedef struct jp {
  const unsigned char *s, *e;
  int depth;
} jp;

static void ws(jp *p) {
  while (p->s < p->e &&
         (*p->s == ' ' || *p->s == '\t' || *p->s == '\n' || *p->s == '\r'))
    p->s++;
}

static int lit(jp *p, const char *w) {
  size_t n = strlen(w);
  if ((size_t)(p->e - p->s) < n || memcmp(p->s, w, n))
    return 0;
  p->s += n;
  return 1;
}

static int hex4(jp *p, unsigned *v) {
  *v = 0;
  for (int i = 0; i < 4; i++, p->s++) {
    if (p->s >= p->e)
      return 0;
    unsigned c = *p->s;
    *v <<= 4;
    if (c >= '0' && c <= '9')
      *v |= c - '0';
    else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
      *v |= (c | 0x20) - 'a' + 10;
    else
      return 0;
  }
  return 1;
}

/* One UTF-8 sequence: shortest form, no surrogates, <= U+10FFFF. */
static int utf8(jp *p) {
  unsigned c = *p->s, need, v;
  if (c < 0x80) {
    p->s++;
    return 1;
  }
  if (c >= 0xC2 && c <= 0xDF)
    need = 1, v = c & 0x1F;
  else if (c >= 0xE0 && c <= 0xEF)
    need = 2, v = c & 0x0F;
  else if (c >= 0xF0 && c <= 0xF4)
    need = 3, v = c & 0x07;
  else
    return 0;
  if ((size_t)(p->e - p->s) <= need)
    return 0;
  for (unsigned k = 1; k <= need; k++) {
    if ((p->s[k] & 0xC0) != 0x80)
      return 0;
    v = (v << 6) | (p->s[k] & 0x3F);
  }
  if ((need == 2 && v < 0x800) || (need == 3 && v < 0x10000) || v > 0x10FFFF ||
      (v >= 0xD800 && v <= 0xDFFF))
    return 0;
  p->s += need + 1;
  return 1;
}

static int string(jp *p) {
  if (p->s >= p->e || *p->s != '"')
    return 0;
  p->s++;
  while (p->s < p->e) {
    unsigned c = *p->s;
    if (c == '"') {
      p->s++;
      return 1;
    }
    if (c < 0x20)
      return 0;
    if (c != '\\') {
      if (!utf8(p))
        return 0;
      continue;
    }
    p->s++;
    if (p->s >= p->e)
      return 0;
    c = *p->s++;
    if (c == 'u') {
      unsigned v;
      if (!hex4(p, &v))
        return 0;
      if (v >= 0xDC00 && v <= 0xDFFF)
        return 0; /* a lone low surrogate */
      if (v >= 0xD800 && v <= 0xDBFF) {
        if (!lit(p, "\\u") || !hex4(p, &v) || v < 0xDC00 || v > 0xDFFF)
          return 0;
      }
    } else if (!strchr("\"\\/bfnrt", (int)c)) {
      return 0;
    }
  }
  return 0;
}

static int digits(jp *p) {
  const unsigned char *b = p->s;
  while (p->s < p->e && *p->s >= '0' && *p->s <= '9')
    p->s++;
  return p->s > b;
}

static int number(jp *p) {
  if (p->s < p->e && *p->s == '-')
    p->s++;
  if (p->s < p->e && *p->s == '0')
    p->s++;
  else if (!digits(p))
    return 0;
  if (p->s < p->e && *p->s == '.') {
    p->s++;
    if (!digits(p))
      return 0;
  }
  if (p->s < p->e && (*p->s == 'e' || *p->s == 'E')) {
    p->s++;
    if (p->s < p->e && (*p->s == '+' || *p->s == '-'))
      p->s++;
    if (!digits(p))
      return 0;
  }
  return 1;
}

static int value(jp *p) {
  ws(p);
  if (p->s >= p->e || ++p->depth > 64)
    return 0;
  int ok = 0;
  unsigned char c = *p->s;
  if (c == '{' || c == '[') {
    unsigned char close = c == '{' ? '}' : ']';
    p->s++;
    ws(p);
    if (p->s < p->e && *p->s == close) {
      p->s++;
      ok = 1;
    } else {
      for (;;) {
        if (c == '{') {
          ws(p);
          if (!string(p))
            break;
          ws(p);
          if (p->s >= p->e || *p->s++ != ':')
            break;
        }
        if (!value(p))
          break;
        ws(p);
        if (p->s < p->e && *p->s == ',') {
          p->s++;
          continue;
        }
        ok = p->s < p->e && *p->s++ == close;
        break;
      }
    }
  } else if (c == '"') {
    ok = string(p);
  } else if (c == 't') {
    ok = lit(p, "true");
  } else if (c == 'f') {
    ok = lit(p, "false");
  } else if (c == 'n') {
    ok = lit(p, "null");
  } else {
    ok = number(p);
  }
  p->depth--;
  return ok;
}

int h2t_fuzz_json_valid(const char *s, size_t len) {
  jp p = {(const unsigned char *)s, (const unsigned char *)s + len, 0};
  if (!value(&p))
    return 0;
  ws(&p);
  return p.s == p.e;
}

/* --- events ---------------------------------------------------------------- */

void h2t_fuzz_event_check(const h2t_event *ev, void *user) {
  char small[16], *buf;
  int n = h2t_event_json(ev, NULL, 0);
  if (n < 0)
    h2t_fuzz_fail("h2t_event_json(%s) sizing: %d", h2t_event_name(ev->type), n);
  buf = malloc((size_t)n + 1);
  if (!buf)
    return;
  int m = h2t_event_json(ev, buf, (size_t)n + 1);
  if (m != n || strlen(buf) != (size_t)n)
    h2t_fuzz_fail("h2t_event_json(%s): %d, then %d (strlen %zu)",
                  h2t_event_name(ev->type), n, m, strlen(buf));
  if (!h2t_fuzz_json_valid(buf, (size_t)n))
    h2t_fuzz_fail("h2t_event_json(%s) is not valid JSON: %s",
                  h2t_event_name(ev->type), buf);
  /* truncated: snprintf's contract, the same length said, a prefix kept */
  size_t cap = (size_t)n / 2 < sizeof small ? (size_t)n / 2 : sizeof small;
  if (h2t_event_json(ev, small, cap) != n ||
      (cap && (strlen(small) != cap - 1 || memcmp(small, buf, cap - 1))))
    h2t_fuzz_fail("h2t_event_json(%s) truncated to %zu differs",
                  h2t_event_name(ev->type), cap);
  free(buf);
}
