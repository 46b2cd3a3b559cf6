/* The server loop's block cache (h2/common/slab.c): what it hands out is
 * usable memory of the size asked for, realloc keeps the contents across
 * size classes, calloc zeroes a reused block, and every byte goes back to
 * the backing allocator when the slab is deleted. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "h2/common/slab.h"

static long live; /* blocks the backing allocator has out */
static long fail_at = -1;

static void *b_malloc(size_t n, void *u) {
  (void)u;
  if (fail_at == 0)
    return NULL;
  if (fail_at > 0)
    fail_at--;
  void *p = malloc(n);
  if (p)
    live++;
  return p;
}
static void b_free(void *p, void *u) {
  (void)u;
  if (p)
    live--;
  free(p);
}
static void *b_calloc(size_t a, size_t b, void *u) {
  void *p = b_malloc(a * b, u);
  if (p)
    memset(p, 0, a * b);
  return p;
}
static void *b_realloc(void *p, size_t n, void *u) {
  (void)u;
  if (fail_at == 0)
    return NULL;
  if (fail_at > 0)
    fail_at--;
  void *q = realloc(p, n);
  if (q && !p)
    live++;
  return q;
}
static const h2t_mem backing = {NULL, b_malloc, b_free, b_calloc, b_realloc};

static void fill(uint8_t *p, size_t n, uint8_t seed) {
  for (size_t i = 0; i < n; i++)
    p[i] = (uint8_t)(seed + i);
}
static int same(const uint8_t *p, size_t n, uint8_t seed) {
  for (size_t i = 0; i < n; i++)
    if (p[i] != (uint8_t)(seed + i))
      return 0;
  return 1;
}

static void test_sizes_and_alignment(void **state) {
  (void)state;
  h2t__slab *s = h2t__slab_new(&backing);
  assert_non_null(s);
  static const size_t sizes[] = {0, 1, 63, 64, 65, 200, 1000, 4096, 4097,
                                 100000};
  void *p[sizeof sizes / sizeof sizes[0]];
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    p[i] = h2t__slab_malloc(sizes[i], s);
    assert_non_null(p[i]);
    assert_int_equal((uintptr_t)p[i] % _Alignof(max_align_t), 0);
    fill(p[i], sizes[i], (uint8_t)i);
  }
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
    assert_true(same(p[i], sizes[i], (uint8_t)i)); /* no overlap */
    h2t__slab_free(p[i], s);
  }
  h2t__slab_free(NULL, s);
  h2t__slab_del(s);
  assert_int_equal(live, 0);
}

static void test_reuse_and_calloc(void **state) {
  (void)state;
  h2t__slab *s = h2t__slab_new(&backing);
  uint8_t *a = h2t__slab_malloc(300, s);
  memset(a, 0xab, 300);
  long before = live;
  h2t__slab_free(a, s);
  uint8_t *b = h2t__slab_calloc(30, 10, s); /* same class: reused */
  assert_int_equal(live, before);
  for (int i = 0; i < 300; i++)
    assert_int_equal(b[i], 0);
  h2t__slab_free(b, s);
  assert_null(h2t__slab_calloc(SIZE_MAX / 2, 4, s)); /* overflow */
  h2t__slab_del(s);
  assert_int_equal(live, 0);
}

static void test_realloc_keeps_contents(void **state) {
  (void)state;
  h2t__slab *s = h2t__slab_new(&backing);
  uint8_t *p = h2t__slab_realloc(NULL, 10, s);
  fill(p, 10, 7);
  p = h2t__slab_realloc(p, 60, s); /* same class */
  assert_true(same(p, 10, 7));
  fill(p, 60, 7);
  p = h2t__slab_realloc(p, 3000, s); /* a bigger class */
  assert_true(same(p, 60, 7));
  fill(p, 3000, 7);
  p = h2t__slab_realloc(p, 50000, s); /* to the backing allocator */
  assert_true(same(p, 3000, 7));
  fill(p, 50000, 7);
  p = h2t__slab_realloc(p, 90000, s); /* big to big */
  assert_true(same(p, 50000, 7));
  p = h2t__slab_realloc(p, 100, s); /* back into a class */
  assert_true(same(p, 100, 7));
  h2t__slab_free(p, s);
  h2t__slab_del(s);
  assert_int_equal(live, 0);
}

static void test_cache_is_bounded(void **state) {
  (void)state;
  h2t__slab *s = h2t__slab_new(&backing);
  enum { N = 5000 };
  void **p = calloc(N, sizeof *p);
  for (int i = 0; i < N; i++)
    p[i] = h2t__slab_malloc(1024, s);
  for (int i = 0; i < N; i++)
    h2t__slab_free(p[i], s);
  /* 5000 KiB freed; the slab keeps at most its cap (256 KiB) of it */
  assert_true(live <= 256 + 1);
  h2t__slab_del(s);
  assert_int_equal(live, 0);
  free(p);
}

static void test_out_of_memory(void **state) {
  (void)state;
  h2t__slab *s = h2t__slab_new(&backing);
  fail_at = 0;
  assert_null(h2t__slab_malloc(100, s));
  assert_null(h2t__slab_realloc(NULL, 100000, s));
  fail_at = -1;
  void *p = h2t__slab_malloc(100, s);
  fill(p, 100, 1);
  fail_at = 0;
  assert_null(h2t__slab_realloc(p, 2000, s)); /* p is still good */
  fail_at = -1;
  assert_true(same(p, 100, 1));
  h2t__slab_free(p, s);
  h2t__slab_del(s);
  assert_int_equal(live, 0);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_sizes_and_alignment),
      cmocka_unit_test(test_reuse_and_calloc),
      cmocka_unit_test(test_realloc_keeps_contents),
      cmocka_unit_test(test_cache_is_bounded),
      cmocka_unit_test(test_out_of_memory),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
