/*
 * h2trace: the diagnostics endpoint.
 *
 * An HTTP/1.1 server (libmicrohttpd) on its own thread, so that it answers
 * while the application's loops are stuck.  Opt-in; binds 127.0.0.1 unless
 * told otherwise, and a non-loopback address needs allow_remote.
 *
 *   GET  /debug/ui                    a web page over the routes below:
 *                                     the table, each request's history, a
 *                                     waterfall per connection, the profile
 *                                     (?endpoints=host:port,... to poll
 *                                     several processes)
 *   GET  /debug/requests              requests in flight (JSON)
 *   GET  /debug/requests/{id}         one request with its state history
 *   POST /debug/requests/{id}/cancel  reset it with CANCEL (needs the token:
 *                                     "Authorization: Bearer <token>")
 *   GET  /debug/recent                recently finished requests
 *        /debug/recent?format=har     the same as HAR 1.2, streamed
 *        /debug/recent?format=chrome  the same as a Chrome trace (Perfetto)
 *   GET  /debug/connections           client pool and server connections
 *   GET  /debug/profile               time per state, overall and per host
 *   GET  /debug/threads               a stack sample of every thread,
 *                                     identical stacks counted together
 *   GET  /metrics                     Prometheus text format 0.0.4
 *
 * Starting it turns the in-flight table on with defaults if it is off, and
 * keeps it on (h2t_inflight_hold()); an h2t_inflight_enable(cfg) before or
 * after applies cfg all the same (its sensitive headers above all).
 * /debug/threads interrupts every thread of the process once with signal
 * SIGRTMIN+4 (installed with SA_RESTART while the endpoint runs); calls that
 * the kernel never restarts (epoll_wait, nanosleep, sleep) return early with
 * EINTR, which event loops already handle.
 *
 * Link: the endpoint is its own library, libh2trace_diag (CMake
 * h2trace::diag, pkg-config h2trace-diag), which needs libmicrohttpd,
 * jansson and libunwind.  h2t_diag_metrics() is in libh2trace itself.
 */
#ifndef H2TRACE_DIAG_H
#define H2TRACE_DIAG_H

#include <h2trace/common.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct h2t_diag h2t_diag;

typedef struct h2t_diag_config {
  size_t struct_size;  /* H2T_DIAG_CONFIG_INIT */
  /* "ADDR:PORT", "[V6ADDR]:PORT" or "PORT"; NULL: "127.0.0.1:0".  Port 0
   * picks a free one: see h2t_diag_port(). */
  const char *listen;
  /* Needed for POST .../cancel as "Authorization: Bearer <token>" (copied).
   * NULL or "": cancel is disabled (403). */
  const char *token;
  int allow_remote;    /* 1: allow a non-loopback listen address */
  /* At most this many clients at once (0: 16).  A client beyond it takes
   * the place of the one that has waited longest without a complete request
   * (idle keep-alive, or trickling its headers); if every one is being
   * answered, the newcomer is closed. */
  unsigned max_connections;
  unsigned timeout_s;       /* idle connection timeout; 0: 10 */

  /* Fields below were added in 0.3; a caller built before gets defaults. */

  /* Origins ("http://127.0.0.1:9901", compared exactly, case aside) whose
   * web pages may read the endpoint and cancel through it: they get
   * Access-Control-Allow-Origin and a preflight allowing Authorization.
   * Copied.  None by default: no other page reads anything (a non-browser
   * client such as h2top needs none). */
  const char *const *cors_origins;
  size_t ncors_origins;
  /* Host header names accepted on top of 127.0.0.1, [::1], localhost and the
   * listen address (for a name that reaches a non-loopback listen address).
   * Copied.  Any other Host is refused (421), so that a DNS-rebinding page
   * cannot reach the endpoint through a name of its own. */
  const char *const *hosts;
  size_t nhosts;
  unsigned max_connections_per_ip; /* 0: max_connections / 2, at least 1 */
  /* Each request must arrive and be answered within this (from the
   * connection, or from the previous answer on it); the connection is then
   * closed.  0: 10000 ms. */
  unsigned request_deadline_ms;
  /* 1: show query strings in paths (/debug/requests, /debug/recent, its
   * exports).  0 (default): "/search?redacted" — a query often carries a
   * token or a user's data. */
  int show_query;
} h2t_diag_config;

#define H2T_DIAG_CONFIG_INIT .struct_size = sizeof(h2t_diag_config)

/* Start the endpoint; its thread runs until h2t_diag_stop().  cfg may be
 * NULL for all defaults.  Returns 0 and sets *out, or H2T_ERR_INVALID_ARG
 * (bad address, or non-loopback without allow_remote), H2T_ERR_BIND,
 * H2T_ERR_NOMEM, H2T_ERR_SYSTEM, H2T_ERR_STATE (one endpoint per process).
 * Thread-safe. */
H2T_EXTERN int h2t_diag_start(h2t_diag **out, const h2t_diag_config *cfg);

/* The port it listens on (the chosen one when port 0 was asked). */
H2T_EXTERN uint16_t h2t_diag_port(const h2t_diag *d);

/* Stop the thread, close the socket, free.  NULL is a no-op.  Requests
 * already answered are not affected; the in-flight table stays on. */
H2T_EXTERN void h2t_diag_stop(h2t_diag *d);

/* The /metrics text (Prometheus 0.0.4) into a new NUL-terminated string
 * (*out, free()), for applications that serve metrics themselves.  len may
 * be NULL.  Returns 0, H2T_ERR_INVALID_ARG or H2T_ERR_NOMEM.  Thread-safe. */
H2T_EXTERN int h2t_diag_metrics(char **out, size_t *len);

/* The /debug/threads JSON into a new string (*out, free()): every thread of
 * the process sampled once.  Only while an endpoint runs (it owns the
 * sampling signal): else H2T_ERR_STATE.  Thread-safe. */
H2T_EXTERN int h2t_diag_threads_json(char **out);

#ifdef __cplusplus
}
#endif

#endif /* H2TRACE_DIAG_H */
