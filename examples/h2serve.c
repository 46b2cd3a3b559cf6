/*
 * h2serve: a traced HTTP/2 server on the public API.
 *
 *   h2serve (--h2c | --tls CERT KEY) --port P [--address A] [--root DIR]
 *           [--writer reused|spawn|inline] [--max-streams N]
 *           [--shed-inflight N] [--shed-503] [--max-conns N] [--quiet]
 *           [--delay-scale K] [--header-timeout MS] [--body-timeout MS]
 *           [--stream-idle-timeout MS] [--body-conn-budget BYTES]
 *           [--body-server-budget BYTES]
 *           [--diag ADDR:PORT [--diag-token TOKEN]] [--threads N]
 *
 * Serves static files from DIR (small files cached in memory, revalidated
 * at most once a second), /echo (streams the request body back),
 * /delay?ms=N (answers after N ms from a timer, without holding up other
 * streams), /bytes?n=N (N bytes from a generator, with back-pressure) and
 * /proxy?to=URL (asks URL with an h2t_client on the same loop, in the
 * incoming request's W3C trace, and answers with its status and body: two
 * h2serve make a chain whose trace id both show).
 * SIGINT/SIGTERM shut down gracefully.  --threads N serves on N loops
 * (h2t_server_config.threads): handlers then run on N threads, so the file
 * cache is behind a lock and timers go on the request's own loop.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <ev.h>
#include <h2trace/client.h>
#include <h2trace/diag.h>
#include <h2trace/inflight.h>
#include <h2trace/server.h>
#include <h2trace/version.h>

#define CACHE_MAX_FILE (1u << 20)
#define CACHE_BUCKETS 256
#define ECHO_MAX (64u << 20)

static void usage(FILE *f) {
  fprintf(f,
          "usage: h2serve (--h2c | --tls CERT KEY) --port P [options]\n"
          "  --address A        listen address (default 127.0.0.1; IPv6 ok)\n"
          "  --root DIR         serve files from DIR (default .)\n"
          "  --writer MODE      reused (default), spawn or inline\n"
          "  --writer-spin US   the reused writer stays awake US microseconds\n"
          "                     after a write before sleeping (default 0)\n"
          "  --max-streams N    advertised max concurrent streams (default 100)\n"
          "  --shed-inflight N  shed requests beyond N in flight\n"
          "  --shed-503         shed with a 503 instead of REFUSED_STREAM\n"
          "  --max-conns N      at N connections, close one without a request\n"
          "                     to make room, else close the newcomer\n"
          "  --header-timeout MS   a header block not complete in MS: close\n"
          "                     (default 30000; 0: off)\n"
          "  --body-timeout MS  reset a request body the client stalls for MS\n"
          "                     (default 60000; 0: off)\n"
          "  --stream-idle-timeout MS  reset a response the client does not\n"
          "                     read for MS (default 60000; 0: off)\n"
          "  --body-conn-budget BYTES  request body buffered per connection\n"
          "                     for handlers that have not read it (16 MiB)\n"
          "  --body-server-budget BYTES  the same for the server (256 MiB)\n"
          "  --threads N        serve on N loops, one per thread (default 1;\n"
          "                     /proxy needs 1)\n"
          "  --quiet            print nothing but errors\n"
          "  --delay-scale K    /delay?ms=N sleeps N*K ms: a replica K times\n"
          "                     slower than its peers (h2bench saturate)\n"
          "  --diag ADDR:PORT   diagnostics endpoint (GET /debug/requests,\n"
          "                     /metrics...; loopback only) and SIGUSR1\n"
          "                     in-flight report on stderr\n"
          "  --diag-token T     bearer token that allows POST .../cancel\n"
          "  --diag-cors ORIGIN a web page of ORIGIN (http://127.0.0.1:9901)\n"
          "                     may read the endpoint and cancel (repeat)\n"
          "  --diag-show-query  show query strings (redacted by default)\n"
          "  --help, --version\n"
          "routes: /echo, /delay?ms=N, /bytes?n=N, /proxy?to=URL (last\n"
          "        parameter; URL may be %%-encoded), anything else: a file\n");
}

static int bad(const char *fmt, const char *arg) {
  fprintf(stderr, "h2serve: ");
  fprintf(stderr, fmt, arg);
  fputc('\n', stderr);
  usage(stderr);
  return 2;
}

static int parse_u32(const char *s, uint32_t max, uint32_t *out) {
  char *end;
  if (!s || !*s || *s == '-')
    return -1;
  errno = 0;
  unsigned long v = strtoul(s, &end, 10);
  if (errno || *end || v > max)
    return -1;
  *out = (uint32_t)v;
  return 0;
}

/* Query parameter `name` as an unsigned number; def if absent or bad. */
static unsigned long long query_num(const char *path, const char *name,
                                    unsigned long long def) {
  const char *q = strchr(path, '?');
  size_t nl = strlen(name);
  while (q) {
    q++;
    if (!strncmp(q, name, nl) && q[nl] == '=') {
      char *end;
      unsigned long long v = strtoull(q + nl + 1, &end, 10);
      return (end != q + nl + 1 && (*end == '\0' || *end == '&')) ? v : def;
    }
    q = strchr(q, '&');
  }
  return def;
}

/* ---- static files ------------------------------------------------------ */

typedef struct blob {
  atomic_int refs; /* taken and dropped on any worker's thread */
  size_t len;
  uint8_t data[];
} blob;

typedef struct centry {
  struct centry *next;
  char *path;
  blob *b;
  const char *ctype;
  time_t mtime;
  off_t size;
  char cl[24]; /* content-length, ready to send */
  ev_tstamp checked;
} centry;

typedef struct app {
  h2t_server *srv;
  struct ev_loop *loop;
  const char *root;
  pthread_mutex_t cache_mu; /* cache: handlers run on every worker */
  centry *cache[CACHE_BUCKETS];
  h2t_client *client; /* /proxy's, made at its first request */
  uint32_t threads;   /* --threads */
} app;

static void blob_unref(blob *b) {
  if (b && atomic_fetch_sub(&b->refs, 1) == 1)
    free(b);
}

static const char *ctype_of(const char *path) {
  static const struct { const char *ext, *type; } types[] = {
      {".html", "text/html"},        {".htm", "text/html"},
      {".txt", "text/plain"},        {".css", "text/css"},
      {".js", "text/javascript"},    {".json", "application/json"},
      {".png", "image/png"},         {".jpg", "image/jpeg"},
      {".svg", "image/svg+xml"},     {".ico", "image/x-icon"}};
  const char *dot = strrchr(path, '.');
  if (dot && !strchr(dot, '/'))
    for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
      if (!strcasecmp(dot, types[i].ext))
        return types[i].type;
  return "application/octet-stream";
}

static int hexval(int c) {
  if (c >= '0' && c <= '9')
    return c - '0';
  if (c >= 'a' && c <= 'f')
    return c - 'a' + 10;
  if (c >= 'A' && c <= 'F')
    return c - 'A' + 10;
  return -1;
}

/* Decode the path part of a request target into out and refuse anything
 * that could leave the root: "..", NUL, backslashes.  0 or -1. */
static int safe_path(const char *target, char *out, size_t cap) {
  size_t n = 0;
  if (target[0] != '/')
    return -1;
  for (const char *p = target; *p && *p != '?' && *p != '#'; p++) {
    int ch = (unsigned char)*p;
    if (ch == '%') {
      int h = hexval(p[1]), l = h >= 0 ? hexval(p[2]) : -1;
      if (l < 0)
        return -1;
      ch = h * 16 + l;
      p += 2;
    }
    if (ch == 0 || ch == '\\' || n + 1 >= cap)
      return -1;
    out[n++] = (char)ch;
  }
  out[n] = '\0';
  for (const char *seg = out; seg; seg = strchr(seg + 1, '/')) {
    const char *s = seg + 1;
    size_t len = strcspn(s, "/");
    if (len == 2 && s[0] == '.' && s[1] == '.')
      return -1;
  }
  if (n == 0 || out[n - 1] == '/') {
    if (n + 10 >= cap)
      return -1;
    strcpy(out + n, "index.html");
  }
  return 0;
}

static unsigned hash_str(const char *s) {
  unsigned h = 2166136261u;
  for (; *s; s++)
    h = (h ^ (unsigned char)*s) * 16777619u;
  return h % CACHE_BUCKETS;
}

static void on_static_close(h2t_server_req *r, uint32_t code, void *user) {
  blob_unref(user);
}

/* A cached file for a response: the blob, with a reference for it, and
 * its header values, copied while the cache is locked. */
typedef struct cached {
  blob *b;
  const char *ctype;
  char cl[24];
} cached;

/* Fill c from e; 1, static_locked()'s answer for a cached file. */
static int cached_ref(centry *e, cached *c) {
  atomic_fetch_add(&e->b->refs, 1);
  c->b = e->b;
  c->ctype = e->ctype;
  memcpy(c->cl, e->cl, sizeof c->cl);
  return 1;
}

static void respond_blob(h2t_server_req *r, const cached *c, int head) {
  h2t_header h[2] = {{"content-type", c->ctype}, {"content-length", c->cl}};
  h2t_server_req_on(r, NULL, on_static_close, c->b);
  h2t_server_req_respond(r, 200, h, 2, head ? NULL : c->b->data,
                         head ? 0 : c->b->len, H2T_RESPOND_NOCOPY);
}

static void not_found(h2t_server_req *r, int status, const char *msg) {
  h2t_header h = {"content-type", "text/plain"};
  h2t_server_req_respond(r, status, &h, 1, msg, strlen(msg),
                         H2T_RESPOND_NOCOPY);
}

/* With the cache locked: 1 and *c for rel's cached file, or 0 when r
 * was answered (not found, an error, a file too large to cache). */
static int static_locked(app *a, h2t_server_req *r, const char *rel,
                         int head, cached *c);

static void handle_static(h2t_server_req *r, void *user) {
  app *a = user;
  const char *method = h2t_server_req_method(r);
  int head = !strcmp(method, "HEAD");
  if (!head && strcmp(method, "GET")) {
    not_found(r, 405, "method not allowed\n");
    return;
  }
  char rel[PATH_MAX];
  if (safe_path(h2t_server_req_path(r), rel, sizeof rel) != 0) {
    not_found(r, 400, "bad path\n");
    return;
  }
  /* The response is sent after the lock: under it, every worker's
   * responses would wait for one another. */
  cached c;
  pthread_mutex_lock(&a->cache_mu);
  int hit = static_locked(a, r, rel, head, &c);
  pthread_mutex_unlock(&a->cache_mu);
  if (hit)
    respond_blob(r, &c, head);
}

static int static_locked(app *a, h2t_server_req *r, const char *rel,
                         int head, cached *c) {
  unsigned hb = hash_str(rel);
  centry *e = a->cache[hb];
  while (e && strcmp(e->path, rel))
    e = e->next;
  ev_tstamp now = ev_now(h2t_server_req_loop(r));
  if (e && now - e->checked < 1.0)
    return cached_ref(e, c);
  char full[PATH_MAX * 2];
  snprintf(full, sizeof full, "%s%s", a->root, rel);
  struct stat st;
  if (e && stat(full, &st) == 0 && st.st_mtime == e->mtime &&
      st.st_size == e->size) {
    e->checked = now;
    return cached_ref(e, c);
  }
  int fd = open(full, O_RDONLY | O_CLOEXEC);
  if (fd < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    if (fd >= 0)
      close(fd);
    not_found(r, 404, "not found\n");
    return 0;
  }
  if (st.st_size <= CACHE_MAX_FILE) {
    blob *b = malloc(sizeof *b + (size_t)st.st_size + 1);
    ssize_t got = b ? pread(fd, b->data, (size_t)st.st_size, 0) : -1;
    close(fd);
    if (got != st.st_size) {
      free(b);
      not_found(r, 500, "read error\n");
      return 0;
    }
    atomic_init(&b->refs, 1);
    b->len = (size_t)got;
    if (!e) {
      e = calloc(1, sizeof *e);
      if (!e || !(e->path = strdup(rel))) {
        free(e);
        free(b);
        not_found(r, 500, "out of memory\n");
        return 0;
      }
      e->next = a->cache[hb];
      a->cache[hb] = e;
    }
    blob_unref(e->b);
    e->b = b;
    e->ctype = ctype_of(rel);
    e->mtime = st.st_mtime;
    e->size = st.st_size;
    snprintf(e->cl, sizeof e->cl, "%zu", b->len);
    e->checked = now;
    return cached_ref(e, c);
  }
  h2t_header h[2] = {{"content-type", ctype_of(rel)}, {"content-length", NULL}};
  char cl[24];
  snprintf(cl, sizeof cl, "%lld", (long long)st.st_size);
  h[1].value = cl;
  if (head) {
    close(fd);
    h2t_server_req_respond(r, 200, h, 2, NULL, 0, 0);
    return 0;
  }
  h2t_server_req_respond_file(r, 200, h, 1, fd, 0, st.st_size);
  return 0;
}

static void cache_free(app *a) {
  for (int i = 0; i < CACHE_BUCKETS; i++)
    while (a->cache[i]) {
      centry *e = a->cache[i];
      a->cache[i] = e->next;
      blob_unref(e->b);
      free(e->path);
      free(e);
    }
}

/* ---- /echo: the request body streamed back -------------------------- */

typedef struct echo {
  uint8_t *buf;
  size_t len, off, cap;
  int eof;
} echo;

static int echo_body(h2t_server_req *r, const uint8_t *data, size_t len,
                     int eof, void *user) {
  echo *e = user;
  if (len) {
    if (e->off == e->len)
      e->off = e->len = 0;
    if (e->len + len > e->cap) {
      if (e->len + len > ECHO_MAX)
        return -1;
      size_t cap = e->cap ? e->cap : 16384;
      while (cap < e->len + len)
        cap *= 2;
      uint8_t *p = realloc(e->buf, cap);
      if (!p)
        return -1;
      e->buf = p;
      e->cap = cap;
    }
    memcpy(e->buf + e->len, data, len);
    e->len += len;
  }
  if (eof)
    e->eof = 1;
  h2t_server_req_resume(r);
  return 0;
}

static ssize_t echo_gen(h2t_server_req *r, uint8_t *buf, size_t len, int *eof,
                        void *user) {
  echo *e = user;
  size_t n = e->len - e->off;
  if (n > len)
    n = len;
  if (n) {
    memcpy(buf, e->buf + e->off, n);
    e->off += n;
  }
  if (e->off == e->len && e->eof)
    *eof = 1;
  return n || *eof ? (ssize_t)n : H2T_SERVER_BODY_DEFER;
}

static void echo_close(h2t_server_req *r, uint32_t code, void *user) {
  echo *e = user;
  free(e->buf);
  free(e);
}

static void handle_echo(h2t_server_req *r, void *user) {
  echo *e = calloc(1, sizeof *e);
  if (!e) {
    h2t_server_req_reset(r, 2 /* INTERNAL_ERROR */);
    return;
  }
  h2t_header h = {"content-type", "application/octet-stream"};
  h2t_server_req_on(r, echo_body, echo_close, e);
  h2t_server_req_respond_gen(r, 200, &h, 1, echo_gen, e);
}

/* ---- /delay?ms=N ----------------------------------------------------- */

static uint32_t g_delay_scale = 1; /* --delay-scale */

typedef struct delay {
  ev_timer t;
  h2t_server_req *r;
  struct ev_loop *loop;
  unsigned long long ms;
} delay;

static void delay_fire(struct ev_loop *loop, ev_timer *t, int revents) {
  delay *d = t->data;
  char body[64];
  int n = snprintf(body, sizeof body, "delayed %llu ms\n", d->ms);
  h2t_header h = {"content-type", "text/plain"};
  h2t_server_req_respond(d->r, 200, &h, 1, body, (size_t)n, 0);
}

static void delay_close(h2t_server_req *r, uint32_t code, void *user) {
  delay *d = user;
  ev_timer_stop(d->loop, &d->t);
  free(d);
}

static void handle_delay(h2t_server_req *r, void *user) {
  delay *d = calloc(1, sizeof *d);
  if (!d) {
    h2t_server_req_reset(r, 2);
    return;
  }
  d->ms = query_num(h2t_server_req_path(r), "ms", 0) * g_delay_scale;
  if (d->ms > 600000)
    d->ms = 600000;
  d->r = r;
  d->loop = h2t_server_req_loop(r); /* the request's worker, not main's */
  ev_timer_init(&d->t, delay_fire, d->ms / 1000.0, 0.);
  d->t.data = d;
  h2t_server_req_on(r, NULL, delay_close, d);
  h2t_server_req_set_status(r, "sleeping");
  ev_timer_start(d->loop, &d->t);
}

/* ---- /proxy?to=URL ---------------------------------------------------- */

/* One proxied request: freed when both its sides are over (the downstream
 * request's on_done and the served stream's on_close). */
typedef struct proxy {
  h2t_server_req *r; /* NULL once its stream closed */
  h2t_request *down; /* NULL once done */
  int status;
  char *body;
  size_t len, cap;
} proxy;

static int proxy_data(h2t_request *q, const uint8_t *data, size_t len,
                      void *user) {
  proxy *p = user;
  if (p->len + len > ECHO_MAX)
    return 1; /* cancel: too big to hold */
  if (p->len + len > p->cap) {
    size_t cap = (p->len + len) * 2;
    char *b = realloc(p->body, cap);
    if (!b)
      return 1;
    p->body = b;
    p->cap = cap;
  }
  memcpy(p->body + p->len, data, len);
  p->len += len;
  return 0;
}

static int proxy_headers(h2t_request *q, int status, const h2t_header *h,
                         size_t n, void *user) {
  ((proxy *)user)->status = status;
  return 0;
}

static void proxy_free(proxy *p) {
  free(p->body);
  free(p);
}

static void proxy_done(h2t_request *q, int error, void *user) {
  proxy *p = user;
  p->down = NULL;
  if (!p->r) { /* the client went away first */
    proxy_free(p);
    return;
  }
  h2t_header h = {"content-type", "text/plain"};
  if (error) {
    char msg[160];
    int n = snprintf(msg, sizeof msg, "proxy: %s\n", h2t_strerror(error));
    h2t_server_req_respond(p->r, 502, &h, 1, msg, (size_t)n, 0);
  } else
    h2t_server_req_respond(p->r, p->status, &h, 1, p->body, p->len, 0);
}

static void proxy_close(h2t_server_req *r, uint32_t code, void *user) {
  proxy *p = user;
  p->r = NULL;
  if (p->down)
    h2t_request_cancel(p->down); /* its on_done frees p */
  else
    proxy_free(p);
}

/* The value of the last query parameter `to`, %-decoded, in a new string. */
static char *query_to(const char *path) {
  const char *q = strchr(path, '?');
  const char *v = q ? strstr(q, "to=") : NULL;
  while (v && v[-1] != '?' && v[-1] != '&')
    v = strstr(v + 1, "to=");
  if (!v || !v[3])
    return NULL;
  v += 3;
  char *out = malloc(strlen(v) + 1), *o = out;
  if (!out)
    return NULL;
  for (; *v; v++) {
    unsigned x;
    if (*v == '%' && sscanf(v + 1, "%2x", &x) == 1 && v[1] && v[2]) {
      *o++ = (char)x;
      v += 2;
    } else
      *o++ = *v;
  }
  *o = '\0';
  return out;
}

static void handle_proxy(h2t_server_req *r, void *user) {
  app *a = user;
  h2t_header h = {"content-type", "text/plain"};
  char *url = query_to(h2t_server_req_path(r));
  if (!url) {
    h2t_server_req_respond(r, 400, &h, 1, "want /proxy?to=URL\n", 19, 0);
    return;
  }
  if (a->threads > 1) { /* its client lives on one loop: see usage */
    free(url);
    static const char msg[] = "/proxy needs --threads 1\n";
    h2t_server_req_respond(r, 501, &h, 1, msg, sizeof msg - 1, 0);
    return;
  }
  if (!a->client) {
    h2t_client_config cc = {H2T_CLIENT_CONFIG_INIT, .loop = a->loop};
    if (h2t_client_new(&a->client, &cc) != 0) {
      free(url);
      h2t_server_req_reset(r, 2);
      return;
    }
  }
  proxy *p = calloc(1, sizeof *p);
  if (!p) {
    free(url);
    h2t_server_req_reset(r, 2);
    return;
  }
  p->r = r;
  /* the downstream request continues this request's trace */
  h2t_trace_context tc;
  h2t_server_req_trace_context(r, &tc);
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = url, .parent = &tc,
                        .on_headers = proxy_headers, .on_data = proxy_data,
                        .on_done = proxy_done, .user = p};
  int rc = h2t_request_submit(a->client, &o, &p->down);
  free(url);
  if (rc != 0) {
    char msg[160];
    int n = snprintf(msg, sizeof msg, "proxy: %s\n", h2t_strerror(rc));
    proxy_free(p);
    h2t_server_req_respond(r, rc == H2T_ERR_BAD_URL ? 400 : 502, &h, 1, msg,
                           (size_t)n, 0);
    return;
  }
  h2t_server_req_on(r, NULL, proxy_close, p);
  h2t_server_req_set_status(r, "waiting for downstream");
}

/* ---- /bytes?n=N ------------------------------------------------------ */

typedef struct bytes_gen {
  unsigned long long left, sent;
} bytes_gen;

static ssize_t bytes_fill(h2t_server_req *r, uint8_t *buf, size_t len,
                          int *eof, void *user) {
  bytes_gen *g = user;
  size_t n = g->left < len ? (size_t)g->left : len;
  for (size_t i = 0; i < n; i++)
    buf[i] = (uint8_t)('a' + (g->sent + i) % 26);
  g->sent += n;
  g->left -= n;
  if (!g->left)
    *eof = 1;
  return (ssize_t)n;
}

static void bytes_close(h2t_server_req *r, uint32_t code, void *user) {
  free(user);
}

static void handle_bytes(h2t_server_req *r, void *user) {
  bytes_gen *g = calloc(1, sizeof *g);
  if (!g) {
    h2t_server_req_reset(r, 2);
    return;
  }
  g->left = query_num(h2t_server_req_path(r), "n", 0);
  char cl[24];
  snprintf(cl, sizeof cl, "%llu", g->left);
  h2t_header h[2] = {{"content-type", "application/octet-stream"},
                     {"content-length", cl}};
  h2t_server_req_on(r, NULL, bytes_close, g);
  if (!g->left)
    h2t_server_req_respond(r, 200, h, 2, NULL, 0, 0);
  else
    h2t_server_req_respond_gen(r, 200, h, 2, bytes_fill, g);
}

/* ---- main ------------------------------------------------------------- */

static h2t_server *g_srv;
static int g_quiet;

/* Tracing stays on: every server event is counted for the summary, in a
 * counter per thread (workers call it at once), summed after they stop. */
#define EVENT_SLOTS 260
static struct {
  _Alignas(64) atomic_ullong n;
} g_events[EVENT_SLOTS];
static atomic_int g_event_slots;
static _Thread_local atomic_ullong *t_events;

static void count_event(const h2t_event *ev, void *user) {
  if (!t_events) {
    int i = atomic_fetch_add(&g_event_slots, 1);
    t_events = &g_events[i < EVENT_SLOTS ? i : EVENT_SLOTS - 1].n;
  }
  /* relaxed: no other thread writes this slot (but the last, shared) */
  atomic_fetch_add_explicit(t_events, 1, memory_order_relaxed);
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents) {
  if (!g_quiet)
    fprintf(stderr, "h2serve: signal %d, shutting down\n", w->signum);
  h2t_server_shutdown(g_srv);
}

int main(int argc, char **argv) {
  int h2c = 0, tls = 0, have_port = 0;
  const char *cert = NULL, *key = NULL, *address = "127.0.0.1", *root = ".";
  uint32_t port = 0;
  const char *diag_listen = NULL, *diag_token = NULL; /* --diag */
  const char *diag_cors[16];
  size_t ndiag_cors = 0;
  int diag_show_query = 0;
  h2t_server_config cfg = {H2T_SERVER_CONFIG_INIT};
  for (int i = 1; i < argc; i++) {
    const char *o = argv[i];
    const char *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(o, "--help") || !strcmp(o, "-h")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(o, "--version")) {
      printf("h2serve %s\n", h2t_version());
      return 0;
    } else if (!strcmp(o, "--h2c")) {
      h2c = 1;
    } else if (!strcmp(o, "--tls")) {
      if (i + 2 >= argc)
        return bad("%s needs CERT and KEY", o);
      tls = 1;
      cert = argv[++i];
      key = argv[++i];
    } else if (!strcmp(o, "--quiet") || !strcmp(o, "-q")) {
      g_quiet = 1;
    } else if (!strcmp(o, "--shed-503")) {
      cfg.shed_action = H2T_SHED_503;
    } else if (!strcmp(o, "--diag-show-query")) {
      diag_show_query = 1;
    } else if (!v) {
      return bad("unknown option or missing value: %s", o);
    } else if (!strcmp(o, "--port")) {
      if (parse_u32(v, 65535, &port) != 0)
        return bad("bad port: %s", v);
      have_port = 1;
      i++;
    } else if (!strcmp(o, "--address")) {
      address = v;
      i++;
    } else if (!strcmp(o, "--root")) {
      root = v;
      i++;
    } else if (!strcmp(o, "--writer")) {
      if (h2t_writer_mode_parse(v, &cfg.writer) != 0)
        return bad("bad writer mode (reused, spawn, inline): %s", v);
      i++;
    } else if (!strcmp(o, "--max-streams")) {
      if (parse_u32(v, INT32_MAX, &cfg.max_concurrent_streams) != 0 ||
          !cfg.max_concurrent_streams)
        return bad("bad --max-streams: %s", v);
      i++;
    } else if (!strcmp(o, "--shed-inflight")) {
      if (parse_u32(v, UINT32_MAX, &cfg.shed_inflight) != 0 ||
          !cfg.shed_inflight)
        return bad("bad --shed-inflight: %s", v);
      i++;
    } else if (!strcmp(o, "--delay-scale")) {
      if (parse_u32(v, 1000, &g_delay_scale) != 0 || !g_delay_scale)
        return bad("bad --delay-scale (1 to 1000): %s", v);
      i++;
    } else if (!strcmp(o, "--diag")) {
      diag_listen = v;
      i++;
    } else if (!strcmp(o, "--diag-token")) {
      diag_token = v;
      i++;
    } else if (!strcmp(o, "--header-timeout") ||
               !strcmp(o, "--body-timeout") ||
               !strcmp(o, "--stream-idle-timeout")) {
      uint32_t ms;
      if (parse_u32(v, UINT32_MAX - 1, &ms) != 0)
        return bad("bad timeout (milliseconds, 0: off): %s", v);
      uint32_t *f = !strcmp(o, "--header-timeout") ? &cfg.header_timeout_ms
                    : !strcmp(o, "--body-timeout") ? &cfg.body_timeout_ms
                                                   : &cfg.stream_idle_timeout_ms;
      *f = ms ? ms : H2T_SERVER_UNLIMITED;
      i++;
    } else if (!strcmp(o, "--body-conn-budget")) {
      if (parse_u32(v, INT32_MAX, &cfg.body_conn_budget) != 0 ||
          cfg.body_conn_budget < 65535)
        return bad("bad --body-conn-budget (65535 to 2^31-1): %s", v);
      i++;
    } else if (!strcmp(o, "--body-server-budget")) {
      char *end;
      errno = 0;
      unsigned long long b = strtoull(v, &end, 10);
      if (errno || *end || !*v || *v == '-' || !b)
        return bad("bad --body-server-budget: %s", v);
      cfg.body_server_budget = b;
      i++;
    } else if (!strcmp(o, "--diag-cors")) {
      if (!v || !*v || ndiag_cors == sizeof diag_cors / sizeof diag_cors[0])
        return bad("bad --diag-cors (at most 16): %s", v ? v : "");
      diag_cors[ndiag_cors++] = v;
      i++;
    } else if (!strcmp(o, "--writer-spin")) {
      if (parse_u32(v, 10000, &cfg.writer_spin_us) != 0)
        return bad("bad --writer-spin (0 to 10000 us): %s", v);
      i++;
    } else if (!strcmp(o, "--threads")) {
      if (parse_u32(v, 256, &cfg.threads) != 0 || !cfg.threads)
        return bad("bad --threads (1 to 256): %s", v);
      i++;
    } else if (!strcmp(o, "--max-conns")) {
      if (parse_u32(v, UINT32_MAX, &cfg.max_conns) != 0 || !cfg.max_conns)
        return bad("bad --max-conns: %s", v);
      i++;
    } else {
      return bad("unknown option: %s", o);
    }
  }
  if (h2c == tls)
    return bad("%s", "give exactly one of --h2c or --tls CERT KEY");
  if ((diag_token || ndiag_cors || diag_show_query) && !diag_listen)
    return bad("%s", "--diag-token, --diag-cors, --diag-show-query need --diag");
  if (!have_port)
    return bad("%s", "--port is required (0: any free port)");
  struct stat st;
  if (stat(root, &st) != 0 || !S_ISDIR(st.st_mode))
    return bad("--root is not a directory: %s", root);
  char rootbuf[PATH_MAX];
  if (!realpath(root, rootbuf))
    return bad("--root: %s", root);

  signal(SIGPIPE, SIG_IGN);
  app a = {.root = rootbuf, .threads = cfg.threads ? cfg.threads : 1};
  pthread_mutex_init(&a.cache_mu, NULL);
  a.loop = ev_default_loop(0);
  cfg.loop = a.loop;
  /* Every named hook rather than `any`: the same events, but a chain of one
   * plain trace is called directly instead of through the general walk. */
  h2t_server_trace tr;
  h2t_server_trace_set_all(&tr, count_event, NULL);
  cfg.trace = &tr;
  int rc = h2t_server_new(&a.srv, &cfg);
  if (rc != 0) {
    fprintf(stderr, "h2serve: %s\n", h2t_strerror(rc));
    return 1;
  }
  g_srv = a.srv;
  /* Routes before listening: with --threads, workers take requests at once
   * and read the routes without a lock. */
  h2t_server_handle(a.srv, "/", handle_static, &a);
  h2t_server_handle(a.srv, "/echo", handle_echo, &a);
  h2t_server_handle(a.srv, "/delay", handle_delay, &a);
  h2t_server_handle(a.srv, "/bytes", handle_bytes, &a);
  h2t_server_handle(a.srv, "/proxy", handle_proxy, &a);
  h2t_listen_opts lo = {H2T_LISTEN_OPTS_INIT, .address = address,
                        .port = (uint16_t)port, .cert_file = cert,
                        .key_file = key};
  int idx = h2t_server_listen(a.srv, &lo);
  if (idx < 0) {
    fprintf(stderr, "h2serve: cannot listen on %s port %u: %s\n", address,
            port, h2t_strerror(idx));
    h2t_server_del(a.srv);
    return idx == H2T_ERR_INVALID_ARG ? 2 : 1;
  }

  /* --- diagnostics endpoint and SIGUSR1 report (--diag) --- */
  h2t_diag *diag = NULL;
  if (diag_listen) {
    h2t_diag_config dc = {H2T_DIAG_CONFIG_INIT};
    dc.listen = diag_listen;
    dc.token = diag_token;
    dc.cors_origins = diag_cors;
    dc.ncors_origins = ndiag_cors;
    dc.show_query = diag_show_query;
    rc = h2t_diag_start(&diag, &dc);
    if (rc != 0) {
      fprintf(stderr, "h2serve: --diag %s: %s%s\n", diag_listen,
              h2t_strerror(rc),
              rc == H2T_ERR_INVALID_ARG ? " (ADDR:PORT on a loopback address)"
                                        : "");
      h2t_server_del(a.srv);
      return rc == H2T_ERR_INVALID_ARG ? 2 : 1;
    }
    h2t_inflight_install_signal(-1);
    if (!g_quiet) {
      const char *colon = strrchr(diag_listen, ':');
      int hostlen = colon ? (int)(colon - diag_listen) : 0;
      const char *host = hostlen ? diag_listen : "127.0.0.1";
      if (!hostlen)
        hostlen = 9;
      printf("h2serve: diagnostics on http://%.*s:%u/debug/requests%s\n",
             hostlen, host, h2t_diag_port(diag),
             diag_token ? " (cancel allowed)" : "");
      printf("h2serve: web page on http://%.*s:%u/debug/ui\n", hostlen, host,
             h2t_diag_port(diag));
    }
  }
  /* --- end --diag --- */

  ev_signal sint, sterm;
  ev_signal_init(&sint, on_signal, SIGINT);
  ev_signal_init(&sterm, on_signal, SIGTERM);
  ev_signal_start(a.loop, &sint);
  ev_signal_start(a.loop, &sterm);
  ev_unref(a.loop);
  ev_unref(a.loop);

  if (!g_quiet) {
    int v6 = strchr(address, ':') != NULL;
    char loops[32] = ""; /* the banner of one loop stays as it was */
    if (a.threads > 1)
      snprintf(loops, sizeof loops, ", %u loops", a.threads);
    printf("h2serve: serving %s on %s://%s%s%s:%d (%s, writer %s%s)\n",
           rootbuf, tls ? "https" : "http", v6 ? "[" : "", address,
           v6 ? "]" : "", h2t_server_port(a.srv, idx), tls ? "tls" : "h2c",
           h2t_writer_mode_name(cfg.writer), loops);
    fflush(stdout);
  }
  h2t_server_run(a.srv);
  ev_ref(a.loop);
  ev_ref(a.loop);
  ev_signal_stop(a.loop, &sint);
  ev_signal_stop(a.loop, &sterm);
  h2t_server_stats st2;
  h2t_server_stats_get(a.srv, &st2);
  h2t_server_del(a.srv); /* joins the workers: their counts are final */
  unsigned long long events = 0;
  for (int i = 0; i < EVENT_SLOTS; i++)
    events += atomic_load(&g_events[i].n);
  if (!g_quiet)
    fprintf(stderr,
            "h2serve: stopped: %llu connections, %llu requests, %llu shed, "
            "%llu events traced\n",
            (unsigned long long)st2.conns_accepted,
            (unsigned long long)st2.requests,
            (unsigned long long)(st2.shed_refused + st2.shed_503 +
                                 st2.shed_conns),
            events);
  h2t_client_del(a.client);
  if (diag) { /* --diag */
    h2t_inflight_uninstall_signal();
    h2t_diag_stop(diag);
  }
  cache_free(&a);
  pthread_mutex_destroy(&a.cache_mu);
  return 0;
}
