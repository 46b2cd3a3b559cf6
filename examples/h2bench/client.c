/* h2bench client: not built yet. */
#include <stdio.h>
#include "bench.h"

int bench_client_main(int argc, char **argv) {
  fprintf(stderr, "h2bench: mode 'client' is not built yet\n");
  return 2;
}
