/* sinks.c — see sinks.h. */
#include "lab/sinks.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/forward.h"
#include "simd/kernels.h"

/* The observer: per (layer, head) the sum of every query's attention on slot 0
 * (one thread per (layer, head): no lock; forward.h). */
typedef struct { double *sum; int n_heads; } FirstAttn;

static void observe_first(void *ctx, int layer, int head, int query_pos, const float *probs, const int *key_pos,
                          int n_keys) {
    (void)query_pos; (void)n_keys;
    FirstAttn *fa = ctx;
    if (key_pos[0] == 0) fa->sum[(size_t)layer * fa->n_heads + head] += probs[0];
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* ‖k_first‖ / median ‖k‖ of one head (RoPE rotates: the norm is that of the raw key). */
static double key_norm_ratio(const KVCache *c, const KVHead *h, float *norms, float *scratch) {
    if (h->len < 1) return NAN;
    const float *k = kvcache_key_rows(c, h, 0, h->len, scratch);
    for (int j = 0; j < h->len; j++)
        norms[j] = sqrtf(kernels_get()->sum_squares(k + (size_t)j * c->head_dim, c->head_dim));
    double first = norms[0];
    qsort(norms, (size_t)h->len, sizeof(float), cmp_float);
    int n = h->len;
    double median = n % 2 ? norms[n / 2] : 0.5 * ((double)norms[n / 2 - 1] + norms[n / 2]);
    return median > 0 ? first / median : NAN;
}

int sink_profile_measure(SinkProfile *sp, const Model *m, const int *ids, int n, Err *err) {
    const Config *cfg = &m->cfg;
    memset(sp, 0, sizeof *sp);
    if (n < 1) return err_set(err, "sinks: an empty prompt");
    if (n > SINK_PROFILE_TOKENS) n = SINK_PROFILE_TOKENS;
    sp->n_layers = cfg->n_layers; sp->n_heads = cfg->n_heads; sp->n_kv_heads = cfg->n_kv_heads;
    sp->n_tokens = n;
    size_t LH = (size_t)cfg->n_layers * cfg->n_heads, LKV = (size_t)cfg->n_layers * cfg->n_kv_heads;
    sp->head_first_attn = xcalloc(LH, sizeof(double));
    sp->kv_key_norm_ratio = xcalloc(LKV, sizeof(double));
    KVCache cache;
    if (forward_cache_init(m, &cache, n, err) != 0) { sink_profile_free(sp); return -1; }
    Forward *f = forward_create(m, n < 512 ? n : 512);
    FirstAttn fa = { sp->head_first_attn, cfg->n_heads };
    AttentionObserver obs = { &fa, observe_first };
    forward_add_observer(f, &obs);
    int rc = forward(f, &cache, ids, n, NULL, err);
    forward_remove_observer(f, &obs);
    if (rc == 0) {
        for (size_t i = 0; i < LH; i++) sp->head_first_attn[i] /= n;
        float *norms = xmalloc((size_t)n * sizeof(float));
        float *scratch = xmalloc((size_t)n * cfg->head_dim * sizeof(float));
        for (size_t lg = 0; lg < LKV; lg++)
            sp->kv_key_norm_ratio[lg] = key_norm_ratio(&cache, &cache.heads[lg], norms, scratch);
        free(norms); free(scratch);
    }
    forward_free(f);
    kvcache_free(&cache);
    if (rc != 0) sink_profile_free(sp);
    return rc;
}

LayerSink sink_profile_layer(const SinkProfile *sp, int layer) {
    return sink_layer(sp->head_first_attn + (size_t)layer * sp->n_heads, sp->n_heads,
                      sp->kv_key_norm_ratio + (size_t)layer * sp->n_kv_heads, sp->n_kv_heads);
}

void sink_profile_free(SinkProfile *sp) {
    free(sp->head_first_attn);
    free(sp->kv_key_norm_ratio);
    memset(sp, 0, sizeof *sp);
}

/* JSON has no NaN: null instead. */
static cJSON *number_or_null(double x) { return isfinite(x) ? cJSON_CreateNumber(x) : cJSON_CreateNull(); }

static cJSON *array_of(const double *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; i < n; i++) cJSON_AddItemToArray(a, number_or_null(v[i]));
    return a;
}

cJSON *sink_profile_json(const SinkProfile *sp) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "tokens", sp->n_tokens);
    cJSON_AddNumberToObject(o, "threshold", SINK_THRESHOLD);
    cJSON_AddStringToObject(o, "definition",
                            "full cache, the first tokens of the prompt (BOS first); first_token_attn: attention on the "
                            "first token averaged over every query (Gu et al., arXiv 2410.10781), per head and its mean "
                            "over the layer's heads; sink_head_share: share of heads above threshold (Sink_1^0.3); "
                            "key_norm_ratio: first key norm / median key norm, per KV head and its mean");
    cJSON *layers = cJSON_CreateArray();
    int with_sinks = 0;
    for (int l = 0; l < sp->n_layers; l++) {
        LayerSink ls = sink_profile_layer(sp, l);
        with_sinks += ls.sink_heads > 0;
        cJSON *lo = cJSON_CreateObject();
        cJSON_AddItemToObject(lo, "first_token_attn", number_or_null(ls.first_token_attn));
        cJSON_AddItemToObject(lo, "sink_head_share", number_or_null(ls.sink_head_share));
        cJSON_AddItemToObject(lo, "key_norm_ratio", number_or_null(ls.key_norm_ratio));
        cJSON_AddItemToObject(lo, "head_first_token_attn", array_of(sp->head_first_attn + (size_t)l * sp->n_heads, sp->n_heads));
        cJSON_AddItemToObject(lo, "kv_key_norm_ratio",
                              array_of(sp->kv_key_norm_ratio + (size_t)l * sp->n_kv_heads, sp->n_kv_heads));
        cJSON_AddItemToArray(layers, lo);
    }
    cJSON_AddItemToObject(o, "layers", layers);
    cJSON_AddNumberToObject(o, "layers_with_sinks", with_sinks);
    return o;
}

void sink_profile_add(cJSON *meta, const Model *m, const int *ids, int n) {
    SinkProfile sp;
    Err err;
    if (sink_profile_measure(&sp, m, ids, n, &err) != 0) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "error", err.msg);
        cJSON_AddItemToObject(meta, "sinks", o);
        return;
    }
    cJSON_AddItemToObject(meta, "sinks", sink_profile_json(&sp));
    sink_profile_free(&sp);
}
