/* h2bench: one program, one file per mode. */
#ifndef H2BENCH_BENCH_H
#define H2BENCH_BENCH_H
/* argv[0] is the mode name ("client", "writer"). Return the exit code. */
int bench_client_main(int argc, char **argv); /* client.c */
int bench_writer_main(int argc, char **argv); /* writer.c */
int bench_saturate_main(int argc, char **argv); /* saturate.c */
int bench_compare_main(int argc, char **argv);  /* compare.c */
#endif
