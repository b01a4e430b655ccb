/* forward.h — the Llama-2 forward pass over a KV cache.
 *
 * forward() runs a block of n tokens at once (prefill: matrix-matrix products,
 * one weight read per block of tokens; decode: n = 1) at positions
 * cache->next_pos .. next_pos+n-1, appends their keys/values to the cache and
 * produces next-token logits.
 *
 *   x = embed(tokens)                                   [n, dim]
 *   for each layer:
 *     xb = rmsnorm(x) ; q,k,v = xb Wq^T, xb Wk^T, xb Wv^T  [n, H*hd], [n, KV*hd]
 *     cache <- k, v ; rope(q, k)      (the cache sees k before RoPE; positions
 *                                       `shifted`, kvcache.h: keys stay pre-RoPE in
 *                                       the cache, rotated to their slot index at
 *                                       attention; q to position = the head's length)
 *     per query head h (KV head g = h / (H/KV)):
 *       a = softmax(q_h . K_g^T / sqrt(hd)) over visible slots ; o_h = a V_g
 *     x += o Wo^T
 *     xb = rmsnorm(x) ; x += (silu(xb Wgate^T) * (xb Wup^T)) Wdown^T
 *   logits = rmsnorm(x) Wcls^T                          [n, vocab]
 */
#ifndef KVLAB_FORWARD_H
#define KVLAB_FORWARD_H

#include "engine/kvcache.h"
#include "model/model.h"

/* Sees every attention distribution as it is computed (for tracing, metrics and
 * attention-based eviction scores). probs[j] is the attention of the query on
 * cache slot j, whose original position is key_pos[j].
 * Threads: calls for different heads come from several threads at once, but
 * all calls for one (layer, head) come from one thread, in increasing query
 * order. So a callee may accumulate into per-(layer, head) memory without
 * locks, and its sums do not depend on the thread schedule. */
typedef struct {
    void *ctx;
    void (*attention)(void *ctx, int layer, int head, int query_pos,
                      const float *probs, const int *key_pos, int n_keys);
} AttentionObserver;

typedef struct Forward Forward;

/* How attention runs when no observer needs its probabilities. exact: per
 * (query, head) the whole score row, softmax, then the values (the goldens'
 * numbers; an observer always gets this path). fused: one pass over the keys
 * and values per tile of queries with an online softmax (simd/kernels.h
 * attn_fused), never storing a probability row: the same results within fp32
 * rounding (|d out| <= ~1e-5 max|v|), not bit for bit. A block of one query
 * (a decode step) runs exact under both: it stores only one row. */
typedef enum { ATTENTION_EXACT = 0, ATTENTION_FUSED = 1 } AttentionPath;
const char *attention_path_name(AttentionPath a);              /* "exact", "fused" */
int attention_path_parse(const char *s, AttentionPath *out);   /* 0, or -1 if unknown */

/* The KV dtype of every cache forward_cache_init makes from now on, and the
 * attention path of every forward_create (the command line's --kv-dtype and
 * --attention; defaults f32 and exact). */
void forward_set_defaults(DType kv_dtype, AttentionPath attention);
void forward_defaults(DType *kv_dtype, AttentionPath *attention);
void forward_set_attention(Forward *f, AttentionPath attention);

/* max_batch: the most tokens one forward() call processes in one pass (longer
 * inputs are split into passes of this size). */
Forward *forward_create(const Model *m, int max_batch);
void forward_free(Forward *f);

/* A KV cache sized for this model (max_tokens = context length to allow),
 * storing keys and values in the default KV dtype (forward_set_defaults). */
int forward_cache_init(const Model *m, KVCache *cache, int max_tokens, Err *err);

/* The observers: a short list, each row goes to every one in the order they
 * were added (a tracer and a policy may watch the same forward). Without an
 * observer the attention rows are spread over threads per (query, head); with
 * one, per head (see above). Adding more than FORWARD_MAX_OBSERVERS is a bug
 * (abort); removing one that is not there does nothing. An observer is known
 * by its ctx and callback. */
#define FORWARD_MAX_OBSERVERS 4
void forward_add_observer(Forward *f, const AttentionObserver *obs);
void forward_remove_observer(Forward *f, const AttentionObserver *obs);

/* Called after every layer with the block's residual stream x [n, dim], e.g.
 * by the numerical guard (numcheck.h) to find the first layer that produced a
 * NaN/Inf. NULL fn removes it. */
typedef void (*LayerHook)(void *ctx, int layer, const float *x, int n, int dim);
void forward_set_layer_hook(Forward *f, LayerHook fn, void *ctx);

/* Called after every layer's attention with its output before Wo: att [n,
 * n_heads * head_dim], row t = the token at position pos0 + t, head h at
 * att[t * n_heads * head_dim + h * head_dim] (e.g. by the output-error
 * measurement of `kvlab ppl --output-error`). NULL fn removes it. */
typedef void (*AttentionOutputHook)(void *ctx, int layer, int pos0, const float *att, int n);
void forward_set_output_hook(Forward *f, AttentionOutputHook fn, void *ctx);

/* Run tokens[0..n) (n >= 1). If logits_all is non-NULL it receives n x vocab
 * logits (row t = the prediction after token t); the last row is always
 * available from forward_last_logits(). Errors: token id out of range, the
 * context would overflow. */
int forward(Forward *f, KVCache *cache, const int *tokens, int n, float *logits_all, Err *err);

const float *forward_last_logits(const Forward *f);

#endif
