/*
 * h2tlog_bt: writes h2tlog's bpftrace program (share/h2trace/h2tlog.bt) to
 * stdout, its names taken from the library so that they cannot drift: the
 * event ids h2tlog's --events picks from, the in-flight states and kinds.
 * Run at build time.  @LIB@ is the library h2tlog attaches to, and
 * "//@WANT@" where it sets the events wanted.
 */
#include <stdio.h>

#include <h2trace/h2trace.h>

/* Past the event types: the in-flight state probe (h2tlog's own name). */
#define STATE_ID H2T_EV_COUNT_

int main(void) {
  printf("// h2tlog.bt: made by h2tlog_bt from the library's names; run it\n"
         "// through h2tlog, which sets @LIB@ and the events wanted.\n");
  for (int t = 0; t < H2T_EV_COUNT_; t++)
    printf("// event %d %s %s\n", t, h2t_event_name((h2t_event_type)t),
           t < H2T_EV_FIRST_SERVER_ ? "client" : "server");
  printf("// event %d inflight_state both\n", STATE_ID);
  printf("BEGIN {\n");
  for (int s = 0; s < H2T_IFS_COUNT_; s++)
    printf("  @state[%d] = \"%s\";\n", s,
           h2t_inflight_state_name((h2t_inflight_state)s));
  printf("  @kind[%d] = \"%s\";\n", H2T_INFLIGHT_CLIENT,
         h2t_inflight_kind_name(H2T_INFLIGHT_CLIENT));
  printf("  @kind[%d] = \"%s\";\n", H2T_INFLIGHT_SERVER,
         h2t_inflight_kind_name(H2T_INFLIGHT_SERVER));
  printf("//@WANT@\n}\n");
  /* One line per probe: h2tlog drops the one it does not need, so that
   * its semaphore stays down.  Output: "tid seq last piece", which h2tlog
   * joins into lines (a line comes in pieces of at most 120 bytes). */
  printf("usdt:@LIB@:h2trace:json /@want[arg0]/ { "
         "printf(\"%%d %%d %%d %%s\\n\", tid, arg3, arg4, str(arg5)); }\n");
  printf("usdt:@LIB@:h2trace:inflight__state { "
         "printf(\"%%d 0 0 {\\\"event\\\":\\\"inflight_state\\\","
         "\\\"t_us\\\":%%llu,\\\"req_id\\\":%%llu,\\\"conn\\\":%%llu,"
         "\\\"stream\\\":%%d,\\\"kind\\\":\\\"%%s\\\",\\\"state\\\":\\\"%%s\\\"}\\n\", "
         "tid, arg3, arg0, arg1, (int32)arg2, @kind[arg5], @state[arg4]); }\n");
  printf("END { clear(@state); clear(@kind); clear(@want); }\n");
  return 0;
}
