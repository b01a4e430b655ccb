/* model.h — a Llama-2-architecture model in memory: its shape (Config) and its
 * weights (Weights), loaded from a checkpoint in any supported format.
 *
 * Weight matrices are [out_features, in_features], in the compute dtype: fp32,
 * or bf16 kept as raw uint16 (accumulated in fp32 by the kernels), row-major or
 * in column panels (Mat below). They are copied (or converted) once at load
 * into huge-page memory; with
 * WEIGHTS_IN_PLACE (--mmap) a matrix whose file dtype is the compute dtype
 * points straight into the mmap'ed file instead.
 * Norm weights are always fp32 (they are tiny). */
#ifndef KVLAB_MODEL_H
#define KVLAB_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "base/dtype.h"
#include "base/util.h"

/* A weight matrix. Either [rows, cols] row-major (panel_cols == 0), or cut
 * into column panels: columns [p*panel_cols, (p+1)*panel_cols) of every row
 * (the last panel narrower) stored as a [rows, width] row-major block, panel
 * after panel.
 *
 * Why panels: decode reads every weight once per token, each row dotted with
 * the activation x. With whole rows, x (16 KB for a 4096-wide fp32 row) is read
 * again for every row while the weight stream flows through the same 32 KB L1
 * and pushes x out, so one core reads its weights at ~75 % of the rate of a
 * plain read. In a panel of MAT_PANEL_COLS columns, x's piece (4 KB of fp32)
 * stays in L1 and the rows are one contiguous stream: ~95 % (simd/NOTES.md,
 * "decode: weights in column panels"). 2048-column panels for bf16 (the same
 * 4 KB per row) measured no better.
 * Every matmul is then a sum of one product per panel (engine/ops.c); the
 * kernels see ordinary row-major blocks.
 *
 * The copies made at load use panels when cols > MAT_PANEL_COLS; the token
 * embedding (rows gathered, never multiplied: unless tied, when the classifier
 * shares it) and matrices used in place from a mapped file stay row-major. */
#define MAT_PANEL_COLS 1024

typedef struct {
    DType dtype;          /* DTYPE_F32 or DTYPE_BF16 (compute dtypes) */
    const void *data;     /* rows x cols elements: row-major, or panels (above) */
    int rows, cols;
    int panel_cols;       /* 0: row-major; else the width of a (full) column panel */
} Mat;

/* Panels of a (1 when row-major), and where panel p starts: its first column
 * (*col0), its width (*width) and its element offset in data. */
static inline int mat_n_panels(const Mat *a) {
    return a->panel_cols > 0 ? (a->cols + a->panel_cols - 1) / a->panel_cols : 1;
}
static inline size_t mat_panel_offset(const Mat *a, int p, int *col0, int *width) {
    if (a->panel_cols <= 0) { *col0 = 0; *width = a->cols; return 0; }
    *col0 = p * a->panel_cols;
    *width = a->cols - *col0 < a->panel_cols ? a->cols - *col0 : a->panel_cols;
    return (size_t)a->rows * (size_t)*col0;   /* every earlier panel is rows x panel_cols */
}
/* Element offset of (r, c) in data, and back. */
static inline size_t mat_offset(const Mat *a, int r, int c) {
    if (a->panel_cols <= 0) return (size_t)r * (size_t)a->cols + (size_t)c;
    int col0, width;
    size_t base = mat_panel_offset(a, c / a->panel_cols, &col0, &width);
    return base + (size_t)r * (size_t)width + (size_t)(c - col0);
}
static inline void mat_row_col(const Mat *a, size_t offset, int *r, int *c) {
    if (a->panel_cols <= 0) { *r = (int)(offset / (size_t)a->cols); *c = (int)(offset % (size_t)a->cols); return; }
    int p = (int)(offset / ((size_t)a->rows * (size_t)a->panel_cols)), col0, width;
    size_t in_panel = offset - mat_panel_offset(a, p, &col0, &width);
    *r = (int)(in_panel / (size_t)width);
    *c = col0 + (int)(in_panel % (size_t)width);
}

typedef struct {
    int dim;              /* hidden size (model width) */
    int hidden_dim;       /* FFN intermediate size */
    int n_layers;
    int n_heads;          /* query heads */
    int n_kv_heads;       /* key/value heads (== n_heads for MHA, fewer for GQA) */
    int head_dim;         /* usually dim / n_heads */
    int vocab_size;
    int max_seq_len;      /* context length the model was trained for */
    float norm_eps;       /* RMSNorm epsilon */
    float rope_theta;     /* RoPE base */
    int rope_pairing_halves;  /* 1: HF layout (i, i+head_dim/2); 0: Meta/llama2.c (2i, 2i+1) */
    int tied_embeddings;  /* classifier == token embedding */
    int bos_id, eos_id;
} Config;

typedef struct {
    float *attn_norm;     /* [dim] */
    Mat wq;               /* [n_heads*head_dim, dim] */
    Mat wk;               /* [n_kv_heads*head_dim, dim] */
    Mat wv;               /* [n_kv_heads*head_dim, dim] */
    Mat wo;               /* [dim, n_heads*head_dim] */
    float *ffn_norm;      /* [dim] */
    Mat w_gate;           /* [hidden_dim, dim]  (w1) */
    Mat w_up;             /* [hidden_dim, dim]  (w3) */
    Mat w_down;           /* [dim, hidden_dim]  (w2) */
} LayerWeights;

typedef struct {
    Mat token_embedding;  /* [vocab_size, dim] */
    LayerWeights *layers; /* [n_layers] */
    float *final_norm;    /* [dim] */
    Mat classifier;       /* [vocab_size, dim]; same data as token_embedding when tied */
} Weights;

#define MODEL_MAX_FILES 64

typedef struct {
    Config cfg;
    Weights w;
    DType compute_dtype;  /* what the matrices are in memory */
    DType file_dtype;     /* what the (first) weight tensor was on disk */
    char format[32];      /* "safetensors", "llama2c", "gguf" */
    char path[4096];      /* what the user gave */
    char tokenizer_path[4096];   /* tokenizer found next to the model ("" if none) */
    size_t file_bytes;    /* total size of the checkpoint files */
    size_t converted_bytes;      /* bytes of weights in kvlab's own memory (copies, conversions) */
    size_t in_place_bytes;       /* bytes of weights used in place from the mapped files */
    int weights_in_place;        /* WEIGHTS_IN_PLACE: use the mapping where the dtype allows */
    int release_file_pages;      /* checkpoint > 1/4 of RAM: drop each tensor's file pages once copied */
    long long n_params;   /* parameters counted once (tied embeddings once) */
    /* owned resources */
    FileMap maps[MODEL_MAX_FILES];
    int n_maps;
    void **allocs;
    int n_allocs, cap_allocs;
    struct BigAlloc { void *p; size_t n_bytes; } *bigs;   /* big_alloc'ed weights */
    int n_bigs, cap_bigs;
} Model;

/* Where the weight matrices live. WEIGHTS_COPY (the default): in kvlab's own
 * memory on huge pages (util.h big_alloc), copied or converted from the file at
 * load; decode streams them at full bandwidth. WEIGHTS_IN_PLACE: a matrix whose
 * file dtype is the compute dtype is used straight from the file mapping (no
 * copy, no extra memory, instant load) — slower to stream, since page-cache
 * pages are 4 KiB (see big_alloc). */
enum { WEIGHTS_COPY = 0, WEIGHTS_IN_PLACE = 1 };

/* Load a checkpoint: a directory (HF safetensors: config.json + model*.safetensors),
 * a .safetensors file inside such a directory, a llama2.c .bin, or a .gguf.
 * compute_dtype is DTYPE_F32 or DTYPE_BF16. (load.c: the format dispatch, above
 * the loaders of loaders.h.) */
int  model_load(Model *m, const char *path, DType compute_dtype, Err *err);
/* Same, choosing where the weights live (WEIGHTS_COPY or WEIGHTS_IN_PLACE). */
int  model_load_weights(Model *m, const char *path, DType compute_dtype, int weights, Err *err);
void model_free(Model *m);

/* Check a filled Config for consistency (positive sizes, head_dim even,
 * n_heads divisible by n_kv_heads, ...). `what` names the file for messages. */
int config_validate(const Config *c, const char *what, Err *err);

/* Bytes of KV cache per token (keys and values stored as kv_dtype, all layers). */
size_t model_kv_bytes_per_token(const Config *c, DType kv_dtype);

/* ---- for loaders (model/loader_*.c, declared in loaders.h) ---- */

/* Point `dst` at a [rows, cols] row-major tensor stored in `src_dtype` at `src`:
 * an owned copy in m->compute_dtype (converted when the dtypes differ; in column
 * panels when `panels` and cols > MAT_PANEL_COLS), or `src` itself when the
 * model was loaded WEIGHTS_IN_PLACE and no conversion is needed. */
void model_bind_mat(Model *m, Mat *dst, DType src_dtype, const void *src, int rows, int cols, int panels);
/* Same for a vector that must end up as fp32. */
float *model_bind_vec(Model *m, DType src_dtype, const void *src, int n);
/* Keep an allocation alive until model_free. */
void model_own(Model *m, void *p);
/* Same for a big_alloc'ed buffer of n_bytes. */
void model_own_big(Model *m, void *p, size_t n_bytes);
/* Map a file and keep it mapped until model_free. Returns the map or NULL. */
const FileMap *model_map_file(Model *m, const char *path, Err *err);
/* After all tensors are bound: count parameters, set the classifier when tied,
 * allocate the layer array first with model_alloc_layers. */
void model_alloc_layers(Model *m);
void model_finish(Model *m);

#endif
