/* output_error.c — see output_error.h. */
#include "lab/output_error.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/runstat.h"

enum { SIDE_POLICY = 0, SIDE_FULL = 1 };

typedef struct { struct OutputError *oe; int side; } OeSide;

/* The values of one (layer, head), kept for the percentiles. */
typedef struct { float *v; long n, cap; } OeValues;

struct OutputError {
    int L, H, KV, hd, group, max_keys, n_pos;
    OeSide side[2];
    float *att[2];        /* [L][H*hd] this step's attention output, policy / full */
    float *full_row;      /* [L*H][max_keys] the full cache's attention, by position */
    int *full_n;          /* [L*H] */
    int *kept;            /* [L*H][max_keys] positions the policy's query sees */
    int *kept_n;          /* [L*H] */
    OeValues *values;     /* [L*H][OE_N] */
    RunStat *by_pos;      /* [n_pos][OE_N + 1]: + kl */
};

const char *output_error_metric_name(int metric) {
    return metric == OE_OUTPUT_ERROR ? "output_error" : metric == OE_ATTENTION_LOSS ? "attention_loss" : "?";
}

OutputError *output_error_create(const Config *cfg, int max_keys, int n_pos) {
    OutputError *oe = xcalloc(1, sizeof *oe);
    oe->L = cfg->n_layers; oe->H = cfg->n_heads; oe->KV = cfg->n_kv_heads; oe->hd = cfg->head_dim;
    oe->group = cfg->n_heads / cfg->n_kv_heads;
    oe->max_keys = max_keys; oe->n_pos = n_pos;
    size_t LH = (size_t)oe->L * oe->H;
    for (int s = 0; s < 2; s++) {
        oe->side[s] = (OeSide){ oe, s };
        oe->att[s] = xcalloc(LH * oe->hd, sizeof(float));
    }
    oe->full_row = xcalloc(LH * max_keys, sizeof(float));
    oe->full_n = xcalloc(LH, sizeof(int));
    oe->kept = xcalloc(LH * max_keys, sizeof(int));
    oe->kept_n = xcalloc(LH, sizeof(int));
    oe->values = xcalloc(LH * OE_N, sizeof(OeValues));
    oe->by_pos = xcalloc((size_t)(n_pos > 0 ? n_pos : 1) * (OE_N + 1), sizeof(RunStat));
    return oe;
}

void output_error_free(OutputError *oe) {
    if (!oe) return;
    for (size_t i = 0; i < (size_t)oe->L * oe->H * OE_N; i++) free(oe->values[i].v);
    free(oe->att[0]); free(oe->att[1]); free(oe->full_row); free(oe->full_n); free(oe->kept); free(oe->kept_n);
    free(oe->values); free(oe->by_pos);
    free(oe);
}

/* The output hook: keep the last row of the block (ppl runs one token a forward). */
static void on_output(void *ctx, int layer, int pos0, const float *att, int n) {
    (void)pos0;
    OeSide *s = ctx;
    OutputError *oe = s->oe;
    size_t row = (size_t)oe->H * oe->hd;
    memcpy(oe->att[s->side] + (size_t)layer * row, att + (size_t)(n - 1) * row, row * sizeof(float));
}

/* The attention observer: the policy side records which positions the
 * query sees, the full side its attention by position (the full cache never
 * evicts: slot j holds position j). */
static void on_attention(void *ctx, int layer, int head, int query_pos, const float *probs, const int *key_pos,
                         int n_keys) {
    (void)query_pos;
    OeSide *s = ctx;
    OutputError *oe = s->oe;
    if (n_keys > oe->max_keys) return;
    size_t lh = (size_t)layer * oe->H + head;
    if (s->side == SIDE_POLICY) {
        memcpy(oe->kept + lh * oe->max_keys, key_pos, (size_t)n_keys * sizeof(int));
        oe->kept_n[lh] = n_keys;
    } else {
        float *row = oe->full_row + lh * oe->max_keys;
        for (int j = 0; j < n_keys; j++) row[key_pos[j]] = probs[j];
        oe->full_n[lh] = n_keys;
    }
}

void output_error_attach(OutputError *oe, Forward *policy_f, Forward *full_f) {
    Forward *f[2] = { policy_f, full_f };
    for (int s = 0; s < 2; s++) {
        AttentionObserver obs = { &oe->side[s], on_attention };
        forward_add_observer(f[s], &obs);
        forward_set_output_hook(f[s], on_output, &oe->side[s]);
    }
}

void output_error_detach(OutputError *oe, Forward *policy_f, Forward *full_f) {
    Forward *f[2] = { policy_f, full_f };
    for (int s = 0; s < 2; s++) {
        AttentionObserver obs = { &oe->side[s], on_attention };
        forward_remove_observer(f[s], &obs);
        forward_set_output_hook(f[s], NULL, NULL);
    }
}

static void values_add(OeValues *v, double x) {
    if (v->n == v->cap) {
        v->cap = v->cap ? 2 * v->cap : 256;
        v->v = xrealloc(v->v, (size_t)v->cap * sizeof(float));
    }
    v->v[v->n++] = (float)x;
}

int output_error_step(OutputError *oe, int pos, double kl, Err *err) {
    if (pos < 0 || pos >= oe->n_pos) return err_set(err, "output error: position %d outside 0..%d", pos, oe->n_pos - 1);
    RunStat *at = oe->by_pos + (size_t)pos * (OE_N + 1);
    for (int l = 0; l < oe->L; l++)
        for (int h = 0; h < oe->H; h++) {
            size_t lh = (size_t)l * oe->H + h;
            int n = oe->full_n[lh], k = oe->kept_n[lh];
            if (n == 0 || k == 0)
                return err_set(err, "output error: layer %d head %d: no attention row of the step (full %d, policy %d keys)",
                               l, h, n, k);
            const float *p = oe->att[SIDE_POLICY] + lh * oe->hd, *f = oe->att[SIDE_FULL] + lh * oe->hd;
            double diff = 0, norm = 0;
            for (int c = 0; c < oe->hd; c++) {
                double d = (double)p[c] - f[c];
                diff += d * d;
                norm += (double)f[c] * f[c];
            }
            double x = norm > 0 ? sqrt(diff / norm) : NAN;
            const float *row = oe->full_row + lh * oe->max_keys;
            double kept_mass = 0, total = 0;
            for (int j = 0; j < n; j++) total += row[j];
            for (int i = 0; i < k; i++)
                if (oe->kept[lh * oe->max_keys + i] < n) kept_mass += row[oe->kept[lh * oe->max_keys + i]];
            double loss = total - kept_mass > 0 ? total - kept_mass : 0;
            double v[OE_N] = { x, loss };
            for (int m = 0; m < OE_N; m++)
                if (!isnan(v[m])) {
                    values_add(&oe->values[lh * OE_N + m], v[m]);
                    runstat_add(&at[m], v[m]);
                }
            oe->full_n[lh] = oe->kept_n[lh] = 0;
        }
    runstat_add(&at[OE_N], kl);
    return 0;
}

static int cmp_float(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* Mean, sample std and p95 of v[0..n) (sorted in place). */
static OeSummary summarize(float *v, long n) {
    OeSummary s = { NAN, NAN, NAN, n };
    if (n == 0) return s;
    RunStat r = { 0 };
    for (long i = 0; i < n; i++) runstat_add(&r, v[i]);
    s.mean = runstat_mean(&r);
    s.std = runstat_std(&r);
    qsort(v, (size_t)n, sizeof(float), cmp_float);
    double at = 0.95 * (double)(n - 1);
    long lo = (long)floor(at);
    long hi = lo + 1 < n ? lo + 1 : lo;
    s.p95 = v[lo] + (at - (double)lo) * ((double)v[hi] - v[lo]);
    return s;
}

OeSummary output_error_summary(const OutputError *oe, int layer, int head, int metric) {
    long n = 0;
    int h0 = head < 0 ? 0 : head, h1 = head < 0 ? oe->H : head + 1;
    for (int h = h0; h < h1; h++) n += oe->values[((size_t)layer * oe->H + h) * OE_N + metric].n;
    float *all = xmalloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    long at = 0;
    for (int h = h0; h < h1; h++) {
        const OeValues *v = &oe->values[((size_t)layer * oe->H + h) * OE_N + metric];
        memcpy(all + at, v->v, (size_t)v->n * sizeof(float));
        at += v->n;
    }
    OeSummary s = summarize(all, n);
    free(all);
    return s;
}

static void csv_row(FILE *f, int l, int h, int group, int metric, OeSummary s) {
    if (h >= 0) fprintf(f, "%d,%d,%d,", l, h, h / group);
    else fprintf(f, "%d,,,", l);
    fprintf(f, "%s,%.9g,%.9g,%.9g,%ld\n", output_error_metric_name(metric), s.mean, s.std, s.p95, s.n);
}

int output_error_write(const OutputError *oe, const char *dir, Err *err) {
    char path[4200];
    AtomicFile af;
    path_join(path, sizeof path, dir, "output_error.csv");
    if (atomic_open(&af, path, err) != 0) return -1;
    fprintf(af.f, "layer,head,kv_head,metric,mean,std,p95,n\n");
    for (int l = 0; l < oe->L; l++)
        for (int h = 0; h < oe->H; h++)
            for (int m = 0; m < OE_N; m++) csv_row(af.f, l, h, oe->group, m, output_error_summary(oe, l, h, m));
    for (int l = 0; l < oe->L; l++)
        for (int m = 0; m < OE_N; m++) csv_row(af.f, l, -1, oe->group, m, output_error_summary(oe, l, -1, m));
    if (atomic_commit(&af, err) != 0) return -1;
    path_join(path, sizeof path, dir, "output_error_steps.csv");
    if (atomic_open(&af, path, err) != 0) return -1;
    fprintf(af.f, "pos,output_error_mean,output_error_std,attention_loss_mean,attention_loss_std,kl_mean,kl_std,n\n");
    for (int p = 0; p < oe->n_pos; p++) {
        const RunStat *at = oe->by_pos + (size_t)p * (OE_N + 1);
        if (at[OE_N].n == 0) continue;
        fprintf(af.f, "%d", p);
        for (int m = 0; m <= OE_N; m++) fprintf(af.f, ",%.9g,%.9g", runstat_mean(&at[m]), runstat_std(&at[m]));
        fprintf(af.f, ",%lld\n", (long long)at[OE_N].n);
    }
    return atomic_commit(&af, err);
}

static cJSON *number_or_null(double x) { return isfinite(x) ? cJSON_CreateNumber(x) : cJSON_CreateNull(); }

cJSON *output_error_json(const OutputError *oe) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "definition",
                            "per decode step, layer and head: output_error = |o_policy - o_full| / |o_full| of the "
                            "attention output before Wo; attention_loss = the full cache's attention on the evicted "
                            "positions; per layer the mean and 95th percentile over heads, steps and chunks");
    cJSON *layers = cJSON_CreateArray();
    for (int l = 0; l < oe->L; l++) {
        cJSON *lo = cJSON_CreateObject();
        for (int m = 0; m < OE_N; m++) {
            OeSummary s = output_error_summary(oe, l, -1, m);
            char name[64];
            snprintf(name, sizeof name, "%s_mean", output_error_metric_name(m));
            cJSON_AddItemToObject(lo, name, number_or_null(s.mean));
            snprintf(name, sizeof name, "%s_p95", output_error_metric_name(m));
            cJSON_AddItemToObject(lo, name, number_or_null(s.p95));
        }
        cJSON_AddItemToArray(layers, lo);
    }
    cJSON_AddItemToObject(o, "layers", layers);
    return o;
}
