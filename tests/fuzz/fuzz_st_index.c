/* fuzz_st_index.c — model.safetensors.index.json of a sharded checkpoint whose
 * config.json and two shards are valid: weight_map lookups, shard names
 * (path traversal, missing files, repeats), and binding across shards. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char dir[4200], path[4400];
    fuzz_tiny_checkpoint("idx", 2, dir, sizeof dir);
    snprintf(path, sizeof path, "%s/model.safetensors.index.json", dir);
    fuzz_write(path, data, size);
    Model m;
    Err err;
    if (model_load(&m, dir, DTYPE_F32, &err) == 0) {
        fuzz_run_model(&m, data, size);
        model_free(&m);
    }
    return 0;
}
