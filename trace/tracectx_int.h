/*
 * W3C trace context, as h2/ sees it (trace/tracectx.c): ids for a new span
 * and the traceparent value, cheap enough for every request.  Kept out of
 * trace_int.h so that it grows on its own.
 */
#ifndef H2T_TRACECTX_INT_H
#define H2T_TRACECTX_INT_H

#include <h2trace/trace.h>

/* A context for a new span: under `parent` (trace_id and flags kept, its
 * span_id as parent_span_id) when it has a non-zero trace_id and span_id,
 * else a new sampled trace with no parent.  Ids come from a per-thread
 * xoshiro256** generator seeded once per thread (and again in a forked
 * child) from getrandom(): no system call per request. */
void h2t__trace_ctx_new(h2t_trace_context *out, const h2t_trace_context *parent);

/* The traceparent value of ctx, exactly H2T_TRACEPARENT_LEN bytes, no NUL.
 * ctx's ids must not be zero (h2t__trace_ctx_new's never are). */
void h2t__trace_ctx_write(const h2t_trace_context *ctx, char *out);

/* Lowercase hex of n bytes into out (2n bytes, no NUL). */
void h2t__hex(const uint8_t *in, size_t n, char *out);

/* 1 if the n bytes are all zero. */
static inline int h2t__zero_id(const uint8_t *p, size_t n) {
  uint8_t acc = 0;
  for (size_t i = 0; i < n; i++)
    acc |= p[i];
  return acc == 0;
}

/* The in-flight entry's copy of a request's context (trace/inflight.c;
 * NULL: none).  Owner thread only, like h2t__inflight_event(). */
struct inflight_entry;
void h2t__inflight_set_trace(struct inflight_entry *e,
                             const h2t_trace_context *ctx);

#endif
