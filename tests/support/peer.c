#include "peer.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CHILDREN 64
static pid_t children[MAX_CHILDREN];
static int nchildren;
static char tmpdir[256];

static void forget(pid_t pid) {
  for (int i = 0; i < nchildren; i++)
    if (children[i] == pid) {
      children[i] = children[--nchildren];
      return;
    }
}

static void cleanup(void) {
  while (nchildren > 0)
    h2t_test_stop(children[0]);
  if (tmpdir[0]) {
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0) {
      /* best effort */
    }
  }
}

static void ensure_atexit(void) {
  static int done;
  if (!done) {
    done = 1;
    atexit(cleanup);
    signal(SIGPIPE, SIG_IGN);
  }
}

int h2t_test_free_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  struct sockaddr_in sa = {.sin_family = AF_INET};
  socklen_t len = sizeof sa;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
      getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
    if (fd >= 0)
      close(fd);
    return -1;
  }
  close(fd);
  return ntohs(sa.sin_port);
}

int h2t_test_wait_port(int port, int timeout_ms) {
  for (int waited = 0; waited <= timeout_ms; waited += 20) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int ok = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0;
    close(fd);
    if (ok)
      return 0;
    usleep(20000);
  }
  return -1;
}

pid_t h2t_test_spawn(char *const argv[], const char *log_path) {
  ensure_atexit();
  if (nchildren >= MAX_CHILDREN)
    return -1;
  pid_t pid = fork();
  if (pid < 0)
    return -1;
  if (pid == 0) {
    int fd = open(log_path ? log_path : "/dev/null",
                  O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    int in = open("/dev/null", O_RDONLY);
    if (in >= 0) {
      dup2(in, 0);
      close(in);
    }
    execvp(argv[0], argv);
    _exit(127);
  }
  children[nchildren++] = pid;
  return pid;
}

pid_t h2t_test_spawn_port(char *const argv[], const char *log_path,
                          int timeout_ms, int *port) {
  if (!log_path)
    return -1;
  pid_t pid = h2t_test_spawn(argv, log_path);
  if (pid < 0)
    return -1;
  for (int waited = 0; waited <= timeout_ms; waited += 10) {
    char line[32] = "";
    FILE *f = fopen(log_path, "r");
    if (f) {
      char *got = fgets(line, sizeof line, f);
      fclose(f);
      int p;
      if (got && strchr(line, '\n') && sscanf(line, "%d", &p) == 1 &&
          p > 0 && p < 65536) {
        *port = p;
        return pid;
      }
    }
    if (waitpid(pid, NULL, WNOHANG) == pid) { /* died before printing */
      forget(pid);
      return -1;
    }
    usleep(10000);
  }
  h2t_test_stop(pid);
  return -1;
}

int h2t_test_stop(pid_t pid) {
  int status = -1;
  if (pid <= 0)
    return -1;
  forget(pid);
  if (waitpid(pid, &status, WNOHANG) == pid)
    return status;
  kill(pid, SIGTERM);
  for (int i = 0; i < 100; i++) {
    if (waitpid(pid, &status, WNOHANG) == pid)
      return status;
    usleep(20000);
  }
  kill(pid, SIGKILL);
  waitpid(pid, &status, 0);
  return status;
}

const char *h2t_test_tmpdir(void) {
  ensure_atexit();
  if (!tmpdir[0]) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/h2t-test-XXXXXX");
    if (!mkdtemp(tmpdir)) {
      tmpdir[0] = '\0';
      return "/tmp";
    }
  }
  return tmpdir;
}

int h2t_test_make_cert(const char **cert, const char **key) {
  static char c[300], k[300];
  const char *d = h2t_test_tmpdir();
  snprintf(c, sizeof c, "%s/cert.pem", d);
  snprintf(k, sizeof k, "%s/key.pem", d);
  if (access(c, R_OK) != 0) {
    char *argv[] = {"openssl", "req", "-x509", "-newkey", "ec",
                    "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                    "-keyout", k, "-out", c, "-days", "2", "-subj",
                    "/CN=localhost", "-addext",
                    "subjectAltName=DNS:localhost,IP:127.0.0.1", NULL};
    if (h2t_test_run(argv, 20000, NULL) != 0)
      return -1;
  }
  *cert = c;
  *key = k;
  return 0;
}

static void write_file(const char *dir, const char *name, const char *body) {
  char p[400];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  FILE *f = fopen(p, "w");
  if (f) {
    fputs(body, f);
    fclose(f);
  }
}

pid_t h2t_test_nghttpd(int tls, const char *docroot, const char *const *extra,
                       int *port) {
  static char root[300];
  if (!docroot) {
    snprintf(root, sizeof root, "%s/www", h2t_test_tmpdir());
    mkdir(root, 0755);
    write_file(root, "index.html", "hello\n");
    write_file(root, "6", "abcdef");
    docroot = root;
  }
  const char *cert = NULL, *key = NULL;
  if (tls && h2t_test_make_cert(&cert, &key) != 0)
    return -1;
  for (int attempt = 0; attempt < 5; attempt++) {
    int p = h2t_test_free_port();
    char pbuf[16], dbuf[320];
    snprintf(pbuf, sizeof pbuf, "%d", p);
    snprintf(dbuf, sizeof dbuf, "--htdocs=%s", docroot);
    char *argv[40];
    int n = 0;
    argv[n++] = "nghttpd";
    argv[n++] = "--address=127.0.0.1";
    argv[n++] = dbuf;
    if (!tls)
      argv[n++] = "--no-tls";
    for (int i = 0; extra && extra[i] && n < 34; i++)
      argv[n++] = (char *)extra[i];
    argv[n++] = pbuf;
    if (tls) {
      argv[n++] = (char *)key;
      argv[n++] = (char *)cert;
    }
    argv[n] = NULL;
    char log[400];
    snprintf(log, sizeof log, "%s/nghttpd-%d.log", h2t_test_tmpdir(), p);
    pid_t pid = h2t_test_spawn(argv, log);
    if (pid < 0)
      return -1;
    if (h2t_test_wait_port(p, 5000) == 0) {
      *port = p;
      return pid;
    }
    h2t_test_stop(pid);
  }
  return -1;
}

const char *h2t_test_bin(const char *name) {
  static char buf[8][512];
  static int i;
  const char *dir = getenv("H2T_BIN_DIR");
  char *b = buf[i++ % 8];
  snprintf(b, 512, "%s/%s", dir ? dir : H2T_BIN_DIR, name);
  return b;
}

int h2t_test_run(char *const argv[], int timeout_ms, char **out) {
  ensure_atexit();
  int pfd[2];
  if (pipe(pfd) != 0)
    return -1;
  pid_t pid = fork();
  if (pid < 0)
    return -1;
  if (pid == 0) {
    close(pfd[0]);
    dup2(pfd[1], 1);
    dup2(pfd[1], 2);
    close(pfd[1]);
    execvp(argv[0], argv);
    _exit(127);
  }
  close(pfd[1]);
  size_t cap = 4096, len = 0;
  char *buf = malloc(cap);
  int waited = 0, rc = -1;
  for (;;) {
    struct pollfd p = {.fd = pfd[0], .events = POLLIN};
    int r = poll(&p, 1, 50);
    if (r > 0) {
      if (len + 1024 > cap)
        buf = realloc(buf, cap *= 2);
      ssize_t n = read(pfd[0], buf + len, cap - len - 1);
      if (n <= 0)
        break;
      len += (size_t)n;
    } else if ((waited += 50) > timeout_ms) {
      kill(pid, SIGKILL);
      break;
    }
  }
  close(pfd[0]);
  int status;
  waitpid(pid, &status, 0);
  if (waited <= timeout_ms && WIFEXITED(status))
    rc = WEXITSTATUS(status);
  buf[len] = '\0';
  if (out)
    *out = buf;
  else
    free(buf);
  return rc;
}

static void *bg_main(void *arg) {
  h2t_test_bg *b = arg;
  b->rc = h2t_test_run(b->argv, b->timeout_ms, &b->out);
  return NULL;
}

int h2t_test_bg_start(h2t_test_bg *b) {
  b->out = NULL;
  b->rc = -1;
  return pthread_create(&b->th, NULL, bg_main, b) == 0 ? 0 : -1;
}

void h2t_test_bg_join(h2t_test_bg *b) {
  pthread_join(b->th, NULL);
}
