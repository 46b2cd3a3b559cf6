#include "wedge.h"

#include <pthread.h>

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cv = PTHREAD_COND_INITIALIZER;
static int wedged, released;

void h2t_test_stuck_hook(const h2t_event *ev, void *user) {
  pthread_mutex_lock(&mu);
  wedged = 1;
  pthread_cond_broadcast(&cv);
  while (!released)
    pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
}

void h2t_test_wedge_reset(void) {
  pthread_mutex_lock(&mu);
  wedged = released = 0;
  pthread_mutex_unlock(&mu);
}

void h2t_test_wedge_wait(void) {
  pthread_mutex_lock(&mu);
  while (!wedged)
    pthread_cond_wait(&cv, &mu);
  pthread_mutex_unlock(&mu);
}

void h2t_test_unwedge(void) {
  pthread_mutex_lock(&mu);
  released = 1;
  pthread_cond_broadcast(&cv);
  pthread_mutex_unlock(&mu);
}
