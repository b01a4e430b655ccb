/* safetensors.h — read and write the safetensors container (Hugging Face).
 *
 * A .safetensors file is
 *   u64 little-endian N
 *   N bytes of UTF-8 JSON: {"NAME": {"dtype": "BF16", "shape": [rows, cols],
 *                                    "data_offsets": [begin, end]}, ...,
 *                           "__metadata__": {"key": "string", ...}}
 *   the data: tensor NAME is bytes [begin, end) counted from the first byte
 *   after the header, row-major, little-endian.
 * Writers pad the header with spaces to a multiple of 8 bytes so that every
 * tensor starts 8-byte aligned when its offset is (ours always is).
 *
 * The reader works on bytes already in memory (an mmap): it checks everything
 * an untrusted file can get wrong (header length, JSON, dtype, shape, offsets
 * against the data size, all in overflow-safe u64) and hands back pointers into
 * those bytes. The writer streams: the header is computed from the tensor list
 * up front, then the data is appended in the same order, in chunks of any size,
 * so a 13 GB checkpoint never has to be in memory. */
#ifndef KVLAB_SAFETENSORS_H
#define KVLAB_SAFETENSORS_H

#include <stdint.h>
#include <stdio.h>

#include "base/dtype.h"
#include "base/util.h"

#define ST_MAX_DIMS 8
/* A real 70B shard header is ~100 KB; anything near this is not a checkpoint. */
#define ST_MAX_HEADER_BYTES (100u * 1024u * 1024u)

typedef struct {
    char *name;
    char dtype_str[16];     /* as written in the file, e.g. "BF16", "I8" */
    int dtype_ok;           /* 1 if dtype_str is F32/BF16/F16 (then `dtype` is set) */
    DType dtype;
    int n_dims;
    uint64_t shape[ST_MAX_DIMS];
    uint64_t begin, end;    /* relative to the data section */
    const void *data;       /* begin, inside the caller's bytes */
} StTensor;

typedef struct {
    char path[4096];        /* for messages */
    uint64_t header_len;
    const uint8_t *data;    /* first byte after the header */
    uint64_t data_size;
    StTensor *tensors;
    int n_tensors;
} StFile;

/* Parse the header of the file whose bytes are bytes[0..size). `path` is only
 * used in messages. Every tensor's dtype must be a known safetensors dtype and
 * its data_offsets must match its shape and lie inside the data; F32/BF16/F16
 * are the only ones the model can use (dtype_ok), which the caller checks. */
int  st_parse(StFile *sf, const char *path, const void *bytes, size_t size, Err *err);
void st_free(StFile *sf);
const StTensor *st_find(const StFile *sf, const char *name);

/* Bytes per element of a safetensors dtype name, 0 if unknown. */
size_t st_dtype_size(const char *dtype_str);
const char *st_dtype_str(DType dt);     /* "F32", "BF16", "F16" */

/* ---- writing ---- */

typedef struct {
    const char *name;
    DType dtype;
    int n_dims;
    uint64_t shape[ST_MAX_DIMS];
} StSpec;

typedef struct {
    FILE *f;
    char path[4096];
    uint64_t data_total;    /* sum of the tensors' bytes, from the specs */
    uint64_t data_written;  /* appended so far */
} StWriter;

/* Bytes of one tensor's data (0 on overflow, which st_writer_open refuses). */
uint64_t st_spec_bytes(const StSpec *s);

/* Create `path` and write the header for specs[0..n). Then append every
 * tensor's bytes, in the order of specs, with st_writer_write (chunks may be
 * of any size and may straddle tensors). */
int st_writer_open(StWriter *w, const char *path, const StSpec *specs, int n, Err *err);
int st_writer_write(StWriter *w, const void *bytes, size_t n_bytes, Err *err);
/* Fails if any tensor is incomplete or the disk is full. */
int st_writer_close(StWriter *w, Err *err);
void st_writer_abort(StWriter *w);   /* close without checks (caller deletes the file) */

#endif
