/* h2bench MODE [options]: benchmarks built on the public API. */
#include <stdio.h>
#include <string.h>

#include <h2trace/version.h>
#include "bench.h"

static void usage(FILE *f) {
  fprintf(f, "usage: h2bench client [options] URL   load generator (h2load-like)\n"
             "       h2bench writer [options]       server frame-writer modes\n"
             "       h2bench compare [options]      h2serve vs nghttpd and h2o\n"
             "       h2bench saturate [options]     replica-aware dispatch vs\n"
             "                                      random choice\n"
             "       h2bench MODE --help            options of a mode\n");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    usage(stdout);
    return 0;
  }
  if (!strcmp(argv[1], "--version")) {
    printf("h2bench %s\n", h2t_version());
    return 0;
  }
  if (!strcmp(argv[1], "client"))
    return bench_client_main(argc - 1, argv + 1);
  if (!strcmp(argv[1], "writer"))
    return bench_writer_main(argc - 1, argv + 1);
  if (!strcmp(argv[1], "compare"))
    return bench_compare_main(argc - 1, argv + 1);
  if (!strcmp(argv[1], "saturate"))
    return bench_saturate_main(argc - 1, argv + 1);
  fprintf(stderr, "h2bench: unknown mode '%s'\n", argv[1]);
  usage(stderr);
  return 2;
}
