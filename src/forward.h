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
 *     rope(q, k) ; cache <- k, v
 *     per query head h (KV head g = h / (H/KV)):
 *       a = softmax(q_h . K_g^T / sqrt(hd)) over visible slots ; o_h = a V_g
 *     x += o Wo^T
 *     xb = rmsnorm(x) ; x += (silu(xb Wgate^T) * (xb Wup^T)) Wdown^T
 *   logits = rmsnorm(x) Wcls^T                          [n, vocab]
 */
#ifndef KVLAB_FORWARD_H
#define KVLAB_FORWARD_H

#include "kvcache.h"
#include "model.h"

/* Sees every attention distribution as it is computed (for tracing, metrics and
 * attention-based eviction scores). Called from several threads at once, each
 * with a different (layer, head, query) — the callee must be thread-safe.
 * probs[j] is the attention of the query on cache slot j, whose original
 * position is key_pos[j]. */
typedef struct {
    void *ctx;
    void (*attention)(void *ctx, int layer, int head, int query_pos,
                      const float *probs, const int *key_pos, int n_keys);
} AttentionObserver;

typedef struct Forward Forward;

/* max_batch: the most tokens one forward() call processes in one pass (longer
 * inputs are split into passes of this size). */
Forward *forward_create(const Model *m, int max_batch);
void forward_free(Forward *f);

/* A KV cache sized for this model (max_tokens = context length to allow). */
int forward_cache_init(const Model *m, KVCache *cache, int max_tokens, Err *err);

/* NULL to stop observing. */
void forward_set_observer(Forward *f, const AttentionObserver *obs);

/* Run tokens[0..n) (n >= 1). If logits_all is non-NULL it receives n x vocab
 * logits (row t = the prediction after token t); the last row is always
 * available from forward_last_logits(). Errors: token id out of range, the
 * context would overflow. */
int forward(Forward *f, KVCache *cache, const int *tokens, int n, float *logits_all, Err *err);

const float *forward_last_logits(const Forward *f);

#endif
