/* Building a request from its options: URL, header block, trace chain.
 * Pure helpers under client.c: no hooks, no I/O. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "h2/client/client_int.h"
#include "trace/tracectx_int.h"

int h2t__req_opts_copy(h2t_request_opts *dst, const h2t_request_opts *src) {
  if (h2t__struct_in(dst, sizeof *dst, src, H2T__REQUEST_OPTS_V1) != 0 ||
      h2t__trace_ok(dst->trace, 0) != 0)
    return H2T_ERR_INVALID_ARG;
  return 0;
}

static int hop_by_hop(const char *name) {
  static const char *const drop[] = {"connection", "keep-alive",
                                     "proxy-connection", "transfer-encoding",
                                     "upgrade", "host"};
  for (size_t i = 0; i < sizeof drop / sizeof drop[0]; i++)
    if (!strcasecmp(name, drop[i]))
      return 1;
  return 0;
}

/* RFC 9110 §5.1, §9.1: field names and methods are tokens.  Anything else
 * (a separator such as '(' or '"', a space, a control byte) is refused here:
 * sent, it would make the peer reset the stream as malformed. */
static int valid_token(const char *s) {
  if (!*s)
    return 0;
  for (; *s; s++) {
    unsigned char c = (unsigned char)*s;
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') ||
          (c >= 'A' && c <= 'Z') || strchr("!#$%&'*+-.^_`|~", c)))
      return 0;
  }
  return 1;
}

/* RFC 9113 §8.2.1: no NUL, CR or LF, and no leading or trailing space or
 * tab; nghttp2's check, the one an nghttp2 server applies on receipt. */
static int valid_value(const char *s) {
  return nghttp2_check_header_value_rfc9113((const uint8_t *)s, strlen(s));
}

static void nv_set(nghttp2_nv *nv, char **pp, const char *name, size_t nlen,
                   const char *value, size_t vlen, int lower) {
  char *p = *pp;
  nv->name = (uint8_t *)p;
  memcpy(p, name, nlen);
  if (lower) /* HTTP/2 field names are lowercase (RFC 9113 §8.2.1) */
    for (size_t i = 0; i < nlen; i++)
      if (p[i] >= 'A' && p[i] <= 'Z')
        p[i] = (char)(p[i] - 'A' + 'a');
  p[nlen] = '\0';
  p += nlen + 1;
  nv->value = (uint8_t *)p;
  memcpy(p, value, vlen);
  p[vlen] = '\0';
  p += vlen + 1;
  nv->namelen = nlen;
  nv->valuelen = vlen;
  nv->flags = NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE;
  *pp = p;
}

/* Build the header block once: :method :scheme :authority :path, then the
 * user's headers (names lowercased, hop-by-hop ones dropped), and
 * content-length for a known body length.  One allocation. */
int h2t__req_headers(h2t_request *r, const h2t_request_opts *o) {
  const h2t_mem *m = r->client->mem;
  const char *method =
      o->method ? o->method : (o->body || o->body_read) ? "POST" : "GET";
  if (!valid_token(method))
    return H2T_ERR_INVALID_ARG;
  int64_t clen = o->body_read ? o->body_length : (int64_t)o->body_len;
  if (!o->body_read && !o->body)
    clen = -1;
  if (!o->body_read && o->body && !o->body_len &&
      (!strcmp(method, "GET") || !strcmp(method, "HEAD")))
    clen = -1;
  char clbuf[24] = "";
  size_t strlen_total = 0, n = 4;
  int has_cl = 0;
  const char *app_tp = NULL; /* the application's traceparent */
  for (size_t i = 0; i < o->nheaders; i++) {
    const h2t_header *h = &o->headers[i];
    if (!h->name || !h->value || !valid_token(h->name) || !valid_value(h->value))
      return H2T_ERR_INVALID_ARG;
    if (hop_by_hop(h->name))
      continue;
    if (!strcasecmp(h->name, "content-length"))
      has_cl = 1;
    if ((h->name[0] | 0x20) == 't' && !app_tp &&
        !strcasecmp(h->name, "traceparent"))
      app_tp = h->value;
    if (!strcasecmp(h->name, "expect") &&
        !strcasecmp(h->value, "100-continue") && (o->body || o->body_read))
      r->expect_100 = r->waiting_100 = 1;
    strlen_total += strlen(h->name) + strlen(h->value) + 2;
    n++;
  }
  if (clen >= 0 && !has_cl) {
    int k = snprintf(clbuf, sizeof clbuf, "%lld", (long long)clen);
    strlen_total += 14 + 1 + (size_t)k + 1;
    n++;
  }
  /* The trace context: the application's own header wins (its ids are
   * the request's when it parses); else one is made, under o->parent if
   * given, and sent unless the client says not to. */
  int send_tp = 0;
  r->tctxp = &r->tctx;
  if (app_tp) {
    if (h2t_trace_context_parse(app_tp, &r->tctx) != 0)
      r->tctxp = NULL;
  } else if (!r->client->no_traceparent || o->parent) {
    h2t__trace_ctx_new(&r->tctx, o->parent);
    send_tp = !r->client->no_traceparent;
  } else
    r->tctxp = NULL;
  if (send_tp) {
    strlen_total += sizeof "traceparent" + H2T_TRACEPARENT_LEN + 1;
    n++;
  }
  size_t mlen = strlen(method);
  strlen_total += 8 + mlen + 8 + strlen(r->url.scheme) + 11 +
                  strlen(r->url.authority) + 6 + strlen(r->url.path) + 8;
  size_t need = n * sizeof(nghttp2_nv) + strlen_total;
  if (r->hdrcap < need) {
    h2t_xfree(m, r->hdrbuf);
    r->hdrcap = 0;
    if (!(r->hdrbuf = h2t_xmalloc(m, need)))
      return H2T_ERR_NOMEM;
    r->hdrcap = need;
  }
  char *buf = r->hdrbuf;
  r->nv = (nghttp2_nv *)(void *)buf;
  char *p = buf + n * sizeof(nghttp2_nv);
  size_t k = 0;
  nv_set(&r->nv[k++], &p, ":method", 7, method, mlen, 0);
  r->method = (const char *)r->nv[0].value;
  nv_set(&r->nv[k++], &p, ":scheme", 7, r->url.scheme, strlen(r->url.scheme),
         0);
  nv_set(&r->nv[k++], &p, ":authority", 10, r->url.authority,
         strlen(r->url.authority), 0);
  nv_set(&r->nv[k++], &p, ":path", 5, r->url.path, strlen(r->url.path), 0);
  for (size_t i = 0; i < o->nheaders; i++) {
    const h2t_header *h = &o->headers[i];
    if (hop_by_hop(h->name))
      continue;
    nv_set(&r->nv[k++], &p, h->name, strlen(h->name), h->value,
           strlen(h->value), 1);
  }
  if (clbuf[0])
    nv_set(&r->nv[k++], &p, "content-length", 14, clbuf, strlen(clbuf), 0);
  if (send_tp) {
    /* formatted in place; its NO_INDEX flag is attach()'s to set */
    nghttp2_nv *nv = r->tp_nv = &r->nv[k++];
    memcpy(p, "traceparent", sizeof "traceparent");
    nv->name = (uint8_t *)p;
    nv->namelen = sizeof "traceparent" - 1;
    p += sizeof "traceparent";
    h2t__trace_ctx_write(&r->tctx, p);
    p[H2T_TRACEPARENT_LEN] = '\0';
    nv->value = (uint8_t *)p;
    nv->valuelen = H2T_TRACEPARENT_LEN;
    nv->flags = NGHTTP2_NV_FLAG_NO_COPY_NAME | NGHTTP2_NV_FLAG_NO_COPY_VALUE;
    p += H2T_TRACEPARENT_LEN + 1;
  }
  r->nnv = k;
  return 0;
}

/* r->url from s, into r->urlbuf.  The last URL's parse is kept: clients
 * tend to fetch the same one again. */
int h2t__req_url(h2t_client *c, h2t_request *r, const char *s) {
  const h2t_mem *m = c->mem;
  h2_url tmp;
  const h2_url *src = &c->last_url_parsed;
  if (!s || !c->last_url || strcmp(s, c->last_url)) {
    int rv = h2t__url_parse(m, s, &tmp);
    if (rv)
      return rv;
    char *copy = h2t_xstrdup(m, s);
    src = &tmp;
    if (copy) { /* cache it; without memory, just don't */
      h2t_xfree(m, c->last_url);
      h2t__url_free(m, &c->last_url_parsed);
      c->last_url = copy;
      c->last_url_parsed = tmp;
      src = &c->last_url_parsed;
    }
  }
  int rv = 0;
  if (r->urlcap < src->buflen_) {
    h2t_xfree(m, r->urlbuf);
    r->urlcap = 0;
    if ((r->urlbuf = h2t_xmalloc(m, src->buflen_)))
      r->urlcap = src->buflen_;
    else
      rv = H2T_ERR_NOMEM;
  }
  if (!rv)
    h2t__url_copy_to(src, &r->url, r->urlbuf);
  if (src == &tmp)
    h2t__url_free(m, &tmp);
  return rv;
}

/* The request's trace chain: its own trace (copied), then the client's.
 * Equivalent to h2t__trace_chain_add() of both, without recomputing masks for
 * the common case of the same trace on every request. */
void h2t__req_chain(h2t_client *c, h2t_request *r,
                    const h2t_client_trace *t) {
  /* Checked at submit (h2t__req_opts_copy), so the copy cannot fail. */
  if (!t || h2t__struct_in(&r->trace_copy, sizeof r->trace_copy, t,
                           H2T__CLIENT_TRACE_V1) != 0) {
    r->tc = c->tc_default;
    return;
  }
  h2t__trace_chain_clear(&r->tc, 0);
  if (!r->trace_copy.next && c->last_trace_valid &&
      !memcmp(&r->trace_copy, &c->last_trace, sizeof r->trace_copy)) {
    h2t__trace_chain_push(&r->tc, &r->trace_copy, c->last_trace_mask);
  } else {
    h2t__trace_chain_add(&r->tc, &r->trace_copy);
    if (!r->trace_copy.next) {
      c->last_trace = r->trace_copy;
      c->last_trace_mask = r->tc.mask;
      c->last_trace_valid = 1;
    }
  }
  if (c->trace)
    h2t__trace_chain_push(&r->tc, c->trace, c->tc_default.mask);
}

