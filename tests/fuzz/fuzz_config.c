/* fuzz_config.c — config.json of a checkpoint directory with a valid
 * model.safetensors: every key's type and range, RoPE/architecture refusals,
 * and the shape checks against the tensors; when the config matches, one
 * forward pass (so eps, theta and ids it accepts are run). */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    fuzz_checkpoint_input("cfg", 1, "config.json", size % 2 ? DTYPE_BF16 : DTYPE_F32, data, size);
    return 0;
}
