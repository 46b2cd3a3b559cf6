/*
 * h2trace: HAR and Chrome-trace export.
 *
 * Two sources, two formats, one streaming writer:
 *  - a recorder (h2t_export): a client trace whose `any` hook keeps, per
 *    request, its phases (queued, dns, connecting, tls, sending, waiting,
 *    receiving...), its request headers, status, bytes, and the GOAWAY and
 *    RST_STREAM it met.  Attach h2t_export_trace() to a client (its
 *    h2t_client_config.trace) or to requests (h2t_request_opts.trace).
 *  - the in-flight table's ring of recent requests (exp NULL), the same data
 *    as GET /debug/recent, client and server requests (no header values:
 *    the table keeps none).
 * and
 *  - HAR 1.2 (H2T_EXPORT_HAR): one entry per request, with `timings`
 *    (blocked, dns, connect, ssl, send, wait, receive in ms; -1 for a phase
 *    the request did not go through, so connect and ssl are -1 on a reused
 *    connection; ssl is included in connect, as the spec says) and
 *    `connection`, the connection id.  A served request (ring) maps reading
 *    the request to send, the handler to wait, writing to receive.
 *  - Chrome Trace Event JSON (H2T_EXPORT_CHROME), as Perfetto and
 *    chrome://tracing open it: µs timestamps, one process lane per
 *    connection ("conn #3 example.com:443") with a thread per stream,
 *    an `X` event per request and, nested in it, one per phase; instant
 *    events for GOAWAY (process-wide on the connection's lane) and
 *    RST_STREAM (on the stream's).
 *
 * Output is streamed: a reader formats one request at a time into a buffer
 * the size of the largest request, never the whole document, so exporting
 * 100 000 requests takes the memory of one.  Values of sensitive headers
 * (h2t_header_is_sensitive()) are written as "[redacted]", and the
 * recorder never stores them.
 *
 * Thread-safety: a recorder belongs to the loop of the requests it records
 * (its hook runs there); read it from that thread, or when they are done.
 * A reader of the recent ring (exp NULL) may run on any thread.
 */
#ifndef H2TRACE_EXPORT_H
#define H2TRACE_EXPORT_H

#include <sys/types.h>

#include <h2trace/common.h>
#include <h2trace/trace.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef enum h2t_export_format {
  H2T_EXPORT_HAR = 1,   /* HAR 1.2 */
  H2T_EXPORT_CHROME = 2 /* Chrome Trace Event JSON ({"traceEvents":[...]}) */
} h2t_export_format;

typedef struct h2t_export h2t_export;

typedef struct h2t_export_config {
  size_t struct_size;   /* H2T_EXPORT_CONFIG_INIT */
  size_t max_requests;  /* finished requests kept; beyond, the oldest are
                           dropped.  0: no limit */
  const h2t_mem *mem;   /* allocator; NULL: the C library's (copied) */
} h2t_export_config;

#define H2T_EXPORT_CONFIG_INIT .struct_size = sizeof(h2t_export_config)

/* Make a recorder.  cfg may be NULL for all defaults; it is not kept.
 * Returns 0 and sets *out, or H2T_ERR_INVALID_ARG / H2T_ERR_NOMEM. */
H2T_EXTERN int h2t_export_new(h2t_export **out, const h2t_export_config *cfg);

/* Free a recorder and what it recorded.  NULL is a no-op.  Requests that
 * still carry its trace must be done first. */
H2T_EXTERN void h2t_export_del(h2t_export *exp);

/* The trace to attach: its `any` hook records; it lives as long as exp.
 * Chain your own in front of it with your trace's `next`.  NULL if exp is
 * NULL. */
H2T_EXTERN const h2t_client_trace *h2t_export_trace(h2t_export *exp);

/* Requests recorded (finished, or still running: those are exported with
 * what they did so far).  0 for NULL. */
H2T_EXTERN size_t h2t_export_count(const h2t_export *exp);

/* Called with each piece of the document, in order; return 0 to go on,
 * anything else to stop (h2t_export_write() then returns H2T_ERR_CALLBACK). */
typedef int (*h2t_export_write_fn)(const char *data, size_t len, void *user);

/* Write exp's requests (NULL: the in-flight table's recent ring, newest
 * last) as one document in fmt, piece by piece to fn.  Returns 0, or
 * H2T_ERR_INVALID_ARG, H2T_ERR_NOMEM, H2T_ERR_CALLBACK. */
H2T_EXTERN int h2t_export_write(const h2t_export *exp, h2t_export_format fmt,
                                h2t_export_write_fn fn, void *user);

/* A pull-style reader of the same document, for a server that asks for
 * the next bytes (libmicrohttpd's content reader). */
typedef struct h2t_export_reader h2t_export_reader;

/* Start reading exp (NULL: the recent ring, as it is now; requests that
 * finish later are not included, and ones the ring overwrites meanwhile are
 * skipped).  exp must outlive the reader.  Returns 0 and sets *out, or
 * H2T_ERR_INVALID_ARG / H2T_ERR_NOMEM. */
H2T_EXTERN int h2t_export_reader_new(h2t_export_reader **out,
                                     const h2t_export *exp,
                                     h2t_export_format fmt);

/* Copy the next at most len bytes of the document into buf.  Returns how
 * many (0: the document is complete), or H2T_ERR_INVALID_ARG /
 * H2T_ERR_NOMEM. */
H2T_EXTERN ssize_t h2t_export_reader_read(h2t_export_reader *r, char *buf,
                                          size_t len);

/* on=1: each request's URL loses its query ("/search?redacted"), as the
 * diagnostics endpoint serves it unless told otherwise; call before the
 * first read.  Returns 0, or H2T_ERR_INVALID_ARG for a NULL reader. */
H2T_EXTERN int h2t_export_reader_redact_query(h2t_export_reader *r, int on);

/* Free a reader.  NULL is a no-op. */
H2T_EXTERN void h2t_export_reader_del(h2t_export_reader *r);

#ifdef __cplusplus
}
#endif

#endif /* H2TRACE_EXPORT_H */
