/* load.c — the format dispatch: which loader reads a checkpoint or a
 * tokenizer. It stands above the loaders (loaders.h), which stand on model.c
 * and the container formats, so nothing below knows the list of formats. */
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "model/loaders.h"
#include "model/model.h"
#include "model/tokenizer.h"

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

int model_load(Model *m, const char *path, DType compute_dtype, Err *err) {
    return model_load_weights(m, path, compute_dtype, WEIGHTS_COPY, err);
}

int model_load_weights(Model *m, const char *path, DType compute_dtype, int weights, Err *err) {
    memset(m, 0, sizeof *m);
    m->weights_in_place = weights == WEIGHTS_IN_PLACE;
    if (compute_dtype != DTYPE_F32 && compute_dtype != DTYPE_BF16)
        return err_set(err, "--dtype %s: compute dtype must be f32 or bf16", dtype_name(compute_dtype));
    m->compute_dtype = compute_dtype;
    snprintf(m->path, sizeof m->path, "%s", path);
    if (!path_exists(path)) return err_set(err, "%s: no such file or directory", path);
    int rc;
    if (path_is_dir(path)) {
        rc = load_safetensors_dir(m, path, err);
    } else if (ends_with(path, ".safetensors") || ends_with(path, ".json")) {
        char dir[4096];
        path_dirname(dir, sizeof dir, path);
        rc = load_safetensors_dir(m, dir, err);
    } else if (ends_with(path, ".gguf")) {
        rc = load_gguf(m, path, err);
    } else if (ends_with(path, ".pth")) {
        rc = err_set(err, "%s: Meta .pth checkpoints are not supported; convert to Hugging Face safetensors first (transformers' convert_llama_weights_to_hf.py)", path);
    } else {
        rc = load_llama2c(m, path, err);
    }
    if (rc != 0) { model_free(m); return -1; }
    model_finish(m);
    return 0;
}

/* True if the file starts with the GGUF magic (read 4 bytes, not the whole
 * file: a GGUF model may be many GB). */
static bool is_gguf_file(const char *path) {
    char magic[4];
    return file_head(path, magic, 4) == 4 && memcmp(magic, "GGUF", 4) == 0;
}

Tokenizer *tokenizer_load(const char *path, Err *err) {
    if (is_gguf_file(path)) return gguf_tokenizer_load(path, err);
    return tokenizer_load_file(path, err);
}
