/* policy_h2o.c — `h2o` (Heavy-Hitter Oracle, ../shared/spec/methods.md §4.2).
 *
 *   hh(p) = Σ over every query seen so far (prompt rows and each decode step)
 *           of its attention probability on p, averaged over the query heads
 *           of the KV head's group.
 *   norm=mean divides by the number of queries that could see p (kvpress):
 *           every query from p's own position on, i.e. next_pos − pos(p).
 * Keep the most recent W tokens plus the highest hh among the rest; the
 * accumulated scores of kept tokens carry over (the column attention_sum is
 * compacted with the cache). Runs after every step (default schedule). W = recent=, by default
 * half the budget (the paper's equal heavy-hitter / recent split). */
#include <string.h>

#include "policy/policy.h"

/* attention_sum: per query head, Σ over every query of its attention on the
 * slot (a new slot starts at 0). */
static void add_attention(Policy *p, float *row, int layer, int head, int query_pos, const float *probs, int n_keys) {
    (void)p; (void)layer; (void)head; (void)query_pos;
    for (int j = 0; j < n_keys; j++) row[j] += probs[j];
}

static const PolicyColumn attention_sum = { .name = "attention_sum", .per_query_head = 1, .observe = add_attention };
static const PolicyColumn *const columns[] = { &attention_sum, NULL };

static const float *score_h2o(Policy *p, const KVCache *c, int layer, int g, float *score) {
    const KVHead *h = kvcache_head(c, layer, g);
    policy_group_mean(p, c, "attention_sum", layer, g, h->len, score);
    if (!strcmp(policy_param_str_or(p, "norm", "sum"), "mean"))
        for (int j = 0; j < h->len; j++) score[j] /= (float)(c->next_pos - h->pos[j]);
    return score;
}

static int select_h2o(Policy *p, const KVCache *c, int layer, int g, int budget, int *keep) {
    const KVHead *h = kvcache_head(c, layer, g);
    if (h->len <= budget) {
        for (int j = 0; j < h->len; j++) keep[j] = j;
        return h->len;
    }
    const char *r = policy_param_str(p, "recent");
    int recent = strcmp(r, "auto") ? (int)policy_param(p, "recent") : budget / 2;
    if (recent < p->o.recent) recent = p->o.recent;
    const float *score = score_h2o(p, c, layer, g, policy_scratch(p)->score);
    return policy_select_top(p, h->pos, h->len, score, budget, p->o.sinks, recent, keep);
}

static const PolicyParam params[] = {
    { "recent", "auto", "int", 0, 1 << 22, "most recent tokens always kept (auto: half the budget)" },
    { "norm", "sum", "sum|mean", 0, 0, "sum: H2O's sum; mean: divided by the queries that saw the token (kvpress)" },
    {0},
};

const PolicyDef policy_h2o = {
    .name = "h2o",
    .rule = "keep the recent W and the highest accumulated attention (every query so far)",
    .paper = "Zhang et al. 2023, H2O, arXiv 2306.14048",
    .params = params,
    .columns = columns,
    .score = score_h2o,
    .select = select_h2o,
};
