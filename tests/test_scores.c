/* test_scores.c — correlate --score (src/lab/score_metrics.c): the metrics of
 * a policy's token score against attention, on hand-made caches and rows with
 * answers worked out here, and end to end on stories260K. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engine/forward.h"
#include "lab/metrics.h"
#include "lab/score_metrics.h"
#include "policy/policy.h"

/* A test policy: score = the first channel of the cached key. */
static const float *score_key0(Policy *p, const KVCache *c, int layer, int g, float *out) {
    const KVHead *h = kvcache_head(c, layer, g);
    const float *k = kvcache_key_rows(c, h, 0, h->len, policy_scratch(p)->tmp);
    for (int j = 0; j < h->len; j++) out[j] = k[(size_t)j * c->head_dim];
    return out;
}
static const PolicyParam no_params[] = { {0} };
static const PolicyDef policy_key0 = {
    .name = "test-key0", .rule = "test: keep the highest first key channel", .paper = NULL,
    .params = no_params, .score = score_key0,
};

/* One layer, two query heads on one KV head, head_dim 4. */
static Config tiny_config(void) {
    Config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_layers = 1; cfg.n_heads = 2; cfg.n_kv_heads = 1; cfg.head_dim = 4; cfg.dim = 8;
    cfg.vocab_size = 16;
    return cfg;
}

/* Append n tokens whose key is (key0[t], 0, 0, 0) (value: the same). */
static void append_keys(KVCache *c, const float *key0, int n) {
    float kv[64] = { 0 };
    for (int t = 0; t < n; t++) kv[t * 4] = key0[t];
    Err err;
    if (kvcache_append(c, 0, kv, kv, n, &err) != 0) { fprintf(stderr, "%s\n", err.msg); exit(1); }
    c->next_pos += n;
}

static void test_hand_scores(void) {
    Config cfg = tiny_config();
    Err err;
    CASE("a key score and l2 on a hand-made cache: rho, ALR, loss and overlap as worked out") {
        ScoreSet *s = scoreset_create("test-key0,l2", &cfg, 8, &err);
        CHECK(s != NULL, "%s", err.msg);
        if (!s) return;
        CHECK(scoreset_count(s) == 2 && !scoreset_needs_attention(s), "count %d", scoreset_count(s));
        KVCache c;
        kvcache_init(&c, 1, 1, 4, 8, &err);
        CHECK(scoreset_start(s, &c, &err) == 0, "%s", err.msg);
        CHECK(scoreset_before_forward(s, 5, &err) == 0, "%s", err.msg);
        const float key0[5] = { 3, 1, 4, 1.5f, 5 };
        append_keys(&c, key0, 5);
        scoreset_snapshot(s);
        CHECK(scoreset_before_forward(s, 1, &err) == 0, "%s", err.msg);
        const float next = 2;
        append_keys(&c, &next, 1);
        /* head 0 attends in the score's order, head 1 against it; slot 5 is the query itself */
        float rows[2][8] = { { 0.15f, 0.05f, 0.2f, 0.1f, 0.3f, 0.2f }, { 0.15f, 0.3f, 0.1f, 0.2f, 0.05f, 0.2f } };
        int row_n[2] = { 6, 6 };
        CHECK(scoreset_measure(s, &rows[0][0], row_n, 8, 7, &err) == 0, "%s", err.msg);
        const MetricsAcc *k0 = scoreset_acc(s, 0, 0, 0), *k1 = scoreset_acc(s, 0, 0, 1);
        const MetricsAcc *l0 = scoreset_acc(s, 1, 0, 0);
        CHECK_CLOSE(metrics_acc_mean(k0, SLOT_SPEARMAN), 1.0, 1e-12, "head 0 rho");
        CHECK_CLOSE(metrics_acc_mean(k1, SLOT_SPEARMAN), -1.0, 1e-12, "head 1 rho");
        /* l2 = -|k| = -key0 here: the reverse order */
        CHECK_CLOSE(metrics_acc_mean(l0, SLOT_SPEARMAN), -1.0, 1e-12, "l2 head 0 rho");
        CHECK_CLOSE(metrics_acc_mean(l0, SLOT_PEARSON), -metrics_acc_mean(k0, SLOT_PEARSON), 1e-6, "l2 pearson");
        /* n = 5 cached before the query. 50 %: keep floor(2.5) = 2, evict the three lowest
         * scores (key0 1, 1.5, 3: slots 1, 3, 0) */
        CHECK_CLOSE(metrics_acc_mean(k0, SLOT_LOSS + EVICT_LOWNORM * METRICS_N_RATIOS + 4), 0.05 + 0.1 + 0.15, 1e-6, "loss@50 head 0");
        CHECK_CLOSE(metrics_acc_mean(k1, SLOT_LOSS + EVICT_LOWNORM * METRICS_N_RATIOS + 4), 0.3 + 0.2 + 0.15, 1e-6, "loss@50 head 1");
        CHECK_CLOSE(metrics_acc_mean(k1, SLOT_LOSS + EVICT_ORACLE * METRICS_N_RATIOS + 4), 0.05 + 0.1 + 0.15, 1e-6, "oracle@50 head 1");
        /* head 0: the score order is the attention order, ALR = 0, overlap 1; head 1 keeps
         * slots 2 and 4, the oracle slots 1 and 3: overlap 0 */
        CHECK_CLOSE(metrics_acc_mean(k0, SLOT_ALR), 0.0, 1e-6, "ALR head 0");
        CHECK_CLOSE(metrics_acc_mean(k0, SLOT_OVERLAP + EVICT_LOWNORM * METRICS_N_RATIOS + 4), 1.0, 1e-12, "overlap head 0");
        CHECK_CLOSE(metrics_acc_mean(k1, SLOT_OVERLAP + EVICT_LOWNORM * METRICS_N_RATIOS + 4), 0.0, 1e-12, "overlap head 1");
        /* ALR head 1, Eqs. 5-7 by hand: evicting by lowest score takes slots 1,3,0,2,4 in turn:
         * cumulative 0.3 0.5 0.65 0.75 0.8; the ideal order 4,2,0,3,1: 0.05 0.15 0.3 0.5 0.8 */
        CHECK_CLOSE(metrics_acc_mean(k1, SLOT_ALR), (0.3 - 0.05) + (0.5 - 0.15) + (0.65 - 0.3) + (0.75 - 0.5), 1e-6, "ALR head 1");
        CHECK(k0->slot[SLOT_SPEARMAN].n == 1, "%lld rows", (long long)k0->slot[SLOT_SPEARMAN].n);
        /* a second measurement needs a new snapshot */
        CHECK(scoreset_measure(s, &rows[0][0], row_n, 8, 7, &err) != 0, "measured without a snapshot");
        scoreset_free(s);
        kvcache_free(&c);
    }
    CASE("attention scores are taken before the measured query: tova = the previous query's row") {
        ScoreSet *s = scoreset_create("tova,h2o", &cfg, 8, &err);
        CHECK(s != NULL, "%s", err.msg);
        if (!s) return;
        CHECK(scoreset_needs_attention(s), "tova observes attention");
        KVCache c;
        kvcache_init(&c, 1, 1, 4, 8, &err);
        scoreset_start(s, &c, &err);
        const float key0[4] = { 1, 2, 3, 4 };
        scoreset_before_forward(s, 4, &err);
        append_keys(&c, key0, 4);
        /* the prompt's rows (causal): tova keeps only the last query's, h2o sums all */
        const float q0[1] = { 1 }, q1[2] = { 0.5f, 0.5f }, q2[3] = { 0.2f, 0.3f, 0.5f }, q3[4] = { 0.4f, 0.1f, 0.3f, 0.2f };
        const float *q[4] = { q0, q1, q2, q3 };
        int pos[8] = { 0, 1, 2, 3, 4, 5, 6, 7 };
        for (int h = 0; h < 2; h++)
            for (int t = 0; t < 4; t++) scoreset_observe(s, 0, h, t, q[t], pos, t + 1);
        scoreset_snapshot(s);
        scoreset_before_forward(s, 1, &err);   /* tova's window starts again: the snapshot keeps q3 */
        const float next = 0;
        append_keys(&c, &next, 1);
        /* the measured row follows q3 exactly (+ itself): tova rho = 1; h2o's sums are
         * 1 + 0.5 + 0.2 + 0.4 = 2.1, 0.9, 0.8, 0.2: rank order 0 > 1 > 2 > 3 */
        float rows[2][8] = { { 0.4f, 0.1f, 0.3f, 0.15f, 0.05f }, { 0.4f, 0.1f, 0.3f, 0.15f, 0.05f } };
        int row_n[2] = { 5, 5 };
        CHECK(scoreset_measure(s, &rows[0][0], row_n, 8, 1, &err) == 0, "%s", err.msg);
        CHECK_CLOSE(metrics_acc_mean(scoreset_acc(s, 0, 0, 1), SLOT_SPEARMAN), 1.0, 1e-12, "tova rho");
        /* h2o ranks 0,1,2,3; the row ranks 0,2,3,1 by attention: rho = 1 - 6*(0+1+1+4)/(4*15) = 0.4 */
        CHECK_CLOSE(metrics_acc_mean(scoreset_acc(s, 1, 0, 0), SLOT_SPEARMAN), 0.4, 1e-12, "h2o rho");
        scoreset_free(s);
        kvcache_free(&c);
    }
    CASE("--score lists: parameters continue an item; bad names fail with one message") {
        ScoreSet *s = scoreset_create("snapkv:window=2,kernel=3,l2-high", &cfg, 8, &err);
        CHECK(s && scoreset_count(s) == 2, "%s", s ? "" : err.msg);
        if (s) {
            CHECK(!strcmp(scoreset_spec(s, 0), "snapkv:window=2,kernel=3"), "%s", scoreset_spec(s, 0));
            CHECK(!strcmp(scoreset_key(s, 1), "l2_high"), "%s", scoreset_key(s, 1));
            scoreset_free(s);
        }
        CHECK(!scoreset_create("nosuch", &cfg, 8, &err) && strstr(err.msg, "nosuch"), "%s", err.msg);
        CHECK(!scoreset_create("lagkv-l2", &cfg, 8, &err) && strstr(err.msg, "lagkv-l2") && strstr(err.msg, "own selection"), "%s", err.msg);
        CHECK(!scoreset_create("l2,l2", &cfg, 8, &err) && strstr(err.msg, "twice"), "%s", err.msg);
        CHECK(!scoreset_create("l2,", &cfg, 8, &err) && strstr(err.msg, "trailing"), "%s", err.msg);
        CHECK(!scoreset_create("window=3", &cfg, 8, &err), "parameters with no score");
    }
}

/* End to end: the correlator with scores on stories260K. l2 and l2-high rank
 * in exactly reverse orders, so their correlations are exact negatives; every
 * score sees the same rows, so the oracle's loss is the same for all. */
static void test_correlator_scores(void) {
    CASE("correlator + scores on stories260K: l2 = -l2-high, one oracle, every row measured") {
        char path[4096];
        Model m;
        Err err;
        shared_path(path, sizeof path, "models/stories260k/stories260K.bin");
        if (model_load(&m, path, DTYPE_F32, &err) != 0) { CHECK(0, "%s", err.msg); return; }
        int ids[40];
        for (int t = 0; t < 40; t++) ids[t] = t ? 30 + (t * 37) % 400 : 1;
        KVCache cache;
        forward_cache_init(&m, &cache, 44, &err);
        Forward *f = forward_create(&m, 16);
        Correlator *c = correlator_create(&m.cfg, 44, 1);
        ScoreSet *s = scoreset_create("l2,l2-high,h2o", &m.cfg, 44, &err);
        correlator_set_scores(c, s);
        CHECK(correlator_run(c, f, &cache, ids, 40, QUERY_ALL_DECODE, 3, 0, NULL, &err) == 0, "%s", err.msg);
        CHECK(correlator_run(c, f, &cache, ids, 40, QUERY_LAST_PREFILL, 0, 1, NULL, &err) != 0, "last-prefill refused");
        double worst = 0, worst_oracle = 0;
        for (int l = 0; l < m.cfg.n_layers; l++)
            for (int h = 0; h < m.cfg.n_heads; h++) {
                const MetricsAcc *a = scoreset_acc(s, 0, l, h), *b = scoreset_acc(s, 1, l, h), *d = scoreset_acc(s, 2, l, h);
                CHECK(a->slot[SLOT_SPEARMAN].n == 3 && d->slot[SLOT_SPEARMAN].n == 3, "layer %d head %d: %lld rows",
                      l, h, (long long)a->slot[SLOT_SPEARMAN].n);
                double x = fabs(metrics_acc_mean(a, SLOT_SPEARMAN) + metrics_acc_mean(b, SLOT_SPEARMAN));
                if (!(x <= worst)) worst = x;
                for (int r = 0; r < METRICS_N_RATIOS; r++) {
                    int slot = SLOT_LOSS + EVICT_ORACLE * METRICS_N_RATIOS + r;
                    x = fabs(metrics_acc_mean(a, slot) - metrics_acc_mean(d, slot));
                    if (!(x <= worst_oracle)) worst_oracle = x;
                }
            }
        CHECK(worst < 1e-12, "l2 vs l2-high rho: %.3g", worst);
        CHECK(worst_oracle == 0, "oracle differs between scores by %.3g", worst_oracle);
        scoreset_free(s);
        correlator_free(c);
        forward_free(f);
        kvcache_free(&cache);
        model_free(&m);
    }
}

int main(void) {
    if (policy_register(&policy_key0) != 0) { fprintf(stderr, "cannot register test-key0\n"); return 1; }
    test_hand_scores();
    test_correlator_scores();
    return check_summary();
}
