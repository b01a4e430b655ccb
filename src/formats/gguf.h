/* gguf.h — read and write GGUF (llama.cpp / ggml), versions 2 and 3, little-endian.
 *
 * A GGUF file is
 *   "GGUF"  u32 version  u64 tensor_count  u64 kv_count
 *   kv_count x { string key, u32 value_type, value }
 *   tensor_count x { string name, u32 n_dims, u64 dims[n_dims] (innermost first),
 *                    u32 ggml_type, u64 offset (relative to the data section) }
 *   zero padding to general.alignment (a u32 key; 32 when absent)
 *   the data section: every tensor starts at a multiple of the alignment.
 * A string is u64 length + bytes (no NUL). A value is one of the 13 value types
 * below; an ARRAY is u32 element type + u64 count + the elements, and may nest.
 * v2 and v3 are the same layout for little-endian files (v3 only allowed
 * big-endian ones, which we refuse); v1 had u32 counts and is refused.
 *
 * The reader works on bytes already in memory (an mmap) and trusts nothing:
 * every count, length, dimension and offset is checked in overflow-safe u64
 * against what is left of the file before it is used, nested arrays have a
 * depth limit, duplicate keys and tensor names are refused. Keys and tensors
 * then point into those bytes.
 *
 * The writer builds the metadata and tensor infos in memory, writes them, then
 * streams the tensor data (chunks of any size, may straddle tensors) and adds
 * the padding between tensors itself, so tensors are laid out back to back in
 * declaration order the way llama.cpp's reader requires. */
#ifndef KVLAB_GGUF_H
#define KVLAB_GGUF_H

#include <stdint.h>
#include <stdio.h>

#include "base/util.h"

#define GGUF_MAGIC "GGUF"
#define GGUF_DEFAULT_ALIGNMENT 32u
#define GGUF_MAX_DIMS 4           /* GGML_MAX_DIMS */
#define GGUF_MAX_NAME 64          /* longest tensor name (GGML_MAX_NAME, with its NUL) */
#define GGUF_MAX_KEY 65535        /* longest key, from the spec */
#define GGUF_MAX_DEPTH 8          /* deepest array nesting we walk */

typedef enum {
    GGUF_U8 = 0, GGUF_I8 = 1, GGUF_U16 = 2, GGUF_I16 = 3, GGUF_U32 = 4, GGUF_I32 = 5,
    GGUF_F32 = 6, GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9, GGUF_U64 = 10,
    GGUF_I64 = 11, GGUF_F64 = 12,
} GgufValueType;

/* ggml tensor types the model can use; gguf_ggml_type_name() names all the others. */
enum { GGML_F32 = 0, GGML_F16 = 1, GGML_Q4_0 = 2, GGML_Q8_0 = 8, GGML_BF16 = 30 };

typedef struct { const char *ptr; uint64_t len; } GgufStr;   /* into the file, no NUL */

typedef struct {
    GgufStr key;
    uint32_t type;            /* GgufValueType */
    const uint8_t *val;       /* the value's bytes (after the type field) */
    uint64_t val_size;        /* their count: a raw copy of the value is (type, val, val_size) */
    uint32_t arr_type;        /* ARRAY only: element type, count, first element */
    uint64_t arr_n;
    const uint8_t *arr_data;
    uint64_t pos;             /* file offset of the key, for messages and tests */
} GgufKV;

typedef struct {
    char name[GGUF_MAX_NAME + 1];
    uint32_t n_dims;
    uint64_t dims[GGUF_MAX_DIMS];   /* innermost first: a [rows, cols] matrix is {cols, rows} */
    uint32_t type;            /* ggml type */
    uint64_t offset;          /* relative to the data section */
    uint64_t n_bytes;
    const void *data;
    uint64_t info_pos;        /* file offset of this tensor info */
} GgufTensor;

typedef struct {
    char path[4096];          /* for messages */
    uint32_t version;
    uint32_t alignment;
    uint64_t n_kv, n_tensors;
    GgufKV *kv;
    GgufTensor *tensors;
    uint64_t data_offset;     /* file offset of the data section */
    const uint8_t *base;
    uint64_t size;
} GgufFile;

/* Parse bytes[0..size); `path` names the file in messages. */
int  gguf_parse(GgufFile *g, const char *path, const void *bytes, size_t size, Err *err);
void gguf_free(GgufFile *g);

const GgufKV *gguf_find(const GgufFile *g, const char *key);
const GgufTensor *gguf_find_tensor(const GgufFile *g, const char *name);

/* Typed lookups: 1 found, 0 absent, -1 wrong type / out of range (err names the file and key).
 * get_int accepts any integer type; get_float F32 or F64. */
int gguf_get_int(const GgufFile *g, const char *key, int64_t min, int64_t max, int64_t *out, Err *err);
int gguf_get_float(const GgufFile *g, const char *key, double *out, Err *err);
int gguf_get_bool(const GgufFile *g, const char *key, int *out, Err *err);
int gguf_get_str(const GgufFile *g, const char *key, GgufStr *out, Err *err);
/* An array whose elements have type `elem` (any type if elem < 0). */
int gguf_get_array(const GgufFile *g, const char *key, int elem, const GgufKV **out, Err *err);
/* The strings of a string array (already bounds-checked by gguf_parse); out has kv->arr_n slots. */
void gguf_array_strings(const GgufKV *kv, GgufStr *out);
/* Element i of an integer or float array, widened. */
int64_t gguf_array_int(const GgufKV *kv, uint64_t i);
double  gguf_array_float(const GgufKV *kv, uint64_t i);

/* "Q4_0", "BF16", ...; NULL for a number that is no ggml type. */
const char *gguf_ggml_type_name(uint32_t type);
const char *gguf_value_type_name(uint32_t type);
/* Bytes of a tensor of this type and shape; 0 if the type is unknown, the
 * innermost dim is not a whole number of blocks, or the size overflows. */
uint64_t gguf_tensor_bytes(uint32_t type, uint32_t n_dims, const uint64_t *dims);

/* ---- writing ---- */

typedef struct GgufWriter GgufWriter;

GgufWriter *gguf_writer_new(uint32_t alignment);   /* alignment: a multiple of 8 */
void gguf_writer_free(GgufWriter *w);

/* Metadata, in the order added. general.alignment is written for you when the
 * alignment is not the default. Strings are NUL-terminated C strings. */
void gguf_put_str(GgufWriter *w, const char *key, const char *s);
void gguf_put_u32(GgufWriter *w, const char *key, uint32_t v);
void gguf_put_i32(GgufWriter *w, const char *key, int32_t v);
void gguf_put_f32(GgufWriter *w, const char *key, float v);
void gguf_put_bool(GgufWriter *w, const char *key, int v);
void gguf_put_str_array(GgufWriter *w, const char *key, const char *const *s, const int *lens, uint64_t n);
void gguf_put_f32_array(GgufWriter *w, const char *key, const float *v, uint64_t n);
void gguf_put_i32_array(GgufWriter *w, const char *key, const int32_t *v, uint64_t n);
/* Any value given as its raw encoded bytes (e.g. copied from a GgufKV, or a nested array). */
void gguf_put_raw(GgufWriter *w, const char *key, uint32_t type, const void *val, uint64_t val_size);

/* Declare the next tensor (dims innermost first). */
int gguf_add_tensor(GgufWriter *w, const char *name, uint32_t ggml_type, uint32_t n_dims,
                    const uint64_t *dims, Err *err);

/* Write the header to f (the caller owns f, e.g. an AtomicFile's), then every
 * tensor's bytes in declaration order with gguf_write_data; gguf_finish checks
 * that all were written and pads the end. */
int gguf_write_header(GgufWriter *w, FILE *f, const char *path, Err *err);
int gguf_write_data(GgufWriter *w, const void *bytes, size_t n, Err *err);
int gguf_finish(GgufWriter *w, Err *err);

#endif
