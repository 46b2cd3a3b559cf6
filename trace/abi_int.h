/*
 * The one struct_size rule of doc/ABI.md, for every entry point that takes a
 * struct the caller fills.  Header-only (no symbol), so that every layer,
 * diag/ included, checks sizes the same way.
 *
 *   - struct_size smaller than the struct's first version: H2T_ERR_INVALID_ARG;
 *   - larger than this library knows: accepted, the unknown tail ignored;
 *   - fields beyond struct_size (an older caller): their defaults (0/NULL).
 *
 * h2t__struct_in() copies a caller's struct into a zeroed one of this
 * version's size, so that the code after it reads every field freely.
 */
#ifndef H2T_ABI_INT_H
#define H2T_ABI_INT_H

#include <stddef.h>
#include <string.h>

#include <h2trace/h2trace.h>

/* The size of a struct's first version: up to the end of its last field. */
#define H2T__SIZE_TO(T, last) (offsetof(T, last) + sizeof(((T *)0)->last))

/* First versions (h2trace 0.1).  Fields appended later are listed where
 * their struct is declared; a caller compiled before them gets defaults. */
#define H2T__CLIENT_CONFIG_V1 H2T__SIZE_TO(h2t_client_config, initial_window_size)
#define H2T__REQUEST_OPTS_V1 H2T__SIZE_TO(h2t_request_opts, timeout_ms)
#define H2T__SERVER_CONFIG_V1 H2T__SIZE_TO(h2t_server_config, write_queue_limit)
#define H2T__LISTEN_OPTS_V1 H2T__SIZE_TO(h2t_listen_opts, backlog)
#define H2T__DIAG_CONFIG_V1 H2T__SIZE_TO(h2t_diag_config, timeout_s)
#define H2T__INFLIGHT_CONFIG_V1                                                \
  H2T__SIZE_TO(h2t_inflight_config, nsensitive_headers)
#define H2T__EXPORT_CONFIG_V1 H2T__SIZE_TO(h2t_export_config, mem)
#define H2T__SATURATE_CONFIG_V1 H2T__SIZE_TO(h2t_saturate_config, user)
#define H2T__CLIENT_TRACE_V1 H2T__SIZE_TO(h2t_client_trace, done)
#define H2T__SERVER_TRACE_V1 H2T__SIZE_TO(h2t_server_trace, load_shed)

/* Is a caller's struct of `have` bytes acceptable for one whose first
 * version was `v1` bytes?  0 or H2T_ERR_INVALID_ARG. */
static inline int h2t__struct_ok(size_t have, size_t v1) {
  return have < v1 ? H2T_ERR_INVALID_ARG : 0;
}

/* Check `src` (a struct beginning with size_t struct_size) against `v1` and
 * copy it into `dst` of `size` bytes: fields the caller did not have are 0,
 * a tail this version does not know is dropped, dst's struct_size is
 * `size`.  0 or H2T_ERR_INVALID_ARG (src NULL or too small). */
static inline int h2t__struct_in(void *dst, size_t size, const void *src,
                                 size_t v1) {
  size_t have;
  if (!src)
    return H2T_ERR_INVALID_ARG;
  memcpy(&have, src, sizeof have);
  if (h2t__struct_ok(have, v1) != 0)
    return H2T_ERR_INVALID_ARG;
  memset(dst, 0, size);
  memcpy(dst, src, have < size ? have : size);
  memcpy(dst, &size, sizeof size);
  return 0;
}

#endif
