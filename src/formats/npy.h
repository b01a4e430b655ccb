/* npy.h — numpy .npy arrays and .npz archives (zip of .npy members, stored or
 * deflate-compressed with zlib), read and written without numpy.
 *
 * Supported dtypes: '<f4' (f32), '<f8' (f64), '<i4' (i32), '<i8' (i64),
 * '<u1', '|u1', '|b1' (u8), '<u2' (u16); C order only. */
#ifndef KVLAB_NPY_H
#define KVLAB_NPY_H

#include <stddef.h>
#include <stdint.h>

#include "base/util.h"

typedef enum { NPY_F32, NPY_F64, NPY_I32, NPY_I64, NPY_U8, NPY_U16 } NpyType;

#define NPY_MAX_DIMS 8

typedef struct {
    NpyType type;
    int ndim;
    int64_t shape[NPY_MAX_DIMS];
    int64_t count;      /* product of shape (1 for a scalar) */
    void *data;         /* malloc'ed, count * element size, little-endian */
} NpyArray;

size_t npy_type_size(NpyType t);
void npy_free(NpyArray *a);

/* Convert any numeric array to a malloc'ed float / int64 buffer of a->count elements. */
float   *npy_to_f32(const NpyArray *a);
int64_t *npy_to_i64(const NpyArray *a);

/* Parse a .npy image in memory / read a .npy file. */
int npy_parse(NpyArray *out, const void *bytes, size_t n_bytes, const char *what, Err *err);
int npy_read(NpyArray *out, const char *path, Err *err);

/* Read one member ("logits" or "logits.npy") of an .npz. */
int npz_read(NpyArray *out, const char *path, const char *member, Err *err);
/* Same, from an archive already in memory (`path` only names it in messages). */
int npz_parse(NpyArray *out, const void *bytes, size_t n_bytes, const char *path, const char *member, Err *err);
/* 1 if the archive has the member, 0 if not, -1 on a bad archive. */
int npz_has(const char *path, const char *member, Err *err);

/* Write a .npy file atomically. */
int npy_write(const char *path, NpyType type, int ndim, const int64_t *shape, const void *data, Err *err);

/* Write an .npz incrementally (deflate-compressed members, ZIP64 where needed),
 * atomically: nothing appears at `path` until npz_close succeeds. */
typedef struct NpzWriter NpzWriter;
NpzWriter *npz_open(const char *path, Err *err);
int npz_add(NpzWriter *w, const char *name, NpyType type, int ndim, const int64_t *shape,
            const void *data, Err *err);
int npz_close(NpzWriter *w, Err *err);    /* commit */
void npz_abort(NpzWriter *w);             /* discard */
/* Write ZIP64 records even for small members (tests of the >4 GiB path). */
void npz_writer_force_zip64(NpzWriter *w);

#endif
