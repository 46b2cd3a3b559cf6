/*
 * What the fuzz targets share.  Each tests/fuzz/fuzz_<surface>.c defines
 * LLVMFuzzerTestOneInput for one surface that takes outside input; it is
 * linked either with libFuzzer (clang, H2T_FUZZ=ON) or with replay.c, which
 * runs the seed corpus through it in every build.
 */
#ifndef H2T_FUZZ_H
#define H2T_FUZZ_H

#include <stddef.h>
#include <stdint.h>

#include <h2trace/trace.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Stop the run with a message: what a finding looks like without a
 * sanitizer to report it. */
void h2t_fuzz_fail(const char *fmt, ...) __attribute__((noreturn, format(printf, 1, 2)));

/* Is s[0..len) exactly one JSON value (RFC 8259) in valid UTF-8, nothing
 * around it?  Small and strict: a check for our writers, not a parser. */
int h2t_fuzz_json_valid(const char *s, size_t len);

/* A trace hook for `any`: every event through h2t_event_json(), at its
 * exact size and truncated, and the line checked with h2t_fuzz_json_valid(). */
void h2t_fuzz_event_check(const h2t_event *ev, void *user);

/* tests/fuzz/srv_harness.c: one in-process server (INLINE writer, no
 * threads, no network) kept across inputs.  Opens a connection on a
 * socketpair, writes the client connection preface (magic and an empty
 * SETTINGS), then `data`, answers nothing but drains what the server
 * writes, steps the loop a bounded number of times, closes its end and
 * checks that the server let the connection go. */
void h2t_fuzz_server_feed(const uint8_t *data, size_t size);

#endif
