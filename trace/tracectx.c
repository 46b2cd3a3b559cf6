/* W3C trace context: per-thread id generator, traceparent format and
 * parse (https://www.w3.org/TR/trace-context/ §3.2). */
#include <pthread.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#ifdef __SSE2__
#include <emmintrin.h>
#endif

#include "trace/tracectx_int.h"
#include "trace/trace_int.h"

/* --- ids ------------------------------------------------------------------ */

/* xoshiro256** (Blackman & Vigna): 4 words of state per thread, a few
 * instructions per 64 bits.  Not for secrets: ids only need to be unique,
 * and the spec asks for randomness, not unpredictability. */
struct rng {
  uint64_t s[4];
  int seeded;
};

/* initial-exec: a plain TLS access on the request path, not a call */
static _Thread_local struct rng rng __attribute__((tls_model("initial-exec")));
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;

/* A forked child would repeat its parent's ids: reseed it.  (Only the
 * forking thread exists in the child, and this is its state.) */
static void rng_child(void) { rng.seeded = 0; }
static void atfork_init(void) { pthread_atfork(NULL, NULL, rng_child); }

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += UINT64_C(0x9e3779b97f4a7c15));
  z = (z ^ (z >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
  z = (z ^ (z >> 27)) * UINT64_C(0x94d049bb133111eb);
  return z ^ (z >> 31);
}

__attribute__((noinline, cold)) static void rng_seed(struct rng *g) {
  pthread_once(&atfork_once, atfork_init);
  uint64_t seed[4] = {0};
  ssize_t n = getrandom(seed, sizeof seed, GRND_NONBLOCK);
  /* Without the kernel's entropy (early boot, seccomp): time, pid and the
   * state's address (per thread) through splitmix64, still distinct. */
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t x = seed[0] ^ (uint64_t)ts.tv_sec * 1000000000u ^
               (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32) ^
               (uint64_t)(uintptr_t)g;
  for (int i = 0; i < 4; i++)
    g->s[i] = (n == (ssize_t)sizeof seed ? seed[i] : 0) ^ splitmix64(&x);
  g->seeded = 1;
}

static inline uint64_t rotl(uint64_t x, int k) {
  return (x << k) | (x >> (64 - k));
}

static inline uint64_t rng_next(struct rng *g) {
  uint64_t *s = g->s;
  uint64_t r = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return r;
}

void h2t__trace_ctx_new(h2t_trace_context *out,
                        const h2t_trace_context *parent) {
  struct rng *g = &rng;
  if (__builtin_expect(!g->seeded, 0))
    rng_seed(g);
  uint64_t span;
  do /* zero is "none" on the wire: never hand it out */
    span = rng_next(g);
  while (__builtin_expect(span == 0, 0));
  memcpy(out->span_id, &span, 8);
  if (parent && !h2t__zero_id(parent->trace_id, 16) &&
      !h2t__zero_id(parent->span_id, 8)) {
    memcpy(out->trace_id, parent->trace_id, 16);
    memcpy(out->parent_span_id, parent->span_id, 8);
    out->flags = parent->flags & H2T_TRACE_SAMPLED;
    return;
  }
  uint64_t hi, lo;
  do {
    hi = rng_next(g);
    lo = rng_next(g);
  } while (__builtin_expect((hi | lo) == 0, 0));
  memcpy(out->trace_id, &hi, 8);
  memcpy(out->trace_id + 8, &lo, 8);
  memset(out->parent_span_id, 0, 8);
  out->flags = H2T_TRACE_SAMPLED;
}

/* --- hex ------------------------------------------------------------------ */

#ifdef __SSE2__
/* 16 bytes (or the low 8) → 32 (16) hex digits: nibbles interleaved,
 * '0' added, and 'a'-'0'-10 more where a nibble is over 9. */
static inline void hex_vec(__m128i v, __m128i *lo_out, __m128i *hi_out) {
  const __m128i m = _mm_set1_epi8(0x0f);
  __m128i hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
  __m128i lo = _mm_and_si128(v, m);
  __m128i a = _mm_unpacklo_epi8(hi, lo), b = _mm_unpackhi_epi8(hi, lo);
  const __m128i nine = _mm_set1_epi8(9), zero = _mm_set1_epi8('0'),
                gap = _mm_set1_epi8('a' - '0' - 10);
  a = _mm_add_epi8(_mm_add_epi8(a, zero),
                   _mm_and_si128(_mm_cmpgt_epi8(a, nine), gap));
  b = _mm_add_epi8(_mm_add_epi8(b, zero),
                   _mm_and_si128(_mm_cmpgt_epi8(b, nine), gap));
  *lo_out = a;
  *hi_out = b;
}
#endif

void h2t__hex(const uint8_t *in, size_t n, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = digits[in[i] >> 4];
    out[2 * i + 1] = digits[in[i] & 15];
  }
}

void h2t__trace_ctx_write(const h2t_trace_context *ctx, char *o) {
  memcpy(o, "00-", 3);
#ifdef __SSE2__
  __m128i a, b;
  hex_vec(_mm_loadu_si128((const __m128i *)(const void *)ctx->trace_id), &a,
          &b);
  _mm_storeu_si128((__m128i *)(void *)(o + 3), a);
  _mm_storeu_si128((__m128i *)(void *)(o + 19), b);
  hex_vec(_mm_loadl_epi64((const __m128i *)(const void *)ctx->span_id), &a,
          &b);
  o[35] = '-';
  _mm_storeu_si128((__m128i *)(void *)(o + 36), a);
#else
  h2t__hex(ctx->trace_id, 16, o + 3);
  o[35] = '-';
  h2t__hex(ctx->span_id, 8, o + 36);
#endif
  memcpy(o + 52, (ctx->flags & H2T_TRACE_SAMPLED) ? "-01" : "-00", 3);
}

/* --- public --------------------------------------------------------------- */

int h2t_trace_context_format(const h2t_trace_context *ctx, char *buf,
                             size_t len) {
  if (!ctx || !buf || len < H2T_TRACEPARENT_LEN + 1 ||
      h2t__zero_id(ctx->trace_id, 16) || h2t__zero_id(ctx->span_id, 8))
    return H2T_ERR_INVALID_ARG;
  h2t__trace_ctx_write(ctx, buf);
  buf[H2T_TRACEPARENT_LEN] = '\0';
  return H2T_TRACEPARENT_LEN;
}

static int hexval(char c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  return -1; /* upper case too: the spec's HEXDIGLC */
}

/* n bytes from 2n lowercase hex digits; 0 or -1. */
static int unhex(const char *s, uint8_t *out, size_t n) {
  for (size_t i = 0; i < n; i++) {
    int h = hexval(s[2 * i]), l = hexval(s[2 * i + 1]);
    if (h < 0 || l < 0)
      return -1;
    out[i] = (uint8_t)(h << 4 | l);
  }
  return 0;
}

int h2t_trace_context_parse(const char *value, h2t_trace_context *out) {
  if (!out)
    return H2T_ERR_INVALID_ARG;
  memset(out, 0, sizeof *out);
  if (!value)
    return H2T_ERR_INVALID_ARG;
  while (*value == ' ' || *value == '\t')
    value++;
  size_t len = strlen(value);
  while (len && (value[len - 1] == ' ' || value[len - 1] == '\t'))
    len--;
  uint8_t ver, flags;
  h2t_trace_context c;
  memset(&c, 0, sizeof c);
  if (len < H2T_TRACEPARENT_LEN || unhex(value, &ver, 1) || ver == 0xff ||
      (ver == 0 && len != H2T_TRACEPARENT_LEN) ||
      (len > H2T_TRACEPARENT_LEN && value[H2T_TRACEPARENT_LEN] != '-') ||
      value[2] != '-' || value[35] != '-' || value[52] != '-' ||
      unhex(value + 3, c.trace_id, 16) || unhex(value + 36, c.span_id, 8) ||
      unhex(value + 53, &flags, 1) || h2t__zero_id(c.trace_id, 16) ||
      h2t__zero_id(c.span_id, 8))
    return H2T_ERR_INVALID_ARG;
  c.flags = flags & H2T_TRACE_SAMPLED;
  *out = c;
  return 0;
}
