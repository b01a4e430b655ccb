/* fuzz_tok_bin.c — llama2.c tokenizer.bin (u32 max_token_length, then per
 * token f32 score, u32 length, bytes); then encode/decode with it. An input
 * starting with 0x0A or "GGUF" would be read as another format: its first
 * byte is changed so every input takes the tokenizer.bin path. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t first = size ? data[0] : 0;
    if (first == 0x0A || first == 'G') first ^= 0x01;
    fuzz_tokenizer_input("tokenizer.bin", first, data, size);
    return 0;
}
