/* fuzz_npz.c — .npz archives (zip directory, ZIP64 records, deflate) and .npy
 * headers (the Python dict literal, dtype, shape, sizes), from memory. */
#include "fuzz_util.h"
#include "formats/npy.h"

static void npz_fuzz_use(NpyArray *a) {
    free(npy_to_f32(a));
    free(npy_to_i64(a));
    npy_free(a);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    NpyArray a;
    Err err;
    if (npz_parse(&a, data, size, "fuzz.npz", "logits", &err) == 0) npz_fuzz_use(&a);
    if (npy_parse(&a, data, size, "fuzz.npy", &err) == 0) npz_fuzz_use(&a);
    return 0;
}
