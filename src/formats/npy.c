/* npy.c — numpy .npy arrays and .npz archives without numpy (see npy.h).
 *
 * ---- The .npy format (numpy/lib/format.py) --------------------------------
 *   offset 0  "\x93NUMPY"            6-byte magic
 *          6  major, minor           1.0, 2.0 or 3.0
 *          8  HLEN                   u16 LE in 1.x; u32 LE in 2.x and 3.x
 *   8+2 / 8+4 HLEN bytes: a Python dict literal (ASCII; UTF-8 in 3.x),
 *             space-padded and '\n'-terminated so the data starts 64-aligned:
 *               {'descr': '<f4', 'fortran_order': False, 'shape': (96, 512), }
 *   then the elements, raw, C order; count = product of shape (1 for "()").
 *   descr = byte order ('<' little, '>' big, '|' not applicable) + kind + size.
 *
 * ---- The .npz format: a zip archive (PKWARE APPNOTE.TXT) of NAME.npy ---------
 * All zip integers are little-endian.
 *   [local header][member data] ... one pair per member
 *   [central directory (CD): one entry per member]
 *   [ZIP64 end-of-CD record ]  only when a count, size or offset does not fit
 *   [ZIP64 end-of-CD locator]  in the 16/32-bit fields of the plain EOCD
 *   [end-of-CD record (EOCD)][archive comment, 0..65535 bytes]
 * A reader starts from the END: the EOCD (found by searching backwards, since
 * the comment has a variable length) gives the CD; the CD gives each member's
 * authoritative sizes, CRC-32 and local-header offset.  The local header is
 * only needed to find where the data starts: its name and extra field have
 * their own lengths, which may differ from the CD's.
 *
 *   local header (30 + name + extra)         CD entry (46 + name + extra + comment)
 *    0 u32 0x04034b50 "PK\3\4"                0 u32 0x02014b50 "PK\1\2"
 *    4 u16 version needed                     4 u16 version made by
 *    6 u16 flags (bit 0 encrypted,            6 u16 version needed
 *          bit 3 sizes in a trailing          8 u16 flags
 *          data descriptor, bit 11 UTF-8)    10 u16 method (0 stored, 8 deflate)
 *    8 u16 method                            12 u16 time, 14 u16 date
 *   10 u16 time, 12 u16 date                 16 u32 CRC-32 of the uncompressed bytes
 *   14 u32 CRC-32                            20 u32 compressed size
 *   18 u32 compressed size                   24 u32 uncompressed size
 *   22 u32 uncompressed size                 28 u16 name length, 30 u16 extra length
 *   26 u16 name length                       32 u16 comment length, 34 u16 disk
 *   28 u16 extra length                      36 u16 internal attrs, 38 u32 external
 *   30 name, extra, then the data            42 u32 local header offset; 46 name...
 *
 *   EOCD (22 + comment)                      ZIP64 EOCD locator (20 bytes)
 *    0 u32 0x06054b50 "PK\5\6"                0 u32 0x07064b50 "PK\6\7"
 *    4 u16 this disk, 6 u16 disk of the CD    4 u32 disk of the ZIP64 EOCD record
 *    8 u16 entries on this disk               8 u64 offset of the ZIP64 EOCD record
 *   10 u16 entries in total                  16 u32 number of disks
 *   12 u32 CD size, 16 u32 CD offset         ZIP64 EOCD record (56 bytes)
 *   20 u16 comment length                     0 u32 0x06064b50 "PK\6\6"
 *                                             4 u64 size of the rest (44)
 *                                            12 u16 made by, 14 u16 needed
 *                                            16 u32 this disk, 20 u32 disk of the CD
 *                                            24 u64 entries on disk, 32 u64 entries
 *                                            40 u64 CD size, 48 u64 CD offset
 *   ZIP64 extra field (id 0x0001, in a header's extra area): the 64-bit
 *   uncompressed size, compressed size and local-header offset, in that order,
 *   but ONLY those whose 32-bit field is 0xFFFFFFFF.
 *
 * numpy.savez_compressed (Python's zipfile with force_zip64=True) writes local
 * headers with sizes 0xFFFFFFFF plus a ZIP64 extra, and CD entries with plain
 * 32-bit sizes; reading sizes from the CD handles both.  Zip's deflate data is
 * RAW deflate (no zlib header or adler32), hence windowBits -15.
 *
 * Array data are stored as-is, so this file assumes a little-endian host. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE          /* fseeko / off_t for members past 2 GiB */
#endif
#define ZLIB_CONST           /* next_in is const: we deflate/inflate read-only buffers */
#include "formats/npy.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <zlib.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "npy.c copies array data as-is and assumes a little-endian host"
#endif

/* ============================== dtypes ==================================== */

static const struct { NpyType type; size_t size; const char *descr; } npy_types[] = {
    { NPY_F32, 4, "<f4" }, { NPY_F64, 8, "<f8" }, { NPY_I32, 4, "<i4" },
    { NPY_I64, 8, "<i8" }, { NPY_U8, 1, "|u1" },  { NPY_U16, 2, "<u2" },
};
#define N_TYPES (sizeof npy_types / sizeof npy_types[0])

static bool type_valid(NpyType t) { return (unsigned)t < N_TYPES; }

size_t npy_type_size(NpyType t) { return type_valid(t) ? npy_types[t].size : 0; }

void npy_free(NpyArray *a) {
    if (!a) return;
    free(a->data);
    memset(a, 0, sizeof *a);
}

float *npy_to_f32(const NpyArray *a) {
    float *out = xmalloc((size_t)a->count * sizeof *out);
    for (int64_t i = 0; i < a->count; i++) {
        switch (a->type) {
        case NPY_F32: out[i] = ((const float *)a->data)[i]; break;
        case NPY_F64: out[i] = (float)((const double *)a->data)[i]; break;
        case NPY_I32: out[i] = (float)((const int32_t *)a->data)[i]; break;
        case NPY_I64: out[i] = (float)((const int64_t *)a->data)[i]; break;
        case NPY_U8:  out[i] = (float)((const uint8_t *)a->data)[i]; break;
        case NPY_U16: out[i] = (float)((const uint16_t *)a->data)[i]; break;
        }
    }
    return out;
}

int64_t *npy_to_i64(const NpyArray *a) {
    int64_t *out = xmalloc((size_t)a->count * sizeof *out);
    for (int64_t i = 0; i < a->count; i++) {
        switch (a->type) {
        /* float -> int: truncate toward zero like numpy's astype; out-of-range
         * values (and NaN) would be UB in C, so clamp them explicitly. */
        case NPY_F32: case NPY_F64: {
            double v = a->type == NPY_F32 ? (double)((const float *)a->data)[i]
                                          : ((const double *)a->data)[i];
            if (v != v) out[i] = 0;
            else if (v >= 9223372036854775807.0) out[i] = INT64_MAX;
            else if (v <= -9223372036854775808.0) out[i] = INT64_MIN;
            else out[i] = (int64_t)v;
            break;
        }
        case NPY_I32: out[i] = ((const int32_t *)a->data)[i]; break;
        case NPY_I64: out[i] = ((const int64_t *)a->data)[i]; break;
        case NPY_U8:  out[i] = ((const uint8_t *)a->data)[i]; break;
        case NPY_U16: out[i] = ((const uint16_t *)a->data)[i]; break;
        }
    }
    return out;
}

/* Copy possibly-hostile bytes into a message: non-printables become '?', so an
 * error stays one line whatever the file contains. */
static const char *printable(char *dst, size_t cap, const char *src, size_t n) {
    size_t k = 0;
    for (; k < n && k + 1 < cap; k++)
        dst[k] = (src[k] >= 0x20 && src[k] < 0x7f) ? src[k] : '?';
    dst[k] = '\0';
    return dst;
}

static const char *format_shape(char *buf, size_t cap, int ndim, const int64_t *shape) {
    size_t k = (size_t)snprintf(buf, cap, "(");
    for (int d = 0; d < ndim && k < cap; d++)
        k += (size_t)snprintf(buf + k, cap - k, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (k < cap) snprintf(buf + k, cap - k, ndim == 1 ? ",)" : ")");
    return buf;
}

/* descr string -> type.  The error names the problem the way a user fixes it. */
static int descr_to_type(const char *s, size_t n, NpyType *t, const char *what, Err *err) {
    char shown[64];
    printable(shown, sizeof shown, s, n);
    if (n >= 2 && s[1] == 'O')
        return err_set(err, "%s: object arrays (dtype '%s') are not supported", what, shown);
    if (n == 3 && (s[0] == '<' || s[0] == '|' || s[0] == '>') && (s[1] == 'u' || s[1] == 'b') && s[2] == '1') {
        *t = NPY_U8;            /* one byte: byte order is irrelevant */
        return 0;
    }
    if (n >= 1 && s[0] == '>')
        return err_set(err, "%s: big-endian dtype '%s' is not supported (save with .astype('<%s'))",
                       what, shown, n > 1 ? shown + 1 : "");
    for (size_t i = 0; i < N_TYPES; i++) {
        if (n == 3 && s[0] == '<' && memcmp(s + 1, npy_types[i].descr + 1, 2) == 0) {
            *t = npy_types[i].type;
            return 0;
        }
    }
    return err_set(err, "%s: unsupported dtype '%s' (supported: <f4 <f8 <i4 <i8 |u1 |b1 <u2)", what, shown);
}

/* ========================= .npy header parsing ============================= */

/* A cursor over the header's bytes: every read checks p < end, so a corrupt
 * header can at worst give an error, never an overread. */
typedef struct { const char *p, *end; } Cursor;

static void skip_space(Cursor *c) {
    while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\n' || *c->p == '\r')) c->p++;
}

static bool eat(Cursor *c, char ch) {
    skip_space(c);
    if (c->p < c->end && *c->p == ch) { c->p++; return true; }
    return false;
}

static bool peek(Cursor *c, char ch) {
    skip_space(c);
    return c->p < c->end && *c->p == ch;
}

/* A 'quoted' or "quoted" string without escapes (numpy never writes any). */
static bool parse_string(Cursor *c, const char **s, size_t *n) {
    skip_space(c);
    if (c->p >= c->end || (*c->p != '\'' && *c->p != '"')) return false;
    char quote = *c->p++;
    const char *start = c->p;
    while (c->p < c->end && *c->p != quote && *c->p != '\\') c->p++;
    if (c->p >= c->end || *c->p != quote) return false;
    *s = start;
    *n = (size_t)(c->p - start);
    c->p++;
    return true;
}

static bool parse_word(Cursor *c, const char *word) {
    skip_space(c);
    size_t n = strlen(word);
    if ((size_t)(c->end - c->p) < n || memcmp(c->p, word, n) != 0) return false;
    c->p += n;
    return true;
}

/* A non-negative integer; "3L" (written by Python 2 numpy) is accepted. */
static bool parse_dim(Cursor *c, int64_t *v) {
    skip_space(c);
    if (c->p >= c->end || *c->p < '0' || *c->p > '9') return false;
    int64_t x = 0;
    while (c->p < c->end && *c->p >= '0' && *c->p <= '9') {
        int digit = *c->p++ - '0';
        if (x > (INT64_MAX - digit) / 10) return false;
        x = x * 10 + digit;
    }
    if (c->p < c->end && *c->p == 'L') c->p++;
    *v = x;
    return true;
}

/* shape: "()", "(5,)", "(3, 4)" — a trailing comma is allowed. */
static int parse_shape(Cursor *c, NpyArray *a, const char *what, Err *err) {
    if (!eat(c, '(')) return err_set(err, "%s: header: 'shape' is not a tuple", what);
    a->ndim = 0;
    while (!eat(c, ')')) {
        if (a->ndim == NPY_MAX_DIMS)
            return err_set(err, "%s: header: more than %d dimensions", what, NPY_MAX_DIMS);
        if (!parse_dim(c, &a->shape[a->ndim]))
            return err_set(err, "%s: header: bad dimension in 'shape'", what);
        a->ndim++;
        if (!eat(c, ',') && !peek(c, ')'))
            return err_set(err, "%s: header: bad 'shape' tuple", what);
    }
    return 0;
}

/* The header dict: exactly the keys descr, fortran_order and shape, any order. */
static int parse_header_dict(const char *h, size_t n, NpyArray *a, const char *what, Err *err) {
    Cursor c = { h, h + n };
    bool seen_descr = false, seen_order = false, seen_shape = false, fortran = false;
    if (!eat(&c, '{')) return err_set(err, "%s: header is not a Python dict", what);
    while (!eat(&c, '}')) {
        const char *key;
        size_t klen;
        if (!parse_string(&c, &key, &klen) || !eat(&c, ':'))
            return err_set(err, "%s: header: malformed dict", what);
        if (klen == 5 && memcmp(key, "descr", 5) == 0) {
            const char *d;
            size_t dlen;
            if (peek(&c, '['))
                return err_set(err, "%s: structured dtypes are not supported", what);
            if (!parse_string(&c, &d, &dlen))
                return err_set(err, "%s: header: 'descr' is not a string", what);
            if (descr_to_type(d, dlen, &a->type, what, err)) return -1;
            seen_descr = true;
        } else if (klen == 13 && memcmp(key, "fortran_order", 13) == 0) {
            if (parse_word(&c, "True")) fortran = true;
            else if (parse_word(&c, "False")) fortran = false;
            else return err_set(err, "%s: header: 'fortran_order' is not True/False", what);
            seen_order = true;
        } else if (klen == 5 && memcmp(key, "shape", 5) == 0) {
            if (parse_shape(&c, a, what, err)) return -1;
            seen_shape = true;
        } else {
            char shown[64];
            return err_set(err, "%s: header: unexpected key '%s'", what, printable(shown, sizeof shown, key, klen));
        }
        if (!eat(&c, ',') && !peek(&c, '}'))
            return err_set(err, "%s: header: malformed dict", what);
    }
    if (!seen_descr || !seen_order || !seen_shape)
        return err_set(err, "%s: header lacks '%s'", what,
                       !seen_descr ? "descr" : !seen_order ? "fortran_order" : "shape");
    if (fortran)
        return err_set(err, "%s: fortran_order=True arrays are not supported (save np.ascontiguousarray(x))", what);
    return 0;
}

/* Parse magic, version and header; on success a->type/ndim/shape/count are
 * set and *data_off is where the elements start (all of them are present). */
static int npy_parse_header(NpyArray *a, const uint8_t *b, size_t n, size_t *data_off,
                            const char *what, Err *err) {
    if (n < 6 || memcmp(b, "\x93NUMPY", 6) != 0)
        return err_set(err, "%s: not a .npy array (bad magic)", what);
    if (n < 8) return err_set(err, "%s: truncated .npy header", what);
    int major = b[6], minor = b[7];
    size_t len_bytes = major == 1 ? 2 : (major == 2 || major == 3) ? 4 : 0;
    if (!len_bytes) return err_set(err, "%s: unsupported .npy format version %d.%d", what, major, minor);
    if (n < 8 + len_bytes) return err_set(err, "%s: truncated .npy header", what);
    uint64_t hlen = len_bytes == 2 ? (uint64_t)(b[8] | b[9] << 8)
                                   : (uint64_t)b[8] | (uint64_t)b[9] << 8 | (uint64_t)b[10] << 16 | (uint64_t)b[11] << 24;
    size_t start = 8 + len_bytes;
    if (hlen > n - start)
        return err_set(err, "%s: header length %llu runs past the end (%zu bytes; truncated?)",
                       what, (unsigned long long)hlen, n);
    if (parse_header_dict((const char *)b + start, (size_t)hlen, a, what, err)) return -1;

    *data_off = start + (size_t)hlen;
    size_t esize = npy_type_size(a->type), avail = n - *data_off;
    /* The elements must all be present, so the count is bounded by
     * avail / esize: checking against that bound also rules out overflow. */
    uint64_t max_count = avail / esize, count = 1;
    bool fits = true, empty = false;
    for (int d = 0; d < a->ndim; d++) empty |= a->shape[d] == 0;
    for (int d = 0; d < a->ndim && !empty && fits; d++) {
        if (count > max_count / (uint64_t)a->shape[d]) fits = false;
        else count *= (uint64_t)a->shape[d];
    }
    if (empty) count = 0;
    if (count > max_count) fits = false;     /* a scalar (ndim 0) needs one element */
    if (!fits) {
        char shape[256];
        return err_set(err, "%s: data truncated: shape %s of %s needs more than the %zu bytes present",
                       what, format_shape(shape, sizeof shape, a->ndim, a->shape), npy_types[a->type].descr, avail);
    }
    a->count = (int64_t)count;
    return 0;
}

int npy_parse(NpyArray *out, const void *bytes, size_t n_bytes, const char *what, Err *err) {
    memset(out, 0, sizeof *out);
    size_t off;
    if (npy_parse_header(out, bytes, n_bytes, &off, what, err)) { memset(out, 0, sizeof *out); return -1; }
    size_t nbytes = (size_t)out->count * npy_type_size(out->type);
    out->data = xmalloc(nbytes);
    if (nbytes) memcpy(out->data, (const uint8_t *)bytes + off, nbytes);
    return 0;
}

/* Like npy_parse, but takes ownership of a malloc'ed image and moves the data
 * to its front: a member inflated from an .npz is not copied a second time. */
static int npy_adopt(NpyArray *out, uint8_t *image, size_t n, const char *what, Err *err) {
    memset(out, 0, sizeof *out);
    size_t off;
    if (npy_parse_header(out, image, n, &off, what, err)) {
        free(image);
        memset(out, 0, sizeof *out);
        return -1;
    }
    size_t nbytes = (size_t)out->count * npy_type_size(out->type);
    memmove(image, image + off, nbytes);
    out->data = xrealloc(image, nbytes);
    return 0;
}

int npy_read(NpyArray *out, const char *path, Err *err) {
    memset(out, 0, sizeof *out);
    FileMap map;
    if (filemap_open(&map, path, err)) return -1;
    int rc = npy_parse(out, map.data, map.size_bytes, path, err);
    filemap_close(&map);
    return rc;
}

/* ============================== zip reading ================================ */

#define SIG_LOCAL   0x04034b50u
#define SIG_CENTRAL 0x02014b50u
#define SIG_EOCD    0x06054b50u
#define SIG_EOCD64  0x06064b50u
#define SIG_LOC64   0x07064b50u
#define U16_MAX_ 0xFFFFu
#define U32_MAX_ 0xFFFFFFFFu

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

typedef struct {
    const char *path;
    const uint8_t *base;
    size_t size;
    uint64_t cd_offset, cd_end, n_entries;
} Zip;

typedef struct {
    const uint8_t *name;
    size_t name_len;
    uint16_t flags, method;
    uint32_t crc;
    uint64_t csize, usize, local_offset;
} ZipEntry;

static int zip_multi_disk(const Zip *z, Err *err) {
    return err_set(err, "%s: multi-disk zip archives are not supported (or the end record is corrupt)", z->path);
}

/* Values from the ZIP64 record override the EOCD's when the locator is there. */
static int zip_read_zip64_eocd(Zip *z, size_t loc, uint64_t *n_entries, uint64_t *cd_size,
                               uint64_t *cd_offset, Err *err) {
    const uint8_t *l = z->base + loc;
    uint64_t rec = rd64(l + 8);
    if (rd32(l + 16) > 1) return zip_multi_disk(z, err);
    if (rec > loc || loc - rec < 56 || rd32(z->base + rec) != SIG_EOCD64)
        return err_set(err, "%s: corrupt zip: bad ZIP64 end-of-central-directory record", z->path);
    const uint8_t *r = z->base + rec;
    if (rd32(r + 16) != 0 || rd32(r + 20) != 0 || rd64(r + 24) != rd64(r + 32)) return zip_multi_disk(z, err);
    *n_entries = rd64(r + 32);
    *cd_size = rd64(r + 40);
    *cd_offset = rd64(r + 48);
    z->cd_end = rec;      /* the CD must end before the ZIP64 record */
    return 0;
}

/* Find the EOCD: the last "PK\5\6" whose comment length fits in the file. */
static int zip_open(Zip *z, const char *path, const void *bytes, size_t n_bytes, Err *err) {
    z->path = path;
    z->base = bytes;
    z->size = n_bytes;
    if (z->size < 22) return err_set(err, "%s: not a zip archive (too short)", path);
    size_t last = z->size - 22, first = last > 65535 ? last - 65535 : 0, eocd = SIZE_MAX;
    for (size_t off = last + 1; off-- > first;) {
        if (rd32(z->base + off) == SIG_EOCD && off + 22 + rd16(z->base + off + 20) <= z->size) {
            eocd = off;
            break;
        }
    }
    if (eocd == SIZE_MAX)
        return err_set(err, "%s: not a zip archive (no end-of-central-directory record; truncated?)", path);
    const uint8_t *e = z->base + eocd;
    uint64_t n_entries = rd16(e + 10), cd_size = rd32(e + 12), cd_offset = rd32(e + 16);
    z->cd_end = eocd;
    if (eocd >= 20 && rd32(e - 20) == SIG_LOC64) {
        if (zip_read_zip64_eocd(z, eocd - 20, &n_entries, &cd_size, &cd_offset, err)) return -1;
    } else if ((rd16(e + 4) != 0 && rd16(e + 4) != U16_MAX_) || (rd16(e + 6) != 0 && rd16(e + 6) != U16_MAX_) ||
               rd16(e + 8) != rd16(e + 10)) {
        return zip_multi_disk(z, err);
    }
    /* The central directory lies between its offset and the end records;
     * 46 bytes is the smallest entry. */
    if (cd_offset > z->cd_end || cd_size > z->cd_end - cd_offset || n_entries > cd_size / 46)
        return err_set(err, "%s: corrupt zip: central directory (offset %llu, %llu bytes, %llu entries) "
                       "does not fit in the file (truncated?)", path, (unsigned long long)cd_offset,
                       (unsigned long long)cd_size, (unsigned long long)n_entries);
    z->cd_offset = cd_offset;
    z->cd_end = cd_offset + cd_size;
    z->n_entries = n_entries;
    return 0;
}

/* Replace the 32-bit fields that say 0xFFFFFFFF by the ZIP64 extra's values. */
static int zip_apply_zip64_extra(const Zip *z, ZipEntry *e, const uint8_t *x, size_t xlen, Err *err) {
    while (xlen >= 4) {
        uint16_t id = rd16(x), len = rd16(x + 2);
        if (len > xlen - 4) return err_set(err, "%s: corrupt zip: extra field overruns its entry", z->path);
        if (id == 0x0001) {
            const uint8_t *q = x + 4, *q_end = x + 4 + len;
            uint64_t *fields[3] = { &e->usize, &e->csize, &e->local_offset };
            for (int i = 0; i < 3; i++) {
                if (*fields[i] != U32_MAX_) continue;
                if (q_end - q < 8) return err_set(err, "%s: corrupt zip: ZIP64 extra field too short", z->path);
                *fields[i] = rd64(q);
                q += 8;
            }
        }
        x += 4 + len;
        xlen -= 4 + (size_t)len;
    }
    return 0;
}

/* Parse the CD entry at *pos and advance *pos past it. */
static int zip_next_entry(const Zip *z, uint64_t *pos, ZipEntry *e, Err *err) {
    if (*pos > z->cd_end || z->cd_end - *pos < 46 || rd32(z->base + *pos) != SIG_CENTRAL)
        return err_set(err, "%s: corrupt zip: bad central directory entry at offset %llu", z->path,
                       (unsigned long long)*pos);
    const uint8_t *c = z->base + *pos;
    size_t nlen = rd16(c + 28), xlen = rd16(c + 30), clen = rd16(c + 32);
    if (z->cd_end - *pos - 46 < nlen + xlen + clen)
        return err_set(err, "%s: corrupt zip: central directory entry overruns the directory", z->path);
    e->flags = rd16(c + 8);
    e->method = rd16(c + 10);
    e->crc = rd32(c + 16);
    e->csize = rd32(c + 20);
    e->usize = rd32(c + 24);
    e->local_offset = rd32(c + 42);
    e->name = c + 46;
    e->name_len = nlen;
    *pos += 46 + nlen + xlen + clen;
    return zip_apply_zip64_extra(z, e, c + 46 + nlen, xlen, err);
}

/* "logits" matches a member named "logits" or "logits.npy". */
static bool name_matches(const ZipEntry *e, const char *member) {
    size_t m = strlen(member);
    if (e->name_len == m) return memcmp(e->name, member, m) == 0;
    return e->name_len == m + 4 && memcmp(e->name, member, m) == 0 && memcmp(e->name + m, ".npy", 4) == 0;
}

/* 1 and *e if found, 0 if not, -1 on a corrupt directory. */
static int zip_find(const Zip *z, const char *member, ZipEntry *e, Err *err) {
    uint64_t pos = z->cd_offset;
    for (uint64_t i = 0; i < z->n_entries; i++) {
        if (zip_next_entry(z, &pos, e, err)) return -1;
        if (name_matches(e, member)) return 1;
    }
    return 0;
}

/* "no member 'x' (members: ids, logits, ...)": tells the user what to ask for. */
static int zip_missing_member(const Zip *z, const char *member, Err *err) {
    char names[600] = "", shown[128];
    size_t k = 0;
    uint64_t pos = z->cd_offset, i = 0;
    ZipEntry e = { 0 };
    /* room for one more shown name (< 128 bytes) and ", ..." is kept */
    for (; i < z->n_entries && k + sizeof shown + 8 < sizeof names; i++) {
        if (zip_next_entry(z, &pos, &e, NULL)) break;
        bool npy = e.name_len >= 4 && memcmp(e.name + e.name_len - 4, ".npy", 4) == 0;
        printable(shown, sizeof shown, (const char *)e.name, npy ? e.name_len - 4 : e.name_len);
        k += (size_t)snprintf(names + k, sizeof names - k, "%s%s", i ? ", " : "", shown);
    }
    if (i < z->n_entries) snprintf(names + k, sizeof names - k, ", ...");
    return err_set(err, "%s: no member '%s' (members: %s)", z->path, member, names);
}

/* Inflate raw deflate data into out[0..cap); *produced = bytes written.
 * Returns NULL on a complete stream, else why it failed.  zlib counts in uInt,
 * so input and output are handed over at most 1 GiB at a time. */
static const char *inflate_raw(const uint8_t *in, uint64_t in_n, uint8_t *out, uint64_t cap, uint64_t *produced) {
    const uInt step = 1u << 30;
    z_stream s;
    memset(&s, 0, sizeof s);
    if (inflateInit2(&s, -15) != Z_OK) return "zlib inflateInit2 failed";
    uint64_t in_left = in_n, out_left = cap;
    s.next_in = in;
    s.next_out = out;
    int rc;
    do {
        if (s.avail_in == 0 && in_left) { s.avail_in = in_left > step ? step : (uInt)in_left; in_left -= s.avail_in; }
        if (s.avail_out == 0 && out_left) { s.avail_out = out_left > step ? step : (uInt)out_left; out_left -= s.avail_out; }
        rc = inflate(&s, Z_NO_FLUSH);
    } while (rc == Z_OK);
    *produced = cap - out_left - s.avail_out;
    const char *why = NULL;
    if (rc == Z_DATA_ERROR) why = s.msg ? s.msg : "invalid deflate data";
    else if (rc == Z_MEM_ERROR) why = "out of memory in zlib";
    else if (rc == Z_NEED_DICT) why = "deflate stream wants a dictionary";
    else if (rc == Z_BUF_ERROR && *produced < cap) why = "deflate stream ends early (truncated?)";
    else if (rc != Z_STREAM_END && rc != Z_BUF_ERROR) why = "zlib inflate failed";
    /* Z_BUF_ERROR with a full buffer: the caller sees *produced == cap.
     * (s.msg points to zlib's static strings: still valid after inflateEnd.) */
    inflateEnd(&s);
    return why;
}

/* Locate a member's data through its local header, decompress it into a
 * malloc'ed buffer and check its size and CRC-32. */
static int zip_extract(const Zip *z, const ZipEntry *e, const char *member, uint8_t **out, size_t *out_n, Err *err) {
    const char *p = z->path;
    if (e->flags & 1) return err_set(err, "%s: member '%s' is encrypted", p, member);
    if (e->method != 0 && e->method != 8)
        return err_set(err, "%s: member '%s': compression method %u not supported (only stored and deflate)",
                       p, member, e->method);
    uint64_t lo = e->local_offset;
    if (lo > z->size || z->size - lo < 30 || rd32(z->base + lo) != SIG_LOCAL)
        return err_set(err, "%s: member '%s': bad local header at offset %llu (corrupt or truncated)", p, member,
                       (unsigned long long)lo);
    const uint8_t *l = z->base + lo;
    size_t nlen = rd16(l + 26), xlen = rd16(l + 28);
    if (z->size - lo - 30 < nlen + xlen)
        return err_set(err, "%s: member '%s': local header runs past the end (truncated?)", p, member);
    if (nlen != e->name_len || memcmp(l + 30, e->name, nlen) != 0)
        return err_set(err, "%s: member '%s': local header name differs from the central directory (corrupt)", p, member);
    uint64_t data = lo + 30 + nlen + xlen;
    if (e->csize > z->size - data)
        return err_set(err, "%s: member '%s': data (%llu bytes at offset %llu) runs past the end (truncated?)", p,
                       member, (unsigned long long)e->csize, (unsigned long long)data);
    /* Sizes are checked before allocating, so a corrupt size cannot demand
     * absurd memory: stored data is the same size, and deflate expands at
     * most 1032:1. */
    if ((e->method == 0 && e->usize != e->csize) ||
        (e->method == 8 && e->usize / 1032 > e->csize + 1) || e->usize >= SIZE_MAX / 2)
        return err_set(err, "%s: member '%s': uncompressed size %llu impossible for %llu compressed bytes (corrupt)",
                       p, member, (unsigned long long)e->usize, (unsigned long long)e->csize);
    size_t n = (size_t)e->usize;
    uint8_t *buf = xmalloc(n + 1);   /* +1: room to notice data longer than recorded */
    if (e->method == 0) {
        memcpy(buf, z->base + data, n);
    } else {
        uint64_t got;
        const char *why = inflate_raw(z->base + data, e->csize, buf, (uint64_t)n + 1, &got);
        if (why) { free(buf); return err_set(err, "%s: member '%s': %s", p, member, why); }
        if (got != n) {
            free(buf);
            return err_set(err, "%s: member '%s': uncompressed size %s the recorded %zu bytes (corrupt)", p, member,
                           got > n ? "exceeds" : "is less than", n);
        }
    }
    uint32_t crc = (uint32_t)crc32_z(0, buf, n);
    if (crc != e->crc) {
        free(buf);
        return err_set(err, "%s: member '%s': CRC-32 mismatch (recorded %08x, data has %08x): corrupt archive", p,
                       member, (unsigned)e->crc, (unsigned)crc);
    }
    *out = buf;
    *out_n = n;
    return 0;
}

/* npz_read on an archive image in memory (path names it in errors).  Not in
 * npy.h: the tests use it on exact-size buffers, where a sanitizer sees any
 * overread (a file's mmap has slack up to the page end). */
int npz_parse(NpyArray *out, const void *bytes, size_t n_bytes, const char *path, const char *member, Err *err) {
    memset(out, 0, sizeof *out);
    Zip z;
    ZipEntry e = { 0 };
    uint8_t *image = NULL;
    size_t n = 0;
    if (zip_open(&z, path, bytes, n_bytes, err)) return -1;
    int found = zip_find(&z, member, &e, err);
    if (found <= 0) return found < 0 ? -1 : zip_missing_member(&z, member, err);
    if (zip_extract(&z, &e, member, &image, &n, err)) return -1;
    char what[4400];
    snprintf(what, sizeof what, "%s:%s", path, member);
    return npy_adopt(out, image, n, what, err);
}

int npz_read(NpyArray *out, const char *path, const char *member, Err *err) {
    memset(out, 0, sizeof *out);
    FileMap map;
    if (filemap_open(&map, path, err)) return -1;
    int rc = npz_parse(out, map.data, map.size_bytes, path, member, err);
    filemap_close(&map);
    return rc;
}

int npz_has(const char *path, const char *member, Err *err) {
    FileMap map;
    if (filemap_open(&map, path, err)) return -1;
    Zip z;
    ZipEntry e = { 0 };
    int rc = zip_open(&z, path, map.data, map.size_bytes, err);
    if (rc == 0) rc = zip_find(&z, member, &e, err);
    filemap_close(&map);
    return rc;
}

/* ============================== writing ==================================== */

/* Check a caller's array description; *nbytes = size of its data. */
static int check_array(NpyType type, int ndim, const int64_t *shape, const void *data, size_t *nbytes,
                       const char *what, Err *err) {
    if (!type_valid(type)) return err_set(err, "%s: invalid NpyType %d", what, (int)type);
    if (ndim < 0 || ndim > NPY_MAX_DIMS) return err_set(err, "%s: ndim %d not in 0..%d", what, ndim, NPY_MAX_DIMS);
    uint64_t count = 1, limit = (uint64_t)INT64_MAX / npy_type_size(type);
    for (int d = 0; d < ndim; d++)
        if (shape[d] < 0) return err_set(err, "%s: negative dimension %lld", what, (long long)shape[d]);
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 0) { count = 0; break; }
        if (count > limit / (uint64_t)shape[d]) return err_set(err, "%s: shape too large", what);
        count *= (uint64_t)shape[d];
    }
    *nbytes = (size_t)count * npy_type_size(type);
    if (*nbytes && !data) return err_set(err, "%s: data is NULL", what);
    return 0;
}

/* The .npy preamble + header dict, space-padded and '\n'-terminated so the
 * data starts at a multiple of 64 (numpy's alignment).  Eight dimensions fit
 * easily in format 1.0's 16-bit header length.  Returns the length. */
#define NPY_HEADER_MAX 512
static size_t build_npy_header(uint8_t *buf, NpyType type, int ndim, const int64_t *shape) {
    char dict[NPY_HEADER_MAX], shp[256];
    int k = snprintf(dict, sizeof dict, "{'descr': '%s', 'fortran_order': False, 'shape': %s, }",
                     npy_types[type].descr, format_shape(shp, sizeof shp, ndim, shape));
    size_t total = (10 + (size_t)k + 1 + 63) / 64 * 64, hlen = total - 10;
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (uint8_t)(hlen & 0xff);
    buf[9] = (uint8_t)(hlen >> 8);
    memcpy(buf + 10, dict, (size_t)k);
    memset(buf + 10 + k, ' ', hlen - (size_t)k - 1);
    buf[total - 1] = '\n';
    return total;
}

int npy_write(const char *path, NpyType type, int ndim, const int64_t *shape, const void *data, Err *err) {
    size_t nbytes;
    if (check_array(type, ndim, shape, data, &nbytes, path, err)) return -1;
    uint8_t header[NPY_HEADER_MAX];
    size_t hlen = build_npy_header(header, type, ndim, shape);
    AtomicFile af;
    if (atomic_open(&af, path, err)) return -1;
    if (fwrite(header, 1, hlen, af.f) != hlen || (nbytes && fwrite(data, 1, nbytes, af.f) != nbytes)) {
        int e = errno;
        atomic_abort(&af);
        return err_set(err, "%s: write failed: %s", path, strerror(e));
    }
    return atomic_commit(&af, err);
}

/* ---- NpzWriter: members are deflated straight into the temp file ---------- */

typedef struct {
    char *name;              /* "x.npy" */
    uint32_t crc;
    uint64_t csize, usize, offset;
    bool zip64_local;        /* its local header carries a ZIP64 extra */
} NpzMember;

struct NpzWriter {
    AtomicFile af;
    uint64_t pos;            /* bytes written = offset of the next record */
    NpzMember *members;
    size_t n_members, cap_members;
    bool failed;             /* a write failed: the file is unusable, close will abort */
    bool force_zip64;        /* test hook: ZIP64 records even for small archives */
};

/* Test hook (not in npy.h): write ZIP64 extras and end records even when
 * nothing needs them, so the 4 GiB code paths can be tested on tiny files. */
void npz_writer_force_zip64(NpzWriter *w) { w->force_zip64 = true; }

static void wr16(uint8_t *p, uint64_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static void wr32(uint8_t *p, uint64_t v) { wr16(p, v); wr16(p + 2, v >> 16); }
static void wr64(uint8_t *p, uint64_t v) { wr32(p, v); wr32(p + 4, v >> 32); }

/* DOS date 1980-01-01, time 00:00 — what numpy writes; fixed so that the same
 * arrays always give byte-identical archives. */
#define DOS_TIME 0
#define DOS_DATE 0x0021

static int w_write(NpzWriter *w, const void *p, size_t n, Err *err) {
    if (n && fwrite(p, 1, n, w->af.f) != n) {
        w->failed = true;
        return err_set(err, "%s: write failed: %s", w->af.path, strerror(errno));
    }
    w->pos += n;
    return 0;
}

NpzWriter *npz_open(const char *path, Err *err) {
    NpzWriter *w = xcalloc(1, sizeof *w);
    if (atomic_open(&w->af, path, err)) { free(w); return NULL; }
    return w;
}

static void npz_free(NpzWriter *w) {
    for (size_t i = 0; i < w->n_members; i++) free(w->members[i].name);
    free(w->members);
    free(w);
}

void npz_abort(NpzWriter *w) {
    if (!w) return;
    atomic_abort(&w->af);
    npz_free(w);
}

/* Feed n bytes to deflate, writing whatever it produces; `last` finishes the stream. */
static int deflate_feed(NpzWriter *w, z_stream *s, const uint8_t *in, size_t n, bool last, uint8_t *obuf,
                        size_t ocap, Err *err) {
    static const uint8_t nothing[1];
    if (!in) in = nothing;           /* zlib wants a pointer even for 0 bytes */
    do {
        uInt k = n > (1u << 30) ? (1u << 30) : (uInt)n;
        s->next_in = in;
        s->avail_in = k;
        in += k;
        n -= k;
        int flush = last && n == 0 ? Z_FINISH : Z_NO_FLUSH;
        do {   /* drain: deflate has finished this input when output space is left over */
            s->next_out = obuf;
            s->avail_out = (uInt)ocap;
            if (deflate(s, flush) == Z_STREAM_ERROR) return err_set(err, "%s: zlib deflate failed", w->af.path);
            if (w_write(w, obuf, ocap - s->avail_out, err)) return -1;
        } while (s->avail_out == 0);
    } while (n > 0);
    return 0;
}

/* Local header; the compressed size is patched in after the data is written. */
static int write_local_header(NpzWriter *w, const NpzMember *m, Err *err) {
    size_t nlen = strlen(m->name), xlen = m->zip64_local ? 20 : 0;
    uint8_t h[30 + 20];
    wr32(h, SIG_LOCAL);
    wr16(h + 4, m->zip64_local ? 45 : 20);       /* 4.5 = ZIP64, 2.0 = deflate */
    wr16(h + 6, 0);
    wr16(h + 8, 8);
    wr16(h + 10, DOS_TIME);
    wr16(h + 12, DOS_DATE);
    wr32(h + 14, m->crc);
    wr32(h + 18, m->zip64_local ? U32_MAX_ : 0);  /* csize: patched later */
    wr32(h + 22, m->zip64_local ? U32_MAX_ : m->usize);
    wr16(h + 26, nlen);
    wr16(h + 28, xlen);
    if (m->zip64_local) {
        wr16(h + 30, 0x0001);
        wr16(h + 32, 16);
        wr64(h + 34, m->usize);
        wr64(h + 42, 0);                          /* csize: patched later */
    }
    if (w_write(w, h, 30, err) || w_write(w, m->name, nlen, err)) return -1;
    return w_write(w, h + 30, xlen, err);
}

/* Write the now-known compressed size into the member's local header. */
static int patch_local_csize(NpzWriter *w, const NpzMember *m, Err *err) {
    uint8_t v[8];
    off_t at;
    size_t n;
    if (m->zip64_local) { at = (off_t)(m->offset + 30 + strlen(m->name) + 12); wr64(v, m->csize); n = 8; }
    else                { at = (off_t)(m->offset + 18);                        wr32(v, m->csize); n = 4; }
    if (fseeko(w->af.f, at, SEEK_SET) != 0 || fwrite(v, 1, n, w->af.f) != n || fseeko(w->af.f, 0, SEEK_END) != 0) {
        w->failed = true;
        return err_set(err, "%s: write failed: %s", w->af.path, strerror(errno));
    }
    return 0;
}

static char *member_name(const char *name) {
    size_t n = strlen(name);
    bool has_ext = n >= 4 && strcmp(name + n - 4, ".npy") == 0;
    char *s = xmalloc(n + 5);
    snprintf(s, n + 5, "%s%s", name, has_ext ? "" : ".npy");   /* numpy.load strips ".npy" */
    return s;
}

int npz_add(NpzWriter *w, const char *name, NpyType type, int ndim, const int64_t *shape, const void *data,
            Err *err) {
    const char *path = w->af.path;
    if (w->failed) return err_set(err, "%s: an earlier write failed", path);
    char what[4400];
    snprintf(what, sizeof what, "%s:%s", path, name);
    size_t nbytes;
    if (!name[0] || strlen(name) > 60000) return err_set(err, "%s: bad member name", what);
    if (check_array(type, ndim, shape, data, &nbytes, what, err)) return -1;
    NpzMember m = { .name = member_name(name), .offset = w->pos };
    for (size_t i = 0; i < w->n_members; i++)
        if (strcmp(w->members[i].name, m.name) == 0) { free(m.name); return err_set(err, "%s: duplicate member", what); }

    uint8_t header[NPY_HEADER_MAX];
    size_t hlen = build_npy_header(header, type, ndim, shape);
    m.usize = hlen + (uint64_t)nbytes;
    m.crc = (uint32_t)crc32_z(crc32_z(0, header, hlen), data ? data : header, nbytes);

    z_stream s;
    memset(&s, 0, sizeof s);
    if (deflateInit2(&s, Z_DEFAULT_COMPRESSION, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY) != Z_OK) {
        free(m.name);
        return err_set(err, "%s: zlib deflateInit2 failed", what);
    }
    /* The local header's layout is fixed before the data is written, so decide
     * on ZIP64 from the worst case: deflate's bound on the compressed size. */
    m.zip64_local = w->force_zip64 || m.usize >= U32_MAX_ || deflateBound(&s, m.usize) >= U32_MAX_;
    size_t ocap = 1 << 18;
    uint8_t *obuf = xmalloc(ocap);
    int rc = write_local_header(w, &m, err);
    uint64_t data_start = w->pos;
    if (rc == 0) rc = deflate_feed(w, &s, header, hlen, false, obuf, ocap, err);
    if (rc == 0) rc = deflate_feed(w, &s, data, nbytes, true, obuf, ocap, err);
    deflateEnd(&s);
    free(obuf);
    m.csize = w->pos - data_start;
    if (rc == 0) rc = patch_local_csize(w, &m, err);
    if (rc) { free(m.name); return -1; }
    if (w->n_members == w->cap_members) {
        w->cap_members = w->cap_members ? 2 * w->cap_members : 8;
        w->members = xrealloc(w->members, w->cap_members * sizeof *w->members);
    }
    w->members[w->n_members++] = m;
    return 0;
}

static int write_central_entry(NpzWriter *w, const NpzMember *m, Err *err) {
    bool big_u = w->force_zip64 || m->usize >= U32_MAX_, big_c = w->force_zip64 || m->csize >= U32_MAX_,
         big_o = w->force_zip64 || m->offset >= U32_MAX_;
    bool zip64 = big_u || big_c || big_o;
    uint8_t h[46], x[4 + 24];
    size_t nlen = strlen(m->name), xlen = 0;
    if (zip64) {   /* only the overflowing fields, in APPNOTE's order */
        xlen = 4;
        if (big_u) { wr64(x + xlen, m->usize); xlen += 8; }
        if (big_c) { wr64(x + xlen, m->csize); xlen += 8; }
        if (big_o) { wr64(x + xlen, m->offset); xlen += 8; }
        wr16(x, 0x0001);
        wr16(x + 2, xlen - 4);
    }
    bool utf8 = false;
    for (const char *c = m->name; *c; c++) if ((unsigned char)*c >= 0x80) utf8 = true;
    unsigned version = zip64 || m->zip64_local ? 45 : 20;
    wr32(h, SIG_CENTRAL);
    wr16(h + 4, (3u << 8) | version);              /* made by: Unix */
    wr16(h + 6, version);
    wr16(h + 8, utf8 ? 0x800 : 0);                /* bit 11: the name is UTF-8 */
    wr16(h + 10, 8);
    wr16(h + 12, DOS_TIME);
    wr16(h + 14, DOS_DATE);
    wr32(h + 16, m->crc);
    wr32(h + 20, big_c ? U32_MAX_ : m->csize);
    wr32(h + 24, big_u ? U32_MAX_ : m->usize);
    wr16(h + 28, nlen);
    wr16(h + 30, xlen);
    wr16(h + 32, 0);
    wr16(h + 34, 0);
    wr16(h + 36, 0);
    wr32(h + 38, (uint64_t)0100644 << 16);        /* Unix mode rw-r--r-- */
    wr32(h + 42, big_o ? U32_MAX_ : m->offset);
    if (w_write(w, h, 46, err) || w_write(w, m->name, nlen, err)) return -1;
    return w_write(w, x, xlen, err);
}

static int write_end_records(NpzWriter *w, uint64_t cd_offset, uint64_t cd_size, Err *err) {
    uint64_t n = w->n_members;
    bool zip64 = w->force_zip64 || n >= U16_MAX_ || cd_size >= U32_MAX_ || cd_offset >= U32_MAX_;
    if (zip64) {
        uint8_t r[56 + 20];
        uint64_t rec = w->pos;
        wr32(r, SIG_EOCD64);
        wr64(r + 4, 44);
        wr16(r + 12, (3 << 8) | 45);
        wr16(r + 14, 45);
        wr32(r + 16, 0);
        wr32(r + 20, 0);
        wr64(r + 24, n);
        wr64(r + 32, n);
        wr64(r + 40, cd_size);
        wr64(r + 48, cd_offset);
        wr32(r + 56, SIG_LOC64);
        wr32(r + 60, 0);
        wr64(r + 64, rec);
        wr32(r + 72, 1);
        if (w_write(w, r, sizeof r, err)) return -1;
    }
    /* Fields that do not fit (or all, when forced) say "see the ZIP64 record". */
    uint8_t e[22];
    wr32(e, SIG_EOCD);
    wr16(e + 4, 0);
    wr16(e + 6, 0);
    wr16(e + 8, w->force_zip64 || n > U16_MAX_ ? U16_MAX_ : n);
    wr16(e + 10, w->force_zip64 || n > U16_MAX_ ? U16_MAX_ : n);
    wr32(e + 12, w->force_zip64 || cd_size > U32_MAX_ ? U32_MAX_ : cd_size);
    wr32(e + 16, w->force_zip64 || cd_offset > U32_MAX_ ? U32_MAX_ : cd_offset);
    wr16(e + 20, 0);
    return w_write(w, e, sizeof e, err);
}

int npz_close(NpzWriter *w, Err *err) {
    if (w->failed) {
        int rc = err_set(err, "%s: not written: an earlier write failed", w->af.path);
        npz_abort(w);
        return rc;
    }
    uint64_t cd_offset = w->pos;
    int rc = 0;
    for (size_t i = 0; i < w->n_members && rc == 0; i++) rc = write_central_entry(w, &w->members[i], err);
    if (rc == 0) rc = write_end_records(w, cd_offset, w->pos - cd_offset, err);
    if (rc) { npz_abort(w); return -1; }
    rc = atomic_commit(&w->af, err);
    npz_free(w);
    return rc;
}
