/* policy_headalloc.c — head-wise adaptive budgets, `--budget-alloc adaptive`
 * (Ada-KV, Feng et al., arXiv 2407.11550: "Ada-KV: Optimizing KV Cache
 * Eviction by Adaptive Budget Allocation"; the rule of the official code
 * FFY0/AdaKV and of its kvpress port, kvpress/presses/adakv_press.py).
 *
 * A layer whose KV heads may keep B slots each shares the B·H slots of its H
 * KV heads out by where the scores concentrate:
 *
 *   1. every head keeps its protected slots (--protect-sinks, --protect-recent)
 *      and its own top max(1, ⌊A·B⌋) candidates: the safeguard, A = --head-floor
 *      (0.2, kvpress's alpha_safeguard); kvpress takes ⌊A·B⌋, which is 0 for a
 *      small B — kvlab keeps at least one slot per head;
 *   2. the B·H best scores of the layer, all heads together (the safeguarded
 *      slots first), are kept; head g's budget is how many of them are its own.
 *
 * Each head then evicts to its own budget with the policy's usual selection,
 * which keeps exactly those slots (they are the head's own best). The cache
 * compacts each head to its length and shrinks its arrays, so what a head
 * gives up is released memory — kvpress only masks such slots ("does not
 * reduce peak memory"). Scores of different heads are compared as they are,
 * as Ada-KV compares its attention scores; ties: the lower position, then the
 * lower head. A layer already within B·H slots is left as it is, so with a
 * step schedule the heads' shares move with every decision. */
#include <math.h>

#include "policy/policy.h"

void policy_adaptive_head_budgets(Policy *p, const KVCache *c, int layer, int budget, int *out) {
    int KV = p->n_kv_heads;
    long total = 0, want = (long)budget * KV;
    for (int g = 0; g < KV; g++) total += kvcache_head(c, layer, g)->len;
    if (total <= want) {            /* nothing to evict: each head as it is */
        for (int g = 0; g < KV; g++) out[g] = kvcache_head(c, layer, g)->len;
        return;
    }
    PolicyScratch *sc = policy_scratch(p);
    int safe = (int)floor(budget * p->o.head_floor + 1e-9);
    if (safe < 1) safe = 1;
    int m = 0;
    for (int g = 0; g < KV; g++) {
        const KVHead *h = kvcache_head(c, layer, g);
        const float *s = p->scorer->score(p, c, layer, g, sc->score);
        float *score = p->alloc_score + m;
        int *key = p->alloc_key + m;
        for (int j = 0; j < h->len; j++) {
            score[j] = policy_rank(s[j]);
            key[j] = h->pos[j] * KV + g;    /* ties: lower position, then lower head */
        }
        /* the safeguard: protected slots + the head's own top `safe` rank first */
        int n = policy_select_top(p, h->pos, h->len, score, p->o.sinks + p->o.recent + safe, p->o.sinks,
                                  p->o.recent, sc->itmp);
        for (int i = 0; i < n; i++) score[sc->itmp[i]] = INFINITY;
        m += h->len;
    }
    for (int i = 0; i < m; i++) p->alloc_idx[i] = i;
    policy_select_best(p->alloc_idx, m, (int)want, p->alloc_score, p->alloc_key);
    for (int g = 0; g < KV; g++) out[g] = 0;
    for (long i = 0; i < want; i++) out[p->alloc_key[p->alloc_idx[i]] % KV]++;
    for (int g = 0; g < KV; g++)
        if (out[g] < 1) out[g] = 1;   /* only when the protected slots alone exceed B·H */
}
