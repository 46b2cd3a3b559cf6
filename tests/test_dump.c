/* trace/dump.c: the human report, h2t_inflight_dump() and the SIGUSR1
 * trigger (handler → pipe → dump thread), checked by reading the report
 * back from a pipe. */
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "wedge.h"

#include <h2trace/inflight.h>
#include "trace/inflight_int.h"

static struct inflight_entry *ents[8];

/* The example: six requests to slownode, one served request.  Start
 * times are moved back so that ages are known to the centisecond. */
static int setup(void **state) {
  if (h2t_inflight_enable(NULL) != 0)
    return -1;
  uint64_t now = h2t_now_us();
  for (int i = 0; i < 6; i++) {
    char path[32];
    snprintf(path, sizeof path, "/blob/%d", i);
    struct inflight_entry *e = h2t__inflight_begin(
        INFLIGHT_CLIENT, (uint64_t)(10 + i), "GET", "http", "slownode:8484",
        i == 0 ? "/blob/9f2c" : path, NULL, NULL);
    h2t__ife_lock(e);
    e->start_us = e->state_us = now - (94000000 - (uint64_t)i * 1000000);
    e->hist[0] = ((uint64_t)H2T_IFS_QUEUED << 56) | e->start_us;
    h2t__ife_unlock(e);
    h2t_event ev = {.type = H2T_EV_WROTE_REQUEST, .t_us = e->start_us + 1000,
                    .conn_id = 3, .stream_id = 17 + 2 * i};
    h2t__inflight_event(e, &ev);
    ents[i] = e;
  }
  struct inflight_entry *s = h2t__inflight_begin(INFLIGHT_SERVER, 99, "POST",
                                            "http", "api.local", "/items",
                                            NULL, NULL);
  h2t_event hs = {.type = H2T_EV_SRV_HANDLER_STARTED, .conn_id = 5,
                  .stream_id = 1};
  h2t__inflight_event(s, &hs);
  h2t__inflight_set_status(s, "querying db");
  ents[6] = s;
  return 0;
}

static int teardown(void **state) {
  for (int i = 0; i < 7; i++)
    h2t__inflight_end(ents[i], 0);
  return h2t_inflight_disable();
}

static void test_duration_format(void **state) {
  char b[32];
  h2t__fmt_duration(b, sizeof b, 94000000);
  assert_string_equal(b, "1m34.00s");
  h2t__fmt_duration(b, sizeof b, 2500000);
  assert_string_equal(b, "2.50s");
  h2t__fmt_duration(b, sizeof b, 3723450000ull);
  assert_string_equal(b, "1h02m03.45s");
  h2t__fmt_duration(b, sizeof b, 0);
  assert_string_equal(b, "0.00s");
}

static void check_report(const char *s) {
  assert_non_null(strstr(s, "In-flight HTTP/2 requests (7):\n"));
  assert_non_null(strstr(s, "\nslownode:8484  6 in flight, oldest 1m34."));
  assert_non_null(strstr(s, "\n  GET /blob/9f2c for 1m34."));
  assert_non_null(
      strstr(s, "s [waiting for response, conn #3 stream 17]\n"));
  assert_non_null(strstr(s, "\napi.local (served)  1 in flight, oldest "));
  assert_non_null(
      strstr(s, "  POST /items for 0.0"));
  assert_non_null(strstr(s, "[in handler: querying db, conn #5 stream 1]\n"));
  /* oldest group first, oldest request first in it */
  assert_true(strstr(s, "slownode") < strstr(s, "api.local"));
  assert_true(strstr(s, "/blob/9f2c") < strstr(s, "/blob/1 "));
  assert_true(strstr(s, "/blob/1 ") < strstr(s, "/blob/5 "));
}

static char *read_all(int fd, int timeout_ms) {
  size_t cap = 65536, len = 0;
  char *buf = malloc(cap);
  for (;;) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    /* after the first bytes, a short quiet period means the report is done */
    if (poll(&p, 1, len ? 200 : timeout_ms) <= 0)
      break;
    ssize_t r = read(fd, buf + len, cap - len - 1);
    if (r <= 0)
      break;
    len += (size_t)r;
  }
  buf[len] = '\0';
  return buf;
}

static void test_dump_to_fd(void **state) {
  int p[2];
  assert_int_equal(pipe(p), 0);
  assert_int_equal(h2t_inflight_dump(p[1]), 0);
  close(p[1]);
  char *s = read_all(p[0], 1000);
  close(p[0]);
  fputs(s, stdout); /* for the reader of the test log */
  check_report(s);
  free(s);
}

static void test_sigusr1_writes_report_from_its_thread(void **state) {
  struct sigaction before, after;
  sigaction(SIGUSR1, NULL, &before);
  int p[2];
  assert_int_equal(pipe(p), 0);
  assert_int_equal(h2t_inflight_install_signal(p[1]), 0);
  assert_int_equal(h2t_inflight_install_signal(p[1]), H2T_ERR_STATE);
  /* the table stays in use while the signal dump is installed */
  assert_int_equal(h2t_inflight_disable(), H2T_ERR_STATE);
  assert_int_equal(raise(SIGUSR1), 0);
  char *s = read_all(p[0], 3000);
  check_report(s);
  free(s);
  assert_int_equal(h2t_inflight_uninstall_signal(), 0);
  assert_int_equal(h2t_inflight_uninstall_signal(), H2T_ERR_STATE);
  sigaction(SIGUSR1, NULL, &after);
  assert_ptr_equal(after.sa_handler, before.sa_handler);
  close(p[0]);
  close(p[1]);
}

/* A process that did not opt in keeps SIGUSR1's default action (it dies of
 * it); one that did prints the report on its stderr and lives on. */
static void test_signal_in_child_process(void **state) {
  int p[2];
  assert_int_equal(pipe(p), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    dup2(p[1], 2);
    close(p[0]);
    h2t_inflight_install_signal(-1);
    kill(getpid(), SIGUSR1);
    sleep(1); /* the dump thread writes meanwhile; EINTR ends it early */
    usleep(500000);
    _exit(7);
  }
  close(p[1]);
  char *s = read_all(p[0], 5000);
  int st;
  waitpid(pid, &st, 0);
  close(p[0]);
  assert_true(WIFEXITED(st));
  assert_int_equal(WEXITSTATUS(st), 7);
  check_report(s);
  free(s);

  pid = fork();
  if (pid == 0) {
    kill(getpid(), SIGUSR1);
    _exit(0);
  }
  waitpid(pid, &st, 0);
  assert_true(WIFSIGNALED(st));
  assert_int_equal(WTERMSIG(st), SIGUSR1);
}

/* The report does not need the loops: a "loop" stuck inside a hook (holding
 * nothing of the table) does not delay it. */
static void *loop_thread(void *arg) {
  h2t_client_trace tr = {H2T_CLIENT_TRACE_INIT, .got_data = h2t_test_stuck_hook};
  trace_chain tc;
  h2t__trace_chain_clear(&tc, 0);
  h2t__trace_chain_add(&tc, &tr);
  h2t__trace_chain_set_inflight(&tc, ents[1]);
  h2t_event ev = {.type = H2T_EV_GOT_DATA, .conn_id = 3, .stream_id = 19};
  ev.u.data.bytes = 10;
  trace_emit(&tc, &ev);
  return NULL;
}

static void test_dump_while_loop_is_stuck(void **state) {
  pthread_t th;
  h2t_test_wedge_reset();
  pthread_create(&th, NULL, loop_thread, NULL);
  h2t_test_wedge_wait();
  char *s;
  assert_int_equal(h2t_inflight_dump_string(&s), 0);
  assert_non_null(strstr(s, "GET /blob/1 for 1m33.")); /* now receiving */
  assert_non_null(strstr(s, "[receiving, conn #3 stream 19]"));
  free(s);
  h2t_test_unwedge();
  pthread_join(th, NULL);
}

static void test_empty_and_off(void **state) {
  char *s;
  assert_int_equal(h2t_inflight_dump_string(&s), 0);
  assert_string_equal(s, "In-flight HTTP/2 requests (0):\n");
  free(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_duration_format),
      cmocka_unit_test(test_empty_and_off),
      cmocka_unit_test_setup_teardown(test_dump_to_fd, setup, teardown),
      cmocka_unit_test_setup_teardown(
          test_sigusr1_writes_report_from_its_thread, setup, teardown),
      cmocka_unit_test_setup_teardown(test_signal_in_child_process, setup,
                                      teardown),
      cmocka_unit_test_setup_teardown(test_dump_while_loop_is_stuck, setup,
                                      teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
