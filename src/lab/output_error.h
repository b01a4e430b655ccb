/* output_error.h — how far a policy's attention OUTPUT is from the full
 * cache's, not only how much attention mass it dropped (`kvlab ppl
 * --output-error`). Attention mass alone misleads when the evicted tokens'
 * values lie near the output (MomentKV, arXiv 2606.01563; DropKV).
 *
 * Two forwards of the same token at every decode step: the policy's (its
 * cache, after its evictions) and the full cache's twin (its own KVCache, the
 * same model). Per layer and query head h, with o_h the head's attention
 * output before Wo (forward.h AttentionOutputHook):
 *   output_error   = ‖o_h,policy − o_h,full‖₂ / ‖o_h,full‖₂   (NaN when o_full = 0)
 *   attention_loss = the full cache's attention mass on the positions the
 *                    policy's query no longer sees (../shared/spec/methods.md §5)
 * beside the KL(P_full ‖ P_policy) of the final logits (ppl's kl).
 * Summaries: per (layer, head) and per layer the mean, sample std and 95th
 * percentile over every step of every chunk (linear interpolation between
 * the order statistics, numpy's default); per position the mean over chunks,
 * layers and heads. Every value is kept until the end for the percentiles:
 * 8 bytes per layer x head x token. */
#ifndef KVLAB_OUTPUT_ERROR_H
#define KVLAB_OUTPUT_ERROR_H

#include "engine/forward.h"
#include "model/model.h"

typedef struct OutputError OutputError;

/* max_keys: the longest cache; n_pos: positions per sequence (pos < n_pos). */
OutputError *output_error_create(const Config *cfg, int max_keys, int n_pos);
void output_error_free(OutputError *oe);
/* Watch the policy's Forward and the full cache's (their output hooks and an
 * attention observer each); detach before freeing either. */
void output_error_attach(OutputError *oe, Forward *policy_f, Forward *full_f);
void output_error_detach(OutputError *oe, Forward *policy_f, Forward *full_f);
/* After both forwards of one token: the step's values into the summaries,
 * filed under position pos (ppl: the predicted token's, as in tokens.csv),
 * kl = that step's KL of the logits. */
int output_error_step(OutputError *oe, int pos, double kl, Err *err);

enum { OE_OUTPUT_ERROR = 0, OE_ATTENTION_LOSS, OE_N };
const char *output_error_metric_name(int metric);   /* "output_error", "attention_loss" */
/* Mean / std / p95 / n of a metric over one (layer, head) (head -1: the whole layer). */
typedef struct { double mean, std, p95; long n; } OeSummary;
OeSummary output_error_summary(const OutputError *oe, int layer, int head, int metric);

/* output_error.csv: layer,head,kv_head,metric,mean,std,p95,n per (layer, head),
 * then per layer (head, kv_head empty); output_error_steps.csv:
 * pos,output_error_mean,output_error_std,attention_loss_mean,attention_loss_std,kl_mean,kl_std,n. */
int output_error_write(const OutputError *oe, const char *dir, Err *err);
/* {"layers": [{"output_error_mean", "output_error_p95", "attention_loss_mean",
 * "attention_loss_p95"}...], "definition": ...} for summary.json. */
struct cJSON;
struct cJSON *output_error_json(const OutputError *oe);

#endif
