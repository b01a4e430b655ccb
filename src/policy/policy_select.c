/* policy_select.c — the selection toolkit for policy files: the default
 * top-k selection with protected sinks / recent slots (Wirth's selection
 * after a prompt, one pass when a decode step evicts a few), the group mean
 * of a per-query-head column, and the sharing of a total budget over layers. */
#include "policy/policy.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The total order of "worth keeping": higher score, then lower position. */
static inline int better(const float *score, const int *pos, int a, int b) {
    float x = policy_rank(score[a]), y = policy_rank(score[b]);
    return x > y || (x == y && pos[a] < pos[b]);
}

/* policy.h: idx[0..k) the k best of idx[0..m), by score then lower key. */
void policy_select_best(int *idx, int m, int k, const float *score, const int *pos) {
    int lo = 0, hi = m - 1, kth = k - 1;
    while (lo < hi) {
        int pivot = idx[kth], i = lo, j = hi;
        do {
            while (better(score, pos, idx[i], pivot)) i++;
            while (better(score, pos, pivot, idx[j])) j--;
            if (i <= j) { int t = idx[i]; idx[i] = idx[j]; idx[j] = t; i++; j--; }
        } while (i <= j);
        if (j < kth) lo = i;
        if (kth < i) hi = j;
    }
}

/* The e worst candidates of [lo, hi) in one pass (e small): w[0..e) holds the
 * worst seen so far, worst first. Worse = lower score, and among equal scores
 * the higher position (slots are in position order: the later slot). */
static void worst_few(const float *score, int lo, int hi, int e, int *w) {
    int n = 0;
    float bound = INFINITY;                                   /* rank of w[e-1] once full */
    for (int j = lo; j < hi; j++) {
        float v = policy_rank(score[j]);
        if (v > bound) continue;                              /* the usual case */
        int i = n < e ? n++ : e - 1;                          /* drop the least bad */
        while (i > 0 && v <= policy_rank(score[w[i - 1]])) { w[i] = w[i - 1]; i--; }
        w[i] = j;
        if (n == e) bound = policy_rank(score[w[e - 1]]);
    }
}

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

int policy_select_top_few(Policy *p, const int *pos, int len, const float *score, int budget, int sinks,
                          int recent, int *keep, int *evict, int *n_evict) {
    int s = sinks < len ? sinks : len;
    int r = recent < len - s ? recent : len - s;
    int lo = s, hi = len - r;                 /* candidates: slots [lo, hi) */
    int m = hi - lo, k = budget - s - r;
    if (k > m) k = m;
    if (k < 0) k = 0;
    int n = 0;
    if (n_evict) *n_evict = -1;
    if (m - k <= POLICY_FEW) {
        /* Evicting a few (a decode step of the step schedule evicts one): one
         * pass finds them, then the runs between them are kept. */
        int ev[POLICY_FEW + 1], n_ev = m - k;
        if (n_ev > 0) worst_few(score, lo, hi, n_ev, ev);
        qsort(ev, (size_t)n_ev, sizeof(int), cmp_int);
        if (evict) {
            memcpy(evict, ev, (size_t)n_ev * sizeof(int));
            *n_evict = n_ev;
            return len - n_ev;
        }
        ev[n_ev] = len;
        for (int e = 0, j = 0; e <= n_ev; j = ev[e++] + 1)
            while (j < ev[e]) keep[n++] = j++;
        return n;
    }
    /* evicting many (after a prompt): the k best by selection, expected O(m) */
    PolicyScratch *sc = policy_scratch(p);
    int *idx = sc->order;
    unsigned char *mark = sc->mark;           /* mark[j] = 1: candidate j is kept */
    for (int j = 0; j < m; j++) idx[j] = lo + j;
    if (k > 0) policy_select_best(idx, m, k, score, pos);
    memset(mark + lo, 0, (size_t)m);
    for (int j = 0; j < k; j++) mark[idx[j]] = 1;
    for (int j = 0; j < lo; j++) keep[n++] = j;
    for (int j = lo; j < hi; j++) if (mark[j]) keep[n++] = j;
    for (int j = hi; j < len; j++) keep[n++] = j;
    return n;
}

int policy_select_top(Policy *p, const int *pos, int len, const float *score,
                      int budget, int sinks, int recent, int *keep) {
    return policy_select_top_few(p, pos, len, score, budget, sinks, recent, keep, NULL, NULL);
}

void policy_group_mean(const Policy *p, const KVCache *c, const char *name, int layer, int kv_head, int n, float *out) {
    int h0 = kv_head * p->group;
    memcpy(out, policy_column(p, c, name, layer, h0), (size_t)n * sizeof(float));
    for (int h = h0 + 1; h < h0 + p->group; h++) {
        const float *row = policy_column(p, c, name, layer, h);
        for (int j = 0; j < n; j++) out[j] += row[j];
    }
    if (p->group > 1)
        for (int j = 0; j < n; j++) out[j] /= (float)p->group;
}

void policy_distribute(const double *x, const unsigned char *skip, int n_layers, long total,
                       int lo, const int *hi, int *out) {
    long sum = 0;
    for (int l = 0; l < n_layers; l++) {
        if (skip && skip[l]) { out[l] = INT_MAX; continue; }
        double v = floor(x[l]);
        int b = v < lo ? lo : v > hi[l] ? hi[l] : (int)v;
        if (b < lo) b = lo > hi[l] ? hi[l] : lo;
        out[l] = b;
        sum += b;
    }
    /* one unit at a time to (from) the layer furthest below (above) its target */
    while (sum != total) {
        int best = -1, up = sum < total;
        double best_gap = 0;
        for (int l = 0; l < n_layers; l++) {
            if (skip && skip[l]) continue;
            if (up ? out[l] >= hi[l] : out[l] <= lo) continue;
            double gap = up ? x[l] - out[l] : out[l] - x[l];
            if (best < 0 || gap > best_gap) { best = l; best_gap = gap; }
        }
        if (best < 0) break;                     /* every layer at its bound */
        out[best] += up ? 1 : -1;
        sum += up ? 1 : -1;
    }
}
