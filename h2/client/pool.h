/*
 * The client's pool: origins (scheme, host, port; TLS settings are
 * client-wide) and their connections.  It chooses: which connection a
 * request should use, whether to join one being set up, open one, or queue.
 * It opens and forgets connections; it never touches a request.
 */
#ifndef H2T_CLIENT_POOL_H
#define H2T_CLIENT_POOL_H

#include "h2/client/conn.h"

typedef struct h2t__origin {
  TAILQ_ENTRY(h2t__origin) link;
  char *host;
  uint16_t port;
  int tls;
  int host_is_ip;
  TAILQ_HEAD(, h2t__conn) conns;
  uint32_t nconns;
  struct h2t__req_list queue; /* the client's: requests waiting for room */
  uint32_t nqueued;
  h2t_conn_reason last_close; /* why the last conn went away */
  uint32_t peer_max_streams;  /* last MAX_CONCURRENT_STREAMS seen; 0: none */
  int peer_max_known;
  SSL_SESSION *tls_session;   /* to resume the next TLS handshake */
} h2t__origin;

typedef struct h2t__pool {
  TAILQ_HEAD(, h2t__origin) origins;
  h2t__conn_ctx *ctx;
  const h2t_mem *mem;
  uint32_t max_conns_per_origin;
  struct h2t_client_stats *stats;
} h2t__pool;

typedef enum h2t__pick {
  H2T__PICK_USE,   /* *cn is ready with a free stream slot */
  H2T__PICK_JOIN,  /* *cn is being set up and has room */
  H2T__PICK_OPEN,  /* a new connection may be opened (*why) */
  H2T__PICK_QUEUE  /* no room: wait */
} h2t__pick;

void h2t__pool_init(h2t__pool *p, h2t__conn_ctx *ctx, const h2t_mem *mem,
                    uint32_t max_conns_per_origin,
                    struct h2t_client_stats *stats);
/* Close every connection (GOAWAY, no callbacks) and free every origin. */
void h2t__pool_fini(h2t__pool *p);
/* The origin of u, made on first use.  NULL on allocation failure. */
h2t__origin *h2t__origin_get(h2t__pool *p, const h2_url *u);

/* Where a request for o should go.  avoid_id: a connection a retry should
 * not land on again, unless it would otherwise wait for ever. */
h2t__pick h2t__pool_choose(h2t__pool *p, h2t__origin *o, uint64_t avoid_id,
                           h2t__conn **cn, h2t_conn_reason *why);
/* Open a connection to o (not started).  NULL on allocation failure. */
h2t__conn *h2t__pool_open(h2t__pool *p, h2t__origin *o, h2t_conn_reason why);
/* cn is closing: forget it (its struct is freed by the conn layer). */
void h2t__pool_remove(h2t__pool *p, h2t__conn *cn, h2t_conn_reason why);
/* The peer's SETTINGS arrived on cn: remember its stream limit. */
void h2t__pool_settings(h2t__conn *cn);
/* How many streams a connection of o is expected to take before its
 * SETTINGS arrive: what the origin said last time, else 100 (RFC 9113
 * §6.5.2 recommends no less). */
uint32_t h2t__pool_guess(const h2t__origin *o);

/* How many streams a new connection of o may open before the peer's
 * SETTINGS: its last limit (at least 1), or 1 when nothing is known. */
uint32_t h2t__pool_budget(const h2t__origin *o);

/* Exposed for unit tests. */
h2t__conn *h2t__pool_pick(h2t__origin *o, uint64_t avoid_id);
h2t__conn *h2t__pool_pick_connecting(h2t__origin *o);
h2t_conn_reason h2t__pool_new_reason(const h2t__origin *o);

#endif
