/* test_gguf.c — the GGUF reader/writer, loader_gguf and kvlab convert's library half.
 *
 * Round trips on the two shared models (into a temporary directory):
 *   stories260k (llama2.c, f32, q/k pairs (2i, 2i+1)) -> GGUF -> HF -> GGUF
 *   demo-25m (HF, bf16, q/k pairs (i, i+hd/2))        -> GGUF -> HF
 * Every tensor must come back bit-identical (q/k rows compared through the
 * permutation when the pairing layout changed), and the logits of a fixed
 * prompt bit-identical when dtype and layout match, within 1e-5 otherwise.
 * Then: metadata read back key by key; a GGUF rewritten with alignment 48 / 64
 * and extra keys of every value type (nested arrays too), its data streamed in
 * chunks that straddle tensors, still loads; one refusal per kind of damage,
 * each with a one-line message naming the file and the problem; every
 * truncation of the header and random byte flips parse without a crash; the
 * embedded tokenizer encodes the golden texts like tokenizer.model. */
#include <cjson/cJSON.h>
#include <ftw.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "engine/forward.h"
#include "formats/gguf.h"
#include "model/convert.h"
#include "model/model.h"
#include "model/tokenizer.h"

#define N_IDS 12

static char root[64];
static char p_s_gguf[128], p_s_hf[128], p_s_gguf2[128], p_d_gguf[128], p_d_hf[128];

/* ---- helpers ------------------------------------------------------------------------- */

static const char *tmp(const char *name) {
    static char bufs[8][160];
    static int k;
    char *p = bufs[k++ % 8];
    snprintf(p, 160, "%s/%s", root, name);
    return p;
}

static const char *shared(const char *rel) {
    static char bufs[4][512];
    static int k;
    return shared_path(bufs[k++ % 4], 512, rel);
}

static int load(Model *m, const char *path) {
    Err err;
    if (model_load(m, path, DTYPE_F32, &err) == 0) return 0;
    fprintf(stderr, "  load %s: %s\n", path, err.msg);
    return -1;
}

/* The row of `src` that holds row R of a q/k matrix stored with the other pairing. */
static int other_layout_row(int R, int hd, int dst_halves) {
    int h = R / hd, r = R % hd, half = hd / 2;
    return dst_halves ? h * hd + 2 * (r % half) + r / half : h * hd + (r % 2) * half + r / 2;
}

/* Bitwise equal, rows of a q/k matrix mapped when b's pairing differs from a's. */
static int same_mat(const Mat *a, const Mat *b, int qk, int hd, int a_halves, int b_halves) {
    if (a->rows != b->rows || a->cols != b->cols || a->dtype != DTYPE_F32 || b->dtype != DTYPE_F32) return 0;
    for (int r = 0; r < a->rows; r++) {
        int rb = qk && a_halves != b_halves ? other_layout_row(r, hd, a_halves) : r;
        for (int c = 0; c < a->cols; c++)   /* either may be in column panels (model.h mat_offset) */
            if (memcmp((const float *)a->data + mat_offset(a, r, c), (const float *)b->data + mat_offset(b, rb, c), sizeof(float)))
                return 0;
    }
    return 1;
}

static int same_model(const Model *a, const Model *b) {
    const Config *c = &a->cfg, *d = &b->cfg;
    if (c->dim != d->dim || c->n_layers != d->n_layers || c->n_heads != d->n_heads || c->n_kv_heads != d->n_kv_heads ||
        c->hidden_dim != d->hidden_dim || c->vocab_size != d->vocab_size || c->head_dim != d->head_dim ||
        c->max_seq_len != d->max_seq_len || c->norm_eps != d->norm_eps || c->rope_theta != d->rope_theta ||
        c->tied_embeddings != d->tied_embeddings || c->bos_id != d->bos_id || c->eos_id != d->eos_id) {
        fprintf(stderr, "  configs differ\n");
        return 0;
    }
    int hd = c->head_dim, ah = c->rope_pairing_halves, bh = d->rope_pairing_halves, bad = 0;
    size_t v = (size_t)c->dim * sizeof(float);
    bad += !same_mat(&a->w.token_embedding, &b->w.token_embedding, 0, hd, ah, bh);
    bad += !same_mat(&a->w.classifier, &b->w.classifier, 0, hd, ah, bh);
    bad += memcmp(a->w.final_norm, b->w.final_norm, v) != 0;
    for (int l = 0; l < c->n_layers; l++) {
        const LayerWeights *x = &a->w.layers[l], *y = &b->w.layers[l];
        int lb = !same_mat(&x->wq, &y->wq, 1, hd, ah, bh) + !same_mat(&x->wk, &y->wk, 1, hd, ah, bh) +
                 !same_mat(&x->wv, &y->wv, 0, hd, ah, bh) + !same_mat(&x->wo, &y->wo, 0, hd, ah, bh) +
                 !same_mat(&x->w_gate, &y->w_gate, 0, hd, ah, bh) + !same_mat(&x->w_up, &y->w_up, 0, hd, ah, bh) +
                 !same_mat(&x->w_down, &y->w_down, 0, hd, ah, bh) +
                 (memcmp(x->attn_norm, y->attn_norm, v) != 0) + (memcmp(x->ffn_norm, y->ffn_norm, v) != 0);
        if (lb) fprintf(stderr, "  layer %d: %d tensors differ\n", l, lb);
        bad += lb;
    }
    return bad == 0;
}

/* N_IDS x vocab logits of a fixed prompt (malloc'ed), NULL on failure. */
static float *logits(const Model *m) {
    int ids[N_IDS];
    for (int i = 0; i < N_IDS; i++) ids[i] = i == 0 ? 1 : (i * 37 + 3) % m->cfg.vocab_size;
    float *out = malloc((size_t)N_IDS * m->cfg.vocab_size * sizeof(float));
    Forward *f = forward_create(m, 64);
    KVCache c;
    Err err;
    int ok = forward_cache_init(m, &c, 64, &err) == 0;
    if (ok) { ok = forward(f, &c, ids, N_IDS, out, &err) == 0; kvcache_free(&c); }
    forward_free(f);
    if (!ok) { fprintf(stderr, "  forward: %s\n", err.msg); free(out); return NULL; }
    return out;
}

static double max_abs_diff(const float *a, const float *b, size_t n) {
    double d = 0;
    for (size_t i = 0; i < n; i++) {
        double e = fabs((double)a[i] - (double)b[i]);
        if (!(e <= d)) d = e;   /* NaN propagates */
    }
    return d;
}

/* Load two models; their tensors must match and their logits agree within tol (0: bitwise). */
static void compare_models(const char *pa, const char *pb, double tol) {
    Model a, b;
    if (load(&a, pa)) { CHECK(0, "cannot load %s", pa); return; }
    if (load(&b, pb)) { CHECK(0, "cannot load %s", pb); model_free(&a); return; }
    CHECK(same_model(&a, &b), "%s and %s hold different tensors", pa, pb);
    float *la = logits(&a), *lb = logits(&b);
    size_t n = (size_t)N_IDS * a.cfg.vocab_size;
    CHECK(la && lb, "forward failed");
    if (la && lb && tol == 0) CHECK(memcmp(la, lb, n * sizeof(float)) == 0, "logits differ (max %g)", max_abs_diff(la, lb, n));
    if (la && lb && tol > 0) {
        double d = max_abs_diff(la, lb, n);
        CHECK(d <= tol, "logits differ by %g > %g", d, tol);
        printf("      logits %s vs %s: max |diff| %.3g\n", strrchr(pa, '/') + 1, strrchr(pb, '/') + 1, d);
    }
    free(la); free(lb);
    model_free(&a); model_free(&b);
}

/* Load a model and its tokenizer as kvlab convert does, and write `out`. */
static int convert(const char *src, const char *out, int dtype, const char *name) {
    Model m;
    Err err;
    if (model_load(&m, src, DTYPE_F32, &err)) { fprintf(stderr, "  %s\n", err.msg); return -1; }
    Tokenizer *tok = m.tokenizer_path[0] ? tokenizer_load(m.tokenizer_path, &err) : NULL;
    ConvertOpts o = { .dtype = dtype < 0 ? m.file_dtype : (DType)dtype, .name = name, .force = 1 };
    int gguf = strstr(out, ".gguf") != NULL;
    int rc = gguf ? convert_write_gguf(&m, tok, out, &o, &err)
                  : convert_write_hf(&m, tok, m.tokenizer_path[0] ? m.tokenizer_path : NULL, out, &o, &err);
    if (rc) fprintf(stderr, "  convert %s -> %s: %s\n", src, out, err.msg);
    tokenizer_free(tok);
    model_free(&m);
    return rc;
}

static char *slurp(const char *path, size_t *size) {
    char *data;
    Err err;
    if (read_file(path, &data, size, &err)) { fprintf(stderr, "  %s\n", err.msg); return NULL; }
    return data;
}

static int write_all(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(p, 1, n, f) == n;
    if (f) ok &= fclose(f) == 0;
    return ok ? 0 : -1;
}

/* ---- the round trips --------------------------------------------------------------------- */

static void round_trips(void) {
    const char *s260 = shared("models/stories260k/stories260K.bin"), *demo = shared("models/demo-25m");
    CASE("stories260k (llama2.c f32) -> GGUF: same tensors, bit-identical logits") {
        CHECK(convert(s260, p_s_gguf, -1, "stories260k") == 0, "convert");
        compare_models(s260, p_s_gguf, 0);
    }
    CASE("stories260k GGUF -> HF dir: same tensors (q/k permuted to HF), logits within 1e-5") {
        CHECK(convert(p_s_gguf, p_s_hf, -1, NULL) == 0, "convert");
        compare_models(s260, p_s_hf, 1e-5);
    }
    CASE("llama2.c -> GGUF -> HF -> GGUF: the two GGUF files are byte-identical") {
        CHECK(convert(p_s_hf, p_s_gguf2, -1, "stories260k") == 0, "convert");
        size_t n1 = 0, n2 = 0;
        char *a = slurp(p_s_gguf, &n1), *b = slurp(p_s_gguf2, &n2);
        CHECK(a && b && n1 == n2 && memcmp(a, b, n1) == 0, "sizes %zu vs %zu or bytes differ", n1, n2);
        free(a); free(b);
    }
    CASE("demo-25m (HF bf16) -> GGUF: same tensors (q/k un-permuted), logits within 1e-5") {
        CHECK(convert(demo, p_d_gguf, -1, NULL) == 0, "convert");
        compare_models(demo, p_d_gguf, 1e-5);
    }
    CASE("demo-25m GGUF -> HF dir: same tensors and bit-identical logits to the original") {
        CHECK(convert(p_d_gguf, p_d_hf, -1, NULL) == 0, "convert");
        compare_models(demo, p_d_hf, 0);
        Model m;
        if (load(&m, p_d_hf) == 0) {
            CHECK(m.file_dtype == DTYPE_BF16, "HF output dtype %s", dtype_name(m.file_dtype));
            model_free(&m);
        }
    }
    CASE("demo-25m -> GGUF --dtype f16: every value is the f16 rounding of the bf16 one") {
        CHECK(convert(demo, tmp("d16.gguf"), DTYPE_F16, NULL) == 0, "convert");
        Model a, b;
        if (load(&a, demo) == 0 && load(&b, tmp("d16.gguf")) == 0) {
            CHECK(b.file_dtype == DTYPE_F16, "dtype %s", dtype_name(b.file_dtype));
            const float *x = a.w.layers[3].w_down.data, *y = b.w.layers[3].w_down.data;
            size_t n = (size_t)a.cfg.dim * a.cfg.hidden_dim, bad = 0;
            for (size_t i = 0; i < n; i++) bad += f16_to_f32(f32_to_f16(x[i])) != y[i];
            CHECK(bad == 0, "%zu values differ", bad);
            model_free(&a); model_free(&b);
        }
    }
}

/* ---- metadata -------------------------------------------------------------------------------- */

static int64_t get_int(const GgufFile *g, const char *key, uint32_t want_type) {
    const GgufKV *kv = gguf_find(g, key);
    int64_t v = -999;
    Err err;
    if (!kv || kv->type != want_type) {
        fprintf(stderr, "  %s: %s\n", key, kv ? gguf_value_type_name(kv->type) : "missing");
        return -999;
    }
    gguf_get_int(g, key, INT64_MIN, INT64_MAX, &v, &err);
    return v;
}

static int has_str(const GgufFile *g, const char *key, const char *want) {
    GgufStr s;
    Err err;
    return gguf_get_str(g, key, &s, &err) == 1 && s.len == strlen(want) && memcmp(s.ptr, want, s.len) == 0;
}

static double get_f32(const GgufFile *g, const char *key) {
    const GgufKV *kv = gguf_find(g, key);
    double v = -999;
    Err err;
    if (kv && kv->type == GGUF_F32) gguf_get_float(g, key, &v, &err);
    return v;
}

/* llama.cpp reads tensors laid out back to back, each aligned. */
static int layout_ok(const GgufFile *g) {
    uint64_t next = 0, a = g->alignment;
    if (g->data_offset % a) return 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        const GgufTensor *t = &g->tensors[i];
        if (t->offset != next) return 0;
        next = t->offset + (t->n_bytes + a - 1) / a * a;
    }
    return g->data_offset + next == g->size;
}

static void check_tokenizer_keys(const GgufFile *g, int n_vocab) {
    const GgufKV *tk = gguf_find(g, "tokenizer.ggml.tokens"), *sc = gguf_find(g, "tokenizer.ggml.scores"),
                 *ty = gguf_find(g, "tokenizer.ggml.token_type");
    CHECK(has_str(g, "tokenizer.ggml.model", "llama"), "tokenizer.ggml.model");
    CHECK(tk && tk->type == GGUF_ARRAY && tk->arr_type == GGUF_STRING && tk->arr_n == (uint64_t)n_vocab, "tokens");
    CHECK(sc && sc->arr_type == GGUF_F32 && sc->arr_n == (uint64_t)n_vocab, "scores");
    CHECK(ty && ty->arr_type == GGUF_I32 && ty->arr_n == (uint64_t)n_vocab, "token_type");
    if (tk && ty && tk->arr_n == ty->arr_n) {
        GgufStr *s = malloc(tk->arr_n * sizeof *s);
        gguf_array_strings(tk, s);
        CHECK(s[0].len == 5 && !memcmp(s[0].ptr, "<unk>", 5) && gguf_array_int(ty, 0) == 2, "token 0 <unk> UNKNOWN");
        CHECK(s[1].len == 3 && !memcmp(s[1].ptr, "<s>", 3) && gguf_array_int(ty, 1) == 3, "token 1 <s> CONTROL");
        CHECK(gguf_array_int(ty, 2) == 3 && gguf_array_int(ty, 3) == 6 && gguf_array_int(ty, 3 + 255) == 6, "types 2, 3, 258");
        CHECK(s[3].len == 6 && !memcmp(s[3].ptr, "<0x00>", 6), "token 3 <0x00>");
        CHECK(gguf_array_int(ty, 3 + 256) == 1, "token 259 NORMAL");
        free(s);
    }
    CHECK(get_int(g, "tokenizer.ggml.bos_token_id", GGUF_U32) == 1, "bos");
    CHECK(get_int(g, "tokenizer.ggml.eos_token_id", GGUF_U32) == 2, "eos");
    CHECK(get_int(g, "tokenizer.ggml.unknown_token_id", GGUF_U32) == 0, "unk");
}

static void metadata(void) {
    CASE("stories260k GGUF metadata: llama keys with llama.cpp's types, tokenizer, layout") {
        size_t size;
        char *bytes = slurp(p_s_gguf, &size);
        GgufFile g;
        Err err;
        if (bytes && gguf_parse(&g, p_s_gguf, bytes, size, &err) == 0) {
            CHECK(g.version == 3 && g.alignment == 32, "version %u alignment %u", g.version, g.alignment);
            CHECK(has_str(&g, "general.architecture", "llama") && has_str(&g, "general.name", "stories260k"), "general");
            CHECK(get_int(&g, "general.alignment", GGUF_U32) == 32 && get_int(&g, "general.file_type", GGUF_U32) == 0, "alignment/file_type");
            CHECK(get_int(&g, "llama.block_count", GGUF_U32) == 5 && get_int(&g, "llama.embedding_length", GGUF_U32) == 64 &&
                  get_int(&g, "llama.feed_forward_length", GGUF_U32) == 172 && get_int(&g, "llama.context_length", GGUF_U32) == 512,
                  "shape keys");
            CHECK(get_int(&g, "llama.attention.head_count", GGUF_U32) == 8 && get_int(&g, "llama.attention.head_count_kv", GGUF_U32) == 4 &&
                  get_int(&g, "llama.rope.dimension_count", GGUF_U32) == 8 && get_int(&g, "llama.vocab_size", GGUF_U32) == 512, "heads");
            CHECK(get_f32(&g, "llama.attention.layer_norm_rms_epsilon") == (double)1e-5f && get_f32(&g, "llama.rope.freq_base") == 10000.0, "eps/theta");
            check_tokenizer_keys(&g, 512);
            const GgufTensor *e = gguf_find_tensor(&g, "token_embd.weight"), *q = gguf_find_tensor(&g, "blk.4.attn_k.weight");
            CHECK(e && e->n_dims == 2 && e->dims[0] == 64 && e->dims[1] == 512 && e->type == GGML_F32, "token_embd dims");
            CHECK(q && q->n_dims == 2 && q->dims[0] == 64 && q->dims[1] == 32, "attn_k dims {dim, kv_dim}");
            CHECK(!gguf_find_tensor(&g, "output.weight") && g.n_tensors == 2 + 9 * 5, "tied: no output.weight, %llu tensors",
                  (unsigned long long)g.n_tensors);
            CHECK(layout_ok(&g), "tensors not back to back and aligned");
            gguf_free(&g);
        } else CHECK(0, "parse: %s", err.msg);
        free(bytes);
    }
    CASE("demo-25m GGUF metadata: bf16 matrices, f32 norms, file_type 32") {
        size_t size;
        char *bytes = slurp(p_d_gguf, &size);
        GgufFile g;
        Err err;
        if (bytes && gguf_parse(&g, p_d_gguf, bytes, size, &err) == 0) {
            CHECK(get_int(&g, "general.file_type", GGUF_U32) == 32, "file_type");
            CHECK(get_int(&g, "llama.attention.head_count", GGUF_U32) == 5 && get_int(&g, "llama.context_length", GGUF_U32) == 4096, "keys");
            check_tokenizer_keys(&g, 32000);
            const GgufTensor *q = gguf_find_tensor(&g, "blk.0.attn_q.weight"), *n = gguf_find_tensor(&g, "blk.0.ffn_norm.weight");
            CHECK(q && q->type == GGML_BF16 && n && n->type == GGML_F32 && n->n_dims == 1, "types");
            CHECK(layout_ok(&g), "layout");
            gguf_free(&g);
        } else CHECK(0, "parse: %s", err.msg);
        free(bytes);
    }
}

/* ---- rewriting a GGUF (odd alignment, extra keys, damage) ----------------------------------------- */

typedef struct {
    uint32_t alignment;
    int extra_keys;
    const char *drop_tensor;      /* leave this tensor out */
    const char *add_key_twice;    /* repeat this key */
    int deep_nesting;             /* add an array nested too deep */
    const char *bias_tensor;      /* add an unexpected tensor (copy of blk.0.attn_norm) */
} Rewrite;

static void le(uint8_t *p, uint64_t v, int n) { for (int i = 0; i < n; i++) p[i] = (uint8_t)(v >> (8 * i)); }

/* Keys of every value type, arrays of each, nested arrays, an empty array. */
static void put_extra_keys(GgufWriter *w) {
    uint8_t b[64];
    le(b, 0xAB, 1); gguf_put_raw(w, "test.u8", GGUF_U8, b, 1);
    le(b, 0xFF, 1); gguf_put_raw(w, "test.i8", GGUF_I8, b, 1);
    le(b, 65535, 2); gguf_put_raw(w, "test.u16", GGUF_U16, b, 2);
    le(b, 0x8000, 2); gguf_put_raw(w, "test.i16", GGUF_I16, b, 2);
    gguf_put_u32(w, "test.u32", 4000000000u);
    gguf_put_i32(w, "test.i32", -7);
    gguf_put_f32(w, "test.f32", 3.5f);
    gguf_put_bool(w, "test.bool", 1);
    gguf_put_str(w, "test.string", "h\xC3\xA9llo, w\xC3\xB6rld");
    le(b, UINT64_MAX, 8); gguf_put_raw(w, "test.u64", GGUF_U64, b, 8);
    le(b, (uint64_t)INT64_MIN, 8); gguf_put_raw(w, "test.i64", GGUF_I64, b, 8);
    double d = -2.25; uint64_t u; memcpy(&u, &d, 8); le(b, u, 8); gguf_put_raw(w, "test.f64", GGUF_F64, b, 8);
    for (uint32_t t = 0; t <= GGUF_F64; t++) {   /* an array of each fixed type: 3 elements of zeros/ones */
        uint64_t fs = t == GGUF_U8 || t == GGUF_I8 || t == GGUF_BOOL ? 1 : t <= GGUF_I16 ? 2 : t <= GGUF_F32 ? 4 : 8;
        if (t == GGUF_STRING || t == GGUF_ARRAY) continue;
        char key[64];
        snprintf(key, sizeof key, "test.array.%s", gguf_value_type_name(t));
        memset(b, 0, sizeof b);
        le(b, t, 4); le(b + 4, 3, 8); b[12] = 1;
        gguf_put_raw(w, key, GGUF_ARRAY, b, 12 + 3 * fs);
    }
    const char *strs[] = { "a", "", "\xE2\x96\x81the" };
    gguf_put_str_array(w, "test.array.string", strs, NULL, 3);
    gguf_put_i32_array(w, "test.array.empty", NULL, 0);
    /* [[1, 2], []] of u32, and [[["x"]]] of strings */
    uint8_t n1[] = { 9, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0,
                     4, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0,
                     4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 };
    gguf_put_raw(w, "test.nested.u32", GGUF_ARRAY, n1, sizeof n1);
    uint8_t n2[] = { 9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0,
                     9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0,
                     8, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 'x' };
    gguf_put_raw(w, "test.nested.strings", GGUF_ARRAY, n2, sizeof n2);
}

/* An array nested GGUF_MAX_DEPTH + 2 deep. */
static void put_deep(GgufWriter *w) {
    uint8_t b[12 * (GGUF_MAX_DEPTH + 3)];
    size_t k = 0;
    for (int d = 0; d < GGUF_MAX_DEPTH + 2; d++, k += 12) { le(b + k, GGUF_ARRAY, 4); le(b + k + 4, 1, 8); }
    le(b + k, GGUF_U8, 4); le(b + k + 4, 0, 8); k += 12;
    gguf_put_raw(w, "test.deep", GGUF_ARRAY, b, k);
}

static int rewrite(const char *src, const char *dst, const Rewrite *r) {
    size_t size;
    char *bytes = slurp(src, &size);
    GgufFile g;
    Err err;
    if (!bytes || gguf_parse(&g, src, bytes, size, &err)) { free(bytes); return -1; }
    GgufWriter *w = gguf_writer_new(r->alignment);
    if (r->extra_keys) put_extra_keys(w);
    if (r->deep_nesting) put_deep(w);
    for (uint64_t i = 0; i < g.n_kv; i++) {
        char key[256];
        const GgufKV *kv = &g.kv[i];
        snprintf(key, sizeof key, "%.*s", (int)kv->key.len, kv->key.ptr);
        if (!strcmp(key, "general.alignment")) continue;   /* the writer writes its own */
        gguf_put_raw(w, key, kv->type, kv->val, kv->val_size);
        if (r->add_key_twice && !strcmp(key, r->add_key_twice)) gguf_put_raw(w, key, kv->type, kv->val, kv->val_size);
    }
    /* the data as one stream, in chunks that straddle tensors */
    size_t total = 0, k = 0;
    for (uint64_t i = 0; i < g.n_tensors; i++) total += g.tensors[i].n_bytes;
    const GgufTensor *bias_src = gguf_find_tensor(&g, "blk.0.attn_norm.weight");
    if (r->bias_tensor) total += bias_src->n_bytes;
    uint8_t *data = malloc(total);
    int rc = 0;
    for (uint64_t i = 0; i < g.n_tensors && rc == 0; i++) {
        const GgufTensor *t = &g.tensors[i];
        if (r->drop_tensor && !strcmp(t->name, r->drop_tensor)) continue;
        rc = gguf_add_tensor(w, t->name, t->type, t->n_dims, t->dims, &err);
        memcpy(data + k, t->data, t->n_bytes);
        k += t->n_bytes;
    }
    if (r->bias_tensor && rc == 0) {
        rc = gguf_add_tensor(w, r->bias_tensor, bias_src->type, 1, bias_src->dims, &err);
        memcpy(data + k, bias_src->data, bias_src->n_bytes);
        k += bias_src->n_bytes;
    }
    FILE *f = fopen(dst, "wb");
    if (rc == 0 && f) rc = gguf_write_header(w, f, dst, &err);
    for (size_t off = 0; rc == 0 && f && off < k; off += 7919)
        rc = gguf_write_data(w, data + off, k - off < 7919 ? k - off : 7919, &err);
    if (rc == 0 && f) rc = gguf_finish(w, &err);
    if (f) rc |= fclose(f);
    if (rc) fprintf(stderr, "  rewrite: %s\n", err.msg);
    free(data);
    gguf_writer_free(w);
    gguf_free(&g);
    free(bytes);
    return f ? rc : -1;
}

static void odd_layouts(void) {
    uint32_t aligns[] = { 48, 64 };
    for (int i = 0; i < 2; i++) {
        char name[128], path[64];
        snprintf(name, sizeof name, "GGUF with alignment %u and extra keys of every type (nested arrays) loads, same logits", aligns[i]);
        snprintf(path, sizeof path, "odd%u.gguf", aligns[i]);
        CASE(name) {
            Rewrite r = { .alignment = aligns[i], .extra_keys = 1 };
            CHECK(rewrite(p_s_gguf, tmp(path), &r) == 0, "rewrite");
            size_t size;
            char *bytes = slurp(tmp(path), &size);
            GgufFile g;
            Err err;
            if (bytes && gguf_parse(&g, path, bytes, size, &err) == 0) {
                CHECK(g.alignment == aligns[i] && g.data_offset % aligns[i] == 0 && layout_ok(&g), "alignment %u", g.alignment);
                int64_t v;
                CHECK(gguf_get_int(&g, "test.u64", 0, INT64_MAX, &v, &err) == -1, "u64 max is out of int64 range");
                CHECK(gguf_get_int(&g, "test.i64", INT64_MIN, 0, &v, &err) == 1 && v == INT64_MIN, "i64");
                CHECK(gguf_get_int(&g, "test.i16", INT64_MIN, 0, &v, &err) == 1 && v == -32768, "i16");
                double d;
                CHECK(gguf_get_float(&g, "test.f64", &d, &err) == 1 && d == -2.25, "f64");
                const GgufKV *kv = gguf_find(&g, "test.nested.u32");
                CHECK(kv && kv->arr_type == GGUF_ARRAY && kv->arr_n == 2, "nested");
                gguf_free(&g);
            } else CHECK(0, "parse: %s", err.msg);
            free(bytes);
            compare_models(p_s_gguf, tmp(path), 0);
        }
    }
}

/* ---- damage ---------------------------------------------------------------------------------------- */

/* Loading must fail with one line naming the file and containing `frag`. */
static void expect_refused(const char *path, const char *frag) {
    Model m;
    Err err = { "" };
    if (model_load(&m, path, DTYPE_F32, &err) == 0) { model_free(&m); CHECK(0, "%s loaded", path); return; }
    const char *base = strrchr(path, '/') + 1;
    CHECK(strstr(err.msg, base) && strstr(err.msg, frag) && !strchr(err.msg, '\n'), "message '%s' lacks '%s'", err.msg, frag);
    printf("      %s\n", err.msg + (strstr(err.msg, base) ? (size_t)(strstr(err.msg, base) - err.msg) : 0));
}

typedef struct { uint8_t *b; size_t n; GgufFile g; } Image;

static int image(Image *im) {
    Err err;
    im->b = (uint8_t *)slurp(p_s_gguf, &im->n);
    return im->b && gguf_parse(&im->g, p_s_gguf, im->b, im->n, &err) == 0 ? 0 : -1;
}

/* File offsets of a tensor info's fields. */
static uint64_t off_ndims(const GgufTensor *t) { return t->info_pos + 8 + strlen(t->name); }
static uint64_t off_dims(const GgufTensor *t) { return off_ndims(t) + 4; }
static uint64_t off_type(const GgufTensor *t) { return off_dims(t) + 8 * t->n_dims; }
static uint64_t off_offset(const GgufTensor *t) { return off_type(t) + 4; }

/* Patch n bytes at `at` with v (little-endian) in a copy, write it as `name`, expect refusal. */
static void patched(const Image *im, const char *name, uint64_t at, uint64_t v, int n, const char *frag) {
    uint8_t *c = malloc(im->n);
    memcpy(c, im->b, im->n);
    le(c + at, v, n);
    CHECK(write_all(tmp(name), c, im->n) == 0, "write");
    expect_refused(tmp(name), frag);
    free(c);
}

static void damage_header(const Image *im) {
    const GgufTensor *q = gguf_find_tensor(&im->g, "blk.0.attn_q.weight");
    const GgufKV *arch = gguf_find(&im->g, "general.architecture");
    CASE("refused: bad magic") patched(im, "magic.gguf", 0, 0x46554758, 4, "not a GGUF file");
    CASE("accepted: version 2 (the same layout as 3)") {
        uint8_t *c = malloc(im->n);
        memcpy(c, im->b, im->n);
        le(c + 4, 2, 4);
        write_all(tmp("v2.gguf"), c, im->n);
        compare_models(p_s_gguf, tmp("v2.gguf"), 0);
        free(c);
    }
    CASE("refused: version 4") patched(im, "v4.gguf", 4, 4, 4, "GGUF version 4 is not supported");
    CASE("refused: version 1 (u32 counts)") patched(im, "v1.gguf", 4, 1, 4, "GGUF version 1 is not supported");
    CASE("refused: big-endian file") patched(im, "be.gguf", 4, 0x03000000, 4, "big-endian");
    CASE("refused: tensor count huge") patched(im, "ntensors.gguf", 8, 1ull << 40, 8, "tensor count 1099511627776 cannot fit");
    CASE("refused: metadata count huge") patched(im, "nkv.gguf", 16, UINT64_MAX, 8, "metadata count");
    CASE("refused: key length past EOF") patched(im, "keylen.gguf", 24, 1ull << 50, 8, "key length 1125899906842624 runs past the end");
    CASE("refused: string value length past EOF") patched(im, "strlen.gguf", (uint64_t)(arch->val - im->b), im->n, 8, "string length");
    CASE("refused: value type 13") patched(im, "vtype.gguf", (uint64_t)(arch->val - im->b) - 4, 13, 4, "value type 13");
    CASE("refused: n_dims 5") patched(im, "ndims.gguf", off_ndims(q), 5, 4, "n_dims 5");
    CASE("refused: dims overflow") {
        uint8_t *c = malloc(im->n);
        memcpy(c, im->b, im->n);
        le(c + off_dims(q), 1ull << 40, 8);
        le(c + off_dims(q) + 8, 1ull << 40, 8);
        write_all(tmp("overflow.gguf"), c, im->n);
        expect_refused(tmp("overflow.gguf"), "overflow");
        free(c);
    }
    CASE("refused: unknown ggml type 4") patched(im, "type4.gguf", off_type(q), 4, 4, "unknown ggml type 4");
    CASE("refused: tensor offset past EOF") patched(im, "offset.gguf", off_offset(q), 1ull << 40, 8, "runs past the end of the file");
    CASE("refused: misaligned tensor offset") patched(im, "misaligned.gguf", off_offset(q), q->offset + 4, 8, "not a multiple of the alignment 32");
    CASE("refused: bool value 2") {
        Rewrite r = { .extra_keys = 1 };
        CHECK(rewrite(p_s_gguf, tmp("bool.gguf"), &r) == 0, "rewrite");
        size_t n;
        uint8_t *c = (uint8_t *)slurp(tmp("bool.gguf"), &n);
        GgufFile g;
        Err err;
        if (c && gguf_parse(&g, "bool.gguf", c, n, &err) == 0) {
            uint64_t at = (uint64_t)(gguf_find(&g, "test.bool")->val - c);
            gguf_free(&g);
            c[at] = 2;
            write_all(tmp("bool.gguf"), c, n);
            expect_refused(tmp("bool.gguf"), "bool value 2");
        } else CHECK(0, "parse");
        free(c);
    }
}

static void damage_model(const Image *im) {
    const GgufTensor *q = gguf_find_tensor(&im->g, "blk.0.attn_q.weight"), *k = gguf_find_tensor(&im->g, "blk.0.attn_k.weight");
    const GgufKV *arch = gguf_find(&im->g, "general.architecture");
    CASE("refused: quantised Q4_0 tensor, named") patched(im, "q4.gguf", off_type(q), GGML_Q4_0, 4, "tensor 'blk.0.attn_q.weight' has ggml type Q4_0 (2)");
    CASE("refused: quantised Q8_0 tensor, named") patched(im, "q8.gguf", off_type(q), GGML_Q8_0, 4, "ggml type Q8_0 (8): quantised tensors are not supported");
    CASE("refused: integer tensor type I32") patched(im, "i32.gguf", off_type(q), 26, 4, "has ggml type I32 (26): not a float type");
    CASE("refused: wrong shape") patched(im, "shape.gguf", off_dims(k) + 8, 16, 8, "'blk.0.attn_k.weight' has dims {64, 16} but the metadata implies {64, 32}");
    CASE("refused: architecture gpt2") {
        uint64_t at = (uint64_t)(arch->val - im->b) + 8;
        uint8_t *c = malloc(im->n);
        memcpy(c, im->b, im->n);
        memcpy(c + at, "gpt2 ", 5);   /* same length: "gpt2 " */
        write_all(tmp("arch.gguf"), c, im->n);
        expect_refused(tmp("arch.gguf"), "architecture 'gpt2 ' is not supported");
        free(c);
    }
    CASE("refused: missing tensor") {
        Rewrite r = { .drop_tensor = "blk.1.ffn_up.weight" };
        CHECK(rewrite(p_s_gguf, tmp("missing.gguf"), &r) == 0, "rewrite");
        expect_refused(tmp("missing.gguf"), "required tensor 'blk.1.ffn_up.weight' is missing");
    }
    CASE("refused: unexpected extra tensor (a bias)") {
        Rewrite r = { .bias_tensor = "blk.0.attn_q.bias" };
        CHECK(rewrite(p_s_gguf, tmp("bias.gguf"), &r) == 0, "rewrite");
        expect_refused(tmp("bias.gguf"), "unexpected tensor 'blk.0.attn_q.bias'");
    }
    CASE("refused: duplicate key") {
        Rewrite r = { .add_key_twice = "general.name" };
        CHECK(rewrite(p_s_gguf, tmp("dupkey.gguf"), &r) == 0, "rewrite");
        expect_refused(tmp("dupkey.gguf"), "metadata key 'general.name' appears twice");
    }
    CASE("refused: arrays nested too deep") {
        Rewrite r = { .deep_nesting = 1 };
        CHECK(rewrite(p_s_gguf, tmp("deep.gguf"), &r) == 0, "rewrite");
        expect_refused(tmp("deep.gguf"), "nested deeper than");
    }
    CASE("refused: alignment 12") {
        Rewrite r = { .alignment = 12 };
        CHECK(rewrite(p_s_gguf, tmp("align12.gguf"), &r) == 0, "rewrite");
        expect_refused(tmp("align12.gguf"), "general.alignment 12 must be a positive multiple of 8");
    }
    CASE("refused: truncated in the tensor data") {
        CHECK(write_all(tmp("trunc.gguf"), im->b, im->n / 2) == 0, "write");
        expect_refused(tmp("trunc.gguf"), "truncated GGUF: tensor");
    }
    CASE("refused: truncated in the metadata") {
        CHECK(write_all(tmp("trunc2.gguf"), im->b, 300) == 0, "write");
        expect_refused(tmp("trunc2.gguf"), "truncated or corrupt GGUF: tensor count 47 cannot fit in a file of 300 bytes");
    }
    CASE("refused: truncated in the tensor infos") {
        const GgufTensor *last = &im->g.tensors[im->g.n_tensors - 1];
        CHECK(write_all(tmp("trunc3.gguf"), im->b, (size_t)off_dims(last) + 10) == 0, "write");
        char frag[128];
        snprintf(frag, sizeof frag, "tensor '%s': dimension runs past the end of the file", last->name);
        expect_refused(tmp("trunc3.gguf"), frag);
    }
}

/* Every cut of the header and seeded byte flips: a clean error or a parse, never a crash (ASan). */
static void fuzz(const Image *im) {
    CASE("every truncation of the header and 3000 byte flips parse or fail cleanly") {
        Err err;
        GgufFile g;
        size_t header = im->g.data_offset, bad_ok = 0;
        for (size_t cut = 0; cut < header; cut += 3) {
            uint8_t *c = malloc(cut + 1);
            memcpy(c, im->b, cut);
            if (gguf_parse(&g, "cut.gguf", c, cut, &err) == 0) { bad_ok++; gguf_free(&g); }
            else CHECK(strstr(err.msg, "cut.gguf") && !strchr(err.msg, '\n'), "message %s", err.msg);
            free(c);
        }
        CHECK(bad_ok == 0, "%zu truncated headers parsed", bad_ok);
        uint64_t x = 88172645463325252ull;
        uint8_t *c = malloc(im->n);
        for (int it = 0; it < 3000; it++) {
            memcpy(c, im->b, im->n);
            for (int f = 0; f < 4; f++) {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                c[x % header] ^= (uint8_t)(1u << (x >> 60 & 7));
            }
            if (gguf_parse(&g, "flip.gguf", c, im->n, &err) == 0) gguf_free(&g);
            else CHECK(strstr(err.msg, "flip.gguf") != NULL, "message %s", err.msg);
        }
        free(c);
    }
}

/* ---- the embedded tokenizer ------------------------------------------------------------------------- */

static int *encode(const Tokenizer *t, const char *text, int *n) {
    Err err;
    int need = tokenizer_encode(t, text, 1, NULL, 0, &err);
    int *ids = malloc((size_t)(need > 0 ? need : 1) * sizeof *ids);
    *n = need >= 0 ? tokenizer_encode(t, text, 1, ids, need, &err) : -1;
    return ids;
}

static int same_encoding(const Tokenizer *a, const Tokenizer *b, const char *text) {
    int na, nb;
    int *x = encode(a, text, &na), *y = encode(b, text, &nb);
    int same = na == nb && na >= 0 && memcmp(x, y, (size_t)na * sizeof *x) == 0;
    free(x); free(y);
    return same;
}

static void golden_tokenizer(void) {
    Err err;
    Tokenizer *emb = tokenizer_load(p_d_gguf, &err);
    Tokenizer *ref = tokenizer_load(shared("models/demo-25m/tokenizer.model"), &err);
    char hfpath[200];
    snprintf(hfpath, sizeof hfpath, "%s/tokenizer.model", p_d_hf);
    Tokenizer *gen = tokenizer_load(hfpath, &err);   /* written from the GGUF vocabulary */
    size_t size;
    char *json = slurp(shared("golden/tokenizer_llama2.json"), &size);
    cJSON *root = json ? cJSON_Parse(json) : NULL;
    CASE("embedded GGUF tokenizer (and the tokenizer.model written from it) encode the golden texts") {
        CHECK(emb && ref && gen && root, "load: %s", err.msg);
        int n_cases = 0, n_golden = 0;
        const cJSON *c;
        cJSON_ArrayForEach(c, cJSON_GetObjectItem(root, "cases")) {
            const char *text = cJSON_GetObjectItem(c, "text")->valuestring;
            const cJSON *ids = cJSON_GetObjectItem(c, "ids_with_bos");
            int n;
            int *got = encode(emb, text, &n), match = n == cJSON_GetArraySize(ids);
            for (int i = 0; match && i < n; i++) match = got[i] == cJSON_GetArrayItem(ids, i)->valueint;
            n_golden += match;
            n_cases++;
            CHECK(same_encoding(emb, ref, text) && same_encoding(gen, ref, text), "case %d differs from tokenizer.model", n_cases);
            free(got);
        }
        /* one golden text holds a NUL, which cJSON cuts: it cannot match */
        CHECK(n_cases >= 20 && n_golden >= n_cases - 1, "%d of %d golden cases", n_golden, n_cases);
        CHECK(tokenizer_bos_id(emb) == 1 && tokenizer_eos_id(emb) == 2, "bos/eos");
    }
    CASE("stories260k's tok512.bin embedded in its GGUF encodes like tok512.bin") {
        Tokenizer *a = tokenizer_load(p_s_gguf, &err), *b = tokenizer_load(shared("models/stories260k/tok512.bin"), &err);
        const char *texts[] = { "Once upon a time, there was a little girl named Lily.", "  two  spaces ", "caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC", "" };
        CHECK(a && b, "load");
        for (int i = 0; a && b && i < 4; i++) CHECK(same_encoding(a, b, texts[i]), "text %d", i);
        tokenizer_free(a); tokenizer_free(b);
    }
    cJSON_Delete(root);
    free(json);
    tokenizer_free(emb); tokenizer_free(ref); tokenizer_free(gen);
}

/* ---- main -------------------------------------------------------------------------------------------- */

static int rm_entry(const char *path, const struct stat *sb, int type, struct FTW *ftw) {
    (void)sb; (void)type; (void)ftw;
    return remove(path);
}

int main(void) {
    snprintf(root, sizeof root, "/tmp/kvlab_gguf_XXXXXX");
    if (!mkdtemp(root)) { perror("mkdtemp"); return 1; }
    snprintf(p_s_gguf, sizeof p_s_gguf, "%s/s.gguf", root);
    snprintf(p_s_hf, sizeof p_s_hf, "%s/s_hf", root);
    snprintf(p_s_gguf2, sizeof p_s_gguf2, "%s/s2.gguf", root);
    snprintf(p_d_gguf, sizeof p_d_gguf, "%s/d.gguf", root);
    snprintf(p_d_hf, sizeof p_d_hf, "%s/d_hf", root);
    round_trips();
    metadata();
    odd_layouts();
    Image im;
    if (image(&im) == 0) {
        damage_header(&im);
        damage_model(&im);
        fuzz(&im);
        gguf_free(&im.g);
    } else CASE("stories260k GGUF image") CHECK(0, "cannot read %s", p_s_gguf);
    free(im.b);
    golden_tokenizer();
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return check_summary();
}
