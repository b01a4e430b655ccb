/* convert.c — write a loaded model as a GGUF file (llama.cpp) or as a
 * Hugging Face safetensors directory (`kvlab convert`, cli/cmd_convert.c).
 *
 * GGUF output (llama.cpp's convert_hf_to_gguf.py conventions):
 *   general.architecture "llama", general.name, general.file_type (0 F32,
 *   1 F16, 32 BF16), general.alignment 32; llama.context_length,
 *   embedding_length, block_count, feed_forward_length, rope.dimension_count,
 *   attention.head_count, attention.head_count_kv,
 *   attention.layer_norm_rms_epsilon, rope.freq_base, vocab_size (+ key_length/
 *   value_length when head_dim != dim/heads), all u32 / f32; the tokenizer as
 *   tokenizer.ggml.model "llama", pre "default", tokens, scores, token_type
 *   (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte),
 *   bos/eos/unknown_token_id, add_bos_token, add_eos_token, add_space_prefix.
 *   Tensors: matrices in the chosen dtype, norms F32 (as llama.cpp does), each
 *   aligned, dims innermost first; no output.weight when the head is tied.
 * HF output: DIR/config.json, DIR/model.safetensors (every tensor in the chosen
 *   dtype), and the tokenizer: the source's tokenizer.model / tokenizer.bin
 *   copied, or — for a vocabulary embedded in a GGUF — written as a
 *   SentencePiece tokenizer.model.
 *
 * The q/k permutation. RoPE rotates pairs of dimensions inside each head. Meta,
 * llama2.c and llama.cpp (GGUF) pair dimension 2i with 2i+1 ("interleaved");
 * HF pairs i with i + hd/2 ("halves"), so HF checkpoints store the rows of
 * wq/wk permuted inside every head (transformers' convert_llama_weights_to_hf
 * permute; convert_hf_to_gguf.py un-permutes them). For a head of size hd,
 * half = hd/2, i < half, p in {0, 1}:
 *     halves row  p*half + i   ==   interleaved row  2i + p
 * (wk uses the KV heads). Writing a GGUF from an HF model applies this
 * un-permutation; writing HF from a llama2.c or GGUF model applies the
 * permutation; otherwise rows are copied in order. Rows are moved whole, so
 * the values are bit-identical and only the pairing convention changes.
 *
 * Values are converted exactly when the dtype is unchanged (the source is
 * loaded in bf16 when it is bf16 — in place, no copy — and in f32 otherwise, which
 * holds f32/f16/bf16 values exactly), so a round trip gives the same bits.
 * Outputs are atomic: a temporary name renamed when complete. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/buf.h"
#include "base/outguard.h"
#include "formats/gguf.h"
#include "formats/safetensors.h"
#include "model/convert.h"
#include "model/llama_tensors.h"
#include "model/outdir.h"

/* ---- the tensors to write ------------------------------------------------------------- */

typedef struct {
    char gguf[64], hf[96];
    const Mat *mat;           /* NULL: a norm vector */
    const float *vec;
    int n;                    /* vector length */
    int rotated;              /* wq / wk, whose rows are permuted between layouts */
} OutTensor;

static void out_tensor(const Model *m, LlamaTensor id, int layer, OutTensor *t, int *k) {
    OutTensor *o = &t[(*k)++];
    int cols;
    llama_tensor_name(id, NAMING_GGUF, layer, o->gguf, sizeof o->gguf);
    llama_tensor_name(id, NAMING_HF, layer, o->hf, sizeof o->hf);
    o->mat = llama_tensor_mat(&m->w, id, layer);
    o->vec = llama_tensor_vec(&m->w, id, layer);
    if (o->vec) llama_tensor_shape(&m->cfg, id, &o->n, &cols);
    o->rotated = llama_tensor_is_rotated(id);
}

/* All tensors, in the order written (llama.cpp's order does not matter to it):
 * the per-model ones, then layer by layer. */
static OutTensor *tensor_list(const Model *m, int *n) {
    OutTensor *t = xcalloc((size_t)(3 + LT_PER_LAYER * m->cfg.n_layers), sizeof *t);
    int k = 0;
    out_tensor(m, LT_EMBED, -1, t, &k);
    out_tensor(m, LT_FINAL_NORM, -1, t, &k);
    if (!m->cfg.tied_embeddings) out_tensor(m, LT_CLASSIFIER, -1, t, &k);
    for (int l = 0; l < m->cfg.n_layers; l++)
        for (int id = 0; id < LT_PER_LAYER; id++) out_tensor(m, (LlamaTensor)id, l, t, &k);
    *n = k;
    return t;
}

/* ---- tensor data ------------------------------------------------------------------------- */

typedef int (*WriteFn)(void *ctx, const void *bytes, size_t n, Err *err);

/* The source row holding output row R (see the permutation at the top). */
static int source_row(int R, int hd, int src_halves, int dst_halves) {
    if (src_halves == dst_halves) return R;
    int h = R / hd, r = R % hd, half = hd / 2;
    if (dst_halves) return h * hd + 2 * (r % half) + r / half;   /* dst p*half+i <- src 2i+p */
    return h * hd + (r % 2) * half + r / 2;                      /* dst 2i+p <- src p*half+i */
}

static float mat_elem(const Mat *a, size_t i) {
    if (a->dtype == DTYPE_F32) return ((const float *)a->data)[i];
    return bf16_to_f32(((const uint16_t *)a->data)[i]);
}

/* n values into buf in dtype dt: row `row` of matrix a (row-major or in
 * panels: mat_offset), or vec[0 .. n-1] when a is NULL. */
static void convert_row(const Mat *a, const float *vec, int row, int n, DType dt, void *buf) {
    for (int i = 0; i < n; i++) {
        size_t j = a ? mat_offset(a, row, i) : (size_t)i;
        if (dt == DTYPE_BF16 && a && a->dtype == DTYPE_BF16) {   /* bit copy: exact even for NaN payloads */
            ((uint16_t *)buf)[i] = ((const uint16_t *)a->data)[j];
            continue;
        }
        float v = a ? mat_elem(a, j) : vec[j];
        if (dt == DTYPE_F32) ((float *)buf)[i] = v;
        else if (dt == DTYPE_BF16) ((uint16_t *)buf)[i] = f32_to_bf16(v);
        else ((uint16_t *)buf)[i] = f32_to_f16(v);
    }
}

/* Stream one tensor, row by row, in dtype dt and the target pairing layout. */
static int emit_tensor(const OutTensor *t, DType dt, const Config *c, int dst_halves, WriteFn fn, void *ctx, Err *err) {
    if (!t->mat) {
        void *buf = xmalloc((size_t)t->n * 4);
        convert_row(NULL, t->vec, 0, t->n, dt, buf);
        int rc = fn(ctx, buf, (size_t)t->n * dtype_size(dt), err);
        free(buf);
        return rc;
    }
    const Mat *a = t->mat;
    void *buf = xmalloc((size_t)a->cols * 4);
    int rc = 0;
    for (int r = 0; r < a->rows && rc == 0; r++) {
        int src = t->rotated ? source_row(r, c->head_dim, c->rope_pairing_halves, dst_halves) : r;
        convert_row(a, NULL, src, a->cols, dt, buf);
        rc = fn(ctx, buf, (size_t)a->cols * dtype_size(dt), err);
    }
    free(buf);
    return rc;
}

/* ---- small file helpers -------------------------------------------------------------------- */

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static int same_file(const char *a, const char *b) {
    struct stat x, y;
    return stat(a, &x) == 0 && stat(b, &y) == 0 && x.st_dev == y.st_dev && x.st_ino == y.st_ino;
}

static int check_output(const Model *m, const char *out, int force, Err *err) {
    if (same_file(out, m->path)) return err_set(err, "-o %s: that is the input model", out);
    if (path_exists(out) && !force) return err_set(err, "%s: already exists (--force replaces it)", out);
    return 0;
}

static int check_tokenizer(const Model *m, const Tokenizer *tok, Err *err) {
    if (tok && tokenizer_vocab_size(tok) != m->cfg.vocab_size)
        return err_set(err, "%s: the tokenizer has %d tokens but the model has a vocabulary of %d", m->path,
                       tokenizer_vocab_size(tok), m->cfg.vocab_size);
    return 0;
}

/* ---- GGUF ------------------------------------------------------------------------------------ */

static uint32_t ggml_type_of(DType dt) { return dt == DTYPE_F32 ? GGML_F32 : dt == DTYPE_F16 ? GGML_F16 : GGML_BF16; }
static uint32_t file_type_of(DType dt) { return dt == DTYPE_F32 ? 0 : dt == DTYPE_F16 ? 1 : 32; }   /* LLAMA_FTYPE_* */

static void put_model_keys(GgufWriter *w, const Model *m, const ConvertOpts *o, const char *name) {
    const Config *c = &m->cfg;
    gguf_put_str(w, "general.architecture", "llama");
    gguf_put_str(w, "general.name", name);
    gguf_put_u32(w, "general.file_type", file_type_of(o->dtype));
    gguf_put_u32(w, "general.alignment", o->alignment ? o->alignment : GGUF_DEFAULT_ALIGNMENT);
    gguf_put_u32(w, "llama.context_length", (uint32_t)c->max_seq_len);
    gguf_put_u32(w, "llama.embedding_length", (uint32_t)c->dim);
    gguf_put_u32(w, "llama.block_count", (uint32_t)c->n_layers);
    gguf_put_u32(w, "llama.feed_forward_length", (uint32_t)c->hidden_dim);
    gguf_put_u32(w, "llama.rope.dimension_count", (uint32_t)c->head_dim);
    gguf_put_u32(w, "llama.attention.head_count", (uint32_t)c->n_heads);
    gguf_put_u32(w, "llama.attention.head_count_kv", (uint32_t)c->n_kv_heads);
    gguf_put_f32(w, "llama.attention.layer_norm_rms_epsilon", c->norm_eps);
    gguf_put_f32(w, "llama.rope.freq_base", c->rope_theta);
    if (c->head_dim * c->n_heads != c->dim) {   /* llama.cpp assumes dim / heads otherwise */
        gguf_put_u32(w, "llama.attention.key_length", (uint32_t)c->head_dim);
        gguf_put_u32(w, "llama.attention.value_length", (uint32_t)c->head_dim);
    }
    gguf_put_u32(w, "llama.vocab_size", (uint32_t)c->vocab_size);
}

static void put_tokenizer_keys(GgufWriter *w, const Tokenizer *tok) {
    TokenizerVocab v;
    tokenizer_get_vocab(tok, &v);
    int32_t *types = xmalloc((size_t)v.n * sizeof *types);
    for (int i = 0; i < v.n; i++) types[i] = v.types[i];
    gguf_put_str(w, "tokenizer.ggml.model", "llama");
    gguf_put_str(w, "tokenizer.ggml.pre", "default");
    gguf_put_str_array(w, "tokenizer.ggml.tokens", v.pieces, v.lens, (uint64_t)v.n);
    gguf_put_f32_array(w, "tokenizer.ggml.scores", v.scores, (uint64_t)v.n);
    gguf_put_i32_array(w, "tokenizer.ggml.token_type", types, (uint64_t)v.n);
    if (v.bos_id >= 0) gguf_put_u32(w, "tokenizer.ggml.bos_token_id", (uint32_t)v.bos_id);
    if (v.eos_id >= 0) gguf_put_u32(w, "tokenizer.ggml.eos_token_id", (uint32_t)v.eos_id);
    gguf_put_u32(w, "tokenizer.ggml.unknown_token_id", (uint32_t)v.unk_id);
    gguf_put_bool(w, "tokenizer.ggml.add_bos_token", 1);
    gguf_put_bool(w, "tokenizer.ggml.add_eos_token", 0);
    gguf_put_bool(w, "tokenizer.ggml.add_space_prefix", v.add_dummy_prefix);
    if (v.remove_extra_whitespaces) gguf_put_bool(w, "tokenizer.ggml.remove_extra_whitespaces", 1);
    free(types);
}

static int gguf_sink(void *ctx, const void *bytes, size_t n, Err *err) { return gguf_write_data(ctx, bytes, n, err); }

static int declare_gguf_tensors(GgufWriter *w, const OutTensor *t, int n, DType dt, Err *err) {
    for (int i = 0; i < n; i++) {
        uint64_t dims[2];
        int rc;
        if (t[i].mat) {
            dims[0] = (uint64_t)t[i].mat->cols;   /* innermost first */
            dims[1] = (uint64_t)t[i].mat->rows;
            rc = gguf_add_tensor(w, t[i].gguf, ggml_type_of(dt), 2, dims, err);
        } else {
            dims[0] = (uint64_t)t[i].n;
            rc = gguf_add_tensor(w, t[i].gguf, GGML_F32, 1, dims, err);   /* norms stay F32 */
        }
        if (rc) return -1;
    }
    return 0;
}

/* general.name default: the file name without directory and ".gguf". */
static void default_name(const char *path, char *out, size_t size) {
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    size_t n = strlen(base);
    if (ends_with(base, ".gguf")) n -= 5;
    snprintf(out, size, "%.*s", (int)n, base);
}

static int write_gguf_body(GgufWriter *w, const Model *m, const OutTensor *t, int n, FILE *f, const char *path,
                           DType dt, Err *err) {
    if (gguf_write_header(w, f, path, err)) return -1;
    for (int i = 0; i < n; i++)
        if (emit_tensor(&t[i], t[i].mat ? dt : DTYPE_F32, &m->cfg, 0, gguf_sink, w, err)) return -1;
    return gguf_finish(w, err);
}

int convert_write_gguf(const Model *m, const Tokenizer *tok, const char *path, const ConvertOpts *o, Err *err) {
    if (!tok) return err_set(err, "%s: no tokenizer to embed (llama.cpp needs one): give one with -t FILE", m->path);
    if (check_output(m, path, o->force, err) || check_tokenizer(m, tok, err)) return -1;
    if (path_is_dir(path)) return err_set(err, "%s: is a directory", path);
    char name[256];
    if (o->name) snprintf(name, sizeof name, "%s", o->name);
    else default_name(path, name, sizeof name);
    GgufWriter *w = gguf_writer_new(o->alignment);
    put_model_keys(w, m, o, name);
    put_tokenizer_keys(w, tok);
    int n;
    OutTensor *t = tensor_list(m, &n);
    AtomicFile af;
    OutLock lock;   /* one writer per output file */
    int rc = declare_gguf_tensors(w, t, n, o->dtype, err);
    if (rc == 0) rc = outlock_acquire(&lock, path, err);
    if (rc == 0) {
        rc = atomic_open(&af, path, err);
        if (rc != 0) outlock_release(&lock);
    }
    if (rc == 0) {
        rc = write_gguf_body(w, m, t, n, af.f, path, o->dtype, err);
        if (rc == 0) rc = atomic_commit(&af, err);
        else atomic_abort(&af);
        outlock_release(&lock);
    }
    free(t);
    gguf_writer_free(w);
    return rc;
}

/* ---- HF directory ---------------------------------------------------------------------------- */

static int write_config(const Model *m, DType dt, const char *dir, Err *err) {
    cJSON *r = outdir_hf_config(&m->cfg, dt);
    int rc = outdir_write_json(dir, "config.json", r, err);
    cJSON_Delete(r);
    return rc;
}

static int st_sink(void *ctx, const void *bytes, size_t n, Err *err) { return st_writer_write(ctx, bytes, n, err); }

static int write_safetensors(const Model *m, DType dt, const char *dir, Err *err) {
    int n;
    OutTensor *t = tensor_list(m, &n);
    StSpec *specs = xcalloc((size_t)n, sizeof *specs);
    for (int i = 0; i < n; i++) {
        specs[i].name = t[i].hf;
        specs[i].dtype = dt;
        specs[i].n_dims = t[i].mat ? 2 : 1;
        specs[i].shape[0] = t[i].mat ? (uint64_t)t[i].mat->rows : (uint64_t)t[i].n;
        specs[i].shape[1] = t[i].mat ? (uint64_t)t[i].mat->cols : 0;
    }
    char path[4200];
    path_join(path, sizeof path, dir, "model.safetensors");
    StWriter sw;
    int rc = st_writer_open(&sw, path, specs, n, err);
    for (int i = 0; rc == 0 && i < n; i++) rc = emit_tensor(&t[i], dt, &m->cfg, 1, st_sink, &sw, err);
    if (rc == 0) rc = st_writer_close(&sw, err);
    else if (sw.f) st_writer_abort(&sw);
    free(specs);
    free(t);
    return rc;
}

/* -- a SentencePiece tokenizer.model (protobuf) from a vocabulary -- */

static void pb_varint(Buf *b, uint64_t v) {
    uint8_t x[10];
    int k = 0;
    do { x[k] = (uint8_t)(v & 0x7F); v >>= 7; if (v) x[k] |= 0x80; k++; } while (v);
    buf_append(b, x, (size_t)k);
}
static void pb_tag(Buf *b, int field, int wire) { pb_varint(b, (uint64_t)field << 3 | (uint64_t)wire); }
static void pb_int(Buf *b, int field, int64_t v) { pb_tag(b, field, 0); pb_varint(b, (uint64_t)v); }
static void pb_bytes(Buf *b, int field, const void *s, size_t n) { pb_tag(b, field, 2); pb_varint(b, n); buf_append(b, s, n); }
static void pb_float(Buf *b, int field, float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    uint8_t x[4] = { (uint8_t)u, (uint8_t)(u >> 8), (uint8_t)(u >> 16), (uint8_t)(u >> 24) };
    pb_tag(b, field, 5);
    buf_append(b, x, 4);
}

/* ModelProto: 1 pieces {1 piece, 2 score, 3 type}; 2 trainer_spec {3 model_type
 * BPE=2, 35 byte_fallback, 40-43 unk/bos/eos/pad ids, 46/47 bos/eos pieces};
 * 3 normalizer_spec {1 name "identity", 3 add_dummy_prefix, 4
 * remove_extra_whitespaces, 5 escape_whitespaces}. */
static void model_proto(const TokenizerVocab *v, Buf *out) {
    Buf sub = {0};
    for (int i = 0; i < v->n; i++) {
        sub.len = 0;
        pb_bytes(&sub, 1, v->pieces[i], (size_t)v->lens[i]);
        pb_float(&sub, 2, v->scores[i]);
        pb_int(&sub, 3, v->types[i]);
        pb_bytes(out, 1, sub.data, sub.len);
    }
    sub.len = 0;
    pb_int(&sub, 3, 2);
    pb_int(&sub, 35, v->byte_fallback);
    pb_int(&sub, 40, v->unk_id);
    pb_int(&sub, 41, v->bos_id);
    pb_int(&sub, 42, v->eos_id);
    pb_int(&sub, 43, -1);
    if (v->bos_id >= 0) pb_bytes(&sub, 46, v->pieces[v->bos_id], (size_t)v->lens[v->bos_id]);
    if (v->eos_id >= 0) pb_bytes(&sub, 47, v->pieces[v->eos_id], (size_t)v->lens[v->eos_id]);
    pb_bytes(out, 2, sub.data, sub.len);
    sub.len = 0;
    pb_bytes(&sub, 1, "identity", 8);
    pb_int(&sub, 3, v->add_dummy_prefix);
    pb_int(&sub, 4, v->remove_extra_whitespaces);
    pb_int(&sub, 5, 1);
    pb_bytes(out, 3, sub.data, sub.len);
    buf_free(&sub);
}

static int write_bytes(const char *path, const void *p, size_t n, Err *err) {
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(p, 1, n, f) == n;
    if (f && fclose(f) != 0) ok = 0;
    if (!ok) return err_set(err, "%s: cannot write: %s", path, strerror(errno));
    return 0;
}

static int copy_file(const char *src, const char *dst, Err *err) {
    char *data;
    size_t size;
    if (read_file(src, &data, &size, err)) return -1;
    int rc = write_bytes(dst, data, size, err);
    free(data);
    return rc;
}

/* tokenizer.model or tokenizer.bin copied; a GGUF vocabulary written as tokenizer.model. */
static int write_tokenizer(const Tokenizer *tok, const char *tok_file, const char *dir, Err *err) {
    char dst[4200], magic[4] = {0};
    int got = tok_file ? file_head(tok_file, magic, 4) : 0;
    int is_gguf = got == 4 && memcmp(magic, "GGUF", 4) == 0;
    if (tok_file && !is_gguf) {
        path_join(dst, sizeof dst, dir, magic[0] == 0x0A ? "tokenizer.model" : "tokenizer.bin");
        return copy_file(tok_file, dst, err);
    }
    if (!tok) return 0;
    TokenizerVocab v;
    tokenizer_get_vocab(tok, &v);
    Buf b = {0};
    model_proto(&v, &b);
    path_join(dst, sizeof dst, dir, "tokenizer.model");
    int rc = write_bytes(dst, b.data, b.len, err);
    buf_free(&b);
    return rc;
}

int convert_write_hf(const Model *m, const Tokenizer *tok, const char *tok_file, const char *dir_in,
                     const ConvertOpts *o, Err *err) {
    char dir[OUTDIR_MAX];
    if (outdir_name(dir_in, dir, sizeof dir, err)) return -1;
    if (check_output(m, dir, o->force, err) || check_tokenizer(m, tok, err)) return -1;
    OutDir od;
    if (outdir_begin(&od, dir, o->force, err)) return -1;
    if (write_config(m, o->dtype, od.tmp, err) || write_safetensors(m, o->dtype, od.tmp, err) ||
        write_tokenizer(tok, tok_file, od.tmp, err)) {
        outdir_abort(&od);
        return -1;
    }
    return outdir_commit(&od, err);
}
