/*
 * Request header handling, both sides.
 *
 * Input: a flags byte, then records separated by '\n', each "name\tvalue"
 * (byte 0x01 stands for '\n' inside either).  The first record's value is
 * the method (empty: the default).
 *
 * Client: h2t__req_headers() builds the block from the records as user
 * headers.  When it accepts them, what it built must be what the server
 * side accepts: lowercase RFC 9110 token names (nghttp2's own check),
 * values nghttp2 accepts, no hop-by-hop field, the pseudo-headers first,
 * every string inside the one allocation.
 *
 * Server: the records, as they are (pseudo-headers included, NUL bytes
 * and all), HPACK-encoded into HEADERS (+ CONTINUATION) on stream 1 and fed
 * to the server after the preface: nghttp2's validation, then request.c's
 * handling of what passes.
 */
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <nghttp2/nghttp2.h>
#include "h2/client/client_int.h"

#include "fuzz.h"

#define MAX_HDRS 64

enum { F_BODY = 1, F_BODY_READ = 2, F_OPEN = 4 };

typedef struct rec {
  char *name, *value; /* NUL-terminated copies */
  size_t nlen, vlen;
} rec;

static size_t split(const uint8_t *d, size_t n, rec *out, uint8_t *store) {
  size_t k = 0, i = 0;
  uint8_t *w = store;
  while (i <= n && k < MAX_HDRS) {
    size_t e = i;
    while (e < n && d[e] != '\n')
      e++;
    size_t t = i;
    while (t < e && d[t] != '\t')
      t++;
    for (int part = 0; part < 2; part++) {
      size_t a = part ? (t < e ? t + 1 : e) : i, b = part ? e : t;
      char *s = (char *)w;
      for (size_t j = a; j < b; j++)
        *w++ = d[j] == 1 ? '\n' : d[j];
      *w++ = '\0';
      if (part)
        out[k].value = s, out[k].vlen = b - a;
      else
        out[k].name = s, out[k].nlen = b - a;
    }
    k++;
    i = e + 1;
  }
  return k;
}

static int hop_by_hop(const char *n) {
  static const char *const drop[] = {"connection",        "keep-alive",
                                     "proxy-connection",  "transfer-encoding",
                                     "upgrade",           "host"};
  for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++)
    if (!strcasecmp(n, drop[i]))
      return 1;
  return 0;
}

static ssize_t body_read(h2t_request *r, uint8_t *b, size_t l, int *eof,
                         void *u) {
  *eof = 1;
  return 0;
}

static void client_side(uint8_t flags, const rec *rs, size_t n) {
  static h2_url url;
  if (!url.buf_ && h2t__url_parse(NULL, "http://example.com:8080/p?q", &url))
    h2t_fuzz_fail("url");
  h2t_header hs[MAX_HDRS];
  size_t nh = 0;
  for (size_t i = 1; i < n; i++) /* pseudo-headers are the client's own */
    if (rs[i].name[0] != ':')
      hs[nh++] = (h2t_header){rs[i].name, rs[i].value};
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .headers = hs, .nheaders = nh};
  if (n && rs[0].value[0])
    o.method = rs[0].value;
  if (flags & F_BODY_READ) {
    o.body_read = body_read;
    o.body_length = (flags & F_BODY) ? 3 : -1;
  } else if (flags & F_BODY) {
    o.body = "abc";
    o.body_len = 3;
  }
  h2t_client c;
  h2t_request *r = calloc(1, sizeof *r);
  memset(&c, 0, sizeof c);
  r->client = &c;
  r->url = url; /* borrowed: its strings stay in url's buffer */
  r->url.buf_ = NULL;
  if (h2t__req_headers(r, &o) == 0) {
    static const char *const pseudo[] = {":method", ":scheme", ":authority",
                                         ":path"};
    if (r->nnv < 4)
      h2t_fuzz_fail("%zu fields", r->nnv);
    for (size_t i = 0; i < r->nnv; i++) {
      const nghttp2_nv *nv = &r->nv[i];
      const char *nm = (const char *)nv->name;
      if ((const char *)nv->name < r->hdrbuf ||
          (const char *)nv->value + nv->valuelen >= r->hdrbuf + r->hdrcap ||
          strlen(nm) != nv->namelen ||
          strlen((const char *)nv->value) != nv->valuelen)
        h2t_fuzz_fail("field %zu outside the block or its lengths wrong", i);
      if (i < 4) {
        if (strcmp(nm, pseudo[i]))
          h2t_fuzz_fail("field %zu is %s, not %s", i, nm, pseudo[i]);
        continue;
      }
      if (!nghttp2_check_header_name(nv->name, nv->namelen))
        h2t_fuzz_fail("sent a field name nghttp2 refuses: \"%s\"", nm);
      for (const char *p = nm; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
          h2t_fuzz_fail("sent an upper-case field name: \"%s\"", nm);
      if (hop_by_hop(nm))
        h2t_fuzz_fail("sent a hop-by-hop field: \"%s\"", nm);
      if (!nghttp2_check_header_value_rfc9113(nv->value, nv->valuelen))
        h2t_fuzz_fail("sent a value nghttp2 refuses: \"%s: %s\"", nm,
                      (const char *)nv->value);
    }
  }
  h2t_xfree(NULL, r->hdrbuf);
  free(r);
}

static void server_side(uint8_t flags, const rec *rs, size_t n) {
  nghttp2_nv nva[MAX_HDRS];
  for (size_t i = 0; i < n; i++)
    nva[i] = (nghttp2_nv){(uint8_t *)rs[i].name, (uint8_t *)rs[i].value,
                          rs[i].nlen, rs[i].vlen, NGHTTP2_NV_FLAG_NONE};
  /* the first record's value is the method: as a pseudo-header here */
  if (n)
    nva[0].name = (uint8_t *)":method", nva[0].namelen = 7;
  nghttp2_hd_deflater *def;
  if (nghttp2_hd_deflate_new(&def, 4096) != 0)
    return;
  size_t bound = nghttp2_hd_deflate_bound(def, nva, n);
  uint8_t *blk = malloc(bound);
  ssize_t blen = blk ? nghttp2_hd_deflate_hd(def, blk, bound, nva, n) : -1;
  nghttp2_hd_deflate_del(def);
  if (blen < 0) {
    free(blk);
    return;
  }
  /* frames of at most 16384 bytes: HEADERS, then CONTINUATIONs */
  size_t nframes = (size_t)blen / 16384 + 1;
  uint8_t *out = malloc((size_t)blen + 9 * nframes + 9 + 4);
  size_t o = 0, off = 0;
  for (size_t f = 0; f < nframes; f++) {
    size_t len = (size_t)blen - off < 16384 ? (size_t)blen - off : 16384;
    uint8_t fl = f == nframes - 1 ? 0x4 : 0; /* END_HEADERS */
    if (f == 0 && !(flags & F_OPEN))
      fl |= 0x1; /* END_STREAM */
    uint8_t hd[9] = {(uint8_t)(len >> 16), (uint8_t)(len >> 8), (uint8_t)len,
                     f ? 0x9 : 0x1, fl, 0, 0, 0, 1};
    memcpy(out + o, hd, 9);
    memcpy(out + o + 9, blk + off, len);
    o += 9 + len;
    off += len;
  }
  if (flags & F_OPEN) { /* a body: DATA "abcd" with END_STREAM */
    static const uint8_t d[] = {0, 0, 4, 0, 1, 0, 0, 0, 1, 'a', 'b', 'c', 'd'};
    memcpy(out + o, d, sizeof d);
    o += sizeof d;
  }
  free(blk);
  h2t_fuzz_server_feed(out, o);
  free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > 65536)
    return 0;
  rec rs[MAX_HDRS];
  uint8_t *store = malloc(3 * size + 4);
  size_t n = split(data + 1, size - 1, rs, store);
  client_side(data[0], rs, n);
  server_side(data[0], rs, n);
  free(store);
  return 0;
}
