/* tokenizer.h — SentencePiece BPE (Llama-2) from either file format:
 *   tokenizer.model  SentencePiece ModelProto (protobuf)
 *   tokenizer.bin    llama2.c export: u32 max_token_length, then per token
 *                    f32 score, u32 length, bytes
 * Encoding follows SentencePiece BPE exactly: normalise (spaces -> U+2581
 * "▁", dummy-prefix space), start from single characters (unknown characters
 * fall back to <0xXX> byte pieces), repeatedly merge the adjacent pair whose
 * merged piece has the highest score (leftmost on ties). */
#ifndef KVLAB_TOKENIZER_H
#define KVLAB_TOKENIZER_H

#include "util.h"

typedef struct Tokenizer Tokenizer;   /* opaque */

/* Load either format (detected from the content, not the name). */
Tokenizer *tokenizer_load(const char *path, Err *err);
void tokenizer_free(Tokenizer *t);

int tokenizer_vocab_size(const Tokenizer *t);
int tokenizer_bos_id(const Tokenizer *t);   /* 1 for Llama-2 */
int tokenizer_eos_id(const Tokenizer *t);   /* 2 for Llama-2 */

/* Encode UTF-8 text. Writes at most max_ids ids; returns the number of ids the
 * text needs (may exceed max_ids: call again with a larger buffer) or -1 with err
 * set. add_bos prepends BOS. */
int tokenizer_encode(const Tokenizer *t, const char *text, int add_bos, int *ids, int max_ids, Err *err);
/* The same for a text of `len` bytes that may contain NUL bytes. */
int tokenizer_encode_len(const Tokenizer *t, const char *text, size_t len, int add_bos,
                         int *ids, int max_ids, Err *err);

/* The text of one piece as it appears in output: "▁" becomes a space, byte pieces
 * <0xXX> become that byte. `prev_id` is the previous token (-1 at the start): the
 * leading space of the first piece after BOS is dropped, as SentencePiece does. */
const char *tokenizer_piece(const Tokenizer *t, int prev_id, int id, char buf[8]);

/* Decode a whole sequence into a malloc'ed NUL-terminated UTF-8 string
 * (SentencePiece DecodeIds semantics: the dummy-prefix space is removed,
 * BOS/EOS/control pieces produce nothing). Returns NULL on an id out of range. */
char *tokenizer_decode(const Tokenizer *t, const int *ids, int n_ids, Err *err);
/* The same, also giving the length (the text may contain NUL bytes, from <0x00>). */
char *tokenizer_decode_len(const Tokenizer *t, const int *ids, int n_ids, size_t *len_out, Err *err);

#endif
