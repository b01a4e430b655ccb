/* numcheck.c — see numcheck.h. */
#include "engine/numcheck.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "model/llama_tensors.h"

long numcheck_first_nonfinite(const float *x, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (!isfinite(x[i])) return (long)i;
    return -1;
}

/* ---- naming tensors as the checkpoint's format does ----------------------- */

/* The tensor's name in the checkpoint's own format (llama_tensors.h). */
static void name_tensor(const Model *m, LlamaTensor t, int layer, char *out, size_t size) {
    TensorNaming naming = !strcmp(m->format, "gguf") ? NAMING_GGUF : !strcmp(m->format, "llama2c") ? NAMING_LLAMA2C : NAMING_HF;
    if (t == LT_CLASSIFIER && m->cfg.tied_embeddings) t = LT_EMBED;   /* the same bytes */
    llama_tensor_name(t, naming, layer, out, size);
}

/* ---- scanning weights --------------------------------------------------- */

/* First non-finite element of a matrix (fp32, or bf16: exponent all ones). */
static long scan_mat(const Mat *a, float *value) {
    if (!a->data) return -1;
    size_t n = (size_t)a->rows * (size_t)a->cols;
    if (a->dtype == DTYPE_F32) {
        long i = numcheck_first_nonfinite(a->data, n);
        if (i >= 0) *value = ((const float *)a->data)[i];
        return i;
    }
    const uint16_t *h = a->data;
    for (size_t i = 0; i < n; i++)
        if ((h[i] & 0x7F80u) == 0x7F80u) { *value = bf16_to_f32(h[i]); return (long)i; }
    return -1;
}

static int found_mat(const Model *m, const Mat *a, LlamaTensor which, int layer, NumFinding *out) {
    float v;
    long i = scan_mat(a, &v);
    if (i < 0) return 0;
    out->layer = layer;
    int row, col;
    mat_row_col(a, (size_t)i, &row, &col);
    out->row = row;
    out->col = col;
    out->value = v;
    name_tensor(m, which, layer, out->tensor, sizeof out->tensor);
    return 1;
}

static int found_vec(const Model *m, const float *x, int n, LlamaTensor which, int layer, NumFinding *out) {
    long i = x ? numcheck_first_nonfinite(x, (size_t)n) : -1;
    if (i < 0) return 0;
    out->layer = layer;
    out->row = i;
    out->col = -1;
    out->value = x[i];
    name_tensor(m, which, layer, out->tensor, sizeof out->tensor);
    return 1;
}

/* Tensor t of layer `layer` (-1: a per-model one). */
static int found(const Model *m, LlamaTensor t, int layer, NumFinding *out) {
    const Mat *a = llama_tensor_mat(&m->w, t, layer);
    return a ? found_mat(m, a, t, layer, out) : found_vec(m, llama_tensor_vec(&m->w, t, layer), m->cfg.dim, t, layer, out);
}

int numcheck_scan_layer(const Model *m, int layer, NumFinding *out) {
    for (int t = 0; t < LT_PER_LAYER; t++)
        if (found(m, (LlamaTensor)t, layer, out)) return 1;
    return 0;
}

int numcheck_scan_model(const Model *m, NumFinding *out) {
    if (found(m, LT_EMBED, -1, out)) return 1;
    for (int l = 0; l < m->cfg.n_layers; l++)
        if (numcheck_scan_layer(m, l, out)) return 1;
    return found(m, LT_FINAL_NORM, -1, out) || found(m, LT_CLASSIFIER, -1, out);
}

/* ---- the guard ---------------------------------------------------------- */

struct NumGuard {
    Forward *f;
    const Model *m;
    long forwards;      /* forward blocks seen (layer-0 calls) */
    int bad_layer;      /* first layer whose output had a NaN/Inf, -1 none yet */
    long bad_forward;   /* in which block */
};

/* Runs after every layer (forward.c): remember only the first bad one, the
 * later layers are non-finite because of it. */
static void layer_hook(void *ctx, int layer, const float *x, int n, int dim) {
    NumGuard *g = ctx;
    if (layer == 0) g->forwards++;
    if (g->bad_layer >= 0) return;
    if (numcheck_first_nonfinite(x, (size_t)n * (size_t)dim) >= 0) {
        g->bad_layer = layer;
        g->bad_forward = g->forwards;
    }
}

NumGuard *numguard_attach(Forward *f, const Model *m) {
    NumGuard *g = xcalloc(1, sizeof *g);
    g->f = f;
    g->m = m;
    g->bad_layer = -1;
    if (f) forward_set_layer_hook(f, layer_hook, g);
    return g;
}

void numguard_free(NumGuard *g) {
    if (!g) return;
    if (g->f) forward_set_layer_hook(g->f, NULL, NULL);
    free(g);
}

static const char *value_name(float v) {
    return isnan(v) ? "NaN" : v > 0 ? "+Inf" : "-Inf";
}

/* "tensor 'NAME' holds NaN at [r, c]" */
static void describe(const NumFinding *fd, char *out, size_t size) {
    if (fd->col >= 0)
        snprintf(out, size, "tensor '%s' holds %s at [%ld, %ld]", fd->tensor, value_name(fd->value), fd->row, fd->col);
    else
        snprintf(out, size, "tensor '%s' holds %s at [%ld]", fd->tensor, value_name(fd->value), fd->row);
}

int numguard_check(NumGuard *g, const float *logits, int rows, Err *err) {
    const Model *m = g->m;
    size_t V = (size_t)m->cfg.vocab_size;
    long bad = numcheck_first_nonfinite(logits, (size_t)rows * V);
    if (bad < 0) return 0;
    char where[96], what[192];
    snprintf(where, sizeof where, "%s in the logits (row %ld, token id %ld)",
             value_name(logits[bad]), bad / (long)V, bad % (long)V);
    NumFinding fd;
    if (g->bad_layer < 0) {   /* every layer was finite: the final norm or the classifier */
        if (numcheck_scan_model(m, &fd)) describe(&fd, what, sizeof what);
        else snprintf(what, sizeof what, "every weight is finite: the classifier overflowed");
        return err_set(err, "%s: %s; every layer's output is finite; %s", m->path, where, what);
    }
    if (numcheck_scan_layer(m, g->bad_layer, &fd) || numcheck_scan_model(m, &fd)) describe(&fd, what, sizeof what);
    else snprintf(what, sizeof what, "every weight is finite: the activations overflowed in layer %d", g->bad_layer);
    return err_set(err, "%s: %s; the output of layer %d (of %d) went non-finite first; %s",
                   m->path, where, g->bad_layer, m->cfg.n_layers, what);
}

/* ---- limits --------------------------------------------------------------- */

long long numcheck_mem_available(void) {
    const char *env = getenv("KVLAB_MEM_AVAILABLE");
    if (env && *env) return strtoll(env, NULL, 10);
    FILE *f = fopen("/proc/meminfo", "r");
    if (!f) return -1;
    char line[256];
    long long kib = -1;
    while (fgets(line, sizeof line, f))
        if (sscanf(line, "MemAvailable: %lld kB", &kib) == 1) break;
    fclose(f);
    return kib >= 0 ? kib * 1024 : -1;
}

int numcheck_ctx_fits(const Model *m, int ctx, int ctx_given, long long available, Err *err) {
    if (available < 0) return 0;
    double kv = (double)model_kv_bytes_per_token(&m->cfg, DTYPE_F32) * (double)ctx;
    /* weights used in place from the mapped file (--mmap) are paged in as they
     * are first read (page cache counts as available); copies were allocated
     * at load and are already out of MemAvailable */
    double mapped = (double)m->in_place_bytes;
    if (kv + mapped <= (double)available) return 0;
    const double GiB = 1024.0 * 1024.0 * 1024.0;
    char who[96], plus[64] = "";
    if (mapped > 0) snprintf(plus, sizeof plus, " plus %.2f GiB of mapped weights", mapped / GiB);
    if (ctx_given) snprintf(who, sizeof who, "--ctx %d", ctx);
    else snprintf(who, sizeof who, "the model's context of %d tokens (no --ctx given)", ctx);
    return err_set(err, "%s needs %.2f GiB of KV cache (%.0f bytes)%s, only %.2f GiB of memory available: give a smaller --ctx",
                   who, kv / GiB, kv, plus, (double)available / GiB);
}
