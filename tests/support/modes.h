/* Test support: run a test once per frame-writer mode, named "test/mode"
 * in the output so a failure says which mode. */
#ifndef H2T_TEST_MODES_H
#define H2T_TEST_MODES_H

#include <h2trace/server.h>

extern h2t_writer_mode h2t_test_modes[3]; /* reused, spawn, inline */

#define H2T_TEST_MODE_ENTRY_(f, i, name)                                       \
  { #f "/" name, f, NULL, NULL, &h2t_test_modes[i] }
#define H2T_TEST_PER_MODE(f)                                                   \
  H2T_TEST_MODE_ENTRY_(f, 0, "reused"), H2T_TEST_MODE_ENTRY_(f, 1, "spawn"),   \
      H2T_TEST_MODE_ENTRY_(f, 2, "inline")

#endif
