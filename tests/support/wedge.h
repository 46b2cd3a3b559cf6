/*
 * Test support: a "wedged loop".  h2t_test_stuck_hook, used as a trace hook,
 * blocks the thread that runs it until h2t_test_unwedge(): the way an
 * application's loop gets stuck, for tests showing that diagnostics still
 * answer.
 */
#ifndef H2T_TEST_WEDGE_H
#define H2T_TEST_WEDGE_H

#include <h2trace/trace.h>

void h2t_test_stuck_hook(const h2t_event *ev, void *user);
/* Arm before the hook can run. */
void h2t_test_wedge_reset(void);
/* Wait until a thread is stuck in the hook. */
void h2t_test_wedge_wait(void);
/* Let it go. */
void h2t_test_unwedge(void);

#endif
