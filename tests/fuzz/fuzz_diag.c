/*
 * The diagnostics endpoint's request parsing: arbitrary bytes as an HTTP/1
 * request stream to a running endpoint (token "fuzz-token"), on a
 * socketpair handed to its libmicrohttpd daemon (h2t__diag_adopt).  That is
 * MHD's request parser, then ours: routing, request ids, the bearer token
 * compare, query arguments, body limits.  Every response must be complete
 * and, when it says JSON, valid JSON.
 */
#include <errno.h>
#include <stdio.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <h2trace/diag.h>
#include <h2trace/inflight.h>
#include "diag/diag_int.h"

#include "fuzz.h"

#define MAX_OUT (1 << 20)
#define WAIT_MS 2000

static h2t_diag *diag;

/* Each response in out: JSON bodies (by content-length) must parse. */
static void check_responses(const char *out, size_t len) {
  const char *p = out, *end = out + len;
  while (p < end) {
    const char *hend = memmem(p, (size_t)(end - p), "\r\n\r\n", 4);
    if (!hend)
      return; /* cut short by the close: nothing to say */
    if (memcmp(p, "HTTP/1.", 7))
      h2t_fuzz_fail("not a status line: %.40s", p);
    const char *cl = memmem(p, (size_t)(hend - p), "Content-Length: ", 16);
    int json = memmem(p, (size_t)(hend - p), "application/json", 16) != NULL;
    const char *body = hend + 4;
    if (!cl)
      return;
    size_t blen = strtoul(cl + 16, NULL, 10);
    int head = 0; /* a HEAD answer has the length but no body */
    if ((size_t)(end - body) < blen)
      return;
    if (json && blen && body[0] != '{')
      head = 1;
    if (json && blen && !head && !h2t_fuzz_json_valid(body, blen))
      h2t_fuzz_fail("invalid JSON from the endpoint: %.*s", (int)blen, body);
    p = head ? body : body + blen;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size > 16384)
    return 0;
  if (!diag) {
    h2t_inflight_enable(NULL);
    h2t_diag_config cfg = {H2T_DIAG_CONFIG_INIT, .token = "fuzz-token"};
    if (h2t_diag_start(&diag, &cfg) != 0)
      h2t_fuzz_fail("h2t_diag_start");
  }
  int sv[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
    h2t_fuzz_fail("socketpair: %s", strerror(errno));
  if (h2t__diag_adopt(diag, sv[0]) != 0) {
    close(sv[1]);
    return 0;
  }
  char *out = malloc(MAX_OUT);
  size_t olen = 0, off = 0;
  /* write what the socket takes while reading answers, then half-close:
   * the endpoint answers what is complete and closes */
  struct pollfd pf = {.fd = sv[1], .events = POLLIN | POLLOUT};
  for (;;) {
    int r = poll(&pf, 1, WAIT_MS);
    if (r < 0 && errno == EINTR)
      continue; /* /debug/threads samples this thread too, by a signal */
    if (r <= 0)
      break; /* an endpoint that neither answers nor closes: its timeout */
    if (pf.revents & POLLOUT) {
      ssize_t n = send(sv[1], data + off, size - off,
                       MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0)
        off += (size_t)n;
      if (n < 0 || off == size) {
        shutdown(sv[1], SHUT_WR);
        pf.events = POLLIN;
      }
    }
    if (pf.revents & (POLLIN | POLLHUP | POLLERR)) {
      ssize_t n = recv(sv[1], out + olen, MAX_OUT - olen, MSG_DONTWAIT);
      if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
        break;
      if (n > 0)
        olen += (size_t)n;
      if (olen == MAX_OUT)
        break;
    }
  }
  close(sv[1]);
  if (getenv("H2T_FUZZ_DEBUG")) /* what the endpoint answered */
    fprintf(stderr, "%.*s\n", (int)olen, out);
  check_responses(out, olen);
  free(out);
  return 0;
}
