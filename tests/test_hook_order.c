/* The hook order doc/guide.md documents is the order the client fires its
 * hooks and callbacks.  The test reads the sequences from the guide's
 * "Hook order" section (the indented blocks under "**GET on a new h2c
 * connection**", "**GET on a new TLS connection**" and "**POST with a
 * body**") and compares them with what a real request records against
 * nghttpd on loopback, h2c and TLS.
 *
 * A documented line is "name [*|?] [annotation]": an event name or one of
 * the callbacks on_headers, on_data, on_done; `*` one or more times in a
 * row, `?` zero or one time.  The event `settings` depends on I/O timing
 * and is checked apart: it comes after got_conn. */
#include <ctype.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <h2trace/client.h>
#include "peer.h"

#define MAXSEQ 256

typedef struct seq {
  const char *name[MAXSEQ];
  char mod[MAXSEQ]; /* '\0', '*' or '?' (documented sequences only) */
  int n;
} seq;

static void push(seq *s, const char *name, char mod) {
  if (s->n < MAXSEQ) {
    s->name[s->n] = name;
    s->mod[s->n++] = mod;
  }
}

/* --- the documented order ---------------------------------------------- */

static char *slurp(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f)
    return NULL;
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  char *b = malloc((size_t)n + 1);
  b[fread(b, 1, (size_t)n, f)] = '\0';
  fclose(f);
  return b;
}

/* The indented block that follows `title` in guide.md's Hook order
 * section.  Names point into `doc` (NUL-terminated in place). */
static int documented(char *doc, const char *title, seq *out) {
  memset(out, 0, sizeof *out);
  char *sec = strstr(doc, "\n## Hook order\n");
  if (!sec)
    return -1;
  char *end = strstr(sec + 1, "\n## ");
  char *t = strstr(sec, title);
  if (!t || (end && t > end))
    return -1;
  char *p = strstr(t, "\n\n");
  if (!p)
    return -1;
  p += 2;
  while (!strncmp(p, "    ", 4)) { /* one line of the block */
    char *nl = strchr(p, '\n');
    if (!nl)
      return -1;
    *nl = '\0';
    char *w = p + 4;
    char *we = w;
    while (*we && (isalnum((unsigned char)*we) || *we == '_'))
      we++;
    char mod = 0;
    char *q = we;
    while (*q == ' ')
      q++;
    if (*q == '*' || *q == '?')
      mod = *q;
    *we = '\0';
    if (*w && strcmp(w, "settings")) /* checked apart */
      push(out, w, mod);
    p = nl + 1;
  }
  return out->n ? 0 : -1;
}

/* --- what the code does ---------------------------------------------------- */

static seq got;

static void on_any(const h2t_event *ev, void *user) {
  push(&got, h2t_event_name(ev->type), 0);
}

static int on_headers(h2t_request *r, int status, const h2t_header *h,
                      size_t n, void *user) {
  push(&got, "on_headers", 0);
  return 0;
}

static int on_data(h2t_request *r, const uint8_t *d, size_t len, void *user) {
  push(&got, "on_data", 0);
  return 0;
}

static int done_error = 1;
static void on_done(h2t_request *r, int error, void *user) {
  push(&got, "on_done", 0);
  done_error = error;
}

static void record(int tls, int port, const char *path, const void *body,
                   size_t body_len) {
  memset(&got, 0, sizeof got);
  h2t_client_config cc = {H2T_CLIENT_CONFIG_INIT};
  cc.insecure = 1;
  h2t_client *c;
  assert_int_equal(h2t_client_new(&c, &cc), 0);
  h2t_client_trace tr;
  assert_int_equal(h2t_client_trace_set_all(&tr, on_any, NULL), 0);
  char url[128];
  snprintf(url, sizeof url, "%s://127.0.0.1:%d%s", tls ? "https" : "http",
           port, path);
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = url, .trace = &tr,
                        .body = body, .body_len = body_len,
                        .on_headers = on_headers, .on_data = on_data,
                        .on_done = on_done};
  done_error = 1;
  assert_int_equal(h2t_request_submit(c, &o, NULL), 0);
  h2t_client_run(c);
  h2t_client_del(c);
  assert_int_equal(done_error, 0);
}

static void print_seq(const char *what, const seq *s) {
  fprintf(stderr, "%s:", what);
  for (int i = 0; i < s->n; i++)
    fprintf(stderr, " %s%s", s->name[i],
            s->mod[i] == '*' ? "*" : s->mod[i] == '?' ? "?" : "");
  fprintf(stderr, "\n");
}

/* Does `g` (settings taken out) match the documented `d`? */
static int matches(const seq *d, const seq *g) {
  int j = 0;
  for (int i = 0; i < d->n; i++) {
    int k = 0;
    while (j < g->n && !strcmp(g->name[j], d->name[i]) &&
           (d->mod[i] == '*' || k == 0)) {
      j++;
      k++;
    }
    if (k == 0 && d->mod[i] != '?')
      return 0;
  }
  return j == g->n;
}

static void check(const char *title, int tls, int port, const char *path,
                  const void *body, size_t body_len) {
  char *doc = slurp(H2T_SOURCE_DIR "/doc/guide.md");
  assert_non_null(doc);
  seq d;
  if (documented(doc, title, &d) != 0) {
    fprintf(stderr, "guide.md: no hook-order block under \"%s\"\n", title);
    fail();
  }
  record(tls, port, path, body, body_len);
  /* settings: timing depends on I/O; after got_conn, once */
  seq g = {0};
  int got_conn_at = -1, settings_at = -1;
  for (int i = 0; i < got.n; i++) {
    if (!strcmp(got.name[i], "got_conn"))
      got_conn_at = i;
    if (!strcmp(got.name[i], "settings")) {
      if (settings_at < 0)
        settings_at = i;
      continue;
    }
    push(&g, got.name[i], 0);
  }
  int ok = matches(&d, &g) && settings_at > got_conn_at && got_conn_at >= 0;
  if (!ok) {
    fprintf(stderr, "%s\n", title);
    print_seq("  documented", &d);
    print_seq("  fired     ", &got);
  }
  free(doc);
  assert_true(ok);
}

static int h2c_port, tls_port;

static int setup(void **state) {
  if (h2t_test_nghttpd(0, NULL, NULL, &h2c_port) < 0 ||
      h2t_test_nghttpd(1, NULL, NULL, &tls_port) < 0)
    return -1;
  return 0;
}

static void test_get_h2c(void **state) {
  check("**GET on a new h2c connection**", 0, h2c_port, "/", NULL, 0);
}

static void test_get_tls(void **state) {
  check("**GET on a new TLS connection**", 1, tls_port, "/", NULL, 0);
}

static const char post_body[] = "name=value&other=1";

static void test_post_h2c(void **state) {
  check("**POST with a body**", 0, h2c_port, "/", post_body,
        sizeof post_body - 1);
}

static void test_post_tls(void **state) {
  check("**POST with a body**", 1, tls_port, "/", post_body,
        sizeof post_body - 1);
}

/* The matcher itself: it must reject what the guide does not say. */
static void test_matcher(void **state) {
  seq d = {0}, g = {0};
  push(&d, "a", 0);
  push(&d, "b", '*');
  push(&d, "c", '?');
  push(&d, "d", 0);
  push(&g, "a", 0);
  push(&g, "b", 0);
  push(&g, "b", 0);
  push(&g, "d", 0);
  assert_true(matches(&d, &g));
  g.n = 0;
  push(&g, "a", 0);
  push(&g, "d", 0);
  assert_false(matches(&d, &g)); /* b is one or more */
  g.n = 0;
  push(&g, "a", 0);
  push(&g, "b", 0);
  push(&g, "c", 0);
  push(&g, "c", 0);
  push(&g, "d", 0);
  assert_false(matches(&d, &g)); /* c at most once */
  g.n = 0;
  push(&g, "a", 0);
  push(&g, "b", 0);
  push(&g, "d", 0);
  push(&g, "e", 0);
  assert_false(matches(&d, &g)); /* nothing undocumented after */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_matcher),
      cmocka_unit_test(test_get_h2c),
      cmocka_unit_test(test_get_tls),
      cmocka_unit_test(test_post_h2c),
      cmocka_unit_test(test_post_tls),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
