/* The blocking convenience over the asynchronous API: h2t_client_fetch()
 * collects one response while it runs the client's loop.  The request's
 * `user` stays the application's: the state rides in r->fetch. */
#include <stddef.h>
#include <string.h>

#include "h2/client/client_int.h"

typedef struct h2t__fetch {
  h2t_client *c;
  h2t_response *resp;
  size_t cap;
  int done, error, oom;
} fetch_state;

static int fetch_headers(h2t_request *r, int status, const h2t_header *h,
                         size_t n, void *user) {
  fetch_state *st = r->fetch;
  const h2t_mem *m = st->c->mem;
  st->resp->status = status;
  st->resp->headers = h2t_xcalloc(m, n ? n : 1, sizeof(h2t_header));
  if (!st->resp->headers) {
    st->oom = 1;
    return 1;
  }
  for (size_t i = 0; i < n; i++) {
    char *nm = h2t_xstrdup(m, h[i].name), *v = h2t_xstrdup(m, h[i].value);
    if (!nm || !v) {
      h2t_xfree(m, nm);
      h2t_xfree(m, v);
      st->oom = 1;
      return 1;
    }
    st->resp->headers[i].name = nm;
    st->resp->headers[i].value = v;
    st->resp->nheaders = i + 1;
  }
  return 0;
}

static int fetch_data(h2t_request *r, const uint8_t *d, size_t len,
                      void *user) {
  fetch_state *st = r->fetch;
  if (h2t__buf_append(st->c->mem, &st->resp->body, &st->resp->body_len,
                      &st->cap, 1024, d, len) != 0) {
    st->oom = 1;
    return 1;
  }
  return 0;
}

static void fetch_done(h2t_request *r, int error, void *user) {
  fetch_state *st = r->fetch;
  st->done = 1;
  st->error = st->oom ? H2T_ERR_NOMEM : error;
}

int h2t_client_fetch(h2t_client *c, const h2t_request_opts *opts,
                     h2t_response *resp) {
  h2t_request_opts o;
  if (!c || !resp || h2t__req_opts_copy(&o, opts) != 0)
    return H2T_ERR_INVALID_ARG;
  memset(resp, 0, sizeof *resp);
  if (c->mem)
    resp->mem = *c->mem;
  if (c->running)
    return H2T_ERR_STATE;
  fetch_state st = {.c = c, .resp = resp};
  o.on_headers = fetch_headers;
  o.on_data = fetch_data;
  o.on_done = fetch_done;
  int rv = h2t__client_submit(c, &o, NULL, &st);
  if (rv)
    return rv;
  c->running = 1;
  while (!st.done)
    ev_run(c->loop, EVRUN_ONCE);
  c->running = 0;
  if (st.error) {
    h2t_response_free(resp);
    return st.error;
  }
  if (!resp->body) { /* NUL-terminated even when empty */
    resp->body = h2t_xcalloc(c->mem, 1, 1);
    if (!resp->body) {
      h2t_response_free(resp);
      return H2T_ERR_NOMEM;
    }
  }
  return 0;
}

void h2t_response_free(h2t_response *resp) {
  if (!resp)
    return;
  h2t_mem mem = resp->mem;
  const h2t_mem *m = mem.free ? &mem : NULL;
  for (size_t i = 0; i < resp->nheaders; i++) {
    h2t_xfree(m, (void *)resp->headers[i].name);
    h2t_xfree(m, (void *)resp->headers[i].value);
  }
  h2t_xfree(m, resp->headers);
  h2t_xfree(m, resp->body);
  memset(resp, 0, sizeof *resp);
}
