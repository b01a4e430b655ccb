/* test_numcheck.c — the numerical guards and limits (numcheck.h): a NaN/Inf
 * poked into one weight of a tiny synthetic model is reported with the layer
 * whose output went non-finite first and the tensor's name; overflowing
 * activations with finite weights are told apart; the context limit; and
 * LagKV's min-max normalisation with a constant channel stays finite. */
#include <unistd.h>

#include "check.h"
#include "engine/forward.h"
#include "engine/kvcache.h"
#include "engine/numcheck.h"
#include "engine/ops.h"
#include "policy/policy.h"
#include "model/synth.h"

static char dir[256];

/* A bf16 checkpoint loaded in f32: every matrix is a converted, writable copy. */
static void load_tiny(Model *m) {
    Err err;
    if (model_load(m, dir, DTYPE_F32, &err) != 0) { fprintf(stderr, "%s\n", err.msg); exit(1); }
    if (m->converted_bytes == 0) { fprintf(stderr, "expected converted weights\n"); exit(1); }
}

static void make_tiny(void) {
    snprintf(dir, sizeof dir, "/tmp/kvlab-numcheck-%d", (int)getpid());
    SynthOpts o;
    synth_defaults(&o);
    o.progress = 0;
    o.dtype = DTYPE_BF16;
    Err err;
    if (synth_shape_parse("dim=16,layers=3,heads=2,kv_heads=1,ffn=24,vocab=40,seq=32", &o.cfg, &err) != 0 ||
        synth_write(&o, dir, &err) != 0) {
        fprintf(stderr, "%s\n", err.msg);
        exit(1);
    }
}

/* Run 3 tokens with the guard; returns numguard_check's result, message in err. */
static int run_guarded(Model *m, Err *err) {
    err->msg[0] = '\0';
    KVCache cache;
    forward_cache_init(m, &cache, 8, err);
    Forward *f = forward_create(m, 4);
    NumGuard *g = numguard_attach(f, m);
    int ids[3] = { 1, 5, 9 }, rc = forward(f, &cache, ids, 3, NULL, err);
    if (rc == 0) rc = numguard_check(g, forward_last_logits(f), 1, err);
    numguard_free(g);
    forward_free(f);
    kvcache_free(&cache);
    return rc;
}

static void test_guard(void) {
    Model m;
    Err err;
    CASE("a clean model passes the check") {
        load_tiny(&m);
        CHECK(run_guarded(&m, &err) == 0, "%s", err.msg);
        model_free(&m);
    }
    CASE("NaN in layer 1's v_proj: layer 1 and the tensor are named") {
        load_tiny(&m);
        ((float *)m.w.layers[1].wv.data)[3 * 16 + 4] = NAN;
        CHECK(run_guarded(&m, &err) != 0, "no error");
        CHECK(strstr(err.msg, "NaN in the logits") && strstr(err.msg, "output of layer 1 (of 3) went non-finite first") &&
              strstr(err.msg, "tensor 'model.layers.1.self_attn.v_proj.weight' holds NaN at [3, 4]"), "%s", err.msg);
        CHECK(strchr(err.msg, '\n') == NULL, "one line: %s", err.msg);
        model_free(&m);
    }
    CASE("-Inf in layer 0's input norm") {
        load_tiny(&m);
        m.w.layers[0].attn_norm[2] = -INFINITY;
        CHECK(run_guarded(&m, &err) != 0 && strstr(err.msg, "layer 0 (of 3)") &&
              strstr(err.msg, "'model.layers.0.input_layernorm.weight' holds -Inf at [2]"), "%s", err.msg);
        model_free(&m);
    }
    CASE("NaN in the embedding row of a prompt token: found by the whole-model scan") {
        load_tiny(&m);
        ((float *)m.w.token_embedding.data)[5 * 16 + 0] = NAN;
        CHECK(run_guarded(&m, &err) != 0 && strstr(err.msg, "layer 0 (of 3)") &&
              strstr(err.msg, "'model.embed_tokens.weight' holds NaN at [5, 0]"), "%s", err.msg);
        model_free(&m);
    }
    CASE("Inf in the final norm: every layer finite, the norm named") {
        load_tiny(&m);
        m.w.final_norm[7] = INFINITY;
        CHECK(run_guarded(&m, &err) != 0 && strstr(err.msg, "every layer's output is finite") &&
              strstr(err.msg, "'model.norm.weight' holds +Inf at [7]"), "%s", err.msg);
        model_free(&m);
    }
    CASE("finite but huge weights: the overflowing layer, weights said to be finite") {
        load_tiny(&m);
        float *gate = (float *)m.w.layers[2].w_gate.data, *up = (float *)m.w.layers[2].w_up.data;
        for (int i = 0; i < 24 * 16; i++) { gate[i] *= 1e32f; up[i] *= 1e32f; }   /* gate*up ~ 1e60: Inf in fp32 */
        CHECK(run_guarded(&m, &err) != 0 && strstr(err.msg, "layer 2 (of 3)") &&
              strstr(err.msg, "every weight is finite: the activations overflowed in layer 2"), "%s", err.msg);
        model_free(&m);
    }
    CASE("numcheck_first_nonfinite") {
        float x[5] = { 0, 1, -2, 3, 4 };
        CHECK(numcheck_first_nonfinite(x, 5) == -1, "clean");
        x[3] = NAN;
        CHECK(numcheck_first_nonfinite(x, 5) == 3, "NaN at 3");
        x[1] = -INFINITY;
        CHECK(numcheck_first_nonfinite(x, 5) == 1, "-Inf at 1");
        CHECK(numcheck_first_nonfinite(x, 0) == -1, "empty");
    }
}

static void test_limits(void) {
    Model m;
    Err err;
    CASE("the context limit: KV bytes for the full context against what is available") {
        load_tiny(&m);
        size_t per_token = model_kv_bytes_per_token(&m.cfg, DTYPE_F32);   /* 2 * 3 layers * 1 * 8 * 4 = 192 */
        CHECK(per_token == 192, "%zu", per_token);
        CHECK(model_kv_bytes_per_token(&m.cfg, DTYPE_BF16) == 96, "bf16 K+V: half");
        CHECK(numcheck_ctx_fits(&m, 32, 1, 32 * 192, &err) == 0, "exactly fits: %s", err.msg);
        CHECK(numcheck_ctx_fits(&m, 32, 1, -1, &err) == 0, "unknown memory: never refused");
        CHECK(numcheck_ctx_fits(&m, 32, 1, 32 * 192 - 1, &err) != 0 &&
              strstr(err.msg, "--ctx 32 needs 0.00 GiB of KV cache (6144 bytes), only 0.00 GiB of memory available"),
              "%s", err.msg);
        CHECK(numcheck_ctx_fits(&m, 32, 0, 100, &err) != 0 &&
              strstr(err.msg, "the model's context of 32 tokens (no --ctx given) needs"), "%s", err.msg);
        CHECK(numcheck_mem_available() > 0, "MemAvailable readable");
        model_free(&m);
    }
}

/* ---- LagKV: a constant channel ------------------------------------------------------- */

/* The score of ../shared/spec/methods.md §2 for P = Z[0..L) against Z[L..2L),
 * in double (as the spec reads). */
static void lag_ref(const float *Z, int L, int d, double *score) {
    double sig[16], mx_s = -INFINITY, sum = 0;
    for (int t = 0; t < L; t++) {
        double zh[16], mean = 0, var = 0;
        for (int c = 0; c < d; c++) {
            double mn = INFINITY, mx = -INFINITY;
            for (int u = L; u < 2 * L; u++) {
                mn = fmin(mn, Z[u * d + c]);
                mx = fmax(mx, Z[u * d + c]);
            }
            zh[c] = ((double)Z[t * d + c] - mn) / (mx - mn + 1e-6);
            mean += zh[c] / d;
        }
        for (int c = 0; c < d; c++) var += (zh[c] - mean) * (zh[c] - mean) / (d - 1);
        sig[t] = sqrt(var);
        mx_s = fmax(mx_s, sig[t]);
    }
    for (int t = 0; t < L; t++) sum += exp(sig[t] - mx_s);
    for (int t = 0; t < L; t++) score[t] += exp(sig[t] - mx_s) / sum;
}

/* Keep 2 of P0's 4 tokens (lag 4, ratio 0.5, no sinks); 12 tokens = P0, P1, P2. */
static int lag_kept_p0(float big, int *kept) {
    enum { L = 4, D = 8, N = 12 };
    PolicyOpts o;
    policy_defaults(&o);
    Err err;
    if (policy_parse_spec(&o, "lagkv:sink=0,lag=4,ratio=0.5", &err) || policy_resolve(&o, &err)) return -1;
    Config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_layers = 1; cfg.n_heads = 1; cfg.n_kv_heads = 1; cfg.head_dim = D;
    Policy *p = policy_create(&o, &cfg, 64, &err);
    KVCache c;
    if (!p || kvcache_init(&c, 1, 1, D, 64, &err)) return -1;
    policy_before_forward(p, &c, N, &err);
    float keys[N * D], values[N * D];
    for (int t = 0; t < N; t++)
        for (int i = 0; i < D; i++) {
            float v = (float)((t * 7 + i * 3) % 11) / 4.0f;   /* irregular */
            if (i == 0) v = 1.0f;                             /* channel 0 constant ... */
            if (i == 0 && t == 2) v = big;                    /* ... except one token of P0 */
            if (i == 1) v = -3.0f;                            /* channel 1 constant everywhere */
            keys[t * D + i] = v;
            values[t * D + i] = v * 0.5f;
        }
    if (kvcache_append(&c, 0, keys, values, N, &err) != 0) return -1;
    c.next_pos = N;
    const KVHead *h = kvcache_head(&c, 0, 0);
    double ref[L] = { 0 };
    lag_ref(h->keys, L, D, ref);
    lag_ref(h->values, L, D, ref);
    int rc = policy_after_forward(p, &c, 0, &err);
    for (int j = 0; j < 2 && rc == 0; j++) kept[j] = h->pos[j];
    /* the reference's top 2 of P0 (ties: the lower position, as the policy), in position order */
    int a = 0, b = -1;
    for (int t = 1; t < L; t++) if (ref[t] > ref[a]) a = t;
    for (int t = 0; t < L; t++) if (t != a && (b < 0 || ref[t] > ref[b])) b = t;
    kept[2] = a < b ? a : b;
    kept[3] = a < b ? b : a;
    for (int t = 0; t < L; t++) if (!isfinite(ref[t])) rc = -2;
    kvcache_free(&c);
    policy_free(p);
    return rc;
}

static void test_lagkv_constant_channel(void) {
    CASE("lagkv: a channel constant in the reference partition gives finite scores (ε) and the reference's choice") {
        int kept[4];
        CHECK(lag_kept_p0(9.0f, kept) == 0, "run");
        CHECK(kept[0] == kept[2] && kept[1] == kept[3], "kept %d,%d, reference %d,%d", kept[0], kept[1], kept[2], kept[3]);
        CHECK(kept[0] == 2 || kept[1] == 2, "the token off the constant channel is kept: %d,%d", kept[0], kept[1]);
    }
    CASE("lagkv: the same with a 1e34 excursion (x/ε overflows float, not double)") {
        int kept[4];
        CHECK(lag_kept_p0(1e34f, kept) == 0, "run");
        CHECK(kept[0] == kept[2] && kept[1] == kept[3], "kept %d,%d, reference %d,%d", kept[0], kept[1], kept[2], kept[3]);
    }
}

int main(void) {
    ops_set_threads(1);
    make_tiny();
    test_guard();
    test_limits();
    test_lagkv_constant_channel();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    return check_summary();
}
