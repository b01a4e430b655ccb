/* loader_gguf.c — a Llama model in a GGUF file (llama.cpp), and its embedded tokenizer.
 *
 * Metadata (general.architecture must be "llama"):
 *   llama.block_count, llama.embedding_length, llama.feed_forward_length,
 *   llama.attention.head_count, llama.attention.head_count_kv (absent: = heads),
 *   llama.attention.layer_norm_rms_epsilon, llama.context_length (required),
 *   llama.rope.freq_base (absent: 10000), llama.rope.dimension_count and
 *   llama.attention.key_length/value_length (optional; must equal head_dim),
 *   llama.vocab_size (optional; else the number of tokens or token_embd's rows).
 *   RoPE scaling (llama.rope.scaling.type other than "none", a factor != 1) is refused.
 * Tensors (dims innermost first, so a [rows, cols] weight has dims {cols, rows}):
 *   token_embd.weight {dim, vocab}       output_norm.weight {dim}     output.weight {dim, vocab} (absent: tied)
 *   blk.N.attn_norm.weight {dim}         blk.N.ffn_norm.weight {dim}
 *   blk.N.attn_q.weight {dim, H*hd}      blk.N.attn_k/attn_v.weight {dim, KV*hd}
 *   blk.N.attn_output.weight {H*hd, dim} blk.N.ffn_gate/ffn_up.weight {dim, ffn}   blk.N.ffn_down.weight {ffn, dim}
 * F32, F16 and BF16 only: quantised types are refused by name. Any other tensor
 * (biases, rope_freqs, ...) is refused too: ignoring it would give wrong answers.
 *
 * q/k layout. llama.cpp runs Llama with LLAMA_ROPE_TYPE_NORM, which rotates
 * ADJACENT pairs (2i, 2i+1) — Meta's original layout, the same as llama2.c —
 * and its convert_hf_to_gguf.py therefore un-does the Hugging Face q/k
 * permutation ("HF models permute some of the tensors, so we need to undo
 * that": LlamaModel.permute). So a llama GGUF stores q/k like Meta/llama2.c,
 * NOT like HF, and we load it with rope_pairing_halves = 0, as stored.
 * (convert.c permutes when converting between GGUF and HF.)
 *
 * The embedded tokenizer (tokenizer.ggml.model "llama": SentencePiece) is
 * tokenizer.ggml.tokens (strings, "▁" for spaces), .scores (f32), .token_type
 * (SentencePiece types 1..6), .bos/eos/unknown_token_id, .add_space_prefix.
 * The model records the .gguf itself as its tokenizer_path; tokenizer_load()
 * (load.c) recognises the magic and comes back here (gguf_tokenizer_load). */
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "formats/gguf.h"
#include "model/llama_tensors.h"
#include "model/loaders.h"
#include "model/model.h"

/* ---- metadata ------------------------------------------------------------------ */

static int req_int(const GgufFile *g, const char *key, int *out, Err *err) {
    int64_t v;
    int r = gguf_get_int(g, key, 1, INT_MAX, &v, err);
    if (r < 0) return -1;
    if (r == 0) return err_set(err, "%s: missing metadata '%s' (required for a llama model)", g->path, key);
    *out = (int)v;
    return 0;
}

static int opt_int(const GgufFile *g, const char *key, int min, int def, int *out, Err *err) {
    int64_t v;
    int r = gguf_get_int(g, key, min, INT_MAX, &v, err);
    if (r < 0) return -1;
    *out = r ? (int)v : def;
    return 0;
}

static int check_architecture(const GgufFile *g, Err *err) {
    GgufStr a;
    int r = gguf_get_str(g, "general.architecture", &a, err);
    if (r < 0) return -1;
    if (r == 0) return err_set(err, "%s: no general.architecture in the GGUF metadata", g->path);
    if (a.len != 5 || memcmp(a.ptr, "llama", 5) != 0)
        return err_set(err, "%s: architecture '%.*s' is not supported (only \"llama\")", g->path,
                       (int)(a.len < 64 ? a.len : 64), a.ptr);
    return 0;
}

/* Only plain RoPE is implemented: a scaled variant computed as plain RoPE
 * would silently give wrong answers at long positions. */
static int check_rope_scaling(const GgufFile *g, Err *err) {
    GgufStr s;
    double f;
    int r = gguf_get_str(g, "llama.rope.scaling.type", &s, err);
    if (r < 0) return -1;
    if (r && !(s.len == 4 && memcmp(s.ptr, "none", 4) == 0))
        return err_set(err, "%s: llama.rope.scaling.type '%.*s' is not supported (only plain RoPE)", g->path,
                       (int)(s.len < 64 ? s.len : 64), s.ptr);
    const char *keys[] = { "llama.rope.scaling.factor", "llama.rope.scale_linear" };
    for (int i = 0; i < 2; i++) {
        r = gguf_get_float(g, keys[i], &f, err);
        if (r < 0) return -1;
        if (r && f != 1.0 && f != 0.0)
            return err_set(err, "%s: %s = %g: RoPE scaling is not supported", g->path, keys[i], f);
    }
    return 0;
}

static int read_float(const GgufFile *g, const char *key, int required, double def, float *out, Err *err) {
    double v;
    int r = gguf_get_float(g, key, &v, err);
    if (r < 0) return -1;
    if (r == 0 && required) return err_set(err, "%s: missing metadata '%s' (required for a llama model)", g->path, key);
    if (r == 0) v = def;
    if (!isfinite(v)) return err_set(err, "%s: metadata '%s' is not finite", g->path, key);
    *out = (float)v;
    return 0;
}

/* head_dim from key_length (or dim / heads); value_length and the RoPE
 * dimension count, when given, must agree (no partial rotary in Llama). */
static int read_head_dim(const GgufFile *g, Config *c, Err *err) {
    if (c->dim % c->n_heads != 0 && !gguf_find(g, "llama.attention.key_length"))
        return err_set(err, "%s: embedding_length %d is not a multiple of head_count %d (and no key_length)",
                       g->path, c->dim, c->n_heads);
    int v, rope;
    if (opt_int(g, "llama.attention.key_length", 1, c->dim / c->n_heads, &c->head_dim, err) ||
        opt_int(g, "llama.attention.value_length", 1, c->head_dim, &v, err) ||
        opt_int(g, "llama.rope.dimension_count", 1, c->head_dim, &rope, err))
        return -1;
    if (v != c->head_dim)
        return err_set(err, "%s: attention.value_length %d != key_length %d is not supported", g->path, v, c->head_dim);
    if (rope != c->head_dim)
        return err_set(err, "%s: rope.dimension_count %d != head size %d (partial RoPE) is not supported",
                       g->path, rope, c->head_dim);
    return 0;
}

/* The vocabulary size: llama.vocab_size, the embedded token count and
 * token_embd's rows must agree where present. */
static int read_vocab_size(const GgufFile *g, Config *c, Err *err) {
    const GgufKV *tokens = NULL;
    const GgufTensor *emb = gguf_find_tensor(g, "token_embd.weight");
    if (gguf_get_array(g, "tokenizer.ggml.tokens", GGUF_STRING, &tokens, err) < 0) return -1;
    int64_t n_tok = tokens ? (int64_t)tokens->arr_n : 0;
    int vs;
    if (opt_int(g, "llama.vocab_size", 1, 0, &vs, err)) return -1;
    if (vs == 0) vs = n_tok > 0 && n_tok <= INT_MAX ? (int)n_tok : emb && emb->n_dims == 2 && emb->dims[1] <= INT_MAX ? (int)emb->dims[1] : 0;
    if (n_tok > 0 && n_tok != vs)
        return err_set(err, "%s: llama.vocab_size %d but the embedded tokenizer has %lld tokens", g->path, vs, (long long)n_tok);
    c->vocab_size = vs;
    return 0;
}

static int read_special_ids(const GgufFile *g, Config *c, Err *err) {
    int small = c->vocab_size <= 2;
    if (opt_int(g, "tokenizer.ggml.bos_token_id", 0, small ? 0 : 1, &c->bos_id, err) ||
        opt_int(g, "tokenizer.ggml.eos_token_id", 0, small ? 0 : 2, &c->eos_id, err))
        return -1;
    return 0;
}

static int read_config(const GgufFile *g, Config *c, Err *err) {
    memset(c, 0, sizeof *c);
    if (check_architecture(g, err) || check_rope_scaling(g, err) ||
        req_int(g, "llama.block_count", &c->n_layers, err) ||
        req_int(g, "llama.embedding_length", &c->dim, err) ||
        req_int(g, "llama.feed_forward_length", &c->hidden_dim, err) ||
        req_int(g, "llama.attention.head_count", &c->n_heads, err) ||
        opt_int(g, "llama.attention.head_count_kv", 1, c->n_heads, &c->n_kv_heads, err) ||
        req_int(g, "llama.context_length", &c->max_seq_len, err) ||
        read_float(g, "llama.attention.layer_norm_rms_epsilon", 1, 0.0, &c->norm_eps, err) ||
        read_float(g, "llama.rope.freq_base", 0, 10000.0, &c->rope_theta, err) ||
        read_head_dim(g, c, err) || read_vocab_size(g, c, err) || read_special_ids(g, c, err))
        return -1;
    c->rope_pairing_halves = 0;   /* Meta layout: see the top of this file */
    c->tied_embeddings = gguf_find_tensor(g, "output.weight") == NULL;
    return config_validate(c, g->path, err);
}

/* ---- tensors ------------------------------------------------------------------------- */

typedef struct {
    Model *m;
    const GgufFile *g;
    uint8_t *used;            /* per tensor: bound to a weight */
} Loader;

static int model_dtype(uint32_t type, DType *out) {
    switch (type) {
    case GGML_F32: *out = DTYPE_F32; return 1;
    case GGML_F16: *out = DTYPE_F16; return 1;
    case GGML_BF16: *out = DTYPE_BF16; return 1;
    default: return 0;
    }
}

static void dims_str(const GgufTensor *t, char *out, size_t size) {
    size_t k = (size_t)snprintf(out, size, "{");
    for (uint32_t d = 0; d < t->n_dims && k < size; d++)
        k += (size_t)snprintf(out + k, size - k, "%s%llu", d ? ", " : "", (unsigned long long)t->dims[d]);
    if (k < size) snprintf(out + k, size - k, "}");
}

/* The tensor `name` with dims {cols, rows} (rows == 0: a vector {cols}). */
static const GgufTensor *find_shaped(Loader *L, const char *name, int rows, int cols, DType *dt, Err *err) {
    const GgufFile *g = L->g;
    const GgufTensor *t = gguf_find_tensor(g, name);
    if (!t) return err_set(err, "%s: required tensor '%s' is missing", g->path, name), NULL;
    L->used[t - g->tensors] = 1;
    if (!model_dtype(t->type, dt)) {
        const char *tn = gguf_ggml_type_name(t->type);
        int quantised = t->type != 24 && t->type != 25 && t->type != 26 && t->type != 27 && t->type != 28;
        return err_set(err, "%s: tensor '%s' has ggml type %s (%u): %s, only F32, F16 and BF16%s",
                       g->path, name, tn, t->type, quantised ? "quantised tensors are not supported" : "not a float type",
                       quantised ? " (use an F16/BF16 GGUF or the HF checkpoint)" : ""), NULL;
    }
    int ok = rows ? t->n_dims == 2 && t->dims[0] == (uint64_t)cols && t->dims[1] == (uint64_t)rows
                  : t->n_dims == 1 && t->dims[0] == (uint64_t)cols;
    if (!ok) {
        char got[128];
        dims_str(t, got, sizeof got);
        if (rows) err_set(err, "%s: tensor '%s' has dims %s but the metadata implies {%d, %d} (innermost first)",
                          g->path, name, got, cols, rows);
        else err_set(err, "%s: tensor '%s' has dims %s but the metadata implies {%d}", g->path, name, got, cols);
        return NULL;
    }
    return t;
}

/* TensorFindFn for llama_bind_weights. */
static int find_weight(void *ctx, const char *name, int rows, int cols, DType *dtype, const void **data, Err *err) {
    const GgufTensor *t = cols ? find_shaped(ctx, name, rows, cols, dtype, err) : find_shaped(ctx, name, 0, rows, dtype, err);
    if (!t) return -1;
    *data = t->data;
    return 0;
}

/* A tensor we did not bind would be silently ignored: refuse instead. */
static int check_all_used(const Loader *L, Err *err) {
    const GgufFile *g = L->g;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        if (L->used[i]) continue;
        const char *name = g->tensors[i].name;
        if (!strcmp(name, "rope_freqs.weight"))
            return err_set(err, "%s: tensor 'rope_freqs.weight' (RoPE frequency factors, Llama-3.1 style scaling) is not supported", g->path);
        return err_set(err, "%s: unexpected tensor '%s' for a Llama-2 model (biases and extras are not supported; refusing rather than ignoring it)",
                       g->path, name);
    }
    return 0;
}

static int bind_all(Loader *L, Err *err) {
    if (llama_bind_weights(L->m, NAMING_GGUF, find_weight, L, err)) return -1;
    return check_all_used(L, err);
}

/* The embedded vocabulary, else a tokenizer file next to the model. */
static void find_tokenizer(Model *m, const GgufFile *g, const char *path) {
    if (gguf_find(g, "tokenizer.ggml.tokens")) {
        snprintf(m->tokenizer_path, sizeof m->tokenizer_path, "%s", path);
        return;
    }
    char dir[4096], p[sizeof m->tokenizer_path];
    path_dirname(dir, sizeof dir, path);
    const char *names[] = { "tokenizer.model", "tokenizer.bin" };
    for (int i = 0; i < 2; i++) {
        path_join(p, sizeof p, dir, names[i]);
        if (path_exists(p)) { snprintf(m->tokenizer_path, sizeof m->tokenizer_path, "%s", p); return; }
    }
}

int load_gguf(Model *m, const char *path, Err *err) {
    const FileMap *map = model_map_file(m, path, err);
    if (!map) return -1;
    GgufFile g;
    if (gguf_parse(&g, path, map->data, map->size_bytes, err)) return -1;
    snprintf(m->format, sizeof m->format, "gguf");
    int rc = read_config(&g, &m->cfg, err);
    if (rc == 0) {
        Loader L = { m, &g, xcalloc((size_t)g.n_tensors + 1, 1) };
        rc = bind_all(&L, err);
        free(L.used);
    }
    if (rc == 0) find_tokenizer(m, &g, path);
    gguf_free(&g);   /* the tensors point into the map, which the model keeps */
    return rc;
}

/* ---- the embedded tokenizer ---------------------------------------------------------------- */

enum { SP_NORMAL = 1, SP_UNKNOWN = 2, SP_CONTROL = 3, SP_BYTE = 6 };

static int is_byte_piece(const char *s, uint64_t n) {
    return n == 6 && memcmp(s, "<0x", 3) == 0 && s[5] == '>';
}

static int check_tokenizer_model(const GgufFile *g, Err *err) {
    GgufStr s;
    int r = gguf_get_str(g, "tokenizer.ggml.model", &s, err);
    if (r < 0) return -1;
    if (r == 0) return err_set(err, "%s: no embedded tokenizer (tokenizer.ggml.model is missing): give one with -t", g->path);
    if (s.len != 5 || memcmp(s.ptr, "llama", 5) != 0)
        return err_set(err, "%s: embedded tokenizer '%.*s' is not supported (only \"llama\" SentencePiece)", g->path,
                       (int)(s.len < 64 ? s.len : 64), s.ptr);
    return 0;
}

/* scores (optional, f32) and token types (optional, any integer type). */
static int read_scores_types(const GgufFile *g, int n, float *scores, uint8_t *types, int *have_types, Err *err) {
    const GgufKV *sc = NULL, *ty = NULL;
    if (gguf_get_array(g, "tokenizer.ggml.scores", GGUF_F32, &sc, err) < 0 ||
        gguf_get_array(g, "tokenizer.ggml.token_type", -1, &ty, err) < 0)
        return -1;
    if (sc && sc->arr_n != (uint64_t)n)
        return err_set(err, "%s: tokenizer.ggml.scores has %llu entries for %d tokens", g->path, (unsigned long long)sc->arr_n, n);
    if (ty && ty->arr_n != (uint64_t)n)
        return err_set(err, "%s: tokenizer.ggml.token_type has %llu entries for %d tokens", g->path, (unsigned long long)ty->arr_n, n);
    if (ty && (ty->arr_type == GGUF_F32 || ty->arr_type == GGUF_F64 || ty->arr_type == GGUF_BOOL ||
               ty->arr_type == GGUF_STRING || ty->arr_type == GGUF_ARRAY))
        return err_set(err, "%s: tokenizer.ggml.token_type is an array of %s, expected int32", g->path,
                       gguf_value_type_name(ty->arr_type));
    for (int i = 0; i < n; i++) {
        scores[i] = sc ? (float)gguf_array_float(sc, (uint64_t)i) : 0.0f;
        int64_t t = ty ? gguf_array_int(ty, (uint64_t)i) : SP_NORMAL;
        if (t < 1 || t > 6)
            return err_set(err, "%s: tokenizer.ggml.token_type[%d] = %lld is not a token type (1..6)", g->path, i, (long long)t);
        types[i] = (uint8_t)t;
    }
    *have_types = ty != NULL;
    return 0;
}

/* Without token types, infer them as llama2.c's tokenizer.bin loader does. */
static void infer_types(const TokenizerVocab *v, int unk_id, uint8_t *types) {
    for (int i = 0; i < v->n; i++) {
        if (i == unk_id) types[i] = SP_UNKNOWN;
        else if (i == v->bos_id || i == v->eos_id) types[i] = SP_CONTROL;
        else if (is_byte_piece(v->pieces[i], (uint64_t)v->lens[i])) types[i] = SP_BYTE;
        else types[i] = SP_NORMAL;
    }
}

static int read_flags(const GgufFile *g, TokenizerVocab *v, int *unk_id, Err *err) {
    int small = v->n <= 2;
    v->add_dummy_prefix = 1;
    if (opt_int(g, "tokenizer.ggml.bos_token_id", 0, small ? -1 : 1, &v->bos_id, err) ||
        opt_int(g, "tokenizer.ggml.eos_token_id", 0, small ? -1 : 2, &v->eos_id, err) ||
        opt_int(g, "tokenizer.ggml.unknown_token_id", 0, 0, unk_id, err) ||
        gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &v->add_dummy_prefix, err) < 0 ||
        gguf_get_bool(g, "tokenizer.ggml.remove_extra_whitespaces", &v->remove_extra_whitespaces, err) < 0)
        return -1;
    return 0;
}

static Tokenizer *vocab_from_gguf(const GgufFile *g, Err *err) {
    const GgufKV *tk = NULL;
    if (check_tokenizer_model(g, err)) return NULL;
    int r = gguf_get_array(g, "tokenizer.ggml.tokens", GGUF_STRING, &tk, err);
    if (r < 0) return NULL;
    if (r == 0 || tk->arr_n == 0 || tk->arr_n > (1u << 24))
        return err_set(err, "%s: tokenizer.ggml.tokens is missing or has an implausible count", g->path), NULL;
    int n = (int)tk->arr_n, have_types = 0, unk_id = 0;
    GgufStr *s = xmalloc((size_t)n * sizeof *s);
    const char **pieces = xmalloc((size_t)n * sizeof *pieces);
    int *lens = xmalloc((size_t)n * sizeof *lens);
    float *scores = xmalloc((size_t)n * sizeof *scores);
    uint8_t *types = xmalloc((size_t)n);
    gguf_array_strings(tk, s);
    TokenizerVocab v = { .n = n, .pieces = pieces, .lens = lens, .scores = scores, .types = types };
    Tokenizer *t = NULL;
    int rc = 0;
    for (int i = 0; i < n && rc == 0; i++) {
        if (s[i].len > 65536) rc = err_set(err, "%s: token %d is longer than 64 KiB", g->path, i);
        pieces[i] = s[i].ptr;
        lens[i] = (int)(s[i].len > 65536 ? 0 : s[i].len);
    }
    if (rc == 0) rc = read_flags(g, &v, &unk_id, err);
    if (rc == 0) rc = read_scores_types(g, n, scores, types, &have_types, err);
    if (rc == 0 && !have_types) infer_types(&v, unk_id, types);
    if (rc == 0) t = tokenizer_from_vocab(&v, g->path, err);
    free(s); free(pieces); free(lens); free(scores); free(types);
    return t;
}

Tokenizer *gguf_tokenizer_load(const char *path, Err *err) {
    FileMap map;
    GgufFile g;
    if (filemap_open(&map, path, err)) return NULL;
    Tokenizer *t = NULL;
    if (gguf_parse(&g, path, map.data, map.size_bytes, err) == 0) {
        t = vocab_from_gguf(&g, err);
        gguf_free(&g);
    }
    filemap_close(&map);
    return t;
}
