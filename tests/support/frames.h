/*
 * Test support: raw HTTP/2 frames built by hand, for tests that speak to a
 * server below nghttp2 (malformed input, slowloris, flow control).
 */
#ifndef H2T_TEST_FRAMES_H
#define H2T_TEST_FRAMES_H

#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <h2trace/common.h>

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

/* Wait (until end_us, the h2t_now_us() clock) for the peer's next bytes and
 * append them to in.  1: some came; 0: none before end; -1: the peer closed
 * (or the read failed). */
static inline int recv_more(int fd, buf *in, uint64_t end_us) {
  uint64_t now = h2t_now_us();
  if (now >= end_us)
    return 0;
  struct pollfd p = {.fd = fd, .events = POLLIN};
  if (poll(&p, 1, (int)((end_us - now) / 1000) + 1) <= 0)
    return 0;
  uint8_t tmp[65536];
  ssize_t r = recv(fd, tmp, sizeof tmp, 0);
  if (r <= 0)
    return -1;
  put(in, tmp, (size_t)r);
  return 1;
}

#endif
