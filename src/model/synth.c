/* synth.c — random-weight Hugging Face Llama checkpoints (layout in synth.h):
 * config.json, model.safetensors or N shards + model.safetensors.index.json
 * ({"metadata": {"total_size": data bytes}, "weight_map": {tensor: shard}}).
 *
 * Values come from a counter-based generator, hash(seed, tensor name, index),
 * so any chunk of any tensor can be produced independently (in parallel, in
 * any order) and always comes out the same. */
#include "model/synth.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "model/llama_tensors.h"
#include "model/outdir.h"
#include "formats/safetensors.h"
#include "base/splitmix64.h"

#define CHUNK_ELEMS ((size_t)1 << 20)          /* generate/convert/write 1M values at a time */
#define PROGRESS_MIN_BYTES (256ull << 20)      /* smaller outputs are quick: no progress lines */

/* ---- values ------------------------------------------------------------------ */

static uint64_t tensor_key(uint64_t seed, const char *name) {
    uint64_t h = 0xcbf29ce484222325ull;        /* FNV-1a of the name */
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) h = (h ^ *p) * 0x100000001b3ull;
    return splitmix64_mix(h ^ splitmix64(seed));
}

/* Unit-variance noise from output i of the tensor's splitmix64 stream: the sum
 * of its four 16-bit quarters, uniform draws (Irwin-Hall), centred.
 * Gaussian-like, bounded (|z| < 3.5), integer-exact, so identical everywhere. */
static float noise(uint64_t key, uint64_t i) {
    uint64_t h = splitmix64_at(key, i);
    int32_t s = (int32_t)(h & 0xffff) + (int32_t)((h >> 16) & 0xffff) +
                (int32_t)((h >> 32) & 0xffff) + (int32_t)(h >> 48);
    return (float)(s - 131070);                /* variance 65536^2/3: scaled by the caller */
}
#define NOISE_TO_UNIT (1.0f / 37837.23f)       /* 1 / (65536/sqrt(3)) */

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && !strcmp(s + n - k, suffix);
}

/* value = mean + scale * noise: norms around 1, matrices around 0. */
static void tensor_law(const SynthOpts *o, const char *name, float *mean, float *scale) {
    if (ends_with(name, "layernorm.weight") || !strcmp(name, "model.norm.weight")) {
        *mean = 1.0f;
        *scale = o->norm_std * NOISE_TO_UNIT;
        return;
    }
    *mean = 0.0f;
    float std = 0.02f;
    /* outputs feeding the residual stream: GPT-2's 1/sqrt(2L) keeps its growth in check */
    if (ends_with(name, "o_proj.weight") || ends_with(name, "down_proj.weight"))
        std = 0.02f / sqrtf(2.0f * (float)o->cfg.n_layers);
    *scale = std * NOISE_TO_UNIT;
}

void synth_values(const SynthOpts *o, const char *name, uint64_t start, size_t n, float *out) {
    float mean, scale;
    tensor_law(o, name, &mean, &scale);
    uint64_t key = tensor_key(o->seed, name);
    #pragma omp parallel for schedule(static) if (n >= 65536)
    for (size_t i = 0; i < n; i++) out[i] = mean + scale * noise(key, start + i);
}

/* ---- shapes ------------------------------------------------------------------ */

void synth_defaults(SynthOpts *o) {
    memset(o, 0, sizeof *o);
    o->dtype = DTYPE_BF16;
    o->shards = 1;
    o->progress = 1;
}

static void base_config(Config *c) {
    memset(c, 0, sizeof *c);
    c->norm_eps = 1e-5f;
    c->rope_theta = 10000.0f;
    c->rope_pairing_halves = 1;
    c->bos_id = 1;
    c->eos_id = 2;
    c->max_seq_len = 4096;
}

typedef struct { const char *name; int dim, ffn, layers, heads, kv_heads, head_dim, vocab, seq, tied; } Preset;
static const Preset presets[] = {
    { "llama2-7b",  4096, 11008, 32, 32, 32, 128, 32000, 4096, 0 },
    { "llama2-13b", 5120, 13824, 40, 40, 40, 128, 32000, 4096, 0 },
    { "llama2-70b", 8192, 28672, 80, 64, 8,  128, 32000, 4096, 0 },
    { "demo-25m",   320,  864,   12, 5,  5,  64,  32000, 4096, 1 },   /* ../shared/models/demo-25m */
};

static int shape_key(Config *c, const char *key, const char *val, int *have_kv, int *have_hd, Err *err) {
    char *end = NULL;
    errno = 0;
    long v = strtol(val, &end, 10);
    if (!*val || *end || errno == ERANGE || v <= 0 || v > (1L << 30))
        return err_set(err, "--shape: '%s=%s' is not a positive integer", key, val);
    int iv = (int)v;
    if (!strcmp(key, "dim")) c->dim = iv;
    else if (!strcmp(key, "layers")) c->n_layers = iv;
    else if (!strcmp(key, "heads")) c->n_heads = iv;
    else if (!strcmp(key, "kv_heads")) { c->n_kv_heads = iv; *have_kv = 1; }
    else if (!strcmp(key, "ffn")) c->hidden_dim = iv;
    else if (!strcmp(key, "vocab")) c->vocab_size = iv;
    else if (!strcmp(key, "head_dim")) { c->head_dim = iv; *have_hd = 1; }
    else if (!strcmp(key, "seq")) c->max_seq_len = iv;
    else return err_set(err, "--shape: unknown key '%s' (known: dim, layers, heads, kv_heads, ffn, vocab, head_dim, seq)", key);
    return 0;
}

static int parse_custom_shape(const char *spec, Config *c, Err *err) {
    int have_kv = 0, have_hd = 0;
    char buf[512];
    if (strlen(spec) >= sizeof buf) return err_set(err, "--shape: too long");
    snprintf(buf, sizeof buf, "%s", spec);
    for (char *save = NULL, *item = strtok_r(buf, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        if (!eq) return err_set(err, "--shape: '%s' is not KEY=VALUE (or a preset: llama2-7b, llama2-13b, llama2-70b, demo-25m)", item);
        *eq = '\0';
        if (shape_key(c, item, eq + 1, &have_kv, &have_hd, err) != 0) return -1;
    }
    const char *need[] = { "dim", "layers", "heads", "ffn", "vocab" };
    int have[] = { c->dim, c->n_layers, c->n_heads, c->hidden_dim, c->vocab_size };
    for (int i = 0; i < 5; i++)
        if (!have[i]) return err_set(err, "--shape: missing %s=N", need[i]);
    if (!have_kv) c->n_kv_heads = c->n_heads;
    if (!have_hd) {
        if (c->dim % c->n_heads != 0)
            return err_set(err, "--shape: dim=%d is not a multiple of heads=%d (give head_dim= explicitly)", c->dim, c->n_heads);
        c->head_dim = c->dim / c->n_heads;
    }
    return 0;
}

int synth_shape_parse(const char *spec, Config *c, Err *err) {
    base_config(c);
    int found = 0;
    for (size_t i = 0; i < sizeof presets / sizeof presets[0]; i++) {
        const Preset *p = &presets[i];
        if (strcmp(spec, p->name) != 0) continue;
        c->dim = p->dim; c->hidden_dim = p->ffn; c->n_layers = p->layers; c->n_heads = p->heads;
        c->n_kv_heads = p->kv_heads; c->head_dim = p->head_dim; c->vocab_size = p->vocab;
        c->max_seq_len = p->seq; c->tied_embeddings = p->tied;
        found = 1;
    }
    if (!found && parse_custom_shape(spec, c, err) != 0) return -1;
    if (c->vocab_size <= 2) c->bos_id = c->eos_id = 0;
    return config_validate(c, "--shape", err);
}

/* ---- the tensor list ------------------------------------------------------------ */

typedef struct { char name[96]; StSpec spec; } SynthTensor;

int synth_tensor_count(const Config *c) { return 2 + LT_PER_LAYER * c->n_layers + (c->tied_embeddings ? 0 : 1); }

static void add_tensor(SynthTensor *t, int *n, const SynthOpts *o, LlamaTensor id, int layer) {
    SynthTensor *s = &t[(*n)++];
    int rows, cols;
    llama_tensor_name(id, NAMING_HF, layer, s->name, sizeof s->name);
    llama_tensor_shape(&o->cfg, id, &rows, &cols);
    s->spec.name = s->name;
    s->spec.dtype = o->dtype;
    s->spec.n_dims = cols ? 2 : 1;
    s->spec.shape[0] = (uint64_t)rows;
    s->spec.shape[1] = (uint64_t)cols;
}

/* In the order transformers' model has them: embedding, layers, norm, head. */
static SynthTensor *tensor_list(const SynthOpts *o, int *count) {
    SynthTensor *t = xcalloc((size_t)synth_tensor_count(&o->cfg), sizeof *t);
    int n = 0;
    add_tensor(t, &n, o, LT_EMBED, -1);
    for (int l = 0; l < o->cfg.n_layers; l++)
        for (int id = 0; id < LT_PER_LAYER; id++) add_tensor(t, &n, o, (LlamaTensor)id, l);
    add_tensor(t, &n, o, LT_FINAL_NORM, -1);
    if (!o->cfg.tied_embeddings) add_tensor(t, &n, o, LT_CLASSIFIER, -1);
    *count = n;
    return t;
}

uint64_t synth_data_bytes(const SynthOpts *o) {
    int n;
    SynthTensor *t = tensor_list(o, &n);
    uint64_t total = 0;
    for (int i = 0; i < n; i++) total += st_spec_bytes(&t[i].spec);
    free(t);
    return total;
}

/* Shard of each tensor: contiguous runs of about total/N bytes, none empty. */
static void assign_shards(const SynthTensor *t, int n, int n_shards, int *shard_of) {
    uint64_t total = 0, start = 0;
    for (int i = 0; i < n; i++) total += st_spec_bytes(&t[i].spec);
    int prev = -1;
    for (int i = 0; i < n; i++) {
        int want = (int)(start * (uint64_t)n_shards / total);     /* start < 2^53, N <= 64: no overflow */
        int s = want > prev ? want : prev;
        if (s > prev + 1) s = prev + 1;                          /* never skip a shard */
        if (s < n_shards - (n - i)) s = n_shards - (n - i);      /* leave a tensor for each later shard */
        if (s > n_shards - 1) s = n_shards - 1;
        shard_of[i] = prev = s;
        start += st_spec_bytes(&t[i].spec);
    }
}

/* ---- writing ------------------------------------------------------------------ */

typedef struct {
    const SynthOpts *o;
    void *bytes;                               /* one chunk in the file's dtype */
    uint64_t total, done;
    double t0, last_report;
} Writer;

static void progress(Writer *w, int final) {
    if (!w->o->progress || w->total < PROGRESS_MIN_BYTES) return;
    double now = now_seconds();
    int tty = isatty(2);
    if (!final && now - w->last_report < (tty ? 1.0 : 10.0)) return;
    w->last_report = now;
    double el = now - w->t0, rate = el > 0 ? (double)w->done / el : 0;
    double eta = rate > 0 ? (double)(w->total - w->done) / rate : 0;
    fprintf(stderr, "%ssynth: %.2f / %.2f GB (%3.0f%%), %.0f MB/s, %s %.0f s%s", tty ? "\r" : "",
            (double)w->done / 1e9, (double)w->total / 1e9, 100.0 * (double)w->done / (double)w->total,
            rate / 1e6, final ? "took" : "ETA", final ? el : eta, tty && !final ? "  " : "\n");
    fflush(stderr);
}

/* f32 -> bf16, round to nearest even: util's f32_to_bf16 inlined for the hot
 * loop (our values are never NaN); the loader test checks they agree bit for bit. */
static inline uint16_t to_bf16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return (uint16_t)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

/* Elements [start, start+n) of a tensor, generated, rounded and converted to
 * the file's dtype in one parallel pass (the values of synth_values). */
static void fill_chunk(const SynthOpts *o, const SynthTensor *t, uint64_t start, size_t n, void *out) {
    float mean, scale;
    tensor_law(o, t->name, &mean, &scale);
    uint64_t key = tensor_key(o->seed, t->name);
    DType dt = t->spec.dtype;
    int round = o->round_to_bf16;
    #pragma omp parallel for schedule(static) if (n >= 65536)
    for (size_t i = 0; i < n; i++) {
        float v = mean + scale * noise(key, start + i);
        if (dt == DTYPE_BF16) { ((uint16_t *)out)[i] = to_bf16(v); continue; }
        if (round) v = bf16_to_f32(to_bf16(v));
        if (dt == DTYPE_F32) ((float *)out)[i] = v;
        else ((uint16_t *)out)[i] = f32_to_f16(v);
    }
}

static int write_tensor(Writer *w, StWriter *sw, const SynthTensor *t, Err *err) {
    size_t es = dtype_size(t->spec.dtype);
    uint64_t n = st_spec_bytes(&t->spec) / es;
    for (uint64_t off = 0; off < n; off += CHUNK_ELEMS) {
        size_t k = n - off < CHUNK_ELEMS ? (size_t)(n - off) : CHUNK_ELEMS;
        fill_chunk(w->o, t, off, k, w->bytes);
        if (st_writer_write(sw, w->bytes, k * es, err) != 0) return -1;
        w->done += k * es;
        progress(w, 0);
    }
    return 0;
}

static void shard_name(char *out, size_t size, int i, int n) {
    if (n == 1) snprintf(out, size, "model.safetensors");
    else snprintf(out, size, "model-%05d-of-%05d.safetensors", i + 1, n);
}

static int write_shard(Writer *w, const char *dir, const SynthTensor *t, const int *shard_of, int n, int s, Err *err) {
    StSpec *specs = xcalloc((size_t)n, sizeof *specs);
    int k = 0;
    for (int i = 0; i < n; i++)
        if (shard_of[i] == s) specs[k++] = t[i].spec;
    char name[64], path[4200];
    shard_name(name, sizeof name, s, w->o->shards);
    path_join(path, sizeof path, dir, name);
    StWriter sw;
    int rc = st_writer_open(&sw, path, specs, k, err);
    for (int i = 0; rc == 0 && i < n; i++)
        if (shard_of[i] == s) rc = write_tensor(w, &sw, &t[i], err);
    if (rc == 0) rc = st_writer_close(&sw, err);
    else st_writer_abort(&sw);
    free(specs);
    return rc;
}

static int write_index(const SynthOpts *o, const char *dir, const SynthTensor *t, const int *shard_of, int n, Err *err) {
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(root, "metadata");
    cJSON_AddNumberToObject(meta, "total_size", (double)synth_data_bytes(o));
    cJSON *map = cJSON_AddObjectToObject(root, "weight_map");
    for (int i = 0; i < n; i++) {
        char name[64];
        shard_name(name, sizeof name, shard_of[i], o->shards);
        cJSON_AddStringToObject(map, t[i].name, name);
    }
    int rc = outdir_write_json(dir, "model.safetensors.index.json", root, err);
    cJSON_Delete(root);
    return rc;
}

static int write_config(const SynthOpts *o, const char *dir, Err *err) {
    cJSON *r = outdir_hf_config(&o->cfg, o->dtype);
    cJSON_AddNumberToObject(r, "initializer_range", 0.02);
    /* provenance: random weights, not a trained model (transformers keeps unknown keys) */
    cJSON_AddNumberToObject(r, "kvlab_synth_seed", (double)o->seed);
    int rc = outdir_write_json(dir, "config.json", r, err);
    cJSON_Delete(r);
    return rc;
}

static int copy_file(const char *src, const char *dst, Err *err) {
    char *data;
    size_t size;
    Err rerr;
    if (read_file(src, &data, &size, &rerr) != 0) return err_set(err, "--tokenizer %s", rerr.msg);
    FILE *out = fopen(dst, "wb");
    if (!out) { free(data); return err_set(err, "%s: cannot write: %s", dst, strerror(errno)); }
    int ok = fwrite(data, 1, size, out) == size;
    if (fclose(out) != 0) ok = 0;
    free(data);
    if (!ok) return err_set(err, "%s: copying the tokenizer failed", dst);
    return 0;
}

static int write_all(const SynthOpts *o, const char *dir, Err *err) {
    int n;
    SynthTensor *t = tensor_list(o, &n);
    int *shard_of = xcalloc((size_t)n, sizeof *shard_of);
    assign_shards(t, n, o->shards, shard_of);
    Writer w = { .o = o, .total = synth_data_bytes(o), .t0 = now_seconds() };
    w.last_report = w.t0;
    w.bytes = xmalloc(CHUNK_ELEMS * sizeof(float));
    int rc = write_config(o, dir, err);
    for (int s = 0; rc == 0 && s < o->shards; s++) rc = write_shard(&w, dir, t, shard_of, n, s, err);
    if (rc == 0 && o->shards > 1) rc = write_index(o, dir, t, shard_of, n, err);
    if (rc == 0 && o->tokenizer) {
        char dst[4200];
        path_join(dst, sizeof dst, dir, ends_with(o->tokenizer, ".bin") ? "tokenizer.bin" : "tokenizer.model");
        rc = copy_file(o->tokenizer, dst, err);
    }
    if (rc == 0) progress(&w, 1);
    free(w.bytes);
    free(shard_of);
    free(t);
    return rc;
}

static int check_opts(const SynthOpts *o, Err *err) {
    if (config_validate(&o->cfg, "--shape", err) != 0) return -1;
    if (o->dtype != DTYPE_F32 && o->dtype != DTYPE_BF16 && o->dtype != DTYPE_F16)
        return err_set(err, "--dtype: must be f32, bf16 or f16");
    int n = synth_tensor_count(&o->cfg);
    int max = n < SYNTH_MAX_SHARDS ? n : SYNTH_MAX_SHARDS;
    if (o->shards < 1 || o->shards > max)
        return err_set(err, "--shards %d: must be between 1 and %d for this shape", o->shards, max);
    if (o->tokenizer && !path_exists(o->tokenizer))
        return err_set(err, "--tokenizer %s: no such file", o->tokenizer);
    return 0;
}

int synth_write(const SynthOpts *o, const char *dir_in, Err *err) {
    char dir[OUTDIR_MAX];
    if (outdir_name(dir_in, dir, sizeof dir, err) != 0 || check_opts(o, err) != 0) return -1;
    OutDir od;
    if (outdir_begin(&od, dir, o->force, err) != 0) return -1;
    if (write_all(o, od.tmp, err) != 0) {
        outdir_abort(&od);
        return -1;
    }
    return outdir_commit(&od, err);
}
