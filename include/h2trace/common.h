/*
 * h2trace: common definitions — export macro, error codes, clock, allocator.
 *
 * All functions here are thread-safe.
 */
#ifndef H2TRACE_COMMON_H
#define H2TRACE_COMMON_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(H2T_BUILDING_LIBRARY) && defined(__GNUC__)
#define H2T_EXTERN __attribute__((visibility("default")))
#else
#define H2T_EXTERN
#endif

/*
 * Error codes.  Every function that can fail returns 0 or one of these
 * negative values.  They live in a reserved range so that they never collide
 * with -errno or with nghttp2's codes.  HTTP/2 wire error codes (RST_STREAM,
 * GOAWAY) are a different thing: see h2t_http2_strerror().
 *
 * One list gives the enum, the names and the messages, so they cannot drift.
 *
 * Handles (h2t_client, h2t_request, h2t_server, h2t_server_req, h2t_diag):
 * a function returning int returns H2T_ERR_INVALID_ARG for a NULL handle
 * and H2T_ERR_STATE for a handle in the wrong state (done, closed, running,
 * shutting down).  _del, _free, _stop and other void functions do nothing
 * for NULL; getters return 0, NULL or "" (h2t_server_req_canceled(): 1).
 */
#define H2T_ERRNO_MAP(XX)                                                      \
  XX(INVALID_ARG, -7001, "invalid argument")                                   \
  XX(NOMEM, -7002, "out of memory")                                            \
  XX(BAD_URL, -7003, "malformed or unsupported URL")                           \
  XX(DNS, -7004, "host name could not be resolved")                            \
  XX(CONNECT_REFUSED, -7005, "connection refused")                             \
  XX(CONNECT, -7006, "could not connect")                                      \
  XX(CONNECT_TIMEOUT, -7007, "connect timed out")                              \
  XX(TLS, -7008, "TLS handshake failed")                                       \
  XX(TLS_VERIFY, -7009, "peer certificate verification failed")                \
  XX(ALPN, -7010, "peer did not negotiate HTTP/2 (ALPN h2)")                   \
  XX(TIMEOUT, -7011, "request timed out")                                      \
  XX(CANCELED, -7012, "request canceled")                                      \
  XX(STREAM_RESET, -7013, "stream reset by peer")                              \
  XX(GOAWAY, -7014, "connection closed by GOAWAY, request not retried")        \
  XX(REFUSED_STREAM, -7015, "peer refused the stream and retries ran out")     \
  XX(PROTOCOL, -7016, "HTTP/2 protocol error")                                 \
  XX(CONN_CLOSED, -7017, "connection closed unexpectedly")                     \
  XX(IO, -7018, "I/O error")                                                   \
  XX(CALLBACK, -7019, "a user callback asked to abort")                        \
  XX(STATE, -7020, "call not valid in the current state")                      \
  XX(LIMIT, -7021, "a configured limit was reached")                           \
  XX(NOT_FOUND, -7022, "not found")                                            \
  XX(SHUTDOWN, -7023, "shutting down")                                         \
  XX(UNSUPPORTED, -7024, "not supported")                                      \
  XX(BIND, -7025, "could not bind or listen")                                  \
  XX(FILE, -7026, "could not read a file")                                     \
  XX(SYSTEM, -7027, "system call failed")                                     \
  XX(FLOOD, -7028, "peer flooded the connection (PING/SETTINGS/RST frames)")   \
  XX(HEADERS_TOO_LARGE, -7029, "response header block too large")             \
  XX(NOT_HTTP2, -7030, "peer does not speak HTTP/2 (it answered HTTP/1.x)")

typedef enum h2t_error {
  H2T_OK = 0,
#define H2T_ERR_ENUM_(name, val, msg) H2T_ERR_##name = (val),
  H2T_ERRNO_MAP(H2T_ERR_ENUM_)
#undef H2T_ERR_ENUM_
} h2t_error;

/* A sentence for an h2t error code; "unknown error" for anything else.
 * Never NULL; the string is static. */
H2T_EXTERN const char *h2t_strerror(int err);

/* The code's name, e.g. "H2T_ERR_DNS"; "H2T_OK" for 0, "unknown" otherwise. */
H2T_EXTERN const char *h2t_errname(int err);

/* The name of an HTTP/2 wire error code (RFC 9113 §7), e.g. "CANCEL";
 * "UNKNOWN" for codes outside the registry. */
H2T_EXTERN const char *h2t_http2_strerror(uint32_t code);

/* Microseconds on the monotonic clock that every h2trace timestamp uses. */
H2T_EXTERN uint64_t h2t_now_us(void);

/*
 * Optional allocator, given at creation (like nghttp2_mem).  NULL means the C
 * library's.  The functions must behave like malloc/free/calloc/realloc; they
 * may fail (return NULL) and h2trace then returns H2T_ERR_NOMEM.
 */
typedef struct h2t_mem {
  void *user;
  void *(*malloc)(size_t size, void *user);
  void (*free)(void *ptr, void *user);
  void *(*calloc)(size_t nmemb, size_t size, void *user);
  void *(*realloc)(void *ptr, size_t size, void *user);
} h2t_mem;

/* A request or response header: NUL-terminated name and value. */
typedef struct h2t_header {
  const char *name;
  const char *value;
} h2t_header;

#ifdef __cplusplus
}
#endif

#endif /* H2TRACE_COMMON_H */
