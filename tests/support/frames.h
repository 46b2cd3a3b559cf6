/*
 * Test support: raw HTTP/2 frames built by hand, for tests that speak to a
 * server below nghttp2 (malformed input, slowloris, flow control).
 */
#ifndef H2T_TEST_FRAMES_H
#define H2T_TEST_FRAMES_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

typedef struct buf {
  uint8_t *p;
  size_t len, cap;
} buf;

static inline void put(buf *b, const void *d, size_t n) {
  if (b->len + n > b->cap) {
    b->cap = (b->len + n) * 2 + 1024;
    b->p = realloc(b->p, b->cap);
  }
  memcpy(b->p + b->len, d, n);
  b->len += n;
}

/* A frame: 9-byte header (length, type, flags, stream id), then payload. */
static inline void frame(buf *b, uint8_t type, uint8_t flags, uint32_t sid,
                         const void *payload, size_t len) {
  uint8_t h[9] = {(uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len,
                  type, flags, (uint8_t)(sid >> 24), (uint8_t)(sid >> 16),
                  (uint8_t)(sid >> 8), (uint8_t)sid};
  put(b, h, 9);
  if (len)
    put(b, payload, len);
}

#endif
