/*
 * Test support: real peers on loopback.  Every process a test starts is
 * recorded by PID and stopped by h2t_test_stop() / at exit, never by name.
 */
#ifndef H2T_TEST_PEER_H
#define H2T_TEST_PEER_H

#include <pthread.h>
#include <stdint.h>
#include <sys/types.h>

/* A free TCP port on 127.0.0.1 (bound to 0 then released). */
int h2t_test_free_port(void);

/* Wait until something accepts on 127.0.0.1:port; 0 or -1 after timeout. */
int h2t_test_wait_port(int port, int timeout_ms);

/* Start argv[0] (searched in PATH, or a path) with stdout/stderr to
 * `log_path` (NULL: /dev/null).  Returns the PID or -1.  The PID is killed
 * at exit if the test did not stop it. */
pid_t h2t_test_spawn(char *const argv[], const char *log_path);

/* h2t_test_spawn() for a peer that picks its own port and prints it on the
 * first line of its stdout: waits up to timeout_ms for that line in
 * log_path (required; the peer's later output lands there too) and sets
 * *port.  Returns the PID, or -1 (a child that printed no port is stopped). */
pid_t h2t_test_spawn_port(char *const argv[], const char *log_path,
                          int timeout_ms, int *port);

/* SIGTERM, wait up to 2 s, then SIGKILL; reaps it.  Returns the exit status
 * as from waitpid, or -1. */
int h2t_test_stop(pid_t pid);

/* A fresh temporary directory (removed at exit with its files). */
const char *h2t_test_tmpdir(void);

/* A self-signed certificate for "localhost" + 127.0.0.1 made with the
 * openssl CLI in the tmpdir: sets cert/key paths (static buffers). 0 or -1. */
int h2t_test_make_cert(const char **cert, const char **key);

/* Start nghttpd on a free port serving `docroot` (NULL: a tmpdir with
 * index.html = "hello\n" and a 6-byte file "/6" = "abcdef").  tls=0: h2c
 * (--no-tls); tls=1: a generated cert.  extra: more nghttpd args, NULL-ended
 * (may be NULL).  Sets *port; returns the PID or -1. */
pid_t h2t_test_nghttpd(int tls, const char *docroot, const char *const *extra,
                       int *port);

/* Path of a program built by this project: H2T_BIN_DIR "/" name. */
const char *h2t_test_bin(const char *name);

/* Run a command to completion (bounded by timeout_ms, then killed),
 * capturing stdout+stderr into *out (malloc'd, NUL-terminated; may be NULL).
 * Returns the exit code, or -1 on timeout / failure to start. */
int h2t_test_run(char *const argv[], int timeout_ms, char **out);

/* h2t_test_run on a thread of its own, for a client that runs while the
 * test acts on the server: fill argv and timeout_ms, start; join gives out
 * and rc.  start returns 0, or -1 (no thread: rc is -1). */
typedef struct h2t_test_bg {
  char *const *argv;
  int timeout_ms;
  char *out;
  int rc;
  pthread_t th;
} h2t_test_bg;
int h2t_test_bg_start(h2t_test_bg *b);
void h2t_test_bg_join(h2t_test_bg *b);

#endif
