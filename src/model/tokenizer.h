/* tokenizer.h — SentencePiece BPE (Llama-2) from either file format:
 *   tokenizer.model  SentencePiece ModelProto (protobuf)
 *   tokenizer.bin    llama2.c export: u32 max_token_length, then per token
 *                    f32 score, u32 length, bytes
 *   a .gguf model    its embedded tokenizer.ggml.tokens/scores/token_type
 *                    (loader_gguf.c builds it with tokenizer_from_vocab)
 * Encoding follows SentencePiece BPE exactly: normalise (spaces -> U+2581
 * "▁", dummy-prefix space), start from single characters (unknown characters
 * fall back to <0xXX> byte pieces), repeatedly merge the adjacent pair whose
 * merged piece has the highest score (leftmost on ties). */
#ifndef KVLAB_TOKENIZER_H
#define KVLAB_TOKENIZER_H

#include "base/util.h"

typedef struct Tokenizer Tokenizer;   /* opaque */

/* Load either format (detected from the content, not the name), or the
 * vocabulary embedded in a GGUF model file (it starts with "GGUF").
 * load.c: it sends a GGUF to loaders.h's gguf_tokenizer_load. */
Tokenizer *tokenizer_load(const char *path, Err *err);
/* A tokenizer.model or tokenizer.bin only (what tokenizer_load does for them). */
Tokenizer *tokenizer_load_file(const char *path, Err *err);
void tokenizer_free(Tokenizer *t);

/* A vocabulary in memory: piece i is pieces[i][0..lens[i]) in SentencePiece
 * form ("▁" for spaces), with its score and SentencePiece type (1 NORMAL,
 * 2 UNKNOWN, 3 CONTROL, 4 USER_DEFINED, 5 UNUSED, 6 BYTE: the same numbers as
 * GGUF's tokenizer.ggml.token_type). */
typedef struct {
    int n;
    const char *const *pieces;
    const int *lens;
    const float *scores;
    const uint8_t *types;
    int bos_id, eos_id;            /* -1: none */
    int unk_id;                    /* output only: the UNKNOWN piece */
    int add_dummy_prefix;          /* Llama-2: 1 */
    int remove_extra_whitespaces;  /* Llama-2: 0 */
    int byte_fallback;             /* output only: on when there are BYTE pieces */
} TokenizerVocab;

/* Build a tokenizer from a vocabulary (e.g. one embedded in a GGUF file), checked
 * like a file's (`what` names it in messages). Byte fallback is on when there
 * are BYTE pieces; spaces are escaped to "▁" as in every Llama-2 tokenizer. */
Tokenizer *tokenizer_from_vocab(const TokenizerVocab *v, const char *what, Err *err);
/* The vocabulary of t (pointers into t, valid while t lives): for writers. */
void tokenizer_get_vocab(const Tokenizer *t, TokenizerVocab *out);

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
