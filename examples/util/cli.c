/* Helpers shared by the CLIs: parsing, formatting, colour, files. */
#include "cli.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int cli_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out) {
  if (!s || !isdigit((unsigned char)*s))
    return -1;
  errno = 0;
  char *end;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || *end || v < min || v > max)
    return -1;
  *out = v;
  return 0;
}

int cli_parse_seconds(const char *s, uint64_t *us) {
  if (!s || !(isdigit((unsigned char)*s) || *s == '.'))
    return -1;
  errno = 0;
  char *end;
  double v = strtod(s, &end);
  if (errno || *end || end == s || !(v >= 0) || v > 1e9)
    return -1;
  *us = (uint64_t)(v * 1e6 + 0.5);
  return 0;
}

char *cli_fmt_ms(char *buf, size_t len, uint64_t us) {
  double ms = (double)us / 1000.0;
  if (us < 1000)
    snprintf(buf, len, "%uus", (unsigned)us);
  else if (ms < 9.995)
    snprintf(buf, len, "%.2fms", ms);
  else if (ms < 99.95)
    snprintf(buf, len, "%.1fms", ms);
  else if (ms < 9999.5)
    snprintf(buf, len, "%.0fms", ms);
  else
    snprintf(buf, len, "%.1fs", ms / 1000.0);
  return buf;
}

char *cli_fmt_duration(char *buf, size_t len, double us) {
  if (us >= 1e6)
    snprintf(buf, len, "%.2fs", us / 1e6);
  else if (us >= 1e3)
    snprintf(buf, len, "%.2fms", us / 1e3);
  else
    snprintf(buf, len, "%.0fus", us);
  return buf;
}

char *cli_fmt_bytes(char *buf, size_t len, double b) {
  static const char *const units[] = {"B", "KB", "MB", "GB", "TB"};
  size_t u = 0;
  while (b >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
    b /= 1024;
    u++;
  }
  if (u == 0)
    snprintf(buf, len, "%.0fB", b);
  else
    snprintf(buf, len, "%.2f%s", b, units[u]);
  return buf;
}

int cli_want_color(FILE *f) {
  const char *nc = getenv("NO_COLOR");
  if (nc && *nc)
    return 0;
  return isatty(fileno(f));
}

void cli_color_init(cli_colors *c, int on) {
  if (on)
    *c = (cli_colors){"\033[0m", "\033[2m", "\033[1m", "\033[32m",
                      "\033[36m", "\033[33m", "\033[31m"};
  else
    *c = (cli_colors){"", "", "", "", "", "", ""};
}

/* RFC 9110 token characters: what a field name may contain. */
static int tchar(unsigned char ch) {
  return isalnum(ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

int cli_header_parse(const char *arg, h2t_header *h) {
  const char *colon = strchr(arg, ':');
  if (!colon || colon == arg)
    return -1;
  size_t nlen = (size_t)(colon - arg);
  for (size_t i = 0; i < nlen; i++)
    if (!tchar((unsigned char)arg[i]))
      return -1;
  const char *v = colon + 1;
  while (*v == ' ' || *v == '\t')
    v++;
  size_t vlen = strlen(v);
  while (vlen && (v[vlen - 1] == ' ' || v[vlen - 1] == '\t'))
    vlen--;
  for (size_t i = 0; i < vlen; i++)
    if (v[i] == '\r' || v[i] == '\n')
      return -1;
  char *blk = malloc(nlen + 1 + vlen + 1);
  if (!blk)
    return -1;
  for (size_t i = 0; i < nlen; i++)
    blk[i] = (char)tolower((unsigned char)arg[i]);
  blk[nlen] = '\0';
  memcpy(blk + nlen + 1, v, vlen);
  blk[nlen + 1 + vlen] = '\0';
  h->name = blk;
  h->value = blk + nlen + 1;
  return 0;
}

int cli_headers_add(cli_headers *hs, const char *arg) {
  h2t_header h;
  if (cli_header_parse(arg, &h) != 0)
    return -1;
  if (hs->n == hs->cap) {
    size_t cap = hs->cap ? hs->cap * 2 : 8;
    h2t_header *v = realloc(hs->v, cap * sizeof *v);
    if (!v) {
      free((char *)h.name);
      return -2;
    }
    hs->v = v;
    hs->cap = cap;
  }
  hs->v[hs->n++] = h;
  return 0;
}

void cli_headers_free(cli_headers *hs) {
  for (size_t i = 0; i < hs->n; i++)
    free((char *)hs->v[i].name);
  free(hs->v);
  memset(hs, 0, sizeof *hs);
}

int cli_read_file(const char *path, char **data, size_t *len) {
  FILE *f = strcmp(path, "-") ? fopen(path, "rb") : stdin;
  if (!f)
    return -1;
  size_t cap = 4096, n = 0;
  char *buf = malloc(cap);
  while (buf) {
    if (n + 1 >= cap) {
      char *nb = realloc(buf, cap * 2);
      if (!nb) {
        free(buf);
        buf = NULL;
        errno = ENOMEM;
        break;
      }
      buf = nb;
      cap *= 2;
    }
    size_t r = fread(buf + n, 1, cap - n - 1, f);
    n += r;
    if (r == 0) {
      if (ferror(f)) {
        int e = errno ? errno : EIO;
        free(buf);
        buf = NULL;
        errno = e;
      }
      break;
    }
  }
  if (f != stdin)
    fclose(f);
  if (!buf)
    return -1;
  buf[n] = '\0';
  *data = buf;
  *len = n;
  return 0;
}

int cli_body_arg(const char *arg, char **data, size_t *len, char *err,
                 size_t errlen) {
  if (arg[0] == '@') {
    if (cli_read_file(arg + 1, data, len) != 0) {
      snprintf(err, errlen, "cannot read %s: %s", arg + 1, strerror(errno));
      return -1;
    }
    return 0;
  }
  *len = strlen(arg);
  *data = malloc(*len + 1);
  if (!*data) {
    snprintf(err, errlen, "out of memory");
    return -1;
  }
  memcpy(*data, arg, *len + 1);
  return 0;
}

int cli_usage_error(const char *prog, const char *fmt, const char *arg) {
  fprintf(stderr, "%s: ", prog);
  fprintf(stderr, fmt, arg);
  fprintf(stderr, " (see %s --help)\n", prog);
  return 2;
}
