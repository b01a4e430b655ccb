/* model.h — a Llama-2-architecture model in memory: its shape (Config) and its
 * weights (Weights), loaded from a checkpoint in any supported format.
 *
 * Weight matrices are [out_features, in_features] row-major, in the compute
 * dtype: fp32, or bf16 kept as raw uint16 (accumulated in fp32 by the kernels).
 * They are copied (or converted) once at load into huge-page memory; with
 * WEIGHTS_IN_PLACE (--mmap) a matrix whose file dtype is the compute dtype
 * points straight into the mmap'ed file instead.
 * Norm weights are always fp32 (they are tiny). */
#ifndef KVLAB_MODEL_H
#define KVLAB_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "base/dtype.h"
#include "base/util.h"

typedef struct {
    DType dtype;          /* DTYPE_F32 or DTYPE_BF16 (compute dtypes) */
    const void *data;     /* [rows, cols] row-major */
    int rows, cols;
} Mat;

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

/* Point `dst` at a [rows, cols] tensor stored in `src_dtype` at `src`: an owned
 * copy in m->compute_dtype (converted when the dtypes differ), or `src` itself
 * when the model was loaded WEIGHTS_IN_PLACE and no conversion is needed. */
void model_bind_mat(Model *m, Mat *dst, DType src_dtype, const void *src, int rows, int cols);
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
