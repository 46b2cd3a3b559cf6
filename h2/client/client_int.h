/*
 * h2/client/: the client's private interface (the layers: conn.h).
 *
 * Ownership: the client owns its pool (origins, connections) and its
 * requests; a request is on exactly one list at a time (its origin's queue,
 * a connecting connection's waiters, or a ready connection's streams), and
 * only client.c links, unlinks and frees one.
 */
#ifndef H2T_CLIENT_INT_H
#define H2T_CLIENT_INT_H

#include <stdint.h>
#include <sys/queue.h>

#include <ev.h>
#include <nghttp2/nghttp2.h>

#include <h2trace/client.h>
#include "h2/client/conn.h"
#include "h2/client/pool.h"
#include "h2/common/post.h"
#include "trace/trace_int.h"

typedef enum h2t__req_state {
  H2T__REQ_NEW = 0,
  H2T__REQ_QUEUED,  /* on origin->queue */
  H2T__REQ_WAITING, /* on a connecting conn's waiters */
  H2T__REQ_ACTIVE,  /* on a ready conn's streams */
  H2T__REQ_DONE
} h2t__req_state;

#define H2T__REQ_INLINE_HDRS 12

struct h2t_request {
  TAILQ_ENTRY(h2t_request) all;  /* client->reqs */
  TAILQ_ENTRY(h2t_request) link; /* queue, waiters or streams */
  h2t_client *client;
  h2t__origin *origin;
  h2t__conn *conn;
  uint64_t id;
  h2t__req_state state;
  int32_t stream_id;
  uint64_t t_submit;
  h2_url url;
  const char *method;  /* into hdrbuf */
  nghttp2_nv *nv;      /* pseudo + user headers, in hdrbuf */
  size_t nnv;
  nghttp2_nv *tp_nv;   /* the traceparent we add, in nv, or NULL */
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
  unsigned attempts;          /* 1 + retries of either kind */
  unsigned retries;           /* those that spent max_retries */
  unsigned unprocessed;       /* those the peer provably did not process */
  int status;
  int pending_status;          /* :status of the HEADERS being received */
  size_t hdr_bytes;            /* of the header block being received */
  unsigned has_body : 1;       /* a data provider is attached */
  unsigned body_eof : 1;
  unsigned body_deferred : 1;  /* the provider returned DEFERRED */
  unsigned expect_100 : 1;     /* "expect: 100-continue" was sent */
  unsigned waiting_100 : 1;    /* body held until 100 or timeout */
  unsigned got_first_byte : 1; /* a response byte reached the application */
  unsigned got_final : 1;
  unsigned headers_sent : 1;   /* our HEADERS went out */
  unsigned flow_blocked : 1;   /* flow_blocked already emitted */
  unsigned finishing : 1;      /* finish() under way */
  unsigned got_eos : 1;        /* response END_STREAM */
  unsigned rst_by_peer : 1;
  unsigned skip_body : 1;      /* final response came before 100 */
  unsigned too_large : 1;      /* header block over the limit */
  uint32_t rst_code;           /* RST_STREAM code, either side */
  int local_error;             /* our side failed the stream (body_read) */
  uint64_t conn_id;            /* of the current attempt's conn */
  uint64_t avoid_id;           /* retry: don't pick this conn again */
  int hold;                    /* >0: in use up the stack, free later */
  h2t_conn_reason retry_reason; /* for the next conn, after a retry */
  struct h2t__fetch *fetch;    /* h2t_client_fetch()'s state; user stays the
                                  application's */
  /* final response headers, referenced from nghttp2 rcbufs until delivered */
  h2t_header *hdrs;
  nghttp2_rcbuf **rcs;
  size_t nhdrs, hdrs_cap;
  /* From here on, nothing needs zeroing when a request is recycled. */
  /* W3C trace context (h2t__req_headers sets both for every request) */
  const h2t_trace_context *tctxp; /* &tctx, or NULL: none */
  h2t_trace_context tctx;
  h2t_client_trace trace_copy;
  h2t_header hdrs_inline[H2T__REQ_INLINE_HDRS];
  nghttp2_rcbuf *rc_inline[2 * H2T__REQ_INLINE_HDRS];
};

struct h2t_client {
  struct ev_loop *loop;
  int own_loop;
  const h2t_mem *mem;
  const h2t_client_trace *trace;
  uint32_t max_queued, request_timeout_ms, max_retries,
      max_unprocessed_retries, max_header_bytes, expect_continue_timeout_ms;
  h2t__conn_ctx ctx;  /* what its connections share */
  h2t__pool pool;
  struct h2t__req_list reqs;
  ev_idle wake_w;        /* keeps the poll from blocking, once */
  uint64_t finished;     /* requests completed, ever */
  uint64_t finished_at_flush;
  h2t__postq cancels;    /* the in-flight table's cancel, from any thread */
  size_t pending;
  uint32_t nqueued_total;
  int running, closing;
  int no_traceparent; /* h2t_client_config.no_traceparent */
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

/* --- request.c: building a request from its options ---------------------- */
/* A caller's options, whatever their struct_size, as this version's struct
 * (fields it did not have zeroed).  0 or H2T_ERR_INVALID_ARG. */
int h2t__req_opts_copy(h2t_request_opts *dst, const h2t_request_opts *src);
/* r->url from s, into r->urlbuf (the client's last parse is reused). */
int h2t__req_url(h2t_client *c, h2t_request *r, const char *s);
/* The header block: pseudo-headers, the user's (lowercased, hop-by-hop
 * dropped), content-length, traceparent.  Sets expect_100 and the trace
 * context (tctx, tctxp).  0 or an H2T_ERR_ code. */
int h2t__req_headers(h2t_request *r, const h2t_request_opts *o);
/* The request's trace chain: its own trace (copied), then the client's. */
void h2t__req_chain(h2t_client *c, h2t_request *r, const h2t_client_trace *t);

/* --- client.c ------------------------------------------------------------ */
/* h2t_request_submit(), with h2t_client_fetch()'s state in r->fetch. */
int h2t__client_submit(h2t_client *c, const h2t_request_opts *o,
                       h2t_request **out, struct h2t__fetch *fetch);
/* For the unit tests. */
int h2t__req_safe_to_retry(const h2t_request *r);

#endif
