/* h2bench: one program, one file per mode. */
#ifndef H2BENCH_BENCH_H
#define H2BENCH_BENCH_H
/* argv[0] is the mode name ("client", "writer"). Return the exit code. */
int bench_client_main(int argc, char **argv); /* client.c */
int bench_writer_main(int argc, char **argv); /* writer.c */
int bench_saturate_main(int argc, char **argv); /* saturate.c */
int bench_compare_main(int argc, char **argv);  /* compare.c */

/* util.c: what the modes share. */
#include <stddef.h>
/* Run argv (searched in PATH), its stdout and stderr into out
 * (NUL-terminated, truncated at cap).  Its exit status, or -1. */
int bench_run(char *const argv[], char *out, size_t cap);
/* qsort comparator for doubles, the p-quantile (0..1) of sorted v, and the
 * median of v (sorts it). */
int bench_cmp_double(const void *a, const void *b);
double bench_pct(const double *v, size_t n, double p);
double bench_median(double *v, size_t n);
#endif
