/* Posting ids and flags to a loop from any thread (see post.h). */
#include <string.h>

#include "h2/common/post.h"
#include "trace/trace_int.h"

static void drain_cb(struct ev_loop *loop, ev_async *w, int revents) {
  h2t__postq *q = w->data;
  uint64_t ids[64];
  for (;;) {
    pthread_mutex_lock(&q->mu);
    size_t n = q->n < 64 ? q->n : 64;
    if (n) { /* q->ids is NULL until the first id: a flag alone is legal */
      memcpy(ids, q->ids, n * sizeof *ids); /* oldest first */
      memmove(q->ids, q->ids + n, (q->n - n) * sizeof *ids);
      q->n -= n;
    }
    unsigned flags = n < 64 ? q->flags : 0;
    if (n < 64)
      q->flags = 0;
    pthread_mutex_unlock(&q->mu);
    for (size_t i = 0; i < n; i++)
      q->on_id(q->arg, ids[i]);
    if (flags && q->on_flags)
      q->on_flags(q->arg, flags);
    if (n < 64)
      break;
  }
}

void h2t__postq_init(h2t__postq *q, struct ev_loop *loop, const h2t_mem *mem,
                     h2t__post_id_cb on_id, h2t__post_flags_cb on_flags,
                     void *arg) {
  memset(q, 0, sizeof *q);
  q->loop = loop;
  q->mem = mem;
  q->on_id = on_id;
  q->on_flags = on_flags;
  q->arg = arg;
  pthread_mutex_init(&q->mu, NULL);
  ev_async_init(&q->w, drain_cb);
  q->w.data = q;
  ev_async_start(loop, &q->w);
  ev_unref(loop); /* posting must not keep the loop up on its own */
}

void h2t__postq_fini(h2t__postq *q) {
  if (!q->loop)
    return;
  ev_ref(q->loop);
  ev_async_stop(q->loop, &q->w);
  pthread_mutex_destroy(&q->mu);
  h2t_xfree(q->mem, q->ids);
  q->ids = NULL;
  q->n = q->cap = 0;
  q->loop = NULL;
}

int h2t__postq_id(h2t__postq *q, uint64_t id) {
  pthread_mutex_lock(&q->mu);
  if (q->n == q->cap) {
    size_t cap = q->cap ? q->cap * 2 : 16;
    uint64_t *a = h2t_xrealloc(q->mem, q->ids, cap * sizeof *a);
    if (!a) {
      pthread_mutex_unlock(&q->mu);
      return H2T_ERR_NOMEM;
    }
    q->ids = a;
    q->cap = cap;
  }
  q->ids[q->n++] = id;
  pthread_mutex_unlock(&q->mu);
  ev_async_send(q->loop, &q->w);
  return 0;
}

void h2t__postq_flags(h2t__postq *q, unsigned flags) {
  pthread_mutex_lock(&q->mu);
  q->flags |= flags;
  pthread_mutex_unlock(&q->mu);
  ev_async_send(q->loop, &q->w);
}
