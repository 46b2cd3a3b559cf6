/* In-flight table.  Placeholder until the table lands: always off. */
#include "trace/trace_int.h"

struct inflight_entry *inflight_begin(inflight_kind kind, uint64_t req_id,
                                      const char *method, const char *scheme,
                                      const char *authority, const char *path,
                                      inflight_cancel_fn cancel,
                                      void *cancel_arg) {
  return NULL;
}
void inflight_event(struct inflight_entry *e, const h2t_event *ev) {}
void inflight_set_status(struct inflight_entry *e, const char *text) {}
void inflight_end(struct inflight_entry *e, int error) {}
uint64_t inflight_mask(inflight_kind kind) { return 0; }
