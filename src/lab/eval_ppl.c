/* eval_ppl.c — the evaluation behind `kvlab ppl` (cli/cmd_ppl.c): perplexity
 * with a compressed KV cache (../shared/spec/methods.md §6, the StreamingLLM /
 * L2-paper protocol).
 *
 * The text is cut into chunks, each [BOS] + the next chunk-1 tokens (runmeta.h
 * text_chunks). Every chunk is decoded ONE token per forward from an empty
 * cache; after each forward the policy's schedule may evict (policy_forward),
 * so the prediction of token t+1 sees what the policy kept of 0..t-1 plus t.
 * With `--schedule threshold:T` this is the L2 paper's "max kv T" saw-tooth.
 *
 * A second cache and Forward run the same tokens with no eviction (the
 * reference, like llama.cpp --kl-divergence): KL(P_full || P_policy) and top-1
 * agreement per token. A policy that never evicts is its own reference.
 *
 * Unit of work = one chunk (runlog.h): its row goes to results.csv, its
 * per-token rows to tokens.csv; positions.csv has the per-position mean and
 * cumulative NLL over chunks (perplexity vs input length, paper Fig. 3). */
#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "lab/eval.h"
#include "lab/output_error.h"
#include "lab/progress.h"
#include "lab/runlog.h"
#include "engine/sampler.h"
#include "lab/runmeta.h"

/* ---- per-token scores ---------------------------------------------------------------- */

static double log_sum_exp(const float *x, int n) {
    float m = x[0];
    for (int i = 1; i < n; i++) if (x[i] > m) m = x[i];
    double s = 0.0;
    for (int i = 0; i < n; i++) s += exp((double)x[i] - m);
    return m + log(s);
}

void ppl_token_score(const float *logits, const float *ref, int vocab, int target, PplToken *out) {
    double lse = log_sum_exp(logits, vocab);
    int top = argmax(logits, vocab);
    out->nll = lse - logits[target];
    out->correct = top == target;
    out->nll_ref = NAN;
    out->kl = NAN;
    out->correct_ref = out->agree = -1;
    if (!ref) return;
    double lse_ref = log_sum_exp(ref, vocab), kl = 0.0;
    for (int i = 0; i < vocab; i++) {
        double lr = ref[i] - lse_ref;
        kl += exp(lr) * (lr - (logits[i] - lse));
    }
    int top_ref = argmax(ref, vocab);
    out->nll_ref = lse_ref - ref[target];
    out->kl = kl > 0 ? kl : 0.0;          /* rounding can give -1e-17 for equal rows */
    out->correct_ref = top_ref == target;
    out->agree = top_ref == top;
}

int ppl_run_sequence(PplRunner *r, const int *ids, int n, PplToken *out,
                     void (*tick)(void *ctx), void *tick_ctx, Err *err) {
    kvcache_reset(r->cache);              /* next_pos = 0: the policy resets too */
    if (r->f_ref) kvcache_reset(r->cache_ref);
    for (int t = 0; t + 1 < n; t++) {
        if (policy_forward(r->policy, r->f, r->cache, &ids[t], 1, NULL, err) != 0) return -1;
        const float *logits = forward_last_logits(r->f), *ref = NULL;
        if (r->guard && numguard_check(r->guard, logits, 1, err) != 0) return -1;
        if (r->f_ref) {
            if (forward(r->f_ref, r->cache_ref, &ids[t], 1, NULL, err) != 0) return -1;
            ref = forward_last_logits(r->f_ref);
        } else if (r->ref_is_policy) {
            ref = logits;
        }
        ppl_token_score(logits, ref, r->vocab, ids[t + 1], &out[t]);
        if (r->output_error && output_error_step(r->output_error, t + 1, out[t].kl, err) != 0) return -1;
        out[t].kv = eval_kv_per_head(r->cache);
        if (tick) tick(tick_ctx);
    }
    return 0;
}
