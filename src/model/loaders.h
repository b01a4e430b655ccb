/* loaders.h — one loader per checkpoint format; load.c picks one by path
 * (model_load) or by content (tokenizer_load). Each fills a Model through
 * model.h's "for loaders" functions. */
#ifndef KVLAB_LOADERS_H
#define KVLAB_LOADERS_H

#include "base/util.h"
#include "model/model.h"
#include "model/tokenizer.h"

int load_llama2c(Model *m, const char *path, Err *err);          /* loader_llama2c.c */
int load_safetensors_dir(Model *m, const char *dir, Err *err);   /* loader_safetensors.c */
/* GGUF v2/v3 (F32/F16/BF16); the embedded vocabulary is used through
 * tokenizer_path = the .gguf itself (tokenizer_load reads it). loader_gguf.c */
int load_gguf(Model *m, const char *path, Err *err);
/* The tokenizer embedded in a GGUF file (tokenizer.ggml.*, model "llama");
 * tokenizer_load() calls this for files that start with "GGUF". loader_gguf.c */
Tokenizer *gguf_tokenizer_load(const char *path, Err *err);

#endif
