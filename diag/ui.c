/* The web page at /debug/ui: static files built into the library, served
 * as they are.  The page reads the JSON routes of this endpoint (and of
 * others, through their CORS answer) from the browser. */
#include <stdio.h>
#include <string.h>

#include "diag/diag_int.h"

#define UI_PREFIX "/debug/ui"

/* The page talks to the endpoints the user names (?endpoints=) and to
 * nothing else: no inline script, no outside file, not framed (the cancel
 * button must not be clickable through someone else's page). */
#define UI_CSP                                                                 \
  "default-src 'none'; script-src 'self'; style-src 'self'; "                 \
  "img-src 'self' data:; connect-src *; frame-ancestors 'none'; "             \
  "base-uri 'none'; form-action 'none'"

int h2t__ui_match(const char *url) {
  size_t n = sizeof UI_PREFIX - 1;
  return !strncmp(url, UI_PREFIX, n) && (url[n] == '\0' || url[n] == '/');
}

static enum MHD_Result ui_error(struct MHD_Connection *c, unsigned status,
                                const char *msg) {
  char buf[128];
  int n = snprintf(buf, sizeof buf, "{\"error\":\"%s\",\"status\":%u}", msg,
                   status);
  struct MHD_Response *r = MHD_create_response_from_buffer(
      (size_t)n, buf, MHD_RESPMEM_MUST_COPY);
  if (!r)
    return MHD_NO;
  MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, "application/json");
  MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
  if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
    MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
  enum MHD_Result rc = MHD_queue_response(c, status, r);
  MHD_destroy_response(r);
  return rc;
}

enum MHD_Result h2t__ui_serve(struct MHD_Connection *c, const char *url,
                              int get) {
  const char *name = url + sizeof UI_PREFIX - 1;
  if (*name == '/')
    name++;
  if (!*name)
    name = "index.html";
  const h2t__ui_file *f = h2t__ui_files;
  while (f->name && strcmp(f->name, name))
    f++;
  if (!f->name)
    return ui_error(c, MHD_HTTP_NOT_FOUND, "not found");
  if (!get)
    return ui_error(c, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed");

  /* Revalidated on every load (no-cache), so a new library version shows
   * its page at once; an unchanged file costs a 304. */
  const char *inm = MHD_lookup_connection_value(c, MHD_HEADER_KIND,
                                                MHD_HTTP_HEADER_IF_NONE_MATCH);
  int same = inm && strstr(inm, f->etag) != NULL;
  struct MHD_Response *r = MHD_create_response_from_buffer(
      same ? 0 : f->len, same ? NULL : (void *)f->data, MHD_RESPMEM_PERSISTENT);
  if (!r)
    return MHD_NO;
  MHD_add_response_header(r, MHD_HTTP_HEADER_ETAG, f->etag);
  MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
  if (!same)
    MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, f->ctype);
  MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
  MHD_add_response_header(r, "Referrer-Policy", "no-referrer");
  if (!strcmp(name, "index.html")) {
    MHD_add_response_header(r, "Content-Security-Policy", UI_CSP);
    MHD_add_response_header(r, "X-Frame-Options", "DENY");
  }
  enum MHD_Result rc =
      MHD_queue_response(c, same ? MHD_HTTP_NOT_MODIFIED : MHD_HTTP_OK, r);
  MHD_destroy_response(r);
  return rc;
}
