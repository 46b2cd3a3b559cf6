/* The README's example: attach a trace to a request and see whether its
 * connection was reused, and if not, why.  Usage: trace_example URL */
#include <stdio.h>
#include <h2trace/h2trace.h>

static void on_got_conn(const h2t_event *ev, void *user) {
  if (ev->u.got_conn.reused)
    printf("conn #%llu reused (idle %llu us)\n", (unsigned long long)ev->conn_id,
           (unsigned long long)ev->u.got_conn.idle_us);
  else
    printf("conn #%llu new: %s\n", (unsigned long long)ev->conn_id,
           h2t_conn_reason_name(ev->u.got_conn.new_reason));
}

int main(int argc, char **argv) {
  h2t_client_trace tr = {H2T_CLIENT_TRACE_INIT, .got_conn = on_got_conn};
  h2t_request_opts o = {H2T_REQUEST_OPTS_INIT, .url = argc > 1 ? argv[1] : "", .trace = &tr};
  h2t_client *c;
  h2t_response resp;
  int rv = h2t_client_new(&c, NULL);
  for (int i = 0; rv == 0 && i < 2; i++) { /* the second request reuses the connection */
    if ((rv = h2t_client_fetch(c, &o, &resp)) == 0) {
      printf("status %d, %zu bytes\n", resp.status, resp.body_len);
      h2t_response_free(&resp);
    }
  }
  if (rv != 0)
    fprintf(stderr, "trace_example: %s\n", h2t_strerror(rv));
  h2t_client_del(c);
  return rv != 0;
}
