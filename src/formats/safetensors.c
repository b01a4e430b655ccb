/* safetensors.c — the safetensors container (format described in safetensors.h):
 * a u64 LE header length, a JSON header naming each tensor's dtype, shape and
 * [begin, end) byte range, then the raw data.
 *
 * Every number from the file is untrusted: lengths and offsets are u64 and all
 * arithmetic on them is checked for overflow before it is compared or added. */
#include "formats/safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- dtypes ---------------------------------------------------------------- */

typedef struct { const char *name; size_t size; } StDtypeInfo;

/* Every dtype the safetensors spec defines with a whole-byte element; the model
 * can only use F32/BF16/F16, but knowing the others lets us check offsets and
 * name the dtype precisely when refusing it. */
static const StDtypeInfo st_dtypes[] = {
    { "BOOL", 1 }, { "U8", 1 }, { "I8", 1 }, { "F8_E4M3", 1 }, { "F8_E5M2", 1 },
    { "F8_E8M0", 1 }, { "I16", 2 }, { "U16", 2 }, { "F16", 2 }, { "BF16", 2 },
    { "I32", 4 }, { "U32", 4 }, { "F32", 4 }, { "F64", 8 }, { "I64", 8 }, { "U64", 8 },
};

size_t st_dtype_size(const char *s) {
    for (size_t i = 0; i < sizeof st_dtypes / sizeof st_dtypes[0]; i++)
        if (!strcmp(s, st_dtypes[i].name)) return st_dtypes[i].size;
    return 0;
}

const char *st_dtype_str(DType dt) {
    switch (dt) {
    case DTYPE_F32: return "F32";
    case DTYPE_BF16: return "BF16";
    case DTYPE_F16: return "F16";
    }
    return "?";
}

static int st_dtype_model(const char *s, DType *out) {
    if (!strcmp(s, "F32")) *out = DTYPE_F32;
    else if (!strcmp(s, "BF16")) *out = DTYPE_BF16;
    else if (!strcmp(s, "F16")) *out = DTYPE_F16;
    else return 0;
    return 1;
}

/* ---- overflow-safe u64 ------------------------------------------------------ */

static int mul_u64(uint64_t a, uint64_t b, uint64_t *out) {
    if (a != 0 && b > UINT64_MAX / a) return -1;
    *out = a * b;
    return 0;
}

/* A JSON number that is a whole value in [0, 2^53] (doubles are exact there;
 * cJSON stores numbers as doubles, so larger values cannot be trusted). */
static int json_u64(const cJSON *v, uint64_t *out) {
    if (!cJSON_IsNumber(v)) return -1;
    double d = v->valuedouble;
    if (!(d >= 0.0 && d <= 9007199254740992.0) || d != floor(d)) return -1;
    *out = (uint64_t)d;
    return 0;
}

static uint64_t read_le64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* ---- reading ---------------------------------------------------------------- */

void st_free(StFile *sf) {
    for (int i = 0; i < sf->n_tensors; i++) free(sf->tensors[i].name);
    free(sf->tensors);
    sf->tensors = NULL;
    sf->n_tensors = 0;
}

const StTensor *st_find(const StFile *sf, const char *name) {
    for (int i = 0; i < sf->n_tensors; i++)
        if (!strcmp(sf->tensors[i].name, name)) return &sf->tensors[i];
    return NULL;
}

static int parse_shape(const StFile *sf, const char *name, const cJSON *shape, StTensor *t, Err *err) {
    if (!cJSON_IsArray(shape))
        return err_set(err, "%s: tensor '%s': \"shape\" is missing or not an array", sf->path, name);
    int n = cJSON_GetArraySize(shape);
    if (n > ST_MAX_DIMS)
        return err_set(err, "%s: tensor '%s' has %d dimensions (at most %d supported)", sf->path, name, n, ST_MAX_DIMS);
    t->n_dims = 0;
    const cJSON *d;
    cJSON_ArrayForEach(d, shape) {
        if (json_u64(d, &t->shape[t->n_dims]) != 0)
            return err_set(err, "%s: tensor '%s': shape element %d is not a non-negative integer", sf->path, name, t->n_dims);
        t->n_dims++;
    }
    return 0;
}

static int parse_offsets(const StFile *sf, const char *name, const cJSON *offs, StTensor *t, Err *err) {
    if (!cJSON_IsArray(offs) || cJSON_GetArraySize(offs) != 2 ||
        json_u64(cJSON_GetArrayItem(offs, 0), &t->begin) != 0 ||
        json_u64(cJSON_GetArrayItem(offs, 1), &t->end) != 0)
        return err_set(err, "%s: tensor '%s': \"data_offsets\" must be [begin, end] with non-negative integers", sf->path, name);
    if (t->begin > t->end)
        return err_set(err, "%s: tensor '%s': data_offsets [%llu, %llu] end before they begin", sf->path, name,
                       (unsigned long long)t->begin, (unsigned long long)t->end);
    if (t->end > sf->data_size)
        return err_set(err, "%s: tensor '%s': data_offsets [%llu, %llu] past the end of the data (%llu bytes): truncated file?",
                       sf->path, name, (unsigned long long)t->begin, (unsigned long long)t->end,
                       (unsigned long long)sf->data_size);
    return 0;
}

/* The byte count the shape and dtype imply must be exactly the offsets' span. */
static int check_size(const StFile *sf, const StTensor *t, size_t esize, Err *err) {
    uint64_t n = 1;
    for (int i = 0; i < t->n_dims; i++)
        if (mul_u64(n, t->shape[i], &n) != 0)
            return err_set(err, "%s: tensor '%s': shape overflows", sf->path, t->name);
    uint64_t bytes;
    if (mul_u64(n, esize, &bytes) != 0)
        return err_set(err, "%s: tensor '%s': shape overflows", sf->path, t->name);
    if (t->end - t->begin != bytes)
        return err_set(err, "%s: tensor '%s': data_offsets [%llu, %llu] span %llu bytes but its shape and dtype %s need %llu",
                       sf->path, t->name, (unsigned long long)t->begin, (unsigned long long)t->end,
                       (unsigned long long)(t->end - t->begin), t->dtype_str, (unsigned long long)bytes);
    return 0;
}

static int parse_tensor(StFile *sf, const cJSON *item, StTensor *t, Err *err) {
    const char *name = item->string;
    t->name = xstrdup(name);
    if (!cJSON_IsObject(item)) return err_set(err, "%s: tensor '%s': entry is not a JSON object", sf->path, name);
    const cJSON *dt = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    if (!cJSON_IsString(dt)) return err_set(err, "%s: tensor '%s': \"dtype\" is missing or not a string", sf->path, name);
    size_t esize = st_dtype_size(dt->valuestring);
    if (esize == 0)
        return err_set(err, "%s: tensor '%s' has unknown dtype '%.32s'", sf->path, name, dt->valuestring);
    snprintf(t->dtype_str, sizeof t->dtype_str, "%s", dt->valuestring);
    t->dtype_ok = st_dtype_model(t->dtype_str, &t->dtype);
    if (parse_shape(sf, name, cJSON_GetObjectItemCaseSensitive(item, "shape"), t, err) != 0) return -1;
    if (parse_offsets(sf, name, cJSON_GetObjectItemCaseSensitive(item, "data_offsets"), t, err) != 0) return -1;
    if (check_size(sf, t, esize, err) != 0) return -1;
    t->data = sf->data + t->begin;
    return 0;
}

/* Two tensors sharing bytes would alias each other's weights (a crafted or
 * corrupt file): refuse, naming both. Empty tensors take no bytes. */
typedef struct { uint64_t begin, end; int index; } Span;

static int span_cmp(const void *a, const void *b) {
    const Span *x = a, *y = b;
    return x->begin < y->begin ? -1 : x->begin > y->begin ? 1 : x->index - y->index;
}

static int check_overlaps(const StFile *sf, Err *err) {
    Span *spans = xmalloc((size_t)(sf->n_tensors ? sf->n_tensors : 1) * sizeof *spans);
    int n = 0;
    for (int i = 0; i < sf->n_tensors; i++)
        if (sf->tensors[i].end > sf->tensors[i].begin) spans[n++] = (Span){ sf->tensors[i].begin, sf->tensors[i].end, i };
    qsort(spans, (size_t)n, sizeof *spans, span_cmp);
    int rc = 0, last = -1;   /* last: the span reaching furthest so far */
    for (int i = 0; i < n && rc == 0; i++) {
        if (last >= 0 && spans[i].begin < spans[last].end) {
            const StTensor *a = &sf->tensors[spans[last].index], *b = &sf->tensors[spans[i].index];
            rc = err_set(err, "%s: tensors '%.200s' [%llu, %llu] and '%.200s' [%llu, %llu] overlap in the data", sf->path,
                         a->name, (unsigned long long)a->begin, (unsigned long long)a->end,
                         b->name, (unsigned long long)b->begin, (unsigned long long)b->end);
        }
        if (last < 0 || spans[i].end > spans[last].end) last = i;
    }
    free(spans);
    return rc;
}

/* Parse the JSON header; the bytes after the JSON value may only be the
 * padding spaces writers add. */
static cJSON *parse_header_json(const StFile *sf, const char *hdr, size_t n, Err *err) {
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(hdr, n, &end, 0);
    if (!root) {
        size_t at = end && end >= hdr ? (size_t)(end - hdr) : 0;
        err_set(err, "%s: invalid JSON in the safetensors header near byte %zu", sf->path, at);
        return NULL;
    }
    for (const char *p = end; p && p < hdr + n; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            err_set(err, "%s: invalid JSON in the safetensors header near byte %zu (trailing data)", sf->path, (size_t)(p - hdr));
            cJSON_Delete(root);
            return NULL;
        }
    if (!cJSON_IsObject(root)) {
        err_set(err, "%s: the safetensors header is not a JSON object", sf->path);
        cJSON_Delete(root);
        return NULL;
    }
    return root;
}

int st_parse(StFile *sf, const char *path, const void *bytes, size_t size, Err *err) {
    memset(sf, 0, sizeof *sf);
    snprintf(sf->path, sizeof sf->path, "%s", path);
    if (size < 8)
        return err_set(err, "%s: too short for a safetensors file (%zu bytes)", path, size);
    uint64_t n = read_le64(bytes);
    if (n > (uint64_t)size - 8)
        return err_set(err, "%s: header length %llu is past the end of the file (%zu bytes): truncated or not safetensors",
                       path, (unsigned long long)n, size);
    if (n > ST_MAX_HEADER_BYTES)
        return err_set(err, "%s: header length %llu is implausibly large (more than %u bytes)",
                       path, (unsigned long long)n, ST_MAX_HEADER_BYTES);
    if (n < 2) return err_set(err, "%s: header length %llu is too short for a JSON object", path, (unsigned long long)n);
    sf->header_len = n;
    sf->data = (const uint8_t *)bytes + 8 + n;
    sf->data_size = (uint64_t)size - 8 - n;

    cJSON *root = parse_header_json(sf, (const char *)bytes + 8, (size_t)n, err);
    if (!root) return -1;
    int count = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, root) count++;
    sf->tensors = xcalloc((size_t)count + 1, sizeof *sf->tensors);
    cJSON_ArrayForEach(item, root) {
        if (!strcmp(item->string, "__metadata__")) continue;   /* free-form strings: not ours */
        if (st_find(sf, item->string)) {   /* cJSON keeps both: which one is meant? */
            err_set(err, "%s: tensor '%.200s' appears twice in the header", path, item->string);
            cJSON_Delete(root);
            st_free(sf);
            return -1;
        }
        StTensor *t = &sf->tensors[sf->n_tensors++];
        if (parse_tensor(sf, item, t, err) != 0) {
            cJSON_Delete(root);
            st_free(sf);
            return -1;
        }
    }
    cJSON_Delete(root);
    if (check_overlaps(sf, err) != 0) { st_free(sf); return -1; }
    return 0;
}

/* ---- writing ---------------------------------------------------------------- */

uint64_t st_spec_bytes(const StSpec *s) {
    uint64_t n = dtype_size(s->dtype);
    for (int i = 0; i < s->n_dims; i++)
        if (mul_u64(n, s->shape[i], &n) != 0) return 0;
    return n;
}

/* The header JSON for specs laid out back to back, padded to 8 bytes. */
static char *build_header(const StSpec *specs, int n, uint64_t *total, size_t *len, Err *err, const char *path) {
    cJSON *root = cJSON_CreateObject();
    cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
    cJSON_AddStringToObject(meta, "format", "pt");
    uint64_t off = 0;
    for (int i = 0; i < n; i++) {
        uint64_t bytes = st_spec_bytes(&specs[i]);
        if (bytes == 0 || off + bytes < off || off + bytes > 9007199254740992ull) {
            cJSON_Delete(root);
            err_set(err, "%s: tensor '%s' is empty or too large", path, specs[i].name);
            return NULL;
        }
        cJSON *t = cJSON_AddObjectToObject(root, specs[i].name);
        cJSON_AddStringToObject(t, "dtype", st_dtype_str(specs[i].dtype));
        cJSON *shape = cJSON_AddArrayToObject(t, "shape");
        for (int d = 0; d < specs[i].n_dims; d++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)specs[i].shape[d]));
        cJSON *offs = cJSON_AddArrayToObject(t, "data_offsets");
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)off));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(off + bytes)));
        off += bytes;
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json) die("out of memory building a safetensors header");
    size_t jlen = strlen(json), padded = (jlen + 7) & ~(size_t)7;
    char *out = xmalloc(padded);
    memcpy(out, json, jlen);
    memset(out + jlen, ' ', padded - jlen);
    cJSON_free(json);
    *total = off;
    *len = padded;
    return out;
}

int st_writer_open(StWriter *w, const char *path, const StSpec *specs, int n, Err *err) {
    memset(w, 0, sizeof *w);
    snprintf(w->path, sizeof w->path, "%s", path);
    size_t len;
    char *hdr = build_header(specs, n, &w->data_total, &len, err, path);
    if (!hdr) return -1;
    w->f = fopen(path, "wb");
    if (!w->f) {
        free(hdr);
        return err_set(err, "%s: cannot create: %s", path, strerror(errno));
    }
    uint8_t le[8];
    for (int i = 0; i < 8; i++) le[i] = (uint8_t)((uint64_t)len >> (8 * i));
    int ok = fwrite(le, 1, 8, w->f) == 8 && fwrite(hdr, 1, len, w->f) == len;
    free(hdr);
    if (!ok) {
        st_writer_abort(w);
        return err_set(err, "%s: write failed: %s", path, strerror(errno));
    }
    return 0;
}

int st_writer_write(StWriter *w, const void *bytes, size_t n_bytes, Err *err) {
    if (n_bytes > w->data_total - w->data_written)
        return err_set(err, "%s: more data written than the header describes (%llu bytes)", w->path,
                       (unsigned long long)w->data_total);
    if (fwrite(bytes, 1, n_bytes, w->f) != n_bytes)
        return err_set(err, "%s: write failed: %s", w->path, strerror(errno));
    w->data_written += n_bytes;
    return 0;
}

int st_writer_close(StWriter *w, Err *err) {
    if (w->data_written != w->data_total) {
        st_writer_abort(w);
        return err_set(err, "%s: incomplete: %llu of %llu data bytes written", w->path,
                       (unsigned long long)w->data_written, (unsigned long long)w->data_total);
    }
    int bad = ferror(w->f);
    if (fclose(w->f) != 0) bad = 1;
    w->f = NULL;
    if (bad) return err_set(err, "%s: write failed (disk full?)", w->path);
    return 0;
}

void st_writer_abort(StWriter *w) {
    if (w->f) fclose(w->f);
    w->f = NULL;
}
