/* fuzz_config.c — config.json of a checkpoint directory with a valid
 * model.safetensors: every key's type and range, RoPE/architecture refusals,
 * and the shape checks against the tensors; when the config matches, one
 * forward pass (so eps, theta and ids it accepts are run). */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char dir[4200], path[4400];
    fuzz_tiny_checkpoint("cfg", 1, dir, sizeof dir);
    snprintf(path, sizeof path, "%s/config.json", dir);
    fuzz_write(path, data, size);
    Model m;
    Err err;
    if (model_load(&m, dir, size % 2 ? DTYPE_BF16 : DTYPE_F32, &err) == 0) {
        fuzz_run_model(&m, data, size);
        model_free(&m);
    }
    return 0;
}
