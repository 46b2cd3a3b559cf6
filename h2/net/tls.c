/* Client TLS: TLS 1.2+, ALPN "h2", certificate and host verification. */
#include <arpa/inet.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "h2/net/net.h"
#include "trace/trace_int.h"

int h2t__tls_ctx_new(SSL_CTX **out, const char *ca_file, const char *ca_path,
                   int insecure) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
  if (!ctx)
    return H2T_ERR_NOMEM;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  /* RFC 9113 §9.2: no compression, no renegotiation. */
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                            SSL_MODE_RELEASE_BUFFERS);
  /* read whole socket chunks, not record by record: fewer syscalls */
  SSL_CTX_set_read_ahead(ctx, 1);
  static const unsigned char alpn[] = {2, 'h', '2'};
  if (SSL_CTX_set_alpn_protos(ctx, alpn, sizeof alpn) != 0)
    goto fail;
  if (!insecure) {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    if (ca_file || ca_path) {
      if (SSL_CTX_load_verify_locations(ctx, ca_file, ca_path) != 1)
        goto fail;
    } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
      goto fail;
    }
  } else {
    SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, NULL);
  }
  *out = ctx;
  return 0;
fail:
  ERR_clear_error();
  SSL_CTX_free(ctx);
  return H2T_ERR_TLS;
}

SSL *h2t__tls_new(SSL_CTX *ctx, int fd, const char *host, int host_is_ip,
                int insecure) {
  SSL *ssl = SSL_new(ctx);
  if (!ssl)
    return NULL;
  if (SSL_set_fd(ssl, fd) != 1)
    goto fail;
  /* SNI only for names (RFC 6066 §3 forbids literals). */
  if (!host_is_ip && SSL_set_tlsext_host_name(ssl, host) != 1)
    goto fail;
  if (!insecure) {
    X509_VERIFY_PARAM *vp = SSL_get0_param(ssl);
    if (host_is_ip) {
      if (X509_VERIFY_PARAM_set1_ip_asc(vp, host) != 1)
        goto fail;
    } else {
      X509_VERIFY_PARAM_set_hostflags(vp,
                                      X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      if (SSL_set1_host(ssl, host) != 1)
        goto fail;
    }
  }
  SSL_set_connect_state(ssl);
  return ssl;
fail:
  ERR_clear_error();
  SSL_free(ssl);
  return NULL;
}
