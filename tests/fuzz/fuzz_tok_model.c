/* fuzz_tok_model.c — tokenizer.model (SentencePiece ModelProto protobuf):
 * varints, wire types, nested messages, piece types, the normalizer spec;
 * then encode/decode with the vocabulary it builds. The first byte is forced
 * to 0x0A (field 1, length-delimited) so every input takes the protobuf path. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    uint8_t *copy = xmalloc(size);
    memcpy(copy, data, size);
    copy[0] = 0x0A;
    char path[4400];
    fuzz_path(path, sizeof path, "tokenizer.model");
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
