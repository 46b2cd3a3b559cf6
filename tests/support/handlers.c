#include "handlers.h"

#include <ev.h>
#include <stdlib.h>
#include <string.h>

typedef struct delay {
  ev_timer t;
  h2t_server_req *r;
  struct ev_loop *loop;
} delay;

static void delay_fire(struct ev_loop *loop, ev_timer *t, int revents) {
  delay *d = t->data;
  h2t_server_req_respond(d->r, 200, NULL, 0, "late\n", 5, 0);
}

static void delay_close(h2t_server_req *r, uint32_t code, void *user) {
  delay *d = user;
  ev_timer_stop(d->loop, &d->t);
  free(d);
}

void h2t_test_delay_handler(h2t_server_req *r, void *user) {
  delay *d = calloc(1, sizeof *d);
  if (!d) {
    h2t_server_req_reset(r, 2 /* INTERNAL_ERROR */);
    return;
  }
  const char *ms = strstr(h2t_server_req_path(r), "ms=");
  d->r = r;
  d->loop = h2t_server_req_loop(r); /* its worker's loop, any of N */
  ev_timer_init(&d->t, delay_fire, (ms ? atoi(ms + 3) : 0) / 1000.0, 0.);
  d->t.data = d;
  h2t_server_req_on(r, NULL, delay_close, d);
  if (user)
    h2t_server_req_set_status(r, user);
  ev_timer_start(d->loop, &d->t);
}
