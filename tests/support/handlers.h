/* Test support: server handlers several tests register. */
#ifndef H2T_TEST_HANDLERS_H
#define H2T_TEST_HANDLERS_H

#include <h2trace/server.h>

/* /delay?ms=N: answers "late\n" after N ms from a timer on the server's
 * loop, holding up no other stream.  user: a status text to set on the
 * request while it waits (shown by the diagnostics), or NULL. */
void h2t_test_delay_handler(h2t_server_req *r, void *user);

#endif
