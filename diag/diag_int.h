/*
 * diag/ private interface: the diagnostics endpoint (libh2trace_diag).
 * Built on the public API of libh2trace only: the core library exports
 * nothing else, and it never calls into diag/.
 */
#ifndef H2T_DIAG_INT_H
#define H2T_DIAG_INT_H

#include <stdatomic.h>

#include <h2trace/h2trace.h>

/* stacks.c: install / remove the thread-sampling signal (the sampling
 * itself is h2t_diag_threads_json()). */
int h2t__stacks_init(void);
void h2t__stacks_fini(void);

/* diag.c: serve a connection on a socket the caller made (a socketpair),
 * as if accepted from 127.0.0.1: the fuzz target's peer without a network.
 * fd is taken in every case.  0 or -1. */
struct h2t_diag;
int h2t__diag_adopt(struct h2t_diag *d, int fd);

#endif
