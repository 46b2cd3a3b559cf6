/*
 * One in-process server for the server-side targets: the real stack (io.c,
 * session.c, request.c, writer.c in INLINE mode: no thread), a connection
 * on a socketpair (h2t__srv_adopt), the loop stepped by hand a bounded
 * number of times.  Routes answer in the ways a handler can: at once, after
 * reading the body, from a generator, with trailers, by a reset.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ev.h>
#include <h2trace/inflight.h>
#include <h2trace/server.h>
#include "h2/server/server_int.h"

#include "fuzz.h"

#define PREFACE "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#define MAX_STEPS 64

static h2t_server *srv;
static h2t_server_trace trace;

static void h_hello(h2t_server_req *r, void *user) {
  static const h2t_header h[] = {{"content-type", "text/plain"}};
  h2t_server_req_respond(r, 200, h, 1, "hello\n", 6, 0);
}

static int echo_body(h2t_server_req *r, const uint8_t *d, size_t len, int eof,
                     void *user) {
  if (eof)
    h2t_server_req_respond(r, 200, NULL, 0, "done\n", 5, 0);
  return 0;
}

static void h_echo(h2t_server_req *r, void *user) {
  h2t_server_req_on(r, echo_body, NULL, NULL);
}

static ssize_t gen(h2t_server_req *r, uint8_t *buf, size_t len, int *eof,
                   void *user) {
  size_t n = len < 20000 ? len : 20000; /* past one frame, into flow control */
  memset(buf, 'x', n);
  *eof = 1;
  return (ssize_t)n;
}

static void h_gen(h2t_server_req *r, void *user) {
  static const h2t_header t[] = {{"x-trailer", "1"}};
  h2t_server_req_set_trailers(r, t, 1);
  h2t_server_req_respond_gen(r, 200, NULL, 0, gen, NULL);
}

static void h_reset(h2t_server_req *r, void *user) {
  h2t_server_req_reset(r, 8 /* CANCEL */);
}

static void init(void) {
  h2t_inflight_enable(NULL); /* the table and /debug/connections' registry */
  trace = (h2t_server_trace){H2T_SERVER_TRACE_INIT, .any = h2t_fuzz_event_check};
  h2t_server_config cfg = {H2T_SERVER_CONFIG_INIT,
                           .writer = H2T_WRITER_INLINE,
                           .trace = &trace,
                           .max_header_list_size = 8192,
                           .max_concurrent_streams = 16,
                           .shed_inflight = 8,
                           .shed_action = H2T_SHED_503};
  if (h2t_server_new(&srv, &cfg) != 0)
    h2t_fuzz_fail("h2t_server_new");
  h2t_server_handle(srv, "/", h_hello, NULL);
  h2t_server_handle(srv, "/echo", h_echo, NULL);
  h2t_server_handle(srv, "/gen", h_gen, NULL);
  h2t_server_handle(srv, "/reset", h_reset, NULL);
}

/* Read and drop what the server wrote; how many bytes. */
static size_t drain(int fd) {
  char buf[65536];
  size_t total = 0;
  ssize_t n;
  while ((n = read(fd, buf, sizeof buf)) > 0)
    total += (size_t)n;
  return total;
}

static void step(struct ev_loop *loop) { ev_run(loop, EVRUN_NOWAIT); }

void h2t_fuzz_server_feed(const uint8_t *data, size_t size) {
  if (!srv)
    init();
  struct ev_loop *loop = h2t_server_loop(srv);
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv))
    h2t_fuzz_fail("socketpair: %s", strerror(errno));
  h2t__srv_adopt(srv, sv[0]);
  static const uint8_t hello[] = PREFACE "\0\0\0\4\0\0\0\0\0";
  size_t hlen = sizeof hello - 1, off = 0, total = hlen + size;
  int steps = 0;
  /* input in pieces as the socket takes them, the server stepping between */
  while (off < total && steps < 4 * MAX_STEPS) {
    const uint8_t *p = off < hlen ? hello + off : data + (off - hlen);
    size_t left = off < hlen ? hlen - off : total - off;
    ssize_t n = send(sv[1], p, left, MSG_NOSIGNAL);
    if (n > 0)
      off += (size_t)n;
    else if (n < 0 && errno != EAGAIN)
      break; /* the server closed: the rest is not read */
    step(loop);
    drain(sv[1]);
    steps++;
  }
  /* let it answer until it goes quiet */
  for (int i = 0, quiet = 0; i < MAX_STEPS && quiet < 3; i++) {
    step(loop);
    quiet = drain(sv[1]) ? 0 : quiet + 1;
  }
  close(sv[1]);
  h2t_server_stats st;
  for (int i = 0; i < MAX_STEPS; i++) {
    h2t_server_stats_get(srv, &st);
    if (!st.conns_open && !st.inflight)
      return;
    step(loop);
  }
  h2t_fuzz_fail("the server kept a connection (%u) or a request (%u) after "
                "its peer closed",
                (unsigned)st.conns_open, (unsigned)st.inflight);
}
