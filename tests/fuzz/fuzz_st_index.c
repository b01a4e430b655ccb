/* fuzz_st_index.c — model.safetensors.index.json of a sharded checkpoint whose
 * config.json and two shards are valid: weight_map lookups, shard names
 * (path traversal, missing files, repeats), and binding across shards. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_checkpoint_input("idx", 2, "model.safetensors.index.json", DTYPE_F32, data, size);
    return 0;
}
