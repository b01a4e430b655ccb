/* sinks.h — does the model have attention sinks? One forward of a prompt on a
 * full cache of its own, the same numbers as correlate's sink table
 * (metrics.h, "sink diagnostics") per head and per layer, for the run
 * metadata of every command (trace, ppl, passkey, needle), so any result can
 * be read against whether the model has sinks.
 *
 * On the first min(n, SINK_PROFILE_TOKENS) tokens of the prompt (BOS first):
 *   head_first_attn[l][h]  attention on the first token averaged over EVERY
 *                          query of the prompt, the first included: Gu et al.
 *                          (arXiv 2410.10781) α_{l,h} = 1/T Σ_{i=1..T} A^{l,h}_{i,1}
 *   kv_key_norm_ratio[l][g] ‖k_first‖ / median ‖k‖ over the prompt's keys
 *   per layer: the mean over heads, the share of heads above SINK_THRESHOLD
 *   (Gu et al.'s Sink_1^0.3, per layer) and the mean key-norm ratio (sink_layer).
 * correlate's table averages over the queries it measures instead (by default
 * the first generated one), so its numbers are close to, not equal to, these. */
#ifndef KVLAB_SINKS_H
#define KVLAB_SINKS_H

#include "lab/metrics.h"
#include "model/model.h"

#define SINK_PROFILE_TOKENS 1024

typedef struct {
    int n_layers, n_heads, n_kv_heads;
    int n_tokens;                 /* the prompt tokens measured */
    double *head_first_attn;      /* [L * H] */
    double *kv_key_norm_ratio;    /* [L * KV] */
} SinkProfile;

/* Run ids[0..n) (n >= 1; only the first SINK_PROFILE_TOKENS) through the model
 * on a cache of its own. */
int  sink_profile_measure(SinkProfile *sp, const Model *m, const int *ids, int n, Err *err);
LayerSink sink_profile_layer(const SinkProfile *sp, int layer);
void sink_profile_free(SinkProfile *sp);

/* meta.json's "sinks": {"tokens", "threshold", "definition", "layers": [{first_token_attn,
 * sink_head_share, key_norm_ratio, head_first_token_attn: [H], kv_key_norm_ratio: [KV]}, ...],
 * "layers_with_sinks"}. */
struct cJSON;
struct cJSON *sink_profile_json(const SinkProfile *sp);
/* Measure on ids and add "sinks" to meta (an error goes in as {"error": msg}: a
 * diagnostic never stops a run). */
void sink_profile_add(struct cJSON *meta, const Model *m, const int *ids, int n);

#endif
