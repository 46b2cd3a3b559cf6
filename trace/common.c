/* Error strings, the clock, ids, allocation and the version. */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <h2trace/version.h>
#include "trace/trace_int.h"

const char *h2t_strerror(int err) {
  switch (err) {
  case 0:
    return "success";
#define XX(name, val, msg)                                                     \
  case val:                                                                    \
    return msg;
    H2T_ERRNO_MAP(XX)
#undef XX
  default:
    return "unknown error";
  }
}

const char *h2t_errname(int err) {
  switch (err) {
  case 0:
    return "H2T_OK";
#define XX(name, val, msg)                                                     \
  case val:                                                                    \
    return "H2T_ERR_" #name;
    H2T_ERRNO_MAP(XX)
#undef XX
  default:
    return "unknown";
  }
}

const char *h2t_http2_strerror(uint32_t code) {
  static const char *const names[] = {
      "NO_ERROR",       "PROTOCOL_ERROR",      "INTERNAL_ERROR",
      "FLOW_CONTROL_ERROR", "SETTINGS_TIMEOUT", "STREAM_CLOSED",
      "FRAME_SIZE_ERROR", "REFUSED_STREAM",    "CANCEL",
      "COMPRESSION_ERROR", "CONNECT_ERROR",    "ENHANCE_YOUR_CALM",
      "INADEQUATE_SECURITY", "HTTP_1_1_REQUIRED"};
  return code < sizeof(names) / sizeof(names[0]) ? names[code] : "UNKNOWN";
}

uint64_t h2t_now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

const char *h2t_version(void) { return H2T_VERSION; }

static atomic_uint_fast64_t req_ids, conn_ids;

uint64_t h2t_next_req_id(void) { return atomic_fetch_add(&req_ids, 1) + 1; }
uint64_t h2t_next_conn_id(void) { return atomic_fetch_add(&conn_ids, 1) + 1; }

void *h2t_xmalloc(const h2t_mem *m, size_t n) {
  return m ? m->malloc(n, m->user) : malloc(n);
}

void *h2t_xcalloc(const h2t_mem *m, size_t nmemb, size_t n) {
  return m ? m->calloc(nmemb, n, m->user) : calloc(nmemb, n);
}

void *h2t_xrealloc(const h2t_mem *m, void *p, size_t n) {
  return m ? m->realloc(p, n, m->user) : realloc(p, n);
}

void h2t_xfree(const h2t_mem *m, void *p) {
  if (m)
    m->free(p, m->user);
  else
    free(p);
}

char *h2t_xstrndup(const h2t_mem *m, const char *s, size_t n) {
  char *d = h2t_xmalloc(m, n + 1);
  if (d) {
    memcpy(d, s, n);
    d[n] = '\0';
  }
  return d;
}

char *h2t_xstrdup(const h2t_mem *m, const char *s) {
  return h2t_xstrndup(m, s, strlen(s));
}

int h2t__buf_append(const h2t_mem *m, uint8_t **buf, size_t *len, size_t *cap,
                    size_t first_cap, const uint8_t *d, size_t n) {
  if (*len + n + 1 > *cap) {
    size_t c = *cap ? *cap : first_cap;
    while (c < *len + n + 1)
      c *= 2;
    uint8_t *p = h2t_xrealloc(m, *buf, c);
    if (!p)
      return -1;
    *buf = p;
    *cap = c;
  }
  memcpy(*buf + *len, d, n);
  *len += n;
  (*buf)[*len] = '\0';
  return 0;
}
