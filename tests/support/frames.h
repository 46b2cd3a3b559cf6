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

#define PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

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

/* A frame read back: its header's fields and its payload. */
typedef struct frame_in {
  uint8_t type, flags;
  uint32_t sid;
  const uint8_t *pl;
  size_t len;
} frame_in;

/* The next whole frame at in->p + *off into f, *off moved past it; 0 when
 * what is left is not a whole frame (drop the *off bytes read, then
 * recv_more). */
static inline int frame_next(const buf *in, size_t *off, frame_in *f) {
  if (in->len - *off < 9)
    return 0;
  const uint8_t *h = in->p + *off;
  f->len = ((size_t)h[0] << 16) | ((size_t)h[1] << 8) | h[2];
  if (in->len - *off < 9 + f->len)
    return 0;
  f->type = h[3];
  f->flags = h[4];
  f->sid = ((uint32_t)(h[5] & 0x7f) << 24) | ((uint32_t)h[6] << 16) |
           ((uint32_t)h[7] << 8) | h[8];
  f->pl = h + 9;
  *off += 9 + f->len;
  return 1;
}

/* The first n bytes of b, read: gone. */
static inline void drop(buf *b, size_t n) {
  if (n)
    memmove(b->p, b->p + n, b->len - n);
  b->len -= n;
}

/* A 32-bit big-endian field (an error code, a window increment). */
static inline uint32_t be32(const uint8_t *p) {
  return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
         ((uint32_t)p[2] << 8) | p[3];
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
