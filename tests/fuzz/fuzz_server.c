/*
 * The server, fed arbitrary bytes after a valid client connection preface:
 * frames of every type, HPACK, flow control, stream states, request bodies,
 * responses of each kind a handler makes (srv_harness.c), every trace
 * event checked as JSON.  The server must never crash or leak, and must
 * let the connection go once its peer has closed.
 */
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  h2t_fuzz_server_feed(data, size);
  return 0;
}
