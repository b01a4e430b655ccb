/* loader_llama2c.c — Karpathy's llama2.c "version 0" checkpoint.
 *
 * Layout: 7 x int32 header (dim, hidden_dim, n_layers, n_heads, n_kv_heads,
 * vocab_size, seq_len; a negative vocab_size means the classifier is stored
 * separately), then fp32 tensors, each stacked over layers:
 *   token_embedding [vocab, dim]
 *   attn_norm [L, dim]  wq [L, dim, dim]  wk [L, kv_dim, dim]  wv [L, kv_dim, dim]
 *   wo [L, dim, dim]  ffn_norm [L, dim]  w1 [L, hidden, dim]  w2 [L, dim, hidden]
 *   w3 [L, hidden, dim]  final_norm [dim]  freq_cis_real/imag [seq_len, head_dim/2] x2
 *   [classifier [vocab, dim]]
 * RoPE pairs dimensions (2i, 2i+1), the Meta layout. */
#include <stdlib.h>
#include <string.h>

#include "model/loaders.h"
#include "model/model.h"

#define LLAMA2C_V1_MAGIC 0x616b3432u   /* "ak42": the later versions 1/2 */

static void find_tokenizer(Model *m, const char *path, int vocab_size) {
    char dir[4096], candidate[sizeof m->tokenizer_path], name[64];
    path_dirname(dir, sizeof dir, path);
    path_join(candidate, sizeof candidate, dir, "tokenizer.bin");
    if (!path_exists(candidate)) {
        snprintf(name, sizeof name, "tok%d.bin", vocab_size);
        path_join(candidate, sizeof candidate, dir, name);
    }
    if (!path_exists(candidate)) path_join(candidate, sizeof candidate, dir, "tokenizer.model");
    if (path_exists(candidate)) memcpy(m->tokenizer_path, candidate, sizeof candidate);
}

int load_llama2c(Model *m, const char *path, Err *err) {
    const FileMap *map = model_map_file(m, path, err);
    if (!map) return -1;
    if (map->size_bytes < 28)
        return err_set(err, "%s: too short for a llama2.c header (%zu bytes, need 28)", path, map->size_bytes);
    int32_t h[7];
    memcpy(h, map->data, sizeof h);
    if ((uint32_t)h[0] == LLAMA2C_V1_MAGIC)
        return err_set(err, "%s: llama2.c version 1/2 checkpoint (magic \"ak42\"): only version 0 is supported; re-export with export.py --version 0", path);

    Config *c = &m->cfg;
    c->dim = h[0];
    c->hidden_dim = h[1];
    c->n_layers = h[2];
    c->n_heads = h[3];
    c->n_kv_heads = h[4];
    int shared_classifier = h[5] > 0;
    c->vocab_size = h[5] > 0 ? h[5] : (h[5] == INT32_MIN ? 0 : -h[5]);
    c->max_seq_len = h[6];
    c->head_dim = c->n_heads > 0 ? c->dim / c->n_heads : 0;
    c->norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    c->rope_pairing_halves = 0;
    c->tied_embeddings = shared_classifier;
    c->bos_id = 1;
    c->eos_id = 2;
    if (c->vocab_size <= 2) c->bos_id = c->eos_id = 0;
    if (config_validate(c, path, err) != 0) return -1;
    if (c->dim % c->n_heads != 0)
        return err_set(err, "%s: dim=%d is not a multiple of n_heads=%d", path, c->dim, c->n_heads);

    size_t dim = (size_t)c->dim, hidden = (size_t)c->hidden_dim, L = (size_t)c->n_layers;
    size_t kv_dim = (size_t)c->n_kv_heads * (size_t)c->head_dim, vocab = (size_t)c->vocab_size;
    size_t n_floats = vocab * dim + L * dim + L * dim * dim + 2 * L * kv_dim * dim + L * dim * dim +
                      L * dim + 3 * L * hidden * dim + dim + (size_t)c->max_seq_len * (size_t)c->head_dim +
                      (shared_classifier ? 0 : vocab * dim);
    size_t expected = 28 + 4 * n_floats;
    if (map->size_bytes < expected)
        return err_set(err, "%s: truncated: the header (dim=%d layers=%d vocab=%d seq_len=%d) needs %zu bytes, the file has %zu",
                       path, c->dim, c->n_layers, c->vocab_size, c->max_seq_len, expected, map->size_bytes);
    if (map->size_bytes > expected)
        return err_set(err, "%s: %zu bytes more than the header (dim=%d layers=%d vocab=%d) describes: not a llama2.c version 0 checkpoint",
                       path, map->size_bytes - expected, c->dim, c->n_layers, c->vocab_size);

    const float *p = (const float *)((const char *)map->data + 28);
    m->file_dtype = DTYPE_F32;
    snprintf(m->format, sizeof m->format, "llama2c");
    Weights *w = &m->w;
    model_alloc_layers(m);
    model_bind_mat(m, &w->token_embedding, DTYPE_F32, p, c->vocab_size, c->dim, 0);
    p += vocab * dim;
    for (size_t l = 0; l < L; l++) w->layers[l].attn_norm = model_bind_vec(m, DTYPE_F32, p + l * dim, c->dim);
    p += L * dim;
    for (size_t l = 0; l < L; l++) model_bind_mat(m, &w->layers[l].wq, DTYPE_F32, p + l * dim * dim, c->dim, c->dim, 1);
    p += L * dim * dim;
    for (size_t l = 0; l < L; l++) model_bind_mat(m, &w->layers[l].wk, DTYPE_F32, p + l * kv_dim * dim, (int)kv_dim, c->dim, 1);
    p += L * kv_dim * dim;
    for (size_t l = 0; l < L; l++) model_bind_mat(m, &w->layers[l].wv, DTYPE_F32, p + l * kv_dim * dim, (int)kv_dim, c->dim, 1);
    p += L * kv_dim * dim;
    for (size_t l = 0; l < L; l++) model_bind_mat(m, &w->layers[l].wo, DTYPE_F32, p + l * dim * dim, c->dim, c->dim, 1);
    p += L * dim * dim;
    for (size_t l = 0; l < L; l++) w->layers[l].ffn_norm = model_bind_vec(m, DTYPE_F32, p + l * dim, c->dim);
    p += L * dim;
    for (size_t l = 0; l < L; l++) model_bind_mat(m, &w->layers[l].w_gate, DTYPE_F32, p + l * hidden * dim, c->hidden_dim, c->dim, 1);
    p += L * hidden * dim;
    for (size_t l = 0; l < L; l++) model_bind_mat(m, &w->layers[l].w_down, DTYPE_F32, p + l * dim * hidden, c->dim, c->hidden_dim, 1);
    p += L * hidden * dim;
    for (size_t l = 0; l < L; l++) model_bind_mat(m, &w->layers[l].w_up, DTYPE_F32, p + l * hidden * dim, c->hidden_dim, c->dim, 1);
    p += L * hidden * dim;
    w->final_norm = model_bind_vec(m, DTYPE_F32, p, c->dim);
    p += dim;
    p += (size_t)c->max_seq_len * (size_t)c->head_dim;   /* legacy RoPE tables: recomputed instead */
    if (!shared_classifier) model_bind_mat(m, &w->classifier, DTYPE_F32, p, c->vocab_size, c->dim, 1);
    find_tokenizer(m, path, c->vocab_size);
    return 0;
}
