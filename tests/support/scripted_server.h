/*
 * A small HTTP/2 server (nghttp2 server session over real loopback TCP, own
 * thread, own libev loop) whose misbehaviour a test scripts: GOAWAY after N
 * streams, REFUSED_STREAM, resets, a low MAX_CONCURRENT_STREAMS, slow
 * responses, abrupt closes, garbage.  Responses are 200 with body
 * "ok <request body bytes>".
 */
#ifndef H2T_SCRIPTED_SERVER_H
#define H2T_SCRIPTED_SERVER_H

#include <stdint.h>

typedef struct h2t_script {
  uint32_t max_concurrent_streams; /* 0: not sent */
  int delay_ms;            /* wait this long before each response */
  int goaway_after;        /* >0: on the first `goaway_conns` conns, after
                              answering this many streams, GOAWAY(last id =
                              the last answered) and ignore later streams */
  int goaway_conns;        /* how many conns do that (0: 1) */
  int goaway_immediately;  /* GOAWAY(last=0) at the first request, every
                              conn: nothing is ever served */
  int refuse_first;        /* RST_STREAM(REFUSED_STREAM) the first K streams */
  uint32_t reset_code;     /* >0: reset every stream with this code */
  int close_conns;         /* close the first K conns abruptly when a
                              request arrives */
  int garbage;             /* send garbage instead of a server preface */
  int send_100;            /* answer "expect: 100-continue" with a 100 */
  int close_after_response; /* close the conn once a response is sent */
} h2t_script;

typedef struct h2t_scripted_server h2t_scripted_server;

/* Start on 127.0.0.1:ephemeral; sets *port.  NULL on failure. */
h2t_scripted_server *h2t_scripted_server_start(const h2t_script *s, int *port);
/* Stop the thread, close everything, free. */
void h2t_scripted_server_stop(h2t_scripted_server *srv);
/* Counters (read after the client is done; thread-safe enough for that). */
int h2t_scripted_server_conns(h2t_scripted_server *srv);
int h2t_scripted_server_streams(h2t_scripted_server *srv);
/* GOAWAY frames received from clients. */
int h2t_scripted_server_goaways(h2t_scripted_server *srv);
/* traceparent fields received; *never_indexed: how many of them came as
 * HPACK "never indexed" literals */
int h2t_scripted_server_traceparents(h2t_scripted_server *srv,
                                     int *never_indexed);

#endif
