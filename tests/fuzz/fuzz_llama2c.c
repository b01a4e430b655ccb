/* fuzz_llama2c.c — llama2.c version-0 .bin checkpoints.
 *
 * A random file almost never has the exact size its header implies, so two
 * modes: an input starting with 'P' is "P" + a 28-byte header + weight bytes,
 * and the file is that header followed by the weight bytes repeated up to the
 * size the header implies (capped at 8 MiB), so the loader binds the tensors
 * and the forward pass runs on arbitrary (NaN/Inf included) weights; any
 * other input is the file as it is. */
#include "fuzz_util.h"

#define L2C_CAP (8u << 20)

/* The size a version-0 file with header h has (as loader_llama2c.c computes it), 0 if absurd. */
static uint64_t l2c_expected(const int32_t *h) {
    int64_t dim = h[0], hidden = h[1], L = h[2], heads = h[3], kv = h[4], seq = h[6];
    int64_t vocab = h[5] < 0 ? -(int64_t)h[5] : h[5];
    if (dim <= 0 || hidden <= 0 || L <= 0 || heads <= 0 || kv <= 0 || vocab <= 0 || seq <= 0) return 0;
    if (dim > 4096 || hidden > 4096 || L > 64 || vocab > 65536 || seq > 65536 || heads > dim) return 0;
    int64_t hd = dim / heads, kv_dim = kv * hd;
    int64_t n = vocab * dim + L * dim * 2 + 2 * L * dim * dim + 2 * L * kv_dim * dim + 3 * L * hidden * dim +
                dim + seq * hd + (h[5] > 0 ? 0 : vocab * dim);
    return 28 + 4 * (uint64_t)n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char path[4400];
    fuzz_path(path, sizeof path, "model.bin");
    if (size >= 29 && data[0] == 'P') {
        int32_t h[7];
        memcpy(h, data + 1, sizeof h);
        uint64_t want = l2c_expected(h);
        if (want == 0 || want > L2C_CAP) return 0;
        uint8_t *file = xmalloc(want);
        memcpy(file, h, 28);
        const uint8_t *w = data + 29;
        size_t nw = size - 29;
        for (uint64_t i = 28; i < want; i++) file[i] = nw ? w[(i - 28) % nw] : 0;
        fuzz_write(path, file, want);
        free(file);
    } else {
        fuzz_write(path, data, size);
    }
    fuzz_load_model(path, size % 2 ? DTYPE_BF16 : DTYPE_F32, data, size);
    return 0;
}
