/*
 * h2/ private interface of the client: URL, DNS, TCP, TLS, connection, pool.
 *
 * Ownership: a client owns origins; an origin owns its connections and its
 * queue of waiting requests; a request is on exactly one list at a time
 * (origin queue, a connecting conn's waiters, or a ready conn's streams).
 */
#ifndef H2T_H2_INT_H
#define H2T_H2_INT_H

#include <pthread.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/socket.h>

#include <ev.h>
#include <nghttp2/nghttp2.h>
#include <openssl/ssl.h>

#include <h2trace/client.h>
#include "trace/trace_int.h"

/* --- URL (h2/url.c) ---------------------------------------------------- */
typedef struct h2_url {
  int tls;          /* https */
  uint16_t port;
  int host_is_ip;   /* IPv4 or IPv6 literal: no DNS lookup */
  /* all four point into one allocation owned by the url */
  char *host;       /* without brackets */
  char *authority;  /* host[:port] as sent in :authority */
  char *path;       /* "/" at least, with query */
  const char *scheme;
  char *buf_;
  size_t buflen_;
} h2_url;

/* Parse an absolute http:// or https:// URL.  Returns 0 or H2T_ERR_BAD_URL
 * / H2T_ERR_NOMEM.  Userinfo and fragments are rejected / dropped. */
int h2t__url_parse(const h2t_mem *mem, const char *s, h2_url *u);
void h2t__url_free(const h2t_mem *mem, h2_url *u);
/* A copy into buf (at least from->buflen_ bytes), which `to` does not own
 * (to->buf_ is NULL). */
void h2t__url_copy_to(const h2_url *from, h2_url *to, char *buf);

/* --- DNS (h2/dns.c): c-ares on the client's loop ----------------------- */
typedef struct h2_dns h2_dns;
/* addrs: resolved addresses (sockaddr_storage), n of them; error 0 or
 * H2T_ERR_DNS.  The array is owned by the caller of the callback (valid
 * during the call only). */
typedef void (*h2_dns_cb)(void *arg, int error,
                          const struct sockaddr_storage *addrs, size_t n);
int h2t__dns_new(h2_dns **out, struct ev_loop *loop, const h2t_mem *mem);
void h2t__dns_del(h2_dns *d);
/* Start a lookup; cb runs later (never from inside this call).  Returns a
 * handle to cancel, or NULL on allocation failure. */
typedef struct h2_dns_query h2_dns_query;
h2_dns_query *h2t__dns_lookup(h2_dns *d, const char *host, int ip_version,
                            h2_dns_cb cb, void *arg);
/* The callback will not run. */
void h2t__dns_cancel(h2_dns_query *q);
/* Is the name one that must never be looked up (RFC 6761 ".invalid")? */
int h2t__dns_name_is_invalid(const char *host);

/* --- TCP (h2/tcp.c) ---------------------------------------------------- */
/* Non-blocking connect; returns the fd (connect may be in progress) or
 * -errno. */
int h2t__tcp_connect(const struct sockaddr_storage *sa);
/* After writability: 0 or the pending socket error (errno value). */
int h2t__tcp_connect_result(int fd);
void h2t__sockaddr_str(const struct sockaddr_storage *sa, char *buf,
                     size_t len);

/* --- TLS (h2/tls.c) ---------------------------------------------------- */
/* Client context: TLS 1.2+, ALPN h2, verification unless insecure.
 * Returns 0 or H2T_ERR_TLS (CA file/path could not be loaded). */
int h2t__tls_ctx_new(SSL_CTX **out, const char *ca_file, const char *ca_path,
                   int insecure);
/* The client's TLS context, made on first use.  0 or H2T_ERR_TLS. */
int h2t__client_ssl_ctx(h2t_client *c);
/* An SSL for fd, with SNI (names only) and host/IP verification. */
SSL *h2t__tls_new(SSL_CTX *ctx, int fd, const char *host, int host_is_ip,
                int insecure);

/* --- requests, connections, origins ----------------------------------- */
typedef enum req_state {
  REQ_NEW = 0,
  REQ_QUEUED,   /* on origin->queue */
  REQ_WAITING,  /* on a connecting conn's waiters */
  REQ_ACTIVE,   /* on a ready conn's streams (stream_id may be 0 briefly) */
  REQ_DONE
} req_state;

typedef enum conn_state {
  CONN_DNS = 0,
  CONN_CONNECTING,
  CONN_TLS,
  CONN_READY,
  CONN_CLOSED
} conn_state;

struct h2_conn;
struct h2_origin;

#define REQ_INLINE_HDRS 12

struct h2t_request {
  TAILQ_ENTRY(h2t_request) all;  /* client->reqs */
  TAILQ_ENTRY(h2t_request) link; /* queue, waiters or streams */
  h2t_client *client;
  struct h2_origin *origin;
  struct h2_conn *conn;
  uint64_t id;
  req_state state;
  int32_t stream_id;
  uint64_t t_submit;
  h2_url url;
  const char *method;  /* into hdrbuf */
  nghttp2_nv *nv;      /* pseudo + user headers, in hdrbuf */
  size_t nnv;
  char *hdrbuf;        /* one allocation: nv array + strings */
  size_t hdrcap;
  char *urlbuf;        /* url's strings (url.buf_ stays NULL) */
  size_t urlcap;
  struct h2t_request *free_next; /* on client->free_reqs */
  const uint8_t *body;
  size_t body_len, body_off;
  h2t_body_read_cb body_read;
  int64_t body_length;
  h2t_response_headers_cb on_headers;
  h2t_response_data_cb on_data;
  h2t_done_cb on_done;
  void *user;
  trace_chain tc;
  struct inflight_entry *ife;
  uint32_t timeout_ms;
  ev_timer timeout_w;
  ev_timer expect_w;
  uint64_t bytes_sent, bytes_recv;
  unsigned attempts;
  int status;
  int pending_status;          /* :status of the HEADERS being received */
  unsigned has_body : 1;       /* a data provider is attached */
  unsigned body_eof : 1;
  unsigned body_deferred : 1;  /* the provider returned DEFERRED */
  unsigned expect_100 : 1;     /* "expect: 100-continue" was sent */
  unsigned waiting_100 : 1;    /* body held until 100 or timeout */
  unsigned got_first_byte : 1;
  unsigned got_final : 1;
  unsigned headers_sent : 1;   /* our HEADERS went out */
  unsigned flow_blocked : 1;   /* flow_blocked already emitted */
  unsigned finishing : 1;      /* h2t__req_finish() under way */
  unsigned got_eos : 1;        /* response END_STREAM */
  unsigned rst_by_peer : 1;
  unsigned skip_body : 1;      /* final response came before 100 */
  uint32_t rst_code;
  int local_error;             /* our side failed the stream (body_read) */
  uint64_t conn_id;            /* of the current attempt's conn */
  uint64_t avoid_id;           /* retry: don't pick this conn again */
  int hold;                    /* >0: in use up the stack, free later */
  h2t_conn_reason retry_reason; /* for the next conn, after a retry */
  /* final response headers, referenced from nghttp2 rcbufs until delivered */
  h2t_header *hdrs;
  nghttp2_rcbuf **rcs;
  size_t nhdrs, hdrs_cap;
  /* From here on, nothing needs zeroing when a request is recycled. */
  h2t_client_trace trace_copy;
  h2t_header hdrs_inline[REQ_INLINE_HDRS];
  nghttp2_rcbuf *rc_inline[2 * REQ_INLINE_HDRS];
};

TAILQ_HEAD(req_list, h2t_request);

typedef struct h2_conn {
  TAILQ_ENTRY(h2_conn) link;       /* origin->conns */
  TAILQ_ENTRY(h2_conn) dirty_link; /* client->dirty */
  h2t_client *client;
  struct h2_origin *origin;
  uint64_t id;
  conn_state state;
  int fd;
  SSL *ssl;
  nghttp2_session *sess;
  ev_io rio, wio;
  ev_timer timer;        /* connect timeout, then idle timeout */
  ev_timer kick;         /* starts the setup from the loop */
  struct connreg_entry *reg; /* /debug/connections entry, or NULL */
  int settings_seen;
  h2_dns_query *dnsq;
  struct sockaddr_storage *addrs;
  size_t naddrs, addr_idx;
  char addr_str[64];
  struct req_list waiters; /* while connecting */
  struct req_list streams; /* while ready */
  uint32_t nwaiters, nstreams;
  uint32_t max_streams;   /* the peer's; UINT32_MAX when unlimited */
  uint64_t served;        /* requests that got this conn */
  uint64_t idle_since;
  h2t_conn_reason open_reason;
  h2t_conn_reason drain_reason; /* why no new streams (NONE: usable) */
  int32_t goaway_last_id; /* -1: no GOAWAY received */
  int error;              /* first fatal error */
  uint8_t *out;           /* pending output */
  size_t outlen, outoff, outcap;
  int dirty;              /* on client->dirty */
  int in_io;              /* inside read/flush: defer close */
  int close_pending;
  h2t_conn_reason close_reason;
  int close_error;
  int nbody_pending;      /* streams with a body still to send */
} h2_conn;

TAILQ_HEAD(conn_list, h2_conn);

typedef struct h2_origin {
  TAILQ_ENTRY(h2_origin) link;
  char *host;
  uint16_t port;
  int tls;
  int host_is_ip;
  struct conn_list conns;
  uint32_t nconns;
  struct req_list queue;
  uint32_t nqueued;
  h2t_conn_reason last_close; /* why the last conn went away */
  uint32_t peer_max_streams;  /* last MAX_CONCURRENT_STREAMS seen; 0: none */
  SSL_SESSION *tls_session;   /* to resume the next TLS handshake */
} h2_origin;

TAILQ_HEAD(origin_list, h2_origin);

typedef struct cancel_item {
  uint64_t id;
} cancel_item;

struct h2t_client {
  struct ev_loop *loop;
  int own_loop;
  const h2t_mem *mem;
  const h2t_client_trace *trace;
  uint32_t max_conns_per_origin, max_queued, connect_timeout_ms,
      idle_timeout_ms, request_timeout_ms, max_retries,
      expect_continue_timeout_ms, initial_window_size;
  int insecure, ip_version;
  char *ca_file, *ca_path;
  SSL_CTX *ssl_ctx;
  h2_dns *dns;
  nghttp2_session_callbacks *cbs;
  nghttp2_option *opt;
  struct origin_list origins;
  struct req_list reqs;
  struct conn_list dirty;
  ev_prepare flush_w;
  ev_idle wake_w;        /* keeps the poll from blocking, once */
  uint64_t finished;     /* requests completed, ever */
  ev_async cancel_w;
  pthread_mutex_t cancel_mu;
  cancel_item *cancels;
  size_t ncancels, cancels_cap;
  size_t pending;
  uint32_t nqueued_total;
  int running, closing;
  /* while processing one read: its arrival time, shared by every event the
   * read causes (one clock read per batch instead of one per event) */
  uint64_t ts;
  h2t_client_stats stats;
  /* per-request chains cost a mask computation: cache the default's and the
   * last request trace's (when it has no `next` that could change) */
  trace_chain tc_default;
  h2t_client_trace last_trace;
  uint64_t last_trace_mask;
  int last_trace_valid;
  /* finished requests kept for reuse, with their buffers: a request then
   * costs no allocation of ours */
  h2t_request *free_reqs;
  unsigned nfree;
  /* the last URL parsed: clients tend to fetch the same one again */
  char *last_url;
  h2_url last_url_parsed;
};

/* --- conn.c ------------------------------------------------------------ */
int h2t__callbacks_new(nghttp2_session_callbacks **out);
/* Start a connection (DNS first).  Returns NULL on allocation failure. */
h2_conn *h2t__conn_new(h2t_client *c, h2_origin *o, h2t_conn_reason why);
/* Begin setup (from the loop, next iteration) once the first waiter is on. */
void h2t__conn_start(h2_conn *cn);
/* TCP/TLS done: make the session, attach waiters. */
void h2t__conn_ready(h2_conn *cn);
/* Close now (or as soon as the conn is out of its I/O callback): fails
 * waiters with `error`, retries or fails streams.  reason: what the origin
 * records for the next conn. */
void h2t__conn_close(h2_conn *cn, h2t_conn_reason reason, int error);
/* OpenSSL's new-session callback: keeps the origin's latest session. */
int h2t__conn_tls_new_session(SSL *ssl, SSL_SESSION *sess);
/* Free without callbacks (client teardown): sends GOAWAY if ready. */
void h2t__conn_free(h2_conn *cn);
/* Open a stream for r on a ready conn.  0 or an H2T_ERR_ code. */
int h2t__conn_submit(h2_conn *cn, h2t_request *r);
/* Schedule a flush at the end of this loop iteration. */
void h2t__conn_mark_dirty(h2_conn *cn);
void h2t__conn_flush(h2_conn *cn);
/* Shared between conn.c and session.c. */
int h2t__conn_list_wants(struct req_list *l, h2t_event_type t);
/* Send tmpl (type + payload) to every request on l that wants it. */
void h2t__conn_emit_list(struct req_list *l, h2t_event *tmpl);
void h2t__conn_tmpl_init(h2t_event *ev, h2_conn *cn, h2t_event_type t);
/* Leave an I/O section: closes the conn if a close was asked meanwhile. */
void h2t__conn_end_io(h2_conn *cn);
/* Take r off cn's streams (its stream is over or being reset): emits
 * put_idle_conn, clears the stream's user data. */
void h2t__conn_detach(h2_conn *cn, h2t_request *r);
/* RST_STREAM r's stream and detach it from the conn (no callbacks). */
void h2t__conn_reset_stream(h2_conn *cn, h2t_request *r, uint32_t code);
/* Can a new stream go on this conn now? */
int h2t__conn_usable(const h2_conn *cn);
uint32_t h2t__conn_capacity(const h2_conn *cn);

/* --- pool.c ------------------------------------------------------------ */
h2_origin *h2t__origin_get(h2t_client *c, const h2_url *u);
void h2t__origin_free(h2t_client *c, h2_origin *o);
/* Find or open a conn for r, or queue it.  Returns 0 or an H2T_ERR_ code
 * (then r is untouched).  May finish r (via got_conn → submit failure). */
int h2t__pool_acquire(h2t_client *c, h2t_request *r);
/* Slots may have freed on o: give queued requests a conn. */
void h2t__pool_dispatch(h2t_client *c, h2_origin *o);
/* A conn became ready: attach its waiters as streams. */
void h2t__pool_conn_ready(h2_conn *cn);
/* The conn's stream count dropped to zero: start the idle timer. */
void h2t__pool_conn_idle(h2_conn *cn);
/* Remove a conn from its origin (it is being freed). */
void h2t__pool_conn_remove(h2_conn *cn, h2t_conn_reason why);
/* Picking logic, exposed for unit tests: the conn a new request should use
 * (ready, not draining, below capacity, not `avoid`), else NULL; and the
 * reason a new conn would be opened. */
h2_conn *h2t__pool_pick(h2_origin *o, uint64_t avoid_id);
h2_conn *h2t__pool_pick_connecting(h2_origin *o);
h2t_conn_reason h2t__pool_new_reason(const h2_origin *o);

/* --- client.c ---------------------------------------------------------- */
/* Complete a request: emits put_idle_conn if it had a stream (the caller
 * detached it), done, calls on_done and frees it. */
void h2t__req_finish(h2t_request *r, int error);
/* Stream-level failure on an active request: retry if allowed, else finish.
 * r has already been detached from its conn. */
void h2t__req_retry_or_fail(h2t_request *r, h2t_retry_reason why, int error);
/* Emit got_conn for r picking cn. */
void h2t__req_got_conn(h2t_request *r, h2_conn *cn, int reused, int was_idle,
                     uint64_t idle_us, h2t_conn_reason why);
/* Emit put_idle_conn for r leaving cn. */
void h2t__req_put_conn(h2t_request *r, h2_conn *cn);
void h2_req_event(h2t_request *r, h2t_event *ev, h2t_event_type type);
int h2t__req_safe_to_retry(const h2t_request *r);
/* The in-flight table's cancel: from any thread, posts req_id to the
 * client's loop (arg is the client), which cancels it if still pending. */
void h2t__client_post_cancel(void *arg, uint64_t req_id, const char *why);
/* Hooks and callbacks may cancel the request they are given: code that
 * touches r after running one holds it.  h2t__req_release() returns 1 if r is
 * still live, 0 if it completed meanwhile (and is now freed). */
static inline void h2_req_hold(h2t_request *r) { r->hold++; }
int h2t__req_release(h2t_request *r);

/* Emit one of r's events.  The general walk may run several hooks and any
 * of them may complete r, so r is held across it: later hooks still see a
 * whole request, and it is freed (if done) when the walk returns. */
static inline void h2_req_emit(h2t_request *r, h2t_event *ev) {
  if (__builtin_expect(r->tc.direct != NULL, 1)) {
    trace_emit(&r->tc, ev);
    return;
  }
  h2_req_hold(r);
  h2t__trace_emit_slow(&r->tc, ev);
  h2t__req_release(r);
}

static inline void h2_ev_init(h2t_event *ev, h2t_request *r,
                              h2t_event_type type) {
  ev->type = type;
  ev->stream_id = r->stream_id;
  ev->t_us = r->client->ts;
  ev->req_id = r->id;
  ev->conn_id = r->conn_id;
  ev->req = r;
  ev->sreq = NULL;
}

#endif
