/*
 * The tools' reading of outside input that is not HTTP/2 (that is the
 * client target's): command-line values, through examples/util/cli.c —
 * -H "Name: value", numbers, durations, -d DATA — and the formatters that
 * print numbers read from peers.  (h2top's JSON reading is not in this
 * tree yet.)
 */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "fuzz.h"

static int tchar(unsigned char ch) {
  return isalnum(ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 4096)
    return 0;
  char *s = malloc(size + 1);
  memcpy(s, data, size);
  s[size] = '\0';

  h2t_header h;
  if (cli_header_parse(s, &h) == 0) {
    size_t vl = strlen(h.value);
    if (!h.name[0])
      h2t_fuzz_fail("empty name from \"%s\"", s);
    for (const char *p = h.name; *p; p++)
      if (!tchar((unsigned char)*p) || (*p >= 'A' && *p <= 'Z'))
        h2t_fuzz_fail("name \"%s\" from \"%s\"", h.name, s);
    if (strpbrk(h.value, "\r\n") ||
        (vl && (strchr(" \t", h.value[0]) || strchr(" \t", h.value[vl - 1]))))
      h2t_fuzz_fail("value \"%s\" from \"%s\"", h.value, s);
    free((void *)h.name);
  }
  cli_headers hs = {0};
  cli_headers_add(&hs, s);
  cli_headers_add(&hs, s);
  cli_headers_free(&hs);

  uint64_t v = 7, us;
  if (cli_parse_u64(s, 1, 65535, &v) == 0 && (v < 1 || v > 65535))
    h2t_fuzz_fail("%llu out of [1, 65535] from \"%s\"", (unsigned long long)v, s);
  if (cli_parse_u64(s, 0, UINT64_MAX, &v) == 0 && !isdigit((unsigned char)s[0]))
    h2t_fuzz_fail("accepted \"%s\"", s);
  if (cli_parse_seconds(s, &us) == 0 && us > 1000000000ull * 1000000ull + 1)
    h2t_fuzz_fail("%llu us from \"%s\"", (unsigned long long)us, s);

  if (s[0] != '@') { /* "@file" reads a file: not the input's to name */
    char *body = NULL, err[128];
    size_t blen;
    if (cli_body_arg(s, &body, &blen, err, sizeof err) == 0 &&
        (blen != strlen(s) || memcmp(body, s, blen + 1)))
      h2t_fuzz_fail("-d \"%s\" changed", s);
    free(body);
  }

  /* the formatters with numbers from the input, into short buffers */
  uint64_t n = 0;
  memcpy(&n, data, size < sizeof n ? size : sizeof n);
  double d;
  memcpy(&d, &n, sizeof d);
  char buf[16];
  for (size_t len = 1; len <= sizeof buf; len += 5) {
    memset(buf, 'x', sizeof buf);
    cli_fmt_ms(buf, len, n);
    if (!memchr(buf, '\0', len))
      h2t_fuzz_fail("cli_fmt_ms(%zu) unterminated", len);
    cli_fmt_duration(buf, len, d);
    if (!memchr(buf, '\0', len))
      h2t_fuzz_fail("cli_fmt_duration(%zu) unterminated", len);
    cli_fmt_bytes(buf, len, d);
    if (!memchr(buf, '\0', len))
      h2t_fuzz_fail("cli_fmt_bytes(%zu) unterminated", len);
  }
  free(s);
  return 0;
}
