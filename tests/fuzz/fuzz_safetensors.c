/* fuzz_safetensors.c — the safetensors container (st_parse: header length,
 * JSON, dtypes, shapes, data_offsets), then the same bytes as the
 * model.safetensors of a checkpoint directory whose config.json is valid
 * (the loader's tensor lookup, shape checks, dtype conversion, and a forward
 * pass when the weights bind). */
#include "fuzz_util.h"
#include "formats/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    StFile sf;
    Err err;
    if (st_parse(&sf, "fuzz.safetensors", data, size, &err) == 0) {
        for (int i = 0; i < sf.n_tensors; i++)
            if (st_find(&sf, sf.tensors[i].name) != &sf.tensors[i]) abort();   /* names are unique */
        st_free(&sf);
    }
    fuzz_checkpoint_input("st", 1, "model.safetensors", size % 2 ? DTYPE_BF16 : DTYPE_F32, data, size);
    return 0;
}
