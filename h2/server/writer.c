/*
 * The frame writer: where a connection's output bytes (plaintext for h2c,
 * ciphertext for TLS — the loop did all SSL work) meet the socket.
 *
 * REUSED: one thread for the server's lifetime, fed by a queue.  The loop
 * pushes one item per connection flush and wakes the thread through an
 * eventfd only when it sleeps.  The thread keeps a per-connection list,
 * writes with sendmsg (many items per call), polls for POLLOUT on EAGAIN
 * without holding up other connections, and tells the loop (ev_async) when
 * a connection drained below the level it waits for or failed.
 * SPAWN: per connection, one thread per item, created, run, joined, then
 * the next (Go's writeFrameAsync).  For comparison only.
 * INLINE: send on the loop thread, ev_io for the rest.  For comparison.
 */
#include <errno.h>
#include <sched.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/sendfile.h>
#include <sys/syscall.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include "h2/server/server_int.h"

#define WRITER_IOV 64
/* SPAWN: one thread writes at most one frame's worth, like Go's
 * writeFrameAsync (one goroutine per frame that does not fit the buffer). */
#define SPAWN_WRITE (16384 + 9)
#define SLEEP_FUTEX 1 /* w->sleeping: in futex_wait on it */
#define SLEEP_POLL 2  /* in poll() on the eventfd and blocked sockets */
/* Bound on a closing connection's drain, and on a SPAWN thread's wait for
 * a socket that takes nothing: h2t__writer_new's drain_us (the server's
 * stream_idle_timeout_ms), so a peer that pauses reading is never dropped
 * sooner by the writer than by the timeouts the application set. */

/* A queue item and its bytes in one allocation.  Items are recycled: the
 * writer thread hands spent ones back to the loop through a lock-free stack
 * (freeing them there would make the two threads fight over malloc's arena
 * lock at every flush). */
typedef struct witem {
  struct witem *next;
  wconn *wc;
  size_t len, off, cap;
  int close; /* 1: close marker, 2: abort marker */
  int fd;    /* a spent close marker from the writer thread: the socket the
                loop must close (-1: none) */
  /* The item's bytes are buf[0..hlen) (frame headers and the rest of a
   * flush), then len - hlen bytes by reference: from ref, or from the file
   * src_fd at src_off (sendfile).  The reference is given back with
   * rel(rel_arg) on the loop once written or dropped. */
  size_t hlen;
  const uint8_t *ref;
  int src_fd;
  off_t src_off;
  writer_release_fn rel;
  void *rel_arg;
  uint8_t buf[];
} witem;

#define ITEM_MIN 16384
#define POOL_MAX 64
#define POOL_ITEM_MAX (1u << 20)

struct wconn {
  srv_writer *w;
  int fd;
  writer_notify_fn fn;
  void *arg;
  atomic_int refs;
  atomic_size_t queued;
  atomic_size_t notify_low; /* SIZE_MAX: nobody waits */
  atomic_int failed;
  int loop_gone; /* loop side only */

  /* owned by whoever writes: the writer thread (REUSED) or the loop */
  witem *head, *tail;
  int closing;
  uint64_t close_deadline;
  int want_pollout;
  int in_active;
  wconn *next_ready; /* guarded by w->mu */
  int in_ready;

  /* INLINE */
  ev_io wio;
  ev_timer drain_timer;
  /* SPAWN */
  pthread_t th;
  int th_active;
  size_t spawn_base; /* head->off when the thread started */
};

struct srv_writer {
  h2t_writer_mode mode;
  uint64_t drain_us; /* UINT64_MAX: no bound */
  uint32_t spin_us;  /* REUSED: awake this long after the last write */
  struct ev_loop *loop;
  const h2t_mem *mem;
  pthread_mutex_t mu;
  _Atomic(witem *) in; /* REUSED: pushed by the loop, newest first */
  int efd;
  atomic_int sleeping, stop;
  pthread_t th;
  int th_started;
  ev_async async;
  wconn *ready; /* to notify on the loop */
  atomic_uint depth, depth_max;
  atomic_int spawned; /* SPAWN: threads created and not yet joined */
  _Atomic(witem *) recycled; /* spent items from the writer thread */
  _Atomic(witem *) released; /* spent items whose reference goes back */
  witem *pool;               /* loop thread: items ready for reuse */
  unsigned npool;
  /* REUSED thread: connections with queued items */
  wconn **active;
  size_t nactive, cap_active;
};

static void wconn_unref(wconn *wc) {
  if (atomic_fetch_sub(&wc->refs, 1) == 1)
    h2t_xfree(wc->w->mem, wc);
}

static witem *item_of(uint8_t *data) {
  return (witem *)(data - offsetof(witem, buf));
}

/* Loop thread: keep a spent item for reuse. */
static void pool_put(srv_writer *w, witem *it) {
  if (w->npool >= POOL_MAX || it->cap > POOL_ITEM_MAX) {
    h2t_xfree(w->mem, it);
    return;
  }
  it->next = w->pool;
  w->pool = it;
  w->npool++;
}

/* Loop thread: an item with room for at least min bytes. */
/* Loop thread: take back what the writer thread spent.  A socket is closed
 * here, never on the writer thread: libev applies its fd changes lazily on
 * the loop, and a close from another thread could let the fd number be
 * reused under them. */
static witem *pool_take(srv_writer *w, size_t min);

/* Loop thread: a spent item back to the pool, its socket closed if any. */
static void pool_return(srv_writer *w, witem *it) {
  if (it->fd >= 0) {
    close(it->fd);
    it->fd = -1;
  }
  pool_put(w, it);
}

static void reclaim(srv_writer *w) {
  witem *l = atomic_exchange(&w->recycled, NULL);
  while (l) {
    witem *next = l->next;
    pool_return(w, l);
    l = next;
  }
}

/* Any thread: it onto a lock-free stack (drained with atomic_exchange). */
static inline void stack_push(_Atomic(witem *) *top, witem *it) {
  witem *head = atomic_load(top);
  do
    it->next = head;
  while (!atomic_compare_exchange_weak(top, &head, it));
}

static witem *pool_get(srv_writer *w, size_t min) {
  witem *it = pool_take(w, min);
  if (it) {
    it->fd = -1;
    it->hlen = 0;
    it->ref = NULL;
    it->src_fd = -1;
    it->rel = NULL;
  }
  return it;
}

static witem *pool_take(srv_writer *w, size_t min) {
  if (!w->pool)
    reclaim(w);
  witem *it = w->pool;
  if (it) {
    w->pool = it->next;
    w->npool--;
    if (it->cap >= min)
      return it;
    witem *bigger = h2t_xrealloc(w->mem, it, sizeof *it + min);
    if (!bigger) {
      h2t_xfree(w->mem, it);
      return NULL;
    }
    bigger->cap = min;
    return bigger;
  }
  it = h2t_xmalloc(w->mem, sizeof *it + min);
  if (it)
    it->cap = min;
  return it;
}

/* A spent item, from whichever thread spends it: in REUSED mode that is
 * the writer thread, otherwise the loop. */
static void item_free(srv_writer *w, witem *it) {
  if (it->rel) {
    /* The owner hears of it from the loop's top (async_cb), never from
     * inside a push: its release may free what the pusher still uses. */
    stack_push(&w->released, it);
    ev_async_send(w->loop, &w->async);
    return;
  }
  if (w->mode == H2T_WRITER_REUSED) {
    stack_push(&w->recycled, it);
  } else {
    pool_put(w, it);
  }
}

/* Loop thread: give back the references of written or dropped items. */
static void release_refs(srv_writer *w) {
  witem *l = atomic_exchange(&w->released, NULL);
  while (l) {
    witem *next = l->next;
    writer_release_fn fn = l->rel;
    void *arg = l->rel_arg;
    l->rel = NULL;
    l->ref = NULL;
    l->src_fd = -1;
    pool_return(w, l);
    fn(arg);
    l = next;
  }
}

uint8_t *h2t__writer_buf_grow(srv_writer *w, uint8_t *data, size_t min,
                         size_t *cap) {
  if (!data) {
    witem *it = pool_get(w, min > ITEM_MIN ? min : ITEM_MIN);
    if (!it)
      return NULL;
    *cap = it->cap;
    return it->buf;
  }
  witem *it = item_of(data);
  if (it->cap >= min) {
    *cap = it->cap;
    return data;
  }
  size_t ncap = it->cap * 2 > min ? it->cap * 2 : min;
  witem *bigger = h2t_xrealloc(w->mem, it, sizeof *it + ncap);
  if (!bigger)
    return NULL;
  bigger->cap = ncap;
  *cap = ncap;
  return bigger->buf;
}

void h2t__writer_buf_put(srv_writer *w, uint8_t *data) {
  if (data)
    pool_put(w, item_of(data));
}

static void depth_sub(srv_writer *w, unsigned n) {
  if (n)
    atomic_fetch_sub(&w->depth, n);
}

/* Hand wc to the loop for a notify (any thread). */
static void post_ready(wconn *wc) {
  srv_writer *w = wc->w;
  pthread_mutex_lock(&w->mu);
  if (!wc->in_ready) {
    wc->in_ready = 1;
    atomic_fetch_add(&wc->refs, 1);
    wc->next_ready = w->ready;
    w->ready = wc;
  }
  pthread_mutex_unlock(&w->mu);
  ev_async_send(w->loop, &w->async);
}

static void maybe_notify(wconn *wc) {
  size_t low = atomic_load(&wc->notify_low);
  if (low != SIZE_MAX && atomic_load(&wc->queued) <= low &&
      atomic_compare_exchange_strong(&wc->notify_low, &low, SIZE_MAX))
    post_ready(wc);
}

/* Drop every queued item (after an error or an abort). */
static void drop_items(wconn *wc) {
  unsigned n = 0;
  size_t bytes = 0;
  while (wc->head && !wc->head->close) {
    witem *it = wc->head;
    wc->head = it->next;
    bytes += it->len - it->off;
    item_free(wc->w, it);
    n++;
  }
  if (!wc->head)
    wc->tail = NULL;
  atomic_fetch_sub(&wc->queued, bytes);
  depth_sub(wc->w, n);
}

static void set_failed(wconn *wc) {
  if (!atomic_exchange(&wc->failed, 1)) {
    drop_items(wc);
    post_ready(wc);
  } else {
    drop_items(wc);
  }
}

/* sendfile has no MSG_NOSIGNAL: a peer gone away must not kill the
 * process with SIGPIPE, so it is blocked around the call and a pending one
 * taken back. */
static ssize_t sendfile_nosig(int sock, int fd, off_t off, size_t len) {
  sigset_t pipe, old;
  sigemptyset(&pipe);
  sigaddset(&pipe, SIGPIPE);
  pthread_sigmask(SIG_BLOCK, &pipe, &old);
  ssize_t r = sendfile(sock, fd, &off, len);
  int e = errno;
  if (r < 0 && e == EPIPE) {
    struct timespec zero = {0, 0};
    while (sigtimedwait(&pipe, NULL, &zero) < 0 && errno == EINTR)
      ;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  errno = e;
  if (r == 0 && len) { /* the file is shorter than promised */
    errno = EIO;
    return -1;
  }
  return r;
}

/* Fill iov from the items from it on; *more: the batch stops before a
 * file range.  Returns the number of entries. */
static int gather(witem *it, struct iovec *iov, int *more) {
  int n = 0;
  *more = 0;
  for (; it && !it->close && n < WRITER_IOV - 1; it = it->next) {
    if (it->off < it->hlen)
      iov[n++] = (struct iovec){it->buf + it->off, it->hlen - it->off};
    if (it->src_fd >= 0) {
      *more = 1;
      break;
    }
    if (it->ref) {
      size_t o = it->off > it->hlen ? it->off - it->hlen : 0;
      iov[n++] = (struct iovec){(void *)(it->ref + o), it->len - it->hlen - o};
    }
  }
  return n;
}

/* One write from the head item on: a file range with sendfile, else a
 * batch of memory with sendmsg. */
static ssize_t send_head(wconn *wc) {
  witem *it = wc->head;
  if (it->src_fd >= 0 && it->off >= it->hlen)
    return sendfile_nosig(wc->fd, it->src_fd,
                          it->src_off + (off_t)(it->off - it->hlen),
                          it->len - it->off);
  struct iovec iov[WRITER_IOV];
  int more;
  int n = gather(it, iov, &more);
  struct msghdr mh = {.msg_iov = iov, .msg_iovlen = (size_t)n};
  return sendmsg(wc->fd, &mh, MSG_NOSIGNAL | (more ? MSG_MORE : 0));
}

/* Write as much of wc's list as the socket takes.  Returns 1 if the list
 * head is now a close marker or the list is empty, 0 on EAGAIN. */
static int write_some(wconn *wc) {
  srv_writer *w = wc->w;
  for (;;) {
    if (!wc->head || wc->head->close)
      return 1;
    ssize_t r = send_head(wc);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK)
        return 0;
      set_failed(wc);
      return 1;
    }
    size_t left = (size_t)r;
    unsigned done = 0;
    while (wc->head && !wc->head->close && left > 0) {
      witem *it = wc->head;
      size_t rest = it->len - it->off;
      if (left < rest) {
        it->off += left;
        left = 0;
        break;
      }
      left -= rest;
      wc->head = it->next;
      item_free(w, it);
      done++;
    }
    if (!wc->head)
      wc->tail = NULL;
    atomic_fetch_sub(&wc->queued, (size_t)r);
    depth_sub(w, done);
    maybe_notify(wc);
  }
}

static void close_fd(wconn *wc) {
  if (wc->fd >= 0) {
    shutdown(wc->fd, SHUT_WR);
    close(wc->fd);
    wc->fd = -1;
  }
}

/* ------------------------------------------------------------------------
 * REUSED: the writer thread
 */

static void append_item(wconn *wc, witem *it) {
  it->next = NULL;
  if (wc->tail)
    wc->tail->next = it;
  else
    wc->head = it;
  wc->tail = it;
}

static int active_add(srv_writer *w, wconn *wc) {
  if (wc->in_active)
    return 0;
  if (w->nactive == w->cap_active) {
    size_t cap = w->cap_active ? w->cap_active * 2 : 64;
    wconn **a = h2t_xrealloc(w->mem, w->active, cap * sizeof *a);
    if (!a)
      return -1;
    w->active = a;
    w->cap_active = cap;
  }
  w->active[w->nactive++] = wc;
  wc->in_active = 1;
  return 0;
}

/* Handle a connection whose head is a close marker (or abort). */
static void finish_close(srv_writer *w, wconn *wc) {
  witem *it = wc->head;
  wc->head = it->next;
  if (!wc->head)
    wc->tail = NULL;
  if (w->mode == H2T_WRITER_REUSED && wc->fd >= 0) {
    /* On the writer thread: send the FIN now, let the loop close the fd. */
    shutdown(wc->fd, SHUT_WR);
    it->fd = wc->fd;
    wc->fd = -1;
    item_free(w, it);
    ev_async_send(w->loop, &w->async);
  } else {
    item_free(w, it);
    close_fd(wc);
  }
  wconn_unref(wc); /* the writer's reference */
}

/* Wake the writer thread from whichever sleep it is in. */
/* Signal the eventfd; EAGAIN means it already is. */
static void efd_signal(int efd) {
  uint64_t one = 1;
  while (write(efd, &one, sizeof one) < 0 && errno == EINTR)
    ;
}

static void writer_wake(srv_writer *w) {
  int how = atomic_exchange(&w->sleeping, 0);
  if (how == SLEEP_FUTEX) {
    /* FUTEX_WAKE does not fail with EINTR */
    syscall(SYS_futex, &w->sleeping, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
  } else if (how == SLEEP_POLL) {
    efd_signal(w->efd);
  }
}

/* Everything pushed so far, oldest first. */
static witem *take_incoming(srv_writer *w) {
  witem *l = atomic_exchange(&w->in, NULL), *fifo = NULL;
  while (l) {
    witem *next = l->next;
    l->next = fifo;
    fifo = l;
    l = next;
  }
  return fifo;
}

/* writer_spin_us: before sleeping, stay runnable for a while, yielding
 * the CPU to whatever else wants it, and look for work between yields.
 * A thread asleep on a futex takes a wake-up (on a virtual machine, an
 * idle virtual CPU to wake) before its next write; at low concurrency
 * that is most of the hand-off's cost.  1: work came. */
static int stay_awake(srv_writer *w) {
  uint64_t until = h2t_now_us() + w->spin_us;
  do {
    if (atomic_load(&w->in) || atomic_load(&w->stop))
      return 1;
    sched_yield();
  } while (h2t_now_us() < until);
  return 0;
}

static void *writer_thread(void *arg) {
  srv_writer *w = arg;
  struct pollfd *pfd = NULL;
  size_t pfd_cap = 0;
  for (;;) {
    witem *in = take_incoming(w);
    int stop = atomic_load(&w->stop);

    for (witem *it = in, *next; it; it = next) {
      next = it->next;
      wconn *wc = it->wc;
      if (it->close == 2) { /* abort: drop everything, close now */
        drop_items(wc);
        append_item(wc, it);
        it->close = 1;
      } else {
        append_item(wc, it);
      }
      if (it->close)
        wc->close_deadline = w->drain_us == UINT64_MAX
                                 ? UINT64_MAX
                                 : h2t_now_us() + w->drain_us;
      if (active_add(w, wc) != 0)
        set_failed(wc); /* out of memory: nothing better to do */
    }

    /* One pass over every connection with data. */
    int any_writable = 0;
    uint64_t now = 0;
    for (size_t i = 0; i < w->nactive;) {
      wconn *wc = w->active[i];
      int done = 1;
      if (!wc->want_pollout) {
        done = write_some(wc);
        wc->want_pollout = !done;
      } else {
        done = 0;
      }
      if (!done && wc->head && wc->head->close == 0) {
        /* still writing; a closing conn that does not read gets dropped */
        witem *t = wc->tail;
        if (t && t->close) {
          if (!now)
            now = h2t_now_us();
          if (now > wc->close_deadline) {
            drop_items(wc);
            done = 1;
          }
        }
      }
      if (done && wc->head && wc->head->close) {
        wc->in_active = 0;
        w->active[i] = w->active[--w->nactive];
        finish_close(w, wc);
        continue;
      }
      if (done && !wc->head) {
        wc->in_active = 0;
        wc->want_pollout = 0;
        w->active[i] = w->active[--w->nactive];
        continue;
      }
      if (!wc->want_pollout)
        any_writable = 1;
      i++;
    }
    if (any_writable)
      continue;

    if (stop && w->nactive == 0 && !atomic_load(&w->in))
      break;
    /* Sleep until pushed to, or a blocked socket becomes writable.  The
     * pusher checks `sleeping` after pushing; we check `in` after setting
     * it: one of us sees the other (seq_cst). */
    if (!w->nactive && !stop && w->spin_us && stay_awake(w))
      continue;
    if (!w->nactive && !stop) {
      /* Nothing blocked on a socket: a futex is the cheapest sleep. */
      atomic_store(&w->sleeping, SLEEP_FUTEX);
      if (atomic_load(&w->in) || atomic_load(&w->stop)) {
        atomic_store(&w->sleeping, 0);
        continue;
      }
      /* EINTR (a signal, e.g. /debug/threads) or EAGAIN: both only
       * mean "look again", which the loop does */
      syscall(SYS_futex, &w->sleeping, FUTEX_WAIT_PRIVATE, SLEEP_FUTEX, NULL,
              NULL, 0);
      atomic_store(&w->sleeping, 0);
      continue;
    }
    atomic_store(&w->sleeping, SLEEP_POLL);
    if (atomic_load(&w->in)) {
      atomic_store(&w->sleeping, 0);
      continue;
    }

    if (pfd_cap < w->nactive + 1) {
      size_t cap = (w->nactive + 1) * 2;
      struct pollfd *p = h2t_xrealloc(w->mem, pfd, cap * sizeof *p);
      if (p) {
        pfd = p;
        pfd_cap = cap;
      }
    }
    size_t np = 0;
    if (pfd) {
      pfd[np++] = (struct pollfd){.fd = w->efd, .events = POLLIN};
      for (size_t i = 0; i < w->nactive && np < pfd_cap; i++)
        pfd[np++] = (struct pollfd){.fd = w->active[i]->fd, .events = POLLOUT};
    }
    int timeout = w->nactive ? 1000 : -1;
    int r = pfd ? poll(pfd, (nfds_t)np, timeout) : (usleep(1000), 0);
    atomic_store(&w->sleeping, 0);
    /* r < 0 (EINTR): nothing is lost, the next pass writes and polls again */
    if (r > 0 && pfd) {
      if (pfd[0].revents) {
        uint64_t v;
        while (read(w->efd, &v, sizeof v) < 0 && errno == EINTR)
          ; /* EAGAIN: someone else read it; it is only a wakeup */
      }
      for (size_t i = 1; i < np; i++)
        if (pfd[i].revents && i - 1 < w->nactive)
          w->active[i - 1]->want_pollout = 0;
    } else if (r == 0) {
      /* timeout: retry everything, which also checks close deadlines */
      for (size_t i = 0; i < w->nactive; i++)
        w->active[i]->want_pollout = 0;
    }
  }
  h2t_xfree(w->mem, pfd);
  return NULL;
}

/* ------------------------------------------------------------------------
 * SPAWN: one thread per item, one at a time per connection
 */

/* Wait until fd takes bytes.  A peer that stopped reading is waited for
 * as long as drain_us without progress (the server's timeouts decide
 * sooner, and an abort shuts the socket down, which wakes poll); a signal
 * is no reason to give up.  0, or -1 to fail the connection. */
static int spawn_wait_writable(wconn *wc) {
  uint64_t drain = wc->w->drain_us;
  uint64_t give_up = drain == UINT64_MAX ? UINT64_MAX : h2t_now_us() + drain;
  for (;;) {
    if (atomic_load(&wc->failed))
      return -1;
    struct pollfd p = {.fd = wc->fd, .events = POLLOUT};
    int r = poll(&p, 1, 1000);
    if (r > 0)
      return (p.revents & (POLLERR | POLLNVAL)) ? -1 : 0;
    if (r < 0 && errno != EINTR)
      return -1;
    if (h2t_now_us() >= give_up)
      return -1;
  }
}

/* SPAWN: one contiguous piece of the head item, at most max bytes. */
static ssize_t spawn_send(wconn *wc, witem *it, size_t max) {
  if (it->off < it->hlen) {
    size_t k = it->hlen - it->off < max ? it->hlen - it->off : max;
    return send(wc->fd, it->buf + it->off, k, MSG_NOSIGNAL);
  }
  size_t o = it->off - it->hlen;
  if (it->src_fd >= 0)
    return sendfile_nosig(wc->fd, it->src_fd, it->src_off + (off_t)o, max);
  return send(wc->fd, it->ref + o, max, MSG_NOSIGNAL);
}

static void *spawn_thread(void *arg) {
  wconn *wc = arg;
  witem *it = wc->head;
  size_t end = it->len - it->off > SPAWN_WRITE ? it->off + SPAWN_WRITE : it->len;
  while (it->off < end) {
    ssize_t r = spawn_send(wc, it, end - it->off);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      if ((errno == EAGAIN || errno == EWOULDBLOCK) &&
          spawn_wait_writable(wc) == 0)
        continue;
      atomic_store(&wc->failed, 1);
      break;
    }
    it->off += (size_t)r;
  }
  post_ready(wc);
  return NULL;
}

static void spawn_next(wconn *wc) {
  srv_writer *w = wc->w;
  while (wc->head && !wc->th_active) {
    if (wc->head->close || atomic_load(&wc->failed)) {
      if (atomic_load(&wc->failed))
        drop_items(wc);
      if (wc->head && wc->head->close) {
        finish_close(w, wc);
        return;
      }
      continue;
    }
    wc->th_active = 1;
    wc->spawn_base = wc->head->off;
    atomic_fetch_add(&wc->refs, 1);
    atomic_fetch_add(&w->spawned, 1);
    if (pthread_create(&wc->th, NULL, spawn_thread, wc) != 0) {
      wc->th_active = 0;
      atomic_fetch_sub(&w->spawned, 1);
      wconn_unref(wc);
      atomic_store(&wc->failed, 1);
      drop_items(wc);
      post_ready(wc);
    }
  }
}

/* The spawned thread finished its write (on the loop). */
static void spawn_done(wconn *wc) {
  if (!wc->th_active)
    return;
  pthread_join(wc->th, NULL);
  wc->th_active = 0;
  atomic_fetch_sub(&wc->w->spawned, 1);
  witem *it = wc->head;
  atomic_fetch_sub(&wc->queued, it->off - wc->spawn_base);
  if (it->off == it->len) {
    wc->head = it->next;
    if (!wc->head)
      wc->tail = NULL;
    depth_sub(wc->w, 1);
    item_free(wc->w, it);
  }
  wconn_unref(wc); /* the thread's reference */
  if (atomic_load(&wc->failed))
    drop_items(wc);
  spawn_next(wc);
}

/* ------------------------------------------------------------------------
 * INLINE: on the loop
 */

static void inline_finish(wconn *wc) {
  ev_io_stop(wc->w->loop, &wc->wio);
  ev_timer_stop(wc->w->loop, &wc->drain_timer);
  finish_close(wc->w, wc);
}

static void inline_write(wconn *wc) {
  int done = write_some(wc);
  if (wc->head && wc->head->close && (done || atomic_load(&wc->failed))) {
    inline_finish(wc);
    return;
  }
  if (!done && !ev_is_active(&wc->wio))
    ev_io_start(wc->w->loop, &wc->wio);
  else if (done && ev_is_active(&wc->wio))
    ev_io_stop(wc->w->loop, &wc->wio);
}

static void inline_io_cb(struct ev_loop *loop, ev_io *io, int revents) {
  inline_write(io->data);
}

static void inline_drain_timeout(struct ev_loop *loop, ev_timer *t,
                                 int revents) {
  wconn *wc = t->data;
  drop_items(wc);
  inline_finish(wc);
}

/* ------------------------------------------------------------------------
 * Loop side
 */

static void async_cb(struct ev_loop *loop, ev_async *a, int revents) {
  srv_writer *w = a->data;
  reclaim(w);
  release_refs(w);
  pthread_mutex_lock(&w->mu);
  wconn *list = w->ready;
  w->ready = NULL;
  for (wconn *wc = list; wc; wc = wc->next_ready)
    wc->in_ready = 0;
  pthread_mutex_unlock(&w->mu);
  while (list) {
    wconn *wc = list;
    list = wc->next_ready;
    int call = 1;
    if (w->mode == H2T_WRITER_SPAWN) {
      /* every completion lands here: notify only for a reason */
      spawn_done(wc);
      size_t low = atomic_load(&wc->notify_low);
      call = atomic_load(&wc->failed) ||
             (low != SIZE_MAX && atomic_load(&wc->queued) <= low &&
              atomic_compare_exchange_strong(&wc->notify_low, &low, SIZE_MAX));
    }
    if (call && !wc->loop_gone && wc->fn)
      wc->fn(wc->arg);
    wconn_unref(wc);
  }
}

int h2t__writer_new(srv_writer **out, h2t_writer_mode mode, struct ev_loop *loop,
               const h2t_mem *mem, uint64_t drain_us, uint32_t spin_us) {
  if (mode != H2T_WRITER_REUSED && mode != H2T_WRITER_SPAWN &&
      mode != H2T_WRITER_INLINE)
    return H2T_ERR_INVALID_ARG;
  srv_writer *w = h2t_xcalloc(mem, 1, sizeof *w);
  if (!w)
    return H2T_ERR_NOMEM;
  w->mode = mode;
  w->drain_us = drain_us;
  w->spin_us = spin_us;
  w->loop = loop;
  w->mem = mem;
  w->efd = -1;
  pthread_mutex_init(&w->mu, NULL);
  ev_async_init(&w->async, async_cb);
  w->async.data = w;
  ev_async_start(loop, &w->async);
  ev_unref(loop); /* the writer alone must not keep the loop running */
  atomic_init(&w->in, NULL);
  atomic_init(&w->recycled, NULL);
  atomic_init(&w->released, NULL);
  if (mode == H2T_WRITER_REUSED) {
    w->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (w->efd < 0 || pthread_create(&w->th, NULL, writer_thread, w) != 0) {
      if (w->efd >= 0)
        close(w->efd);
      ev_ref(loop);
      ev_async_stop(loop, &w->async);
      pthread_mutex_destroy(&w->mu);
      h2t_xfree(mem, w);
      return H2T_ERR_SYSTEM;
    }
    w->th_started = 1;
  }
  *out = w;
  return 0;
}

void h2t__writer_del(srv_writer *w) {
  if (!w)
    return;
  if (w->th_started) {
    atomic_store(&w->stop, 1);
    writer_wake(w);
    efd_signal(w->efd);
    pthread_join(w->th, NULL);
  }
  /* Leftover notifies, and SPAWN threads still writing: they post to the
   * loop, so they must all be joined before the writer goes. */
  async_cb(w->loop, &w->async, 0);
  while (atomic_load(&w->spawned) > 0) {
    usleep(1000);
    async_cb(w->loop, &w->async, 0);
  }
  if (w->efd >= 0)
    close(w->efd);
  ev_ref(w->loop);
  ev_async_stop(w->loop, &w->async);
  pthread_mutex_destroy(&w->mu);
  reclaim(w); /* closes the sockets the writer finished with */
  release_refs(w);
  while (w->pool) {
    witem *it = w->pool;
    w->pool = it->next;
    h2t_xfree(w->mem, it);
  }
  h2t_xfree(w->mem, w->active);
  h2t_xfree(w->mem, w);
}

wconn *h2t__writer_conn_new(srv_writer *w, int fd, writer_notify_fn fn,
                       void *arg) {
  wconn *wc = h2t_xcalloc(w->mem, 1, sizeof *wc);
  if (!wc)
    return NULL;
  wc->w = w;
  wc->fd = fd;
  wc->fn = fn;
  wc->arg = arg;
  atomic_init(&wc->refs, 2); /* the loop's and the writer's */
  atomic_init(&wc->queued, 0);
  atomic_init(&wc->notify_low, SIZE_MAX);
  atomic_init(&wc->failed, 0);
  if (w->mode == H2T_WRITER_INLINE) {
    ev_io_init(&wc->wio, inline_io_cb, fd, EV_WRITE);
    wc->wio.data = wc;
    ev_timer_init(&wc->drain_timer, inline_drain_timeout,
                  w->drain_us == UINT64_MAX ? 0. : w->drain_us / 1e6, 0.);
    wc->drain_timer.data = wc;
  }
  return wc;
}

static void depth_add(srv_writer *w) {
  unsigned d = atomic_fetch_add(&w->depth, 1) + 1;
  unsigned m = atomic_load(&w->depth_max);
  while (d > m && !atomic_compare_exchange_weak(&w->depth_max, &m, d))
    ;
}

static int enqueue(wconn *wc, witem *it, size_t len, int close) {
  srv_writer *w = wc->w;
  it->next = NULL;
  it->wc = wc;
  it->len = len;
  it->off = 0;
  it->close = close;
  if (!close) {
    atomic_fetch_add(&wc->queued, len);
    depth_add(w);
  }
  switch (w->mode) {
  case H2T_WRITER_REUSED: {
    stack_push(&w->in, it);
    if (atomic_load(&w->sleeping))
      writer_wake(w);
    break;
  }
  case H2T_WRITER_SPAWN:
    if (close == 2) {
      it->close = 1;
      atomic_store(&wc->failed, 1);
      if (wc->th_active) /* unblock the thread: it fails fast */
        shutdown(wc->fd, SHUT_RDWR);
    }
    append_item(wc, it);
    spawn_next(wc);
    break;
  case H2T_WRITER_INLINE:
    if (close == 2) {
      drop_items(wc);
      it->close = 1;
    }
    append_item(wc, it);
    if (close && w->drain_us != UINT64_MAX &&
        !ev_is_active(&wc->drain_timer))
      ev_timer_start(w->loop, &wc->drain_timer);
    if (!ev_is_active(&wc->wio))
      inline_write(wc);
    break;
  }
  return 0;
}

int h2t__writer_push(wconn *wc, uint8_t *buf, size_t len) {
  witem *it = item_of(buf);
  if (atomic_load(&wc->failed)) {
    pool_put(wc->w, it);
    return H2T_ERR_IO;
  }
  it->hlen = len;
  return enqueue(wc, it, len, 0);
}

int h2t__writer_push_ref(wconn *wc, uint8_t *buf, size_t len,
                         const uint8_t *ref, int fd, off_t off, size_t rlen,
                         writer_release_fn rel, void *arg) {
  witem *it = buf ? item_of(buf) : pool_get(wc->w, 0);
  if (!it)
    return H2T_ERR_NOMEM;
  if (atomic_load(&wc->failed)) {
    pool_put(wc->w, it);
    return H2T_ERR_IO;
  }
  it->hlen = len;
  it->ref = fd >= 0 ? NULL : ref;
  it->src_fd = fd;
  it->src_off = off;
  it->rel = rel;
  it->rel_arg = arg;
  return enqueue(wc, it, len + rlen, 0);
}

size_t h2t__writer_conn_queued(const wconn *wc) {
  return atomic_load(&((wconn *)wc)->queued);
}

int h2t__writer_conn_want_notify(wconn *wc, size_t low) {
  atomic_store(&wc->notify_low, low);
  if (atomic_load(&wc->queued) <= low) {
    size_t l = low;
    if (atomic_compare_exchange_strong(&wc->notify_low, &l, SIZE_MAX))
      return 1;
  }
  return 0;
}

int h2t__writer_conn_failed(const wconn *wc) {
  return atomic_load(&((wconn *)wc)->failed);
}

void h2t__writer_conn_close(wconn *wc, int abort) {
  srv_writer *w = wc->w;
  wc->loop_gone = 1;
  atomic_store(&wc->notify_low, SIZE_MAX);
  witem *marker = pool_get(w, 0);
  if (!marker || enqueue(wc, marker, 0, abort ? 2 : 1) != 0) {
    /* No memory for the marker: close the socket from here, the writer
     * then fails on it and drops the rest. */
    shutdown(wc->fd, SHUT_RDWR);
  }
  wconn_unref(wc); /* the loop's reference */
  (void)w;
}

uint32_t h2t__writer_depth(const srv_writer *w) {
  return atomic_load(&((srv_writer *)w)->depth);
}

uint32_t h2t__writer_depth_max(const srv_writer *w) {
  return atomic_load(&((srv_writer *)w)->depth_max);
}
