/* test_kvcache_bf16.c — the bf16 KV cache (engine/kvcache.h, --kv-dtype bf16):
 *   - storage: each key and value rounded once to bf16 (nearest even) when
 *     appended, read back widened exactly (kvcache_key_rows/value_rows), half
 *     the bytes of an fp32 cache per slot; keep, evict, growth and shrinking
 *     move the bf16 rows with their positions
 *   - side-column fills see what the cache holds (the rounded rows)
 *   - the dtype changes only on an empty cache
 *   - the forward pass: positions `true` round a key after its RoPE (the
 *     cached key is the bf16 rounding of the fp32 cache's key), `shifted`
 *     before it (the cached key is the rounding of the pre-RoPE key)
 *   - every policy runs on a bf16 cache (stories260k: prefill, then decode
 *     steps): it evicts, logits stay finite and close to the same policy on
 *     an fp32 cache where the policy keeps everything. */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "engine/forward.h"
#include "policy/policy.h"
#include "policy_line.h"

static float round_bf16(float x) { return bf16_to_f32(f32_to_bf16(x)); }

static float sum_of_key(const float *key, const float *value, int head_dim) {
    (void)value;
    float s = 0;
    for (int i = 0; i < head_dim; i++) s += key[i];
    return s;
}

static void test_storage(void) {
    enum { HD = 4, KV = 2 };
    Err err;
    CASE("bf16 cache: rows rounded once, read back widened, half the bytes") {
        KVCache c, f;
        CHECK(kvcache_init(&c, 1, KV, HD, 64, &err) == 0 && kvcache_set_dtype(&c, DTYPE_BF16, &err) == 0, "%s", err.msg);
        CHECK(kvcache_init(&f, 1, KV, HD, 64, &err) == 0, "%s", err.msg);
        float keys[3 * KV * HD], values[3 * KV * HD];
        for (int i = 0; i < 3 * KV * HD; i++) { keys[i] = 1.0f + (float)i / 3.0f + 1e-3f; values[i] = -0.1f * (float)i - 1.0f / 7.0f; }
        CHECK(kvcache_append(&c, 0, keys, values, 3, &err) == 0 && kvcache_append(&f, 0, keys, values, 3, &err) == 0, "append");
        const KVHead *h = kvcache_head(&c, 0, 1);
        CHECK(h->keys == NULL && h->keys_bf16 != NULL && h->len == 3, "bf16 storage in use");
        float scratch[3 * HD];
        const float *k = kvcache_key_rows(&c, h, 0, 3, scratch);
        int bad = 0;
        for (int t = 0; t < 3; t++)
            for (int i = 0; i < HD; i++) {
                float want = keys[(t * KV + 1) * HD + i];
                if (k[t * HD + i] != round_bf16(want) || k[t * HD + i] == want) bad++;
            }
        CHECK(!bad, "%d key elements are not the bf16 rounding of the appended key", bad);
        const float *v = kvcache_value_rows(&c, h, 1, 1, scratch);
        CHECK(v[2] == round_bf16(values[(1 * KV + 1) * HD + 2]), "value %g", v[2]);
        CHECK(kvcache_slot_bytes(&c) == 2 * HD * 2 + sizeof(int) && kvcache_slot_bytes(&f) == 2 * HD * 4 + sizeof(int),
              "slot bytes %zu / %zu", kvcache_slot_bytes(&c), kvcache_slot_bytes(&f));
        CHECK(kvcache_bytes_used(&c) == 3 * KV * kvcache_slot_bytes(&c), "bytes used %zu", kvcache_bytes_used(&c));
        const float *fk = kvcache_key_rows(&f, kvcache_head(&f, 0, 1), 0, 1, NULL);
        CHECK(fk == kvcache_head(&f, 0, 1)->keys, "fp32 rows are returned in place");
        CHECK(kvcache_set_dtype(&c, DTYPE_F32, &err) == -1 && strstr(err.msg, "empty"), "dtype changed on a full cache");
        CHECK(kvcache_set_dtype(&f, DTYPE_F16, &err) == -1, "f16 accepted");
        kvcache_free(&c);
        kvcache_free(&f);
    }
    CASE("bf16 cache: keep / evict / growth and shrinking move the rows with their positions") {
        KVCache c;
        kvcache_init(&c, 1, 1, HD, 4096, &err);
        kvcache_set_dtype(&c, DTYPE_BF16, &err);
        float key[HD], value[HD];
        for (int t = 0; t < 1000; t++) {     /* 1000 slots: the arrays double several times */
            for (int i = 0; i < HD; i++) { key[i] = (float)(t * 4 + i); value[i] = (float)(-t); }
            c.next_pos = t;
            kvcache_append(&c, 0, key, value, 1, &err);
        }
        int keep[10];
        for (int j = 0; j < 10; j++) keep[j] = 100 * j + 7;
        kvcache_keep(&c, 0, 0, keep, 10);   /* 10 of 1000: the head shrinks */
        const KVHead *h = kvcache_head(&c, 0, 0);
        int evict[2] = { 1, 5 };
        kvcache_evict(&c, 0, 0, evict, 2);
        float rows[8 * HD], vals[8 * HD];
        const float *k = kvcache_key_rows(&c, h, 0, 8, rows), *v = kvcache_value_rows(&c, h, 0, 8, vals);
        int bad = 0, expect[8] = { 7, 207, 307, 407, 607, 707, 807, 907 };
        for (int j = 0; j < 8; j++) {
            if (h->pos[j] != expect[j] || v[j * HD] != round_bf16((float)-expect[j])) bad++;
            for (int i = 0; i < HD; i++) if (k[j * HD + i] != round_bf16((float)(expect[j] * 4 + i))) bad++;
        }
        CHECK(h->len == 8 && h->cap < 1000, "len %d cap %d", h->len, h->cap);
        CHECK(!bad, "%d wrong elements or positions after keep/evict", bad);
        kvcache_free(&c);
    }
    CASE("bf16 cache: a side-column fill sees the rounded key") {
        KVCache c;
        kvcache_init(&c, 1, 1, HD, 64, &err);
        kvcache_set_dtype(&c, DTYPE_BF16, &err);
        KVColumn col = { "sum", 1, sum_of_key };
        CHECK(kvcache_set_columns(&c, &col, 1, &err) == 0, "%s", err.msg);
        float key[HD] = { 1.00390625f + 1e-6f, 3.3f, -0.7f, 1e-3f }, value[HD] = { 0 };
        kvcache_append(&c, 0, key, value, 1, &err);
        float want = 0;
        for (int i = 0; i < HD; i++) want += round_bf16(key[i]);
        float got = kvcache_column(&c, 0, 0, 0, 0)[0];
        CHECK(got == want, "fill saw %.9g, the rounded key sums to %.9g", got, want);
        kvcache_free(&c);
    }
}

/* ---- the forward pass over a bf16 cache ---------------------------------------- */

static void fail(const char *msg) { fprintf(stderr, "%s\n", msg); exit(1); }

static Model model;
static int *tokens;
enum { N_PROMPT = 96, N_DECODE = 40, CTX = N_PROMPT + N_DECODE + 8 };

static void run(KVCache *c, DType kv_dtype, int shifted, Policy *p, float *last_logits) {
    Err err;
    if (forward_cache_init(&model, c, CTX, &err) != 0 || kvcache_set_dtype(c, kv_dtype, &err) != 0 ||
        kvcache_set_shifted(c, shifted, &err) != 0)
        fail(err.msg);
    Forward *f = forward_create(&model, 64);
    for (int s = 0; s <= N_DECODE; s++) {
        const int *tok = s == 0 ? tokens : tokens + N_PROMPT + s - 1;
        if (policy_forward(p, f, c, tok, s == 0 ? N_PROMPT : 1, NULL, &err) != 0) fail(err.msg);
    }
    memcpy(last_logits, forward_last_logits(f), (size_t)model.cfg.vocab_size * sizeof(float));
    forward_free(f);
}

static void test_forward_rounding(void) {
    CASE("forward, positions true: the cached key is the bf16 rounding of the fp32 cache's (RoPE first)") {
        int V = model.cfg.vocab_size, hd = model.cfg.head_dim;
        float *la = xmalloc((size_t)V * sizeof(float)), *lb = xmalloc((size_t)V * sizeof(float));
        KVCache a, b;
        run(&a, DTYPE_F32, 0, NULL, la);
        run(&b, DTYPE_BF16, 0, NULL, lb);
        /* layer 0 sees the same input in both runs: its keys must be exactly the rounded fp32 ones */
        const KVHead *ha = kvcache_head(&a, 0, 1), *hb = kvcache_head(&b, 0, 1);
        float *row = xmalloc((size_t)hd * sizeof(float));
        int bad = 0;
        for (int t = 0; t < ha->len; t++) {
            const float *k = kvcache_key_rows(&b, hb, t, 1, row);
            for (int i = 0; i < hd; i++) bad += k[i] != round_bf16(ha->keys[(size_t)t * hd + i]);
            const float *v = kvcache_value_rows(&b, hb, t, 1, row);
            for (int i = 0; i < hd; i++) bad += v[i] != round_bf16(ha->values[(size_t)t * hd + i]);
        }
        double d = 0;
        for (int i = 0; i < V; i++) d = fmax(d, fabs((double)la[i] - lb[i]));
        printf("      layer-0 rows differing from the rounded fp32 rows: %d; last logits max |d| %.3g\n", bad, d);
        CHECK(bad == 0, "%d elements of layer 0's cache are not the rounded fp32 ones", bad);
        CHECK(d > 0 && d <= 0.1, "logits differ from the fp32 cache's by %.3g", d);
        kvcache_free(&a);
        kvcache_free(&b);
        free(row); free(la); free(lb);
    }
    CASE("forward, positions shifted: the cached key is the rounding of the pre-RoPE key") {
        int V = model.cfg.vocab_size, hd = model.cfg.head_dim;
        float *la = xmalloc((size_t)V * sizeof(float)), *lb = xmalloc((size_t)V * sizeof(float));
        KVCache a, b;
        run(&a, DTYPE_F32, 1, NULL, la);
        run(&b, DTYPE_BF16, 1, NULL, lb);
        const KVHead *ha = kvcache_head(&a, 0, 0), *hb = kvcache_head(&b, 0, 0);
        float *row = xmalloc((size_t)hd * sizeof(float));
        int bad = 0;
        for (int t = 0; t < ha->len; t++) {
            const float *k = kvcache_key_rows(&b, hb, t, 1, row);
            for (int i = 0; i < hd; i++) bad += k[i] != round_bf16(ha->keys[(size_t)t * hd + i]);
        }
        double d = 0;
        for (int i = 0; i < V; i++) d = fmax(d, fabs((double)la[i] - lb[i]));
        CHECK(bad == 0, "%d elements of layer 0's keys are not the rounded pre-RoPE keys", bad);
        CHECK(d <= 0.1, "logits differ from the fp32 cache's by %.3g", d);
        kvcache_free(&a);
        kvcache_free(&b);
        free(row); free(la); free(lb);
    }
}

static Policy *model_policy(const char *line) { return policy_from_line(line, &model.cfg, CTX); }

/* Every policy on a bf16 cache: evicts (the budget holds), finite logits;
 * with the budget above the length it changes nothing. */
static void test_policies(void) {
    static const char *lines[] = {
        "--policy l2 --budget 48",
        "--policy l2-high --compression-ratio 0.5",
        "--policy random:seed=3 --keep-ratio 0.3",
        "--policy window --budget 40",
        "--policy window --budget 40 --positions shifted",
        "--policy h2o --budget 48",
        "--policy snapkv:window=8 --budget 24",
        "--policy tova --budget 40",
        "--policy pyramid:window=4 --budget 24",
        "--policy lagkv:sink=4,lag=16,ratio=0.25 --schedule step",
        "--policy zigzag:window=8 --budget 24",
    };
    int V = model.cfg.vocab_size;
    float *ref = xmalloc((size_t)V * sizeof(float)), *got = xmalloc((size_t)V * sizeof(float));
    KVCache c;
    run(&c, DTYPE_BF16, 0, NULL, ref);
    kvcache_free(&c);
    for (size_t i = 0; i < sizeof lines / sizeof lines[0]; i++) {
        char name[256];
        snprintf(name, sizeof name, "bf16 cache: %s evicts, logits finite", lines[i]);
        CASE(name) {
            Policy *p = model_policy(lines[i]);
            run(&c, DTYPE_BF16, strstr(lines[i], "shifted") != NULL, p, got);
            int finite = 1;
            for (int v = 0; v < V; v++) finite &= isfinite(got[v]) != 0;
            long slots = kvcache_slots_used(&c), full = (long)c.next_pos * c.n_layers * c.n_kv_heads;
            CHECK(policy_timing(p).evicted > 0 && slots < full, "nothing evicted (%ld of %ld slots)", slots, full);
            CHECK(finite, "non-finite logits");
            kvcache_free(&c);
            policy_free(p);
        }
    }
    CASE("bf16 cache: l2 with a budget above the length == no policy, bit for bit") {
        Policy *p = model_policy("--policy l2 --budget 4096");
        run(&c, DTYPE_BF16, 0, p, got);
        CHECK(!memcmp(got, ref, (size_t)V * sizeof(float)), "logits differ");
        kvcache_free(&c);
        policy_free(p);
    }
    free(ref); free(got);
}

int main(void) {
    test_storage();
    char path[4096];
    Err err;
    if (model_load(&model, shared_path(path, sizeof path, "models/stories260k/stories260K.bin"), DTYPE_F32, &err) != 0)
        fail(err.msg);
    tokens = xmalloc((N_PROMPT + N_DECODE) * sizeof(int));
    uint64_t seed = 99;
    for (int i = 0; i < N_PROMPT + N_DECODE; i++) {
        seed = seed * 6364136223846793005ULL + 1442695040888963407ULL;
        tokens[i] = i == 0 ? model.cfg.bos_id : 3 + (int)((seed >> 33) % (uint64_t)(model.cfg.vocab_size - 3));
    }
    test_forward_rounding();
    test_policies();
    free(tokens);
    model_free(&model);
    return check_summary();
}
