/* dispatch.c — pick the kernel table once. For now only the scalar reference
 * exists; the ISA tables (AVX2, AVX-512, NEON) register here. */
#include "kernels.h"

#include <stdio.h>
#include <string.h>

static const Kernels *current = &kernels_scalar;

const Kernels *kernels_get(void) { return current; }

const char *kernels_detected(void) { return "scalar"; }

int kernels_available(const Kernels **tables, int max_tables) {
    int n = 0;
    if (n < max_tables) tables[n++] = &kernels_scalar;
    return n;
}

int kernels_select(const char *isa, char *err_msg, int err_size) {
    if (!isa || !strcmp(isa, "auto") || !strcmp(isa, "scalar")) {
        current = &kernels_scalar;
        return 0;
    }
    snprintf(err_msg, (size_t)err_size, "--isa %s: not available (choose auto or scalar)", isa);
    return -1;
}
