/*
 * Poor man's profiler for GET /debug/threads: every thread of the process is
 * sent a realtime signal (tgkill); its handler unwinds its own stack with
 * libunwind into a preallocated slot (no malloc, no locks: only libunwind's
 * local unwinding, which is async-signal-safe).  The caller waits with a
 * timeout, then aggregates identical stacks.  The calling thread walks its
 * own stack directly.
 */
#define UNW_LOCAL_ONLY
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include <jansson.h>
#include <libunwind.h>

#include <h2trace/diag.h>
#include "diag/diag_int.h"

#define ST_THREADS 256
#define ST_FRAMES 32
#define ST_NAME 64
#define ST_WAIT_MS 300

struct st_slot {
  atomic_int tid; /* thread that should fill it; 0: unused */
  atomic_int done;
  int nframes;
  uintptr_t ip[ST_FRAMES];
  uintptr_t off[ST_FRAMES];
  char name[ST_FRAMES][ST_NAME];
};

static pthread_mutex_t st_mu = PTHREAD_MUTEX_INITIALIZER;
static struct st_slot *st_slots;
static atomic_int st_active, st_in_handler;
static struct sigaction st_old;
static int st_installed;

static int st_signo(void) { return SIGRTMIN + 4; }

static pid_t my_tid(void) { return (pid_t)syscall(SYS_gettid); }

/* uc: the interrupted context in a signal handler (the walk then starts
 * where the thread was, not in the handler); NULL: the caller's own stack. */
static void capture(struct st_slot *s, ucontext_t *uc) {
  unw_context_t ctx;
  unw_cursor_t cur;
  s->nframes = 0;
  if (uc) {
    if (unw_init_local2(&cur, (unw_context_t *)uc, UNW_INIT_SIGNAL_FRAME) != 0)
      return;
  } else if (unw_getcontext(&ctx) != 0 || unw_init_local(&cur, &ctx) != 0)
    return;
  /* Only addresses here: naming a frame (unw_get_proc_name) reads ELF
   * files and mallocs, which a signal handler must not. */
  do {
    unw_word_t ip = 0;
    if (unw_get_reg(&cur, UNW_REG_IP, &ip) != 0 || !ip)
      break;
    s->ip[s->nframes++] = (uintptr_t)ip;
  } while (s->nframes < ST_FRAMES && unw_step(&cur) > 0);
}

/* Name the function containing ip, from the sampling thread: libunwind
 * names the frame of a cursor, so make a cursor that stands at ip.  For a
 * return address (not the first frame) look up ip - 1, inside the call. */
static void symbolize(uintptr_t ip, int first, char *name, size_t len,
                      uintptr_t *off) {
  unw_context_t ctx;
  unw_cursor_t cur;
  unw_word_t o = 0;
  name[0] = '\0';
  *off = 0;
  if (unw_getcontext(&ctx) != 0)
    return;
#if defined(__x86_64__)
  ctx.uc_mcontext.gregs[REG_RIP] = (greg_t)(first ? ip : ip - 1);
#elif defined(__aarch64__)
  ctx.uc_mcontext.pc = first ? ip : ip - 1;
#else
  return;
#endif
  if (unw_init_local(&cur, &ctx) != 0)
    return;
  int r = unw_get_proc_name(&cur, name, len, &o);
  if (r != 0 && r != -UNW_ENOMEM) /* ENOMEM: truncated, still useful */
    name[0] = '\0';
  else
    *off = (uintptr_t)o + (first ? 0 : 1);
}

static void on_sample(int sig, siginfo_t *si, void *uc) {
  int saved = errno;
  atomic_fetch_add(&st_in_handler, 1);
  if (atomic_load(&st_active)) {
    pid_t me = my_tid();
    for (int i = 0; i < ST_THREADS; i++) {
      struct st_slot *s = &st_slots[i];
      if (atomic_load_explicit(&s->tid, memory_order_relaxed) == me &&
          !atomic_load_explicit(&s->done, memory_order_relaxed)) {
        capture(s, uc);
        atomic_store_explicit(&s->done, 1, memory_order_release);
        break;
      }
    }
  }
  atomic_fetch_sub(&st_in_handler, 1);
  errno = saved;
}

int h2t__stacks_init(void) {
  pthread_mutex_lock(&st_mu);
  int rc = 0;
  if (!st_installed) {
    /* libunwind initializes itself lazily (and mallocs doing so): do it
     * here, not first inside a signal handler */
    static struct st_slot warm;
    capture(&warm, NULL);
    for (int f = 0; f < warm.nframes; f++)
      symbolize(warm.ip[f], f == 0, warm.name[f], ST_NAME, &warm.off[f]);
    st_slots = calloc(ST_THREADS, sizeof *st_slots);
    if (!st_slots)
      rc = H2T_ERR_NOMEM;
    else {
      struct sigaction sa;
      memset(&sa, 0, sizeof sa);
      sa.sa_sigaction = on_sample;
      sa.sa_flags = SA_SIGINFO | SA_RESTART;
      sigemptyset(&sa.sa_mask);
      if (sigaction(st_signo(), &sa, &st_old) != 0) {
        free(st_slots);
        st_slots = NULL;
        rc = H2T_ERR_SYSTEM;
      } else
        st_installed = 1;
    }
  }
  pthread_mutex_unlock(&st_mu);
  return rc;
}

void h2t__stacks_fini(void) {
  pthread_mutex_lock(&st_mu);
  if (st_installed) {
    /* A thread that had the signal blocked may still get it later: ignore
     * it rather than let the default action kill the process. */
    struct sigaction sa = st_old;
    if (!(sa.sa_flags & SA_SIGINFO) && sa.sa_handler == SIG_DFL)
      sa.sa_handler = SIG_IGN;
    sigaction(st_signo(), &sa, NULL);
    free(st_slots);
    st_slots = NULL;
    st_installed = 0;
  }
  pthread_mutex_unlock(&st_mu);
}

static void sleep_ms(int ms) {
  struct timespec ts = {.tv_sec = 0, .tv_nsec = ms * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

static void thread_name(pid_t tid, char *buf, size_t len) {
  char path[64];
  snprintf(path, sizeof path, "/proc/self/task/%d/comm", (int)tid);
  buf[0] = '\0';
  FILE *f = fopen(path, "re");
  if (!f)
    return;
  if (fgets(buf, (int)len, f))
    buf[strcspn(buf, "\n")] = '\0';
  fclose(f);
}

/* The sampling thread walked its own stack: skip capture() itself. */
static int first_frame(const struct st_slot *s) {
  for (int i = 0; i < s->nframes && i < 4; i++)
    if (!strcmp(s->name[i], "h2t_diag_threads_json"))
      return i;
  return 0;
}

static int same_stack(const struct st_slot *a, const struct st_slot *b) {
  int fa = first_frame(a), fb = first_frame(b);
  if (a->nframes - fa != b->nframes - fb)
    return 0;
  for (int i = 0; i < a->nframes - fa; i++)
    if (a->ip[fa + i] != b->ip[fb + i])
      return 0;
  return 1;
}

static json_t *frames_json(const struct st_slot *s) {
  json_t *arr = json_array();
  for (int i = first_frame(s); i < s->nframes; i++) {
    char buf[ST_NAME + 160];
    Dl_info di;
    const char *mod = NULL;
    if (dladdr((void *)s->ip[i], &di) && di.dli_fname) {
      mod = strrchr(di.dli_fname, '/');
      mod = mod ? mod + 1 : di.dli_fname;
    }
    if (s->name[i][0])
      snprintf(buf, sizeof buf, "%s+0x%lx%s%s%s", s->name[i],
               (unsigned long)s->off[i], mod ? " (" : "", mod ? mod : "",
               mod ? ")" : "");
    else if (mod)
      snprintf(buf, sizeof buf, "%s+0x%lx", mod,
               (unsigned long)(s->ip[i] - (uintptr_t)di.dli_fbase));
    else
      snprintf(buf, sizeof buf, "0x%lx", (unsigned long)s->ip[i]);
    json_array_append_new(arr, json_string(buf));
  }
  return arr;
}

int h2t_diag_threads_json(char **out) {
  if (!out)
    return H2T_ERR_INVALID_ARG;
  *out = NULL;
  pthread_mutex_lock(&st_mu);
  if (!st_installed) {
    pthread_mutex_unlock(&st_mu);
    return H2T_ERR_STATE;
  }
  pid_t tids[ST_THREADS];
  int n = 0;
  DIR *d = opendir("/proc/self/task");
  if (!d) {
    pthread_mutex_unlock(&st_mu);
    return H2T_ERR_SYSTEM;
  }
  struct dirent *de;
  while ((de = readdir(d)) && n < ST_THREADS)
    if (de->d_name[0] != '.')
      tids[n++] = (pid_t)atoi(de->d_name);
  closedir(d);

  pid_t me = my_tid(), pid = getpid();
  for (int i = 0; i < ST_THREADS; i++) {
    atomic_store(&st_slots[i].done, 0);
    atomic_store(&st_slots[i].tid, i < n ? tids[i] : 0);
  }
  atomic_store(&st_active, 1);
  int pending = 0;
  for (int i = 0; i < n; i++) {
    if (tids[i] == me) {
      capture(&st_slots[i], NULL);
      atomic_store(&st_slots[i].done, 1);
    } else if (syscall(SYS_tgkill, pid, tids[i], st_signo()) == 0)
      pending++;
  }
  for (int waited = 0; pending && waited < ST_WAIT_MS; waited++) {
    int left = 0;
    for (int i = 0; i < n; i++)
      left += tids[i] != me && !atomic_load_explicit(&st_slots[i].done,
                                                     memory_order_acquire);
    if (!left)
      break;
    sleep_ms(1);
  }
  atomic_store(&st_active, 0);
  /* a handler past its check may still be writing its slot */
  for (int i = 0; i < 1000 && atomic_load(&st_in_handler); i++)
    sleep_ms(1);

  for (int i = 0; i < n; i++)
    if (atomic_load(&st_slots[i].done))
      for (int f = 0; f < st_slots[i].nframes; f++)
        symbolize(st_slots[i].ip[f], f == 0, st_slots[i].name[f], ST_NAME,
                  &st_slots[i].off[f]);

  json_t *root = json_object(), *stacks = json_array(), *missing = json_array();
  int *grp = calloc((size_t)n + 1, sizeof *grp); /* stack group + 1 */
  int sampled = 0;
  for (int i = 0; i < n; i++) {
    struct st_slot *s = &st_slots[i];
    if (!atomic_load(&s->done) || !grp) {
      json_array_append_new(missing, json_integer(tids[i]));
      continue;
    }
    sampled++;
    if (grp[i])
      continue;
    int gid = i + 1;
    json_t *threads = json_array();
    int count = 0;
    for (int j = i; j < n; j++) {
      if (grp[j] || !atomic_load(&st_slots[j].done) ||
          !same_stack(s, &st_slots[j]))
        continue;
      grp[j] = gid;
      count++;
      char name[32];
      thread_name(tids[j], name, sizeof name);
      json_array_append_new(threads, json_pack("{s:i,s:s}", "tid", (int)tids[j],
                                               "name", name));
    }
    json_array_append_new(stacks,
                          json_pack("{s:i,s:o,s:o}", "count", count, "threads",
                                    threads, "frames", frames_json(s)));
  }
  free(grp);
  pthread_mutex_unlock(&st_mu);
  /* most common stack first: where most threads are is the story */
  size_t ns = json_array_size(stacks);
  for (size_t i = 1; i < ns; i++)
    for (size_t j = i; j > 0; j--) {
      json_t *a = json_array_get(stacks, j - 1), *b = json_array_get(stacks, j);
      if (json_integer_value(json_object_get(a, "count")) >=
          json_integer_value(json_object_get(b, "count")))
        break;
      json_incref(a);
      json_array_set(stacks, j - 1, b);
      json_array_set_new(stacks, j, a);
    }
  json_object_set_new(root, "threads", json_integer(n));
  json_object_set_new(root, "sampled", json_integer(sampled));
  json_object_set_new(root, "stacks", stacks);
  json_object_set_new(root, "missing", missing);
  char *s = json_dumps(root, JSON_INDENT(1));
  json_decref(root);
  if (!s)
    return H2T_ERR_NOMEM;
  *out = s;
  return 0;
}
