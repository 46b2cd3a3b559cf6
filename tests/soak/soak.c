/*
 * h2t_soak: many requests through the h2trace client and server with faults
 * injected, the diagnostics endpoint polled and every outcome accounted for
 * (issue 11, item 5).  ctest runs it twice: `soak_short` in the default
 * suite, `soak` (label soak, 1 M requests) on demand.
 *
 * Threads and processes:
 *   main      the h2t_client (its own loop) keeping --window requests in
 *             flight, up to --conns connections per origin;
 *   server    an in-process h2t_server on its own loop (routes /ok, /rst,
 *             /stall) advertising few streams, so the client needs many
 *             connections to it;
 *   poller    GET /debug/requests, /metrics, /debug/recent on the in-process
 *             endpoint throughout, and cancels requests of the /stall?cancel
 *             route from outside the loop (h2t_inflight_cancel);
 *   chaos     every --fault-every requests, one h2serve process (of
 *             --servers) is either killed (SIGKILL) with requests in flight
 *             or shut down gracefully (SIGTERM: GOAWAY, drain), alternately,
 *             and a new one started on the same port.
 *
 * Each request's route is chosen from its sequence number, so each fault is a
 * known fraction of the requests (printed).  Every route has the outcomes it
 * may end in (a 200 with the whole body, or named error classes); anything
 * else, an on_done that is not the first for its request, or a request never
 * done is a failure.  At the end the in-flight table must be empty (read
 * directly and through the endpoint), and nothing may leak:
 *   - the client and the in-process server allocate through a counting
 *     h2t_mem; once both are deleted, every block they took is given back
 *     (exact, whatever the run's length);
 *   - while it runs, the library's live heap and the process's RSS stay
 *     flat: after the first --warmup percent of requests, the last quarter's
 *     median within --heap-tol / --rss-tol percent of the first quarter's.
 *     Medians, not peaks: a leak raises the floor, while a burst of
 *     reconnections after a kill only makes a spike (a peak-based check
 *     failed on such a spike, 16.7% in a 2-second run).
 *
 * Exit: 0 when every check passed, 1 when one failed, 2 for bad arguments.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <ev.h>
#include <jansson.h>

#include <h2trace/client.h>
#include <h2trace/diag.h>
#include <h2trace/inflight.h>
#include <h2trace/server.h>

#include "peer.h"

#define MAX_SERVERS 8
#define RST_BYTES 4096       /* /rst sends this much, then resets */
#define PEER_BYTES 16384     /* /bytes?n= on h2serve */
#define STALL_TIMEOUT_MS 300 /* /stall: the client gives up after this */
#define CANCEL_TIMEOUT_MS 5000 /* /stall?cancel: the poller cancels first */
#define REQ_TIMEOUT_MS 20000 /* everything else: a hang is a failure */

/* --- routes: what each request does and may end in ----------------------- */

enum route { RT_OK, RT_RST, RT_STALL, RT_CANCEL, RT_PEER, RT_COUNT };
static const char *route_name[RT_COUNT] = {"ok", "rst", "stall", "cancel",
                                          "peer"};
/* Per mille of requests (the rest: RT_OK), in sequence-number order. */
static const unsigned route_permille[RT_COUNT] = {
    [RT_RST] = 10, [RT_STALL] = 5, [RT_CANCEL] = 2, [RT_PEER] = 200};

/* Errors a route may end in besides success.  RT_PEER's come from the
 * faults: a peer killed mid-stream ends the requests that already had a
 * response byte (never retried) in CONN_CLOSED when a read saw it go, IO
 * when a send did (ECONNRESET, EPIPE); the gap until its successor listens
 * gives CONNECT_REFUSED, and CONNECT when the peer died with the connection
 * still in its accept queue (the connect then fails with ECONNRESET); a
 * GOAWAY is retried above last_stream_id, and GOAWAY is what a request ends
 * in when it cannot be. */
static int expected(enum route r, int err) {
  switch (r) {
  case RT_OK:
    return err == 0;
  case RT_RST:
    return err == H2T_ERR_STREAM_RESET;
  case RT_STALL:
    return err == H2T_ERR_TIMEOUT;
  case RT_CANCEL: /* TIMEOUT only if the poller never got to it */
    return err == H2T_ERR_CANCELED || err == H2T_ERR_TIMEOUT;
  case RT_PEER:
    return err == 0 || err == H2T_ERR_CONN_CLOSED || err == H2T_ERR_IO ||
           err == H2T_ERR_CONNECT_REFUSED || err == H2T_ERR_CONNECT ||
           err == H2T_ERR_GOAWAY;
  default:
    return 0;
  }
}

#define NERR 64 /* errors are -7001 - k; index 0: success */
static int err_index(int err) {
  int k = err == 0 ? 0 : -7000 - err;
  return k > 0 && k < NERR ? k : (err == 0 ? 0 : NERR - 1);
}

/* --- options ---------------------------------------------------------------- */

static struct {
  uint64_t n;
  unsigned conns, window, servers, streams;
  uint64_t fault_every;
  unsigned deadline_s, warmup_pct;
  double rss_tol, heap_tol;
  int verbose;
} opt = {.n = 20000, .conns = 100, .window = 600, .servers = 3, .streams = 4,
         .deadline_s = 600, .warmup_pct = 10, .rss_tol = 5.0,
         .heap_tol = 10.0};

/* --- the counting allocator ------------------------------------------------ */

/* Each block carries its size in front, so free knows what it gives back.
 * The client's loop, the server's loop and its writer all allocate: the
 * counters are atomic. */
#define MEM_HDR 16 /* keeps malloc's alignment */
static atomic_llong heap_bytes, heap_blocks;

static void *c_malloc(size_t n, void *user) {
  (void)user;
  if (n > (size_t)-1 - MEM_HDR)
    return NULL;
  unsigned char *p = malloc(n + MEM_HDR);
  if (!p)
    return NULL;
  memcpy(p, &n, sizeof n);
  atomic_fetch_add_explicit(&heap_bytes, (long long)n, memory_order_relaxed);
  atomic_fetch_add_explicit(&heap_blocks, 1, memory_order_relaxed);
  return p + MEM_HDR;
}

static void c_free(void *ptr, void *user) {
  (void)user;
  if (!ptr)
    return;
  unsigned char *p = (unsigned char *)ptr - MEM_HDR;
  size_t n;
  memcpy(&n, p, sizeof n);
  atomic_fetch_sub_explicit(&heap_bytes, (long long)n, memory_order_relaxed);
  atomic_fetch_sub_explicit(&heap_blocks, 1, memory_order_relaxed);
  free(p);
}

static void *c_calloc(size_t k, size_t n, void *user) {
  if (n && k > ((size_t)-1 - MEM_HDR) / n)
    return NULL;
  void *p = c_malloc(k * n, user);
  if (p)
    memset(p, 0, k * n);
  return p;
}

static void *c_realloc(void *ptr, size_t n, void *user) {
  if (!ptr)
    return c_malloc(n, user);
  if (n > (size_t)-1 - MEM_HDR)
    return NULL;
  unsigned char *p = (unsigned char *)ptr - MEM_HDR;
  size_t old;
  memcpy(&old, p, sizeof old);
  unsigned char *q = realloc(p, n + MEM_HDR);
  if (!q)
    return NULL;
  memcpy(q, &n, sizeof n);
  atomic_fetch_add_explicit(&heap_bytes, (long long)n - (long long)old,
                            memory_order_relaxed);
  return q + MEM_HDR;
}

static const h2t_mem counting_mem = {NULL, c_malloc, c_free, c_calloc,
                                     c_realloc};

/* --- in-process server --------------------------------------------------- */

static h2t_server *srv;
static pthread_t srv_thread;
static atomic_ullong stall_closed;

static void *server_main(void *arg) {
  h2t_server_run(srv);
  return NULL;
}

static void handle_ok(h2t_server_req *r, void *user) {
  static const h2t_header h = {"content-type", "text/plain"};
  h2t_server_req_respond(r, 200, &h, 1, "ok\n", 3, H2T_RESPOND_NOCOPY);
}

/* /rst: a DATA frame, then a failure that resets the stream mid-body. */
static ssize_t rst_gen(h2t_server_req *r, uint8_t *buf, size_t len, int *eof,
                       void *user) {
  uintptr_t *sent = user;
  if (*sent)
    return H2T_ERR_CALLBACK;
  size_t n = len < RST_BYTES ? len : RST_BYTES;
  memset(buf, 'r', n);
  *sent = n;
  return (ssize_t)n;
}

static void rst_close(h2t_server_req *r, uint32_t code, void *user) {
  free(user);
}

static void handle_rst(h2t_server_req *r, void *user) {
  uintptr_t *sent = calloc(1, sizeof *sent);
  if (!sent) {
    h2t_server_req_reset(r, 2);
    return;
  }
  h2t_server_req_on(r, NULL, rst_close, sent);
  h2t_server_req_respond_gen(r, 200, NULL, 0, rst_gen, sent);
}

/* /stall: never answers; the client's timeout or cancel resets it. */
static void stall_close(h2t_server_req *r, uint32_t code, void *user) {
  atomic_fetch_add(&stall_closed, 1);
}

static void handle_stall(h2t_server_req *r, void *user) {
  h2t_server_req_on(r, NULL, stall_close, NULL);
  h2t_server_req_set_status(r, "stalling");
}

/* --- h2serve processes ----------------------------------------------------- */

/* pid: written by the chaos thread, read by the sampler on the loop. */
static struct peer {
  atomic_int pid;
  int port;
} peers[MAX_SERVERS];
static char log_path[MAX_SERVERS][300];

static pid_t peer_start(int i) {
  char port[16];
  snprintf(port, sizeof port, "%d", peers[i].port);
  char *argv[] = {(char *)h2t_test_bin("h2serve"), "--h2c", "--quiet",
                  "--port", port, "--root", (char *)h2t_test_tmpdir(), NULL};
  pid_t pid = h2t_test_spawn(argv, log_path[i]);
  if (pid > 0 && h2t_test_wait_port(peers[i].port, 10000) != 0) {
    h2t_test_stop(pid);
    pid = -1;
  }
  return pid;
}

static long rss_kb(pid_t pid) {
  char path[64];
  if (pid)
    snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
  else
    snprintf(path, sizeof path, "/proc/self/statm");
  FILE *f = fopen(path, "r");
  long size = 0, res = 0;
  if (f) {
    if (fscanf(f, "%ld %ld", &size, &res) != 2)
      res = 0;
    fclose(f);
  }
  return res * (sysconf(_SC_PAGESIZE) / 1024);
}

/* --- the client side ---------------------------------------------------- */

typedef struct slot {
  int busy;
  enum route route;
  uint64_t seq;
  size_t got;
  int status;
} slot;

static struct {
  h2t_client *c;
  slot *slots;
  char urls[RT_COUNT + MAX_SERVERS * 2][128];
  uint64_t submitted, done;
  uint64_t count[RT_COUNT][NERR];
  uint64_t unexplained, twice, bad_body, submit_failed;
  uint64_t t0, sample_every;
  long *rss, *peer_rss, *heap; /* kB; heap: the library's live bytes */
  size_t nrss, rss_cap;
  uint32_t peak_conns;
} cl;

static atomic_ullong done_total; /* read by the chaos and poller threads */
static atomic_int stopping;

static enum route route_of(uint64_t seq) {
  unsigned k = (unsigned)(seq % 1000), acc = 0;
  for (int r = RT_RST; r < RT_COUNT; r++) {
    acc += route_permille[r];
    if (k < acc)
      return (enum route)r;
  }
  return RT_OK;
}

static void submit_next(slot *s);

static int on_data(h2t_request *req, const uint8_t *d, size_t n, void *user) {
  ((slot *)user)->got += n;
  return 0;
}

static int on_headers(h2t_request *req, int status, const h2t_header *h,
                      size_t n, void *user) {
  ((slot *)user)->status = status;
  return 0;
}

static size_t body_len(const slot *s) {
  switch (s->route) {
  case RT_OK:
    return 3;
  case RT_PEER:
    /* /bytes?n=PEER_BYTES or /delay?ms=20: "delayed 20 ms\n" */
    return (s->seq / 1000) % 2 ? PEER_BYTES : 14;
  default:
    return 0;
  }
}

static void sample(void) {
  if (cl.nrss == cl.rss_cap) {
    cl.rss_cap = cl.rss_cap ? cl.rss_cap * 2 : 256;
    cl.rss = realloc(cl.rss, cl.rss_cap * sizeof *cl.rss);
    cl.peer_rss = realloc(cl.peer_rss, cl.rss_cap * sizeof *cl.peer_rss);
    cl.heap = realloc(cl.heap, cl.rss_cap * sizeof *cl.heap);
    if (!cl.rss || !cl.peer_rss || !cl.heap)
      abort();
  }
  long p = 0;
  for (unsigned i = 0; i < opt.servers; i++) {
    pid_t pid = atomic_load(&peers[i].pid);
    if (pid > 0) {
      long k = rss_kb(pid);
      p = k > p ? k : p;
    }
  }
  cl.rss[cl.nrss] = rss_kb(0);
  cl.heap[cl.nrss] = (long)(atomic_load(&heap_bytes) / 1024);
  cl.peer_rss[cl.nrss++] = p;
  h2t_client_stats st;
  h2t_client_stats_get(cl.c, &st);
  if (st.conns_open > cl.peak_conns)
    cl.peak_conns = st.conns_open;
}

static void on_done(h2t_request *req, int err, void *user) {
  slot *s = user;
  if (!s->busy) {
    cl.twice++;
    fprintf(stderr, "soak: on_done again for request %llu (%s)\n",
            (unsigned long long)s->seq, h2t_errname(err));
    return;
  }
  s->busy = 0;
  cl.done++;
  atomic_store(&done_total, cl.done);
  cl.count[s->route][err_index(err)]++;
  if (!expected(s->route, err)) {
    if (cl.unexplained++ < 20)
      fprintf(stderr,
              "soak: request %llu (%s) ended in %s (status %d, %zu bytes)\n",
              (unsigned long long)s->seq, route_name[s->route],
              h2t_errname(err), s->status, s->got);
  } else if (err == 0 && (s->status != 200 || s->got != body_len(s))) {
    if (cl.bad_body++ < 20)
      fprintf(stderr, "soak: request %llu (%s): status %d, %zu bytes\n",
              (unsigned long long)s->seq, route_name[s->route], s->status,
              s->got);
  }
  if (cl.done % cl.sample_every == 0)
    sample();
  if (opt.n >= 10 && cl.done % (opt.n / 10) == 0) {
    double secs = (h2t_now_us() - cl.t0) / 1e6;
    printf("soak: %llu/%llu done, %.1f s, %.0f req/s, rss %ld kB\n",
           (unsigned long long)cl.done, (unsigned long long)opt.n, secs,
           cl.done / secs, rss_kb(0));
    fflush(stdout);
  }
  if (cl.submitted < opt.n)
    submit_next(s);
}

static void submit_next(slot *s) {
  for (;;) {
    uint64_t seq = cl.submitted++;
    enum route r = route_of(seq);
    const char *url;
    if (r == RT_PEER) {
      unsigned i = (unsigned)((seq / 7) % opt.servers);
      url = cl.urls[RT_COUNT + 2 * i + (seq / 1000) % 2];
    } else {
      url = cl.urls[r];
    }
    *s = (slot){.busy = 1, .route = r, .seq = seq};
    h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = url,
                          .on_headers = on_headers, .on_data = on_data,
                          .on_done = on_done, .user = s,
                          .timeout_ms = r == RT_STALL    ? STALL_TIMEOUT_MS
                                        : r == RT_CANCEL ? CANCEL_TIMEOUT_MS
                                                        : REQ_TIMEOUT_MS};
    int rc = h2t_request_submit(cl.c, &o, NULL);
    if (rc == 0)
      return;
    s->busy = 0;
    cl.done++;
    if (cl.submit_failed++ < 20)
      fprintf(stderr, "soak: submit %llu failed: %s\n",
              (unsigned long long)seq, h2t_errname(rc));
    if (cl.submitted >= opt.n)
      return;
  }
}

/* --- the endpoint, polled ------------------------------------------------- */

static uint16_t diag_port;
static struct {
  uint64_t polls, bad, canceled, cancel_failed;
} pl;

/* One HTTP/1.1 GET to the endpoint; the body (malloc'd) or NULL. */
static char *http_get(const char *path, int *status) {
  *status = 0;
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons(diag_port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
    if (fd >= 0)
      close(fd);
    return NULL;
  }
  char req[256];
  int n = snprintf(req, sizeof req,
                   "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                   path);
  if (send(fd, req, (size_t)n, MSG_NOSIGNAL) != n) {
    close(fd);
    return NULL;
  }
  size_t cap = 1 << 16, len = 0;
  char *buf = malloc(cap);
  while (buf) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    int pr = poll(&p, 1, 10000);
    if (pr < 0 && errno == EINTR)
      continue;
    if (pr <= 0)
      break;
    if (len + 1 >= cap) {
      char *nb = realloc(buf, cap *= 2);
      if (!nb) {
        free(buf);
        buf = NULL;
        break;
      }
      buf = nb;
    }
    ssize_t r = recv(fd, buf + len, cap - len - 1, 0);
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    len += (size_t)r;
  }
  close(fd);
  if (!buf)
    return NULL;
  buf[len] = '\0';
  *status = len > 12 ? atoi(buf + 9) : 0;
  char *body = strstr(buf, "\r\n\r\n");
  char *out = strdup(body ? body + 4 : "");
  free(buf);
  return out;
}

/* GET a JSON route; its "count" (or array length of `key`) or -1. */
static long get_json_count(const char *path, const char *key) {
  int st;
  char *b = http_get(path, &st);
  json_t *j = b && st == 200 ? json_loads(b, 0, NULL) : NULL;
  free(b);
  long count = -1;
  json_t *arr = j ? json_object_get(j, key) : NULL;
  if (json_is_array(arr)) {
    count = (long)json_array_size(arr);
    json_t *c = json_object_get(j, "count");
    if (c && json_integer_value(c) != count)
      count = -1; /* "count" and the array disagree */
  }
  json_decref(j);
  return count;
}

static int poll_once(void) {
  int st;
  const char *bad = NULL;
  if (get_json_count("/debug/requests", "requests") < 0)
    bad = "/debug/requests";
  char *m = http_get("/metrics", &st);
  if (!m || st != 200 || !strstr(m, "h2t_requests_in_flight"))
    bad = "/metrics";
  free(m);
  if (get_json_count("/debug/recent", "recent") < 0)
    bad = "/debug/recent";
  pl.polls++;
  if (bad && pl.bad++ < 10)
    fprintf(stderr, "soak: GET %s failed\n", bad);
  return !bad;
}

/* Cancel the client requests of the cancel route from this thread. */
static void cancel_some(void) {
  h2t_inflight_info *in;
  size_t n;
  if (h2t_inflight_snapshot(&in, &n) != 0)
    return;
  uint64_t now = h2t_now_us();
  for (size_t i = 0; i < n; i++)
    if (in[i].kind == H2T_INFLIGHT_CLIENT && !in[i].canceled &&
        strstr(in[i].path, "cancel=1") && now - in[i].start_us > 20000) {
      int rc = h2t_inflight_cancel(in[i].id, "soak");
      if (rc == 0)
        pl.canceled++;
      else if (rc != H2T_ERR_NOT_FOUND && rc != H2T_ERR_STATE)
        pl.cancel_failed++;
    }
  h2t_inflight_info_free(in);
}

static void kill_peers(void) {
  for (unsigned i = 0; i < opt.servers; i++)
    if (peers[i].pid > 0)
      kill(peers[i].pid, SIGKILL);
}

static void *poller_main(void *arg) {
  uint64_t deadline = h2t_now_us() + (uint64_t)opt.deadline_s * 1000000;
  while (!atomic_load(&stopping)) {
    poll_once();
    cancel_some();
    if (h2t_now_us() > deadline) {
      fprintf(stderr, "soak: deadline of %u s passed with %llu of %llu done; "
                      "in flight:\n",
              opt.deadline_s, (unsigned long long)atomic_load(&done_total),
              (unsigned long long)opt.n);
      h2t_inflight_dump(2);
      kill_peers();
      _exit(1);
    }
    usleep(100000);
  }
  return NULL;
}

/* --- faults ------------------------------------------------------------- */

static struct {
  uint64_t kills, goaways, restart_failed;
  uint64_t killed_inflight; /* client requests to a peer as it was killed */
} ch;

/* Client requests in flight to 127.0.0.1:port, from the table. */
static uint64_t inflight_to(int port) {
  h2t_inflight_info *in;
  size_t n;
  uint64_t k = 0;
  char auth[32];
  snprintf(auth, sizeof auth, "127.0.0.1:%d", port);
  if (h2t_inflight_snapshot(&in, &n) != 0)
    return 0;
  for (size_t i = 0; i < n; i++)
    k += in[i].kind == H2T_INFLIGHT_CLIENT && !strcmp(in[i].authority, auth);
  h2t_inflight_info_free(in);
  return k;
}

static void *chaos_main(void *arg) {
  uint64_t next = opt.fault_every;
  unsigned k = 0;
  while (!atomic_load(&stopping)) {
    if (!opt.fault_every || atomic_load(&done_total) < next) {
      usleep(5000);
      continue;
    }
    next += opt.fault_every;
    unsigned i = k % opt.servers;
    int graceful = k++ % 2;
    if (graceful) {
      h2t_test_stop(peers[i].pid); /* SIGTERM: GOAWAY, drain, exit */
      ch.goaways++;
    } else {
      ch.killed_inflight += inflight_to(peers[i].port);
      kill(peers[i].pid, SIGKILL);
      h2t_test_stop(peers[i].pid); /* reaps it */
      ch.kills++;
    }
    atomic_store(&peers[i].pid, -1);
    atomic_store(&peers[i].pid, peer_start((int)i));
    if (peers[i].pid < 0) {
      ch.restart_failed++;
      fprintf(stderr, "soak: h2serve %u did not restart on port %d\n", i,
              peers[i].port);
    }
  }
  return NULL;
}

/* --- report ---------------------------------------------------------------- */

static long max_of(const long *v, size_t from, size_t to) {
  long m = 0;
  for (size_t i = from; i < to; i++)
    m = v[i] > m ? v[i] : m;
  return m;
}

static int cmp_long(const void *a, const void *b) {
  long x = *(const long *)a, y = *(const long *)b;
  return (x > y) - (x < y);
}

static long median_of(const long *v, size_t from, size_t to) {
  if (to <= from)
    return 0;
  long *t = malloc((to - from) * sizeof *t);
  if (!t)
    abort();
  memcpy(t, v + from, (to - from) * sizeof *t);
  qsort(t, to - from, sizeof *t, cmp_long);
  long m = t[(to - from) / 2];
  free(t);
  return m;
}

/* The first and the last quarter's medians after the warm-up, printed; 1
 * when the last grew by more than tol percent (tol 0: only printed). */
static int trend(const char *what, const long *v, size_t n, double tol) {
  size_t from = n * opt.warmup_pct / 100, span = n - from;
  long first = median_of(v, from, from + span / 4);
  long last = median_of(v, n - span / 4, n);
  double grew = first ? 100.0 * (last - first) / first : 0.0;
  printf("soak: %s kB: start %ld, after warm-up %ld, peak %ld, end %ld; "
         "median of the first quarter %ld, of the last %ld (%+.1f%%)\n",
         what, v[0], v[from], max_of(v, 0, n), v[n - 1], first, last, grew);
  if (tol > 0 && span >= 8 && last > first * (1 + tol / 100)) {
    printf("soak: FAIL: %s grew %.1f%% (more than %.0f%%)\n", what, grew, tol);
    return 1;
  }
  return 0;
}

static void usage(FILE *f) {
  fprintf(f,
          "usage: h2t_soak [options]\n"
          "  -n N              requests in all (default 20000)\n"
          "  --conns C         max connections per origin (default 100)\n"
          "  --window W        requests kept in flight (default 600)\n"
          "  --streams S       streams the in-process server allows (4)\n"
          "  --servers K       h2serve processes (default 3, at most 8)\n"
          "  --fault-every F   kill or GOAWAY one h2serve every F requests\n"
          "                    (default n/20; 0: never)\n"
          "  --deadline S      fail after S seconds (default 600)\n"
          "  --warmup P        ignore the first P%% for the heap and RSS\n"
          "                    (default 10)\n"
          "  --heap-tol P      allowed growth of the library's heap in %%\n"
          "                    (default 10; 0: only printed)\n"
          "  --rss-tol P       allowed RSS growth in %% (default 5; 0: only\n"
          "                    report it)\n");
}

static int parse(int argc, char **argv) {
  static const struct option lo[] = {
      {"conns", 1, 0, 'c'},    {"window", 1, 0, 'w'}, {"servers", 1, 0, 's'},
      {"streams", 1, 0, 'S'},  {"fault-every", 1, 0, 'f'},
      {"deadline", 1, 0, 'd'}, {"warmup", 1, 0, 'W'}, {"rss-tol", 1, 0, 'r'},
      {"heap-tol", 1, 0, 'H'},
      {"help", 0, 0, 'h'},     {0, 0, 0, 0}};
  int ch_, fault_set = 0;
  while ((ch_ = getopt_long(argc, argv, "n:h", lo, NULL)) != -1) {
    char *end = NULL;
    unsigned long long v = optarg ? strtoull(optarg, &end, 10) : 0;
    if (optarg && (*end || !*optarg))
      ch_ = '?';
    switch (ch_) {
    case 'n': opt.n = v; break;
    case 'c': opt.conns = (unsigned)v; break;
    case 'w': opt.window = (unsigned)v; break;
    case 's': opt.servers = (unsigned)v; break;
    case 'S': opt.streams = (unsigned)v; break;
    case 'f': opt.fault_every = v; fault_set = 1; break;
    case 'd': opt.deadline_s = (unsigned)v; break;
    case 'W': opt.warmup_pct = (unsigned)v; break;
    case 'r': opt.rss_tol = (double)v; break;
    case 'H': opt.heap_tol = (double)v; break;
    case 'h': usage(stdout); exit(0);
    default: usage(stderr); return -1;
    }
  }
  if (optind != argc || !opt.n || !opt.window || !opt.conns || !opt.streams ||
      !opt.servers || opt.servers > MAX_SERVERS || opt.warmup_pct > 50) {
    usage(stderr);
    return -1;
  }
  if (!fault_set)
    opt.fault_every = opt.n / 20;
  return 0;
}

int main(int argc, char **argv) {
  if (parse(argc, argv) != 0)
    return 2;
  signal(SIGPIPE, SIG_IGN);
  int failed = 0;

  /* The endpoint first: it turns the table on before any request. */
  h2t_diag *diag;
  h2t_diag_config dc = {H2T_DIAG_CONFIG_INIT, .listen = "127.0.0.1:0"};
  if (h2t_diag_start(&diag, &dc) != 0) {
    fprintf(stderr, "soak: cannot start the endpoint\n");
    return 1;
  }
  diag_port = h2t_diag_port(diag);

  h2t_server_config sc = {H2T_SERVER_CONFIG_INIT,
                          .max_concurrent_streams = opt.streams,
                          .mem = &counting_mem};
  h2t_listen_opts lo = {H2T_LISTEN_OPTS_INIT};
  if (h2t_server_new(&srv, &sc) != 0 || h2t_server_listen(srv, &lo) < 0) {
    fprintf(stderr, "soak: cannot start the server\n");
    return 1;
  }
  h2t_server_handle(srv, "/ok", handle_ok, NULL);
  h2t_server_handle(srv, "/rst", handle_rst, NULL);
  h2t_server_handle(srv, "/stall", handle_stall, NULL);
  int port = h2t_server_port(srv, 0);
  pthread_create(&srv_thread, NULL, server_main, NULL);

  for (unsigned i = 0; i < opt.servers; i++) {
    peers[i].port = h2t_test_free_port();
    snprintf(log_path[i], sizeof log_path[i], "%s/h2serve%u.log",
             h2t_test_tmpdir(), i);
    atomic_store(&peers[i].pid, peer_start((int)i));
    if (peers[i].pid < 0) {
      fprintf(stderr, "soak: cannot start h2serve\n");
      return 1;
    }
    snprintf(cl.urls[RT_COUNT + 2 * i], sizeof cl.urls[0],
             "http://127.0.0.1:%d/delay?ms=20", peers[i].port);
    snprintf(cl.urls[RT_COUNT + 2 * i + 1], sizeof cl.urls[0],
             "http://127.0.0.1:%d/bytes?n=%d", peers[i].port, PEER_BYTES);
  }
  snprintf(cl.urls[RT_OK], sizeof cl.urls[0], "http://127.0.0.1:%d/ok", port);
  snprintf(cl.urls[RT_RST], sizeof cl.urls[0], "http://127.0.0.1:%d/rst", port);
  snprintf(cl.urls[RT_STALL], sizeof cl.urls[0], "http://127.0.0.1:%d/stall",
           port);
  snprintf(cl.urls[RT_CANCEL], sizeof cl.urls[0],
           "http://127.0.0.1:%d/stall?cancel=1", port);

  h2t_client_config cc = {H2T_CLIENT_CONFIG_INIT,
                          .max_conns_per_origin = opt.conns,
                          .mem = &counting_mem};
  if (h2t_client_new(&cl.c, &cc) != 0) {
    fprintf(stderr, "soak: cannot make the client\n");
    return 1;
  }
  printf("soak: %llu requests, window %u, %u conns per origin, server "
         "streams %u, %u h2serve, a fault every %llu requests\n",
         (unsigned long long)opt.n, opt.window, opt.conns, opt.streams,
         opt.servers, (unsigned long long)opt.fault_every);
  printf("soak: routes (per mille): rst %u, stall %u, cancel %u, peer %u, "
         "ok the rest\n",
         route_permille[RT_RST], route_permille[RT_STALL],
         route_permille[RT_CANCEL], route_permille[RT_PEER]);
  fflush(stdout);

  cl.sample_every = opt.n / 200 ? opt.n / 200 : 1;
  cl.slots = calloc(opt.window, sizeof *cl.slots);
  cl.t0 = h2t_now_us();
  sample();
  pthread_t poller, chaos;
  pthread_create(&poller, NULL, poller_main, NULL);
  pthread_create(&chaos, NULL, chaos_main, NULL);
  for (unsigned i = 0; i < opt.window && cl.submitted < opt.n; i++)
    submit_next(&cl.slots[i]);
  h2t_client_run(cl.c);
  double secs = (h2t_now_us() - cl.t0) / 1e6;

  atomic_store(&stopping, 1);
  pthread_join(chaos, NULL);
  pthread_join(poller, NULL);

  /* The server side of the last resets may still be closing. */
  size_t left = 0;
  for (int i = 0; i < 500; i++) {
    h2t_inflight_info *in;
    if (h2t_inflight_snapshot(&in, &left) == 0)
      h2t_inflight_info_free(in);
    if (left == 0)
      break;
    usleep(10000);
  }
  long ep_left = get_json_count("/debug/requests", "requests");
  h2t_client_stats cs;
  h2t_client_stats_get(cl.c, &cs);

  /* --- report --- */
  printf("soak: %llu requests in %.1f s (%.0f req/s), %llu connections "
         "opened, at most %u open, %llu retries\n",
         (unsigned long long)cl.done, secs, cl.done / secs,
         (unsigned long long)cs.conns_opened, cl.peak_conns,
         (unsigned long long)cs.retries);
  for (int r = 0; r < RT_COUNT; r++) {
    printf("soak:   %-6s", route_name[r]);
    for (int e = 0; e < NERR; e++)
      if (cl.count[r][e])
        printf(" %s %llu", e ? h2t_errname(-7000 - e) : "ok",
               (unsigned long long)cl.count[r][e]);
    printf("\n");
  }
  printf("soak: faults: %llu killed (with %llu requests in flight to them), "
         "%llu GOAWAY, %llu server-side stall closes, %llu canceled from the "
         "poller\n",
         (unsigned long long)ch.kills,
         (unsigned long long)ch.killed_inflight,
         (unsigned long long)ch.goaways,
         (unsigned long long)atomic_load(&stall_closed),
         (unsigned long long)pl.canceled);
  printf("soak: endpoint polled %llu times, %llu failed\n",
         (unsigned long long)pl.polls, (unsigned long long)pl.bad);

  failed |= trend("heap", cl.heap, cl.nrss, opt.heap_tol);
  failed |= trend("rss", cl.rss, cl.nrss, opt.rss_tol);
  printf("soak: h2serve rss peak %ld kB\n", max_of(cl.peer_rss, 0, cl.nrss));

  if (cl.done != opt.n || cl.submitted != opt.n) {
    printf("soak: FAIL: %llu submitted, %llu done, %llu wanted\n",
           (unsigned long long)cl.submitted, (unsigned long long)cl.done,
           (unsigned long long)opt.n);
    failed = 1;
  }
  if (cl.unexplained || cl.twice || cl.bad_body || cl.submit_failed) {
    printf("soak: FAIL: %llu unexplained outcomes, %llu second on_done, "
           "%llu bad bodies, %llu failed submits\n",
           (unsigned long long)cl.unexplained, (unsigned long long)cl.twice,
           (unsigned long long)cl.bad_body,
           (unsigned long long)cl.submit_failed);
    failed = 1;
  }
  if (left || ep_left != 0) {
    printf("soak: FAIL: table not empty at the end: %zu entries, endpoint "
           "count %ld\n",
           left, ep_left);
    h2t_inflight_dump(1);
    failed = 1;
  }
  if (pl.bad || !pl.polls || ch.restart_failed) {
    printf("soak: FAIL: %llu failed polls of %llu, %llu failed restarts\n",
           (unsigned long long)pl.bad, (unsigned long long)pl.polls,
           (unsigned long long)ch.restart_failed);
    failed = 1;
  }
  if (opt.fault_every && opt.n >= 2 * opt.fault_every &&
      (!ch.kills || !ch.goaways)) {
    printf("soak: FAIL: faults asked for but not all injected\n");
    failed = 1;
  }
  h2t_client_del(cl.c);
  h2t_server_shutdown_async(srv);
  pthread_join(srv_thread, NULL);
  h2t_server_del(srv);
  /* Every block the client and the server took through h2t_mem is back. */
  long long lost = atomic_load(&heap_bytes), lost_n = atomic_load(&heap_blocks);
  printf("soak: after the client and the server were deleted: %lld blocks, "
         "%lld bytes still allocated\n",
         lost_n, lost);
  if (lost || lost_n) {
    printf("soak: FAIL: the library leaked %lld blocks (%lld bytes)\n",
           lost_n, lost);
    failed = 1;
  }
  h2t_diag_stop(diag);
  for (unsigned i = 0; i < opt.servers; i++)
    if (peers[i].pid > 0)
      h2t_test_stop(peers[i].pid);
  free(cl.slots);
  free(cl.rss);
  free(cl.peer_rss);
  free(cl.heap);
  printf("soak: %s\n", failed ? "FAILED" : "passed");
  return failed;
}
