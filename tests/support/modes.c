#include "modes.h"

h2t_writer_mode h2t_test_modes[3] = {H2T_WRITER_REUSED, H2T_WRITER_SPAWN,
                                     H2T_WRITER_INLINE};
