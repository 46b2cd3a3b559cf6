/*
 * trace/ private: USDT probes (provider "h2trace"; doc/probes.md).
 *
 * One probe per event type, client__<event> and server__<event>, each fired
 * where the event is emitted, for every request, whether or not a hook is
 * set; one probe, json, carrying the event as its h2stat --json line (what
 * h2tlog reads); one, inflight__state, at each in-flight state change.
 *
 * Each probe has a SystemTap semaphore, which a tracer raises while it is
 * attached.  The semaphores are one array indexed by event type, so that
 * TRACE_WANTS() folds "a probe wants it" into its mask test: one load and
 * no extra branch per trace point while nothing is attached, and no probe
 * argument is computed until something is.  Built only with -DH2T_PROBES=ON
 * (the default where <sys/sdt.h> exists); otherwise all of this is 0.
 */
#ifndef H2T_PROBES_INT_H
#define H2T_PROBES_INT_H

#include <h2trace/trace.h>

/* Semaphore slots past the event types. */
#define H2T_PROBE_JSON_ H2T_EV_COUNT_
#define H2T_PROBE_STATE_ (H2T_EV_COUNT_ + 1)
#define H2T_PROBE_NSEMA_ (H2T_EV_COUNT_ + 2)

/* The longest piece of a JSON line one json probe carries (NUL excluded):
 * h2tlog's bpftrace reads strings of at most 128 bytes. */
#define H2T_PROBE_CHUNK 120

#ifdef H2T_PROBES
/* [type]: client__/server__<event>; [JSON_]: json; [STATE_]: inflight__state.
 * Written by the kernel (uprobe reference counters) or the tracer. */
extern unsigned short h2t__probe_sema[H2T_PROBE_NSEMA_];
#define H2T_PROBE_SEMA(i) h2t__probe_sema[i]
/* Fire the event's probes that are attached (ev->t_us already set). */
void h2t__probe_event(const h2t_event *ev);
/* A request's in-flight state changed (kind: inflight_kind). */
void h2t__probe_state(uint64_t req_id, uint64_t conn_id, int32_t stream_id,
                      uint64_t t_us, unsigned state, unsigned kind);
#else
#define H2T_PROBE_SEMA(i) 0
#define h2t__probe_event(ev) ((void)(ev))
#define h2t__probe_state(req, conn, sid, t, st, kind) ((void)0)
#endif

/* Is a probe attached that wants events of this type? */
#define H2T_PROBE_ON(type)                                                     \
  (H2T_PROBE_SEMA(type) | H2T_PROBE_SEMA(H2T_PROBE_JSON_))

#endif
