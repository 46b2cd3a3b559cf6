/*
 * Posting work to a loop from any thread: the in-flight table's cancel (the
 * diagnostics endpoint's thread) and a server's shutdown_async.  One queue
 * of request ids and a word of flags behind a mutex, drained on the loop by
 * an ev_async.  Used by the client and the server alike.
 */
#ifndef H2T_POST_H
#define H2T_POST_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <ev.h>
#include <h2trace/common.h>

/* On the loop: once per posted id, in posting order; then once with the
 * flags posted since the last drain, if any. */
typedef void (*h2t__post_id_cb)(void *arg, uint64_t id);
typedef void (*h2t__post_flags_cb)(void *arg, unsigned flags);

typedef struct h2t__postq {
  struct ev_loop *loop;
  const h2t_mem *mem;
  ev_async w;
  pthread_mutex_t mu;
  uint64_t *ids;
  size_t n, cap;
  unsigned flags;
  h2t__post_id_cb on_id;
  h2t__post_flags_cb on_flags;
  void *arg;
} h2t__postq;

/* Start the watcher on loop; it does not keep the loop running. */
void h2t__postq_init(h2t__postq *q, struct ev_loop *loop, const h2t_mem *mem,
                     h2t__post_id_cb on_id, h2t__post_flags_cb on_flags,
                     void *arg);
/* On the loop's thread: stop the watcher and drop what was not drained. */
void h2t__postq_fini(h2t__postq *q);
/* Any thread.  0, or H2T_ERR_NOMEM (nothing was posted). */
int h2t__postq_id(h2t__postq *q, uint64_t id);
/* Any thread: OR flags into the next drain. */
void h2t__postq_flags(h2t__postq *q, unsigned flags);

#endif
