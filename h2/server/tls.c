/*
 * Server-side TLS: the context (cert, key, ALPN h2) and per-connection SSL
 * objects on memory BIOs, so that all SSL work stays on the loop thread and
 * the writer only ever sends plain buffers.
 */
#include <string.h>

#include <openssl/err.h>

#include "h2/server/server_int.h"

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
  /* The client offered ALPN without h2: refuse the handshake with
   * no_application_protocol (RFC 7301 §3.2) rather than fail later at the
   * HTTP/2 preface. */
  return SSL_TLSEXT_ERR_ALERT_FATAL;
}

SSL_CTX *h2t__srv_tls_ctx_new(const char *cert_file, const char *key_file) {
  SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
  if (!ctx)
    return NULL;
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION |
                               SSL_OP_NO_SESSION_RESUMPTION_ON_RENEGOTIATION |
                               SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
  /* Our order, Mozilla's "intermediate" one: AES-128-GCM first (as
   * secure for TLS and cheaper than AES-256: 10 rounds, not 14), then
   * AES-256-GCM, then ChaCha20.  TLS 1.2: the ciphers RFC 9113 §9.2.2
   * allows with h2 (ephemeral, AEAD). */
  SSL_CTX_set_ciphersuites(ctx, "TLS_AES_128_GCM_SHA256:TLS_AES_256_GCM_SHA384:"
                                "TLS_CHACHA20_POLY1305_SHA256");
  SSL_CTX_set_cipher_list(ctx, "ECDHE-ECDSA-AES128-GCM-SHA256:"
                               "ECDHE-RSA-AES128-GCM-SHA256:"
                               "ECDHE-ECDSA-AES256-GCM-SHA384:"
                               "ECDHE-RSA-AES256-GCM-SHA384:"
                               "ECDHE-ECDSA-CHACHA20-POLY1305:"
                               "ECDHE-RSA-CHACHA20-POLY1305:"
                               "DHE-RSA-AES128-GCM-SHA256:"
                               "DHE-RSA-AES256-GCM-SHA384:"
                               "DHE-RSA-CHACHA20-POLY1305");
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

/* The write side: a sink BIO that hands each TLS record straight to the
 * connection's output buffer (no memory BIO to copy out of). */
static int sink_write(BIO *b, const char *data, size_t len, size_t *written) {
  srv_tls_sink *k = BIO_get_data(b);
  if (k->fn(k->arg, (const uint8_t *)data, len) != 0)
    return 0;
  *written = len;
  return 1;
}

static long sink_ctrl(BIO *b, int cmd, long num, void *ptr) {
  return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int sink_create(BIO *b) {
  BIO_set_init(b, 1);
  return 1;
}

static BIO_METHOD *sink_method;
static pthread_once_t sink_once = PTHREAD_ONCE_INIT;

static void sink_init(void) {
  BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK,
                               "h2trace-sink");
  if (!m)
    return;
  BIO_meth_set_write_ex(m, sink_write);
  BIO_meth_set_ctrl(m, sink_ctrl);
  BIO_meth_set_create(m, sink_create);
  sink_method = m;
}

SSL *h2t__srv_tls_conn_new(SSL_CTX *ctx, BIO **rbio, srv_tls_sink *sink) {
  pthread_once(&sink_once, sink_init);
  if (!sink_method)
    return NULL;
  SSL *ssl = SSL_new(ctx);
  if (!ssl)
    return NULL;
  BIO *r = BIO_new(BIO_s_mem()), *w = BIO_new(sink_method);
  if (!r || !w) {
    BIO_free(r);
    BIO_free(w);
    SSL_free(ssl);
    return NULL;
  }
  /* An empty read BIO means "want read", not EOF. */
  BIO_set_mem_eof_return(r, -1);
  BIO_set_data(w, sink);
  SSL_set_bio(ssl, r, w);
  SSL_set_accept_state(ssl);
  *rbio = r;
  return ssl;
}
