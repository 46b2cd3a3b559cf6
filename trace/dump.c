/* Human-readable in-flight report, and the SIGUSR1 trigger for it. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "trace/inflight_int.h"
#include "trace/tracectx_int.h"

void h2t__fmt_duration(char *buf, size_t len, uint64_t us) {
  uint64_t cs = us / 10000; /* centiseconds */
  uint64_t s = cs / 100, h = s / 3600, m = (s / 60) % 60;
  unsigned frac = (unsigned)(cs % 100), sec = (unsigned)(s % 60);
  if (h)
    snprintf(buf, len, "%lluh%02llum%02u.%02us", (unsigned long long)h,
             (unsigned long long)m, sec, frac);
  else if (m)
    snprintf(buf, len, "%llum%02u.%02us", (unsigned long long)m, sec, frac);
  else
    snprintf(buf, len, "%u.%02us", sec, frac);
}

struct out {
  char *p;
  size_t len, cap;
  int oom;
};

static void out_printf(struct out *o, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void out_printf(struct out *o, const char *fmt, ...) {
  for (; !o->oom;) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->p + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
      o->oom = 1;
      break;
    }
    if ((size_t)n < o->cap - o->len) {
      o->len += (size_t)n;
      break;
    }
    size_t cap = o->cap * 2 + (size_t)n + 1;
    char *p = realloc(o->p, cap);
    if (!p) {
      o->oom = 1;
      break;
    }
    o->p = p;
    o->cap = cap;
  }
}

static const h2t_inflight_info *sort_base;

static int by_age(const void *a, const void *b) {
  const h2t_inflight_info *x = &sort_base[*(const size_t *)a];
  const h2t_inflight_info *y = &sort_base[*(const size_t *)b];
  if (x->start_us != y->start_us)
    return x->start_us < y->start_us ? -1 : 1;
  return x->id < y->id ? -1 : x->id > y->id;
}

static int same_group(const h2t_inflight_info *a, const h2t_inflight_info *b) {
  return a->kind == b->kind && !strcmp(a->authority, b->authority);
}

static pthread_mutex_t sort_mu = PTHREAD_MUTEX_INITIALIZER;

int h2t_inflight_dump_string(char **out) {
  if (!out)
    return H2T_ERR_INVALID_ARG;
  *out = NULL;
  h2t_inflight_info *arr;
  size_t n;
  int rc = h2t_inflight_snapshot(&arr, &n);
  if (rc)
    return rc;
  uint64_t now = h2t_now_us();
  struct out o = {.cap = 256 + n * 128};
  o.p = malloc(o.cap);
  size_t *order = malloc((n ? n : 1) * sizeof *order);
  size_t *group = malloc((n ? n : 1) * sizeof *group); /* leader of each */
  if (!o.p || !order || !group) {
    free(o.p);
    free(order);
    free(group);
    h2t_inflight_info_free(arr);
    return H2T_ERR_NOMEM;
  }
  o.p[0] = '\0';
  for (size_t i = 0; i < n; i++)
    order[i] = i;
  pthread_mutex_lock(&sort_mu); /* qsort has no context argument */
  sort_base = arr;
  qsort(order, n, sizeof *order, by_age);
  pthread_mutex_unlock(&sort_mu);

  /* Groups appear in the order of their oldest request. */
  size_t ngroups = 0;
  for (size_t i = 0; i < n; i++) {
    size_t g = 0;
    while (g < ngroups && !same_group(&arr[group[g]], &arr[order[i]]))
      g++;
    if (g == ngroups)
      group[ngroups++] = order[i];
  }

  out_printf(&o, "In-flight HTTP/2 requests (%zu):\n", n);
  char age[32];
  for (size_t g = 0; g < ngroups; g++) {
    const h2t_inflight_info *lead = &arr[group[g]];
    size_t count = 0;
    for (size_t i = 0; i < n; i++)
      count += same_group(&arr[i], lead);
    h2t__fmt_duration(age, sizeof age, now - lead->start_us);
    out_printf(&o, "%s%s  %zu in flight, oldest %s\n",
               lead->authority[0] ? lead->authority : "(no authority)",
               lead->kind == H2T_INFLIGHT_SERVER ? " (served)" : "", count,
               age);
    for (size_t i = 0; i < n; i++) {
      const h2t_inflight_info *r = &arr[order[i]];
      if (!same_group(r, lead))
        continue;
      h2t__fmt_duration(age, sizeof age, now - r->start_us);
      out_printf(&o, "  %s %s for %s [%s", r->method, r->path, age,
                 h2t_inflight_state_text(r->state));
      if (r->status[0])
        out_printf(&o, ": %s", r->status);
      if (r->canceled)
        out_printf(&o, " (%s)", r->cancel_reason);
      if (r->conn_id)
        out_printf(&o, ", conn #%llu", (unsigned long long)r->conn_id);
      if (r->stream_id)
        out_printf(&o, " stream %d", (int)r->stream_id);
      out_printf(&o, "]");
      if (!h2t__zero_id(r->trace.trace_id, 16)) {
        char t[33], sp[17], pa[17];
        h2t__hex(r->trace.trace_id, 16, t);
        h2t__hex(r->trace.span_id, 8, sp);
        h2t__hex(r->trace.parent_span_id, 8, pa);
        t[32] = sp[16] = pa[16] = '\0';
        out_printf(&o, " trace %s span %s", t, sp);
        if (!h2t__zero_id(r->trace.parent_span_id, 8))
          out_printf(&o, " parent %s", pa);
      }
      out_printf(&o, "\n");
    }
  }
  free(order);
  free(group);
  h2t_inflight_info_free(arr);
  if (o.oom) {
    free(o.p);
    return H2T_ERR_NOMEM;
  }
  *out = o.p;
  return 0;
}

static int write_all(int fd, const char *p, size_t len) {
  while (len) {
    ssize_t w = write(fd, p, len);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return H2T_ERR_IO;
    }
    p += w;
    len -= (size_t)w;
  }
  return 0;
}

int h2t_inflight_dump(int fd) {
  char *s;
  int rc = h2t_inflight_dump_string(&s);
  if (rc)
    return rc;
  rc = write_all(fd < 0 ? STDERR_FILENO : fd, s, strlen(s));
  free(s);
  return rc;
}

/* --- SIGUSR1 -------------------------------------------------------------- */

static pthread_mutex_t sig_mu = PTHREAD_MUTEX_INITIALIZER;
static volatile sig_atomic_t sig_wfd = -1;
static int sig_rfd = -1, sig_out = -1, sig_installed;
static pthread_t sig_thread;
static struct sigaction old_usr1;
#ifdef SIGINFO
static struct sigaction old_info;
#endif

/* Async-signal-safe: one write(2), errno preserved. */
static void on_dump_signal(int sig) {
  int saved = errno;
  int fd = sig_wfd;
  if (fd >= 0) {
    char c = 'd';
    ssize_t r; /* full pipe (EAGAIN): a dump is pending anyway */
    while ((r = write(fd, &c, 1)) < 0 && errno == EINTR)
      ;
  }
  errno = saved;
}

static void *dump_thread(void *arg) {
  pthread_setname_np(pthread_self(), "h2t-sigdump");
  for (;;) {
    struct pollfd p = {.fd = sig_rfd, .events = POLLIN};
    if (poll(&p, 1, -1) < 0) {
      if (errno == EINTR)
        continue;
      break;
    }
    char buf[64];
    ssize_t r = read(sig_rfd, buf, sizeof buf); /* several signals: one dump */
    if (r < 0 && (errno == EINTR || errno == EAGAIN))
      continue;
    if (r <= 0 || memchr(buf, 'q', (size_t)r))
      break;
    h2t_inflight_dump(sig_out);
  }
  return NULL;
}

int h2t_inflight_install_signal(int fd) {
  pthread_mutex_lock(&sig_mu);
  int rc = 0, p[2] = {-1, -1};
  if (sig_installed) {
    rc = H2T_ERR_STATE;
    goto out;
  }
  if ((rc = h2t__ifl_ensure_on()) != 0)
    goto out;
  if (pipe2(p, O_CLOEXEC | O_NONBLOCK) != 0) {
    rc = H2T_ERR_SYSTEM;
    goto out;
  }
  sig_rfd = p[0];
  sig_wfd = p[1];
  sig_out = fd;
  if (pthread_create(&sig_thread, NULL, dump_thread, NULL) != 0) {
    close(p[0]);
    close(p[1]);
    sig_rfd = sig_wfd = -1;
    rc = H2T_ERR_SYSTEM;
    goto out;
  }
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_dump_signal;
  sa.sa_flags = SA_RESTART;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGUSR1, &sa, &old_usr1);
#ifdef SIGINFO
  sigaction(SIGINFO, &sa, &old_info);
#endif
  atomic_fetch_add(&h2t__ifl_users, 1);
  sig_installed = 1;
out:
  pthread_mutex_unlock(&sig_mu);
  return rc;
}

int h2t_inflight_uninstall_signal(void) {
  pthread_mutex_lock(&sig_mu);
  if (!sig_installed) {
    pthread_mutex_unlock(&sig_mu);
    return H2T_ERR_STATE;
  }
  sigaction(SIGUSR1, &old_usr1, NULL);
#ifdef SIGINFO
  sigaction(SIGINFO, &old_info, NULL);
#endif
  char q = 'q';
  while (write(sig_wfd, &q, 1) < 0 && (errno == EINTR || errno == EAGAIN))
    usleep(1000); /* a full pipe drains: the thread is reading it */
  pthread_join(sig_thread, NULL);
  int w = sig_wfd;
  sig_wfd = -1;
  close(w);
  close(sig_rfd);
  sig_rfd = -1;
  sig_installed = 0;
  atomic_fetch_sub(&h2t__ifl_users, 1);
  pthread_mutex_unlock(&sig_mu);
  return 0;
}
