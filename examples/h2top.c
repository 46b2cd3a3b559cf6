/*
 * h2top: a top-like view of the requests in flight in several processes,
 * read from their diagnostics endpoints (GET /debug/requests).
 *
 *   h2top --endpoints HOST:PORT[,HOST:PORT...] [--refresh 1s] [--token T]
 *         [--once | --json] [--sort age|state|host] [--filter TEXT]
 *
 * One thread, one poll() loop: the terminal and every endpoint's socket are
 * non-blocking, each fetch has a deadline, and a response that is slow, too
 * big or not what we expect becomes an error on that endpoint's line, never a
 * stall of the screen.  The endpoints speak plain HTTP/1.1, so a small client
 * here does (Connection: close, Content-Length or chunked or up to EOF).
 * It does not need the library at all: it only reads what the endpoint says.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <locale.h>
#include <netdb.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <curses.h>
#include <jansson.h>

#include <h2trace/version.h>

#include "cli.h"

#define PROG "h2top"
#define MAX_ENDPOINTS 64
#define MAX_HEADERS (64 * 1024)       /* response head */
#define MAX_RESPONSE (64u << 20)      /* 65536 rows of ~500 bytes, with room */
#define TEXT_MAX 160                  /* one cell, sanitized */

/* ---- time ------------------------------------------------------------- */

static uint64_t mono_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t cpu_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* "1s", "500ms", "250us", "1.5" (seconds); 0 or -1. */
static int parse_interval(const char *s, uint64_t *us) {
  char num[32];
  size_t n = strspn(s, "0123456789.");
  if (n == 0 || n >= sizeof num)
    return -1;
  memcpy(num, s, n);
  num[n] = '\0';
  uint64_t v;
  if (cli_parse_seconds(num, &v) != 0)
    return -1;
  const char *unit = s + n;
  if (!*unit || !strcmp(unit, "s"))
    *us = v;
  else if (!strcmp(unit, "ms"))
    *us = v / 1000;
  else if (!strcmp(unit, "us"))
    *us = v / 1000000;
  else
    return -1;
  return 0;
}

/* ---- text ------------------------------------------------------------- */

/* What came from the network goes to a terminal: printable ASCII only, so a
 * path or status cannot move the cursor or change colours. */
static const char *clean(char *buf, size_t len, const char *s) {
  size_t i = 0;
  if (!s)
    s = "";
  for (; s[i] && i + 1 < len; i++) {
    unsigned char ch = (unsigned char)s[i];
    buf[i] = ch >= 0x20 && ch < 0x7f ? (char)ch : '?';
  }
  buf[i] = '\0';
  return buf;
}

/* ---- endpoints and their HTTP/1.1 client ------------------------------- */

typedef enum { J_IDLE, J_CONNECT, J_SEND, J_RECV } job_phase;
typedef enum { JK_POLL, JK_HISTORY, JK_RECENT, JK_CANCEL } job_kind;

typedef struct job {
  job_phase phase;
  job_kind kind;
  int fd;
  uint64_t id; /* the request a history or cancel is about */
  char *req;
  size_t reqlen, reqoff;
  char *buf; /* the response, NUL-terminated */
  size_t len, cap;
  size_t body; /* where the body starts; 0 until the head is parsed */
  long long clen; /* -1: unknown */
  int chunked, status;
  int unreach; /* no connection at all, rather than a bad answer */
  uint64_t deadline;
  char err[200];
} job;

typedef struct row row;

typedef struct endpoint {
  char name[280]; /* as given */
  char host[280], port[8];
  struct sockaddr_storage addr;
  socklen_t alen;
  int resolved;
  job poll, act;
  char *body;  /* the last good /debug/requests, rows point into it */
  json_t *doc; /* the same, parsed by jansson for --json */
  row *rows;
  size_t nrows, cap;
  int ok;      /* the last poll succeeded */
  int tried;   /* a poll has ended at least once */
  int unreach; /* the last poll found no one to talk to */
  char err[200];
} endpoint;

struct row {
  endpoint *ep;
  size_t index; /* in the endpoint's "requests" */
  uint64_t id;
  int64_t age_us, state_age_us, conn, stream;
  const char *kind, *method, *authority, *path, *state, *status;
  const char *trace; /* W3C trace id (hex), "" when none */
  int canceled;
};

/* "host:port", "[v6]:port", an optional http:// in front and / behind. */
static int endpoint_parse(endpoint *ep, const char *s) {
  char tmp[280];
  if (!strncmp(s, "http://", 7))
    s += 7;
  size_t n = strcspn(s, "/");
  if (n == 0 || n >= sizeof tmp)
    return -1;
  memcpy(tmp, s, n);
  tmp[n] = '\0';
  snprintf(ep->name, sizeof ep->name, "%s", tmp);
  char *colon;
  if (tmp[0] == '[') {
    char *e = strchr(tmp, ']');
    if (!e || e[1] != ':')
      return -1;
    *e = '\0';
    snprintf(ep->host, sizeof ep->host, "%s", tmp + 1);
    colon = e + 1;
  } else {
    colon = strrchr(tmp, ':');
    if (!colon || strchr(tmp, ':') != colon)
      return -1;
    *colon = '\0';
    snprintf(ep->host, sizeof ep->host, "%s", tmp);
  }
  uint64_t port;
  if (!ep->host[0] || cli_parse_u64(colon + 1, 1, 65535, &port) != 0)
    return -1;
  snprintf(ep->port, sizeof ep->port, "%u", (unsigned)port);
  return 0;
}

/* Blocking, but only once per endpoint and, for the numeric addresses the
 * endpoint listens on (loopback), without any lookup. */
static int endpoint_resolve(endpoint *ep) {
  struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res;
  int rc = getaddrinfo(ep->host, ep->port, &hints, &res);
  if (rc != 0) {
    snprintf(ep->err, sizeof ep->err, "cannot resolve %.100s: %s", ep->host,
             gai_strerror(rc));
    return -1;
  }
  memcpy(&ep->addr, res->ai_addr, res->ai_addrlen);
  ep->alen = res->ai_addrlen;
  ep->resolved = 1;
  freeaddrinfo(res);
  return 0;
}

static void job_reset(job *j) {
  if (j->fd >= 0)
    close(j->fd);
  j->fd = -1;
  free(j->req);
  free(j->buf);
  j->req = j->buf = NULL;
  j->len = j->cap = 0;
  j->phase = J_IDLE;
}

static void job_fail(job *j, const char *fmt, const char *arg) {
  snprintf(j->err, sizeof j->err, fmt, arg);
}

/* Start METHOD PATH on ep; the job ends in job_step().  0 or -1 (j->err). */
static int job_start(endpoint *ep, job *j, job_kind kind, const char *method,
                     const char *path, const char *token, uint64_t timeout_us) {
  j->kind = kind;
  j->err[0] = '\0';
  j->len = j->body = 0;
  j->clen = -1;
  j->chunked = j->status = j->unreach = 0;
  if (!ep->resolved && endpoint_resolve(ep) != 0) {
    snprintf(j->err, sizeof j->err, "%s", ep->err);
    j->unreach = 1;
    return -1;
  }
  char auth[300] = "";
  if (token && *token)
    snprintf(auth, sizeof auth, "Authorization: Bearer %s\r\n", token);
  if (asprintf(&j->req,
               "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: h2top/%s\r\n"
               "Accept: application/json\r\n%s%sConnection: close\r\n\r\n",
               method, path, ep->name, H2T_VERSION, auth,
               strcmp(method, "POST") ? "" : "Content-Length: 0\r\n") < 0) {
    j->req = NULL;
    job_fail(j, "%s", "out of memory");
    return -1;
  }
  j->reqlen = strlen(j->req);
  j->reqoff = 0;
  j->fd = socket(ep->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                 0);
  if (j->fd < 0) {
    job_fail(j, "socket: %s", strerror(errno));
    job_reset(j);
    return -1;
  }
  j->deadline = mono_us() + timeout_us;
  if (connect(j->fd, (struct sockaddr *)&ep->addr, ep->alen) != 0 &&
      errno != EINPROGRESS) {
    job_fail(j, "connect: %s", strerror(errno));
    j->unreach = 1;
    job_reset(j);
    return -1;
  }
  j->phase = J_CONNECT;
  return 0;
}

static short job_events(const job *j) {
  return j->phase == J_CONNECT || j->phase == J_SEND ? POLLOUT : POLLIN;
}

static int head_parse(job *j) {
  char *end = strstr(j->buf, "\r\n\r\n");
  if (!end)
    return j->len > MAX_HEADERS ? -1 : 0;
  j->body = (size_t)(end - j->buf) + 4;
  int minor;
  if (sscanf(j->buf, "HTTP/1.%d %3d", &minor, &j->status) != 2 ||
      j->status < 100 || j->status > 599)
    return -1;
  for (char *l = strstr(j->buf, "\r\n"); l && l < end; l = strstr(l, "\r\n")) {
    l += 2;
    if (!strncasecmp(l, "content-length:", 15)) {
      char *e;
      errno = 0;
      long long v = strtoll(l + 15, &e, 10);
      if (errno || v < 0 || (*e != '\r' && *e != ' '))
        return -1;
      j->clen = v;
    } else if (!strncasecmp(l, "transfer-encoding:", 18)) {
      const char *v = l + 18;
      while (*v == ' ')
        v++;
      j->chunked = !strncasecmp(v, "chunked", 7);
    }
  }
  if (j->clen > (long long)MAX_RESPONSE)
    return -2;
  return 1;
}

/* In place; -1 when malformed or cut short. */
static int dechunk(job *j) {
  char *p = j->buf + j->body, *out = p, *end = j->buf + j->len;
  for (;;) {
    char *e;
    errno = 0;
    unsigned long long n = strtoull(p, &e, 16);
    if (e == p || errno)
      return -1;
    char *crlf = strstr(e, "\r\n");
    if (!crlf || crlf >= end)
      return -1;
    p = crlf + 2;
    if (n == 0)
      break;
    if (n > (unsigned long long)(end - p) || (size_t)(end - p) - n < 2)
      return -1;
    memmove(out, p, n);
    out += n;
    p += n + 2;
  }
  j->len = (size_t)(out - j->buf);
  j->buf[j->len] = '\0';
  return 0;
}

/* 1: finished (ok or j->err), 0: still going. */
static int job_step(job *j, short revents) {
  if (j->phase == J_CONNECT) {
    int e = 0;
    socklen_t el = sizeof e;
    if (getsockopt(j->fd, SOL_SOCKET, SO_ERROR, &e, &el) != 0)
      e = errno;
    if (e) {
      job_fail(j, "connect: %s", strerror(e));
      j->unreach = 1;
      return 1;
    }
    if (!(revents & (POLLOUT | POLLERR | POLLHUP)))
      return 0;
    j->phase = J_SEND;
  }
  if (j->phase == J_SEND) {
    while (j->reqoff < j->reqlen) {
      ssize_t n = send(j->fd, j->req + j->reqoff, j->reqlen - j->reqoff,
                       MSG_NOSIGNAL);
      if (n < 0) {
        if (errno == EAGAIN || errno == EINTR)
          return 0;
        job_fail(j, "send: %s", strerror(errno));
        return 1;
      }
      j->reqoff += (size_t)n;
    }
    j->phase = J_RECV;
    return 0;
  }
  if (j->phase != J_RECV || !(revents & (POLLIN | POLLERR | POLLHUP)))
    return 0;
  for (;;) {
    if (j->cap - j->len < 65536 + 1) {
      size_t cap = j->cap ? j->cap * 2 : 256 * 1024;
      if (cap > MAX_RESPONSE + 2 * 65536 + MAX_HEADERS)
        cap = MAX_RESPONSE + 2 * 65536 + MAX_HEADERS;
      if (cap - j->len < 65536 + 1) {
        job_fail(j, "response over %s", "64 MB");
        return 1;
      }
      char *nb = realloc(j->buf, cap);
      if (!nb) {
        job_fail(j, "%s", "out of memory");
        return 1;
      }
      j->buf = nb;
      j->cap = cap;
    }
    ssize_t n = recv(j->fd, j->buf + j->len, j->cap - j->len - 1, 0);
    if (n < 0) {
      if (errno == EAGAIN || errno == EINTR)
        return 0;
      job_fail(j, "recv: %s", strerror(errno));
      return 1;
    }
    j->len += (size_t)n;
    j->buf[j->len] = '\0';
    if (!j->body) {
      int h = head_parse(j);
      if (h < 0) {
        job_fail(j, "%s", h == -2 ? "response over 64 MB"
                                  : "not an HTTP/1.x response");
        return 1;
      }
    }
    if (j->body && j->clen >= 0 && !j->chunked &&
        j->len - j->body >= (size_t)j->clen) {
      j->len = j->body + (size_t)j->clen;
      j->buf[j->len] = '\0';
      return 1;
    }
    if (n == 0) {
      if (!j->body) {
        job_fail(j, "%s", j->len ? "connection closed in the response head"
                                 : "connection closed without a response");
        return 1;
      }
      if (j->clen >= 0 && !j->chunked) {
        job_fail(j, "%s", "connection closed before the whole body");
        return 1;
      }
      if (j->chunked && dechunk(j) != 0)
        job_fail(j, "%s", "bad chunked body");
      return 1;
    }
    if (j->len - j->body > MAX_RESPONSE) {
      job_fail(j, "response over %s", "64 MB");
      return 1;
    }
  }
}

static void job_timeout(job *j, uint64_t timeout_us) {
  char t[16];
  cli_fmt_ms(t, sizeof t, timeout_us);
  j->unreach = j->phase == J_CONNECT;
  snprintf(j->err, sizeof j->err, "timed out after %s %s", t,
           j->phase == J_CONNECT ? "connecting"
           : j->body             ? "reading the body"
           : j->len              ? "reading the response head"
                                 : "waiting for a response");
}

/* The endpoint's {"error":"..."} or the status alone. */
static void http_error(job *j) {
  json_t *o = json_loads(j->buf + j->body, 0, NULL);
  const char *m = json_string_value(json_object_get(o, "error"));
  char c[120];
  snprintf(j->err, sizeof j->err, "HTTP %d%s%s", j->status, m ? ": " : "",
           m ? clean(c, sizeof c, m) : "");
  json_decref(o);
}

/* ---- the table -------------------------------------------------------- */

typedef enum { SORT_AGE, SORT_STATE, SORT_HOST, SORT_COUNT_ } sort_key;
static const char *const sort_names[] = {"age", "state", "host"};

typedef struct app {
  endpoint eps[MAX_ENDPOINTS];
  size_t neps;
  const char *token;
  uint64_t refresh_us, timeout_us;
  sort_key sort;
  int want_doc; /* --json */
  int stale;    /* rows changed under the view: rebuild before any use */
  char filter[128];
  row **view;
  size_t nview, total;
  /* statistics of the last refresh */
  uint64_t parse_cpu_us, view_cpu_us, draw_cpu_us;
} app;

static const char *jstr(json_t *o, const char *k) {
  const char *s = json_string_value(json_object_get(o, k));
  return s ? s : "";
}

static int64_t jint(json_t *o, const char *k) {
  return (int64_t)json_integer_value(json_object_get(o, k));
}

/*
 * A JSON reader for the one document that comes every refresh from every
 * endpoint.  jansson builds a hash table per request object and spent 119 ms
 * of CPU on 4 x 2500 requests; this walks the text once, checks all of it is
 * JSON, decodes the strings it keeps in place and points the rows at them.
 */
typedef struct jr {
  char *p, *end;
  const char *err;
} jr;

static void jr_ws(jr *r) {
  while (r->p < r->end &&
         (*r->p == ' ' || *r->p == '\n' || *r->p == '\r' || *r->p == '\t'))
    r->p++;
}

static int jr_fail(jr *r, const char *what) {
  if (!r->err)
    r->err = what;
  return -1;
}

static int hexval(int c) {
  return c >= '0' && c <= '9'   ? c - '0'
         : c >= 'a' && c <= 'f' ? c - 'a' + 10
         : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                : -1;
}

static int jr_hex4(jr *r, unsigned *v) {
  if (r->end - r->p < 4)
    return -1;
  *v = 0;
  for (int i = 0; i < 4; i++) {
    int h = hexval((unsigned char)r->p[i]);
    if (h < 0)
      return -1;
    *v = *v << 4 | (unsigned)h;
  }
  r->p += 4;
  return 0;
}

/* At '"': decode in place (the text only shrinks) and NUL-terminate. */
static int jr_string(jr *r, char **out) {
  char *w = ++r->p;
  *out = w;
  while (r->p < r->end) {
    unsigned char c = (unsigned char)*r->p++;
    if (c == '"') {
      *w = '\0';
      return 0;
    }
    if (c < 0x20)
      return jr_fail(r, "control character in a string");
    if (c != '\\') {
      *w++ = (char)c;
      continue;
    }
    if (r->p >= r->end)
      break;
    c = (unsigned char)*r->p++;
    const char *esc = strchr("\"\\/bfnrt", c);
    if (c && esc) {
      *w++ = "\"\\/\b\f\n\r\t"[esc - "\"\\/bfnrt"];
      continue;
    }
    unsigned u, lo;
    if (c != 'u' || jr_hex4(r, &u) != 0)
      return jr_fail(r, "bad escape in a string");
    if (u >= 0xd800 && u < 0xdc00) {
      if (r->end - r->p < 6 || r->p[0] != '\\' || r->p[1] != 'u')
        return jr_fail(r, "lone surrogate in a string");
      r->p += 2;
      if (jr_hex4(r, &lo) != 0 || lo < 0xdc00 || lo > 0xdfff)
        return jr_fail(r, "bad surrogate pair in a string");
      u = 0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00);
    } else if (u >= 0xdc00 && u < 0xe000)
      return jr_fail(r, "lone surrogate in a string");
    if (u < 0x80)
      *w++ = (char)(u ? u : '?'); /* a NUL would cut the string short */
    else if (u < 0x800) {
      *w++ = (char)(0xc0 | u >> 6);
      *w++ = (char)(0x80 | (u & 0x3f));
    } else if (u < 0x10000) {
      *w++ = (char)(0xe0 | u >> 12);
      *w++ = (char)(0x80 | (u >> 6 & 0x3f));
      *w++ = (char)(0x80 | (u & 0x3f));
    } else {
      *w++ = (char)(0xf0 | u >> 18);
      *w++ = (char)(0x80 | (u >> 12 & 0x3f));
      *w++ = (char)(0x80 | (u >> 6 & 0x3f));
      *w++ = (char)(0x80 | (u & 0x3f));
    }
  }
  return jr_fail(r, "unterminated string");
}

/* A number, kept as an integer (fractions dropped, out of range clamped). */
static int jr_number(jr *r, int64_t *out) {
  char *s = r->p, *q = s;
  int digits = 0;
  if (q < r->end && *q == '-')
    q++;
  if (q < r->end && *q == '0')
    q++, digits = 1;
  else
    while (q < r->end && *q >= '0' && *q <= '9')
      q++, digits++;
  if (!digits)
    return jr_fail(r, "bad number");
  int frac = 0;
  if (q < r->end && *q == '.') {
    q++;
    if (q >= r->end || *q < '0' || *q > '9')
      return jr_fail(r, "bad number");
    while (q < r->end && *q >= '0' && *q <= '9')
      q++;
    frac = 1;
  }
  if (q < r->end && (*q == 'e' || *q == 'E')) {
    q++;
    if (q < r->end && (*q == '+' || *q == '-'))
      q++;
    if (q >= r->end || *q < '0' || *q > '9')
      return jr_fail(r, "bad number");
    while (q < r->end && *q >= '0' && *q <= '9')
      q++;
    frac = 1;
  }
  if (q >= r->end)
    return jr_fail(r, "truncated");
  /* the document ends in '}', so strtoll/strtod stop inside it */
  if (out) {
    if (frac) {
      double d = strtod(s, NULL);
      *out = d > 9e18 ? INT64_MAX : d < -9e18 ? INT64_MIN : (int64_t)d;
    } else
      *out = strtoll(s, NULL, 10);
  }
  r->p = q;
  return 0;
}

static int jr_value(jr *r, int depth);

static int jr_literal(jr *r, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(r->end - r->p) < n || memcmp(r->p, word, n))
    return jr_fail(r, "unexpected character");
  r->p += n;
  return 0;
}

/* At '{' or '[': every member or element through cb(key), or skipped. */
static int jr_container(jr *r, int depth,
                        int (*cb)(jr *, const char *key, void *), void *ctx) {
  char close = *r->p == '{' ? '}' : ']';
  if (depth > 32)
    return jr_fail(r, "nested too deep");
  r->p++;
  jr_ws(r);
  if (r->p < r->end && *r->p == close) {
    r->p++;
    return 0;
  }
  for (;;) {
    char *key = NULL;
    jr_ws(r);
    if (close == '}') {
      if (r->p >= r->end || *r->p != '"' || jr_string(r, &key) != 0)
        return jr_fail(r, "object key expected");
      jr_ws(r);
      if (r->p >= r->end || *r->p++ != ':')
        return jr_fail(r, "':' expected");
      jr_ws(r);
    }
    if ((cb ? cb(r, key, ctx) : jr_value(r, depth + 1)) != 0)
      return -1;
    jr_ws(r);
    if (r->p >= r->end)
      return jr_fail(r, "truncated");
    char c = *r->p++;
    if (c == close)
      return 0;
    if (c != ',')
      return jr_fail(r, close == '}' ? "',' or '}' expected"
                                     : "',' or ']' expected");
  }
}

static int jr_value(jr *r, int depth) {
  char *s;
  if (r->p >= r->end)
    return jr_fail(r, "truncated");
  switch (*r->p) {
  case '{':
  case '[':
    return jr_container(r, depth, NULL, NULL);
  case '"':
    return jr_string(r, &s);
  case 't':
    return jr_literal(r, "true");
  case 'f':
    return jr_literal(r, "false");
  case 'n':
    return jr_literal(r, "null");
  default:
    return jr_number(r, NULL);
  }
}

/* A string member, or "" for a null or other type (then it is skipped). */
static int jr_str_field(jr *r, const char **out) {
  char *s;
  if (r->p < r->end && *r->p == '"') {
    if (jr_string(r, &s) != 0)
      return -1;
    *out = s;
    return 0;
  }
  *out = "";
  return jr_value(r, 2);
}

static int jr_int_field(jr *r, int64_t *out) {
  if (r->p < r->end && (*r->p == '-' || (*r->p >= '0' && *r->p <= '9')))
    return jr_number(r, out);
  *out = 0;
  return jr_value(r, 2);
}

/* The members a row keeps; any other is checked and skipped. */
typedef enum { RF_STR, RF_INT, RF_U64, RF_BOOL } row_field_kind;
static const struct row_field {
  const char *name;
  size_t off;
  row_field_kind kind;
} row_fields[] = {
    {"id", offsetof(row, id), RF_U64},
    {"kind", offsetof(row, kind), RF_STR},
    {"method", offsetof(row, method), RF_STR},
    {"authority", offsetof(row, authority), RF_STR},
    {"age_us", offsetof(row, age_us), RF_INT},
    {"path", offsetof(row, path), RF_STR},
    {"trace_id", offsetof(row, trace), RF_STR},
    {"state", offsetof(row, state), RF_STR},
    {"status", offsetof(row, status), RF_STR},
    {"state_age_us", offsetof(row, state_age_us), RF_INT},
    {"stream", offsetof(row, stream), RF_INT},
    {"conn", offsetof(row, conn), RF_INT},
    {"canceled", offsetof(row, canceled), RF_BOOL},
};

static int row_member(jr *r, const char *k, void *ctx) {
  for (size_t i = 0; i < sizeof row_fields / sizeof row_fields[0]; i++) {
    const struct row_field *f = &row_fields[i];
    if (f->name[0] != k[0] || strcmp(f->name, k)) /* one strcmp, mostly */
      continue;
    void *field = (char *)ctx + f->off;
    int64_t v;
    switch (f->kind) {
    case RF_STR:
      return jr_str_field(r, field);
    case RF_INT:
      return jr_int_field(r, field);
    case RF_U64:
      if (jr_int_field(r, &v) != 0)
        return -1;
      *(uint64_t *)field = (uint64_t)v;
      return 0;
    case RF_BOOL:
      *(int *)field = r->p < r->end && *r->p == 't';
      return jr_value(r, 2);
    }
  }
  return jr_value(r, 2);
}

typedef struct rows_ctx {
  endpoint *ep;
  row *rows;
  size_t n, cap, index;
  int seen;
} rows_ctx;

static int rows_element(jr *r, const char *k, void *ctx) {
  rows_ctx *c = ctx;
  (void)k;
  size_t index = c->index++;
  if (r->p >= r->end || *r->p != '{')
    return jr_value(r, 2); /* not a request: ignored */
  if (c->n == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 1024;
    row *nr = realloc(c->rows, cap * sizeof *nr);
    if (!nr)
      return jr_fail(r, "out of memory");
    c->rows = nr;
    c->cap = cap;
  }
  row *w = &c->rows[c->n];
  *w = (row){.ep = c->ep, .index = index, .kind = "", .method = "",
             .authority = "", .path = "", .state = "", .status = "",
             .trace = ""};
  if (jr_container(r, 2, row_member, w) != 0)
    return -1;
  c->n++;
  return 0;
}

static int doc_member(jr *r, const char *k, void *ctx) {
  rows_ctx *c = ctx;
  if (!strcmp(k, "requests") && r->p < r->end && *r->p == '[') {
    c->seen = 1;
    c->n = 0;
    c->index = 0;
    return jr_container(r, 1, rows_element, c);
  }
  return jr_value(r, 1);
}

/* A good poll: keep the body (the rows point into it).  Returns 0 or -1
 * with ep->err. */
static int endpoint_take(endpoint *ep, job *j, int want_doc) {
  json_t *doc = NULL;
  if (want_doc) { /* --json: every member, as the endpoint gave it */
    json_error_t e;
    doc = json_loadb(j->buf + j->body, j->len - j->body, 0, &e);
    if (!doc) {
      char c[100];
      snprintf(ep->err, sizeof ep->err, "bad JSON: %s (line %d)",
               clean(c, sizeof c, e.text), e.line);
      return -1;
    }
  }
  rows_ctx c = {.ep = ep, .rows = ep->rows, .cap = ep->cap};
  jr r = {.p = j->buf + j->body, .end = j->buf + j->len};
  jr_ws(&r);
  int rc = r.p < r.end && *r.p == '{' ? jr_container(&r, 0, doc_member, &c)
                                      : jr_fail(&r, "not a JSON object");
  if (rc == 0) {
    jr_ws(&r);
    if (r.p != r.end)
      rc = jr_fail(&r, "more after the JSON object");
  }
  ep->rows = c.rows; /* grown or not, still ours */
  ep->cap = c.cap;
  if (rc == 0 && !c.seen)
    r.err = "no \"requests\" array in the answer", rc = -1;
  if (rc != 0) {
    json_decref(doc);
    snprintf(ep->err, sizeof ep->err, "bad JSON: %s at byte %zu", r.err,
             (size_t)(r.p - (j->buf + j->body)));
    ep->nrows = 0;
    return -1;
  }
  free(ep->body);
  ep->body = j->buf; /* the rows' strings */
  j->buf = NULL;
  j->cap = 0;
  json_decref(ep->doc);
  ep->doc = doc;
  ep->nrows = c.n;
  return 0;
}

static void endpoint_drop(endpoint *ep) {
  json_decref(ep->doc);
  ep->doc = NULL;
  free(ep->body);
  ep->body = NULL;
  ep->nrows = 0;
}

static int cmp_i64_desc(int64_t a, int64_t b) { return a < b ? 1 : a > b ? -1 : 0; }

static sort_key g_sort; /* qsort has no context argument */

static int row_cmp(const void *pa, const void *pb) {
  const row *a = *(row *const *)pa, *b = *(row *const *)pb;
  int c = 0;
  switch (g_sort) {
  case SORT_AGE:
    c = cmp_i64_desc(a->age_us, b->age_us);
    break;
  case SORT_STATE:
    c = cmp_i64_desc(a->state_age_us, b->state_age_us);
    break;
  case SORT_HOST:
    c = strcmp(a->ep->name, b->ep->name);
    if (!c)
      c = strcmp(a->authority, b->authority);
    if (!c)
      c = cmp_i64_desc(a->age_us, b->age_us);
    break;
  default:
    break;
  }
  if (!c)
    c = a->ep < b->ep ? -1 : a->ep > b->ep;
  if (!c)
    c = a->id < b->id ? -1 : a->id > b->id;
  return c;
}

static int row_matches(const row *r, const char *f) {
  if (!*f)
    return 1;
  char ids[24], target[2 * TEXT_MAX]; /* the columns as shown */
  snprintf(ids, sizeof ids, "%llu", (unsigned long long)r->id);
  snprintf(target, sizeof target, "%.*s%.*s", TEXT_MAX - 1, r->authority,
           TEXT_MAX - 1, r->path);
  /* the trace id too: filtering on it links one request's rows across
   * every endpoint it went through */
  const char *fields[] = {r->ep->name, ids,    r->kind,   r->state,
                          r->method,   target, r->status, r->trace};
  for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++)
    if (strcasestr(fields[i], f))
      return 1;
  return 0;
}

/* Merge, filter, sort.  0 or -1 (out of memory: the old view stays). */
static int view_build(app *a) {
  size_t total = 0;
  for (size_t i = 0; i < a->neps; i++)
    total += a->eps[i].nrows;
  row **v = malloc((total ? total : 1) * sizeof *v);
  if (!v)
    return -1;
  size_t n = 0;
  for (size_t i = 0; i < a->neps; i++)
    for (size_t k = 0; k < a->eps[i].nrows; k++)
      if (row_matches(&a->eps[i].rows[k], a->filter))
        v[n++] = &a->eps[i].rows[k];
  g_sort = a->sort;
  qsort(v, n, sizeof *v, row_cmp);
  free(a->view);
  a->view = v;
  a->nview = n;
  a->total = total;
  a->stale = 0;
  return 0;
}

/* The view points into the endpoints' rows, which a poll replaces. */
static void view_fresh(app *a) {
  if (a->stale && view_build(a) != 0)
    a->nview = 0; /* nothing rather than freed rows */
}

/* ---- plain and JSON snapshots ------------------------------------------ */

static void print_plain(app *a) {
  printf("%-21s %8s %-6s %7s %-16s %7s %-7s %-10s %s  %s\n", "ENDPOINT", "ID",
         "KIND", "AGE", "STATE", "IN-STATE", "METHOD", "CONN/STRM",
         "AUTHORITY+PATH", "STATUS");
  for (size_t i = 0; i < a->nview; i++) {
    const row *r = a->view[i];
    char age[16], sage[16], cs[32], ep[64], m[32], st[32], tgt[2 * TEXT_MAX],
        au[TEXT_MAX], pa[TEXT_MAX], status[TEXT_MAX];
    snprintf(cs, sizeof cs, "%lld/%lld", (long long)r->conn,
             (long long)r->stream);
    snprintf(tgt, sizeof tgt, "%s%s", clean(au, sizeof au, r->authority),
             clean(pa, sizeof pa, r->path));
    printf("%-21s %8llu %-6s %7s %-16s %7s %-7s %-10s %s  %s",
           clean(ep, sizeof ep, r->ep->name), (unsigned long long)r->id,
           r->kind, cli_fmt_ms(age, sizeof age, (uint64_t)r->age_us),
           clean(st, sizeof st, r->state),
           cli_fmt_ms(sage, sizeof sage, (uint64_t)r->state_age_us),
           clean(m, sizeof m, r->method), cs, tgt,
           clean(status, sizeof status, r->status));
    char tr[40];
    printf("%s%s\n", r->trace[0] ? "  trace=" : "",
           clean(tr, sizeof tr, r->trace));
  }
  for (size_t i = 0; i < a->neps; i++)
    if (!a->eps[i].ok)
      printf("# %s %s: %s\n", a->eps[i].name,
             a->eps[i].unreach ? "UNREACHABLE" : "ERROR", a->eps[i].err);
}

static int print_json(app *a) {
  json_t *eps = json_array(), *reqs = json_array();
  for (size_t i = 0; i < a->neps; i++) {
    endpoint *ep = &a->eps[i];
    json_t *o = json_pack("{s:s,s:b}", "endpoint", ep->name, "ok", ep->ok);
    if (ep->ok) {
      json_object_set_new(o, "count", json_integer((json_int_t)ep->nrows));
      json_object_set(o, "server_time_us",
                      json_object_get(ep->doc, "server_time_us"));
    } else {
      json_object_set_new(o, "error", json_string(ep->err));
      json_object_set_new(o, "unreachable", json_boolean(ep->unreach));
    }
    json_array_append_new(eps, o);
  }
  for (size_t i = 0; i < a->nview; i++) {
    const row *w = a->view[i];
    json_t *o =
        json_copy(json_array_get(json_object_get(w->ep->doc, "requests"), w->index));
    if (!o)
      continue;
    json_object_set_new(o, "endpoint", json_string(w->ep->name));
    json_array_append_new(reqs, o);
  }
  json_t *doc = json_pack("{s:o,s:o,s:s,s:i}", "endpoints", eps, "requests",
                          reqs, "sort", sort_names[a->sort], "count",
                          (int)a->nview);
  int rc = json_dumpf(doc, stdout, JSON_COMPACT) == 0 ? 0 : -1;
  putchar('\n');
  json_decref(doc);
  return rc;
}

/* ---- the screen --------------------------------------------------------- */

typedef enum { M_TABLE, M_CANCEL, M_FILTER, M_HISTORY } ui_mode;

enum { C_HEAD = 1, C_BAD, C_WARN, C_DIM, C_OK };

typedef struct ui {
  int on, color, paused, quit;
  ui_mode mode;
  char input[128];
  size_t ilen;
  size_t sel, top;
  const endpoint *sel_ep; /* the selection follows its request */
  uint64_t sel_id;
  const endpoint *target_ep; /* what k or Enter is about */
  uint64_t target_id;
  char msg[256];
  uint64_t msg_until;
  char **hist;
  size_t nhist, hist_top;
} ui;

static void ui_msg(ui *u, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void ui_msg(ui *u, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(u->msg, sizeof u->msg, fmt, ap);
  va_end(ap);
  u->msg_until = mono_us() + 5000000;
}

static void hist_free(ui *u) {
  for (size_t i = 0; i < u->nhist; i++)
    free(u->hist[i]);
  free(u->hist);
  u->hist = NULL;
  u->nhist = u->hist_top = 0;
}

static void hist_add(ui *u, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void hist_add(ui *u, const char *fmt, ...) {
  char line[512], c[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  char **h = realloc(u->hist, (u->nhist + 1) * sizeof *h);
  if (!h)
    return;
  u->hist = h;
  if ((h[u->nhist] = strdup(clean(c, sizeof c, line))))
    u->nhist++;
}

/* The request's detail from GET /debug/requests/ID (or /debug/recent). */
static void hist_show(ui *u, const endpoint *ep, json_t *o) {
  char t1[16], t2[16], t3[16];
  hist_free(u);
  hist_add(u, "Request %lld on %s  (Esc, q, h or Enter: back)",
           (long long)jint(o, "id"), ep->name);
  hist_add(u, "  %s %s %s%s  [%s]", jstr(o, "kind"), jstr(o, "method"),
           jstr(o, "authority"), jstr(o, "path"), jstr(o, "scheme"));
  if (*jstr(o, "trace_id"))
    hist_add(u, "  trace %s span %s parent %s", jstr(o, "trace_id"),
             jstr(o, "span_id"),
             *jstr(o, "parent_span_id") ? jstr(o, "parent_span_id") : "-");
  hist_add(u, "  state %s (%s) for %s, age %s, conn #%lld stream %lld",
           jstr(o, "state"), jstr(o, "state_text"),
           cli_fmt_ms(t1, sizeof t1, (uint64_t)jint(o, "state_age_us")),
           cli_fmt_ms(t2, sizeof t2, (uint64_t)jint(o, "age_us")),
           (long long)jint(o, "conn"), (long long)jint(o, "stream"));
  hist_add(u, "  status \"%s\", http %lld, %lld bytes in, %lld out",
           jstr(o, "status"), (long long)jint(o, "http_status"),
           (long long)jint(o, "bytes_in"), (long long)jint(o, "bytes_out"));
  if (json_is_true(json_object_get(o, "canceled")))
    hist_add(u, "  canceled: %s", jstr(o, "cancel_reason"));
  if (json_object_get(o, "outcome"))
    hist_add(u, "  finished: %s%s%s", jstr(o, "outcome"),
             *jstr(o, "error_text") ? ", " : "", jstr(o, "error_text"));
  hist_add(u, "%s", "");
  hist_add(u, "  %-10s %-18s %-26s %s", "AT", "STATE", "", "FOR");
  json_t *h = json_object_get(o, "history");
  int64_t start = jint(o, "start_us");
  size_t i;
  json_t *s;
  json_array_foreach(h, i, s) {
    int64_t at = jint(s, "entered_us") - start;
    const char *reason = jstr(s, "reason");
    hist_add(u, "  +%-9s %-18s %-26s %s%s%s",
             cli_fmt_ms(t1, sizeof t1, at > 0 ? (uint64_t)at : 0),
             jstr(s, "state"), jstr(s, "state_text"),
             cli_fmt_ms(t3, sizeof t3, (uint64_t)jint(s, "duration_us")),
             *reason ? "  reason: " : "", reason);
  }
  if (jint(o, "history_dropped"))
    hist_add(u, "  (%lld earlier steps dropped)",
             (long long)jint(o, "history_dropped"));
  u->mode = M_HISTORY;
}

static void put_cell(int y, int x, int w, const char *s, int right) {
  char c[TEXT_MAX * 2];
  if (w <= 0)
    return;
  clean(c, sizeof c, s);
  int len = (int)strlen(c);
  if (right && len < w)
    x += w - len;
  mvaddnstr(y, x, c, w);
}

static int state_attr(const ui *u, const row *r) {
  if (!u->color)
    return r->canceled ? A_BOLD : 0;
  if (r->canceled || !strcmp(r->state, "canceling"))
    return COLOR_PAIR(C_BAD) | A_BOLD;
  if (strstr(r->state, "flow_blocked") || !strcmp(r->state, "wait_stream") ||
      !strcmp(r->state, "retrying"))
    return COLOR_PAIR(C_WARN);
  return 0;
}

static void draw(app *a, ui *u) {
  uint64_t c0 = cpu_us();
  view_fresh(a);
  int H = LINES, W = COLS, y = 0;
  erase();
  if (u->mode == M_HISTORY) {
    if (u->hist_top + 1 > u->nhist)
      u->hist_top = u->nhist ? u->nhist - 1 : 0;
    for (size_t i = u->hist_top; i < u->nhist && y < H; i++, y++) {
      if (i == 0)
        attron(A_BOLD);
      mvaddnstr(y, 0, u->hist[i], W);
      attroff(A_BOLD);
    }
    refresh();
    a->draw_cpu_us = cpu_us() - c0;
    return;
  }
  /* title */
  char line[512], t[16];
  size_t nok = 0;
  for (size_t i = 0; i < a->neps; i++)
    nok += a->eps[i].ok;
  cli_fmt_ms(t, sizeof t, a->parse_cpu_us + a->view_cpu_us + a->draw_cpu_us);
  snprintf(line, sizeof line,
           "h2top - %zu in flight, %zu shown, %zu/%zu endpoints up, sort: %s%s%s%s"
           "  (cpu %s/refresh)",
           a->total, a->nview, nok, a->neps, sort_names[a->sort],
           a->filter[0] ? ", filter: " : "", a->filter,
           u->paused ? "  PAUSED" : "", t);
  attron(A_BOLD);
  mvaddnstr(y++, 0, line, W);
  attroff(A_BOLD);
  /* endpoints: the good ones on one line, each bad one on its own */
  move(y, 0);
  addnstr("up:", W);
  for (size_t i = 0; i < a->neps; i++)
    if (a->eps[i].ok) {
      char c[320];
      snprintf(c, sizeof c, " %s (%zu)", a->eps[i].name, a->eps[i].nrows);
      addnstr(c, W - getcurx(stdscr) > 0 ? W - getcurx(stdscr) : 0);
    }
  y++;
  for (size_t i = 0; i < a->neps && y < H - 4; i++) {
    const endpoint *ep = &a->eps[i];
    if (ep->ok)
      continue;
    snprintf(line, sizeof line, "%s %s: %s", ep->name,
             !ep->tried ? "connecting" : ep->unreach ? "UNREACHABLE" : "ERROR",
             ep->tried ? ep->err : "...");
    attron(u->color ? COLOR_PAIR(C_BAD) | A_BOLD : A_BOLD);
    put_cell(y++, 0, W, line, 0);
    attroff(u->color ? COLOR_PAIR(C_BAD) | A_BOLD : A_BOLD);
  }
  /* columns: the target gets what is left */
  int wep = 8;
  for (size_t i = 0; i < a->neps; i++)
    if ((int)strlen(a->eps[i].name) > wep)
      wep = (int)strlen(a->eps[i].name);
  if (wep > 21)
    wep = 21;
  static const int wid = 7, wkind = 6, wage = 7, wst = 13, wsage = 8,
                   wm = 6, wcs = 9;
  int fixed = wep + wid + wkind + wage + wst + wsage + wm + wcs + 9;
  int rest = W - fixed;
  int wstatus = rest > 40 ? (rest - 1) / 3 : rest > 20 ? 12 : 0;
  int wtgt = rest - wstatus - (wstatus ? 1 : 0);
  if (wtgt < 0)
    wtgt = 0;
  int xs[10], x = 0;
  const int ws[10] = {wep, wid, wkind, wage, wst, wsage, wm, wtgt, wcs, wstatus};
  for (int i = 0; i < 10; i++) {
    xs[i] = x;
    x += ws[i] + 1;
  }
  static const char *const heads[10] = {"ENDPOINT", "ID",     "KIND",
                                        "AGE",      "STATE",  "IN-STATE",
                                        "METHOD",   "AUTHORITY+PATH",
                                        "CONN/STRM", "STATUS"};
  static const int right[10] = {0, 1, 0, 1, 0, 1, 0, 0, 0, 0};
  attron(u->color ? COLOR_PAIR(C_HEAD) : A_REVERSE);
  mvhline(y, 0, ' ', W);
  for (int i = 0; i < 10; i++)
    put_cell(y, xs[i], ws[i], heads[i], right[i]);
  attroff(u->color ? COLOR_PAIR(C_HEAD) : A_REVERSE);
  y++;
  int body = H - y - 1; /* the last line: help, prompt or message */
  if (body < 1)
    body = 1;
  /* keep the selection on its request */
  if (u->sel_ep) {
    size_t found = a->nview;
    for (size_t i = 0; i < a->nview; i++)
      if (a->view[i]->ep == u->sel_ep && a->view[i]->id == u->sel_id) {
        found = i;
        break;
      }
    if (found < a->nview)
      u->sel = found;
  }
  if (u->sel >= a->nview)
    u->sel = a->nview ? a->nview - 1 : 0;
  if (u->sel < u->top)
    u->top = u->sel;
  if (u->sel >= u->top + (size_t)body)
    u->top = u->sel - (size_t)body + 1;
  if (a->nview) {
    u->sel_ep = a->view[u->sel]->ep;
    u->sel_id = a->view[u->sel]->id;
  }
  for (size_t i = u->top; i < a->nview && y < H - 1; i++, y++) {
    const row *r = a->view[i];
    char id[24], age[16], sage[16], cs[32];
    snprintf(id, sizeof id, "%llu", (unsigned long long)r->id);
    snprintf(cs, sizeof cs, "%lld/%lld", (long long)r->conn,
             (long long)r->stream);
    int attr = state_attr(u, r);
    if (i == u->sel)
      attr |= A_REVERSE;
    attron(attr);
    if (i == u->sel)
      mvhline(y, 0, ' ', W);
    put_cell(y, xs[0], ws[0], r->ep->name, 0);
    put_cell(y, xs[1], ws[1], id, 1);
    put_cell(y, xs[2], ws[2], r->kind, 0);
    put_cell(y, xs[3], ws[3], cli_fmt_ms(age, sizeof age, (uint64_t)r->age_us), 1);
    put_cell(y, xs[4], ws[4], r->state, 0);
    put_cell(y, xs[5], ws[5],
             cli_fmt_ms(sage, sizeof sage, (uint64_t)r->state_age_us), 1);
    put_cell(y, xs[6], ws[6], r->method, 0);
    char tgt[2 * TEXT_MAX];
    snprintf(tgt, sizeof tgt, "%.*s%.*s", TEXT_MAX - 1, r->authority,
             TEXT_MAX - 1, r->path);
    put_cell(y, xs[7], ws[7], tgt, 0);
    put_cell(y, xs[8], ws[8], cs, 0);
    put_cell(y, xs[9], ws[9], r->canceled && !*r->status ? "canceled" : r->status, 0);
    attroff(attr);
  }
  /* bottom line */
  const char *bottom;
  if (u->mode == M_CANCEL || u->mode == M_FILTER) {
    snprintf(line, sizeof line, "%s%s", u->mode == M_CANCEL ?
             "cancel: reason (Enter: send, Esc: no)? " : "filter: ", u->input);
    bottom = line;
  } else if (u->msg[0] && mono_us() < u->msg_until) {
    bottom = u->msg;
  } else {
    bottom = "k cancel  Enter/h history  p pause  s sort  / filter  arrows/PgUp/PgDn move  q quit";
  }
  attron(A_BOLD);
  put_cell(H - 1, 0, W, bottom, 0);
  attroff(A_BOLD);
  if (u->mode == M_CANCEL || u->mode == M_FILTER) {
    curs_set(1);
    move(H - 1, (int)strlen(bottom) < W ? (int)strlen(bottom) : W - 1);
  } else
    curs_set(0);
  refresh();
  a->draw_cpu_us = cpu_us() - c0;
}

static void url_encode(char *out, size_t len, const char *s) {
  static const char hex[] = "0123456789ABCDEF";
  size_t o = 0;
  for (; *s && o + 4 < len; s++) {
    unsigned char ch = (unsigned char)*s;
    if (isalnum(ch) || strchr("-._~", ch))
      out[o++] = (char)ch;
    else {
      out[o++] = '%';
      out[o++] = hex[ch >> 4];
      out[o++] = hex[ch & 15];
    }
  }
  out[o] = '\0';
}

static void start_action(app *a, ui *u, job_kind kind, const char *reason) {
  endpoint *ep = (endpoint *)u->target_ep;
  char path[512], enc[3 * 128 + 1];
  if (ep->act.phase != J_IDLE) {
    ui_msg(u, "%s: still busy with the last action", ep->name);
    return;
  }
  if (kind == JK_CANCEL) {
    url_encode(enc, sizeof enc, reason);
    snprintf(path, sizeof path, "/debug/requests/%llu/cancel%s%s",
             (unsigned long long)u->target_id, *enc ? "?reason=" : "", enc);
  } else if (kind == JK_RECENT)
    snprintf(path, sizeof path, "/debug/recent");
  else
    snprintf(path, sizeof path, "/debug/requests/%llu",
             (unsigned long long)u->target_id);
  ep->act.id = u->target_id;
  if (job_start(ep, &ep->act, kind, kind == JK_CANCEL ? "POST" : "GET", path,
                kind == JK_CANCEL ? a->token : NULL, a->timeout_us) != 0)
    ui_msg(u, "%s: %s", ep->name, ep->act.err);
  else if (kind == JK_CANCEL)
    ui_msg(u, "canceling request %llu on %s...",
           (unsigned long long)u->target_id, ep->name);
}

/* An action's answer: a message, or the history screen. */
static int action_done(app *a, ui *u, endpoint *ep) {
  int poll_now = 0;
  job *j = &ep->act;
  unsigned long long id = (unsigned long long)j->id;
  if (!j->err[0] && j->status == 404 && j->kind == JK_HISTORY) {
    /* it ended meanwhile: the recent ring may still hold it */
    u->target_ep = ep;
    u->target_id = j->id;
    job_reset(j);
    start_action(a, u, JK_RECENT, NULL);
    return 0;
  }
  if (!j->err[0] && j->status != 200) {
    http_error(j);
    if (j->status == 401 && !a->token)
      snprintf(j->err + strlen(j->err), sizeof j->err - strlen(j->err),
               " (start h2top with --token)");
  }
  if (j->err[0]) {
    ui_msg(u, "%s %llu on %s failed: %s",
           j->kind == JK_CANCEL ? "cancel of" : "history of", id, ep->name,
           j->err);
  } else if (j->kind == JK_CANCEL) {
    ui_msg(u, "canceled request %llu on %s", id, ep->name);
    poll_now = 1; /* show the new state at once */
  } else {
    json_t *o = json_loadb(j->buf + j->body, j->len - j->body, 0, NULL);
    json_t *found = NULL;
    if (j->kind == JK_RECENT) {
      size_t i;
      json_t *r;
      json_array_foreach(json_object_get(o, "recent"), i, r) {
        if ((uint64_t)jint(r, "id") == j->id)
          found = r;
      }
    } else
      found = o;
    if (json_is_object(found))
      hist_show(u, ep, found);
    else
      ui_msg(u, "request %llu on %s: %s", id, ep->name,
             o ? "no longer in flight nor in /debug/recent"
               : "bad JSON in the answer");
    json_decref(o);
  }
  job_reset(j);
  return poll_now;
}

static void key_table(app *a, ui *u, int ch) {
  int body = LINES - 4;
  if (body < 1)
    body = 1;
  int moved = 0;
  switch (ch) {
  case 'q':
  case 'Q':
    u->quit = 1;
    break;
  case 'p':
    u->paused = !u->paused;
    ui_msg(u, u->paused ? "paused (p: resume)" : "resumed");
    break;
  case 's':
    a->sort = (a->sort + 1) % SORT_COUNT_;
    ui_msg(u, "sorted by %s", sort_names[a->sort]);
    view_build(a);
    break;
  case '/':
    u->mode = M_FILTER;
    snprintf(u->input, sizeof u->input, "%s", a->filter);
    u->ilen = strlen(u->input);
    break;
  case 'k':
  case '\n':
  case '\r':
  case KEY_ENTER:
  case 'h':
    if (!a->nview) {
      ui_msg(u, "no request selected");
      break;
    }
    u->target_ep = a->view[u->sel]->ep;
    u->target_id = a->view[u->sel]->id;
    if (ch == 'k') {
      u->mode = M_CANCEL;
      u->input[0] = '\0';
      u->ilen = 0;
    } else
      start_action(a, u, JK_HISTORY, NULL);
    break;
  case KEY_UP:
    u->sel = u->sel ? u->sel - 1 : 0;
    moved = 1;
    break;
  case KEY_DOWN:
    u->sel++;
    moved = 1;
    break;
  case KEY_PPAGE:
    u->sel = u->sel > (size_t)body ? u->sel - (size_t)body : 0;
    moved = 1;
    break;
  case KEY_NPAGE:
    u->sel += (size_t)body;
    moved = 1;
    break;
  case KEY_HOME:
    u->sel = 0;
    moved = 1;
    break;
  case KEY_END:
    u->sel = a->nview ? a->nview - 1 : 0;
    moved = 1;
    break;
  default:
    break;
  }
  if (moved) {
    if (u->sel >= a->nview)
      u->sel = a->nview ? a->nview - 1 : 0;
    u->sel_ep = NULL; /* draw() picks the request under the new position */
  }
}

/* A line of input at the bottom; Enter and Esc leave it (the caller acts). */
static void key_prompt(ui *u, int ch) {
  if (ch == 27 || ch == '\n' || ch == '\r' || ch == KEY_ENTER) {
    u->mode = M_TABLE;
    return;
  }
  if (ch == KEY_BACKSPACE || ch == 127 || ch == 8) {
    if (u->ilen)
      u->input[--u->ilen] = '\0';
    return;
  }
  if (ch >= 0x20 && ch < 0x7f && u->ilen + 1 < sizeof u->input) {
    u->input[u->ilen++] = (char)ch;
    u->input[u->ilen] = '\0';
  }
}

static void on_key(app *a, ui *u, int ch) {
  view_fresh(a);
  if (ch == KEY_RESIZE)
    return;
  switch (u->mode) {
  case M_TABLE:
    key_table(a, u, ch);
    break;
  case M_HISTORY:
    if (ch == KEY_DOWN && u->hist_top + 1 < u->nhist)
      u->hist_top++;
    else if (ch == KEY_UP && u->hist_top)
      u->hist_top--;
    else if (ch == 'q' || ch == 27 || ch == 'h' || ch == '\n' || ch == '\r' ||
             ch == KEY_ENTER) {
      hist_free(u);
      u->mode = M_TABLE;
    }
    break;
  case M_CANCEL:
  case M_FILTER: {
    ui_mode m = u->mode;
    int enter = ch == '\n' || ch == '\r' || ch == KEY_ENTER;
    key_prompt(u, ch);
    if (!enter)
      break;
    if (m == M_FILTER) {
      snprintf(a->filter, sizeof a->filter, "%s", u->input);
      view_build(a);
    } else
      start_action(a, u, JK_CANCEL, u->input);
    break;
  }
  }
}

/* ---- the loop ---------------------------------------------------------- */

static volatile sig_atomic_t g_stop;
static void on_stop(int sig) {
  (void)sig;
  g_stop = 1;
}

static void usage(FILE *f) {
  fprintf(f,
      "usage: " PROG " --endpoints HOST:PORT[,HOST:PORT...] [options]\n"
      "Watch the requests in flight in several processes at once, read from\n"
      "their h2trace diagnostics endpoints (GET /debug/requests).\n"
      "\n"
      "  -e, --endpoints LIST  comma-separated HOST:PORT of diagnostics endpoints\n"
      "  -r, --refresh T       time between polls: 1s (default), 500ms, 2.5\n"
      "  -t, --token T         bearer token for cancel (or H2TOP_TOKEN)\n"
      "      --timeout T       give up on an endpoint's answer after T (default 3s)\n"
      "      --sort KEY        age (default), state (time in state) or host\n"
      "      --filter TEXT     only requests with TEXT in a column\n"
      "      --once            print one plain-text snapshot and exit\n"
      "      --json            print one JSON snapshot and exit\n"
      "      --bench N         N refreshes as fast as they come, then print the\n"
      "                        CPU each took (screen: the terminal, or /dev/null)\n"
      "  -h, --help            this help\n"
      "  -V, --version         print the version\n"
      "\n"
      "Keys: arrows/PgUp/PgDn move, k cancel (asks a reason), Enter or h\n"
      "history, p pause, s sort, / filter, q quit.\n"
      "Exit status: 0; with --once/--json 1 when an endpoint could not be\n"
      "read; 2 on bad usage.\n");
}

static int usage_error(const char *fmt, const char *arg) {
  return cli_usage_error(PROG, fmt, arg);
}

enum { OPT_TIMEOUT = 256, OPT_SORT, OPT_FILTER, OPT_ONCE, OPT_JSON, OPT_BENCH };

typedef struct opts {
  int once, json;
  uint64_t bench;
} opts;

static int parse_args(app *a, opts *o, int argc, char **argv) {
  static const struct option longopts[] = {
      {"endpoints", required_argument, NULL, 'e'},
      {"refresh", required_argument, NULL, 'r'},
      {"token", required_argument, NULL, 't'},
      {"timeout", required_argument, NULL, OPT_TIMEOUT},
      {"sort", required_argument, NULL, OPT_SORT},
      {"filter", required_argument, NULL, OPT_FILTER},
      {"once", no_argument, NULL, OPT_ONCE},
      {"json", no_argument, NULL, OPT_JSON},
      {"bench", required_argument, NULL, OPT_BENCH},
      {"help", no_argument, NULL, 'h'},
      {"version", no_argument, NULL, 'V'},
      {NULL, 0, NULL, 0}};
  int ch;
  const char *list = NULL;
  opterr = 0;
  while ((ch = getopt_long(argc, argv, ":e:r:t:hV", longopts, NULL)) != -1) {
    switch (ch) {
    case 'e':
      list = optarg;
      break;
    case 'r':
      if (parse_interval(optarg, &a->refresh_us) != 0 || a->refresh_us < 50000)
        return usage_error("--refresh wants a time of at least 50ms, not '%s'",
                           optarg);
      break;
    case 't':
      a->token = optarg;
      break;
    case OPT_TIMEOUT:
      if (parse_interval(optarg, &a->timeout_us) != 0 || a->timeout_us < 1000)
        return usage_error("--timeout wants a time such as 3s, not '%s'",
                           optarg);
      break;
    case OPT_SORT: {
      size_t k;
      for (k = 0; k < SORT_COUNT_ && strcmp(optarg, sort_names[k]); k++)
        ;
      if (k == SORT_COUNT_)
        return usage_error("--sort wants age, state or host, not '%s'", optarg);
      a->sort = (sort_key)k;
      break;
    }
    case OPT_FILTER:
      snprintf(a->filter, sizeof a->filter, "%s", optarg);
      break;
    case OPT_ONCE:
      o->once = 1;
      break;
    case OPT_JSON:
      o->json = a->want_doc = 1;
      break;
    case OPT_BENCH:
      if (cli_parse_u64(optarg, 1, 100000, &o->bench) != 0)
        return usage_error("--bench wants a count of refreshes, not '%s'",
                           optarg);
      break;
    case 'h':
      usage(stdout);
      return 0;
    case 'V':
      printf(PROG " %s\n", H2T_VERSION);
      return 0;
    case ':':
      return usage_error("option '%s' needs a value", argv[optind - 1]);
    default:
      return usage_error("unknown option '%s'", argv[optind - 1]);
    }
  }
  if (optind < argc)
    return usage_error("unexpected argument '%s'", argv[optind]);
  if (!list)
    return usage_error("%s", "--endpoints is required");
  if (o->once + o->json + (o->bench > 0) > 1)
    return usage_error("%s", "--once, --json and --bench go alone");
  char *copy = strdup(list), *save = NULL;
  if (!copy)
    return 1;
  for (char *tok = strtok_r(copy, ",", &save); tok;
       tok = strtok_r(NULL, ",", &save)) {
    if (a->neps == MAX_ENDPOINTS) {
      free(copy);
      return usage_error("at most %s endpoints", "64");
    }
    endpoint *ep = &a->eps[a->neps];
    if (endpoint_parse(ep, tok) != 0) {
      int rc = usage_error("bad endpoint '%s', expected HOST:PORT", tok);
      free(copy);
      return rc;
    }
    ep->poll.fd = ep->act.fd = -1;
    a->neps++;
  }
  free(copy);
  if (!a->neps)
    return usage_error("%s", "--endpoints is empty");
  return -1;
}

/* A poll's answer: new rows for its endpoint, or its error. */
static void poll_done(app *a, endpoint *ep) {
  job *j = &ep->poll;
  uint64_t c0 = cpu_us();
  ep->tried = 1;
  if (!j->err[0] && j->status != 200)
    http_error(j);
  if (j->err[0]) {
    snprintf(ep->err, sizeof ep->err, "%s", j->err);
    ep->unreach = j->unreach;
    ep->ok = 0;
    endpoint_drop(ep);
  } else if (endpoint_take(ep, j, a->want_doc) != 0) {
    ep->unreach = 0;
    ep->ok = 0;
    endpoint_drop(ep);
  } else
    ep->ok = 1;
  job_reset(j);
  a->stale = 1;
  a->parse_cpu_us += cpu_us() - c0;
}

static void ui_init(ui *u, int bench_tty) {
  if (bench_tty) {
    /* a screen nobody sees, of a usual size, so drawing costs what it costs */
    FILE *out = fopen("/dev/null", "w");
    setenv("LINES", "50", 1);
    setenv("COLUMNS", "200", 1);
    const char *term = getenv("TERM");
    newterm(term && *term ? term : "xterm", out ? out : stdout, stdin);
  } else
    initscr();
  cbreak();
  noecho();
  nonl();
  keypad(stdscr, TRUE);
  nodelay(stdscr, TRUE);
  set_escdelay(25);
  curs_set(0);
  u->color = has_colors() && !(getenv("NO_COLOR") && *getenv("NO_COLOR"));
  if (u->color) {
    start_color();
    use_default_colors();
    init_pair(C_HEAD, COLOR_BLACK, COLOR_CYAN);
    init_pair(C_BAD, COLOR_RED, -1);
    init_pair(C_WARN, COLOR_YELLOW, -1);
    init_pair(C_DIM, COLOR_BLUE, -1);
    init_pair(C_OK, COLOR_GREEN, -1);
  }
  u->on = 1;
}

static int cmp_u64(const void *pa, const void *pb) {
  uint64_t a = *(const uint64_t *)pa, b = *(const uint64_t *)pb;
  return a < b ? -1 : a > b;
}

int main(int argc, char **argv) {
  static app a;
  opts o = {0};
  a.refresh_us = 1000000;
  a.timeout_us = 3000000;
  if (getenv("H2TOP_TOKEN"))
    a.token = getenv("H2TOP_TOKEN");
  int rc = parse_args(&a, &o, argc, argv);
  if (rc >= 0)
    return rc;
  signal(SIGPIPE, SIG_IGN);
  signal(SIGINT, on_stop);
  signal(SIGTERM, on_stop);
  setlocale(LC_ALL, "");

  int snapshot = o.once || o.json;
  ui u = {0};
  if (!snapshot)
    ui_init(&u, o.bench && !isatty(STDOUT_FILENO));

  uint64_t *bench_cpu = o.bench ? calloc(o.bench, sizeof *bench_cpu) : NULL;
  uint64_t *bench_parse = o.bench ? calloc(o.bench, sizeof *bench_parse) : NULL;
  size_t rounds = 0, bench_rows = 0;
  uint64_t next_tick = 0, round_cpu0 = 0;
  int round_open = 0, dirty = 1;
  struct pollfd pfd[1 + 2 * MAX_ENDPOINTS];
  job *pjob[1 + 2 * MAX_ENDPOINTS];
  while (!g_stop && !u.quit) {
    uint64_t now = mono_us();
    /* a new round of polls */
    if (!u.paused && now >= next_tick && !(o.bench && round_open) &&
        !(snapshot && rounds)) {
      round_cpu0 = cpu_us();
      a.parse_cpu_us = 0;
      for (size_t i = 0; i < a.neps; i++) {
        endpoint *ep = &a.eps[i];
        if (ep->poll.phase != J_IDLE)
          continue; /* the last one is still going: let it */
        if (job_start(ep, &ep->poll, JK_POLL, "GET", "/debug/requests", NULL,
                      a.timeout_us) != 0)
          poll_done(&a, ep), dirty = 1;
      }
      round_open = 1;
      rounds++;
      next_tick = now + a.refresh_us;
    }
    /* what to wait for */
    size_t n = 0;
    uint64_t wake = u.paused ? now + 1000000 : next_tick;
    if (u.on) {
      pfd[n] = (struct pollfd){.fd = STDIN_FILENO, .events = POLLIN};
      pjob[n++] = NULL;
    }
    int busy = 0;
    for (size_t i = 0; i < a.neps; i++) {
      job *js[2] = {&a.eps[i].poll, &a.eps[i].act};
      for (int k = 0; k < 2; k++)
        if (js[k]->phase != J_IDLE) {
          pfd[n] = (struct pollfd){.fd = js[k]->fd, .events = job_events(js[k])};
          pjob[n++] = js[k];
          if (js[k]->deadline < wake)
            wake = js[k]->deadline;
          busy |= k == 0;
        }
    }
    if (round_open && !busy) {
      /* every poll of the round is in: one merge, one sort, one draw */
      round_open = 0;
      uint64_t c0 = cpu_us();
      view_build(&a);
      a.view_cpu_us = cpu_us() - c0;
      if (snapshot)
        break;
      dirty = 1;
      if (o.bench) {
        draw(&a, &u);
        dirty = 0;
        bench_cpu[rounds - 1] = cpu_us() - round_cpu0;
        bench_parse[rounds - 1] = a.parse_cpu_us;
        bench_rows = a.total;
        if (rounds == o.bench)
          break;
        next_tick = 0;
        continue;
      }
    }
    if (u.on && dirty) {
      draw(&a, &u);
      dirty = 0;
    }
    if (u.msg[0] && u.msg_until < wake)
      wake = u.msg_until; /* to clear it */
    now = mono_us();
    int timeout = wake > now ? (int)((wake - now + 999) / 1000) : 0;
    int r = poll(pfd, n, timeout);
    if (r < 0 && errno != EINTR)
      break;
    now = mono_us();
    for (size_t i = 0; i < n; i++) {
      job *j = pjob[i];
      if (!j)
        continue;
      endpoint *ep = (endpoint *)((char *)j - (j->kind == JK_POLL
                                                   ? offsetof(endpoint, poll)
                                                   : offsetof(endpoint, act)));
      int fin = r > 0 && pfd[i].revents ? job_step(j, pfd[i].revents) : 0;
      if (!fin && now >= j->deadline) {
        job_timeout(j, a.timeout_us);
        fin = 1;
      }
      if (!fin)
        continue;
      if (j->kind == JK_POLL) {
        poll_done(&a, ep);
        if (!round_open)
          dirty = 1; /* a late one, after its round */
      } else {
        if (action_done(&a, &u, ep))
          next_tick = 0; /* after a cancel */
        dirty = 1;
      }
    }
    if (u.msg[0] && now >= u.msg_until) {
      u.msg[0] = '\0';
      dirty = 1;
    }
    if (u.on) {
      int ch;
      while ((ch = getch()) != ERR) {
        on_key(&a, &u, ch);
        dirty = 1;
      }
    }
  }
  if (u.on)
    endwin();

  int status = 0;
  if (snapshot) {
    for (size_t i = 0; i < a.neps; i++)
      status |= !a.eps[i].ok;
    if (o.json ? print_json(&a) != 0 : (print_plain(&a), 0))
      status = 1;
  }
  if (o.bench && rounds) {
    size_t m = rounds < o.bench ? rounds - 1 : rounds;
    if (m) {
      qsort(bench_cpu, m, sizeof *bench_cpu, cmp_u64);
      qsort(bench_parse, m, sizeof *bench_parse, cmp_u64);
      char mn[16], md[16], mx[16], pm[16];
      printf("h2top bench: %zu endpoints, %zu requests, %zu refreshes; CPU per "
             "refresh (fetch+parse+merge+sort+draw): min %s, median %s, max %s; "
             "of which reading+parsing median %s\n",
             a.neps, bench_rows, m, cli_fmt_ms(mn, sizeof mn, bench_cpu[0]),
             cli_fmt_ms(md, sizeof md, bench_cpu[m / 2]),
             cli_fmt_ms(mx, sizeof mx, bench_cpu[m - 1]),
             cli_fmt_ms(pm, sizeof pm, bench_parse[m / 2]));
    }
  }
  for (size_t i = 0; i < a.neps; i++) {
    job_reset(&a.eps[i].poll);
    job_reset(&a.eps[i].act);
    endpoint_drop(&a.eps[i]);
    free(a.eps[i].rows);
  }
  free(a.view);
  free(bench_cpu);
  free(bench_parse);
  hist_free(&u);
  return status;
}
