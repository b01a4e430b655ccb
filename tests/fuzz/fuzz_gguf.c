/* fuzz_gguf.c — GGUF: the container (gguf_parse: counts, strings, nested
 * arrays, tensor infos, alignment, offsets), then the same bytes as a .gguf
 * model (metadata keys, tensor types and shapes) and as a tokenizer (the
 * embedded vocabulary), each used when it loads. */
#include "fuzz_util.h"
#include "formats/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    GgufFile g;
    Err err;
    if (gguf_parse(&g, "fuzz.gguf", data, size, &err) == 0) {
        for (uint64_t i = 0; i < g.n_kv; i++) {
            const GgufKV *kv = &g.kv[i];
            if (kv->type != GGUF_ARRAY) continue;
            for (uint64_t j = 0; j < kv->arr_n && j < 16; j++) {
                if (kv->arr_type == GGUF_F32 || kv->arr_type == GGUF_F64) (void)gguf_array_float(kv, j);
                else if (kv->arr_type != GGUF_STRING && kv->arr_type != GGUF_ARRAY) (void)gguf_array_int(kv, j);
            }
        }
        gguf_free(&g);
    }
    char path[4400];
    fuzz_path(path, sizeof path, "model.gguf");
    fuzz_write(path, data, size);
    fuzz_load_model(path, size % 2 ? DTYPE_BF16 : DTYPE_F32, data, size);
    fuzz_load_tokenizer(path, data, size);
    return 0;
}
