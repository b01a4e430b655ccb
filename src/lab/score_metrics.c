/* score_metrics.c — see score_metrics.h. The scores come from the policies'
 * score functions; the metrics are metrics_row's (metrics.c) with the score
 * in the place of the key norm: metrics_row's "lownorm" order keeps the
 * LOWEST values of its norm array, so it is given x = −score and keeps the
 * highest scores, and its correlations come out for −score (negated back). */
#include "lab/score_metrics.h"

#include <float.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy.h"

struct ScoreSet {
    int n, L, H, KV, group, max_keys;
    char spec[SCORESET_MAX][128];
    char key[SCORESET_MAX][128];
    Policy *policy[SCORESET_MAX];
    /* Each policy sees the cache through a view: a copy of the cache's struct
     * (the same heads, so the same slots and side-column memory) whose column
     * table lists exactly that policy's columns, mapped onto the rows the union
     * of every score's columns has in the real cache. */
    KVCache *cache;
    KVCache view[SCORESET_MAX];
    KVColumn columns[KVCACHE_MAX_COLUMNS];   /* the union */
    int n_columns;
    float *neg_score;      /* [n][L*KV][max_keys] −score of each slot at the snapshot */
    int *snap_n;           /* [L*KV] slots at the snapshot (-1: none taken) */
    NormStats *ns;         /* [n_threads] */
    RowScratch *scratch;   /* [n_threads] */
    int n_threads;
    MetricsAcc *acc;       /* [n][L*H] */
};

/* Split the list into items; a part with '=' and no ':' belongs to the item before. */
static int split_specs(ScoreSet *s, const char *list, Err *err) {
    const char *p = list;
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (len == 0) return err_set(err, "--score: empty name in '%s'", list);
        int continues = memchr(p, '=', len) && !memchr(p, ':', len);
        if (continues) {
            if (s->n == 0) return err_set(err, "--score: '%.*s' has no score before it", (int)len, p);
            char *d = s->spec[s->n - 1];
            size_t have = strlen(d);
            if (have + 1 + len >= sizeof s->spec[0]) return err_set(err, "--score: '%s' is too long", list);
            d[have] = ',';
            memcpy(d + have + 1, p, len);
            d[have + 1 + len] = '\0';
        } else {
            if (s->n == SCORESET_MAX) return err_set(err, "--score: more than %d scores", SCORESET_MAX);
            if (len >= sizeof s->spec[0]) return err_set(err, "--score: '%.*s' is too long", (int)len, p);
            memcpy(s->spec[s->n], p, len);
            s->spec[s->n][len] = '\0';
            s->n++;
        }
        p += len;
        if (*p == ',') {
            p++;
            if (!*p) return err_set(err, "--score: trailing comma in '%s'", list);
        }
    }
    if (s->n == 0) return err_set(err, "--score: no score given");
    return 0;
}

/* A member-name-safe key: every character outside [A-Za-z0-9] becomes '_'. */
static void make_key(char *key, size_t size, const char *spec) {
    size_t i = 0;
    for (; spec[i] && i + 1 < size; i++) {
        char ch = spec[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
        key[i] = ok ? ch : '_';
    }
    key[i] = '\0';
}

/* The score's policy: nothing skipped (every layer is measured), a keep
 * ratio of 1 (a budget never reached; evict is never called anyway). */
static Policy *score_policy(const char *spec, const Config *cfg, int max_keys, Err *err) {
    PolicyOpts o;
    policy_defaults(&o);
    if (policy_parse_spec(&o, spec, err) != 0) return NULL;
    o.skip_given = 1;
    o.n_skip = 0;
    if (!(policy_find(o.name)->flags & POLICY_OWN_BUDGET)) {
        o.budget_kind = BUDGET_KEEP;
        o.budget = 1.0;
    }
    Policy *p = policy_create(&o, cfg, max_keys, err);
    if (!p) return NULL;
    if (!p->scorer->score) {
        err_set(err, "--score: policy %s ranks tokens by its own selection, not one score per token", o.name);
        policy_free(p);
        return NULL;
    }
    if (p->o.positions_shifted) {
        err_set(err, "--score %s: positions shifted are not measured (keys are cached with their true RoPE)", spec);
        policy_free(p);
        return NULL;
    }
    return p;
}

/* The place of column col in the union (-1: not there). The same name, rows
 * and fill is the same column (policies borrowing a column share it). */
static int union_index(const ScoreSet *s, const KVColumn *col) {
    for (int u = 0; u < s->n_columns; u++)
        if (s->columns[u].fill == col->fill && s->columns[u].rows == col->rows && !strcmp(s->columns[u].name, col->name))
            return u;
    return -1;
}

ScoreSet *scoreset_create(const char *list, const Config *cfg, int max_keys, Err *err) {
    ScoreSet *s = xcalloc(1, sizeof *s);
    s->L = cfg->n_layers; s->H = cfg->n_heads; s->KV = cfg->n_kv_heads;
    s->group = cfg->n_heads / cfg->n_kv_heads;
    s->max_keys = max_keys;
    if (split_specs(s, list, err) != 0) { scoreset_free(s); return NULL; }
    for (int i = 0; i < s->n; i++) {
        for (int j = 0; j < i; j++)
            if (!strcmp(s->spec[i], s->spec[j])) {
                err_set(err, "--score: '%s' given twice", s->spec[i]);
                scoreset_free(s);
                return NULL;
            }
        make_key(s->key[i], sizeof s->key[i], s->spec[i]);
        s->policy[i] = score_policy(s->spec[i], cfg, max_keys, err);
        if (!s->policy[i]) { scoreset_free(s); return NULL; }
        /* the union of the side columns (policies declaring the same column share it) */
        for (int c = 0; c < s->policy[i]->n_columns; c++) {
            const KVColumn *col = &s->policy[i]->cache_columns[c];
            if (union_index(s, col) >= 0) continue;
            if (s->n_columns == KVCACHE_MAX_COLUMNS) {
                err_set(err, "--score: the scores need more than %d per-slot columns together", KVCACHE_MAX_COLUMNS);
                scoreset_free(s);
                return NULL;
            }
            s->columns[s->n_columns++] = *col;
        }
    }
    size_t LKV = (size_t)s->L * s->KV, LH = (size_t)s->L * s->H;
    s->neg_score = xmalloc((size_t)s->n * LKV * max_keys * sizeof(float));
    s->snap_n = xmalloc(LKV * sizeof(int));
    for (size_t i = 0; i < LKV; i++) s->snap_n[i] = -1;
    s->n_threads = omp_get_max_threads();
    s->ns = xmalloc((size_t)s->n_threads * sizeof(NormStats));
    s->scratch = xmalloc((size_t)s->n_threads * sizeof(RowScratch));
    for (int t = 0; t < s->n_threads; t++) { normstats_init(&s->ns[t]); rowscratch_init(&s->scratch[t]); }
    s->acc = xmalloc((size_t)s->n * LH * sizeof(MetricsAcc));
    for (size_t i = 0; i < (size_t)s->n * LH; i++) metrics_acc_clear(&s->acc[i]);
    return s;
}

void scoreset_free(ScoreSet *s) {
    if (!s) return;
    for (int i = 0; i < s->n; i++) policy_free(s->policy[i]);
    for (int t = 0; t < s->n_threads; t++) { normstats_free(&s->ns[t]); rowscratch_free(&s->scratch[t]); }
    free(s->neg_score); free(s->snap_n); free(s->ns); free(s->scratch); free(s->acc);
    free(s);
}

int scoreset_count(const ScoreSet *s) { return s->n; }
const char *scoreset_spec(const ScoreSet *s, int i) { return s->spec[i]; }
const char *scoreset_key(const ScoreSet *s, int i) { return s->key[i]; }

int scoreset_needs_attention(const ScoreSet *s) {
    for (int i = 0; i < s->n; i++)
        if (policy_needs_attention(s->policy[i])) return 1;
    return 0;
}

const MetricsAcc *scoreset_acc(const ScoreSet *s, int i, int layer, int head) {
    return &s->acc[((size_t)i * s->L + layer) * s->H + head];
}

/* Policy i's view of the cache as it is now (lengths, next_pos). */
static void refresh_view(ScoreSet *s, int i) {
    const Policy *p = s->policy[i];
    KVCache *v = &s->view[i];
    *v = *s->cache;
    v->n_columns = p->n_columns;
    for (int c = 0; c < p->n_columns; c++) {
        v->columns[c] = p->cache_columns[c];
        v->column_row[c] = s->cache->column_row[union_index(s, &p->cache_columns[c])];   /* there: scoreset_create */
    }
}

int scoreset_start(ScoreSet *s, KVCache *c, Err *err) {
    if (c->next_pos != 0) return err_set(err, "scores: a sequence starts on an empty cache");
    if (c->shifted) return err_set(err, "scores: the cache keeps positions shifted");
    if (kvcache_set_columns(c, s->columns, s->n_columns, err) != 0) return -1;
    s->cache = c;
    for (size_t i = 0; i < (size_t)s->L * s->KV; i++) s->snap_n[i] = -1;
    return 0;
}

int scoreset_before_forward(ScoreSet *s, int n, Err *err) {
    for (int i = 0; i < s->n; i++) {
        refresh_view(s, i);
        /* on an empty view this resets the policy (its columns are already the view's) */
        if (policy_before_forward(s->policy[i], &s->view[i], n, err) != 0) return -1;
    }
    return 0;
}

void scoreset_observe(void *ctx, int layer, int head, int query_pos, const float *probs, const int *key_pos, int n_keys) {
    ScoreSet *s = ctx;
    for (int i = 0; i < s->n; i++)
        if (policy_needs_attention(s->policy[i]))
            policy_observe(s->policy[i], layer, head, query_pos, probs, key_pos, n_keys);
}

/* A score as metrics_row's sort takes it: no NaN (ranked lowest, as
 * policy_rank does), no infinity. */
static float finite_neg(float score) {
    if (score != score) return FLT_MAX;
    float x = -score;
    return x > FLT_MAX ? FLT_MAX : x < -FLT_MAX ? -FLT_MAX : x;
}

/* Serial: the policies' score functions take their temporaries from thread
 * 0's scratch outside an eviction. One O(n) (keydiff: O(n·head_dim)) pass
 * per head, small beside the forward pass that follows. */
void scoreset_snapshot(ScoreSet *s) {
    size_t LKV = (size_t)s->L * s->KV;
    for (int i = 0; i < s->n; i++) {
        refresh_view(s, i);
        Policy *p = s->policy[i];
        for (int l = 0; l < s->L; l++)
            for (int g = 0; g < s->KV; g++) {
                size_t lg = (size_t)l * s->KV + g;
                int n = kvcache_head(s->cache, l, g)->len;
                float *dst = s->neg_score + ((size_t)i * LKV + lg) * s->max_keys;
                s->snap_n[lg] = n;
                if (n == 0) continue;
                const float *score = p->scorer->score(p, &s->view[i], l, g, policy_scratch(p)->score);
                for (int j = 0; j < n; j++) dst[j] = finite_neg(score[j]);
            }
    }
}

int scoreset_measure(ScoreSet *s, const float *rows, const int *row_n, int row_stride, uint64_t seq_key, Err *err) {
    int LKV = s->L * s->KV, tasks = s->n * LKV, bad = -1;
    for (int lh = 0; lh < s->L * s->H; lh++) {
        int lg = (lh / s->H) * s->KV + (lh % s->H) / s->group;
        if (s->snap_n[lg] < 0 || row_n[lh] != s->snap_n[lg] + 1) { bad = lh; break; }
    }
    if (bad >= 0)
        return err_set(err, "scores: layer %d head %d: the attention row has %d keys, the snapshot %d slots (+1 expected)",
                       bad / s->H, bad % s->H, row_n[bad], s->snap_n[(bad / s->H) * s->KV + (bad % s->H) / s->group]);
    #pragma omp parallel for schedule(dynamic, 1)
    for (int task = 0; task < tasks; task++) {
        int i = task / LKV, lg = task % LKV, l = lg / s->KV, g = lg % s->KV, t = omp_get_thread_num();
        int n = s->snap_n[lg];
        if (n == 0) continue;
        NormStats *ns = &s->ns[t];
        normstats_set(ns, s->neg_score + ((size_t)i * LKV + lg) * s->max_keys, n, &s->scratch[t]);
        for (int h = g * s->group; h < (g + 1) * s->group; h++) {
            size_t lh = (size_t)l * s->H + h;
            RowMetrics m;
            /* the same random order for every score of a row: the random column compares */
            metrics_row(ns, rows + lh * row_stride, seq_key ^ (uint64_t)lg, &s->scratch[t], &m);
            m.spearman = -m.spearman;     /* of (score, attention), not (−score, attention) */
            m.pearson = -m.pearson;
            metrics_acc_add(&s->acc[(size_t)i * s->L * s->H + lh], &m);
        }
    }
    for (int lg = 0; lg < LKV; lg++) s->snap_n[lg] = -1;
    return 0;
}

/* ---- output ------------------------------------------------------------------------- */

/* The metrics a score reports: name suffix and MetricsAcc slot of its first ratio. */
typedef struct { const char *name; int slot; int curve; } ScoreMetric;
static const ScoreMetric score_metrics[] = {
    { "spearman", SLOT_SPEARMAN, 0 }, { "pearson", SLOT_PEARSON, 0 },
    { "alr", SLOT_ALR, 0 }, { "alr_per_n", SLOT_ALR_N, 0 },
    { "loss", SLOT_LOSS + EVICT_LOWNORM * METRICS_N_RATIOS, 1 },
    { "overlap", SLOT_OVERLAP + EVICT_LOWNORM * METRICS_N_RATIOS, 1 },
    { "loss_oracle", SLOT_LOSS + EVICT_ORACLE * METRICS_N_RATIOS, 1 },
    { "loss_random", SLOT_LOSS + EVICT_RANDOM * METRICS_N_RATIOS, 1 },
};
#define N_SCORE_METRICS (int)(sizeof score_metrics / sizeof score_metrics[0])

void scoreset_write_csv_rows(const ScoreSet *s, FILE *f) {
    for (int i = 0; i < s->n; i++)
        for (int l = 0; l < s->L; l++)
            for (int h = 0; h < s->H; h++) {
                const MetricsAcc *a = scoreset_acc(s, i, l, h);
                for (int k = 0; k < N_SCORE_METRICS; k++) {
                    const ScoreMetric *sm = &score_metrics[k];
                    for (int r = 0; r < (sm->curve ? METRICS_N_RATIOS : 1); r++) {
                        char ratio_s[16] = "";
                        if (sm->curve) snprintf(ratio_s, sizeof ratio_s, "%.1f", metrics_ratio_pct(r) / 100.0);
                        int slot = sm->slot + r;
                        fprintf(f, "%d,%d,%d,score_%s_%s,%s,%.9g,%.9g,%lld\n", l, h, h / s->group, s->key[i], sm->name,
                                ratio_s, metrics_acc_mean(a, slot), metrics_acc_std(a, slot), (long long)a->slot[slot].n);
                    }
                }
            }
}

int scoreset_add_npz(const ScoreSet *s, NpzWriter *w, Err *err) {
    size_t LH = (size_t)s->L * s->H, count = LH * METRICS_N_RATIOS;
    double *mean = xmalloc(count * sizeof(double)), *std = xmalloc(count * sizeof(double));
    int64_t *num = xmalloc(count * sizeof(int64_t));
    int rc = 0;
    for (int i = 0; rc == 0 && i < s->n; i++)
        for (int k = 0; rc == 0 && k < N_SCORE_METRICS; k++) {
            const ScoreMetric *sm = &score_metrics[k];
            int R = sm->curve ? METRICS_N_RATIOS : 1;
            for (size_t lh = 0; lh < LH; lh++) {
                const MetricsAcc *a = &s->acc[(size_t)i * LH + lh];
                for (int r = 0; r < R; r++) {
                    mean[lh * R + r] = metrics_acc_mean(a, sm->slot + r);
                    std[lh * R + r] = metrics_acc_std(a, sm->slot + r);
                    num[lh * R + r] = a->slot[sm->slot + r].n;
                }
            }
            int64_t shape[3] = { s->L, s->H, R };
            int ndim = sm->curve ? 3 : 2;
            char member[300];
            snprintf(member, sizeof member, "score_%s_%s_mean", s->key[i], sm->name);
            rc = npz_add(w, member, NPY_F64, ndim, shape, mean, err);
            snprintf(member, sizeof member, "score_%s_%s_std", s->key[i], sm->name);
            if (rc == 0) rc = npz_add(w, member, NPY_F64, ndim, shape, std, err);
            snprintf(member, sizeof member, "score_%s_%s_n", s->key[i], sm->name);
            if (rc == 0) rc = npz_add(w, member, NPY_I64, ndim, shape, num, err);
        }
    free(mean); free(std); free(num);
    return rc ? -1 : 0;
}

void scoreset_print_tables(const ScoreSet *s, FILE *out) {
    int mid = METRICS_N_RATIOS / 2;   /* 50 % */
    for (int i = 0; i < s->n; i++) {
        fprintf(out, "score %s (higher = keep): rank against the attention of the next query\n", s->spec[i]);
        fprintf(out, "layer  spearman(mean over heads, min..max)   pearson   ALR/n   loss@50%% score / oracle / random\n");
        for (int l = 0; l < s->L; l++) {
            double rho = 0, lo = INFINITY, hi = -INFINITY, r = 0, alr = 0, loss = 0, oracle = 0, rnd = 0;
            for (int h = 0; h < s->H; h++) {
                const MetricsAcc *a = scoreset_acc(s, i, l, h);
                double x = metrics_acc_mean(a, SLOT_SPEARMAN);
                rho += x; lo = x < lo ? x : lo; hi = x > hi ? x : hi;
                r += metrics_acc_mean(a, SLOT_PEARSON);
                alr += metrics_acc_mean(a, SLOT_ALR_N);
                loss += metrics_acc_mean(a, SLOT_LOSS + EVICT_LOWNORM * METRICS_N_RATIOS + mid);
                oracle += metrics_acc_mean(a, SLOT_LOSS + EVICT_ORACLE * METRICS_N_RATIOS + mid);
                rnd += metrics_acc_mean(a, SLOT_LOSS + EVICT_RANDOM * METRICS_N_RATIOS + mid);
            }
            int H = s->H;
            fprintf(out, "%5d  %+.3f (%+.3f..%+.3f)                %+.3f    %.4f  %.3f / %.3f / %.3f\n", l, rho / H, lo, hi,
                    r / H, alr / H, loss / H, oracle / H, rnd / H);
        }
        fprintf(out, "\n");
    }
}
