/* h2trace: the umbrella header.  Include this, or the one header you need. */
#ifndef H2TRACE_H
#define H2TRACE_H

#include <h2trace/version.h>
#include <h2trace/common.h>
#include <h2trace/trace.h>
#include <h2trace/client.h>
#include <h2trace/saturate.h>
#if __has_include(<h2trace/server.h>)
#include <h2trace/server.h>
#endif
#if __has_include(<h2trace/inflight.h>)
#include <h2trace/inflight.h>
#endif
#if __has_include(<h2trace/export.h>)
#include <h2trace/export.h>
#endif
#if __has_include(<h2trace/diag.h>)
#include <h2trace/diag.h>
#endif

#endif
