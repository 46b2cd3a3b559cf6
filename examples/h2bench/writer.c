/* h2bench writer: not built yet. */
#include <stdio.h>
#include "bench.h"

int bench_writer_main(int argc, char **argv) {
  fprintf(stderr, "h2bench: mode 'writer' is not built yet\n");
  return 2;
}
