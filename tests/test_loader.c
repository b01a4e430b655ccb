/* test_loader.c — the HF safetensors loader and the synth writer.
 *
 * Writes small random checkpoints with synth (library calls, not the CLI) into
 * a temporary directory, loads them back and checks: tensors equal the synth
 * values rounded to the file's dtype; sharded == single file; bf16 files give
 * the same logits as f32 files holding the bf16-rounded values; tied/untied
 * heads; GQA. Then damages files one way at a time and checks that loading
 * fails with a message naming the file and the problem. Also loads demo-25m. */
#include <cjson/cJSON.h>
#include <ftw.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "engine/forward.h"
#include "model/llama_tensors.h"
#include "model/model.h"
#include "formats/safetensors.h"
#include "model/synth.h"

#define SMALL_SHAPE "dim=64,layers=2,heads=4,kv_heads=2,ffn=96,vocab=300"
#define N_IDS 24

static char root[64];
static int dir_counter;

/* ---- helpers ---------------------------------------------------------------- */

static void small_opts(SynthOpts *o, DType dt, int shards, int tied) {
    synth_defaults(o);
    Err err;
    if (synth_shape_parse(SMALL_SHAPE, &o->cfg, &err) != 0) { fprintf(stderr, "%s\n", err.msg); exit(1); }
    o->cfg.tied_embeddings = tied;
    o->dtype = dt;
    o->shards = shards;
    o->seed = 1234;
    o->norm_std = 0.1f;      /* norms != 1 so a swapped norm is noticed */
    o->progress = 0;
}

/* Write a checkpoint into a fresh directory under root; returns its path (static buffer ring). */
static const char *make(const SynthOpts *o) {
    static char paths[8][256];
    char *p = paths[dir_counter % 8];
    snprintf(p, 256, "%s/ckpt%d", root, dir_counter++);
    Err err;
    if (synth_write(o, p, &err) != 0) {
        fprintf(stderr, "synth_write failed: %s\n", err.msg);
        exit(1);
    }
    return p;
}

static const char *make_small(DType dt, int shards, int tied) {
    SynthOpts o;
    small_opts(&o, dt, shards, tied);
    return make(&o);
}

static float round_as(DType dt, float v) {
    if (dt == DTYPE_BF16) return bf16_to_f32(f32_to_bf16(v));
    if (dt == DTYPE_F16) return f16_to_f32(f32_to_f16(v));
    return v;
}

/* Bitwise: loaded (compute f32) == synth values rounded to the file's dtype. */
static int same_values(const SynthOpts *o, const char *name, const float *got, size_t n, DType file_dt) {
    float *want = malloc(n * sizeof *want);
    synth_values(o, name, 0, n, want);
    for (size_t i = 0; i < n; i++) want[i] = round_as(file_dt, want[i]);
    int same = memcmp(want, got, n * sizeof *want) == 0;
    free(want);
    return same;
}

/* A matrix's elements in row-major order (it may be stored in column panels:
 * model.h mat_offset), as fp32; malloc'ed. */
static float *rows_of(const Mat *a) {
    float *out = malloc((size_t)a->rows * a->cols * sizeof(float));
    for (int r = 0; r < a->rows; r++)
        for (int c = 0; c < a->cols; c++) {
            size_t at = mat_offset(a, r, c);
            out[(size_t)r * a->cols + c] = a->dtype == DTYPE_F32 ? ((const float *)a->data)[at]
                                                                 : bf16_to_f32(((const uint16_t *)a->data)[at]);
        }
    return out;
}

static int same_mat_values(const SynthOpts *o, const char *name, const Mat *a, DType file_dt) {
    float *got = rows_of(a);
    int same = same_values(o, name, got, (size_t)a->rows * a->cols, file_dt);
    free(got);
    return same;
}

/* Same bf16 values, whatever the layout of each. */
static int same_bf16_mat(const Mat *a, const Mat *b) {
    if (a->rows != b->rows || a->cols != b->cols || a->dtype != DTYPE_BF16 || b->dtype != DTYPE_BF16) return 0;
    for (int r = 0; r < a->rows; r++)
        for (int c = 0; c < a->cols; c++)
            if (((const uint16_t *)a->data)[mat_offset(a, r, c)] != ((const uint16_t *)b->data)[mat_offset(b, r, c)]) return 0;
    return 1;
}

static int check_all_tensors(const Model *m, const SynthOpts *o, DType file_dt) {
    const Config *c = &m->cfg;
    int bad = 0;
    size_t dim = (size_t)c->dim;
    bad += !same_mat_values(o, "model.embed_tokens.weight", &m->w.token_embedding, file_dt);
    bad += !same_values(o, "model.norm.weight", m->w.final_norm, dim, file_dt);
    for (int l = 0; l < c->n_layers; l++) {
        const LayerWeights *w = &m->w.layers[l];
        struct { const char *n; const Mat *a; } mats[] = {
            { "self_attn.q_proj.weight", &w->wq }, { "self_attn.k_proj.weight", &w->wk },
            { "self_attn.v_proj.weight", &w->wv }, { "self_attn.o_proj.weight", &w->wo },
            { "mlp.gate_proj.weight", &w->w_gate }, { "mlp.up_proj.weight", &w->w_up },
            { "mlp.down_proj.weight", &w->w_down },
        };
        struct { const char *n; const float *p; } vecs[] = {
            { "input_layernorm.weight", w->attn_norm }, { "post_attention_layernorm.weight", w->ffn_norm },
        };
        char name[128];
        for (size_t i = 0; i < sizeof mats / sizeof mats[0]; i++) {
            snprintf(name, sizeof name, "model.layers.%d.%s", l, mats[i].n);
            if (!same_mat_values(o, name, mats[i].a, file_dt)) { bad++; fprintf(stderr, "  differs: %s\n", name); }
        }
        for (size_t i = 0; i < sizeof vecs / sizeof vecs[0]; i++) {
            snprintf(name, sizeof name, "model.layers.%d.%s", l, vecs[i].n);
            if (!same_values(o, name, vecs[i].p, dim, file_dt)) { bad++; fprintf(stderr, "  differs: %s\n", name); }
        }
    }
    if (!c->tied_embeddings) bad += !same_mat_values(o, "lm_head.weight", &m->w.classifier, file_dt);
    return bad;
}

/* Logits of a fixed prompt (N_IDS x vocab), malloc'ed; NULL if loading failed.
 * weights: WEIGHTS_COPY or WEIGHTS_IN_PLACE. */
static float *logits_with(const char *dir, DType compute, int weights) {
    Model m;
    Err err;
    if (model_load_weights(&m, dir, compute, weights, &err) != 0) { fprintf(stderr, "  load %s: %s\n", dir, err.msg); return NULL; }
    int ids[N_IDS];
    for (int i = 0; i < N_IDS; i++) ids[i] = (i * 37 + 1) % m.cfg.vocab_size;
    float *logits = malloc((size_t)N_IDS * m.cfg.vocab_size * sizeof(float));
    Forward *f = forward_create(&m, 64);
    KVCache c;
    int ok = forward_cache_init(&m, &c, 128, &err) == 0;
    if (ok) ok = forward(f, &c, ids, N_IDS, logits, &err) == 0;
    if (!ok) fprintf(stderr, "  forward: %s\n", err.msg);
    if (ok) kvcache_free(&c);
    forward_free(f);
    model_free(&m);
    if (!ok) { free(logits); return NULL; }
    return logits;
}

static float *logits_of(const char *dir, DType compute) { return logits_with(dir, compute, WEIGHTS_COPY); }

static int logits_equal(const float *a, const float *b, size_t n) {
    return a && b && memcmp(a, b, n * sizeof(float)) == 0;
}

static int all_finite(const float *a, size_t n) {
    for (size_t i = 0; a && i < n; i++)
        if (!isfinite(a[i])) return 0;
    return a != NULL;
}

/* Loading must fail, with a message containing every given fragment. */
static int load_fails_with(const char *dir, const char *frag1, const char *frag2) {
    Model m;
    Err err = { "" };
    int rc = model_load(&m, dir, DTYPE_F32, &err);
    if (rc == 0) { model_free(&m); fprintf(stderr, "  %s: loaded, but should have failed\n", dir); return 0; }
    int ok = rc == -1 && strstr(err.msg, frag1) && (!frag2 || strstr(err.msg, frag2)) && !strchr(err.msg, '\n');
    if (!ok) fprintf(stderr, "  message lacks '%s'/'%s': %s\n", frag1, frag2 ? frag2 : "", err.msg);
    return ok;
}

static char *slurp(const char *path, size_t *size) {
    char *data;
    Err err;
    if (read_file(path, &data, size, &err) != 0) { fprintf(stderr, "%s\n", err.msg); exit(1); }
    return data;
}

static void spit(const char *path, const void *data, size_t size) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, size, f) != size || fclose(f) != 0) { perror(path); exit(1); }
}

static const char *in_dir(const char *dir, const char *name) {
    static char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return p;
}

/* Parse a safetensors header, let `edit` change it, write it back (padded) with the same data. */
static void edit_header(const char *path, void (*edit)(cJSON *root)) {
    size_t size;
    char *data = slurp(path, &size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = (n << 8) | (uint8_t)data[i];
    cJSON *root = cJSON_ParseWithLength(data + 8, (size_t)n);
    edit(root);
    char *json = cJSON_PrintUnformatted(root);
    size_t len = strlen(json), padded = (len + 7) & ~(size_t)7;
    size_t out_size = 8 + padded + (size - 8 - (size_t)n);
    char *out = malloc(out_size);
    for (int i = 0; i < 8; i++) out[i] = (char)((uint64_t)padded >> (8 * i));
    memcpy(out + 8, json, len);
    memset(out + 8 + len, ' ', padded - len);
    memcpy(out + 8 + padded, data + 8 + n, size - 8 - (size_t)n);
    spit(path, out, out_size);
    free(out);
    cJSON_free(json);
    cJSON_Delete(root);
    free(data);
}

static void edit_json(const char *path, void (*edit)(cJSON *root)) {
    size_t size;
    char *text = slurp(path, &size);
    cJSON *root = cJSON_Parse(text);
    edit(root);
    char *out = cJSON_Print(root);
    spit(path, out, strlen(out));
    cJSON_free(out);
    cJSON_Delete(root);
    free(text);
}

static cJSON *tensor_entry(cJSON *root, const char *name) { return cJSON_GetObjectItemCaseSensitive(root, name); }

static void set_offsets(cJSON *t, double b, double e) {
    cJSON_ReplaceItemInObject(t, "data_offsets", cJSON_CreateDoubleArray((double[]){ b, e }, 2));
}

/* header edits */
static void ed_norm_offsets_past_end(cJSON *r) { set_offsets(tensor_entry(r, "model.norm.weight"), 1e9, 1e9 + 256); }
static void ed_offsets_vs_shape(cJSON *r) {
    cJSON *t = tensor_entry(r, "model.norm.weight");
    double b = cJSON_GetArrayItem(cJSON_GetObjectItem(t, "data_offsets"), 0)->valuedouble;
    set_offsets(t, b, b + 128);    /* 64 floats need 256 bytes */
}
static void ed_dtype_i8(cJSON *r) {
    cJSON *t = tensor_entry(r, "model.layers.1.mlp.up_proj.weight");
    cJSON_ReplaceItemInObject(t, "dtype", cJSON_CreateString("I8"));
    cJSON_ReplaceItemInObject(t, "shape", cJSON_CreateIntArray((int[]){ 96, 256 }, 2));   /* same bytes */
}
static void ed_dtype_f8(cJSON *r) {
    cJSON *t = tensor_entry(r, "model.layers.0.self_attn.q_proj.weight");
    cJSON_ReplaceItemInObject(t, "dtype", cJSON_CreateString("F8_E4M3"));
    cJSON_ReplaceItemInObject(t, "shape", cJSON_CreateIntArray((int[]){ 64, 256 }, 2));
}
static void ed_dtype_unknown(cJSON *r) {
    cJSON_ReplaceItemInObject(tensor_entry(r, "model.norm.weight"), "dtype", cJSON_CreateString("Q4_K"));
}
static void ed_missing_tensor(cJSON *r) { cJSON_DeleteItemFromObject(r, "model.layers.1.self_attn.v_proj.weight"); }
static void ed_wrong_shape(cJSON *r) {
    cJSON_ReplaceItemInObject(tensor_entry(r, "model.layers.0.self_attn.k_proj.weight"), "shape",
                              cJSON_CreateIntArray((int[]){ 64, 32 }, 2));   /* same bytes, transposed */
}

/* config edits */
static void ed_rope_linear(cJSON *r) {
    cJSON *s = cJSON_CreateObject();
    cJSON_AddStringToObject(s, "type", "linear");
    cJSON_AddNumberToObject(s, "factor", 2.0);
    cJSON_ReplaceItemInObject(r, "rope_scaling", s);
}
static void ed_rope_llama3(cJSON *r) {
    cJSON *s = cJSON_CreateObject();
    cJSON_AddNumberToObject(s, "rope_theta", 500000.0);
    cJSON_AddStringToObject(s, "rope_type", "llama3");
    cJSON_AddItemToObject(r, "rope_parameters", s);
}
static void ed_rope_default_params(cJSON *r) {
    cJSON *s = cJSON_CreateObject();
    cJSON_AddNumberToObject(s, "rope_theta", 500000.0);
    cJSON_AddStringToObject(s, "rope_type", "default");
    cJSON_AddItemToObject(r, "rope_parameters", s);
    cJSON_DeleteItemFromObject(r, "rope_theta");
}
static void ed_no_kv_heads(cJSON *r) { cJSON_DeleteItemFromObject(r, "num_key_value_heads"); }
static void ed_mistral(cJSON *r) { cJSON_ReplaceItemInObject(r, "model_type", cJSON_CreateString("mistral")); }
static void ed_heads_5(cJSON *r) {
    cJSON_DeleteItemFromObject(r, "head_dim");
    cJSON_ReplaceItemInObject(r, "num_attention_heads", cJSON_CreateNumber(5));
    cJSON_ReplaceItemInObject(r, "num_key_value_heads", cJSON_CreateNumber(5));
}
static void ed_kv_3(cJSON *r) { cJSON_ReplaceItemInObject(r, "num_key_value_heads", cJSON_CreateNumber(3)); }
static void ed_no_hidden(cJSON *r) { cJSON_DeleteItemFromObject(r, "hidden_size"); }
static void ed_untie(cJSON *r) { cJSON_ReplaceItemInObject(r, "tie_word_embeddings", cJSON_CreateFalse()); }
static void ed_tie(cJSON *r) { cJSON_ReplaceItemInObject(r, "tie_word_embeddings", cJSON_CreateTrue()); }
static void ed_no_head_dim(cJSON *r) {
    cJSON_DeleteItemFromObject(r, "head_dim");
    ed_rope_default_params(r);
}

/* index edits */
static void ed_index_drop(cJSON *r) {
    cJSON_DeleteItemFromObject(cJSON_GetObjectItem(r, "weight_map"), "model.layers.0.mlp.gate_proj.weight");
}
static void ed_index_escape(cJSON *r) {
    cJSON_ReplaceItemInObject(cJSON_GetObjectItem(r, "weight_map"), "model.embed_tokens.weight",
                              cJSON_CreateString("../model-00001-of-00003.safetensors"));
}

static int rm_entry(const char *p, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st; (void)flag; (void)ftw;
    return remove(p);
}

/* ---- cases -------------------------------------------------------------------- */

static void test_values(void) {
    DType dts[3] = { DTYPE_F32, DTYPE_BF16, DTYPE_F16 };
    for (int i = 0; i < 3; i++) {
        char name[64];
        snprintf(name, sizeof name, "%s file loads as the rounded synth values (compute f32)", dtype_name(dts[i]));
        CASE(name) {
            SynthOpts o;
            small_opts(&o, dts[i], 1, 0);
            const char *dir = make(&o);
            Model m;
            Err err;
            CHECK(model_load(&m, dir, DTYPE_F32, &err) == 0, "%s", err.msg);
            CHECK(m.file_dtype == dts[i], "file dtype %s", dtype_name(m.file_dtype));
            CHECK(!strcmp(m.format, "safetensors"), "format %s", m.format);
            CHECK(m.cfg.rope_pairing_halves == 1, "HF pairing");
            CHECK(m.cfg.n_kv_heads == 2 && m.cfg.head_dim == 16 && m.cfg.hidden_dim == 96, "shape");
            CHECK(m.tokenizer_path[0] == '\0', "no tokenizer: %s", m.tokenizer_path);
            CHECK(check_all_tensors(&m, &o, dts[i]) == 0, "tensors differ");
            model_free(&m);
        }
    }
    CASE("bf16 file, compute bf16: copied by default, in place with WEIGHTS_IN_PLACE; f32 file converts with RNE") {
        SynthOpts o;
        small_opts(&o, DTYPE_BF16, 1, 0);
        const char *dir = make(&o);
        Model m;
        Err err;
        Model mapped;
        CHECK(model_load_weights(&mapped, dir, DTYPE_BF16, WEIGHTS_IN_PLACE, &err) == 0, "%s", err.msg);
        CHECK(mapped.converted_bytes == 0 && mapped.in_place_bytes > 0, "converted %zu bytes", mapped.converted_bytes);
        uintptr_t p = (uintptr_t)mapped.w.layers[1].wq.data, base = (uintptr_t)mapped.maps[0].data;
        CHECK(p > base && p < base + mapped.maps[0].size_bytes, "wq points into the mmap");
        CHECK(model_load(&m, dir, DTYPE_BF16, &err) == 0, "%s", err.msg);
        CHECK(m.in_place_bytes == 0 && m.converted_bytes == mapped.in_place_bytes, "copied %zu of %zu bytes",
              m.converted_bytes, mapped.in_place_bytes);
        for (int l = 0; l < m.cfg.n_layers; l++) {
            const Mat *a[] = { &m.w.layers[l].wq, &m.w.layers[l].wk, &m.w.layers[l].wv, &m.w.layers[l].wo,
                               &m.w.layers[l].w_gate, &m.w.layers[l].w_up, &m.w.layers[l].w_down };
            const Mat *b[] = { &mapped.w.layers[l].wq, &mapped.w.layers[l].wk, &mapped.w.layers[l].wv, &mapped.w.layers[l].wo,
                               &mapped.w.layers[l].w_gate, &mapped.w.layers[l].w_up, &mapped.w.layers[l].w_down };
            for (int i = 0; i < 7; i++) {
                p = (uintptr_t)a[i]->data;
                CHECK(!(p >= base && p < base + mapped.maps[0].size_bytes) && p % 64 == 0, "layer %d matrix %d is an aligned copy", l, i);
                CHECK(same_bf16_mat(a[i], b[i]), "layer %d matrix %d differs", l, i);
            }
        }
        CHECK(memcmp(m.w.token_embedding.data, mapped.w.token_embedding.data,
                     (size_t)m.cfg.vocab_size * m.cfg.dim * 2) == 0, "embedding differs");
        model_free(&m);
        model_free(&mapped);
        small_opts(&o, DTYPE_F32, 1, 0);
        dir = make(&o);
        CHECK(model_load(&m, dir, DTYPE_BF16, &err) == 0, "%s", err.msg);
        float v[64 * 96];
        synth_values(&o, "model.layers.1.mlp.down_proj.weight", 0, 64 * 96, v);
        const uint16_t *h = m.w.layers[1].w_down.data;
        int bad = 0;
        for (int i = 0; i < 64 * 96; i++) bad += h[i] != f32_to_bf16(v[i]);
        CHECK(bad == 0, "%d bf16 values differ", bad);
        CHECK(m.w.layers[1].w_down.dtype == DTYPE_BF16, "compute dtype");
        model_free(&m);
    }
}

static void test_shards_and_logits(void) {
    CASE("3 shards == single file: tensors and logits bit-identical (f32, bf16)") {
        DType dts[2] = { DTYPE_F32, DTYPE_BF16 };
        size_t n = (size_t)N_IDS * 300;
        for (int i = 0; i < 2; i++) {
            SynthOpts o;
            small_opts(&o, dts[i], 3, 0);
            const char *sharded = make(&o);
            CHECK(path_exists(in_dir(sharded, "model-00003-of-00003.safetensors")), "third shard");
            CHECK(path_exists(in_dir(sharded, "model.safetensors.index.json")), "index");
            CHECK(!path_exists(in_dir(sharded, "model.safetensors")), "no single file");
            Model m;
            Err err;
            CHECK(model_load(&m, sharded, DTYPE_F32, &err) == 0, "%s", err.msg);
            CHECK(m.n_maps == 3, "%d files mapped", m.n_maps);
            CHECK(check_all_tensors(&m, &o, dts[i]) == 0, "sharded tensors differ");
            model_free(&m);
            float *a = logits_of(sharded, DTYPE_F32);
            float *b = logits_of(make_small(dts[i], 1, 0), DTYPE_F32);
            CHECK(all_finite(a, n), "finite logits");
            CHECK(logits_equal(a, b, n), "%s: sharded vs single logits differ", dtype_name(dts[i]));
            free(a);
            free(b);
        }
    }
    CASE("bf16 file == f32 file of bf16-rounded values: identical logits (compute f32 and bf16)") {
        SynthOpts o;
        small_opts(&o, DTYPE_F32, 2, 0);
        o.round_to_bf16 = 1;
        const char *f32dir = make(&o);
        const char *bf16dir = make_small(DTYPE_BF16, 1, 0);
        size_t n = (size_t)N_IDS * 300;
        float *a = logits_of(f32dir, DTYPE_F32), *b = logits_of(bf16dir, DTYPE_F32);
        CHECK(logits_equal(a, b, n), "compute f32: logits differ");
        free(a); free(b);
        a = logits_of(f32dir, DTYPE_BF16);
        b = logits_of(bf16dir, DTYPE_BF16);
        CHECK(logits_equal(a, b, n), "compute bf16: logits differ");
        /* and unrounded f32 weights do give different logits: the comparison has teeth */
        float *c = logits_of(make_small(DTYPE_F32, 1, 0), DTYPE_F32);
        CHECK(c && a && !logits_equal(a, c, n), "unrounded f32 should differ");
        free(a); free(b); free(c);
    }
}

/* Matrices wider than MAT_PANEL_COLS are copied into column panels (model.h
 * Mat); the embedding, and matrices used in place from the file, stay row-major.
 * Same values either way, and logits within fp32 summation-order rounding. */
static void test_panels(void) {
    CASE("wide matrices load in column panels: same values, logits as the row-major in-place model") {
        SynthOpts o;
        synth_defaults(&o);
        Err err;
        CHECK(synth_shape_parse("dim=1040,layers=1,heads=4,kv_heads=2,ffn=1100,vocab=300", &o.cfg, &err) == 0, "%s", err.msg);
        o.dtype = DTYPE_F32;
        o.seed = 99;
        o.progress = 0;
        const char *dir = make(&o);
        Model m, mapped;
        CHECK(model_load(&m, dir, DTYPE_F32, &err) == 0, "%s", err.msg);
        const LayerWeights *w = &m.w.layers[0];
        const Mat *wide[] = { &w->wq, &w->wk, &w->wv, &w->wo, &w->w_gate, &w->w_up, &w->w_down, &m.w.classifier };
        for (size_t i = 0; i < sizeof wide / sizeof wide[0]; i++)
            CHECK(wide[i]->panel_cols == MAT_PANEL_COLS && mat_n_panels(wide[i]) == 2, "matrix %zu: panels of %d, %d of them",
                  i, wide[i]->panel_cols, mat_n_panels(wide[i]));
        CHECK(m.w.token_embedding.panel_cols == 0, "embedding row-major");
        CHECK(check_all_tensors(&m, &o, DTYPE_F32) == 0, "values in panels differ from the file");
        /* the second panel of w_down is 76 columns wide and starts after rows x 1024 elements */
        int col0, width;
        CHECK(mat_panel_offset(&w->w_down, 1, &col0, &width) == (size_t)1040 * 1024 && col0 == 1024 && width == 76, "panel 1");
        CHECK(mat_offset(&w->w_down, 3, 1030) == (size_t)1040 * 1024 + 3 * 76 + 6, "offset of (3, 1030)");
        int r, c;
        mat_row_col(&w->w_down, (size_t)1040 * 1024 + 3 * 76 + 6, &r, &c);
        CHECK(r == 3 && c == 1030, "back to (%d, %d)", r, c);
        CHECK(model_load_weights(&mapped, dir, DTYPE_F32, WEIGHTS_IN_PLACE, &err) == 0, "%s", err.msg);
        CHECK(mapped.w.layers[0].w_down.panel_cols == 0 && mapped.in_place_bytes > 0, "in place: row-major");
        model_free(&mapped);
        model_free(&m);
        size_t n = (size_t)N_IDS * 300;
        for (int d = 0; d < 2; d++) {
            DType compute = d ? DTYPE_BF16 : DTYPE_F32;
            float *a = logits_with(dir, compute, WEIGHTS_COPY), *b = logits_with(dir, compute, WEIGHTS_IN_PLACE);
            double worst = 0, scale = 0;
            for (size_t i = 0; a && b && i < n; i++) {
                if (fabs(a[i] - b[i]) > worst) worst = fabs(a[i] - b[i]);
                if (fabs(b[i]) > scale) scale = fabs(b[i]);
            }
            CHECK(all_finite(a, n) && all_finite(b, n), "finite logits");
            CHECK(worst <= 1e-5 * (1 + scale), "compute %s: panels vs row-major max |dlogit| %.3g (max |logit| %.3g)",
                  dtype_name(compute), worst, scale);
            free(a); free(b);
        }
    }
}

static void test_heads(void) {
    CASE("tied and untied classifiers") {
        const char *tied = make_small(DTYPE_F32, 1, 1), *untied = make_small(DTYPE_F32, 1, 0);
        Model m;
        Err err;
        CHECK(model_load(&m, tied, DTYPE_F32, &err) == 0, "%s", err.msg);
        CHECK(m.cfg.tied_embeddings && m.w.classifier.data == m.w.token_embedding.data, "tied: classifier is the embedding");
        long long per_layer = 2 * 64 + 2 * 64 * 64 + 2 * 32 * 64 + 3 * 96 * 64;
        CHECK(m.n_params == 300LL * 64 + 64 + 2 * per_layer, "n_params %lld counts the embedding once", m.n_params);
        model_free(&m);
        CHECK(model_load(&m, untied, DTYPE_F32, &err) == 0, "%s", err.msg);
        CHECK(!m.cfg.tied_embeddings && m.w.classifier.data != m.w.token_embedding.data, "untied head");
        model_free(&m);
        /* an lm_head in the file of a tied model is ignored, as transformers does */
        edit_json(in_dir(untied, "config.json"), ed_tie);
        CHECK(model_load(&m, untied, DTYPE_F32, &err) == 0, "%s", err.msg);
        CHECK(m.w.classifier.data == m.w.token_embedding.data, "lm_head ignored when tied");
        model_free(&m);
        float *a = logits_of(untied, DTYPE_F32), *b = logits_of(tied, DTYPE_F32);
        CHECK(logits_equal(a, b, (size_t)N_IDS * 300), "tied+ignored lm_head == tied");
        free(a); free(b);
    }
    CASE("GQA, MHA and head_dim != dim/heads shapes run") {
        const char *shapes[] = { "dim=64,layers=2,heads=8,kv_heads=1,ffn=96,vocab=50",
                                 "dim=48,layers=1,heads=3,ffn=40,vocab=50",
                                 "dim=64,layers=2,heads=2,kv_heads=1,head_dim=16,ffn=80,vocab=50" };
        for (int i = 0; i < 3; i++) {
            SynthOpts o;
            small_opts(&o, DTYPE_BF16, 1, i == 1);
            Err err;
            CHECK(synth_shape_parse(shapes[i], &o.cfg, &err) == 0, "%s", err.msg);
            const char *dir = make(&o);
            float *a = logits_of(dir, DTYPE_F32);
            CHECK(all_finite(a, (size_t)N_IDS * 50), "%s: logits", shapes[i]);
            free(a);
        }
    }
}

static void test_synth(void) {
    CASE("synth is deterministic and the seed matters") {
        const char *a = make_small(DTYPE_BF16, 1, 0), *b_ = make_small(DTYPE_BF16, 1, 0);
        char b[256];
        snprintf(b, sizeof b, "%s", b_);
        size_t na, nb;
        char *x = slurp(in_dir(a, "model.safetensors"), &na), *y = slurp(in_dir(b, "model.safetensors"), &nb);
        CHECK(na == nb && memcmp(x, y, na) == 0, "same seed, different files");
        free(y);
        SynthOpts o;
        small_opts(&o, DTYPE_BF16, 1, 0);
        o.seed = 99;
        y = slurp(in_dir(make(&o), "model.safetensors"), &nb);
        CHECK(na == nb && memcmp(x, y, na) != 0, "different seed, same file");
        free(x); free(y);
        /* header data start is 8-aligned (zero-copy f32 needs it) */
        StFile sf;
        Err err;
        x = slurp(in_dir(a, "model.safetensors"), &na);
        CHECK(st_parse(&sf, "x", x, na, &err) == 0, "%s", err.msg);
        CHECK(sf.header_len % 8 == 0 && sf.n_tensors == 2 + 18 + 1, "header %llu, %d tensors",
              (unsigned long long)sf.header_len, sf.n_tensors);
        st_free(&sf);
        free(x);
    }
    CASE("synth refuses an existing dir; --force replaces only a checkpoint dir") {
        SynthOpts o;
        small_opts(&o, DTYPE_F16, 1, 0);
        const char *dir = make(&o);
        Err err;
        CHECK(synth_write(&o, dir, &err) == -1 && strstr(err.msg, "already exists"), "%s", err.msg);
        o.force = 1;
        o.dtype = DTYPE_F32;
        CHECK(synth_write(&o, dir, &err) == 0, "%s", err.msg);
        Model m;
        CHECK(model_load(&m, dir, DTYPE_F32, &err) == 0 && m.file_dtype == DTYPE_F32, "replaced: %s", err.msg);
        if (m.n_maps) model_free(&m);
        char other[256];
        snprintf(other, sizeof other, "%s/not_a_checkpoint", root);
        mkdir(other, 0755);
        spit(in_dir(other, "notes.txt"), "keep me", 7);
        CHECK(synth_write(&o, other, &err) == -1 && strstr(err.msg, "refusing"), "%s", err.msg);
        CHECK(path_exists(in_dir(other, "notes.txt")), "user file kept");
        o.shards = 1000;
        CHECK(synth_write(&o, dir, &err) == -1 && strstr(err.msg, "--shards"), "%s", err.msg);
    }
    CASE("synth shape presets and errors") {
        Config c;
        Err err;
        CHECK(synth_shape_parse("llama2-7b", &c, &err) == 0 && c.dim == 4096 && c.hidden_dim == 11008 &&
              c.n_layers == 32 && c.n_heads == 32 && c.n_kv_heads == 32 && c.vocab_size == 32000 &&
              c.max_seq_len == 4096 && !c.tied_embeddings, "llama2-7b");
        SynthOpts o;
        synth_defaults(&o);
        o.cfg = c;
        CHECK(synth_data_bytes(&o) == 2ull * 6738415616ull, "llama2-7b bf16 bytes %llu", (unsigned long long)synth_data_bytes(&o));
        CHECK(synth_shape_parse("demo-25m", &c, &err) == 0 && c.dim == 320 && c.head_dim == 64 && c.tied_embeddings, "demo");
        const char *bad[][2] = { { "dim=64,layers=2,heads=5,ffn=96,vocab=300", "not a multiple" },
                                 { "dim=64,layers=2,heads=4,kv_heads=3,ffn=96,vocab=300", "not a multiple" },
                                 { "dim=64,layers=2,heads=4,ffn=96", "missing vocab" },
                                 { "dim=64,layers=x,heads=4,ffn=96,vocab=3", "layers=x" },
                                 { "dim=64,colour=2", "unknown key 'colour'" },
                                 { "llama3-8b", "not KEY=VALUE" } };
        for (int i = 0; i < 6; i++)
            CHECK(synth_shape_parse(bad[i][0], &c, &err) == -1 && strstr(err.msg, bad[i][1]) && strstr(err.msg, "--shape"),
                  "%s: %s", bad[i][0], err.msg);
    }
}

static void test_demo(void) {
    CASE("demo-25m loads (bf16, tied, MHA 5 x 64) as bf16 and as f32") {
        char dir[512];
        shared_path(dir, sizeof dir, "models/demo-25m");
        Model m;
        Err err;
        CHECK(model_load(&m, dir, DTYPE_BF16, &err) == 0, "%s", err.msg);
        const Config *c = &m.cfg;
        CHECK(c->dim == 320 && c->hidden_dim == 864 && c->n_layers == 12 && c->n_heads == 5 && c->n_kv_heads == 5 &&
              c->head_dim == 64 && c->vocab_size == 32000 && c->max_seq_len == 4096 && c->tied_embeddings &&
              c->bos_id == 1 && c->eos_id == 2 && c->rope_pairing_halves, "config");
        CHECK(fabsf(c->norm_eps - 1e-5f) < 1e-12f && c->rope_theta == 10000.0f, "eps %g theta %g", c->norm_eps, c->rope_theta);
        CHECK(m.file_dtype == DTYPE_BF16 && m.converted_bytes > 0 && m.in_place_bytes == 0, "bf16 copied");
        CHECK(strstr(m.tokenizer_path, "tokenizer.model") != NULL, "tokenizer %s", m.tokenizer_path);
        CHECK(m.n_params == 32000LL * 320 + 320 + 12LL * (2 * 320 + 4 * 320 * 320 + 3 * 320 * 864), "n_params %lld", m.n_params);
        model_free(&m);
        char file[600];
        snprintf(file, sizeof file, "%s/model.safetensors", dir);
        CHECK(model_load(&m, file, DTYPE_F32, &err) == 0, "by file name: %s", err.msg);
        CHECK(m.converted_bytes > 0 && m.w.layers[3].w_up.dtype == DTYPE_F32, "converted to f32");
        model_free(&m);
    }
}

/* A safetensors file in memory: header JSON (padded to 8 bytes) + data_bytes zero bytes. */
static char *st_bytes(const char *header, size_t data_bytes, size_t *size) {
    size_t h = (strlen(header) + 7) / 8 * 8;
    *size = 8 + h + data_bytes;
    char *b = calloc(1, *size);
    for (int i = 0; i < 8; i++) b[i] = (char)((uint64_t)h >> (8 * i));
    memset(b + 8, ' ', h);
    memcpy(b + 8, header, strlen(header));
    return b;
}

static void test_bad_files(void) {
    CASE("safetensors: tensors whose byte ranges overlap are refused, naming both") {
        size_t n;
        char *b = st_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]},"
                           "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16, &n);
        StFile sf;
        Err err = {{0}};
        CHECK(st_parse(&sf, "x.safetensors", b, n, &err) != 0, "overlap accepted");
        CHECK(strstr(err.msg, "x.safetensors: tensors 'a' [0, 16] and 'b' [8, 16] overlap") != NULL, "%s", err.msg);
        free(b);
        /* the one furthest-reaching range is remembered: c overlaps a, not b */
        b = st_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[6],\"data_offsets\":[0,24]},"
                     "\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
                     "\"c\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[16,20]}}", 24, &n);
        CHECK(st_parse(&sf, "y", b, n, &err) != 0 && strstr(err.msg, "'a' [0, 24] and 'b' [4, 8]"), "%s", err.msg);
        free(b);
        /* back to back and empty tensors are fine */
        b = st_bytes("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                     "\"e\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[4,4]},"
                     "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16, &n);
        CHECK(st_parse(&sf, "z", b, n, &err) == 0, "%s", err.msg);
        st_free(&sf);
        free(b);
    }
    CASE("truncated safetensors: header describes more than the file has") {
        const char *d = make_small(DTYPE_F32, 1, 0);
        const char *p = in_dir(d, "model.safetensors");
        struct stat st;
        stat(p, &st);
        CHECK(truncate(p, st.st_size - 100) == 0, "truncate");
        CHECK(load_fails_with(d, "model.safetensors", "past the end of the data"), "truncated");
    }
    CASE("header length past EOF, absurd, or file too short") {
        const char *d = make_small(DTYPE_F32, 1, 0);
        const char *p = in_dir(d, "model.safetensors");
        size_t size;
        char *data = slurp(p, &size);
        uint64_t lens[2] = { size - 7, UINT64_MAX };
        for (int k = 0; k < 2; k++) {
            for (int i = 0; i < 8; i++) data[i] = (char)(lens[k] >> (8 * i));
            spit(p, data, size);
            CHECK(load_fails_with(d, "model.safetensors", "header length"), "len %llu", (unsigned long long)lens[k]);
        }
        spit(p, data, 5);
        CHECK(load_fails_with(d, "model.safetensors", "too short"), "5 bytes");
        free(data);
    }
    CASE("invalid JSON in config.json and in the header") {
        const char *d = make_small(DTYPE_F32, 1, 0);
        spit(in_dir(d, "config.json"), "{\"hidden_size\": 64,, }", 22);
        CHECK(load_fails_with(d, "config.json: invalid JSON near byte", NULL), "config");
        d = make_small(DTYPE_F32, 1, 0);
        const char *p = in_dir(d, "model.safetensors");
        size_t size;
        char *data = slurp(p, &size);
        data[8 + 1] = ',';          /* {,"__metadata__"... */
        spit(p, data, size);
        free(data);
        CHECK(load_fails_with(d, "model.safetensors: invalid JSON in the safetensors header", NULL), "header");
    }
    struct { void (*edit)(cJSON *); const char *frag1, *frag2, *what; } hdr[] = {
        { ed_norm_offsets_past_end, "'model.norm.weight'", "past the end of the data", "data_offsets past end" },
        { ed_offsets_vs_shape, "'model.norm.weight'", "span 128 bytes but its shape and dtype F32 need 256", "offsets vs shape" },
        { ed_dtype_i8, "'model.layers.1.mlp.up_proj.weight' has dtype I8", "only F32, BF16 and F16", "dtype I8" },
        { ed_dtype_f8, "'model.layers.0.self_attn.q_proj.weight' has dtype F8_E4M3", NULL, "dtype F8_E4M3" },
        { ed_dtype_unknown, "unknown dtype 'Q4_K'", "'model.norm.weight'", "unknown dtype" },
        { ed_missing_tensor, "required tensor 'model.layers.1.self_attn.v_proj.weight' is missing", NULL, "missing tensor" },
        { ed_wrong_shape, "'model.layers.0.self_attn.k_proj.weight' has shape [64, 32] but config.json implies [32, 64]", NULL, "wrong shape" },
    };
    for (size_t i = 0; i < sizeof hdr / sizeof hdr[0]; i++) {
        char name[96];
        snprintf(name, sizeof name, "bad header: %s", hdr[i].what);
        CASE(name) {
            const char *d = make_small(DTYPE_F32, 1, 0);
            edit_header(in_dir(d, "model.safetensors"), hdr[i].edit);
            CHECK(load_fails_with(d, "model.safetensors", hdr[i].frag1), "file + problem");
            if (hdr[i].frag2) CHECK(load_fails_with(d, hdr[i].frag2, NULL), "detail");
        }
    }
    struct { void (*edit)(cJSON *); int tied; const char *frag1, *frag2, *what; } cfg[] = {
        { ed_rope_linear, 0, "config.json", "RoPE scaling type 'linear'", "rope_scaling linear" },
        { ed_rope_llama3, 0, "config.json", "'llama3' (rope_parameters)", "rope_parameters llama3" },
        { ed_mistral, 0, "config.json", "model_type 'mistral'", "model_type mistral" },
        { ed_heads_5, 0, "config.json", "hidden_size=64 is not a multiple of num_attention_heads=5", "heads not dividing dim" },
        { ed_kv_3, 0, "config.json", "n_heads=4 is not a multiple of n_kv_heads=3", "heads not a multiple of kv heads" },
        { ed_no_hidden, 0, "config.json", "missing \"hidden_size\"", "missing key" },
        { ed_no_kv_heads, 0, "model.safetensors", "k_proj.weight' has shape [32, 64] but config.json implies [64, 64]", "kv heads default to heads" },
        { ed_untie, 1, "model.safetensors", "required tensor 'lm_head.weight' is missing", "untied without lm_head" },
    };
    for (size_t i = 0; i < sizeof cfg / sizeof cfg[0]; i++) {
        char name[96];
        snprintf(name, sizeof name, "bad config: %s", cfg[i].what);
        CASE(name) {
            const char *d = make_small(DTYPE_F32, 1, cfg[i].tied);
            edit_json(in_dir(d, "config.json"), cfg[i].edit);
            CHECK(load_fails_with(d, cfg[i].frag1, cfg[i].frag2), "file + problem");
        }
    }
    CASE("config without head_dim still loads (head_dim = hidden/heads); default rope_type accepted") {
        const char *d = make_small(DTYPE_F32, 1, 0);
        edit_json(in_dir(d, "config.json"), ed_no_head_dim);
        Model m;
        Err err;
        CHECK(model_load(&m, d, DTYPE_F32, &err) == 0 && m.cfg.head_dim == 16, "%s", err.msg);
        CHECK(m.cfg.rope_theta == 500000.0f, "rope_parameters.rope_theta read: %g", m.cfg.rope_theta);
        if (m.n_maps) model_free(&m);
    }
    CASE("bad index: missing shard, tensor not in weight_map, shard outside the directory") {
        const char *d = make_small(DTYPE_BF16, 3, 0);
        CHECK(unlink(in_dir(d, "model-00002-of-00003.safetensors")) == 0, "unlink");
        CHECK(load_fails_with(d, "model-00002-of-00003.safetensors: missing (named in model.safetensors.index.json)", NULL), "missing shard");
        d = make_small(DTYPE_BF16, 3, 0);
        edit_json(in_dir(d, "model.safetensors.index.json"), ed_index_drop);
        CHECK(load_fails_with(d, "model.safetensors.index.json: required tensor 'model.layers.0.mlp.gate_proj.weight' is missing from weight_map", NULL), "dropped");
        d = make_small(DTYPE_BF16, 3, 0);
        edit_json(in_dir(d, "model.safetensors.index.json"), ed_index_escape);
        CHECK(load_fails_with(d, "model.safetensors.index.json", "is not a file name"), "escape");
        spit(in_dir(d, "model.safetensors.index.json"), "[1,2", 4);
        CHECK(load_fails_with(d, "model.safetensors.index.json: invalid JSON", NULL), "bad index JSON");
    }
    CASE("no weights, no config") {
        const char *d = make_small(DTYPE_F32, 1, 0);
        CHECK(unlink(in_dir(d, "model.safetensors")) == 0, "unlink");
        CHECK(load_fails_with(d, "no model.safetensors or model.safetensors.index.json", NULL), "no weights");
        CHECK(unlink(in_dir(d, "config.json")) == 0, "unlink");
        CHECK(load_fails_with(d, "config.json: cannot open", NULL), "no config");
    }
}

/* Random damage must never crash: every load either succeeds or fails with a message. */
static void test_fuzz(void) {
    CASE("300 random corruptions and truncations: no crash, always a message") {
        const char *d = make_small(DTYPE_BF16, 1, 0);
        const char *p = in_dir(d, "model.safetensors");
        size_t size;
        char *orig = slurp(p, &size), *buf = malloc(size);
        uint64_t hlen = 0;
        for (int i = 7; i >= 0; i--) hlen = (hlen << 8) | (uint8_t)orig[i];
        uint64_t rng = 0x1234567;
        int silent = 0;
        for (int k = 0; k < 300; k++) {
            memcpy(buf, orig, size);
            size_t n = size;
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            if (k % 3 == 2) n = (size_t)((rng >> 33) % size);                 /* truncate anywhere */
            else
                for (int j = 0; j < 1 + k % 4; j++) {                         /* flip header bytes */
                    rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                    buf[(rng >> 33) % (8 + hlen)] = (char)(rng >> 13);
                }
            spit(p, buf, n);
            Model m;
            Err err = { "" };
            if (model_load(&m, d, DTYPE_F32, &err) == 0) model_free(&m);
            else if (!err.msg[0]) silent++;
        }
        CHECK(silent == 0, "%d failures without a message", silent);
        free(orig);
        free(buf);
    }
}

/* The one tensor table: names in the three namings, shapes from a GQA config,
 * and the Weights field each id stands for. */
static void test_tensor_table(void) {
    CASE("tensor table: names, shapes (GQA) and the Weights fields") {
        Config c = { .dim = 64, .hidden_dim = 96, .n_layers = 2, .n_heads = 4, .n_kv_heads = 2, .head_dim = 16, .vocab_size = 40 };
        char name[96];
        int rows, cols;
        llama_tensor_name(LT_WK, NAMING_HF, 1, name, sizeof name);
        CHECK(!strcmp(name, "model.layers.1.self_attn.k_proj.weight"), "%s", name);
        llama_tensor_name(LT_WO, NAMING_GGUF, 0, name, sizeof name);
        CHECK(!strcmp(name, "blk.0.attn_output.weight"), "%s", name);
        llama_tensor_name(LT_GATE, NAMING_LLAMA2C, 3, name, sizeof name);
        CHECK(!strcmp(name, "w1[3]"), "%s", name);
        llama_tensor_name(LT_CLASSIFIER, NAMING_GGUF, -1, name, sizeof name);
        CHECK(!strcmp(name, "output.weight"), "%s", name);
        llama_tensor_shape(&c, LT_WK, &rows, &cols);
        CHECK(rows == 32 && cols == 64, "wk [%d, %d]", rows, cols);
        llama_tensor_shape(&c, LT_WO, &rows, &cols);
        CHECK(rows == 64 && cols == 64, "wo [%d, %d]", rows, cols);
        llama_tensor_shape(&c, LT_DOWN, &rows, &cols);
        CHECK(rows == 64 && cols == 96, "w_down [%d, %d]", rows, cols);
        llama_tensor_shape(&c, LT_FFN_NORM, &rows, &cols);
        CHECK(rows == 64 && cols == 0, "ffn_norm [%d] (a vector)", rows);
        CHECK(llama_tensor_is_rotated(LT_WQ) && llama_tensor_is_rotated(LT_WK) && !llama_tensor_is_rotated(LT_WV),
              "q and k rows are RoPE-rotated, v's are not");
        LayerWeights layers[2] = { 0 };
        float norm = 1.0f;
        layers[1].ffn_norm = &norm;
        Weights w = { .layers = layers };
        CHECK(llama_tensor_mat(&w, LT_UP, 1) == &layers[1].w_up && llama_tensor_vec(&w, LT_UP, 1) == NULL, "w_up");
        CHECK(llama_tensor_vec(&w, LT_FFN_NORM, 1) == &norm && llama_tensor_mat(&w, LT_FFN_NORM, 1) == NULL, "ffn_norm");
        CHECK(llama_tensor_mat(&w, LT_EMBED, -1) == &w.token_embedding && llama_tensor_mat(&w, LT_CLASSIFIER, -1) == &w.classifier,
              "embedding and classifier");
    }
}

int main(void) {
    snprintf(root, sizeof root, "/tmp/kvlab_test_loader.XXXXXX");
    if (!mkdtemp(root)) { perror("mkdtemp"); return 1; }
    test_tensor_table();
    test_values();
    test_shards_and_logits();
    test_heads();
    test_panels();
    test_synth();
    test_demo();
    test_bad_files();
    test_fuzz();
    nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return check_summary();
}
