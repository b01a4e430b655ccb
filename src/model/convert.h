/* convert.h — write a loaded model (and its tokenizer) in another checkpoint
 * format: a GGUF file or a Hugging Face safetensors directory (convert.c). */
#ifndef KVLAB_CONVERT_H
#define KVLAB_CONVERT_H

#include <stdint.h>

#include "base/dtype.h"
#include "base/util.h"
#include "model/model.h"
#include "model/tokenizer.h"

typedef struct {
    DType dtype;              /* matrices on disk: f32, bf16 or f16 (norms are f32 in GGUF) */
    const char *name;         /* general.name (NULL: derived from the output name) */
    uint32_t alignment;       /* 0: 32 */
    int force;                /* replace an existing output */
} ConvertOpts;

/* Write m (+ its tokenizer, required for GGUF) as a GGUF file / an HF
 * safetensors directory, atomically. tok_file: the tokenizer's file, copied
 * into the directory when it is a tokenizer.model / .bin (NULL: the vocabulary
 * is written as a SentencePiece tokenizer.model). */
int convert_write_gguf(const Model *m, const Tokenizer *tok, const char *path, const ConvertOpts *o, Err *err);
int convert_write_hf(const Model *m, const Tokenizer *tok, const char *tok_file, const char *dir,
                     const ConvertOpts *o, Err *err);

#endif
