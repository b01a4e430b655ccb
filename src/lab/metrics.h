/* metrics.h — does the key norm predict attention? (../shared/spec/methods.md §5; L2 paper,
 * arXiv 2406.11430, §3 and Eqs. 5–7)
 *
 * Three layers, each usable alone:
 *
 *  1. Row metrics. One attention row a(p) of one query over the n cached
 *     tokens p, and the L2 norms ‖k_p‖ of those tokens' keys:
 *       Spearman ρ and Pearson r between ‖k_p‖ and a(p)   (the paper: negative)
 *       ALR (Eqs. 5–7) and ALR/n
 *       attention loss at compression ratio r = 10 %..90 % for four eviction
 *         orders: keep-lowest-norm (the L2 policy), keep-highest-norm, random,
 *         oracle (keep the highest attention)
 *       top-k overlap of each kept set with the oracle's kept set
 *     The norm side (sort order, ranks, mean) depends only on the KV head, so
 *     it is prepared once (NormStats) and shared by the query heads of a group.
 *
 *  2. Accumulators. Running mean and standard deviation (base/runstat.h) of every
 *     row metric, one MetricsAcc per (layer, query head), over queries and chunks.
 *
 *  3. The Correlator. Plugs into the forward pass as an AttentionObserver,
 *     copies the one attention row per (layer, head) it is asked for, and after
 *     forward() returns computes the row metrics of all layers and heads in
 *     parallel (no full attention map is ever stored).
 *
 * Compression ratio r = fraction of the n tokens REMOVED (kvpress convention):
 * keep = max(1, floor(n·(1 − r))), evict = n − keep. */
#ifndef KVLAB_METRICS_H
#define KVLAB_METRICS_H

#include <stdint.h>

#include "engine/forward.h"
#include "engine/kvcache.h"
#include "lab/progress.h"
#include "model/model.h"
#include "base/runstat.h"

#define METRICS_N_RATIOS 9                 /* 10 %, 20 %, ..., 90 % */
int metrics_ratio_pct(int i);              /* 10 * (i + 1) */
/* Tokens kept / evicted out of n at compression ratio pct % (floor, at least 1 kept). */
int metrics_keep(int n, int pct);

/* Eviction orders compared by the loss curves. */
typedef enum {
    EVICT_LOWNORM = 0,   /* keep the lowest norms (evict the highest): the L2 policy */
    EVICT_HIGHNORM,      /* keep the highest norms: the paper's ablation */
    EVICT_RANDOM,        /* evict uniformly at random (seeded, reproducible) */
    EVICT_ORACLE,        /* keep the highest attention: the best any policy can do */
    EVICT_N
} EvictOrder;
const char *evict_order_name(EvictOrder e);   /* "lownorm", "highnorm", "random", "oracle" */

/* ---- 1. row metrics --------------------------------------------------------- */

typedef struct {
    double spearman, pearson;     /* NaN when undefined (n < 2 or a constant side) */
    double alr, alr_per_n;        /* Eqs. 5–7 */
    double loss[EVICT_N][METRICS_N_RATIOS];      /* attention mass on evicted tokens */
    double overlap[EVICT_N][METRICS_N_RATIOS];   /* |kept ∩ oracle kept| / keep (oracle: 1) */
    /* the attention sink (see "sink diagnostics" below); slot 0 is the first token */
    double first_token_attn;      /* attn[0] */
    double first_key_norm_ratio;  /* ‖k_0‖ / the median of the n key norms */
} RowMetrics;

/* The norm side of a row: everything that does not depend on the query. */
typedef struct RowScratch RowScratch;
typedef struct {
    int n, cap;
    const float *norm;    /* [n] the key norms (not owned) */
    int *by_norm_asc;     /* slots, lowest norm first (stable: ties by slot) */
    int *by_norm_desc;    /* slots, highest norm first (ties: the higher slot first, so
                             among equal norms the earlier token is kept longest) */
    int *norm_rank;       /* norm_rank[slot] = index of slot in by_norm_desc */
    double *avg_rank;     /* ascending rank of the norm, 1..n, ties get their average */
    double norm_mean, norm_ss;   /* mean and Σ(x − mean)² of the norms */
    double rank_ss;              /* Σ(rank − mean rank)² of avg_rank */
} NormStats;

void normstats_init(NormStats *ns);
/* The median of the prepared norms (the mean of the two middle ones for even n). */
double normstats_median(const NormStats *ns);
void normstats_free(NormStats *ns);

/* Per-thread scratch for the sorts and metrics_row (grows as needed). */
struct RowScratch {
    int cap;
    int *by_attn_asc, *attn_rank, *random_order, *random_rank, *tmp_idx, *hist;
    uint32_t *tmp_key, *tmp_key2;
    double *avg_rank;
};

void rowscratch_init(RowScratch *s);
void rowscratch_free(RowScratch *s);

/* Prepare for norm[0..n) (the array must outlive the NormStats' use). */
void normstats_set(NormStats *ns, const float *norm, int n, RowScratch *s);
/* The same when norm[0..ns->n) is unchanged and only norm[ns->n..n) is new
 * (a decode step): the new slots are inserted into the sorted order. Falls
 * back to normstats_set for a different array, a shorter n, or ns->n == 0
 * (set ns->n = 0 when the array's contents change). */
void normstats_extend(NormStats *ns, const float *norm, int n, RowScratch *s);

/* The metrics of one attention row attn[0..ns->n) against the prepared norms.
 * random_key seeds the random eviction order (same key, same order). */
void metrics_row(const NormStats *ns, const float *attn, uint64_t random_key,
                 RowScratch *s, RowMetrics *out);

/* Building blocks, exposed for tests and other modules. */
/* Stable ascending argsort of v[0..n) (LSD radix sort on the float bits; NaN-free input). */
void argsort_f32(const float *v, int n, int *order, RowScratch *s);
/* Ranks 1..n of v in ascending order, ties replaced by their average rank
 * (the convention of scipy.stats.rankdata and of Spearman's ρ with ties).
 * order = the ascending argsort of v. */
void average_ranks(const float *v, const int *order, int n, double *rank);
double pearson_f32(const float *x, const float *y, int n);
double pearson_f64(const double *x, const double *y, int n);
/* A reproducible random permutation of 0..n-1 (Fisher–Yates driven by splitmix64(key)). */
void random_permutation(int *perm, int n, uint64_t key);

/* ---- 2. accumulators ------------------------------------------------------ */

/* Every row metric flattened to one "slot" (what a CSV row / NPZ array holds). */
enum {
    SLOT_SPEARMAN = 0, SLOT_PEARSON, SLOT_ALR, SLOT_ALR_N,
    SLOT_LOSS = 4,                                            /* + order*9 + ratio */
    SLOT_OVERLAP = SLOT_LOSS + EVICT_N * METRICS_N_RATIOS,    /* + order*9 + ratio (orders 0..2) */
    SLOT_FIRST_ATTN = SLOT_OVERLAP + EVICT_ORACLE * METRICS_N_RATIOS,
    SLOT_FIRST_KEY_RATIO,
    SLOT_N
};
/* name ("spearman", "loss_lownorm", "overlap_random", "first_token_attn", ...) and
 * ratio (0.1..0.9, or -1). */
void metrics_slot_describe(int slot, char *name, int name_size, double *ratio);
double metrics_slot_value(const RowMetrics *m, int slot);

typedef struct {
    RunStat slot[SLOT_N];    /* n = rows where the metric was defined (not NaN) */
} MetricsAcc;

void metrics_acc_clear(MetricsAcc *a);
void metrics_acc_add(MetricsAcc *a, const RowMetrics *m);     /* skips NaN values */
void metrics_acc_add_value(MetricsAcc *a, int slot, double x);
double metrics_acc_mean(const MetricsAcc *a, int slot);       /* NaN when n = 0 */
double metrics_acc_std(const MetricsAcc *a, int slot);        /* sample std (n − 1); NaN when n < 2 */

/* ---- sink diagnostics -------------------------------------------------------
 *
 * An attention sink is a token (here: the first, BOS) that most queries pay a
 * large share of their attention to whatever it holds. Per layer, from the
 * per-head means of the row metrics first_token_attn and first_key_norm_ratio:
 *   first_token_attn   the mean over the heads of each head's mean attention on
 *                      the first token
 *   sink_head_share    the share of heads whose mean attention on the first
 *                      token exceeds SINK_THRESHOLD: Gu et al., "When Attention
 *                      Sink Emerges in Language Models: An Empirical View"
 *                      (arXiv 2410.10781), Sink_1^eps with eps = 0.3, taken per
 *                      layer instead of over all layers. They average a head's
 *                      attention on token k over every query i >= k of T = 64
 *                      token inputs; here the average is over the queries
 *                      correlate measures (by default the first generated one).
 *   key_norm_ratio     the mean over the KV heads of ‖k_first‖ / median ‖k‖
 *                      (each KV head's mean over queries): below 1 when the
 *                      sink's key is short, the L2 paper's (arXiv 2406.11430)
 *                      explanation of why low-norm keys draw attention. */
#define SINK_THRESHOLD 0.3
typedef struct {
    double first_token_attn, sink_head_share, key_norm_ratio;
    int sink_heads;               /* heads above SINK_THRESHOLD */
} LayerSink;
/* head_first_attn[n_heads]: each head's mean attention on the first token;
 * kv_key_norm_ratio[n_kv_heads]: each KV head's mean ‖k_first‖ / median ‖k‖.
 * NaN entries (nothing measured) are left out of the means and the share. */
LayerSink sink_layer(const double *head_first_attn, int n_heads,
                     const double *kv_key_norm_ratio, int n_kv_heads);

/* ---- 3. the correlator: streaming metrics over a model run ----------------- */

typedef enum {
    QUERY_FIRST_GEN = 0,   /* the query of the first generated token after the prompt (the paper) */
    QUERY_LAST_PREFILL,    /* the last prompt row */
    QUERY_ALL_DECODE       /* every decode step of n_gen greedy tokens */
} QueryMode;
const char *query_mode_name(QueryMode q);
int query_mode_parse(const char *s, QueryMode *out);     /* 0 or -1 */

typedef struct Correlator Correlator;

Correlator *correlator_create(const Config *cfg, int max_keys, uint64_t seed);
void correlator_free(Correlator *c);
/* Also measure the scores of `scores` (score_metrics.h) on the same queries
 * (decode queries only); their rows and members follow the key-norm ones in
 * metrics.csv / metrics.npz. Not owned. */
struct ScoreSet;
void correlator_set_scores(Correlator *c, struct ScoreSet *scores);
/* One sequence: prefill ids[0..n) into an empty cache, then (by mode) one or
 * n_gen greedy decode steps; accumulates the metrics of the chosen queries.
 * seq_index makes the random eviction order differ between sequences. */
int correlator_run(Correlator *c, Forward *f, KVCache *cache, const int *ids, int n,
                   QueryMode mode, int n_gen, int seq_index, const StepHook *hook, Err *err);
const MetricsAcc *correlator_acc(const Correlator *c, int layer, int head);
/* Where the time went, so far: prefill forwards, decode forwards (each with
 * its metric computation), and the metric computation alone. */
typedef struct {
    double prefill_seconds, decode_seconds, metric_seconds;
    int64_t prefill_tokens, decode_steps, rows;    /* rows = attention rows measured */
} CorrelatorTiming;
CorrelatorTiming correlator_timing(const Correlator *c);
/* The sink diagnostics of one layer from the accumulated per-head means. */
LayerSink correlator_layer_sink(const Correlator *c, int layer);

/* metrics.csv: layer,head,kv_head,metric,ratio,mean,std,n (ratio empty for scalars):
 * every (layer, head) with the slots before SLOT_FIRST_ATTN, then every (layer,
 * head) with the sink slots, then per layer (head, kv_head empty) sink_first_token_attn,
 * sink_head_share, sink_key_norm_ratio (std over the heads / KV heads averaged,
 * nan for the share; n = how many). */
int correlator_write_csv(const Correlator *c, const char *path, Err *err);
/* metrics.npz: <metric>_mean / _std / _n as [L, H] (scalars) or [L, H, 9] (curves), ratios [9];
 * sink_first_token_attn, sink_head_share, sink_key_norm_ratio [L]. */
int correlator_write_npz(const Correlator *c, const char *path, Err *err);

/* ---- 4. a policy against the full cache (../shared/spec/methods.md §5, "attention loss of a policy") --

 * Two caches fed the same tokens (the full cache's greedy continuation): the
 * full one, and one a Policy (policy.h) evicts from. At every decode step the
 * full-cache attention a_full of the new query is compared with the slots the
 * policy's cache still lets that query see:
 *   attention_loss = Σ_p a_full(p) − Σ_{p kept} a_full(p)   (mass on what the policy evicted)
 *   oracle_loss    = the same for the oracle that keeps the top-k a_full (k = kept count)
 *   overlap_oracle = |kept ∩ oracle kept| / k,   kept_fraction = k / n
 * per (layer, query head) over all steps and chunks, and per decode step over
 * chunks, layers and heads (cold-compress reports it at steps 500, 1000, ...). */
enum { PROBE_LOSS = 0, PROBE_ORACLE_LOSS, PROBE_OVERLAP, PROBE_KEPT, PROBE_N };
const char *probe_metric_name(int m);   /* "attention_loss", "oracle_loss", "overlap_oracle", "kept_fraction" */

struct Policy;
typedef struct PolicyProbe PolicyProbe;

PolicyProbe *policy_probe_create(const Config *cfg, int max_keys, int n_steps);
void policy_probe_free(PolicyProbe *pp);
/* One sequence: prefill ids[0..n) into both (empty) caches, then n_steps
 * greedy decode steps (tokens chosen from the FULL cache's logits). */
int policy_probe_run(PolicyProbe *pp, Forward *f, KVCache *full, KVCache *pcache, struct Policy *policy,
                     const int *ids, int n, const StepHook *hook, Err *err);
const RunStat *policy_probe_stat(const PolicyProbe *pp, int layer, int head, int metric);
const RunStat *policy_probe_step(const PolicyProbe *pp, int step, int metric);   /* step 1..n_steps */
/* policy_loss.csv: layer,head,kv_head,metric,mean,std,n;
 * policy_steps.csv: step,<metric>_mean,<metric>_std (each metric),n;
 * policy.npz: <metric>_mean/_std/_n [L, H] and steps_<metric>_mean/_std [n_steps], steps_n. */
int policy_probe_write(const PolicyProbe *pp, const char *run_dir, Err *err);

#endif
