/* fuzz_tok_bin.c — llama2.c tokenizer.bin (u32 max_token_length, then per
 * token f32 score, u32 length, bytes); then encode/decode with it. An input
 * starting with 0x0A or "GGUF" would be read as another format: its first
 * byte is changed so every input takes the tokenizer.bin path. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    uint8_t *copy = xmalloc(size ? size : 1);
    memcpy(copy, data, size);
    if (size && (copy[0] == 0x0A || copy[0] == 'G')) copy[0] ^= 0x01;
    char path[4400];
    fuzz_path(path, sizeof path, "tokenizer.bin");
    fuzz_write(path, copy, size);
    free(copy);
    Err err;
    Tokenizer *t = tokenizer_load(path, &err);
    if (t) {
        fuzz_use_tokenizer(t, data, size);
        tokenizer_free(t);
    }
    return 0;
}
