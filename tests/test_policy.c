/* test_policy.c — every policy on small hand-made caches with known answers
 * (which slots are kept, in which order), and the framework's pieces: option
 * parsing, budgets and rounding, selection ties, per-layer budget sums, GQA,
 * skipped layers, protected tokens. No model: a cache is filled by hand the way
 * forward() would (policy_before_forward, append, policy_after_forward). */
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "policy/policy.h"
#include "policy_line.h"

/* ---- a hand-made cache ------------------------------------------------------ */

static Config shape(int layers, int heads, int kv_heads, int head_dim) {
    Config c;
    memset(&c, 0, sizeof c);
    c.n_layers = layers;
    c.n_heads = heads;
    c.n_kv_heads = kv_heads;
    c.head_dim = head_dim;
    return c;
}

/* Options from a command line ("--policy l2 --budget 4 ..."), resolved. */
static PolicyOpts opts(const char *line) {
    PolicyOpts o;
    policy_opts_from_line(line, &o);
    policy_cli_finish(&o);
    return o;
}

static Policy *make(const char *line, const Config *cfg, int max_tokens) {
    return policy_from_line(line, cfg, max_tokens);
}

/* key(layer, g, t) fills one key row; the value row gets key * 0.5 + t. */
typedef void (*KeyFn)(int layer, int g, int t, float *key, int hd, void *ctx);

/* Append n tokens to every head (positions next_pos..), as forward() does:
 * the keys and values of a block, [n, KV, head_dim], layer by layer. */
static void append(Policy *p, KVCache *c, int n, KeyFn fn, void *ctx) {
    Err err;
    if (policy_before_forward(p, c, n, &err) != 0) { fprintf(stderr, "%s\n", err.msg); exit(1); }
    int KV = c->n_kv_heads, hd = c->head_dim;
    float *keys = xmalloc((size_t)n * KV * hd * sizeof(float)), *values = xmalloc((size_t)n * KV * hd * sizeof(float));
    for (int l = 0; l < c->n_layers; l++) {
        for (int t = 0; t < n; t++)
            for (int g = 0; g < KV; g++) {
                float *k = keys + ((size_t)t * KV + g) * hd, *v = values + ((size_t)t * KV + g) * hd;
                fn(l, g, c->next_pos + t, k, hd, ctx);
                for (int i = 0; i < hd; i++) v[i] = k[i] * 0.5f + (float)(c->next_pos + t);
            }
        if (kvcache_append(c, l, keys, values, n, &err) != 0) { fprintf(stderr, "%s\n", err.msg); exit(1); }
    }
    c->next_pos += n;
    free(keys);
    free(values);
}

static int after(Policy *p, KVCache *c, int start) {
    Err err;
    int rc = policy_after_forward(p, c, start, &err);
    if (rc != 0) fprintf(stderr, "%s\n", err.msg);
    return rc;
}

/* A key of norm norms[t] (first channel), the same for every layer and head. */
static void key_from_norms(int layer, int g, int t, float *key, int hd, void *ctx) {
    (void)layer; (void)g;
    const float *norms = ctx;
    memset(key, 0, (size_t)hd * sizeof(float));
    key[0] = norms[t];
}

/* Positions of the slots of (layer, g) as "a,b,c". */
static const char *kept(const KVCache *c, int layer, int g) {
    static char buf[1024];
    const KVHead *h = kvcache_head(c, layer, g);
    size_t n = 0;
    buf[0] = '\0';
    for (int j = 0; j < h->len && n < sizeof buf - 16; j++)
        n += (size_t)snprintf(buf + n, sizeof buf - n, j ? ",%d" : "%d", h->pos[j]);
    return buf;
}

#define CHECK_KEPT(c, l, g, want) do { \
    const char *got_ = kept(c, l, g); \
    CHECK(!strcmp(got_, want), "layer %d head %d kept [%s], want [%s]", l, g, got_, want); \
} while (0)

/* ---- framework ------------------------------------------------------------------ */

static void test_parsing(void) {
    CASE("parse: name, parameters, defaults filled, JSON has every knob") {
        PolicyOpts o = opts("--policy lagkv:sink=16,lag=128,ratio=0.25 --skip-layers 0,1");
        CHECK(!strcmp(o.name, "lagkv"), "name %s", o.name);
        CHECK(o.n_params == 4, "%d params", o.n_params);
        char *js = policy_json(&o);
        const char *want[] = { "\"policy\":\"lagkv\"", "\"sink\":16", "\"lag\":128", "\"ratio\":0.25", "\"select\":\"partition\"", "\"budget\":null",
                               "\"rounding\":\"floor\"", "\"schedule\":\"step\"", "\"skip_layers\":[0,1]",
                               "\"protect_sinks\":0", "\"protect_recent\":0", "\"positions\":\"true\"",
                               "\"granularity\":\"head\"" };
        for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) CHECK(strstr(js, want[i]) != NULL, "%s lacks %s", js, want[i]);
        free(js);
    }
    CASE("help: every evicting policy names its paper; no text cites the spec, which is not in the repository") {
        for (int i = 0; i < policy_count(); i++) {
            const PolicyDef *d = policy_at(i);
            CHECK(d->paper || (d->flags & POLICY_NEVER_EVICTS), "%s: no paper", d->name);
            CHECK(!d->paper || (!strstr(d->paper, "\xc2\xa7") && !strstr(d->paper, "methods.md")),
                  "%s cites the spec: %s", d->name, d->paper);
        }
        char *text = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&text, &size);
        fputs(POLICY_OPTS_HELP, f);
        policy_print_help(f);
        fclose(f);
        CHECK(strstr(text, "arXiv 2406.11430") != NULL, "the l2 paper is not named");
        CHECK(!strstr(text, "\xc2\xa7") && !strstr(text, "methods.md"), "the help cites the spec:\n%s", text);
        free(text);
        PolicyOpts o = opts("--policy l2 --compression-ratio 0.5");
        char *js = policy_json(&o);
        CHECK(!strstr(js, "\xc2\xa7") && !strstr(js, "spec"), "%s", js);
        free(js);
    }
    CASE("parse: policy defaults (l2 skips 0,1; window 4 sinks; tova layer; snapkv prefill+window)") {
        PolicyOpts o = opts("--policy l2 --compression-ratio 0.5");
        CHECK(o.n_skip == 2 && o.skip[0] == 0 && o.skip[1] == 1, "l2 skip %d", o.n_skip);
        o = opts("--policy l2 --compression-ratio 0.5 --skip-layers none");
        CHECK(o.n_skip == 0, "l2 skip none: %d", o.n_skip);
        o = opts("--policy window --budget 8");
        CHECK(o.sinks == 4 && o.n_skip == 0, "window sinks %d", o.sinks);
        o = opts("--policy tova --budget 8");
        CHECK(o.granularity == GRAN_LAYER, "tova granularity %d", o.granularity);
        o = opts("--policy snapkv:window=16 --budget 64");
        CHECK(o.schedule == SCHED_PREFILL && o.recent == 16, "snapkv schedule %d recent %d", o.schedule, o.recent);
        o = opts("--policy l2 --keep-ratio 0.5 --schedule threshold:100");
        CHECK(o.rounding == ROUND_CEIL && o.schedule_n == 100, "threshold rounding %d", o.rounding);
        o = opts("--policy lagkv --compression-ratio 0.75");
        CHECK(!strcmp(o.param_val[2], "0.25"), "lagkv ratio from compression ratio: %s", o.param_val[2]);
    }
    CASE("parse: errors name the option and the value") {
        PolicyOpts o;
        Err err;
        policy_defaults(&o);
        CHECK(policy_parse_spec(&o, "nope", &err) != 0 && strstr(err.msg, "'nope'"), "%s", err.msg);
        CHECK(policy_parse_spec(&o, "lagkv:lag=abc", &err) != 0 && strstr(err.msg, "lag='abc'"), "%s", err.msg);
        CHECK(policy_parse_spec(&o, "lagkv:bogus=1", &err) != 0 && strstr(err.msg, "'bogus'"), "%s", err.msg);
        CHECK(policy_parse_spec(&o, "snapkv:pool=median", &err) != 0 && strstr(err.msg, "pool='median'"), "%s", err.msg);
        CHECK(policy_parse_spec(&o, "lagkv:ratio=2", &err) != 0 && strstr(err.msg, "ratio=2"), "%s", err.msg);
        policy_defaults(&o);
        policy_parse_spec(&o, "l2", &err);
        CHECK(policy_resolve(&o, &err) != 0 && strstr(err.msg, "needs a budget"), "%s", err.msg);
        policy_defaults(&o);
        policy_parse_spec(&o, "lagkv", &err);
        o.budget_kind = BUDGET_TOKENS; o.budget = 10;
        CHECK(policy_resolve(&o, &err) != 0 && strstr(err.msg, "--budget"), "%s", err.msg);
        Config cfg = shape(2, 2, 2, 4);
        o = opts("--policy l2 --budget 4 --skip-layers 5");
        CHECK(policy_create(&o, &cfg, 16, &err) == NULL && strstr(err.msg, "--skip-layers"), "%s", err.msg);
    }
    CASE("only h2o, snapkv, tova, pyramid, zigzag install the attention observer") {
        Config cfg = shape(2, 2, 2, 4);
        const char *lines[] = { "--policy full", "--policy l2 --budget 4", "--policy l2-high --budget 4",
                                "--policy random --budget 4", "--policy window --budget 4", "--policy lagkv",
                                "--policy h2o --budget 4", "--policy snapkv --budget 4", "--policy tova --budget 4",
                                "--policy pyramid --budget 4", "--policy zigzag:score=l2 --budget 4" };
        for (int i = 0; i < 11; i++) {
            Policy *p = make(lines[i], &cfg, 16);
            CHECK(policy_needs_attention(p) == (i >= 6), "%s: needs attention %d", lines[i], policy_needs_attention(p));
            policy_free(p);
        }
    }
    CASE("budget: ratios, rounding, never below 1") {
        PolicyOpts o = opts("--policy l2 --compression-ratio 0.5");
        CHECK(policy_budget_of(&o, 7) == 3, "floor(3.5) = %d", policy_budget_of(&o, 7));
        o = opts("--policy l2 --compression-ratio 0.5 --rounding ceil");
        CHECK(policy_budget_of(&o, 7) == 4, "ceil(3.5) = %d", policy_budget_of(&o, 7));
        o = opts("--policy l2 --keep-ratio 0.7 --rounding ceil");
        CHECK(policy_budget_of(&o, 10) == 7, "ceil(0.7*10) = %d (not 8)", policy_budget_of(&o, 10));
        o = opts("--policy l2 --compression-ratio 0.3");
        CHECK(policy_budget_of(&o, 10) == 7, "floor(0.7*10) = %d", policy_budget_of(&o, 10));
        o = opts("--policy l2 --compression-ratio 0.99");
        CHECK(policy_budget_of(&o, 10) == 1, "never below 1: %d", policy_budget_of(&o, 10));
        o = opts("--policy l2 --budget 5");
        CHECK(policy_budget_of(&o, 1000) == 5, "absolute: %d", policy_budget_of(&o, 1000));
    }
}

/* select_top against a full sort, on random scores with many ties. */
static int cmp_rank(const void *a, const void *b, const float *s, const int *pos) {
    int x = *(const int *)a, y = *(const int *)b;
    if (s[x] != s[y]) return s[x] > s[y] ? -1 : 1;
    return pos[x] - pos[y];
}
static const float *g_s;
static const int *g_pos;
static int cmp_rank_q(const void *a, const void *b) { return cmp_rank(a, b, g_s, g_pos); }

static void test_selection(void) {
    CASE("select_top = the k best of a full sort (ties: lower position), every k") {
        Config cfg = shape(1, 1, 1, 2);
        Policy *p = make("--policy l2 --budget 1 --skip-layers none", &cfg, 512);
        uint64_t x = 42;
        int bad = 0;
        for (int trial = 0; trial < 200; trial++) {
            int n = 1 + trial % 97, pos[128], idx[128], keep[128], want[128];
            float s[128];
            for (int j = 0; j < n; j++) {
                x = x * 6364136223846793005ULL + 1442695040888963407ULL;
                s[j] = (float)((x >> 33) % 7);      /* many ties */
                pos[j] = j * 3 + 1;
                idx[j] = j;
            }
            int k = (int)(x >> 20) % (n + 1);
            g_s = s; g_pos = pos;
            qsort(idx, (size_t)n, sizeof(int), cmp_rank_q);
            int m = 0;
            for (int j = 0; j < n; j++) {
                int in = 0;
                for (int i = 0; i < k; i++) in |= idx[i] == j;
                if (in || k == 0) want[m++] = j;
            }
            if (k == 0) m = 0;
            int got = policy_select_top(p, pos, n, s, k, 0, 0, keep);
            if (got != m || memcmp(keep, want, (size_t)m * sizeof(int))) bad++;
        }
        CHECK(bad == 0, "%d of 200 random selections differ from the sort", bad);
        policy_free(p);
    }
    CASE("distribute: exact total, bounds, clamped surplus goes elsewhere") {
        double x[4] = { 10.6, 0.2, 50.0, 3.2 };
        int hi[4] = { 100, 100, 20, 100 }, out[4];
        unsigned char skip[4] = { 0, 0, 0, 0 };
        policy_distribute(x, skip, 4, 64, 1, hi, out);
        CHECK(out[0] + out[1] + out[2] + out[3] == 64, "sum %d", out[0] + out[1] + out[2] + out[3]);
        CHECK(out[2] == 20 && out[1] >= 1, "clamped %d %d", out[2], out[1]);
        skip[1] = 1;
        policy_distribute(x, skip, 4, 30, 1, hi, out);
        CHECK(out[1] == INT_MAX && out[0] + out[2] + out[3] == 30, "skip: %d %d %d %d", out[0], out[1], out[2], out[3]);
        int small[4] = { 3, 3, 3, 3 };
        skip[1] = 0;
        policy_distribute(x, skip, 4, 64, 1, small, out);
        CHECK(out[0] + out[1] + out[2] + out[3] == 12, "total above the lengths: sum %d", out[0] + out[1] + out[2] + out[3]);
    }
}

static void test_kvcache(void) {
    CASE("kvcache_evict == kvcache_keep of the complement (keys, values, positions)") {
        static const float norms[16] = { 3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3 };
        Config cfg = shape(1, 1, 1, 4);
        Policy *p = make("--policy full", &cfg, 64);
        KVCache a, b;
        Err err;
        kvcache_init(&a, 1, 1, 4, 64, &err);
        kvcache_init(&b, 1, 1, 4, 64, &err);
        append(p, &a, 16, key_from_norms, (void *)norms);
        append(p, &b, 16, key_from_norms, (void *)norms);
        const int ev[4] = { 0, 3, 4, 15 }, keep[12] = { 1, 2, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14 };
        kvcache_evict(&a, 0, 0, ev, 4);
        kvcache_keep(&b, 0, 0, keep, 12);
        const KVHead *ha = kvcache_head(&a, 0, 0), *hb = kvcache_head(&b, 0, 0);
        CHECK(ha->len == 12 && hb->len == 12, "lengths %d %d", ha->len, hb->len);
        CHECK(!memcmp(ha->keys, hb->keys, 12 * 4 * sizeof(float)) && !memcmp(ha->values, hb->values, 12 * 4 * sizeof(float)) &&
              !memcmp(ha->pos, hb->pos, 12 * sizeof(int)), "contents differ");
        CHECK_KEPT(&a, 0, 0, "1,2,5,6,7,8,9,10,11,12,13,14");
        CHECK(ha->values[5 * 4 + 2] == 8.0f, "value of slot 5 (pos 8), channel 2: %g", ha->values[5 * 4 + 2]);
        kvcache_free(&a);
        kvcache_free(&b);
        policy_free(p);
    }
    CASE("kvcache grows past 2 MiB per array (huge-page memory) and shrinks, keeping every slot") {
        /* head_dim 128: 4096 slots are 2 MiB, where kvcache.c switches to big_alloc */
        enum { HD = 128, N = 5000 };
        KVCache c;
        Err err;
        CHECK(kvcache_init(&c, 1, 2, HD, 8192, &err) == 0, "%s", err.msg);
        float *keys = xmalloc((size_t)1000 * 2 * HD * sizeof(float)), *values = xmalloc((size_t)1000 * 2 * HD * sizeof(float));
        for (int t0 = 0; t0 < N; t0 += 1000) {      /* grows 64 -> 8192 in steps */
            for (int t = t0; t < t0 + 1000; t++)
                for (int g = 0; g < 2; g++)
                    for (int i = 0; i < HD; i++) {
                        keys[((size_t)(t - t0) * 2 + g) * HD + i] = (float)(t * 7 + i + g);
                        values[((size_t)(t - t0) * 2 + g) * HD + i] = (float)(t * 3 - i - g);
                    }
            CHECK(kvcache_append(&c, 0, keys, values, 1000, &err) == 0, "%s", err.msg);
            c.next_pos += 1000;
        }
        free(keys);
        free(values);
        const KVHead *h1 = kvcache_head(&c, 0, 1);
        CHECK(h1->cap == 8192 && h1->len == N, "cap %d len %d", h1->cap, h1->len);
        int bad = 0;
        for (int t = 0; t < N && !bad; t++)
            for (int i = 0; i < HD; i++)
                if (h1->keys[(size_t)t * HD + i] != (float)(t * 7 + i + 1) || h1->values[(size_t)t * HD + i] != (float)(t * 3 - i - 1)) bad = 1;
        CHECK(!bad, "contents changed while growing");
        int keep[100];
        for (int i = 0; i < 100; i++) keep[i] = i * 50;   /* keep 100 of 5000: shrinks */
        kvcache_keep(&c, 0, 1, keep, 100);
        CHECK(h1->cap < 8192 && h1->cap >= 100, "cap after shrinking %d", h1->cap);
        bad = 0;
        for (int j = 0; j < 100 && !bad; j++)
            for (int i = 0; i < HD; i++)
                if (h1->keys[(size_t)j * HD + i] != (float)(keep[j] * 7 + i + 1) || h1->pos[j] != keep[j]) bad = 1;
        CHECK(!bad, "kept slots changed while shrinking");
        kvcache_free(&c);
    }
}

/* ---- score policies ------------------------------------------------------------ */

static void test_l2(void) {
    static const float norms[8] = { 5, 1, 3, 1, 7, 2, 0.5f, 4 };
    Config cfg = shape(1, 1, 1, 4);
    KVCache c;
    Err err;
    CASE("l2: keep the 4 lowest norms, in slot order") {
        Policy *p = make("--policy l2 --budget 4 --skip-layers none --schedule prefill", &cfg, 64);
        kvcache_init(&c, 1, 1, 4, 64, &err);
        append(p, &c, 8, key_from_norms, (void *)norms);
        after(p, &c, 0);
        CHECK_KEPT(&c, 0, 0, "1,3,5,6");
        /* values follow their keys */
        const KVHead *h = kvcache_head(&c, 0, 0);
        CHECK(h->values[2 * 4 + 1] == 5.0f, "value of slot 2 (pos 5): %g", h->values[2 * 4 + 1]);
        CHECK(kvcache_bytes_used(&c) == 4 * (2 * 4 * sizeof(float) + sizeof(int)), "bytes %zu", kvcache_bytes_used(&c));
        kvcache_free(&c);
        policy_free(p);
    }
    CASE("l2-high: keep the 4 highest norms") {
        Policy *p = make("--policy l2-high --budget 4 --skip-layers none", &cfg, 64);
        kvcache_init(&c, 1, 1, 4, 64, &err);
        append(p, &c, 8, key_from_norms, (void *)norms);
        after(p, &c, 0);
        CHECK_KEPT(&c, 0, 0, "0,2,4,7");
        kvcache_free(&c);
        policy_free(p);
    }
    CASE("l2 ties: equal norms keep the lower positions") {
        static const float flat[6] = { 1, 1, 1, 1, 2, 2 };
        Policy *p = make("--policy l2 --budget 3 --skip-layers none", &cfg, 64);
        kvcache_init(&c, 1, 1, 4, 64, &err);
        append(p, &c, 6, key_from_norms, (void *)flat);
        after(p, &c, 0);
        CHECK_KEPT(&c, 0, 0, "0,1,2");
        kvcache_free(&c);
        policy_free(p);
    }
    CASE("l2: budget >= length keeps everything; compression 0 too") {
        Policy *p = make("--policy l2 --budget 8 --skip-layers none", &cfg, 64);
        kvcache_init(&c, 1, 1, 4, 64, &err);
        append(p, &c, 8, key_from_norms, (void *)norms);
        after(p, &c, 0);
        CHECK_KEPT(&c, 0, 0, "0,1,2,3,4,5,6,7");
        policy_free(p);
        kvcache_reset(&c);
        p = make("--policy l2 --compression-ratio 0 --skip-layers none", &cfg, 64);
        append(p, &c, 8, key_from_norms, (void *)norms);
        after(p, &c, 0);
        CHECK_KEPT(&c, 0, 0, "0,1,2,3,4,5,6,7");
        kvcache_free(&c);
        policy_free(p);
    }
    CASE("l2: protected sinks and recent are kept, the rest by norm") {
        static const float n2[8] = { 9, 9, 1, 5, 2, 9, 9, 9 };
        Policy *p = make("--policy l2 --budget 4 --skip-layers none --protect-sinks 2 --protect-recent 1", &cfg, 64);
        kvcache_init(&c, 1, 1, 4, 64, &err);
        append(p, &c, 8, key_from_norms, (void *)n2);
        after(p, &c, 0);
        CHECK_KEPT(&c, 0, 0, "0,1,2,7");
        kvcache_free(&c);
        policy_free(p);
    }
    CASE("l2 step schedule: cached norms follow compaction over many steps") {
        float many[64];
        for (int t = 0; t < 64; t++) many[t] = (float)((t * 37) % 64);   /* a permutation of 0..63 */
        Policy *p = make("--policy l2 --budget 8 --skip-layers none --schedule step", &cfg, 64);
        kvcache_init(&c, 1, 1, 4, 64, &err);
        for (int t = 0; t < 64; t++) {
            int start = c.next_pos;
            append(p, &c, 1, key_from_norms, many);
            after(p, &c, start);
        }
        /* the 8 lowest norms overall survive (norm v at the t with 37t = v mod 64) */
        char want[128] = "";
        int pos[8], n = 0;
        for (int t = 0; t < 64; t++) if (many[t] < 8) pos[n++] = t;
        for (int i = 0; i < n; i++) snprintf(want + strlen(want), sizeof want - strlen(want), i ? ",%d" : "%d", pos[i]);
        CHECK_KEPT(&c, 0, 0, want);
        kvcache_free(&c);
        policy_free(p);
    }
}

/* GQA: 2 layers, 4 query heads, 2 KV heads; each KV head has its own norms. */
static void key_gqa(int layer, int g, int t, float *key, int hd, void *ctx) {
    (void)ctx;
    memset(key, 0, (size_t)hd * sizeof(float));
    key[1] = g == 0 ? (float)t : (float)(10 - t) + 0.5f * layer;   /* head 0 grows, head 1 shrinks */
}

static void test_gqa_skip(void) {
    Config cfg = shape(2, 4, 2, 4);
    KVCache c;
    Err err;
    CASE("GQA: each KV head keeps its own set; skipped layer 0 untouched") {
        Policy *p = make("--policy l2 --budget 3 --skip-layers 0", &cfg, 64);
        kvcache_init(&c, 2, 2, 4, 64, &err);
        append(p, &c, 8, key_gqa, NULL);
        after(p, &c, 0);
        CHECK_KEPT(&c, 0, 0, "0,1,2,3,4,5,6,7");
        CHECK_KEPT(&c, 0, 1, "0,1,2,3,4,5,6,7");
        CHECK_KEPT(&c, 1, 0, "0,1,2");
        CHECK_KEPT(&c, 1, 1, "5,6,7");
        kvcache_free(&c);
        policy_free(p);
    }
    CASE("granularity layer: one set for all heads of the layer (mean score)") {
        /* head 0 prefers small t, head 1 small 10-t: the mean of -norm is flat
         * except the offset 0.5*layer, so ties -> lower positions */
        Policy *p = make("--policy l2 --budget 3 --skip-layers 0 --granularity layer", &cfg, 64);
        kvcache_init(&c, 2, 2, 4, 64, &err);
        append(p, &c, 8, key_gqa, NULL);
        after(p, &c, 0);
        CHECK_KEPT(&c, 1, 0, "0,1,2");
        CHECK_KEPT(&c, 1, 1, "0,1,2");
        kvcache_free(&c);
        policy_free(p);
    }
}

static void test_window_random(void) {
    Config cfg = shape(1, 2, 1, 4);
    KVCache c;
    Err err;
    static const float norms[12] = { 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12 };
    CASE("window: 4 sinks + the most recent, every step") {
        Policy *p = make("--policy window --budget 6", &cfg, 64);
        kvcache_init(&c, 1, 1, 4, 64, &err);
        append(p, &c, 10, key_from_norms, (void *)norms);
        after(p, &c, 0);
        CHECK_KEPT(&c, 0, 0, "0,1,2,3,8,9");
        append(p, &c, 1, key_from_norms, (void *)norms);
        after(p, &c, 10);
        CHECK_KEPT(&c, 0, 0, "0,1,2,3,9,10");
        kvcache_free(&c);
        policy_free(p);
    }
    CASE("random: seeded, reproducible, budget respected, seed matters") {
        char runs[3][256];
        const char *lines[3] = { "--policy random:seed=7 --budget 5 --skip-layers none",
                                 "--policy random:seed=7 --budget 5 --skip-layers none",
                                 "--policy random:seed=8 --budget 5 --skip-layers none" };
        for (int r = 0; r < 3; r++) {
            Policy *p = make(lines[r], &cfg, 64);
            kvcache_init(&c, 1, 1, 4, 64, &err);
            append(p, &c, 12, key_from_norms, (void *)norms);
            after(p, &c, 0);
            snprintf(runs[r], sizeof runs[r], "%s", kept(&c, 0, 0));
            CHECK(kvcache_head(&c, 0, 0)->len == 5, "len %d", kvcache_head(&c, 0, 0)->len);
            kvcache_free(&c);
            policy_free(p);
        }
        CHECK(!strcmp(runs[0], runs[1]), "same seed: %s vs %s", runs[0], runs[1]);
        CHECK(strcmp(runs[0], runs[2]) != 0, "seeds 7 and 8 both kept %s", runs[0]);
    }
}

/* ---- attention policies: rows are fed to the observer by hand ---------------------- */

/* Feed the attention row of query position q for every head of every layer:
 * row[j] = att(layer, head, q, slot j). */
typedef float (*AttFn)(int layer, int head, int q, int j);

static void observe_all(Policy *p, const KVCache *c, int n_new, AttFn att) {
    float row[256];
    int group = p->group;
    for (int l = 0; l < c->n_layers; l++)
        for (int h = 0; h < p->n_heads; h++) {
            const KVHead *kv = kvcache_head(c, l, h / group);
            int before = kv->len - n_new;
            for (int t = 0; t < n_new; t++) {
                int q = c->next_pos - n_new + t, n_keys = before + t + 1;
                for (int j = 0; j < n_keys; j++) row[j] = att(l, h, q, j);
                policy_observe(p, l, h, q, row, kv->pos, n_keys);
            }
        }
}

static void zero_key(int layer, int g, int t, float *key, int hd, void *ctx) {
    (void)layer; (void)g; (void)t; (void)ctx;
    for (int i = 0; i < hd; i++) key[i] = (float)i;
}

/* h2o: query head 0 likes slot 1, head 1 likes slot 2 (mean: both), plus slot 0 a bit */
static float att_h2o(int layer, int head, int q, int j) {
    (void)layer; (void)q;
    if (j == 1 + head) return 1.0f;
    return j == 0 ? 0.3f : 0.01f;
}

static float att_mean(int layer, int head, int q, int j) {
    (void)layer; (void)head; (void)q;
    return j == 0 ? 0.4f : j == 4 ? 0.5f : 0.01f;
}

static float att_snap(int layer, int head, int q, int j) {
    (void)layer; (void)head; (void)q;
    static const float a[10] = { 0.1f, 0.0f, 0.0f, 0.9f, 0.0f, 0.5f, 0.0f, 0.2f, 0.3f, 0.3f };
    return a[j];
}

static void test_attention_policies(void) {
    Config cfg = shape(1, 2, 1, 4);   /* GQA: two query heads share the KV head */
    KVCache c;
    Err err;
    CASE("h2o: recent half of the budget + highest accumulated attention (group mean)") {
        Policy *p = make("--policy h2o --budget 4", &cfg, 64);
        kvcache_init(&c, 1, 1, 4, 64, &err);
        append(p, &c, 8, zero_key, NULL);
        observe_all(p, &c, 8, att_h2o);
        after(p, &c, 0);
        /* recent 2: slots 6,7; heavy: slots 1 and 2 (mean 0.505 each; slot 0: 0.3) */
        CHECK_KEPT(&c, 0, 0, "1,2,6,7");
        /* the scores carry over: slot 1 (pos 1) kept its sum */
        CHECK_CLOSE(policy_column(p, &c, "attention_sum", 0, 0)[0], 8 * 1.0f - 1.0f, 1e-5, "acc of pos 1, head 0");
        kvcache_free(&c);
        policy_free(p);
    }
    CASE("h2o norm=mean: divided by the queries that saw the token") {
        const char *lines[2] = { "--policy h2o:recent=1,norm=sum --budget 2", "--policy h2o:recent=1,norm=mean --budget 2" };
        const char *want[2] = { "0,5", "4,5" };
        for (int r = 0; r < 2; r++) {
            Policy *p = make(lines[r], &cfg, 64);
            kvcache_init(&c, 1, 1, 4, 64, &err);
            append(p, &c, 6, zero_key, NULL);
            observe_all(p, &c, 6, att_mean);
            after(p, &c, 0);
            /* slot 0: 0.4 from 6 queries (sum 2.4); slot 4: 0.5 from 2 (sum 1.0) */
            CHECK_KEPT(&c, 0, 0, want[r]);
            kvcache_free(&c);
            policy_free(p);
        }
    }
    CASE("h2o step schedule: accumulated attention follows every eviction (few-evictions path)") {
        Config c1 = shape(1, 1, 1, 4);
        Policy *p = make("--policy h2o:recent=2 --budget 5", &c1, 64);
        kvcache_init(&c, 1, 1, 4, 64, &err);
        float by_pos[64] = { 0 };
        int bad = 0;
        for (int n = 0; n < 40; n++) {
            int start = c.next_pos;
            append(p, &c, 1, zero_key, NULL);
            const KVHead *h = kvcache_head(&c, 0, 0);
            float row[64];
            for (int j = 0; j < h->len; j++) {   /* attention by position: some tokens are heavy */
                int ps = h->pos[j];
                row[j] = (ps % 7 == 3 ? 0.5f : 0.01f) + 0.001f * (float)((ps * 13 + n) % 5);
                by_pos[ps] += row[j];
            }
            policy_observe(p, 0, 0, start, row, h->pos, h->len);
            after(p, &c, start);
            for (int j = 0; j < h->len; j++) bad += policy_column(p, &c, "attention_sum", 0, 0)[j] != by_pos[h->pos[j]];
        }
        CHECK(bad == 0, "%d slots whose accumulated attention is not their token's", bad);
        CHECK(kvcache_head(&c, 0, 0)->len == 5, "len %d", kvcache_head(&c, 0, 0)->len);
        kvcache_free(&c);
        policy_free(p);
    }
    CASE("snapkv: window kept + top pooled window attention (kernel 1, then max-pool 3)") {
        Policy *p = make("--policy snapkv:window=2,kernel=1 --budget 5", &cfg, 64);
        kvcache_init(&c, 1, 1, 4, 64, &err);
        append(p, &c, 10, zero_key, NULL);
        observe_all(p, &c, 10, att_snap);
        after(p, &c, 0);
        /* window slots 8,9; top 3 of slots 0..7 by 0.1,0,0,.9,0,.5,0,.2 -> 3,5,7 */
        CHECK_KEPT(&c, 0, 0, "3,5,7,8,9");
        kvcache_free(&c);
        policy_free(p);
        p = make("--policy snapkv:window=2,kernel=3,pool=max --budget 5", &cfg, 64);
        kvcache_init(&c, 1, 1, 4, 64, &err);
        append(p, &c, 10, zero_key, NULL);
        observe_all(p, &c, 10, att_snap);
        after(p, &c, 0);
        /* pooled over slots 0..7: .1,.1,.9,.9,.9,.5,.5,.2 -> top 3: 2,3,4 */
        CHECK_KEPT(&c, 0, 0, "2,3,4,8,9");
        kvcache_free(&c);
        policy_free(p);
    }
    CASE("tova: last query, one set for the layer (2 KV heads)") {
        Config c2 = shape(1, 2, 2, 4);
        Policy *p = make("--policy tova --budget 3", &c2, 64);
        kvcache_init(&c, 1, 2, 4, 64, &err);
        append(p, &c, 10, zero_key, NULL);
        observe_all(p, &c, 10, att_snap);
        after(p, &c, 0);
        CHECK_KEPT(&c, 0, 0, "3,5,8");
        CHECK_KEPT(&c, 0, 1, "3,5,8");
        kvcache_free(&c);
        policy_free(p);
    }
}

/* ---- per-layer budgets --------------------------------------------------------------- */

/* layer l: attention concentrated on one slot for low layers, spread for high ones */
static float att_spread(int layer, int head, int q, int j) {
    (void)head; (void)q;
    if (layer == 0) return j == 0 ? 0.97f : 0.001f;
    return 1.0f / (float)(1 + layer) + 0.001f * (float)(j % 3);
}

static void test_layer_budgets(void) {
    Config cfg = shape(4, 2, 1, 4);
    KVCache c;
    Err err;
    CASE("pyramid: budgets decrease with depth and sum to N*C") {
        Policy *p = make("--policy pyramid:window=4 --budget 20", &cfg, 128);
        kvcache_init(&c, 4, 1, 4, 128, &err);
        append(p, &c, 100, zero_key, NULL);
        observe_all(p, &c, 100, att_spread);
        int b[4];
        policy_layer_budgets(p, &c, 20, b);
        CHECK(b[0] + b[1] + b[2] + b[3] == 80, "sum %d", b[0] + b[1] + b[2] + b[3]);
        CHECK(b[0] > b[1] && b[1] > b[2] && b[2] > b[3], "%d %d %d %d", b[0], b[1], b[2], b[3]);
        after(p, &c, 0);
        int total = 0;
        for (int l = 0; l < 4; l++) total += kvcache_head(&c, l, 0)->len;
        CHECK(total == 80, "cache total %d", total);
        kvcache_free(&c);
        policy_free(p);
    }
    CASE("zigzag: uncertain layers get more, the sum stays N*C, score=l2 works") {
        const char *lines[2] = { "--policy zigzag:window=4 --budget 20", "--policy zigzag:window=4,score=l2 --budget 20" };
        for (int r = 0; r < 2; r++) {
            Policy *p = make(lines[r], &cfg, 128);
            kvcache_init(&c, 4, 1, 4, 128, &err);
            append(p, &c, 100, zero_key, NULL);
            observe_all(p, &c, 100, att_spread);
            int b[4];
            policy_layer_budgets(p, &c, 20, b);
            CHECK(b[0] + b[1] + b[2] + b[3] == 80, "sum %d", b[0] + b[1] + b[2] + b[3]);
            CHECK(b[0] < b[1] && b[0] >= 4, "layer 0 (one token holds the mass) %d vs %d", b[0], b[1]);
            after(p, &c, 0);
            int total = 0;
            for (int l = 0; l < 4; l++) total += kvcache_head(&c, l, 0)->len;
            CHECK(total == 80, "cache total %d", total);
            kvcache_free(&c);
            policy_free(p);
        }
    }
}

/* ---- the parallel decision path ------------------------------------------------------ */

static void key_hash(int layer, int g, int t, float *key, int hd, void *ctx) {
    (void)ctx;
    for (int i = 0; i < hd; i++) {
        uint32_t x = (uint32_t)(t * 2654435761u) ^ (uint32_t)(layer * 97 + g * 31 + i * 7);
        x ^= x >> 15; x *= 0x2c1b3c6du; x ^= x >> 12;
        key[i] = (float)(x % 997) / 100.0f;
    }
}

/* Every head's kept positions, concatenated. */
static char *all_kept(const KVCache *c) {
    size_t cap = 1 << 20, n = 0;
    char *out = xmalloc(cap);
    out[0] = '\0';
    for (int l = 0; l < c->n_layers; l++)
        for (int g = 0; g < c->n_kv_heads; g++) {
            const char *k = kept(c, l, g);
            n += (size_t)snprintf(out + n, cap - n, "%s|", k);
        }
    return out;
}

static void test_parallel(void) {
    CASE("decisions over > 2^16 slots run in parallel and decide exactly as one thread") {
        Config cfg = shape(4, 8, 8, 4);
        const char *lines[3] = { "--policy l2 --budget 2048 --skip-layers none", "--policy h2o --budget 2048",
                                 "--policy l2 --budget 2040 --granularity layer --skip-layers 1" };
        for (int r = 0; r < 3; r++) {
            char *result[2];
            for (int t = 0; t < 2; t++) {
                omp_set_num_threads(t + 1);
                Policy *p = make(lines[r], &cfg, 2200);
                KVCache c;
                Err err;
                kvcache_init(&c, 4, 8, 4, 2200, &err);
                append(p, &c, 2100, key_hash, NULL);
                after(p, &c, 0);
                for (int s = 0; s < 20; s++) {
                    int start = c.next_pos;
                    append(p, &c, 1, key_hash, NULL);
                    after(p, &c, start);
                }
                result[t] = all_kept(&c);
                CHECK(kvcache_head(&c, 2, 3)->len <= 2048, "%s: len %d", lines[r], kvcache_head(&c, 2, 3)->len);
                kvcache_free(&c);
                policy_free(p);
            }
            CHECK(!strcmp(result[0], result[1]), "%s: 1 and 2 threads keep different tokens", lines[r]);
            free(result[0]);
            free(result[1]);
        }
        omp_set_num_threads(omp_get_num_procs());
    }
}

/* ---- LagKV --------------------------------------------------------------------------------- */

/* Deterministic but irregular keys/values. */
static void key_lag(int layer, int g, int t, float *key, int hd, void *ctx) {
    (void)ctx;
    for (int i = 0; i < hd; i++) {
        uint32_t x = (uint32_t)(t * 2654435761u) ^ (uint32_t)(i * 40503u) ^ (uint32_t)(layer * 7 + g * 13);
        x ^= x >> 13; x *= 0x5bd1e995u; x ^= x >> 15;
        key[i] = (float)(x % 1000) / 100.0f - 5.0f;
    }
}

/* An independent reference for one partition's score: straight from ../shared/spec/methods.md §2. */
static void lag_reference(const float *K, const float *V, int L, int d, double *score) {
    for (int t = 0; t < L; t++) score[t] = 0;
    for (int z = 0; z < 2; z++) {
        const float *Z = z ? V : K;
        double sig[256], mx_s = -1e30, sum = 0;
        for (int t = 0; t < L; t++) {
            double zh[64], mean = 0, var = 0;
            for (int c = 0; c < d; c++) {
                double mn = 1e30, mx = -1e30;
                for (int u = L; u < 2 * L; u++) {
                    double v = Z[u * d + c];
                    mn = v < mn ? v : mn;
                    mx = v > mx ? v : mx;
                }
                zh[c] = (Z[t * d + c] - mn) / (mx - mn + 1e-6);
                mean += zh[c] / d;
            }
            for (int c = 0; c < d; c++) var += (zh[c] - mean) * (zh[c] - mean) / (d - 1);
            sig[t] = sqrt(var);
            if (sig[t] > mx_s) mx_s = sig[t];
        }
        for (int t = 0; t < L; t++) sum += exp(sig[t] - mx_s);
        for (int t = 0; t < L; t++) score[t] += exp(sig[t] - mx_s) / sum;
    }
}

static int lag_len(int n, int S, int L, int r) {   /* ../shared/spec/methods.md §2, n >= S + 2L */
    return S + r * ((n - S) / L - 1) + L + (n - S) % L;
}

static void test_lagkv(void) {
    Config cfg = shape(1, 1, 1, 8);
    KVCache c;
    Err err;
    CASE("lagkv: one prefill, partitions scored against the next (reference), sinks and window kept") {
        int S = 2, L = 6, n = S + 3 * L + 4;   /* m = 3: P0, P1 scored; P2 + 4 stay */
        Policy *p = make("--policy lagkv:sink=2,lag=6,ratio=0.5", &cfg, 64);
        kvcache_init(&c, 1, 1, 8, 64, &err);
        append(p, &c, n, key_lag, NULL);
        /* expected: top 3 of each of P0, P1 by the reference score */
        const KVHead *h = kvcache_head(&c, 0, 0);
        char want[256] = "0,1";
        for (int i = 0; i < 2; i++) {
            int a = S + i * L;
            double sc[16];
            lag_reference(h->keys + a * 8, h->values + a * 8, L, 8, sc);
            int used[16] = { 0 };
            for (int k = 0; k < 3; k++) {
                int best = -1;
                for (int t = 0; t < L; t++) if (!used[t] && (best < 0 || sc[t] > sc[best])) best = t;
                used[best] = 1;
            }
            for (int t = 0; t < L; t++) if (used[t]) snprintf(want + strlen(want), sizeof want - strlen(want), ",%d", a + t);
        }
        for (int t = S + 2 * L; t < n; t++) snprintf(want + strlen(want), sizeof want - strlen(want), ",%d", t);
        after(p, &c, 0);
        CHECK_KEPT(&c, 0, 0, want);
        CHECK(kvcache_head(&c, 0, 0)->len == lag_len(n, S, L, 3), "len %d", kvcache_head(&c, 0, 0)->len);
        kvcache_free(&c);
        policy_free(p);
    }
    CASE("lagkv: constant channel gives no NaN (epsilon guard); decode keeps the length formula") {
        Policy *p = make("--policy lagkv:sink=3,lag=4,ratio=0.25", &cfg, 256);
        kvcache_init(&c, 1, 1, 8, 256, &err);
        int bad = 0;
        for (int n = 1; n <= 120; n++) {
            int start = c.next_pos;
            append(p, &c, 1, zero_key, NULL);     /* every channel constant */
            after(p, &c, start);
            int len = kvcache_head(&c, 0, 0)->len;
            int want = n >= 3 + 8 ? lag_len(n, 3, 4, 1) : n;
            if (len != want) bad++;
        }
        CHECK(bad == 0, "%d lengths off the formula", bad);
        kvcache_free(&c);
        policy_free(p);
    }
}

/* ---- a policy from outside src/: its own per-slot columns, no framework edit ---- */

/* score = −‖v‖: keep the lowest value norms, from a column this file declares. */
static float minus_value_norm(const float *key, const float *value, int hd) {
    (void)key;
    float ss = 0;
    for (int i = 0; i < hd; i++) ss += value[i] * value[i];
    return -sqrtf(ss);
}

/* queries_seen: per query head, how many queries gave the slot any attention. */
static void count_queries(Policy *p, float *row, int layer, int head, int query_pos, const float *probs, int n_keys) {
    (void)p; (void)layer; (void)head; (void)query_pos;
    for (int j = 0; j < n_keys; j++) row[j] += probs[j] > 0;
}

static const PolicyColumn value_norm_column = { .name = "minus_value_norm", .fill = minus_value_norm };
static const PolicyColumn seen_column = { .name = "queries_seen", .per_query_head = 1, .observe = count_queries };
static const PolicyColumn *const vnorm_columns[] = { &value_norm_column, &seen_column, NULL };

static const float *score_vnorm(Policy *p, const KVCache *c, int layer, int g, float *out) {
    (void)out;
    return policy_column(p, c, "minus_value_norm", layer, g);
}

static const PolicyParam no_params[] = { {0} };

static const PolicyDef policy_test_vnorm = {
    .name = "test-vnorm",
    .rule = "test: keep the lowest value norms",
    .paper = "none: a test policy",
    .params = no_params,
    .columns = vnorm_columns,
    .score = score_vnorm,
};

/* append() makes value = key/2 + t: these keys give value = hash/2, so value
 * norms are in no particular order of position. */
static void key_for_values(int layer, int g, int t, float *key, int hd, void *ctx) {
    key_hash(layer, g, t, key, hd, ctx);
    for (int i = 0; i < hd; i++) key[i] -= 2.0f * (float)t;
}

static float att_everywhere(int layer, int head, int q, int j) {
    (void)layer; (void)head; (void)q; (void)j;
    return 0.25f;
}

static void test_outside_policy(void) {
    CASE("a policy defined in a test: its own columns are filled, observed and follow every eviction") {
        CHECK(policy_register(&policy_test_vnorm) == 0, "registering test-vnorm failed");
        CHECK(policy_register(&policy_test_vnorm) != 0, "a second test-vnorm was accepted");
        enum { L = 2, H = 4, KV = 2, HD = 4, B = 6, PROMPT = 20, STEPS = 30 };
        Config cfg = shape(L, H, KV, HD);
        Policy *p = make("--policy test-vnorm --budget 6", &cfg, 64);
        CHECK(policy_needs_attention(p), "a column that observes must install the observer");
        KVCache c;
        Err err;
        kvcache_init(&c, L, KV, HD, 64, &err);
        float vnorm[L][KV][PROMPT + STEPS];
        int bad_kept = 0, bad_seen = 0;
        for (int step = 0; step <= STEPS; step++) {
            int start = c.next_pos, n = step == 0 ? PROMPT : 1;
            append(p, &c, n, key_for_values, NULL);
            for (int l = 0; l < L; l++)
                for (int g = 0; g < KV; g++)
                    for (int t = start; t < start + n; t++) {
                        float k[HD], v[HD];
                        key_for_values(l, g, t, k, HD, NULL);
                        for (int i = 0; i < HD; i++) v[i] = k[i] * 0.5f + (float)t;
                        vnorm[l][g][t] = -minus_value_norm(k, v, HD);
                    }
            observe_all(p, &c, n, att_everywhere);
            after(p, &c, start);
            for (int l = 0; l < L; l++)
                for (int g = 0; g < KV; g++) {
                    /* the score never changes, so the kept set is the B lowest of every token seen */
                    int want[B], n_want = 0;
                    for (int t = 0; t < c.next_pos; t++) {
                        int lower = 0;
                        for (int u = 0; u < c.next_pos; u++)
                            lower += vnorm[l][g][u] < vnorm[l][g][t] || (vnorm[l][g][u] == vnorm[l][g][t] && u < t);
                        if (lower < B) want[n_want++] = t;
                    }
                    const KVHead *h = kvcache_head(&c, l, g);
                    bad_kept += h->len != n_want || memcmp(h->pos, want, (size_t)n_want * sizeof(int)) != 0;
                    for (int q = g * (H / KV); q < (g + 1) * (H / KV); q++) {
                        const float *seen = policy_column(p, &c, "queries_seen", l, q);
                        for (int j = 0; j < h->len; j++) bad_seen += seen[j] != (float)(c.next_pos - h->pos[j]);
                    }
                }
        }
        CHECK(bad_kept == 0, "%d (step, head) kept sets are not the %d lowest value norms", bad_kept, B);
        CHECK(bad_seen == 0, "%d slots whose query count is not next_pos - pos", bad_seen);
        CHECK(policy_timing(p).evicted == (long)L * KV * (PROMPT + STEPS - B), "evicted %ld", policy_timing(p).evicted);
        kvcache_free(&c);
        policy_free(p);
    }
}


/* ---- norm-family policies ------------------------------------------------------------- */

/* key[0] = x[t], the rest 0 (values: key * 0.5 + t, as append() makes them) */
static void key_first(int layer, int g, int t, float *key, int hd, void *ctx) {
    (void)layer; (void)g;
    memset(key, 0, (size_t)hd * sizeof(float));
    key[0] = ((const float *)ctx)[t];
}

/* keydiff: five keys along e0, one along e1, one on the diagonal */
static void key_directions(int layer, int g, int t, float *key, int hd, void *ctx) {
    (void)layer; (void)g; (void)ctx;
    memset(key, 0, (size_t)hd * sizeof(float));
    if (t < 5) key[0] = 1;
    else if (t == 5) key[1] = 1;
    else key[0] = key[1] = 1;
}

static void test_norm_family(void) {
    KVCache c;
    Err err;
    CASE("vnorm: keep the highest value norms") {
        /* values (0.5x + t, t, t, t): norms 10, 2, 4, 5.2, 8, 8.7 */
        static const float x[6] = { 20, 0, 0, -6, 0, -10 };
        Config cfg = shape(1, 1, 1, 4);
        Policy *p = make("--policy vnorm --budget 3", &cfg, 64);
        kvcache_init(&c, 1, 1, 4, 64, &err);
        append(p, &c, 6, key_first, (void *)x);
        after(p, &c, 0);
        CHECK_KEPT(&c, 0, 0, "0,4,5");
        CHECK(policy_opts(p)->n_skip == 0, "vnorm skips %d layers", policy_opts(p)->n_skip);
        kvcache_free(&c);
        policy_free(p);
    }
    CASE("keydiff: keep the keys least like the mean unit key (ties: lower position)") {
        /* mean unit key (5 + 1/√2, 1 + 1/√2)/7: cos 0.96 (e0), 0.29 (e1), 0.88 (diagonal) */
        Config cfg = shape(1, 1, 1, 4);
        Policy *p = make("--policy keydiff --budget 3", &cfg, 64);
        kvcache_init(&c, 1, 1, 4, 64, &err);
        append(p, &c, 7, key_directions, NULL);
        float score[8];
        const float *s = p->scorer->score(p, &c, 0, 0, score);
        double a0 = (5 + 1 / sqrt(2.0)) / 7, a1 = (1 + 1 / sqrt(2.0)) / 7, an = sqrt(a0 * a0 + a1 * a1);
        CHECK_CLOSE(s[0], -a0 / an, 1e-6, "score of an e0 key");
        CHECK_CLOSE(s[5], -a1 / an, 1e-6, "score of the e1 key");
        CHECK_CLOSE(s[6], -(a0 + a1) / (sqrt(2.0) * an), 1e-6, "score of the diagonal key");
        after(p, &c, 0);
        CHECK_KEPT(&c, 0, 0, "0,5,6");
        kvcache_free(&c);
        policy_free(p);
    }
    CASE("lagkv-l2: each partition keeps its int(rL) lowest key norms; sinks and window kept; skips 0,1") {
        /* S = 2, L = 4, n = 15: P0 = 2..5 and P1 = 6..9 scored; 10..14 stay */
        static const float x[15] = { 9, 9, 5, 1, 3, 2, 0.5f, 9, 0.25f, 4, 9, 9, 9, 9, 9 };
        Config cfg = shape(1, 1, 1, 8);
        PolicyOpts o = opts("--policy lagkv-l2 --compression-ratio 0.5");
        CHECK(o.n_skip == 2 && o.skip[0] == 0 && o.skip[1] == 1, "lagkv-l2 skips %d layers", o.n_skip);
        const char *lines[2] = { "--policy lagkv-l2:sink=2,lag=4,ratio=0.5 --skip-layers none",
                                 "--policy lagkv-l2:sink=2,lag=4,ratio=0.5,keep=high --skip-layers none" };
        const char *want[2] = { "0,1,3,5,6,8,10,11,12,13,14", "0,1,2,4,7,9,10,11,12,13,14" };
        for (int r = 0; r < 2; r++) {
            Policy *p = make(lines[r], &cfg, 64);
            kvcache_init(&c, 1, 1, 8, 64, &err);
            append(p, &c, 15, key_first, (void *)x);
            after(p, &c, 0);
            CHECK_KEPT(&c, 0, 0, want[r]);
            kvcache_free(&c);
            policy_free(p);
        }
    }
    CASE("lagkv-l2: v_ratio adds the value norm (score_v_ratio)") {
        /* keys all of norm 1; values (0.5 + t, t, ...): the value norm grows with t,
         * so keep=low with v_ratio=1 keeps the first two of each partition */
        static const float one[15] = { 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1 };
        Config cfg = shape(1, 1, 1, 8);
        Policy *p = make("--policy lagkv-l2:sink=2,lag=4,ratio=0.5,v_ratio=1 --skip-layers none", &cfg, 64);
        kvcache_init(&c, 1, 1, 8, 64, &err);
        append(p, &c, 15, key_first, (void *)one);
        after(p, &c, 0);
        CHECK_KEPT(&c, 0, 0, "0,1,2,3,6,7,10,11,12,13,14");
        kvcache_free(&c);
        policy_free(p);
    }
    CASE("lagkv-l2 decode: the cache length follows LagKV's formula") {
        Config cfg = shape(1, 1, 1, 8);
        Policy *p = make("--policy lagkv-l2:sink=3,lag=4,ratio=0.25 --skip-layers none", &cfg, 256);
        kvcache_init(&c, 1, 1, 8, 256, &err);
        int bad = 0;
        for (int n = 1; n <= 120; n++) {
            int start = c.next_pos;
            append(p, &c, 1, zero_key, NULL);
            after(p, &c, start);
            int want = n >= 3 + 8 ? lag_len(n, 3, 4, 1) : n;
            bad += kvcache_head(&c, 0, 0)->len != want;
        }
        CHECK(bad == 0, "%d lengths off the formula", bad);
        kvcache_free(&c);
        policy_free(p);
    }
    CASE("lagkv:select=global (kvpress LagKVPress): ranks per partition, one top-k over the head") {
        int S = 2, L = 4, n = 15;
        Config cfg = shape(1, 1, 1, 8);
        Policy *p = make("--policy lagkv:sink=2,lag=4,select=global --budget 10", &cfg, 64);
        CHECK(policy_opts(p)->schedule == SCHED_PREFILL, "schedule %d", policy_opts(p)->schedule);
        kvcache_init(&c, 1, 1, 8, 64, &err);
        append(p, &c, n, key_lag, NULL);
        /* 7 slots score 1 (sinks, last partition + remainder); then rank 3/4:
         * the best of P0 and of P1; then rank 2/4: P0's second (lower position) */
        const KVHead *h = kvcache_head(&c, 0, 0);
        int best[2], second0 = -1;
        for (int i = 0; i < 2; i++) {
            int a = S + i * L;
            double sc[8];
            lag_reference(h->keys + a * 8, h->values + a * 8, L, 8, sc);
            best[i] = 0;
            for (int t = 1; t < L; t++) if (sc[t] > sc[best[i]]) best[i] = t;
            if (i == 0)
                for (int t = 0; t < L; t++)
                    if (t != best[0] && (second0 < 0 || sc[t] > sc[second0])) second0 = t;
            best[i] += a;
        }
        second0 += S;
        int keep_pos[16], m = 0;
        for (int t = 0; t < n; t++)
            if (t < S || t >= S + L * 2 || t == best[0] || t == best[1] || t == second0) keep_pos[m++] = t;
        char want[128] = "";
        for (int i = 0; i < m; i++) snprintf(want + strlen(want), sizeof want - strlen(want), i ? ",%d" : "%d", keep_pos[i]);
        after(p, &c, 0);
        CHECK(m == 10, "the test expects 10, built %d", m);
        CHECK_KEPT(&c, 0, 0, want);
        kvcache_free(&c);
        policy_free(p);
    }
    CASE("lagkv's score (policy_head_scores, correlate --score lagkv): the ranks select=global keeps by, in either mode") {
        int S = 2, L = 4, n = 15;
        Config cfg = shape(1, 1, 1, 8);
        Policy *p = make("--policy lagkv:sink=2,lag=4", &cfg, 64);   /* the official partition rule */
        kvcache_init(&c, 1, 1, 8, 64, &err);
        append(p, &c, n, key_lag, NULL);
        const KVHead *h = kvcache_head(&c, 0, 0);
        float score[16];
        CHECK(policy_head_scores(p, &c, 0, 0, score) == 0, "lagkv gives no score");
        for (int t = 0; t < n; t++) {
            double want = 1.0;                                 /* sinks, last partition, remainder */
            if (t >= S && t < S + 2 * L) {                     /* P0, P1: rank by the reference over L */
                int a = S + (t - S) / L * L, below = 0;
                double sc[8];
                lag_reference(h->keys + a * 8, h->values + a * 8, L, 8, sc);
                for (int u = 0; u < L; u++)
                    below += sc[u] < sc[t - a] || (sc[u] == sc[t - a] && u > t - a);
                want = (double)below / L;
            }
            CHECK(score[t] == (float)want, "slot %d: score %g, want %g", t, score[t], want);
        }
        kvcache_free(&c);
        policy_free(p);
        PolicyOpts o;
        policy_defaults(&o);
        policy_parse_spec(&o, "lagkv", &err);
        o.head_alloc = ALLOC_ADAPTIVE;
        CHECK(policy_resolve(&o, &err) != 0 && strstr(err.msg, "not a budget to share"), "resolve: %s", err.msg);
    }
    CASE("lagkv:select=global on a head shorter than S + 2L: the sinks and the newest") {
        Config cfg = shape(1, 1, 1, 8);
        Policy *p = make("--policy lagkv:sink=2,lag=4,select=global --compression-ratio 0.4", &cfg, 64);
        kvcache_init(&c, 1, 1, 8, 64, &err);
        append(p, &c, 8, key_lag, NULL);
        after(p, &c, 0);
        CHECK_KEPT(&c, 0, 0, "0,1,6,7");   /* floor(8 * 0.6) = 4: the sinks and the 2 newest */
        kvcache_free(&c);
        policy_free(p);
    }
    CASE("lagkv:select=global needs a budget; lagkv (partition) refuses --budget") {
        PolicyOpts o;
        policy_defaults(&o);
        CHECK(policy_parse_spec(&o, "lagkv:select=global", &err) == 0, "%s", err.msg);
        CHECK(policy_resolve(&o, &err) != 0 && strstr(err.msg, "needs a budget"), "resolve: %s", err.msg);
        policy_defaults(&o);
        policy_parse_spec(&o, "lagkv-l2", &err);
        o.budget_kind = BUDGET_TOKENS;
        o.budget = 8;
        CHECK(policy_resolve(&o, &err) != 0 && strstr(err.msg, "--budget does not apply"), "resolve: %s", err.msg);
    }
}

/* ---- head-wise adaptive budgets (Ada-KV) ------------------------------------------------- */

/* head 0: every key of norm 1; head 1: norm 9, but its last key 0.5 */
static void key_two_heads(int layer, int g, int t, float *key, int hd, void *ctx) {
    (void)layer; (void)ctx;
    memset(key, 0, (size_t)hd * sizeof(float));
    key[0] = g == 0 ? 1.0f : t == 7 ? 0.5f : 9.0f;
}

static void test_adaptive(void) {
    Config cfg = shape(1, 4, 2, 4);
    KVCache c;
    Err err;
    CASE("adaptive: the layer's 2x4 slots go to the best scores of both heads; memory is released") {
        Policy *p = make("--policy l2 --budget 4 --skip-layers none --budget-alloc adaptive", &cfg, 64);
        kvcache_init(&c, 1, 2, 4, 64, &err);
        append(p, &c, 8, key_two_heads, NULL);
        after(p, &c, 0);
        /* safeguard max(1, 0.2*4) = 1 each (head 1: pos 7); the other 6 are head 0's (-1 > -9) */
        CHECK_KEPT(&c, 0, 0, "0,1,2,3,4,5,6");
        CHECK_KEPT(&c, 0, 1, "7");
        const int *hb = policy_last_head_budgets(p);
        CHECK(hb[0] == 7 && hb[1] == 1, "head budgets %d %d", hb[0], hb[1]);
        CHECK(kvcache_bytes_used(&c) == 8 * (2 * 4 * sizeof(float) + sizeof(int)), "bytes %zu", kvcache_bytes_used(&c));
        char *js = policy_budgets_json(p);
        CHECK(!strcmp(js, "{\"layer\":[4],\"head\":[[7,1]]}"), "budgets %s", js);
        free(js);
        js = policy_json(policy_opts(p));
        CHECK(strstr(js, "\"budget_alloc\":\"adaptive\",\"head_floor\":0.2") != NULL, "%s", js);
        free(js);
        kvcache_free(&c);
        policy_free(p);
    }
    CASE("adaptive: --head-floor 0.5 guarantees each head its own top 2") {
        Policy *p = make("--policy l2 --budget 4 --skip-layers none --budget-alloc adaptive --head-floor 0.5", &cfg, 64);
        kvcache_init(&c, 1, 2, 4, 64, &err);
        append(p, &c, 8, key_two_heads, NULL);
        after(p, &c, 0);
        CHECK_KEPT(&c, 0, 0, "0,1,2,3,4,5");
        CHECK_KEPT(&c, 0, 1, "0,7");
        kvcache_free(&c);
        policy_free(p);
    }
    CASE("uniform (the default): each head keeps the layer's budget; no budget_alloc in the JSON") {
        Policy *p = make("--policy l2 --budget 4 --skip-layers none", &cfg, 64);
        kvcache_init(&c, 1, 2, 4, 64, &err);
        append(p, &c, 8, key_two_heads, NULL);
        after(p, &c, 0);
        CHECK_KEPT(&c, 0, 0, "0,1,2,3");
        CHECK_KEPT(&c, 0, 1, "0,1,2,7");
        char *js = policy_json(policy_opts(p));
        CHECK(strstr(js, "budget_alloc") == NULL, "%s", js);
        free(js);
        kvcache_free(&c);
        policy_free(p);
    }
    CASE("adaptive, step schedule: the layer never holds more than 2 x budget, each head >= 1") {
        Policy *p = make("--policy l2 --budget 5 --skip-layers none --budget-alloc adaptive --schedule step", &cfg, 64);
        kvcache_init(&c, 1, 2, 4, 64, &err);
        int bad = 0, differ = 0;
        for (int t = 0; t < 40; t++) {
            int start = c.next_pos;
            append(p, &c, 1, key_hash, NULL);
            after(p, &c, start);
            int a = kvcache_head(&c, 0, 0)->len, b = kvcache_head(&c, 0, 1)->len;
            bad += a + b > (t + 1 < 10 ? t + 1 : 10) * 2 || a < 1 || b < 1 || (t + 1 >= 5 && a + b != 10);
            differ += a != b;
        }
        CHECK(bad == 0, "%d steps broke the layer total or emptied a head", bad);
        CHECK(differ > 0, "the heads never held different counts: the test does not test");
        kvcache_free(&c);
        policy_free(p);
    }
    CASE("adaptive works with an attention score (snapkv) and a borrowed one (pyramid:score=l2)") {
        const char *lines[2] = { "--policy snapkv:window=2 --budget 4 --budget-alloc adaptive",
                                 "--policy pyramid:window=2,score=l2 --budget 4 --budget-alloc adaptive" };
        for (int r = 0; r < 2; r++) {
            Policy *p = make(lines[r], &cfg, 64);
            kvcache_init(&c, 1, 2, 4, 64, &err);
            append(p, &c, 10, key_two_heads, NULL);
            observe_all(p, &c, 10, att_snap);
            after(p, &c, 0);
            int a = kvcache_head(&c, 0, 0)->len, b = kvcache_head(&c, 0, 1)->len;
            CHECK(a + b == 8 && a >= 2 && b >= 2, "%s: heads hold %d and %d", lines[r], a, b);
            kvcache_free(&c);
            policy_free(p);
        }
    }
    CASE("adaptive: refused where there is no budget to share (lagkv's partitions) or one set per layer (tova)") {
        PolicyOpts o;
        policy_defaults(&o);
        policy_parse_spec(&o, "tova", &err);
        o.budget_kind = BUDGET_TOKENS;
        o.budget = 8;
        o.head_alloc = ALLOC_ADAPTIVE;
        CHECK(policy_resolve(&o, &err) != 0 && strstr(err.msg, "--granularity head"), "tova: %s", err.msg);
        o.resolved = 0;
        o.granularity = GRAN_HEAD;
        CHECK(policy_resolve(&o, &err) == 0, "tova --granularity head: %s", err.msg);
        policy_defaults(&o);
        policy_parse_spec(&o, "lagkv-l2", &err);
        o.head_alloc = ALLOC_ADAPTIVE;
        CHECK(policy_resolve(&o, &err) != 0 && strstr(err.msg, "not a budget to share"), "lagkv-l2: %s", err.msg);
        policy_defaults(&o);
        policy_parse_spec(&o, "lagkv:select=global", &err);
        o.budget_kind = BUDGET_COMPRESSION;
        o.budget = 0.5;
        o.head_alloc = ALLOC_ADAPTIVE;
        CHECK(policy_resolve(&o, &err) == 0, "lagkv:select=global: %s", err.msg);
    }
}

/* ---- kvpress's decoding-press names ---------------------------------------------------- */

static void test_decoding_press(void) {
    Config cfg = shape(1, 1, 1, 4);
    KVCache c;
    Err err;
    CASE("--target-size N --compression-interval K: every K decode steps back to N, never after the prompt") {
        PolicyOpts o = opts("--policy snapkv --target-size 6");
        CHECK(o.budget_kind == BUDGET_TOKENS && o.budget == 6 && o.schedule == SCHED_INTERVAL && o.schedule_n == 512,
              "target-size alone: budget %g schedule %d/%d", o.budget, o.schedule, o.schedule_n);
        Policy *p = make("--policy l2 --skip-layers none --target-size 6 --compression-interval 3", &cfg, 64);
        kvcache_init(&c, 1, 1, 4, 64, &err);
        append(p, &c, 10, key_hash, NULL);
        after(p, &c, 0);
        int lens[7];
        lens[0] = kvcache_head(&c, 0, 0)->len;
        for (int s = 1; s <= 6; s++) {
            int start = c.next_pos;
            append(p, &c, 1, key_hash, NULL);
            after(p, &c, start);
            lens[s] = kvcache_head(&c, 0, 0)->len;
        }
        CHECK(lens[0] == 10 && lens[1] == 11 && lens[2] == 12 && lens[3] == 6 && lens[4] == 7 && lens[5] == 8 && lens[6] == 6,
              "lengths %d %d %d %d %d %d %d", lens[0], lens[1], lens[2], lens[3], lens[4], lens[5], lens[6]);
        kvcache_free(&c);
        policy_free(p);
    }
    CASE("--target-compression-ratio R: keep n*(1-R) of the tokens seen (CompressionRatioDecodingPress)") {
        Policy *p = make("--policy l2 --skip-layers none --target-compression-ratio 0.5 --compression-interval 2", &cfg, 64);
        kvcache_init(&c, 1, 1, 4, 64, &err);
        append(p, &c, 10, key_hash, NULL);
        after(p, &c, 0);
        int lens[5];
        for (int s = 1; s <= 4; s++) {
            int start = c.next_pos;
            append(p, &c, 1, key_hash, NULL);
            after(p, &c, start);
            lens[s] = kvcache_head(&c, 0, 0)->len;
        }
        /* step 2: 12 seen -> 6; step 4: 14 seen -> 7 */
        CHECK(lens[1] == 11 && lens[2] == 6 && lens[3] == 7 && lens[4] == 7, "lengths %d %d %d %d", lens[1], lens[2], lens[3], lens[4]);
        kvcache_free(&c);
        policy_free(p);
    }
}

/* ---- PyramidKV's official clamp, ZigZag's PR 238 versions ----------------------------- */

static float att_flat(int layer, int head, int q, int j) {
    (void)layer; (void)head; (void)q; (void)j;
    return 1.0f;
}

static void test_official_budgets(void) {
    Config cfg = shape(4, 2, 1, 4);
    KVCache c;
    Err err;
    CASE("pyramid clamp=official: max <= n - w, min takes the rest; below 2(C - w) every layer C") {
        /* C = 20, w = 4, n = 34: min 0.8, max 31.2 -> clamp: max 30, min 2, step 28/3:
         * 34, 24.67, 15.33, 6 -> 34, 25, 15, 6. Without the clamp: 35.2 > 34 is cut
         * and its excess goes to the layers below their targets: 34, 26, 15, 5. */
        const char *lines[2] = { "--policy pyramid:window=4,clamp=official --budget 20", "--policy pyramid:window=4 --budget 20" };
        const int want[2][4] = { { 34, 25, 15, 6 }, { 34, 26, 15, 5 } };
        for (int r = 0; r < 2; r++) {
            Policy *p = make(lines[r], &cfg, 128);
            kvcache_init(&c, 4, 1, 4, 128, &err);
            append(p, &c, 34, zero_key, NULL);
            int b[4];
            policy_layer_budgets(p, &c, 20, b);
            CHECK(!memcmp(b, want[r], sizeof b), "%s: %d %d %d %d", lines[r], b[0], b[1], b[2], b[3]);
            kvcache_free(&c);
            policy_free(p);
        }
        Policy *p = make(lines[0], &cfg, 128);
        kvcache_init(&c, 4, 1, 4, 128, &err);
        append(p, &c, 30, zero_key, NULL);   /* 30 < 2(20 - 4): SnapKV's C everywhere */
        int b[4];
        policy_layer_budgets(p, &c, 20, b);
        CHECK(b[0] == 20 && b[1] == 20 && b[2] == 20 && b[3] == 20, "%d %d %d %d", b[0], b[1], b[2], b[3]);
        kvcache_free(&c);
        policy_free(p);
    }
    CASE("zigzag impl: kvlab floors B_avg and keeps N*B_avg; pr238v1 floors each layer, pr238v2 rounds half to even") {
        /* flat attention: every layer equally uncertain, each gets B_avg = 100 * 0.375 = 37.5 */
        const char *lines[3] = { "--policy zigzag:window=4 --keep-ratio 0.375", "--policy zigzag:window=4,impl=pr238v1 --keep-ratio 0.375",
                                 "--policy zigzag:window=4,impl=pr238v2 --keep-ratio 0.375" };
        const int want[3] = { 37, 37, 38 };
        for (int r = 0; r < 3; r++) {
            Policy *p = make(lines[r], &cfg, 128);
            kvcache_init(&c, 4, 1, 4, 128, &err);
            append(p, &c, 100, zero_key, NULL);
            observe_all(p, &c, 100, att_flat);
            after(p, &c, 0);
            int bad = 0;
            for (int l = 0; l < 4; l++) bad += kvcache_head(&c, l, 0)->len != want[r];
            CHECK(bad == 0, "%s: %d layers off %d (layer 0 holds %d)", lines[r], bad, want[r], kvcache_head(&c, 0, 0)->len);
            kvcache_free(&c);
            policy_free(p);
        }
    }
    CASE("zigzag pr238v1/v2: b 0.1/0.2, the window of w prompt tokens kept; kvlab keeps neither") {
        PolicyOpts o = opts("--policy zigzag:impl=pr238v1 --budget 8");
        CHECK(!strcmp(policy_opts_param(&o, "b"), "0.1") && o.recent == 64, "v1: b %s recent %d", policy_opts_param(&o, "b"), o.recent);
        o = opts("--policy zigzag:impl=pr238v2 --budget 8");
        CHECK(!strcmp(policy_opts_param(&o, "b"), "0.2") && o.recent == 64, "v2: b %s recent %d", policy_opts_param(&o, "b"), o.recent);
        o = opts("--policy zigzag --budget 8");
        CHECK(!strcmp(policy_opts_param(&o, "b"), "0.2") && o.recent == 0, "kvlab: b %s recent %d", policy_opts_param(&o, "b"), o.recent);
        o = opts("--policy zigzag:impl=pr238v1,b=0.3 --budget 8");
        CHECK(!strcmp(policy_opts_param(&o, "b"), "0.3"), "given b: %s", policy_opts_param(&o, "b"));
    }
    CASE("zigzag pr238v1: concentrated layers get less, no total kept (floors), B_bound = 0.1 B_avg") {
        Policy *p = make("--policy zigzag:window=4,impl=pr238v1 --budget 20", &cfg, 128);
        kvcache_init(&c, 4, 1, 4, 128, &err);
        append(p, &c, 100, zero_key, NULL);
        observe_all(p, &c, 100, att_spread);
        int b[4];
        policy_layer_budgets(p, &c, 20, b);
        CHECK(b[0] < b[1] && b[0] >= 2, "layer 0 (one token holds the mass) %d vs %d", b[0], b[1]);
        CHECK(b[0] + b[1] + b[2] + b[3] <= 80, "sum %d", b[0] + b[1] + b[2] + b[3]);
        kvcache_free(&c);
        policy_free(p);
    }
}

int main(void) {
    test_parsing();
    test_selection();
    test_kvcache();
    test_l2();
    test_gqa_skip();
    test_window_random();
    test_attention_policies();
    test_layer_budgets();
    test_parallel();
    test_lagkv();
    test_outside_policy();
    test_norm_family();
    test_adaptive();
    test_decoding_press();
    test_official_budgets();
    return check_summary();
}
