/*
 * h2t__url_parse(): any string.  What it accepts must hold what the client
 * relies on: a host without upper case, a port, a path starting with '/'
 * and free of controls and spaces (it goes into :path as is), an authority
 * that is the URL's, and a copy (h2t__url_copy_to) equal to the original.
 */
#include <stdlib.h>
#include <string.h>

#include "h2/net/net.h"
#include "trace/trace_int.h"

#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 4096)
    return 0;
  char *s = malloc(size + 1);
  memcpy(s, data, size);
  s[size] = '\0';
  h2_url u;
  int rv = h2t__url_parse(NULL, s, &u);
  if (rv == 0) {
    if (!u.host[0] || !u.port || u.path[0] != '/' || !u.authority[0] ||
        strcmp(u.scheme, u.tls ? "https" : "http"))
      h2t_fuzz_fail("accepted \"%s\": host \"%s\" port %u path \"%s\"", s,
                    u.host, u.port, u.path);
    for (const char *p = u.host; *p; p++)
      if (*p >= 'A' && *p <= 'Z')
        h2t_fuzz_fail("upper case in host \"%s\"", u.host);
    for (const unsigned char *p = (const unsigned char *)u.path; *p; p++)
      if (*p <= 0x20 || *p == 0x7f || *p == '#')
        h2t_fuzz_fail("byte 0x%02x in path of \"%s\"", *p, s);
    if (!strstr(s, u.authority) || strpbrk(u.authority, "/?#@"))
      h2t_fuzz_fail("authority \"%s\" of \"%s\"", u.authority, s);
    char *buf = malloc(u.buflen_);
    h2_url c;
    h2t__url_copy_to(&u, &c, buf);
    if (strcmp(c.host, u.host) || strcmp(c.authority, u.authority) ||
        strcmp(c.path, u.path) || c.port != u.port || c.buf_)
      h2t_fuzz_fail("copy of \"%s\" differs", s);
    free(buf);
    h2t__url_free(NULL, &u);
  } else if (rv != H2T_ERR_BAD_URL) {
    h2t_fuzz_fail("h2t__url_parse: %d", rv);
  }
  free(s);
  return 0;
}
