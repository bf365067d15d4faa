#ifndef POCKETLM_COPENBLAS_SHIM_H
#define POCKETLM_COPENBLAS_SHIM_H
// Debian's libopenblas-dev puts cblas.h on the default include path (through the alternatives system).
#include <cblas.h>
// Not declared in every cblas.h, but exported by OpenBLAS: lets the runtime pin the BLAS thread count
// to the user's --threads so the two pools do not oversubscribe the cores.
void openblas_set_num_threads(int num_threads);
char *openblas_get_corename(void);
#endif
