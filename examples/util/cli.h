/*
 * What the h2trace CLIs share: number and header parsing, durations and sizes
 * for humans, colour that respects terminals and NO_COLOR, reading files.
 * Not part of the library; single-threaded use.
 */
#ifndef H2T_CLI_H
#define H2T_CLI_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <h2trace/common.h>

/* Parse a whole decimal string into [min, max].  0, or -1 (out is untouched)
 * for garbage, sign, overflow or out of range. */
int cli_parse_u64(const char *s, uint64_t min, uint64_t max, uint64_t *out);

/* Parse "1.5" style non-negative seconds into microseconds; 0 or -1. */
int cli_parse_seconds(const char *s, uint64_t *us);

/* A duration in at most 7 characters, precise where it matters:
 * "210us", "2.10ms", "12.3ms", "1234ms", "12.3s".  Returns buf. */
char *cli_fmt_ms(char *buf, size_t len, uint64_t us);

/* h2load's style: "123us", "4.56ms", "1.23s".  Returns buf. */
char *cli_fmt_duration(char *buf, size_t len, double us);

/* Binary units like h2load: "512B", "5.12KB", "5.12MB", "1.02GB". */
char *cli_fmt_bytes(char *buf, size_t len, double bytes);

/* Does `f` get colour?  Only a terminal, and not when NO_COLOR is set to a
 * non-empty value (no-color.org). */
int cli_want_color(FILE *f);

/* SGR sequences; each is "" when colour is off so they can always be
 * printed.  Set by cli_color_init(). */
typedef struct cli_colors {
  const char *reset, *dim, *bold, *green, *cyan, *yellow, *red;
} cli_colors;

void cli_color_init(cli_colors *c, int on);

/* A request header from the command line, "Name: value".  The name is
 * lower-cased (HTTP/2 wants it so) and the value's leading blanks dropped;
 * both point into one malloc'd block stored in h->name (free that).
 * Returns 0 or -1 when there is no colon, the name is empty or has bytes not
 * allowed in a field name. */
int cli_header_parse(const char *arg, h2t_header *h);

/* A growing array of headers from repeated -H. */
typedef struct cli_headers {
  h2t_header *v;
  size_t n, cap;
} cli_headers;

/* Parse and append; 0, -1 on a bad header, -2 out of memory. */
int cli_headers_add(cli_headers *hs, const char *arg);
void cli_headers_free(cli_headers *hs);

/* Read a whole file ("-" is stdin).  0 and *data (malloc'd, NUL-terminated)
 * and *len, or -1 with errno set. */
int cli_read_file(const char *path, char **data, size_t *len);

/* "-d DATA" / "-d @file", like curl.  0, or -1 (message in err). */
int cli_body_arg(const char *arg, char **data, size_t *len, char *err,
                 size_t errlen);

/* "PROG: <fmt with arg> (see PROG --help)" on stderr, for a bad command
 * line.  Returns 2, the exit status of bad usage. */
int cli_usage_error(const char *prog, const char *fmt, const char *arg);

#endif
