/*
 * A loop's cache of small blocks: freed blocks of a size class are kept on
 * a list and handed out again, so the allocations every request makes and
 * frees (nghttp2's stream, its outbound items and header copies; the
 * server's request) do not go through malloc each time.  One slab per
 * loop, used from that loop's thread only.  Larger blocks, and every block
 * under AddressSanitizer (so it still sees use after free), go straight to
 * the backing allocator (H2T__ASAN below).
 */
#ifndef H2T_SLAB_H
#define H2T_SLAB_H

#include <stddef.h>

#include <h2trace/common.h>

/* Under AddressSanitizer nothing is recycled (slab blocks, the client's
 * requests), so that a use after free is still caught. */
#if defined(__SANITIZE_ADDRESS__)
#define H2T__ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define H2T__ASAN 1
#endif
#endif
#ifndef H2T__ASAN
#define H2T__ASAN 0
#endif

typedef struct h2t__slab h2t__slab;

/* NULL when out of memory.  backing may be NULL (malloc). */
h2t__slab *h2t__slab_new(const h2t_mem *backing);
/* Frees the cached blocks; every block must have been given back. */
void h2t__slab_del(h2t__slab *s);

/* The h2t_mem/nghttp2_mem shape: the slab is the user pointer. */
void *h2t__slab_malloc(size_t n, void *slab);
void *h2t__slab_calloc(size_t nmemb, size_t n, void *slab);
void *h2t__slab_realloc(void *p, size_t n, void *slab);
void h2t__slab_free(void *p, void *slab);

#endif
