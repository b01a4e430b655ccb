/* loader_safetensors.c — a Hugging Face Llama checkpoint directory:
 *
 *   config.json                      the shape (hidden_size, num_hidden_layers, ...)
 *   model.safetensors                all tensors in one file, or
 *   model.safetensors.index.json     {"weight_map": {tensor name: shard file}}
 *   model-0000i-of-0000n.safetensors + the shards it names
 *   tokenizer.model                  (optional) SentencePiece vocabulary
 *
 * Tensors (weights are [out_features, in_features], row-major):
 *   model.embed_tokens.weight                      [vocab, hidden]
 *   model.layers.{i}.self_attn.q_proj.weight       [heads*head_dim, hidden]
 *   model.layers.{i}.self_attn.{k,v}_proj.weight   [kv_heads*head_dim, hidden]
 *   model.layers.{i}.self_attn.o_proj.weight       [hidden, heads*head_dim]
 *   model.layers.{i}.mlp.{gate,up}_proj.weight     [intermediate, hidden]
 *   model.layers.{i}.mlp.down_proj.weight          [hidden, intermediate]
 *   model.layers.{i}.{input,post_attention}_layernorm.weight   [hidden]
 *   model.norm.weight                              [hidden]
 *   lm_head.weight                                 [vocab, hidden] unless tied
 *
 * With tie_word_embeddings an lm_head.weight in the file is ignored, as
 * transformers does (it re-ties the head to the embedding when loading).
 * HF permutes q/k for "rotate_half" RoPE (dimension i pairs with i+head_dim/2);
 * we keep the weights as stored and set cfg.rope_pairing_halves instead.
 * Files are mmap'ed; model_bind_mat copies tensors out (or uses them in place with --mmap). */
#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/llama_tensors.h"
#include "model/loaders.h"
#include "model/model.h"
#include "formats/safetensors.h"

#define INDEX_NAME "model.safetensors.index.json"
#define SINGLE_NAME "model.safetensors"

/* ---- config.json ---------------------------------------------------------- */

/* An integer config key in [min, INT_MAX]; absent or null gives `def`, or an
 * error when def < min (required). */
static int cfg_int(const cJSON *root, const char *key, int min, int def, int *out, const char *path, Err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) {
        if (def < min) return err_set(err, "%s: missing \"%s\"", path, key);
        *out = def;
        return 0;
    }
    if (cJSON_IsArray(v)) v = cJSON_GetArrayItem(v, 0);   /* e.g. several eos ids: the first */
    double d = cJSON_IsNumber(v) ? v->valuedouble : NAN;
    if (!(d >= (double)min && d <= (double)INT_MAX) || d != floor(d))
        return err_set(err, "%s: \"%s\" must be an integer >= %d", path, key, min);
    *out = (int)d;
    return 0;
}

static int cfg_float(const cJSON *obj, const char *key, double def, float *out, const char *path, Err *err) {
    const cJSON *v = obj ? cJSON_GetObjectItemCaseSensitive(obj, key) : NULL;
    if (!v || cJSON_IsNull(v)) { *out = (float)def; return 0; }
    if (!cJSON_IsNumber(v) || !isfinite(v->valuedouble))
        return err_set(err, "%s: \"%s\" must be a number", path, key);
    *out = (float)v->valuedouble;
    return 0;
}

static int cfg_bool(const cJSON *root, const char *key, int def, int *out, const char *path, Err *err) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!v || cJSON_IsNull(v)) { *out = def; return 0; }
    if (!cJSON_IsBool(v)) return err_set(err, "%s: \"%s\" must be true or false", path, key);
    *out = cJSON_IsTrue(v);
    return 0;
}

/* Only plain RoPE is implemented; a scaled variant silently computed as plain
 * RoPE would give wrong answers at long positions, so refuse it by name. */
static int check_rope_kind(const cJSON *root, const char *key, const char *path, Err *err) {
    const cJSON *o = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!o || cJSON_IsNull(o)) return 0;
    if (!cJSON_IsObject(o)) return err_set(err, "%s: \"%s\" must be null or an object", path, key);
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(o, "rope_type");
    if (!t) t = cJSON_GetObjectItemCaseSensitive(o, "type");
    if (!t || cJSON_IsNull(t)) {
        if (!strcmp(key, "rope_parameters")) return 0;   /* only rope_theta in it: plain RoPE */
        return err_set(err, "%s: \"%s\" is set but names no type: only the default RoPE is supported", path, key);
    }
    if (!cJSON_IsString(t)) return err_set(err, "%s: \"%s\" type must be a string", path, key);
    if (strcmp(t->valuestring, "default") != 0)
        return err_set(err, "%s: RoPE scaling type '%.64s' (%s) is not supported: only the default RoPE is",
                       path, t->valuestring, key);
    return 0;
}

/* Llama only: other architectures share the tensor names but not the math. */
static int check_architecture(const cJSON *root, const char *path, Err *err) {
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (mt && !cJSON_IsNull(mt) && (!cJSON_IsString(mt) || strcmp(mt->valuestring, "llama") != 0))
        return err_set(err, "%s: model_type '%.64s' is not supported (only \"llama\")", path,
                       cJSON_IsString(mt) ? mt->valuestring : "?");
    const cJSON *ar = cJSON_GetObjectItemCaseSensitive(root, "architectures");
    if (cJSON_IsArray(ar) && cJSON_GetArraySize(ar) > 0) {
        const cJSON *a0 = cJSON_GetArrayItem(ar, 0);
        if (!cJSON_IsString(a0) || strcmp(a0->valuestring, "LlamaForCausalLM") != 0)
            return err_set(err, "%s: architecture '%.64s' is not supported (only LlamaForCausalLM)", path,
                           cJSON_IsString(a0) ? a0->valuestring : "?");
    }
    const cJSON *act = cJSON_GetObjectItemCaseSensitive(root, "hidden_act");
    if (act && (!cJSON_IsString(act) || strcmp(act->valuestring, "silu") != 0))
        return err_set(err, "%s: hidden_act '%.64s' is not supported (only \"silu\")", path,
                       cJSON_IsString(act) ? act->valuestring : "?");
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "attention_bias")) ||
        cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "mlp_bias")))
        return err_set(err, "%s: attention_bias / mlp_bias are not supported (Llama-2 has no biases)", path);
    return 0;
}

static int parse_shape_keys(const cJSON *root, Config *c, const char *path, Err *err) {
    if (cfg_int(root, "hidden_size", 1, 0, &c->dim, path, err) ||
        cfg_int(root, "intermediate_size", 1, 0, &c->hidden_dim, path, err) ||
        cfg_int(root, "num_hidden_layers", 1, 0, &c->n_layers, path, err) ||
        cfg_int(root, "num_attention_heads", 1, 0, &c->n_heads, path, err) ||
        cfg_int(root, "num_key_value_heads", 1, c->n_heads, &c->n_kv_heads, path, err) ||
        cfg_int(root, "vocab_size", 1, 0, &c->vocab_size, path, err) ||
        cfg_int(root, "max_position_embeddings", 1, 2048, &c->max_seq_len, path, err) ||
        cfg_int(root, "bos_token_id", 0, 1, &c->bos_id, path, err) ||
        cfg_int(root, "eos_token_id", 0, 2, &c->eos_id, path, err))
        return -1;
    const cJSON *hd = cJSON_GetObjectItemCaseSensitive(root, "head_dim");
    if (hd && !cJSON_IsNull(hd)) return cfg_int(root, "head_dim", 1, 0, &c->head_dim, path, err);
    if (c->dim % c->n_heads != 0)
        return err_set(err, "%s: hidden_size=%d is not a multiple of num_attention_heads=%d (and no head_dim given)",
                       path, c->dim, c->n_heads);
    c->head_dim = c->dim / c->n_heads;
    return 0;
}

static int parse_config_json(const cJSON *root, Config *c, const char *path, Err *err) {
    if (!cJSON_IsObject(root)) return err_set(err, "%s: not a JSON object", path);
    if (check_architecture(root, path, err) || check_rope_kind(root, "rope_scaling", path, err) ||
        check_rope_kind(root, "rope_parameters", path, err) || parse_shape_keys(root, c, path, err))
        return -1;
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(root, "rope_parameters");
    const cJSON *theta_src = cJSON_GetObjectItemCaseSensitive(rp, "rope_theta") ? rp : root;
    if (cfg_float(theta_src, "rope_theta", 10000.0, &c->rope_theta, path, err) ||
        cfg_float(root, "rms_norm_eps", 1e-6, &c->norm_eps, path, err) ||   /* HF LlamaConfig default */
        cfg_bool(root, "tie_word_embeddings", 0, &c->tied_embeddings, path, err))
        return -1;
    c->rope_pairing_halves = 1;
    return config_validate(c, path, err);
}

static int load_config(Config *c, const char *dir, Err *err) {
    char path[4200];
    path_join(path, sizeof path, dir, "config.json");
    char *text;
    size_t size;
    if (read_file(path, &text, &size, err) != 0) return -1;
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, size, &end, 0);
    if (!root) {
        size_t at = end && end >= text ? (size_t)(end - text) : 0;
        free(text);
        return err_set(err, "%s: invalid JSON near byte %zu", path, at);
    }
    int rc = parse_config_json(root, c, path, err);
    cJSON_Delete(root);
    free(text);
    return rc;
}

/* ---- the weight files ------------------------------------------------------ */

typedef struct {
    Model *m;
    const char *dir;
    char index_path[4200];
    cJSON *index;                   /* parsed index (NULL: single file) */
    const cJSON *weight_map;
    char *shard_names[MODEL_MAX_FILES];
    StFile shards[MODEL_MAX_FILES]; /* shards[0] is model.safetensors in single-file mode */
    int n_shards;
} Loader;

static void loader_free(Loader *L) {
    for (int i = 0; i < L->n_shards; i++) {
        st_free(&L->shards[i]);
        free(L->shard_names[i]);
    }
    cJSON_Delete(L->index);
    L->index = NULL;
}

/* Map and parse one weight file (once; later calls return the cached one). */
static StFile *open_shard(Loader *L, const char *name, Err *err) {
    for (int i = 0; i < L->n_shards; i++)
        if (!strcmp(L->shard_names[i], name)) return &L->shards[i];
    if (!*name || strchr(name, '/') || name[0] == '.')
        return err_set(err, "%s: shard name '%.128s' is not a file name inside the directory", L->index_path, name), NULL;
    if (L->n_shards == MODEL_MAX_FILES)
        return err_set(err, "%s: more than %d shards", L->index_path, MODEL_MAX_FILES), NULL;
    char path[4200];
    path_join(path, sizeof path, L->dir, name);
    if (L->index && !path_exists(path))
        return err_set(err, "%s: missing (named in %s)", path, INDEX_NAME), NULL;
    const FileMap *map = model_map_file(L->m, path, err);
    if (!map) return NULL;
    StFile *sf = &L->shards[L->n_shards];
    if (st_parse(sf, path, map->data, map->size_bytes, err) != 0) return NULL;
    L->shard_names[L->n_shards++] = xstrdup(name);
    return sf;
}

static int open_index(Loader *L, Err *err) {
    char *text;
    size_t size;
    if (read_file(L->index_path, &text, &size, err) != 0) return -1;
    const char *end = NULL;
    L->index = cJSON_ParseWithLengthOpts(text, size, &end, 0);
    size_t at = end && end >= text ? (size_t)(end - text) : 0;
    free(text);
    if (!L->index) return err_set(err, "%s: invalid JSON near byte %zu", L->index_path, at);
    L->weight_map = cJSON_GetObjectItemCaseSensitive(L->index, "weight_map");
    if (!cJSON_IsObject(L->weight_map))
        return err_set(err, "%s: no \"weight_map\" object", L->index_path);
    return 0;
}

static int open_weights(Loader *L, Err *err) {
    char single[4200];
    path_join(single, sizeof single, L->dir, SINGLE_NAME);
    path_join(L->index_path, sizeof L->index_path, L->dir, INDEX_NAME);
    if (path_exists(single)) return open_shard(L, SINGLE_NAME, err) ? 0 : -1;   /* as transformers: single file first */
    if (path_exists(L->index_path)) return open_index(L, err);
    return err_set(err, "%s: no %s or %s (only safetensors checkpoints are supported; pytorch_model.bin is not)",
                   L->dir, SINGLE_NAME, INDEX_NAME);
}

/* The tensor called `name`, from whichever file holds it. */
static const StTensor *find_tensor(Loader *L, const char *name, const char **file, Err *err) {
    const char *shard = SINGLE_NAME;
    if (L->index) {
        const cJSON *s = cJSON_GetObjectItemCaseSensitive(L->weight_map, name);
        if (!s) return err_set(err, "%s: required tensor '%s' is missing from weight_map", L->index_path, name), NULL;
        if (!cJSON_IsString(s)) return err_set(err, "%s: weight_map entry for '%s' is not a string", L->index_path, name), NULL;
        shard = s->valuestring;
    }
    StFile *sf = open_shard(L, shard, err);
    if (!sf) return NULL;
    const StTensor *t = st_find(sf, name);
    if (!t) return err_set(err, "%s: required tensor '%s' is missing", sf->path, name), NULL;
    *file = sf->path;
    if (!t->dtype_ok)
        return err_set(err, "%s: tensor '%s' has dtype %s: only F32, BF16 and F16 are supported (no quantised checkpoints)",
                       sf->path, name, t->dtype_str), NULL;
    return t;
}

static const StTensor *find_shaped(Loader *L, const char *name, int n_dims, uint64_t d0, uint64_t d1, Err *err) {
    const char *file;
    const StTensor *t = find_tensor(L, name, &file, err);
    if (!t) return NULL;
    if (t->n_dims != n_dims || t->shape[0] != d0 || (n_dims == 2 && t->shape[1] != d1)) {
        char found[160] = "[", want[64];
        for (int i = 0; i < t->n_dims; i++) {
            size_t k = strlen(found);
            snprintf(found + k, sizeof found - k, "%s%llu", i ? ", " : "", (unsigned long long)t->shape[i]);
        }
        strncat(found, "]", sizeof found - strlen(found) - 1);
        if (n_dims == 2) snprintf(want, sizeof want, "[%llu, %llu]", (unsigned long long)d0, (unsigned long long)d1);
        else snprintf(want, sizeof want, "[%llu]", (unsigned long long)d0);
        return err_set(err, "%s: tensor '%s' has shape %s but config.json implies %s", file, name, found, want), NULL;
    }
    return t;
}

/* TensorFindFn for llama_bind_weights. */
static int find_weight(void *ctx, const char *name, int rows, int cols, DType *dtype, const void **data, Err *err) {
    const StTensor *t = find_shaped(ctx, name, cols ? 2 : 1, (uint64_t)rows, (uint64_t)cols, err);
    if (!t) return -1;
    *dtype = t->dtype;
    *data = t->data;
    return 0;
}

static void find_tokenizer(Model *m, const char *dir) {
    const char *names[] = { "tokenizer.model", "tokenizer.bin" };
    for (int i = 0; i < 2; i++) {
        char p[sizeof m->tokenizer_path];
        path_join(p, sizeof p, dir, names[i]);
        if (path_exists(p)) {
            snprintf(m->tokenizer_path, sizeof m->tokenizer_path, "%s", p);
            return;
        }
    }
}

int load_safetensors_dir(Model *m, const char *dir, Err *err) {
    if (load_config(&m->cfg, dir, err) != 0) return -1;
    snprintf(m->format, sizeof m->format, "safetensors");
    Loader *L = xcalloc(1, sizeof *L);   /* ~0.3 MB of per-shard state: not on the stack */
    L->m = m;
    L->dir = dir;
    int rc = open_weights(L, err);
    if (rc == 0) rc = llama_bind_weights(m, NAMING_HF, find_weight, L, err);
    loader_free(L);
    free(L);
    if (rc == 0) find_tokenizer(m, dir);
    return rc;
}
