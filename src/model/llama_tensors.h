/* llama_tensors.h — the weight tensors of a Llama model, once: where each
 * lives in Weights, what each file format calls it, and its shape from the
 * Config. The loaders (safetensors, GGUF), `kvlab convert`, `kvlab synth` and
 * the NaN guard's messages all read this one table.
 *
 *   Weights field   Hugging Face (safetensors)                        GGUF                          llama2.c             shape
 *   attn_norm       model.layers.{i}.input_layernorm.weight           blk.{i}.attn_norm.weight      rms_att_weight[i]    [dim]
 *   wq              model.layers.{i}.self_attn.q_proj.weight          blk.{i}.attn_q.weight         wq[i]                [heads*head_dim, dim]
 *   wk, wv          model.layers.{i}.self_attn.{k,v}_proj.weight      blk.{i}.attn_{k,v}.weight     wk[i], wv[i]         [kv_heads*head_dim, dim]
 *   wo              model.layers.{i}.self_attn.o_proj.weight          blk.{i}.attn_output.weight    wo[i]                [dim, heads*head_dim]
 *   ffn_norm        model.layers.{i}.post_attention_layernorm.weight  blk.{i}.ffn_norm.weight       rms_ffn_weight[i]    [dim]
 *   w_gate, w_up    model.layers.{i}.mlp.{gate,up}_proj.weight        blk.{i}.ffn_{gate,up}.weight  w1[i], w3[i]         [hidden_dim, dim]
 *   w_down          model.layers.{i}.mlp.down_proj.weight             blk.{i}.ffn_down.weight       w2[i]                [dim, hidden_dim]
 *   token_embedding model.embed_tokens.weight                         token_embd.weight             token_embedding_table [vocab, dim]
 *   final_norm      model.norm.weight                                 output_norm.weight            rms_final_weight     [dim]
 *   classifier      lm_head.weight                                    output.weight                 wcls                 [vocab, dim]
 *
 * Shapes are [rows, cols] row-major as Weights holds them (a GGUF lists the
 * same dims innermost first: {cols, rows}). The llama2.c names are only for
 * messages: its file has no names (loader_llama2c.c reads it by offset). */
#ifndef KVLAB_LLAMA_TENSORS_H
#define KVLAB_LLAMA_TENSORS_H

#include <stddef.h>

#include "model/model.h"

typedef enum {
    /* in every layer, in the order of transformers' modules (and of a checkpoint) */
    LT_ATTN_NORM, LT_WQ, LT_WK, LT_WV, LT_WO, LT_FFN_NORM, LT_GATE, LT_UP, LT_DOWN,
    /* once per model */
    LT_EMBED, LT_FINAL_NORM, LT_CLASSIFIER,
    LT_COUNT
} LlamaTensor;

#define LT_PER_LAYER (LT_DOWN + 1)   /* the tensors of one layer: ids 0 .. LT_PER_LAYER-1 */

typedef enum { NAMING_HF, NAMING_GGUF, NAMING_LLAMA2C } TensorNaming;

/* The name of tensor t (of layer `layer`; ignored for the per-model ones). */
void llama_tensor_name(LlamaTensor t, TensorNaming naming, int layer, char *out, size_t size);
/* Its shape from the config: a matrix [*rows, *cols], or a vector of *rows (*cols = 0). */
void llama_tensor_shape(const Config *c, LlamaTensor t, int *rows, int *cols);
/* wq and wk: rows are RoPE-rotated heads, stored permuted in one of two
 * pairing layouts (Config.rope_pairing_halves; cmd_convert.c converts). */
int llama_tensor_is_rotated(LlamaTensor t);

/* Where tensor t of layer `layer` lives: the matrix (NULL for a norm vector) or
 * the norm vector (NULL for a matrix). */
const Mat *llama_tensor_mat(const Weights *w, LlamaTensor t, int layer);
const float *llama_tensor_vec(const Weights *w, LlamaTensor t, int layer);

/* What a loader supplies to llama_bind_weights: the tensor called `name`,
 * checked to be [rows, cols] (cols == 0: a vector of rows), as its dtype and
 * bytes. -1 with err set when it is missing, mis-shaped or of a refused dtype. */
typedef int (*TensorFindFn)(void *ctx, const char *name, int rows, int cols, DType *dtype, const void **data, Err *err);

/* Bind every weight of m (m->cfg filled) from the tensors `find` gives by
 * their names in `naming`: the embedding first (its dtype becomes
 * m->file_dtype), then each layer's matrices and then its two norms, the
 * final norm, and the classifier unless the embeddings are tied. Stops at the
 * first error. */
int llama_bind_weights(Model *m, TensorNaming naming, TensorFindFn find, void *ctx, Err *err);

#endif
