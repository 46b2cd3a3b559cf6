/*
 * diag/ private interface: the diagnostics endpoint (libh2trace_diag).
 * Built on the public API of libh2trace only: the core library exports
 * nothing else, and it never calls into diag/.
 */
#ifndef H2T_DIAG_INT_H
#define H2T_DIAG_INT_H

#include <stdatomic.h>

#include <microhttpd.h>

#include <h2trace/h2trace.h>

/* stacks.c: install / remove the thread-sampling signal (the sampling
 * itself is h2t_diag_threads_json()). */
int h2t__stacks_init(void);
void h2t__stacks_fini(void);

/* ui.c: the web page at /debug/ui, whose files (diag/ui/) the build
 * embeds into diag_ui_files.c; the table ends with a NULL name. */
typedef struct h2t__ui_file {
  const char *name, *ctype, *etag;
  const unsigned char *data;
  size_t len;
} h2t__ui_file;
extern const h2t__ui_file h2t__ui_files[];

/* 1 if url is the page's: "/debug/ui" or "/debug/ui/...". */
int h2t__ui_match(const char *url);
/* Answer GET/HEAD (get=1) of a url that h2t__ui_match() took. */
enum MHD_Result h2t__ui_serve(struct MHD_Connection *c, const char *url,
                              int get);

/* diag.c: serve a connection on a socket the caller made (a socketpair),
 * as if accepted from 127.0.0.1: the fuzz target's peer without a network.
 * fd is taken in every case.  0 or -1. */
struct h2t_diag;
int h2t__diag_adopt(struct h2t_diag *d, int fd);

#endif
