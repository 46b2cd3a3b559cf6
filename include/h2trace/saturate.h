/*
 * h2trace: replica-aware dispatch ("saturate").
 *
 * When any of several equivalent origins (replicas) can serve a task,
 * choosing one at random lets a slow replica hold every worker while the
 * fast ones sit idle.  A saturate dispatcher gives each task to whichever
 * replica has a free worker *now*: a task never waits on a busy replica
 * while another has room.  Each replica has its own concurrency budget (its
 * workers), there is a total bound, and a failed attempt is retried on
 * another replica.  The other policies (random, round-robin,
 * least-outstanding) exist to compare against.
 *
 * A task's response is collected and handed over whole when the task is
 * done, so an attempt that failed half-way never reaches the application and
 * may safely be retried elsewhere.  Every dispatch is traced (which replica,
 * why, how long the task waited for a slot), and every task is in the
 * in-flight table (method "TASK") with the replica it waits on or runs on.
 *
 * Runs on the client's loop; all functions must be called on its thread.
 */
#ifndef H2TRACE_SATURATE_H
#define H2TRACE_SATURATE_H

#include <h2trace/client.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct h2t_saturate h2t_saturate;

/* How a task's replica is chosen. */
typedef enum h2t_saturate_policy {
  H2T_SATURATE_FREE_SLOT = 0,      /* saturate: any replica with a free
                                      worker now; one global queue */
  H2T_SATURATE_RANDOM = 1,         /* a random replica, then wait for it */
  H2T_SATURATE_ROUND_ROBIN = 2,    /* the next replica in turn, then wait */
  H2T_SATURATE_LEAST_OUTSTANDING = 3 /* the replica with the fewest tasks
                                        running or waiting, then wait */
} h2t_saturate_policy;

/* "free_slot", "random", "round_robin", "least_outstanding"; NULL for an
 * unknown value.  Thread-safe. */
H2T_EXTERN const char *h2t_saturate_policy_name(h2t_saturate_policy p);

/* One dispatch of a task to a replica, for on_dispatch. */
typedef struct h2t_saturate_dispatch {
  uint64_t task_id;    /* as returned by h2t_saturate_submit() */
  size_t replica;      /* index into the configured replicas */
  const char *origin;  /* that replica's base URL */
  unsigned attempt;    /* 1 for the first, 2 for the first retry... */
  uint64_t waited_us;  /* from submit (or the failed attempt) to now */
  h2t_saturate_policy policy; /* the rule that chose it */
  uint32_t busy;       /* the replica's busy workers, this task included */
  uint32_t workers;    /* its budget */
  size_t queued;       /* tasks still waiting, anywhere */
} h2t_saturate_dispatch;

/* What a finished task gives back.  The pointers are valid during the
 * callback only. */
typedef struct h2t_saturate_result {
  uint64_t task_id;
  int error;           /* 0 or the last attempt's H2T_ERR_ code */
  int status;          /* the last attempt's HTTP status; 0 if none */
  const uint8_t *body; /* the last attempt's body, NUL-terminated */
  size_t body_len;
  size_t replica;      /* where the last attempt ran */
  unsigned attempts;
  uint64_t total_us;   /* from submit */
  uint64_t waited_us;  /* of it, waiting for a free worker */
} h2t_saturate_result;

typedef void (*h2t_saturate_done_cb)(const h2t_saturate_result *res,
                                     void *user);

typedef struct h2t_saturate_config {
  size_t struct_size;             /* H2T_SATURATE_CONFIG_INIT */
  h2t_client *client;             /* requests go through it (required) */
  const char *const *replicas;    /* base URLs, "http://host:port" (copied) */
  size_t nreplicas;               /* 1 to 64 */
  const uint32_t *workers;        /* each replica's budget; NULL: all
                                     workers_each */
  uint32_t workers_each;          /* 0: 4 */
  uint32_t max_inflight;          /* total bound; 0: the sum of budgets */
  uint32_t max_tries;             /* attempts per task; 0: nreplicas */
  h2t_saturate_policy policy;     /* 0: H2T_SATURATE_FREE_SLOT */
  unsigned seed;                  /* for H2T_SATURATE_RANDOM */
  /* Called at each dispatch, on the loop; may be NULL. */
  void (*on_dispatch)(const h2t_saturate_dispatch *d, void *user);
  void *user;                     /* for on_dispatch */
} h2t_saturate_config;

#define H2T_SATURATE_CONFIG_INIT .struct_size = sizeof(h2t_saturate_config)

/* Create a dispatcher over cfg->client.  Returns 0 and sets *out, or
 * H2T_ERR_INVALID_ARG (no client, no replica, more than 64, a replica that is
 * not an http:// or https:// URL without a path, an unknown policy) /
 * H2T_ERR_NOMEM. */
H2T_EXTERN int h2t_saturate_new(h2t_saturate **out,
                                const h2t_saturate_config *cfg);

/* Fail every task not yet done with H2T_ERR_CANCELED (their callbacks run)
 * and free the dispatcher.  NULL is a no-op.  Not from inside one of its
 * callbacks.  Call it before h2t_client_del() of its client. */
H2T_EXTERN void h2t_saturate_del(h2t_saturate *s);

/* Queue a task.  o->url is the path (with query) to request on whichever
 * replica runs it, e.g. "/work?id=7"; method, headers, a buffer body, the
 * trace and timeout_ms apply to each attempt; on_headers/on_data/on_done
 * and body_read are not used (a streamed body could not be replayed:
 * H2T_ERR_INVALID_ARG).  done runs once: from the loop, or before this
 * returns when every try fails at once (a URL that does not parse).  An attempt
 * that fails (an H2T_ERR_ code, or a 502, 503 or 504 status) is retried on
 * another replica while tries remain.  Returns 0 and sets *task_id (may be
 * NULL), or H2T_ERR_INVALID_ARG / H2T_ERR_NOMEM, in which case done will
 * not run. */
H2T_EXTERN int h2t_saturate_submit(h2t_saturate *s, const h2t_request_opts *o,
                                   h2t_saturate_done_cb done, void *user,
                                   uint64_t *task_id);

/* Tasks submitted and not yet done. */
H2T_EXTERN size_t h2t_saturate_pending(const h2t_saturate *s);

#ifdef __cplusplus
}
#endif

#endif /* H2TRACE_SATURATE_H */
