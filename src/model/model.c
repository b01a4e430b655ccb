/* model.c — weights in memory, dtype conversion at bind time (the format dispatch is load.c). */
#include "model/model.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void model_own(Model *m, void *p) {
    if (m->n_allocs == m->cap_allocs) {
        m->cap_allocs = m->cap_allocs ? 2 * m->cap_allocs : 64;
        m->allocs = xrealloc(m->allocs, (size_t)m->cap_allocs * sizeof *m->allocs);
    }
    m->allocs[m->n_allocs++] = p;
}

void model_own_big(Model *m, void *p, size_t n_bytes) {
    if (m->n_bigs == m->cap_bigs) {
        m->cap_bigs = m->cap_bigs ? 2 * m->cap_bigs : 64;
        m->bigs = xrealloc(m->bigs, (size_t)m->cap_bigs * sizeof *m->bigs);
    }
    m->bigs[m->n_bigs].p = p;
    m->bigs[m->n_bigs].n_bytes = n_bytes;
    m->n_bigs++;
}

const FileMap *model_map_file(Model *m, const char *path, Err *err) {
    if (m->n_maps >= MODEL_MAX_FILES) {
        err_set(err, "%s: too many checkpoint files (at most %d)", path, MODEL_MAX_FILES);
        return NULL;
    }
    FileMap *map = &m->maps[m->n_maps];
    if (filemap_open(map, path, err) != 0) return NULL;
    m->n_maps++;
    m->file_bytes += map->size_bytes;
    /* A checkpoint that is a large part of memory, copied into huge pages: left
     * in the page cache, it fills memory as the copy grows, and the last
     * tensors' 2 MiB pages no longer find free blocks (4 KiB fallback). */
    long pages = sysconf(_SC_PHYS_PAGES), page_bytes = sysconf(_SC_PAGESIZE);
    if (pages > 0 && page_bytes > 0 && m->file_bytes > (size_t)pages * (size_t)page_bytes / 4) m->release_file_pages = 1;
    return map;
}

static float load_as_f32(DType dt, const void *src, size_t i) {
    switch (dt) {
    case DTYPE_F32: { float f; memcpy(&f, (const char *)src + 4 * i, 4); return f; }
    case DTYPE_BF16: { uint16_t h; memcpy(&h, (const char *)src + 2 * i, 2); return bf16_to_f32(h); }
    case DTYPE_F16: { uint16_t h; memcpy(&h, (const char *)src + 2 * i, 2); return f16_to_f32(h); }
    }
    return 0.0f;
}

void model_bind_mat(Model *m, Mat *dst, DType src_dtype, const void *src, int rows, int cols, int panels) {
    dst->rows = rows;
    dst->cols = cols;
    dst->dtype = m->compute_dtype;
    dst->panel_cols = 0;
    size_t n = (size_t)rows * (size_t)cols;
    const size_t n_bytes = n * dtype_size(m->compute_dtype);
    /* in place when asked and the bytes are already what the kernels want (and aligned for them) */
    if (m->weights_in_place && src_dtype == m->compute_dtype && ((uintptr_t)src % dtype_size(src_dtype)) == 0) {
        dst->data = src;
        m->in_place_bytes += n_bytes;
        return;
    }
    void *buf = big_alloc(n_bytes);
    if (!buf) die("out of memory: %d x %d tensor in %s (%zu bytes; with --mmap, tensors already in that dtype stay in the file)",
                  rows, cols, dtype_name(m->compute_dtype), n_bytes);
    model_own_big(m, buf, n_bytes);
    m->converted_bytes += n_bytes;
    if (panels && cols > MAT_PANEL_COLS) dst->panel_cols = MAT_PANEL_COLS;
    /* Row r's piece in panel p, converted or copied: the file is read row after
     * row (each row in n_panels pieces), so its pages are read in order. */
    const int n_panels = mat_n_panels(dst);
    const size_t out_size = dtype_size(m->compute_dtype);
    #pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++)
        for (int p = 0; p < n_panels; p++) {
            int col0, width;
            const size_t at = mat_panel_offset(dst, p, &col0, &width) + (size_t)r * (size_t)width;
            const size_t from = (size_t)r * (size_t)cols + (size_t)col0;
            if (src_dtype == m->compute_dtype)
                memcpy((char *)buf + at * out_size, (const char *)src + from * out_size, (size_t)width * out_size);
            else if (m->compute_dtype == DTYPE_F32)
                for (int i = 0; i < width; i++) ((float *)buf)[at + i] = load_as_f32(src_dtype, src, from + i);
            else
                for (int i = 0; i < width; i++) ((uint16_t *)buf)[at + i] = f32_to_bf16(load_as_f32(src_dtype, src, from + i));
        }
    dst->data = buf;
    if (m->release_file_pages) filemap_release(src, n * dtype_size(src_dtype));
}

float *model_bind_vec(Model *m, DType src_dtype, const void *src, int n) {
    float *out = aligned_alloc64((size_t)n * sizeof(float));
    if (!out) die("out of memory");
    for (int i = 0; i < n; i++) out[i] = load_as_f32(src_dtype, src, (size_t)i);
    model_own(m, out);
    return out;
}

void model_alloc_layers(Model *m) {
    m->w.layers = xcalloc((size_t)m->cfg.n_layers, sizeof(LayerWeights));
    model_own(m, m->w.layers);
}

static long long mat_params(const Mat *a) { return (long long)a->rows * a->cols; }

void model_finish(Model *m) {
    const Config *c = &m->cfg;
    if (c->tied_embeddings) m->w.classifier = m->w.token_embedding;
    long long n = mat_params(&m->w.token_embedding) + c->dim;
    for (int l = 0; l < c->n_layers; l++) {
        const LayerWeights *lw = &m->w.layers[l];
        n += 2LL * c->dim + mat_params(&lw->wq) + mat_params(&lw->wk) + mat_params(&lw->wv) +
             mat_params(&lw->wo) + mat_params(&lw->w_gate) + mat_params(&lw->w_up) + mat_params(&lw->w_down);
    }
    if (!c->tied_embeddings) n += mat_params(&m->w.classifier);
    m->n_params = n;
}

int config_validate(const Config *c, const char *what, Err *err) {
    if (c->dim <= 0 || c->hidden_dim <= 0 || c->n_layers <= 0 || c->n_heads <= 0 ||
        c->n_kv_heads <= 0 || c->vocab_size <= 0 || c->max_seq_len <= 0 || c->head_dim <= 0)
        return err_set(err, "%s: invalid shape (dim=%d hidden=%d layers=%d heads=%d kv_heads=%d head_dim=%d vocab=%d seq_len=%d): every size must be positive",
                       what, c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->n_kv_heads, c->head_dim,
                       c->vocab_size, c->max_seq_len);
    if (c->dim > (1 << 16) || c->hidden_dim > (1 << 18) || c->n_layers > 1024 || c->n_heads > 1024 ||
        c->vocab_size > (1 << 22) || c->max_seq_len > (1 << 22) || c->head_dim > 1024)
        return err_set(err, "%s: implausible shape (dim=%d hidden=%d layers=%d heads=%d vocab=%d seq_len=%d head_dim=%d)",
                       what, c->dim, c->hidden_dim, c->n_layers, c->n_heads, c->vocab_size, c->max_seq_len, c->head_dim);
    if (c->n_kv_heads > c->n_heads || c->n_heads % c->n_kv_heads != 0)
        return err_set(err, "%s: n_heads=%d is not a multiple of n_kv_heads=%d", what, c->n_heads, c->n_kv_heads);
    if (c->head_dim % 2 != 0)
        return err_set(err, "%s: head_dim=%d must be even for RoPE", what, c->head_dim);
    if (!(c->norm_eps > 0.0f && c->norm_eps < 1.0f))
        return err_set(err, "%s: rms_norm_eps=%g out of range (0, 1)", what, (double)c->norm_eps);
    if (!(c->rope_theta > 1.0f && c->rope_theta < 1e12f))
        return err_set(err, "%s: rope_theta=%g out of range", what, (double)c->rope_theta);
    if (c->bos_id < 0 || c->bos_id >= c->vocab_size || c->eos_id < 0 || c->eos_id >= c->vocab_size)
        return err_set(err, "%s: bos_id=%d / eos_id=%d outside the vocabulary (%d)", what, c->bos_id, c->eos_id, c->vocab_size);
    return 0;
}

size_t model_kv_bytes_per_token(const Config *c, DType kv_dtype) {
    return 2u * (size_t)c->n_layers * (size_t)c->n_kv_heads * (size_t)c->head_dim * dtype_size(kv_dtype);
}

void model_free(Model *m) {
    for (int i = 0; i < m->n_allocs; i++) free(m->allocs[i]);
    free(m->allocs);
    m->allocs = NULL;
    m->n_allocs = m->cap_allocs = 0;
    for (int i = 0; i < m->n_bigs; i++) big_free(m->bigs[i].p, m->bigs[i].n_bytes);
    free(m->bigs);
    m->bigs = NULL;
    m->n_bigs = m->cap_bigs = 0;
    for (int i = 0; i < m->n_maps; i++) filemap_close(&m->maps[i]);
    m->n_maps = 0;
}
