/* test_arms.c — symmetric arms: one-shot prefill, chunked prefill and
 * token-by-token decoding of the same tokens give the same logits, with and
 * without a policy whose budget is not reached (docs/analyses.md, "symmetric
 * arms"). An evaluation compares arms that differ only in the policy; this is
 * what makes the full-cache arm and a policy arm start from the same numbers.
 *
 * Two claims, both asserted:
 *   - a policy that evicts nothing, attention observers included (they change
 *     which thread runs a row, not its sums), gives BIT-IDENTICAL logits to no
 *     policy on the same block structure: the arms of an evaluation, which
 *     share their prefill path (same --batch, same pieces), differ only by
 *     what the policies evict;
 *   - one-shot prefill, chunked prefill and token-by-token decoding agree
 *     within LOGIT_BOUND (below). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engine/forward.h"
#include "policy/policy.h"

#define N_TOKENS 70

/* Logits of every position, running ids[0..n) in pieces of `piece` tokens
 * (piece >= n: one call) through a Forward of max_batch `batch`, with policy
 * spec `policy` (NULL: plain forward). */
static float *run_arm(const Model *m, const int *ids, int n, int piece, int batch, const char *policy) {
    Err err;
    KVCache cache;
    if (forward_cache_init(m, &cache, n, &err) != 0) { fprintf(stderr, "%s\n", err.msg); exit(1); }
    Forward *f = forward_create(m, batch);
    Policy *p = NULL;
    if (policy) {
        PolicyOpts o;
        policy_defaults(&o);
        if (policy_parse_spec(&o, policy, &err) != 0) { fprintf(stderr, "%s\n", err.msg); exit(1); }
        o.budget_kind = BUDGET_TOKENS;
        o.budget = 4 * n;                     /* never reached */
        if (!(p = policy_create(&o, &m->cfg, n, &err))) { fprintf(stderr, "%s: %s\n", policy, err.msg); exit(1); }
    }
    int V = m->cfg.vocab_size;
    float *logits = malloc((size_t)n * V * sizeof(float));
    for (int off = 0; off < n; off += piece) {
        int len = n - off < piece ? n - off : piece;
        if (policy_forward(p, f, &cache, ids + off, len, logits + (size_t)off * V, &err) != 0) {
            fprintf(stderr, "%s\n", err.msg); exit(1);
        }
    }
    CHECK(cache.next_pos == n && kvcache_slots_used(&cache) == (long)n * m->cfg.n_layers * m->cfg.n_kv_heads,
          "%s: %ld slots for %d tokens", policy ? policy : "no policy", kvcache_slots_used(&cache), n);
    policy_free(p);
    forward_free(f);
    kvcache_free(&cache);
    return logits;
}

/* The first position whose logits differ (-1: none) and the largest difference. */
static int first_difference(const float *a, const float *b, int n, int V, double *max_diff) {
    int first = -1;
    *max_diff = 0;
    for (int t = 0; t < n; t++)
        for (int i = 0; i < V; i++) {
            double d = fabs((double)a[(size_t)t * V + i] - b[(size_t)t * V + i]);
            if (d > *max_diff) *max_diff = d;
            if (first < 0 && memcmp(&a[(size_t)t * V + i], &b[(size_t)t * V + i], sizeof(float)) != 0) first = t;
        }
    return first;
}

/* A different block structure may change the rounding of the matrix products
 * (the kernels tile the rows of a pass; a row in a remainder tile takes another
 * summation path) and of the attention (one softmax per row either way): the
 * logits then agree to LOGIT_BOUND, not bit for bit. Measured: at most 1.7e-5
 * on logits of magnitude ~10 (stories260K, sink-26m). */
#define LOGIT_BOUND 1e-4

typedef struct { int piece, batch; } Arm;

static void test_model(const char *rel, const Arm *arms, int n_arms, const char *const *policies, int n_policies) {
    char path[4096], name[512];
    Model m;
    Err err;
    if (model_load(&m, shared_path(path, sizeof path, rel), DTYPE_F32, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg); exit(1);
    }
    int ids[N_TOKENS];
    for (int t = 0; t < N_TOKENS; t++) ids[t] = t ? 3 + (t * 97) % (m.cfg.vocab_size - 3) : 1;
    int V = m.cfg.vocab_size;
    float *ref = run_arm(&m, ids, N_TOKENS, N_TOKENS, N_TOKENS, NULL);
    for (int a = 0; a < n_arms; a++) {
        float *plain = run_arm(&m, ids, N_TOKENS, arms[a].piece, arms[a].batch, NULL);
        double max_diff;
        int first = first_difference(ref, plain, N_TOKENS, V, &max_diff);
        snprintf(name, sizeof name, "%.40s: pieces of %d, batch %d = one-shot prefill within %.0e", rel,
                 arms[a].piece, arms[a].batch, LOGIT_BOUND);
        CASE(name) {
            printf("      max |diff| %.3g (first differing position %d)\n", max_diff, first);
            CHECK(max_diff <= LOGIT_BOUND, "max |diff| %.3g", max_diff);
        }
        /* the arms of an evaluation: the same block structure, another policy */
        for (int pi = 0; pi < n_policies; pi++) {
            snprintf(name, sizeof name, "%.40s: pieces of %d, batch %d: policy %s (budget not reached) = no policy, bit for bit",
                     rel, arms[a].piece, arms[a].batch, policies[pi]);
            CASE(name) {
                float *x = run_arm(&m, ids, N_TOKENS, arms[a].piece, arms[a].batch, policies[pi]);
                first = first_difference(plain, x, N_TOKENS, V, &max_diff);
                CHECK(first < 0, "first differing position %d, max |diff| %.3g", first, max_diff);
                free(x);
            }
        }
        free(plain);
    }
    free(ref);
    model_free(&m);
}

int main(void) {
    /* pieces of 1 = token-by-token decoding; batch < piece = forward() splitting its input */
    static const Arm many[] = { { N_TOKENS, 16 }, { 32, 32 }, { 17, 64 }, { 7, 7 }, { 5, 3 }, { 1, 1 } };
    static const Arm few[] = { { N_TOKENS, 16 }, { 17, 64 }, { 1, 1 } };
    /* a key score, attention observers (h2o; tova with one token set per layer;
     * snapkv's prefill window), and the full cache */
    static const char *const all[] = { "full", "l2", "h2o", "tova", "snapkv" };
    static const char *const some[] = { "l2", "h2o" };
    test_model("models/stories260k/stories260K.bin", many, 6, all, 5);
    test_model("models/sink-26m", few, 3, some, 2);
    return check_summary();
}
