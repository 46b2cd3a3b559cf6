/*
 * The client receiving arbitrary server bytes.  Requests go through the
 * whole client (client.c, pool.c, conn.c, session.c) to a connection whose
 * socket is one end of a socketpair (h2t__conn_ctx.connect_fn): the input
 * is what the server end writes, from the first byte (a real server starts
 * with its SETTINGS), while the client's own output is read and dropped.
 * Then the server end closes.  Every request must end (on_done once), every
 * connection close, nothing leak; every trace event is checked as JSON.
 *
 * The first input byte picks the requests' shapes (flags below).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>
#include <h2trace/client.h>
#include <h2trace/inflight.h>
#include "h2/client/client_int.h"

#include "fuzz.h"

#define MAX_STEPS 64
#define NREQ 3

enum { F_POST = 1, F_EXPECT = 2, F_STREAM = 4, F_CANCEL_DATA = 8,
       F_REJECT_HEADERS = 16, F_CANCEL_ONE = 32 };

static h2t_client *cl;
static h2t_client_trace trace;
static int peer = -1;   /* the server end of this input's connection */
static unsigned ndone, nconnects;
static uint8_t flags;

static int connect_pair(const struct sockaddr_storage *sa, void *arg) {
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv))
    return -errno;
  nconnects++;
  if (peer < 0)
    peer = sv[1];
  else
    close(sv[1]); /* a retry's connection: its server is gone at once */
  return sv[0];
}

static int on_headers(h2t_request *r, int status, const h2t_header *h,
                      size_t n, void *user) {
  for (size_t i = 0; i < n; i++)
    if (!h[i].name || !h[i].value)
      h2t_fuzz_fail("header %zu without a name or value", i);
  return (flags & F_REJECT_HEADERS) && user ? 1 : 0;
}

static int on_data(h2t_request *r, const uint8_t *d, size_t len, void *user) {
  return (flags & F_CANCEL_DATA) ? 1 : 0;
}

static void on_done(h2t_request *r, int error, void *user) { ndone++; }

static ssize_t body_read(h2t_request *r, uint8_t *buf, size_t len, int *eof,
                         void *user) {
  static const char body[] = "streamed body";
  size_t n = len < sizeof body - 1 ? len : sizeof body - 1;
  memcpy(buf, body, n);
  *eof = 1;
  return (ssize_t)n;
}

static void init(void) {
  h2t_inflight_enable(NULL);
  trace = (h2t_client_trace){H2T_CLIENT_TRACE_INIT, .any = h2t_fuzz_event_check};
  h2t_client_config cfg = {H2T_CLIENT_CONFIG_INIT,
                           .trace = &trace,
                           .max_retries = 1,
                           .max_unprocessed_retries = 1,
                           .max_response_header_bytes = 8192};
  if (h2t_client_new(&cl, &cfg) != 0)
    h2t_fuzz_fail("h2t_client_new");
  cl->ctx.connect_fn = connect_pair;
}

static size_t drain(int fd) {
  char buf[65536];
  size_t total = 0;
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0)
    total += (size_t)n;
  return total;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || size > 1 << 20)
    return 0;
  if (!cl)
    init();
  struct ev_loop *loop = h2t_client_loop(cl);
  flags = data[0];
  data++, size--;
  peer = -1;
  ndone = nconnects = 0;

  static const h2t_header expect[] = {{"expect", "100-continue"},
                                      {"x-fuzz", "1"}};
  h2t_request *reqs[NREQ] = {NULL};
  unsigned nsub = 0;
  for (int i = 0; i < NREQ; i++) {
    h2t_request_opts o = {H2T_REQUEST_OPTS_INIT,
                          .url = i ? "http://127.0.0.1:8080/b?x=1"
                                   : "http://127.0.0.1:8080/a",
                          .on_headers = on_headers,
                          .on_data = on_data,
                          .on_done = on_done,
                          .user = i == 1 ? &flags : NULL};
    if (i == 1 && (flags & F_POST)) {
      o.body = "hello";
      o.body_len = 5;
      if (flags & F_EXPECT)
        o.headers = expect, o.nheaders = 2;
    }
    if (i == 2 && (flags & F_STREAM)) {
      o.body_read = body_read;
      o.body_length = -1;
    }
    if (h2t_request_submit(cl, &o, &reqs[i]) == 0)
      nsub++;
  }
  /* the loop connects (connect_pair), then the client writes its preface */
  for (int i = 0; i < MAX_STEPS && peer < 0; i++)
    ev_run(loop, EVRUN_NOWAIT);
  if (peer < 0)
    h2t_fuzz_fail("the client never connected");
  if ((flags & F_CANCEL_ONE) && reqs[0] && !ndone)
    h2t_request_cancel(reqs[0]); /* mid-way: while its stream may be open */

  size_t off = 0;
  for (int steps = 0; off < size && steps < 4 * MAX_STEPS; steps++) {
    ssize_t n = send(peer, data + off, size - off, MSG_NOSIGNAL);
    if (n > 0)
      off += (size_t)n;
    else if (n < 0 && errno != EAGAIN)
      break; /* the client closed: the rest is not read */
    ev_run(loop, EVRUN_NOWAIT);
    drain(peer);
  }
  for (int i = 0, quiet = 0; i < MAX_STEPS && quiet < 3; i++) {
    ev_run(loop, EVRUN_NOWAIT);
    quiet = drain(peer) ? 0 : quiet + 1;
  }
  close(peer);
  /* retries connect again (connect_pair: to a server gone at once) */
  h2t_client_stats st;
  for (int i = 0; i < 4 * MAX_STEPS; i++) {
    h2t_client_stats_get(cl, &st);
    if (!h2t_client_pending(cl) && !st.conns_open)
      break;
    ev_run(loop, EVRUN_NOWAIT);
  }
  if (h2t_client_pending(cl) || ndone != nsub)
    h2t_fuzz_fail("%zu requests still pending, %u of %u done, after the "
                  "server closed (%u connects)",
                  h2t_client_pending(cl), ndone, nsub, nconnects);
  if (st.conns_open)
    h2t_fuzz_fail("%u connections open after the server closed",
                  (unsigned)st.conns_open);
  return 0;
}
