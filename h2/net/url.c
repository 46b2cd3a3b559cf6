/* Absolute http(s) URL parsing for requests. */
#include <arpa/inet.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "h2/net/net.h"
#include "trace/trace_int.h"

static int valid_host_char(char ch) {
  return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
         (ch >= '0' && ch <= '9') || ch == '-' || ch == '.' || ch == '_';
}

int h2t__url_parse(const h2t_mem *mem, const char *s, h2_url *u) {
  memset(u, 0, sizeof *u);
  if (!s)
    return H2T_ERR_BAD_URL;
  const char *p;
  if (!strncasecmp(s, "http://", 7)) {
    p = s + 7;
  } else if (!strncasecmp(s, "https://", 8)) {
    p = s + 8;
    u->tls = 1;
  } else {
    return H2T_ERR_BAD_URL;
  }
  size_t alen = strcspn(p, "/?#");
  const char *a = p, *aend = p + alen;
  if (alen == 0 || memchr(a, '@', alen))
    return H2T_ERR_BAD_URL; /* no host, or userinfo (never sent in h2) */
  const char *h = a, *hend;
  const char *colon = NULL;
  if (*a == '[') {
    const char *rb = memchr(a, ']', alen);
    if (!rb)
      return H2T_ERR_BAD_URL;
    h = a + 1;
    hend = rb;
    if (rb + 1 < aend) {
      if (rb[1] != ':')
        return H2T_ERR_BAD_URL;
      colon = rb + 1;
    }
  } else {
    colon = memchr(a, ':', alen);
    hend = colon ? colon : aend;
    for (const char *q = h; q < hend; q++)
      if (!valid_host_char(*q))
        return H2T_ERR_BAD_URL;
  }
  if (hend == h || hend - h > 253)
    return H2T_ERR_BAD_URL;
  unsigned long port = u->tls ? 443 : 80;
  if (colon) {
    const char *ps = colon + 1;
    if (ps == aend || aend - ps > 5)
      return H2T_ERR_BAD_URL;
    port = 0;
    for (const char *q = ps; q < aend; q++) {
      if (*q < '0' || *q > '9')
        return H2T_ERR_BAD_URL;
      port = port * 10 + (unsigned long)(*q - '0');
    }
    if (port == 0 || port > 65535)
      return H2T_ERR_BAD_URL;
  }
  u->port = (uint16_t)port;
  const char *path = aend;
  size_t plen = strcspn(path, "#");
  for (size_t i = 0; i < plen; i++)
    if ((unsigned char)path[i] <= 0x20 || path[i] == 0x7f)
      return H2T_ERR_BAD_URL;
  size_t hlen = (size_t)(hend - h);
  int need_slash = plen == 0 || path[0] == '?';
  size_t total = hlen + 1 + alen + 1 + plen + 2;
  char *buf = h2t_xmalloc(mem, total);
  if (!buf)
    return H2T_ERR_NOMEM;
  u->buf_ = buf;
  u->buflen_ = total;
  u->host = buf;
  memcpy(u->host, h, hlen);
  u->host[hlen] = '\0';
  for (char *q = u->host; *q; q++)
    if (*q >= 'A' && *q <= 'Z')
      *q = (char)(*q - 'A' + 'a');
  u->authority = u->host + hlen + 1;
  memcpy(u->authority, a, alen);
  u->authority[alen] = '\0';
  u->path = u->authority + alen + 1;
  size_t off = 0;
  if (need_slash)
    u->path[off++] = '/';
  memcpy(u->path + off, path, plen);
  u->path[off + plen] = '\0';
  u->scheme = u->tls ? "https" : "http";
  unsigned char tmp[16];
  if (inet_pton(AF_INET, u->host, tmp) == 1)
    u->host_is_ip = 4;
  else if (inet_pton(AF_INET6, u->host, tmp) == 1)
    u->host_is_ip = 6;
  else if (*a == '[') {
    h2t__url_free(mem, u);
    return H2T_ERR_BAD_URL;
  }
  return 0;
}

void h2t__url_copy_to(const h2_url *from, h2_url *to, char *buf) {
  *to = *from;
  memcpy(buf, from->buf_, from->buflen_);
  to->host = buf + (from->host - from->buf_);
  to->authority = buf + (from->authority - from->buf_);
  to->path = buf + (from->path - from->buf_);
  to->buf_ = NULL;
}

void h2t__url_free(const h2t_mem *mem, h2_url *u) {
  h2t_xfree(mem, u->buf_);
  memset(u, 0, sizeof *u);
}
