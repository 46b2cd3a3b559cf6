/* Non-blocking TCP connect. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "h2/net/net.h"
#include "trace/trace_int.h"

int h2t__tcp_connect(const struct sockaddr_storage *sa) {
  int fd = socket(sa->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
                  IPPROTO_TCP);
  if (fd < 0)
    return -errno;
  int one = 1;
  /* Requests are small frames that must not wait for Nagle. */
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  socklen_t len = sa->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6)
                                            : sizeof(struct sockaddr_in);
  /* EINTR: the connection goes on in the background like EINPROGRESS
   * (POSIX), and calling connect again would say EALREADY */
  if (connect(fd, (const struct sockaddr *)sa, len) != 0 &&
      errno != EINPROGRESS && errno != EINTR) {
    int e = errno;
    close(fd);
    return -e;
  }
  return fd;
}

int h2t__tcp_connect_result(int fd) {
  int err = 0;
  socklen_t len = sizeof err;
  if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
    return errno;
  return err;
}

void h2t__sockaddr_str(const struct sockaddr_storage *sa, char *buf,
                     size_t len) {
  char ip[INET6_ADDRSTRLEN] = "?";
  if (sa->ss_family == AF_INET6) {
    const struct sockaddr_in6 *s6 = (const void *)sa;
    inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof ip);
    snprintf(buf, len, "[%s]:%u", ip, ntohs(s6->sin6_port));
  } else {
    const struct sockaddr_in *s4 = (const void *)sa;
    inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof ip);
    snprintf(buf, len, "%s:%u", ip, ntohs(s4->sin_port));
  }
}
