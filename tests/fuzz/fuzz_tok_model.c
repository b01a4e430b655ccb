/* fuzz_tok_model.c — tokenizer.model (SentencePiece ModelProto protobuf):
 * varints, wire types, nested messages, piece types, the normalizer spec;
 * then encode/decode with the vocabulary it builds. The first byte is forced
 * to 0x0A (field 1, length-delimited) so every input takes the protobuf path. */
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size == 0) return 0;
    fuzz_tokenizer_input("tokenizer.model", 0x0A, data, size);
    return 0;
}
