/*
 * Server-side TLS: the context (cert, key, ALPN h2) and per-connection SSL
 * objects on memory BIOs, so that all SSL work stays on the loop thread and
 * the writer only ever sends plain buffers.
 */
#include <string.h>

#include <openssl/err.h>

#include "h2/srv_int.h"

static int alpn_select(SSL *ssl, const unsigned char **out,
                       unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg) {
  for (unsigned i = 0; i + 1 <= inlen;) {
    unsigned len = in[i];
    if (i + 1 + len > inlen)
      break;
    if (len == 2 && memcmp(in + i + 1, "h2", 2) == 0) {
      *out = in + i + 1;
      *outlen = 2;
      return SSL_TLSEXT_ERR_OK;
    }
    i += 1 + len;
  }
  return SSL_TLSEXT_ERR_NOACK;
}

SSL_CTX *srv_tls_ctx_new(const char *cert_file, const char *key_file) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx)
    return NULL;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION |
                               SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION |
                               SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
  /* RFC 9113 §9.2.2: TLS 1.2 ciphers usable with h2 (ephemeral, AEAD). */
  SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:"
                               "DHE+CHACHA20");
  SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS |
                            SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
  SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"h2trace", 7);
  if (SSL_CTX_use_certificate_chain_file(ctx, cert_file) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, key_file, SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_check_private_key(ctx) != 1) {
    ERR_clear_error();
    SSL_CTX_free(ctx);
    return NULL;
  }
  SSL_CTX_set_alpn_select_cb(ctx, alpn_select, NULL);
  return ctx;
}

SSL *srv_tls_conn_new(SSL_CTX *ctx, BIO **rbio, BIO **wbio) {
  SSL *ssl = SSL_new(ctx);
  if (!ssl)
    return NULL;
  BIO *r = BIO_new(BIO_s_mem()), *w = BIO_new(BIO_s_mem());
  if (!r || !w) {
    BIO_free(r);
    BIO_free(w);
    SSL_free(ssl);
    return NULL;
  }
  /* An empty read BIO means "want read", not EOF. */
  BIO_set_mem_eof_return(r, -1);
  BIO_set_mem_eof_return(w, -1);
  SSL_set_bio(ssl, r, w);
  SSL_set_accept_state(ssl);
  *rbio = r;
  *wbio = w;
  return ssl;
}
