/*
 * Size classes of 64 bytes to 4 KiB (powers of two), each a free list
 * capped at SLAB_KEEP_BYTES, so a burst does not pin its peak forever.
 * Every block starts with a 16-byte header naming its class (BIG: from
 * the backing allocator and back to it).
 */
#include "h2/common/slab.h"

#include <stdint.h>
#include <string.h>

#include "trace/trace_int.h"

#define SLAB_MIN_SHIFT 6 /* 64 bytes */
#define SLAB_CLASSES 7   /* to 4 KiB */
#define SLAB_KEEP_BYTES (256 * 1024)
#define SLAB_BIG 0xffu

typedef union slab_hdr {
  struct {
    union slab_hdr *next; /* on a free list */
    unsigned cls;
  } h;
  max_align_t align;
} slab_hdr;

struct h2t__slab {
  const h2t_mem *mem;
  slab_hdr *free[SLAB_CLASSES];
  unsigned nfree[SLAB_CLASSES];
};

static size_t class_size(unsigned c) {
  return (size_t)1 << (c + SLAB_MIN_SHIFT);
}

static unsigned class_of(size_t n) {
  if (H2T__ASAN || n > class_size(SLAB_CLASSES - 1))
    return SLAB_BIG;
  if (n <= class_size(0))
    return 0;
  /* the smallest c with 2^(c + SLAB_MIN_SHIFT) >= n */
  return (unsigned)(64 - __builtin_clzll((unsigned long long)n - 1)) -
         SLAB_MIN_SHIFT;
}

static unsigned keep_max(unsigned c) {
  return (unsigned)(SLAB_KEEP_BYTES >> (c + SLAB_MIN_SHIFT));
}

h2t__slab *h2t__slab_new(const h2t_mem *backing) {
  h2t__slab *s = h2t_xcalloc(backing, 1, sizeof *s);
  if (s)
    s->mem = backing;
  return s;
}

void h2t__slab_del(h2t__slab *s) {
  if (!s)
    return;
  for (unsigned c = 0; c < SLAB_CLASSES; c++)
    while (s->free[c]) {
      slab_hdr *h = s->free[c];
      s->free[c] = h->h.next;
      h2t_xfree(s->mem, h);
    }
  h2t_xfree(s->mem, s);
}

void *h2t__slab_malloc(size_t n, void *slab) {
  h2t__slab *s = slab;
  unsigned c = class_of(n);
  slab_hdr *h;
  if (c != SLAB_BIG && s->free[c]) {
    h = s->free[c];
    s->free[c] = h->h.next;
    s->nfree[c]--;
  } else {
    if (n > SIZE_MAX - sizeof *h)
      return NULL;
    h = h2t_xmalloc(s->mem, sizeof *h + (c == SLAB_BIG ? n : class_size(c)));
    if (!h)
      return NULL;
    h->h.cls = c;
  }
  return h + 1;
}

void h2t__slab_free(void *p, void *slab) {
  if (!p)
    return;
  h2t__slab *s = slab;
  slab_hdr *h = (slab_hdr *)p - 1;
  unsigned c = h->h.cls;
  if (c == SLAB_BIG || s->nfree[c] >= keep_max(c)) {
    h2t_xfree(s->mem, h);
    return;
  }
  h->h.next = s->free[c];
  s->free[c] = h;
  s->nfree[c]++;
}

void *h2t__slab_calloc(size_t nmemb, size_t n, void *slab) {
  if (n && nmemb > SIZE_MAX / n)
    return NULL;
  void *p = h2t__slab_malloc(nmemb * n, slab);
  if (p)
    memset(p, 0, nmemb * n);
  return p;
}

void *h2t__slab_realloc(void *p, size_t n, void *slab) {
  if (!p)
    return h2t__slab_malloc(n, slab);
  h2t__slab *s = slab;
  slab_hdr *h = (slab_hdr *)p - 1;
  unsigned c = h->h.cls;
  if (c == SLAB_BIG && class_of(n) == SLAB_BIG) {
    if (n > SIZE_MAX - sizeof *h)
      return NULL;
    slab_hdr *nh = h2t_xrealloc(s->mem, h, sizeof *h + n);
    return nh ? nh + 1 : NULL;
  }
  if (c != SLAB_BIG && n <= class_size(c))
    return p;
  void *q = h2t__slab_malloc(n, slab);
  if (!q)
    return NULL;
  /* a BIG block shrinking into a class: its old size is at least n */
  memcpy(q, p, c == SLAB_BIG ? n : class_size(c));
  h2t__slab_free(p, slab);
  return q;
}
