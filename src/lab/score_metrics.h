/* score_metrics.h — does a policy's token score predict attention? The
 * correlator's key-norm metrics (metrics.h) for any score a policy can
 * produce: `kvlab correlate --score l2,vnorm,keydiff,tova,...`.
 *
 * A score is a policy's score() (policy.h: higher = more worth keeping),
 * taken from the policy framework, so a new policy's score is measured with
 * no code here. Scores that need attention history (h2o, tova, snapkv, ...)
 * get it the way the policy would: the policy's per-slot columns are side
 * columns of the correlator's cache and its attention observer sees every
 * query of the sequence, prompt rows included. Nothing is ever evicted.
 *
 * What is measured (../shared/spec/methods.md §5 for the metrics): at a
 * measured query t, the score of every token cached BEFORE t's forward
 * (what a policy deciding after forward t−1 ranks: kvlab's policies evict
 * after a forward, so that decision is what query t sees) against t's
 * attention on those tokens. The query's own token is always visible and is
 * left out. So, per (layer, query head), with x = the score of the query
 * head's KV head (tova: per KV head, not averaged over the layer):
 *   spearman, pearson    of (score, attention): POSITIVE when the score is good
 *                        (for l2, −‖k‖, this is minus the key-norm table's ρ
 *                        up to the query's own token and pre/post-RoPE norms)
 *   alr, alr_per_n       Eqs. 5–7 with D_m = the m LOWEST scores (evicted first)
 *   loss[9]              attention mass on the tokens evicted when keeping the
 *                        top max(1, floor(n(1−r))) scores, r = 10 %..90 %
 *   overlap[9]           |kept ∩ oracle kept| / keep
 *   loss_oracle[9], loss_random[9]  the same rows' oracle and random evictions
 * Ties: the earlier token ranks higher (policy_select_top's rule). */
#ifndef KVLAB_SCORE_METRICS_H
#define KVLAB_SCORE_METRICS_H

#include <stdint.h>
#include <stdio.h>

#include "engine/kvcache.h"
#include "formats/npy.h"
#include "lab/metrics.h"
#include "model/model.h"

#define SCORESET_MAX 16

typedef struct ScoreSet ScoreSet;

/* list: "NAME[:k=v,...][,NAME...]" (a comma-separated item with '=' and no ':'
 * continues the previous item's parameters: "snapkv:window=16,kernel=5,l2").
 * Every NAME must be a policy with a score function. max_keys: the longest
 * sequence (prompt + decode) measured. */
ScoreSet *scoreset_create(const char *list, const Config *cfg, int max_keys, Err *err);
void scoreset_free(ScoreSet *s);
int scoreset_count(const ScoreSet *s);
const char *scoreset_spec(const ScoreSet *s, int i);   /* as given: "l2", "snapkv:window=16" */
const char *scoreset_key(const ScoreSet *s, int i);    /* for member names: "l2_high", "snapkv_window_16" */
/* 1 if some score observes attention (every forward then needs the observer). */
int scoreset_needs_attention(const ScoreSet *s);

/* A new sequence on an EMPTY cache: registers every score's side columns on it
 * and resets the policies. The cache must not evict while the set uses it. */
int scoreset_start(ScoreSet *s, KVCache *c, Err *err);
/* Before every forward of n tokens on that cache (the policies' begin hooks). */
int scoreset_before_forward(ScoreSet *s, int n, Err *err);
/* The attention observer's callback for the set (ctx = the ScoreSet). */
void scoreset_observe(void *ctx, int layer, int head, int query_pos, const float *probs, const int *key_pos, int n_keys);
/* Take every score of every cached slot now: call before scoreset_before_forward
 * of the forward whose query is measured. */
void scoreset_snapshot(ScoreSet *s);
/* After that forward: rows[lh * row_stride ..] is the measured query's
 * attention of (layer, head) lh = layer * n_heads + head, row_n[lh] its length
 * (the snapshot's slots + 1); seq_key varies the random order per sequence and
 * query. Accumulates every score's metrics. */
int scoreset_measure(ScoreSet *s, const float *rows, const int *row_n, int row_stride, uint64_t seq_key, Err *err);

/* The accumulated metrics: score i, (layer, head). Slots as MetricsAcc
 * (metrics.h): SLOT_SPEARMAN.., the score's loss/overlap in the EVICT_LOWNORM
 * slots, the oracle's and random's in theirs. */
const MetricsAcc *scoreset_acc(const ScoreSet *s, int i, int layer, int head);

/* metrics.csv rows (after the key-norm ones), for every score, layer and head:
 * score_<key>_{spearman,pearson,alr,alr_per_n} and, with a ratio,
 * score_<key>_{loss,overlap,loss_oracle,loss_random}. */
void scoreset_write_csv_rows(const ScoreSet *s, FILE *f);
/* metrics.npz members: score_<key>_<metric>_mean/_std/_n, [L, H] or [L, H, 9]. */
int scoreset_add_npz(const ScoreSet *s, NpzWriter *w, Err *err);
/* One table per score on out: per layer the mean over heads of spearman
 * (min..max), pearson, ALR/n, and the loss at 50 % by score / oracle / random. */
void scoreset_print_tables(const ScoreSet *s, FILE *out);

#endif
