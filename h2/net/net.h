/*
 * h2/net/: the leaves both sides may use, knowing nothing of HTTP/2 or of
 * requests: URL parsing, DNS on the loop (c-ares), non-blocking TCP
 * connect, the client's TLS context and connections.
 */
#ifndef H2T_NET_H
#define H2T_NET_H

#include <stdint.h>
#include <sys/socket.h>

#include <ev.h>
#include <openssl/ssl.h>

#include <h2trace/common.h>

/* --- URL (h2/net/url.c) ---------------------------------------------------- */
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

/* --- DNS (h2/net/dns.c): c-ares on the client's loop ----------------------- */
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

/* --- TCP (h2/net/tcp.c) ---------------------------------------------------- */
/* Non-blocking connect; returns the fd (connect may be in progress) or
 * -errno. */
int h2t__tcp_connect(const struct sockaddr_storage *sa);
/* After writability: 0 or the pending socket error (errno value). */
int h2t__tcp_connect_result(int fd);
void h2t__sockaddr_str(const struct sockaddr_storage *sa, char *buf,
                     size_t len);

/* --- TLS (h2/net/tls.c) ---------------------------------------------------- */
/* Client context: TLS 1.2+, ALPN h2, verification unless insecure.
 * Returns 0 or H2T_ERR_TLS (CA file/path could not be loaded). */
int h2t__tls_ctx_new(SSL_CTX **out, const char *ca_file, const char *ca_path,
                   int insecure);
/* An SSL for fd, with SNI (names only) and host/IP verification. */
SSL *h2t__tls_new(SSL_CTX *ctx, int fd, const char *host, int host_is_ip,
                int insecure);

#endif
