/* llama_tensors.c — see llama_tensors.h. */
#include "model/llama_tensors.h"

#include <stdio.h>

/* The sizes a shape is made of. */
typedef enum { D_NONE, D_DIM, D_Q, D_KV, D_FFN, D_VOCAB } Size;

static const struct {
    const char *name[3];   /* [TensorNaming]; "%d" = the layer */
    Size rows, cols;       /* cols D_NONE: a vector */
    size_t at;             /* offsetof the field, in LayerWeights (per layer) or in Weights */
} tensors[LT_COUNT] = {
    [LT_ATTN_NORM] = { { "model.layers.%d.input_layernorm.weight", "blk.%d.attn_norm.weight", "rms_att_weight[%d]" },
                       D_DIM, D_NONE, offsetof(LayerWeights, attn_norm) },
    [LT_WQ] = { { "model.layers.%d.self_attn.q_proj.weight", "blk.%d.attn_q.weight", "wq[%d]" },
                D_Q, D_DIM, offsetof(LayerWeights, wq) },
    [LT_WK] = { { "model.layers.%d.self_attn.k_proj.weight", "blk.%d.attn_k.weight", "wk[%d]" },
                D_KV, D_DIM, offsetof(LayerWeights, wk) },
    [LT_WV] = { { "model.layers.%d.self_attn.v_proj.weight", "blk.%d.attn_v.weight", "wv[%d]" },
                D_KV, D_DIM, offsetof(LayerWeights, wv) },
    [LT_WO] = { { "model.layers.%d.self_attn.o_proj.weight", "blk.%d.attn_output.weight", "wo[%d]" },
                D_DIM, D_Q, offsetof(LayerWeights, wo) },
    [LT_FFN_NORM] = { { "model.layers.%d.post_attention_layernorm.weight", "blk.%d.ffn_norm.weight", "rms_ffn_weight[%d]" },
                      D_DIM, D_NONE, offsetof(LayerWeights, ffn_norm) },
    [LT_GATE] = { { "model.layers.%d.mlp.gate_proj.weight", "blk.%d.ffn_gate.weight", "w1[%d]" },
                  D_FFN, D_DIM, offsetof(LayerWeights, w_gate) },
    [LT_UP] = { { "model.layers.%d.mlp.up_proj.weight", "blk.%d.ffn_up.weight", "w3[%d]" },
                D_FFN, D_DIM, offsetof(LayerWeights, w_up) },
    [LT_DOWN] = { { "model.layers.%d.mlp.down_proj.weight", "blk.%d.ffn_down.weight", "w2[%d]" },
                  D_DIM, D_FFN, offsetof(LayerWeights, w_down) },
    [LT_EMBED] = { { "model.embed_tokens.weight", "token_embd.weight", "token_embedding_table" },
                   D_VOCAB, D_DIM, offsetof(Weights, token_embedding) },
    [LT_FINAL_NORM] = { { "model.norm.weight", "output_norm.weight", "rms_final_weight" },
                        D_DIM, D_NONE, offsetof(Weights, final_norm) },
    [LT_CLASSIFIER] = { { "lm_head.weight", "output.weight", "wcls" },
                        D_VOCAB, D_DIM, offsetof(Weights, classifier) },
};

static int size_of(const Config *c, Size s) {
    switch (s) {
    case D_DIM: return c->dim;
    case D_Q: return c->n_heads * c->head_dim;
    case D_KV: return c->n_kv_heads * c->head_dim;
    case D_FFN: return c->hidden_dim;
    case D_VOCAB: return c->vocab_size;
    default: return 0;
    }
}

void llama_tensor_name(LlamaTensor t, TensorNaming naming, int layer, char *out, size_t size) {
    snprintf(out, size, tensors[t].name[naming], layer);
}

void llama_tensor_shape(const Config *c, LlamaTensor t, int *rows, int *cols) {
    *rows = size_of(c, tensors[t].rows);
    *cols = size_of(c, tensors[t].cols);
}

int llama_tensor_is_rotated(LlamaTensor t) { return t == LT_WQ || t == LT_WK; }

/* The field of tensor t: in layer `layer`'s LayerWeights, or in Weights itself. */
static const char *field(const Weights *w, LlamaTensor t, int layer) {
    const char *base = t < LT_PER_LAYER ? (const char *)&w->layers[layer] : (const char *)w;
    return base + tensors[t].at;
}

static int is_vector(LlamaTensor t) { return tensors[t].cols == D_NONE; }

const Mat *llama_tensor_mat(const Weights *w, LlamaTensor t, int layer) {
    return is_vector(t) ? NULL : (const Mat *)field(w, t, layer);
}

const float *llama_tensor_vec(const Weights *w, LlamaTensor t, int layer) {
    return is_vector(t) ? *(float *const *)field(w, t, layer) : NULL;
}

static int bind(Model *m, LlamaTensor t, int layer, TensorNaming naming, TensorFindFn find, void *ctx, Err *err) {
    char name[96];
    int rows, cols;
    DType dtype;
    const void *data;
    llama_tensor_name(t, naming, layer, name, sizeof name);
    llama_tensor_shape(&m->cfg, t, &rows, &cols);
    if (find(ctx, name, rows, cols, &dtype, &data, err) != 0) return -1;
    char *dst = (t < LT_PER_LAYER ? (char *)&m->w.layers[layer] : (char *)&m->w) + tensors[t].at;
    if (is_vector(t)) *(float **)dst = model_bind_vec(m, dtype, data, rows);
    else model_bind_mat(m, (Mat *)dst, dtype, data, rows, cols, t != LT_EMBED);   /* panels: every matrix that is multiplied */
    if (t == LT_EMBED) m->file_dtype = dtype;
    return 0;
}

int llama_bind_weights(Model *m, TensorNaming naming, TensorFindFn find, void *ctx, Err *err) {
    if (bind(m, LT_EMBED, -1, naming, find, ctx, err) != 0) return -1;
    model_alloc_layers(m);
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int vectors = 0; vectors < 2; vectors++)   /* the matrices, then the two norms */
            for (int t = 0; t < LT_PER_LAYER; t++)
                if (is_vector((LlamaTensor)t) == vectors && bind(m, (LlamaTensor)t, l, naming, find, ctx, err) != 0)
                    return -1;
    if (bind(m, LT_FINAL_NORM, -1, naming, find, ctx, err) != 0) return -1;
    if (!m->cfg.tied_embeddings && bind(m, LT_CLASSIFIER, -1, naming, find, ctx, err) != 0) return -1;
    return 0;
}
