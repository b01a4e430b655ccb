/* gguf.c — the GGUF container (format described in gguf.h): a bounds-checked
 * reader over bytes in memory and a streaming writer.
 *
 * Every number read from the file is untrusted. Counts are checked against the
 * bytes left before anything is allocated (a key needs at least 13 bytes, a
 * tensor info 24), lengths before they are skipped, and all size arithmetic is
 * u64 with explicit overflow checks. Values are decoded little-endian byte by
 * byte, so the reader does not depend on the host's byte order or alignment. */
#include "formats/gguf.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"

/* ---- ggml types ------------------------------------------------------------- */

typedef struct { const char *name; uint32_t block; uint32_t block_bytes; } GgmlTypeInfo;

/* Every type a GGUF file may hold (ggml.h, ggml_type), with its block size and
 * bytes per block: enough to check offsets of tensors we refuse and to name them. */
static const GgmlTypeInfo ggml_types[] = {
    [0] = { "F32", 1, 4 },       [1] = { "F16", 1, 2 },        [2] = { "Q4_0", 32, 18 },
    [3] = { "Q4_1", 32, 20 },    [6] = { "Q5_0", 32, 22 },     [7] = { "Q5_1", 32, 24 },
    [8] = { "Q8_0", 32, 34 },    [9] = { "Q8_1", 32, 36 },     [10] = { "Q2_K", 256, 84 },
    [11] = { "Q3_K", 256, 110 }, [12] = { "Q4_K", 256, 144 },  [13] = { "Q5_K", 256, 176 },
    [14] = { "Q6_K", 256, 210 }, [15] = { "Q8_K", 256, 292 },  [16] = { "IQ2_XXS", 256, 66 },
    [17] = { "IQ2_XS", 256, 74 }, [18] = { "IQ3_XXS", 256, 98 }, [19] = { "IQ1_S", 256, 50 },
    [20] = { "IQ4_NL", 32, 18 }, [21] = { "IQ3_S", 256, 110 }, [22] = { "IQ2_S", 256, 82 },
    [23] = { "IQ4_XS", 256, 136 }, [24] = { "I8", 1, 1 },      [25] = { "I16", 1, 2 },
    [26] = { "I32", 1, 4 },      [27] = { "I64", 1, 8 },       [28] = { "F64", 1, 8 },
    [29] = { "IQ1_M", 256, 56 }, [30] = { "BF16", 1, 2 },      [34] = { "TQ1_0", 256, 54 },
    [35] = { "TQ2_0", 256, 66 }, [39] = { "MXFP4", 32, 17 },
};
#define N_GGML_TYPES (sizeof ggml_types / sizeof ggml_types[0])

const char *gguf_ggml_type_name(uint32_t type) {
    return type < N_GGML_TYPES ? ggml_types[type].name : NULL;
}

static int mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    if (a != 0 && b > UINT64_MAX / a) return -1;
    *out = a * b;
    return 0;
}

uint64_t gguf_tensor_bytes(uint32_t type, uint32_t n_dims, const uint64_t *dims) {
    const char *name = gguf_ggml_type_name(type);
    if (!name || n_dims == 0 || n_dims > GGUF_MAX_DIMS) return 0;
    const GgmlTypeInfo *t = &ggml_types[type];
    if (dims[0] % t->block != 0) return 0;
    uint64_t n;
    if (mul_u64(dims[0] / t->block, t->block_bytes, &n)) return 0;
    for (uint32_t d = 1; d < n_dims; d++)
        if (mul_u64(n, dims[d], &n)) return 0;
    return n;
}

static const char *value_type_names[] = {
    "uint8", "int8", "uint16", "int16", "uint32", "int32", "float32", "bool",
    "string", "array", "uint64", "int64", "float64",
};

const char *gguf_value_type_name(uint32_t type) {
    return type <= GGUF_F64 ? value_type_names[type] : "?";
}

/* Bytes of a fixed-size value type; 0 for STRING, ARRAY and unknown types. */
static uint64_t fixed_size(uint32_t type) {
    switch (type) {
    case GGUF_U8: case GGUF_I8: case GGUF_BOOL: return 1;
    case GGUF_U16: case GGUF_I16: return 2;
    case GGUF_U32: case GGUF_I32: case GGUF_F32: return 4;
    case GGUF_U64: case GGUF_I64: case GGUF_F64: return 8;
    default: return 0;
    }
}

static uint32_t le32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t le64(const uint8_t *p) { return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32; }

/* ---- the reading cursor ------------------------------------------------------------ */

typedef struct {
    const uint8_t *base;
    uint64_t size, pos;
    const char *path;
    Err *err;
    char ctx[160];            /* what is being read, e.g. "metadata key 3 'general.name'" */
} Cur;

static int cfail(Cur *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int cfail(Cur *c, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return err_set(c->err, "%s: corrupt GGUF: %s: %s (at byte %llu of %llu)", c->path, c->ctx, msg,
                   (unsigned long long)c->pos, (unsigned long long)c->size);
}

static uint64_t left(const Cur *c) { return c->size - c->pos; }

static int need(Cur *c, uint64_t n, const char *what) {
    if (n > left(c)) return cfail(c, "%s runs past the end of the file (truncated?)", what);
    return 0;
}

static int rd_u32(Cur *c, uint32_t *v, const char *what) {
    if (need(c, 4, what)) return -1;
    *v = le32(c->base + c->pos);
    c->pos += 4;
    return 0;
}

static int rd_u64(Cur *c, uint64_t *v, const char *what) {
    if (need(c, 8, what)) return -1;
    *v = le64(c->base + c->pos);
    c->pos += 8;
    return 0;
}

static int rd_str(Cur *c, GgufStr *s, uint64_t max_len, const char *what) {
    uint64_t len;
    if (rd_u64(c, &len, what)) return -1;
    if (len > left(c))
        return cfail(c, "%s length %llu runs past the end of the file (%llu bytes left)", what,
                     (unsigned long long)len, (unsigned long long)left(c));
    if (len > max_len)
        return cfail(c, "%s is %llu bytes long (at most %llu)", what, (unsigned long long)len,
                     (unsigned long long)max_len);
    s->ptr = (const char *)c->base + c->pos;
    s->len = len;
    c->pos += len;
    return 0;
}

/* A string from the file made safe for a one-line message (cut, non-ASCII as '?'). */
static const char *shown(GgufStr s, char out[72]) {
    size_t n = s.len < 64 ? (size_t)s.len : 64;
    for (size_t i = 0; i < n; i++) {
        unsigned char ch = (unsigned char)s.ptr[i];
        out[i] = ch >= 0x20 && ch < 0x7F ? (char)ch : '?';
    }
    strcpy(out + n, s.len > 64 ? "..." : "");
    return out;
}

/* ---- metadata values ------------------------------------------------------------- */

static int walk_value(Cur *c, uint32_t type, int depth);

static int check_bools(Cur *c, uint64_t n) {
    for (uint64_t i = 0; i < n; i++)
        if (c->base[c->pos + i] > 1)
            return cfail(c, "bool value %u is neither 0 nor 1", c->base[c->pos + i]);
    return 0;
}

/* An array: u32 element type, u64 count, the elements. Fixed-size elements are
 * checked in one step; strings and nested arrays one by one (each takes at least
 * 8 / 12 bytes, so a huge count fails before any loop runs long). */
static int walk_array(Cur *c, int depth, GgufKV *kv) {
    uint32_t et;
    uint64_t n;
    if (depth >= GGUF_MAX_DEPTH) return cfail(c, "arrays nested deeper than %d levels", GGUF_MAX_DEPTH);
    if (rd_u32(c, &et, "array element type") || rd_u64(c, &n, "array length")) return -1;
    if (et > GGUF_F64) return cfail(c, "array element type %u is not a GGUF value type", et);
    if (kv) { kv->arr_type = et; kv->arr_n = n; kv->arr_data = c->base + c->pos; }
    uint64_t fs = fixed_size(et);
    if (fs) {
        if (n > left(c) / fs)
            return cfail(c, "array of %llu %s runs past the end of the file (%llu bytes left)",
                         (unsigned long long)n, gguf_value_type_name(et), (unsigned long long)left(c));
        if (et == GGUF_BOOL && check_bools(c, n)) return -1;
        c->pos += n * fs;
        return 0;
    }
    uint64_t min = et == GGUF_STRING ? 8 : 12;
    if (n > left(c) / min)
        return cfail(c, "array of %llu %ss cannot fit in the %llu bytes left", (unsigned long long)n,
                     gguf_value_type_name(et), (unsigned long long)left(c));
    for (uint64_t i = 0; i < n; i++)
        if (walk_value(c, et, depth + 1)) return -1;
    return 0;
}

static int walk_value(Cur *c, uint32_t type, int depth) {
    uint64_t fs = fixed_size(type);
    if (fs) {
        if (need(c, fs, gguf_value_type_name(type))) return -1;
        if (type == GGUF_BOOL && check_bools(c, 1)) return -1;
        c->pos += fs;
        return 0;
    }
    GgufStr s;
    if (type == GGUF_STRING) return rd_str(c, &s, UINT64_MAX, "string");
    if (type == GGUF_ARRAY) return walk_array(c, depth, NULL);
    return cfail(c, "value type %u is not a GGUF value type", type);
}

static int parse_kv(Cur *c, uint64_t i, GgufKV *kv) {
    char show[72];
    kv->pos = c->pos;
    snprintf(c->ctx, sizeof c->ctx, "metadata key %llu", (unsigned long long)i);
    if (rd_str(c, &kv->key, GGUF_MAX_KEY, "key")) return -1;
    if (kv->key.len == 0) return cfail(c, "empty key");
    snprintf(c->ctx, sizeof c->ctx, "metadata key %llu '%s'", (unsigned long long)i, shown(kv->key, show));
    if (rd_u32(c, &kv->type, "value type")) return -1;
    if (kv->type > GGUF_F64) return cfail(c, "value type %u is not a GGUF value type", kv->type);
    uint64_t start = c->pos;
    kv->val = c->base + c->pos;
    int rc = kv->type == GGUF_ARRAY ? walk_array(c, 0, kv) : walk_value(c, kv->type, 0);
    kv->val_size = c->pos - start;
    return rc;
}

/* ---- duplicates (sorting, so a file with a million keys is not quadratic) -------------- */

static int cmp_str(GgufStr a, GgufStr b) {
    uint64_t n = a.len < b.len ? a.len : b.len;
    int r = n ? memcmp(a.ptr, b.ptr, (size_t)n) : 0;
    return r ? r : (a.len < b.len ? -1 : a.len > b.len);
}
static int cmp_kv(const void *a, const void *b) {
    return cmp_str((*(const GgufKV *const *)a)->key, (*(const GgufKV *const *)b)->key);
}
static int cmp_tensor(const void *a, const void *b) {
    return strcmp((*(const GgufTensor *const *)a)->name, (*(const GgufTensor *const *)b)->name);
}

static int check_duplicates(const GgufFile *g, Err *err) {
    char show[72];
    int rc = 0;
    const GgufKV **k = xmalloc((g->n_kv + 1) * sizeof *k);
    for (uint64_t i = 0; i < g->n_kv; i++) k[i] = &g->kv[i];
    qsort(k, (size_t)g->n_kv, sizeof *k, cmp_kv);
    for (uint64_t i = 1; i < g->n_kv && !rc; i++)
        if (cmp_str(k[i - 1]->key, k[i]->key) == 0)
            rc = err_set(err, "%s: corrupt GGUF: metadata key '%s' appears twice", g->path, shown(k[i]->key, show));
    free(k);
    const GgufTensor **t = xmalloc((g->n_tensors + 1) * sizeof *t);
    for (uint64_t i = 0; i < g->n_tensors; i++) t[i] = &g->tensors[i];
    qsort(t, (size_t)g->n_tensors, sizeof *t, cmp_tensor);
    for (uint64_t i = 1; i < g->n_tensors && !rc; i++)
        if (strcmp(t[i - 1]->name, t[i]->name) == 0)
            rc = err_set(err, "%s: corrupt GGUF: tensor '%s' appears twice", g->path, t[i]->name);
    free(t);
    return rc;
}

/* ---- tensor infos ------------------------------------------------------------------------ */

static int parse_dims(Cur *c, GgufTensor *t) {
    if (rd_u32(c, &t->n_dims, "n_dims")) return -1;
    if (t->n_dims == 0 || t->n_dims > GGUF_MAX_DIMS)
        return cfail(c, "n_dims %u is not in 1..%d", t->n_dims, GGUF_MAX_DIMS);
    uint64_t n = 1;
    for (uint32_t d = 0; d < t->n_dims; d++) {
        if (rd_u64(c, &t->dims[d], "dimension")) return -1;
        if (t->dims[d] == 0) return cfail(c, "dimension %u is 0", d);
        /* ggml counts elements in int64_t */
        if (mul_u64(n, t->dims[d], &n) || n > (uint64_t)INT64_MAX)
            return cfail(c, "the dimensions overflow (dimension %u is %llu)", d, (unsigned long long)t->dims[d]);
    }
    return 0;
}

static int parse_tensor_info(Cur *c, uint64_t i, GgufTensor *t) {
    GgufStr name;
    char show[72];
    t->info_pos = c->pos;
    snprintf(c->ctx, sizeof c->ctx, "tensor info %llu", (unsigned long long)i);
    if (rd_str(c, &name, GGUF_MAX_NAME, "tensor name")) return -1;
    if (name.len == 0 || memchr(name.ptr, 0, (size_t)name.len))
        return cfail(c, "tensor name '%s' is empty or contains a NUL byte", shown(name, show));
    memcpy(t->name, name.ptr, (size_t)name.len);
    t->name[name.len] = '\0';
    snprintf(c->ctx, sizeof c->ctx, "tensor '%s'", shown(name, show));
    if (parse_dims(c, t) || rd_u32(c, &t->type, "ggml type")) return -1;
    const char *tn = gguf_ggml_type_name(t->type);
    if (!tn) return cfail(c, "unknown ggml type %u", t->type);
    if (rd_u64(c, &t->offset, "data offset")) return -1;
    t->n_bytes = gguf_tensor_bytes(t->type, t->n_dims, t->dims);
    if (t->n_bytes == 0)
        return cfail(c, "%s tensor: innermost dimension %llu is not a multiple of the block size %u, or the size overflows",
                     tn, (unsigned long long)t->dims[0], ggml_types[t->type].block);
    return 0;
}

/* Place every tensor in the data section: aligned, inside the file. */
static int place_tensors(GgufFile *g, Cur *c) {
    uint64_t a = g->alignment;
    g->data_offset = c->pos + (a - c->pos % a) % a;   /* pos <= size < 2^63: no overflow */
    if (g->n_tensors > 0 && g->data_offset > g->size)
        return err_set(c->err, "%s: truncated GGUF: the tensor data would start at byte %llu but the file has %llu bytes",
                       g->path, (unsigned long long)g->data_offset, (unsigned long long)g->size);
    uint64_t data_size = g->n_tensors > 0 ? g->size - g->data_offset : 0;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        GgufTensor *t = &g->tensors[i];
        if (t->offset % a != 0)
            return err_set(c->err, "%s: corrupt GGUF: tensor '%s': data offset %llu is not a multiple of the alignment %llu",
                           g->path, t->name, (unsigned long long)t->offset, (unsigned long long)a);
        if (t->offset > data_size || t->n_bytes > data_size - t->offset)
            return err_set(c->err, "%s: truncated GGUF: tensor '%s': data [%llu, +%llu bytes) runs past the end of the file (the data section holds %llu bytes)",
                           g->path, t->name, (unsigned long long)t->offset, (unsigned long long)t->n_bytes,
                           (unsigned long long)data_size);
        t->data = g->base + g->data_offset + t->offset;
    }
    return 0;
}

/* general.alignment: a u32, a positive multiple of 8 (the spec; llama.cpp also
 * wants a power of two, which our writer always uses). */
static int read_alignment(GgufFile *g, Err *err) {
    g->alignment = GGUF_DEFAULT_ALIGNMENT;
    const GgufKV *kv = gguf_find(g, "general.alignment");
    if (!kv) return 0;
    if (kv->type != GGUF_U32)
        return err_set(err, "%s: corrupt GGUF: general.alignment has type %s, must be uint32", g->path,
                       gguf_value_type_name(kv->type));
    uint32_t a = le32(kv->val);
    if (a == 0 || a % 8 != 0 || a > (1u << 30))
        return err_set(err, "%s: corrupt GGUF: general.alignment %u must be a positive multiple of 8", g->path, a);
    g->alignment = a;
    return 0;
}

static int parse_header(GgufFile *g, Cur *c) {
    snprintf(c->ctx, sizeof c->ctx, "header");
    if (g->size < 4 || memcmp(g->base, GGUF_MAGIC, 4) != 0)
        return err_set(c->err, "%s: not a GGUF file (the first bytes are not \"GGUF\")", g->path);
    c->pos = 4;
    if (rd_u32(c, &g->version, "version")) return -1;
    if ((g->version & 0xFFFF) == 0 && g->version != 0)
        return err_set(c->err, "%s: GGUF version field 0x%08x: a big-endian GGUF file, not supported", g->path, g->version);
    if (g->version < 2 || g->version > 3)
        return err_set(c->err, "%s: GGUF version %u is not supported (only versions 2 and 3)", g->path, g->version);
    if (rd_u64(c, &g->n_tensors, "tensor count") || rd_u64(c, &g->n_kv, "metadata count")) return -1;
    if (g->n_tensors > left(c) / 24)
        return err_set(c->err, "%s: truncated or corrupt GGUF: tensor count %llu cannot fit in a file of %llu bytes", g->path,
                       (unsigned long long)g->n_tensors, (unsigned long long)g->size);
    if (g->n_kv > left(c) / 13)
        return err_set(c->err, "%s: truncated or corrupt GGUF: metadata count %llu cannot fit in a file of %llu bytes", g->path,
                       (unsigned long long)g->n_kv, (unsigned long long)g->size);
    return 0;
}

int gguf_parse(GgufFile *g, const char *path, const void *bytes, size_t size, Err *err) {
    memset(g, 0, sizeof *g);
    snprintf(g->path, sizeof g->path, "%s", path);
    g->base = bytes;
    g->size = size;
    Cur c = { .base = bytes, .size = size, .path = g->path, .err = err };
    if (parse_header(g, &c)) return -1;
    g->kv = xcalloc((size_t)g->n_kv + 1, sizeof *g->kv);
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (parse_kv(&c, i, &g->kv[i])) goto fail;
    if (read_alignment(g, err)) goto fail;
    if (g->n_tensors > left(&c) / 24) {
        err_set(err, "%s: truncated or corrupt GGUF: tensor count %llu cannot fit in the %llu bytes after the metadata", g->path,
                (unsigned long long)g->n_tensors, (unsigned long long)left(&c));
        goto fail;
    }
    g->tensors = xcalloc((size_t)g->n_tensors + 1, sizeof *g->tensors);
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (parse_tensor_info(&c, i, &g->tensors[i])) goto fail;
    if (place_tensors(g, &c) || check_duplicates(g, err)) goto fail;
    return 0;
fail:
    gguf_free(g);
    return -1;
}

void gguf_free(GgufFile *g) {
    free(g->kv);
    free(g->tensors);
    g->kv = NULL;
    g->tensors = NULL;
    g->n_kv = g->n_tensors = 0;
}

/* ---- lookups ------------------------------------------------------------------------ */

const GgufKV *gguf_find(const GgufFile *g, const char *key) {
    size_t n = strlen(key);
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].key.len == n && memcmp(g->kv[i].key.ptr, key, n) == 0) return &g->kv[i];
    return NULL;
}

const GgufTensor *gguf_find_tensor(const GgufFile *g, const char *name) {
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (!strcmp(g->tensors[i].name, name)) return &g->tensors[i];
    return NULL;
}

static int wrong_type(const GgufFile *g, const char *key, uint32_t type, const char *want, Err *err) {
    return err_set(err, "%s: metadata '%s' has type %s, expected %s", g->path, key, gguf_value_type_name(type), want);
}

/* An integer value at p of type `type`; 0 if the type is no integer type. */
static int int_value(uint32_t type, const uint8_t *p, int64_t *v, int *too_big) {
    *too_big = 0;
    switch (type) {
    case GGUF_U8: *v = p[0]; return 1;
    case GGUF_I8: *v = (int8_t)p[0]; return 1;
    case GGUF_U16: *v = (uint16_t)(p[0] | p[1] << 8); return 1;
    case GGUF_I16: *v = (int16_t)(uint16_t)(p[0] | p[1] << 8); return 1;
    case GGUF_U32: *v = le32(p); return 1;
    case GGUF_I32: *v = (int32_t)le32(p); return 1;
    case GGUF_U64: { uint64_t u = le64(p); *too_big = u > (uint64_t)INT64_MAX; *v = (int64_t)(u & (uint64_t)INT64_MAX); return 1; }
    case GGUF_I64: *v = (int64_t)le64(p); return 1;
    default: return 0;
    }
}

static double float_value(uint32_t type, const uint8_t *p) {
    if (type == GGUF_F32) { uint32_t u = le32(p); float f; memcpy(&f, &u, 4); return f; }
    uint64_t u = le64(p);
    double d;
    memcpy(&d, &u, 8);
    return d;
}

int gguf_get_int(const GgufFile *g, const char *key, int64_t min, int64_t max, int64_t *out, Err *err) {
    const GgufKV *kv = gguf_find(g, key);
    if (!kv) return 0;
    int64_t v;
    int too_big;
    if (!int_value(kv->type, kv->val, &v, &too_big)) return wrong_type(g, key, kv->type, "an integer", err);
    if (too_big || v < min || v > max)
        return err_set(err, "%s: metadata '%s' = %s%lld is out of range [%lld, %lld]", g->path, key,
                       too_big ? "2^63 + " : "", (long long)v, (long long)min, (long long)max);
    *out = v;
    return 1;
}

int gguf_get_float(const GgufFile *g, const char *key, double *out, Err *err) {
    const GgufKV *kv = gguf_find(g, key);
    if (!kv) return 0;
    if (kv->type != GGUF_F32 && kv->type != GGUF_F64) return wrong_type(g, key, kv->type, "float32", err);
    *out = float_value(kv->type, kv->val);
    return 1;
}

int gguf_get_bool(const GgufFile *g, const char *key, int *out, Err *err) {
    const GgufKV *kv = gguf_find(g, key);
    if (!kv) return 0;
    if (kv->type != GGUF_BOOL) return wrong_type(g, key, kv->type, "bool", err);
    *out = kv->val[0];
    return 1;
}

int gguf_get_str(const GgufFile *g, const char *key, GgufStr *out, Err *err) {
    const GgufKV *kv = gguf_find(g, key);
    if (!kv) return 0;
    if (kv->type != GGUF_STRING) return wrong_type(g, key, kv->type, "string", err);
    out->len = le64(kv->val);
    out->ptr = (const char *)kv->val + 8;
    return 1;
}

int gguf_get_array(const GgufFile *g, const char *key, int elem, const GgufKV **out, Err *err) {
    const GgufKV *kv = gguf_find(g, key);
    if (!kv) return 0;
    if (kv->type != GGUF_ARRAY) return wrong_type(g, key, kv->type, "an array", err);
    if (elem >= 0 && kv->arr_type != (uint32_t)elem)
        return err_set(err, "%s: metadata '%s' is an array of %s, expected %s", g->path, key,
                       gguf_value_type_name(kv->arr_type), gguf_value_type_name((uint32_t)elem));
    *out = kv;
    return 1;
}

void gguf_array_strings(const GgufKV *kv, GgufStr *out) {
    const uint8_t *p = kv->arr_data;
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        out[i].len = le64(p);
        out[i].ptr = (const char *)p + 8;
        p += 8 + out[i].len;
    }
}

int64_t gguf_array_int(const GgufKV *kv, uint64_t i) {
    int64_t v = 0;
    int too_big;
    int_value(kv->arr_type, kv->arr_data + i * fixed_size(kv->arr_type), &v, &too_big);
    return v;
}

double gguf_array_float(const GgufKV *kv, uint64_t i) {
    return float_value(kv->arr_type, kv->arr_data + i * fixed_size(kv->arr_type));
}

/* ---- writer ------------------------------------------------------------------------------ */

static void put_u32(Buf *b, uint32_t v) {
    uint8_t x[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24) };
    buf_append(b, x, 4);
}
static void put_u64(Buf *b, uint64_t v) { put_u32(b, (uint32_t)v); put_u32(b, (uint32_t)(v >> 32)); }
static void put_str(Buf *b, const char *s, uint64_t len) { put_u64(b, len); buf_append(b, s, (size_t)len); }

struct GgufWriter {
    uint32_t alignment;
    Buf kv, info;
    uint64_t n_kv, n_tensors;
    int has_alignment_key;
    uint64_t *sizes;          /* each tensor's bytes */
    uint64_t data_size;       /* next tensor's offset */
    FILE *f;
    char path[4096];
    uint64_t cur, cur_written;   /* streaming position */
};

static uint64_t align_up(uint64_t x, uint64_t a) { return x + (a - x % a) % a; }

GgufWriter *gguf_writer_new(uint32_t alignment) {
    GgufWriter *w = xcalloc(1, sizeof *w);
    w->alignment = alignment ? alignment : GGUF_DEFAULT_ALIGNMENT;
    return w;
}

void gguf_writer_free(GgufWriter *w) {
    if (!w) return;
    buf_free(&w->kv);
    buf_free(&w->info);
    free(w->sizes);
    free(w);
}

static void put_key(GgufWriter *w, const char *key, uint32_t type) {
    if (!strcmp(key, "general.alignment")) w->has_alignment_key = 1;
    put_str(&w->kv, key, strlen(key));
    put_u32(&w->kv, type);
    w->n_kv++;
}

void gguf_put_raw(GgufWriter *w, const char *key, uint32_t type, const void *val, uint64_t val_size) {
    put_key(w, key, type);
    buf_append(&w->kv, val, (size_t)val_size);
}

void gguf_put_str(GgufWriter *w, const char *key, const char *s) {
    put_key(w, key, GGUF_STRING);
    put_str(&w->kv, s, strlen(s));
}

void gguf_put_u32(GgufWriter *w, const char *key, uint32_t v) { put_key(w, key, GGUF_U32); put_u32(&w->kv, v); }
void gguf_put_i32(GgufWriter *w, const char *key, int32_t v) { put_key(w, key, GGUF_I32); put_u32(&w->kv, (uint32_t)v); }

void gguf_put_f32(GgufWriter *w, const char *key, float v) {
    uint32_t u;
    memcpy(&u, &v, 4);
    put_key(w, key, GGUF_F32);
    put_u32(&w->kv, u);
}

void gguf_put_bool(GgufWriter *w, const char *key, int v) {
    uint8_t b = v != 0;
    put_key(w, key, GGUF_BOOL);
    buf_append(&w->kv, &b, 1);
}

static void put_array_head(GgufWriter *w, const char *key, uint32_t elem, uint64_t n) {
    put_key(w, key, GGUF_ARRAY);
    put_u32(&w->kv, elem);
    put_u64(&w->kv, n);
}

void gguf_put_str_array(GgufWriter *w, const char *key, const char *const *s, const int *lens, uint64_t n) {
    put_array_head(w, key, GGUF_STRING, n);
    for (uint64_t i = 0; i < n; i++) put_str(&w->kv, s[i], lens ? (uint64_t)lens[i] : strlen(s[i]));
}

void gguf_put_f32_array(GgufWriter *w, const char *key, const float *v, uint64_t n) {
    put_array_head(w, key, GGUF_F32, n);
    for (uint64_t i = 0; i < n; i++) { uint32_t u; memcpy(&u, &v[i], 4); put_u32(&w->kv, u); }
}

void gguf_put_i32_array(GgufWriter *w, const char *key, const int32_t *v, uint64_t n) {
    put_array_head(w, key, GGUF_I32, n);
    for (uint64_t i = 0; i < n; i++) put_u32(&w->kv, (uint32_t)v[i]);
}

int gguf_add_tensor(GgufWriter *w, const char *name, uint32_t ggml_type, uint32_t n_dims,
                    const uint64_t *dims, Err *err) {
    size_t len = strlen(name);
    uint64_t bytes = gguf_tensor_bytes(ggml_type, n_dims, dims);
    if (len == 0 || len > GGUF_MAX_NAME) return err_set(err, "GGUF tensor name '%s' is empty or too long", name);
    if (bytes == 0) return err_set(err, "GGUF tensor '%s': bad type %u or shape", name, ggml_type);
    put_str(&w->info, name, len);
    put_u32(&w->info, n_dims);
    for (uint32_t d = 0; d < n_dims; d++) put_u64(&w->info, dims[d]);
    put_u32(&w->info, ggml_type);
    put_u64(&w->info, w->data_size);
    w->sizes = xrealloc(w->sizes, (size_t)(w->n_tensors + 1) * sizeof *w->sizes);
    w->sizes[w->n_tensors++] = bytes;
    w->data_size += align_up(bytes, w->alignment);
    return 0;
}

static int wfail(GgufWriter *w, Err *err) {
    return err_set(err, "%s: write failed: %s", w->path, errno ? strerror(errno) : "disk full?");
}

static int write_zeros(GgufWriter *w, uint64_t n, Err *err) {
    static const uint8_t zeros[256];
    while (n > 0) {
        size_t k = n < sizeof zeros ? (size_t)n : sizeof zeros;
        if (fwrite(zeros, 1, k, w->f) != k) return wfail(w, err);
        n -= k;
    }
    return 0;
}

int gguf_write_header(GgufWriter *w, FILE *f, const char *path, Err *err) {
    w->f = f;
    snprintf(w->path, sizeof w->path, "%s", path);
    if (!w->has_alignment_key && w->alignment != GGUF_DEFAULT_ALIGNMENT)
        gguf_put_u32(w, "general.alignment", w->alignment);
    Buf h = {0};
    buf_append(&h, GGUF_MAGIC, 4);
    put_u32(&h, 3);
    put_u64(&h, w->n_tensors);
    put_u64(&h, w->n_kv);
    buf_append(&h, w->kv.data, w->kv.len);
    buf_append(&h, w->info.data, w->info.len);
    uint64_t pad = align_up(h.len, w->alignment) - h.len;
    int ok = fwrite(h.data, 1, h.len, f) == h.len;
    buf_free(&h);
    if (!ok) return wfail(w, err);
    return write_zeros(w, pad, err);
}

int gguf_write_data(GgufWriter *w, const void *bytes, size_t n, Err *err) {
    const uint8_t *p = bytes;
    while (n > 0) {
        if (w->cur >= w->n_tensors) return err_set(err, "%s: more tensor data than the tensors declared", w->path);
        uint64_t want = w->sizes[w->cur] - w->cur_written;
        size_t k = n < want ? n : (size_t)want;
        if (fwrite(p, 1, k, w->f) != k) return wfail(w, err);
        p += k;
        n -= k;
        w->cur_written += k;
        if (w->cur_written == w->sizes[w->cur]) {   /* tensor complete: pad to the next offset */
            if (write_zeros(w, align_up(w->cur_written, w->alignment) - w->cur_written, err)) return -1;
            w->cur++;
            w->cur_written = 0;
        }
    }
    return 0;
}

int gguf_finish(GgufWriter *w, Err *err) {
    if (w->cur != w->n_tensors)
        return err_set(err, "%s: only %llu of %llu tensors were written", w->path, (unsigned long long)w->cur,
                       (unsigned long long)w->n_tensors);
    if (fflush(w->f) != 0 || ferror(w->f)) return wfail(w, err);
    return 0;
}
