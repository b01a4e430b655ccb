/* test_npy.c — .npy / .npz reading and writing: the golden archives, round
 * trips for every dtype, numpy cross-checks both ways (when Debian's
 * /usr/bin/python3 has numpy), and bad input that must fail cleanly. */
#include "check.h"
#include "formats/npy.h"

#include <dirent.h>
#include <stdint.h>
#include <unistd.h>


static char tmp_dir[] = "/tmp/kvlab_test_npy_XXXXXX";

static const char *tpath(char *buf, size_t size, const char *name) {
    snprintf(buf, size, "%s/%s", tmp_dir, name);
    return buf;
}

static int write_bytes(const char *path, const void *p, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(p, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static int has_word(const char *msg, const char *word) { return !word || strstr(msg, word) != NULL; }

/* An error must be -1 with ONE line naming the file (and `word`, if given). */
#define CHECK_ERR(rc, err, name, word) do { \
    CHECK((rc) == -1, "rc=%d for %s", (rc), (name)); \
    CHECK(strstr((err).msg, (name)) != NULL, "error does not name '%s': %s", (name), (err).msg); \
    CHECK(has_word((err).msg, (word)), "error lacks '%s': %s", (word) ? (word) : "", (err).msg); \
    CHECK(strchr((err).msg, '\n') == NULL, "error is not one line: %s", (err).msg); \
} while (0)

static int shape_is(const NpyArray *a, int ndim, const int64_t *shape) {
    if (a->ndim != ndim) return 0;
    for (int d = 0; d < ndim; d++) if (a->shape[d] != shape[d]) return 0;
    return 1;
}
#define SHAPE(...) (int)(sizeof (int64_t[]){ __VA_ARGS__ } / sizeof(int64_t)), (const int64_t[]){ __VA_ARGS__ }
#define CHECK_SHAPE(a, ...) do { \
    const int64_t want_[] = { __VA_ARGS__ }; \
    int nd_ = (int)(sizeof want_ / sizeof want_[0]); \
    CHECK(shape_is(&(a), nd_, want_), "shape: ndim %d, [0]=%lld", (a).ndim, (long long)(a).shape[0]); \
} while (0)

/* ---- deterministic test values: element i is (7i mod 13), shifted per type
 * (the Python cross-check computes the same formula) ---- */
static double value_of(NpyType t, int64_t i) {
    double v = (double)(i * 7 % 13);
    switch (t) {
    case NPY_F32: case NPY_F64: return (v - 6) * 0.25;
    case NPY_I32: case NPY_I64: return v - 6;
    case NPY_U8: return v;
    case NPY_U16: return v + 60000;
    }
    return 0;
}

static void *make_values(NpyType t, int64_t n) {
    void *p = xmalloc((size_t)n * npy_type_size(t));
    for (int64_t i = 0; i < n; i++) {
        double v = value_of(t, i);
        switch (t) {
        case NPY_F32: ((float *)p)[i] = (float)v; break;
        case NPY_F64: ((double *)p)[i] = v; break;
        case NPY_I32: ((int32_t *)p)[i] = (int32_t)v; break;
        case NPY_I64: ((int64_t *)p)[i] = (int64_t)v; break;
        case NPY_U8: ((uint8_t *)p)[i] = (uint8_t)v; break;
        case NPY_U16: ((uint16_t *)p)[i] = (uint16_t)v; break;
        }
    }
    return p;
}

static int values_ok(const NpyArray *a) {
    float *f = npy_to_f32(a);
    int ok = 1;
    for (int64_t i = 0; i < a->count; i++) ok &= f[i] == (float)value_of(a->type, i);
    free(f);
    return ok;
}

/* The members of the multi-member archive (also checked by numpy). */
typedef struct { const char *name; NpyType type; int ndim; int64_t shape[3]; } Spec;
static const Spec specs[] = {
    { "f32", NPY_F32, 2, { 2, 3 } },   { "f64", NPY_F64, 1, { 4 } },
    { "i32", NPY_I32, 2, { 3, 2 } },   { "i64", NPY_I64, 3, { 2, 2, 2 } },
    { "u8", NPY_U8, 1, { 5 } },        { "u16", NPY_U16, 2, { 2, 5 } },
    { "scalar", NPY_F64, 0, { 0 } },   { "empty", NPY_I32, 1, { 0 } },
    { "empty3", NPY_F32, 3, { 3, 0, 2 } }, { "big", NPY_F32, 2, { 300, 1000 } },
};
#define N_SPECS (int)(sizeof specs / sizeof specs[0])

static int64_t spec_count(const Spec *s) {
    int64_t n = 1;
    for (int d = 0; d < s->ndim; d++) n *= s->shape[d];
    return n;
}

static int write_spec_npz(const char *path, int force_zip64, Err *err) {
    NpzWriter *w = npz_open(path, err);
    if (!w) return -1;
    if (force_zip64) npz_writer_force_zip64(w);
    for (int i = 0; i < N_SPECS; i++) {
        const Spec *s = &specs[i];
        void *v = make_values(s->type, spec_count(s));
        if (s->ndim == 0) *(double *)v = 3.25;
        int rc = npz_add(w, s->name, s->type, s->ndim, s->shape, v, err);
        free(v);
        if (rc) { npz_abort(w); return -1; }
    }
    return npz_close(w, err);
}

/* Read every spec member back and compare. */
static void check_spec_npz(const char *path) {
    for (int i = 0; i < N_SPECS; i++) {
        const Spec *s = &specs[i];
        NpyArray a;
        Err err = { "" };
        int rc = npz_read(&a, path, s->name, &err);
        CHECK(rc == 0, "%s: %s", s->name, err.msg);
        if (rc) continue;
        CHECK(a.type == s->type && shape_is(&a, s->ndim, s->shape) && a.count == spec_count(s),
              "%s: type %d ndim %d count %lld", s->name, a.type, a.ndim, (long long)a.count);
        if (s->ndim == 0) CHECK(a.count == 1 && ((double *)a.data)[0] == 3.25, "scalar");
        else CHECK(values_ok(&a), "%s values", s->name);
        npy_free(&a);
    }
}

/* ---- the golden archives ---- */
typedef struct { const char *file; int T, L, H, KV, V; const char *logits; int n_logit_rows; } Golden;

static double logsumexp(const float *x, int n) {
    double m = x[0], s = 0;
    for (int i = 1; i < n; i++) if (x[i] > m) m = x[i];
    for (int i = 0; i < n; i++) s += exp(x[i] - m);
    return m + log(s);
}

static int read_member(NpyArray *a, const char *path, const char *member) {
    Err err = { "" };
    int rc = npz_read(a, path, member, &err);
    CHECK(rc == 0, "%s", err.msg);
    return rc;
}

static void check_golden(const Golden *g) {
    char path[512];
    shared_path(path, sizeof path, g->file);
    NpyArray ids, logits, top5, nll, attn, kn, greedy;
    if (read_member(&ids, path, "ids") || read_member(&logits, path, g->logits) || read_member(&top5, path, "top5") ||
        read_member(&nll, path, "nll") || read_member(&attn, path, "attn") || read_member(&kn, path, "key_norm") ||
        read_member(&greedy, path, "greedy"))
        return;   /* leaks on failure only */
    int T = g->T, V = g->V, R = g->n_logit_rows;
    CHECK_SHAPE(ids, T);
    CHECK_SHAPE(logits, R, V);
    CHECK_SHAPE(top5, T, 5);
    CHECK_SHAPE(nll, T - 1);
    CHECK_SHAPE(attn, g->L, g->H, T, T);
    CHECK_SHAPE(kn, g->L, g->KV, T);
    CHECK_SHAPE(greedy, 32);
    CHECK(logits.type == NPY_F32 && attn.type == NPY_F32 && kn.type == NPY_F32 && nll.type == NPY_F32, "float types");

    int64_t *id = npy_to_i64(&ids), *t5 = npy_to_i64(&top5), *gr = npy_to_i64(&greedy);
    CHECK(id[0] == 1, "ids[0]=%lld (BOS)", (long long)id[0]);
    int ids_ok = 1;
    for (int t = 0; t < T; t++) ids_ok &= id[t] >= 0 && id[t] < V;
    for (int t = 0; t < 32; t++) ids_ok &= gr[t] >= 0 && gr[t] < V;
    CHECK(ids_ok, "token ids in [0, %d)", V);

    /* Logits rows r correspond to positions t = T - R + r. */
    const float *lg = logits.data, *nl = nll.data;
    for (int r = 0; r < R; r++) {
        int t = T - R + r;
        const float *row = lg + (size_t)r * V;
        float best = row[0];
        for (int v = 1; v < V; v++) if (row[v] > best) best = row[v];
        CHECK(t5[t * 5] >= 0 && t5[t * 5] < V && row[t5[t * 5]] == best, "top5[%d][0] is not the argmax", t);
        if (t + 1 < T) CHECK_CLOSE(nl[t], logsumexp(row, V) - row[id[t + 1]], 2e-3, "nll vs logits");
    }
    /* attention: causal rows of probabilities */
    const float *at = attn.data;
    double worst_sum = 0, worst_future = 0;
    for (int64_t row = 0; row < (int64_t)g->L * g->H * T; row++) {
        int q = (int)(row % T);
        const float *p = at + row * T;
        double s = 0;
        for (int k = 0; k < T; k++) {
            s += p[k];
            if (k > q && fabs(p[k]) > worst_future) worst_future = fabs(p[k]);
        }
        if (fabs(s - 1) > worst_sum) worst_sum = fabs(s - 1);
    }
    CHECK(worst_sum <= 1e-5, "attn rows sum to 1: worst |sum-1| = %g", worst_sum);
    CHECK(worst_future <= 1e-6, "attn is causal: worst future weight %g", worst_future);
    int kn_ok = 1;
    for (int64_t i = 0; i < kn.count; i++) kn_ok &= ((float *)kn.data)[i] > 0 && isfinite(((float *)kn.data)[i]);
    CHECK(kn_ok, "key norms positive and finite");

    Err err = { "" };
    CHECK(npz_has(path, g->logits, &err) == 1, "has %s", g->logits);
    CHECK(npz_has(path, strcmp(g->logits, "logits") ? "logits" : "logits_last8", &err) == 0, "has the other logits");
    free(id); free(t5); free(gr);
    npy_free(&ids); npy_free(&logits); npy_free(&top5); npy_free(&nll); npy_free(&attn); npy_free(&kn);
    npy_free(&greedy);
}

/* ---- numpy ---- */
static int have_numpy(void) {
    return access("/usr/bin/python3", X_OK) == 0 &&
           system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") == 0;
}

/* Run a Python script (written to the temp dir) with the temp dir as argv[1];
 * its output is shown only when it fails. */
static int run_python(const char *name, const char *script) {
    char py[512], log[512], cmd[2048];
    tpath(py, sizeof py, name);
    tpath(log, sizeof log, "python.log");
    if (write_bytes(py, script, strlen(script))) return -1;
    snprintf(cmd, sizeof cmd, "/usr/bin/python3 %s %s >%s 2>&1", py, tmp_dir, log);
    int rc = system(cmd);
    if (rc != 0) {
        char *out = NULL;
        size_t n = 0;
        Err err;
        if (read_file(log, &out, &n, &err) == 0) { fprintf(stderr, "  python says:\n%s\n", out); free(out); }
    }
    return rc;
}

static const char *py_check_ours =
    "import sys, zipfile, numpy as np\n"
    "d = sys.argv[1]\n"
    "spec = {'f32': ('float32', (2, 3)), 'f64': ('float64', (4,)), 'i32': ('int32', (3, 2)),\n"
    "        'i64': ('int64', (2, 2, 2)), 'u8': ('uint8', (5,)), 'u16': ('uint16', (2, 5)),\n"
    "        'scalar': ('float64', ()), 'empty': ('int32', (0,)), 'empty3': ('float32', (3, 0, 2)),\n"
    "        'big': ('float32', (300, 1000))}\n"
    "def want(dt, n):\n"
    "    v = np.arange(n) * 7 % 13\n"
    "    if dt.startswith('float'): return ((v - 6) * 0.25).astype(dt)\n"
    "    if dt.startswith('int'): return (v - 6).astype(dt)\n"
    "    return (v + (60000 if dt == 'uint16' else 0)).astype(dt)\n"
    "for f in ['c_all.npz', 'c_zip64.npz']:\n"
    "    assert zipfile.ZipFile(d + '/' + f).testzip() is None, f\n"
    "    z = np.load(d + '/' + f)\n"
    "    assert sorted(z.files) == sorted(spec), z.files\n"
    "    for k, (dt, shape) in spec.items():\n"
    "        a = z[k]\n"
    "        assert a.dtype == np.dtype(dt) and a.shape == shape, (f, k, a.dtype, a.shape)\n"
    "        if k == 'scalar': assert a == 3.25\n"
    "        else: assert np.array_equal(a.ravel(), want(dt, a.size)), (f, k)\n"
    "a = np.load(d + '/c_u16.npy')\n"
    "assert a.dtype == np.uint16 and a.shape == (3, 4) and np.array_equal(a.ravel(), want('uint16', 12))\n"
    "s = np.load(d + '/c_scalar.npy')\n"
    "assert s.shape == () and s.dtype == np.int64 and s == -42\n"
    "e = np.load(d + '/c_empty.npy')\n"
    "assert e.shape == (0, 7) and e.dtype == np.float64\n"
    "print('ok')\n";

static const char *py_write_theirs =
    "import sys, numpy as np\n"
    "d = sys.argv[1] + '/'\n"
    "def want(dt, n):\n"
    "    v = np.arange(n) * 7 % 13\n"
    "    if dt.startswith('float'): return ((v - 6) * 0.25).astype(dt)\n"
    "    if dt.startswith('int'): return (v - 6).astype(dt)\n"
    "    return (v + (60000 if dt == 'uint16' else 0)).astype(dt)\n"
    "for dt in ['float32', 'float64', 'int32', 'int64', 'uint8', 'uint16']:\n"
    "    np.save(d + 'n_' + dt + '.npy', want(dt, 24).reshape(2, 3, 4))\n"
    "np.save(d + 'n_bool.npy', np.array([True, False, True]))\n"
    "np.save(d + 'n_scalar.npy', np.float32(2.5))\n"
    "np.save(d + 'n_empty.npy', np.zeros((0, 4), np.int64))\n"
    "for v in [(2, 0), (3, 0)]:\n"
    "    with open(d + 'n_v%d.npy' % v[0], 'wb') as f: np.lib.format.write_array(f, want('float32', 6), version=v)\n"
    "np.save(d + 'n_big_endian.npy', want('float32', 6).astype('>f4'))\n"
    "np.save(d + 'n_fortran.npy', np.asfortranarray(want('float64', 6).reshape(2, 3)))\n"
    "np.save(d + 'n_object.npy', np.array([1, 'x'], dtype=object), allow_pickle=True)\n"
    "np.save(d + 'n_f16.npy', want('float32', 6).astype(np.float16))\n"
    "np.save(d + 'n_struct.npy', np.zeros(3, dtype=[('a', '<f4'), ('b', '<i4')]))\n"
    "m = dict(a=want('float32', 1000).reshape(10, 100), b=want('int64', 7), c=np.array(7, np.int32))\n"
    "np.savez(d + 'n_stored.npz', **m)\n"
    "np.savez_compressed(d + 'n_deflated.npz', **m)\n"
    "print('ok')\n";

/* Check arrays numpy wrote: the a/b/c members. */
static void check_numpy_npz(const char *path) {
    NpyArray a, b, c;
    if (read_member(&a, path, "a") || read_member(&b, path, "b") || read_member(&c, path, "c")) return;
    CHECK(a.type == NPY_F32 && shape_is(&a, SHAPE(10, 100)) && values_ok(&a), "%s: a", path);
    CHECK(b.type == NPY_I64 && shape_is(&b, SHAPE(7)) && values_ok(&b), "%s: b", path);
    CHECK(c.type == NPY_I32 && c.ndim == 0 && c.count == 1 && ((int32_t *)c.data)[0] == 7, "%s: c", path);
    npy_free(&a); npy_free(&b); npy_free(&c);
}

/* Offset of the first central directory entry of an archive without a comment. */
static size_t first_cd_entry(const unsigned char *z, size_t n) {
    const unsigned char *e = z + n - 22;
    return (size_t)e[16] | (size_t)e[17] << 8 | (size_t)e[18] << 16 | (size_t)e[19] << 24;
}

static int count_tmp_leftovers(void) {
    DIR *d = opendir(tmp_dir);
    int n = 0;
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) n += strstr(e->d_name, ".tmp.") != NULL;
    if (d) closedir(d);
    return n;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint64_t rng(void) {
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

int main(void) {
    if (!mkdtemp(tmp_dir)) { perror("mkdtemp"); return 1; }
    char p[512], q[512];
    Err err;

    CASE("golden stories260K_text: shapes, BOS, attention rows, nll vs logits") {
        Golden g = { "golden/golden_stories260K_text.npz", 96, 5, 8, 4, 512, "logits", 96 };
        check_golden(&g);
    }
    CASE("golden stories260K_random") {
        Golden g = { "golden/golden_stories260K_random.npz", 64, 5, 8, 4, 512, "logits", 64 };
        check_golden(&g);
    }
    CASE("golden demo_wikitext: logits_last8, 12x5 attention") {
        Golden g = { "golden/golden_demo_wikitext.npz", 128, 12, 5, 5, 32000, "logits_last8", 8 };
        check_golden(&g);
    }
    CASE("member name with or without .npy") {
        char path[512];
        shared_path(path, sizeof path, "golden/golden_stories260K_text.npz");
        NpyArray a, b;
        if (read_member(&a, path, "ids") == 0 && read_member(&b, path, "ids.npy") == 0) {
            CHECK(a.type == NPY_I32 && a.count == 96 && b.count == 96 && memcmp(a.data, b.data, 96 * 4) == 0, "same ids");
            npy_free(&a); npy_free(&b);
        }
        CHECK(npz_has(path, "ids.npy", &err) == 1 && npz_has(path, "ids", &err) == 1 && npz_has(path, "id", &err) == 0,
              "npz_has");
    }
    CASE("npy round trip, every dtype, extreme values") {
        union { float f[6]; double d[6]; int32_t i[6]; int64_t l[6]; uint8_t b[6]; uint16_t h[6]; } v[6];
        float ff[6] = { -0.0f, INFINITY, -INFINITY, NAN, 1e-45f, 3.4028235e38f };
        double dd[6] = { -0.0, INFINITY, 5e-324, NAN, 1.7976931348623157e308, -1.5 };
        int32_t ii[6] = { INT32_MIN, INT32_MAX, -1, 0, 1, 123456789 };
        int64_t ll[6] = { INT64_MIN, INT64_MAX, -1, 0, 1, 1234567890123456789LL };
        uint8_t bb[6] = { 0, 1, 127, 128, 254, 255 };
        uint16_t hh[6] = { 0, 1, 32767, 32768, 65534, 65535 };
        memcpy(v[0].f, ff, sizeof ff); memcpy(v[1].d, dd, sizeof dd); memcpy(v[2].i, ii, sizeof ii);
        memcpy(v[3].l, ll, sizeof ll); memcpy(v[4].b, bb, sizeof bb); memcpy(v[5].h, hh, sizeof hh);
        NpyType types[6] = { NPY_F32, NPY_F64, NPY_I32, NPY_I64, NPY_U8, NPY_U16 };
        for (int t = 0; t < 6; t++) {
            char name[32];
            snprintf(name, sizeof name, "rt%d.npy", t);
            tpath(p, sizeof p, name);
            int rc = npy_write(p, types[t], 2, (int64_t[]){ 2, 3 }, &v[t], &err);
            CHECK(rc == 0, "%s", err.msg);
            NpyArray a;
            rc = npy_read(&a, p, &err);
            CHECK(rc == 0, "%s", err.msg);
            if (rc) continue;
            CHECK(a.type == types[t] && shape_is(&a, SHAPE(2, 3)) && a.count == 6, "type %d", t);
            CHECK(memcmp(a.data, &v[t], 6 * npy_type_size(types[t])) == 0, "bits of type %d", t);
            npy_free(&a);
        }
        /* the file is numpy-shaped: 64-byte aligned data, format 1.0 */
        char *bytes;
        size_t n;
        if (read_file(tpath(p, sizeof p, "rt0.npy"), &bytes, &n, &err) == 0) {
            CHECK(n == 128 + 24 && memcmp(bytes, "\x93NUMPY\x01\x00", 8) == 0 && bytes[127] == '\n', "layout, n=%zu", n);
            free(bytes);
        }
    }
    CASE("0-d scalar and empty arrays (npy and npz)") {
        int64_t s = -42;
        CHECK(npy_write(tpath(p, sizeof p, "c_scalar.npy"), NPY_I64, 0, NULL, &s, &err) == 0, "%s", err.msg);
        CHECK(npy_write(tpath(p, sizeof p, "c_empty.npy"), NPY_F64, 2, (int64_t[]){ 0, 7 }, NULL, &err) == 0, "%s",
              err.msg);
        NpyArray a;
        if (npy_read(&a, tpath(p, sizeof p, "c_scalar.npy"), &err) == 0) {
            CHECK(a.ndim == 0 && a.count == 1 && a.type == NPY_I64 && ((int64_t *)a.data)[0] == -42, "scalar");
            npy_free(&a);
        } else CHECK(0, "%s", err.msg);
        if (npy_read(&a, tpath(p, sizeof p, "c_empty.npy"), &err) == 0) {
            CHECK(shape_is(&a, SHAPE(0, 7)) && a.count == 0 && a.type == NPY_F64, "empty");
            npy_free(&a);
        } else CHECK(0, "%s", err.msg);
        uint16_t u[12];
        for (int i = 0; i < 12; i++) u[i] = (uint16_t)value_of(NPY_U16, i);
        CHECK(npy_write(tpath(p, sizeof p, "c_u16.npy"), NPY_U16, 2, (int64_t[]){ 3, 4 }, u, &err) == 0, "%s", err.msg);
    }
    CASE("npy_to_f32 / npy_to_i64 conversions") {
        int64_t sh[1] = { 4 };
        double d[4] = { -2.75, 1e30, NAN, 7.9 };
        NpyArray a = { .type = NPY_F64, .ndim = 1, .count = 4, .data = d };
        a.shape[0] = sh[0];
        int64_t *l = npy_to_i64(&a);
        CHECK(l[0] == -2 && l[1] == INT64_MAX && l[2] == 0 && l[3] == 7, "f64->i64 %lld %lld", (long long)l[0],
              (long long)l[3]);
        free(l);
        uint16_t h[4] = { 0, 1, 65535, 300 };
        NpyArray b = { .type = NPY_U16, .ndim = 1, .count = 4, .data = h };
        float *f = npy_to_f32(&b);
        CHECK(f[0] == 0 && f[1] == 1 && f[2] == 65535 && f[3] == 300, "u16->f32");
        free(f);
    }
    CASE("npz multi-member round trip") {
        tpath(p, sizeof p, "c_all.npz");
        CHECK(write_spec_npz(p, 0, &err) == 0, "%s", err.msg);
        check_spec_npz(p);
        CHECK(npz_has(p, "u8", &err) == 1 && npz_has(p, "u8.npy", &err) == 1 && npz_has(p, "u9", &err) == 0, "npz_has");
        CHECK(count_tmp_leftovers() == 0, "no temp files left");
    }
    CASE("npz with ZIP64 records and extra fields (forced)") {
        tpath(p, sizeof p, "c_zip64.npz");
        CHECK(write_spec_npz(p, 1, &err) == 0, "%s", err.msg);
        check_spec_npz(p);
        char *z;
        size_t n;
        if (read_file(p, &z, &n, &err) == 0) {
            CHECK(n > 98 && memcmp(z + n - 98, "PK\x06\x06", 4) == 0 && memcmp(z + n - 42, "PK\x06\x07", 4) == 0,
                  "ZIP64 end record and locator present");
            free(z);
        }
    }
    CASE("npz writer is atomic; abort leaves nothing") {
        tpath(p, sizeof p, "atomic.npz");
        NpzWriter *w = npz_open(p, &err);
        CHECK(w != NULL, "%s", err.msg);
        if (w) {
            float x[3] = { 1, 2, 3 };
            CHECK(npz_add(w, "x", NPY_F32, 1, (int64_t[]){ 3 }, x, &err) == 0, "%s", err.msg);
            CHECK(!path_exists(p), "nothing at the path before close");
            npz_abort(w);
            CHECK(!path_exists(p) && count_tmp_leftovers() == 0, "abort removed the temp file");
        }
        CHECK(npz_open("/nonexistent-dir/x.npz", &err) == NULL && strstr(err.msg, "/nonexistent-dir/x.npz"), "%s",
              err.msg);
    }
    CASE("npz_add refuses bad arguments and stays usable") {
        tpath(p, sizeof p, "args.npz");
        NpzWriter *w = npz_open(p, &err);
        if (w) {
            float x[2] = { 1, 2 };
            int rc = npz_add(w, "deep", NPY_F32, 9, (int64_t[]){ 1, 1, 1, 1, 1, 1, 1, 1, 1 }, x, &err);
            CHECK_ERR(rc, err, "args.npz:deep", "ndim");
            rc = npz_add(w, "neg", NPY_F32, 1, (int64_t[]){ -2 }, x, &err);
            CHECK_ERR(rc, err, "args.npz:neg", "negative");
            rc = npz_add(w, "null", NPY_F32, 1, (int64_t[]){ 2 }, NULL, &err);
            CHECK_ERR(rc, err, "args.npz:null", "NULL");
            rc = npz_add(w, "type", (NpyType)42, 1, (int64_t[]){ 2 }, x, &err);
            CHECK_ERR(rc, err, "args.npz:type", "NpyType");
            CHECK(npz_add(w, "x", NPY_F32, 1, (int64_t[]){ 2 }, x, &err) == 0, "%s", err.msg);
            rc = npz_add(w, "x.npy", NPY_F32, 1, (int64_t[]){ 2 }, x, &err);
            CHECK_ERR(rc, err, "args.npz:x.npy", "duplicate");
            CHECK(npz_close(w, &err) == 0, "%s", err.msg);
            NpyArray a;
            CHECK(npz_read(&a, p, "x", &err) == 0 && a.count == 2 && ((float *)a.data)[1] == 2, "%s", err.msg);
            npy_free(&a);
            CHECK(npz_has(p, "deep", &err) == 0, "refused member absent");
        }
        int rc = npy_write(tpath(p, sizeof p, "bad.npy"), NPY_F32, -1, NULL, NULL, &err);
        CHECK_ERR(rc, err, "bad.npy", "ndim");
    }

    if (have_numpy()) {
        CASE("numpy reads what we write (npy, npz, ZIP64 npz)") {
            CHECK(run_python("check_ours.py", py_check_ours) == 0, "numpy check failed (see above)");
        }
        CASE("we read what numpy writes (save, format 2.0/3.0, savez, savez_compressed)") {
            int rc = run_python("write_theirs.py", py_write_theirs);
            CHECK(rc == 0, "python failed");
            if (rc == 0) {
                const char *dts[6] = { "float32", "float64", "int32", "int64", "uint8", "uint16" };
                NpyType types[6] = { NPY_F32, NPY_F64, NPY_I32, NPY_I64, NPY_U8, NPY_U16 };
                NpyArray a;
                for (int t = 0; t < 6; t++) {
                    char name[64];
                    snprintf(name, sizeof name, "n_%s.npy", dts[t]);
                    if (npy_read(&a, tpath(p, sizeof p, name), &err)) { CHECK(0, "%s", err.msg); continue; }
                    CHECK(a.type == types[t] && shape_is(&a, SHAPE(2, 3, 4)) && values_ok(&a), "%s", name);
                    npy_free(&a);
                }
                if (npy_read(&a, tpath(p, sizeof p, "n_bool.npy"), &err) == 0) {
                    const uint8_t *b = a.data;
                    CHECK(a.type == NPY_U8 && a.count == 3 && b[0] == 1 && b[1] == 0 && b[2] == 1, "bool");
                    npy_free(&a);
                } else CHECK(0, "%s", err.msg);
                if (npy_read(&a, tpath(p, sizeof p, "n_scalar.npy"), &err) == 0) {
                    CHECK(a.ndim == 0 && a.count == 1 && ((float *)a.data)[0] == 2.5f, "scalar");
                    npy_free(&a);
                } else CHECK(0, "%s", err.msg);
                if (npy_read(&a, tpath(p, sizeof p, "n_empty.npy"), &err) == 0) {
                    CHECK(a.type == NPY_I64 && shape_is(&a, SHAPE(0, 4)) && a.count == 0, "empty");
                    npy_free(&a);
                } else CHECK(0, "%s", err.msg);
                for (int v = 2; v <= 3; v++) {
                    char name[32];
                    snprintf(name, sizeof name, "n_v%d.npy", v);
                    if (npy_read(&a, tpath(p, sizeof p, name), &err) == 0) {
                        CHECK(a.type == NPY_F32 && shape_is(&a, SHAPE(6)) && values_ok(&a), "%s", name);
                        npy_free(&a);
                    } else CHECK(0, "%s", err.msg);
                }
                struct { const char *file, *word; } bad[] = {
                    { "n_big_endian.npy", "big-endian" }, { "n_fortran.npy", "fortran_order" },
                    { "n_object.npy", "object" },         { "n_f16.npy", "unsupported dtype '<f2'" },
                    { "n_struct.npy", "structured" },
                };
                for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
                    rc = npy_read(&a, tpath(p, sizeof p, bad[i].file), &err);
                    CHECK_ERR(rc, err, bad[i].file, bad[i].word);
                    CHECK(a.data == NULL, "no data on failure");
                }
                check_numpy_npz(tpath(p, sizeof p, "n_stored.npz"));
                check_numpy_npz(tpath(p, sizeof p, "n_deflated.npz"));

                /* a flipped data byte in a STORED member: only the CRC can tell */
                char *z;
                size_t n;
                if (read_file(tpath(p, sizeof p, "n_stored.npz"), &z, &n, &err) == 0) {
                    z[200] ^= 0x10;   /* inside member a's data (the first member) */
                    write_bytes(tpath(q, sizeof q, "n_stored_flip.npz"), z, n);
                    rc = npz_read(&a, q, "a", &err);
                    CHECK_ERR(rc, err, "n_stored_flip.npz", "CRC");
                    free(z);
                }
            }
        }
    } else {
        printf("skip  numpy cross-checks: /usr/bin/python3 with numpy not found\n");
    }

    CASE("bad .npy: magic, version, header, dtype, fortran order, truncation") {
        /* Build small .npy images around a header dict. */
        struct { const char *dict, *word; } bad[] = {
            { "{'descr': '<f4', 'fortran_order': True, 'shape': (2,), }", "fortran_order" },
            { "{'descr': '>f8', 'fortran_order': False, 'shape': (2,), }", "big-endian" },
            { "{'descr': '|O', 'fortran_order': False, 'shape': (2,), }", "object" },
            { "{'descr': '<c8', 'fortran_order': False, 'shape': (2,), }", "unsupported dtype" },
            { "{'descr': '<f4', 'fortran_order': False, 'shape': (-1,), }", "shape" },
            { "{'descr': '<f4', 'fortran_order': False, 'shape': (1,1,1,1,1,1,1,1,1), }", "dimensions" },
            { "{'descr': '<f4', 'shape': (2,), }", "fortran_order" },
            { "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), 'x': 1}", "unexpected key" },
            { "{'descr': '<f4', 'fortran_order': False, 'shape': 2, }", "shape" },
            { "{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999,), }", "shape" },
            { "{'descr': '<f4', 'fortran_order': False, 'shape': (4611686018427387904, 4), }", "truncated" },
            { "{'descr': '<f4', 'fortran_order': False, 'shape': (3,), }", "truncated" },   /* 2 elements present */
            { "['descr', '<f4']", "dict" },
            { "{'descr': '<f4\n", "descr" },
        };
        for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
            unsigned char img[256] = "\x93NUMPY\x01\x00";
            size_t hl = strlen(bad[i].dict);
            img[8] = (unsigned char)hl;
            memcpy(img + 10, bad[i].dict, hl);
            memset(img + 10 + hl, 0, 8);   /* two f4 elements */
            NpyArray a;
            int rc = npy_parse(&a, img, 10 + hl + 8, "mem.npy", &err);
            CHECK_ERR(rc, err, "mem.npy", bad[i].word);
        }
        /* A valid image truncated at every length fails; whole, it parses. */
        float x[5] = { 1, 2, 3, 4, 5 };
        tpath(p, sizeof p, "five.npy");
        npy_write(p, NPY_F32, 1, (int64_t[]){ 5 }, x, &err);
        char *img;
        size_t n;
        if (read_file(p, &img, &n, &err) == 0) {
            int all_fail = 1;
            for (size_t k = 0; k < n; k++) {
                unsigned char *copy = xmalloc(k + 1);   /* exact-size copies let ASan catch overreads */
                memcpy(copy, img, k);
                NpyArray a;
                all_fail &= npy_parse(&a, copy, k, "cut.npy", &err) == -1 && strstr(err.msg, "cut.npy") != NULL;
                free(copy);
            }
            CHECK(all_fail, "every truncation fails with the name");
            NpyArray a;
            CHECK(npy_parse(&a, img, n, "whole.npy", &err) == 0 && a.count == 5, "%s", err.msg);
            npy_free(&a);
            img[0] = 'X';
            write_bytes(tpath(p, sizeof p, "badmagic.npy"), img, n);
            int rc = npy_read(&a, p, &err);
            CHECK_ERR(rc, err, "badmagic.npy", "magic");
            img[0] = (char)0x93;
            img[6] = 4;
            rc = npy_parse(&a, img, n, "v4.npy", &err);
            CHECK_ERR(rc, err, "v4.npy", "version 4.0");
            img[6] = 1;
            img[8] = (char)0xff;   /* header length past the end */
            rc = npy_parse(&a, img, n, "hlen.npy", &err);
            CHECK_ERR(rc, err, "hlen.npy", "past the end");
            free(img);
        }
        NpyArray a;
        int rc = npy_read(&a, tpath(p, sizeof p, "missing.npy"), &err);
        CHECK_ERR(rc, err, "missing.npy", NULL);
    }
    CASE("bad .npz: not a zip, empty, missing file, missing member") {
        NpyArray a;
        tpath(p, sizeof p, "text.npz");
        const char *text = "this is not a zip archive, just some text that is long enough\n";
        write_bytes(p, text, strlen(text));
        int rc = npz_read(&a, p, "x", &err);
        CHECK_ERR(rc, err, "text.npz", "not a zip");
        CHECK(npz_has(p, "x", &err) == -1, "npz_has on a text file");
        write_bytes(tpath(p, sizeof p, "empty.npz"), "", 0);
        rc = npz_read(&a, p, "x", &err);
        CHECK_ERR(rc, err, "empty.npz", NULL);
        rc = npz_read(&a, tpath(p, sizeof p, "nonexistent.npz"), "x", &err);
        CHECK_ERR(rc, err, "nonexistent.npz", NULL);
        char path[512];
        shared_path(path, sizeof path, "golden/golden_stories260K_text.npz");
        rc = npz_read(&a, path, "logits_last8", &err);
        CHECK_ERR(rc, err, "golden_stories260K_text.npz", "'logits_last8'");
        CHECK(strstr(err.msg, "members: ids, attn"), "lists the members: %s", err.msg);
    }
    CASE("bad .npz: truncated golden, corrupted CRC, corrupted deflate data") {
        char path[512];
        shared_path(path, sizeof path, "golden/golden_stories260K_random.npz");
        char *z;
        size_t n;
        if (read_file(path, &z, &n, &err) == 0) {
            size_t cuts[] = { n / 2, n - 1, n - 23, 21, 100 };
            for (size_t i = 0; i < sizeof cuts / sizeof cuts[0]; i++) {
                write_bytes(tpath(p, sizeof p, "trunc.npz"), z, cuts[i]);
                NpyArray a;
                int rc = npz_read(&a, p, "ids", &err);
                CHECK_ERR(rc, err, "trunc.npz", NULL);
            }
            free(z);
        }
        /* Our multi-member archive, with the first member's recorded CRC changed. */
        if (read_file(tpath(q, sizeof q, "c_all.npz"), &z, &n, &err) == 0) {
            size_t cd = first_cd_entry((unsigned char *)z, n);
            z[cd + 16] ^= 0x01;
            write_bytes(tpath(p, sizeof p, "crc.npz"), z, n);
            NpyArray a;
            int rc = npz_read(&a, p, "f32", &err);
            CHECK_ERR(rc, err, "crc.npz", "CRC-32 mismatch");
            CHECK(npz_read(&a, p, "f64", &err) == 0, "other members still read: %s", err.msg);
            npy_free(&a);
            z[cd + 16] ^= 0x01;
            /* deflate data of the first member (local header is 30 + 7 bytes) */
            for (int i = 0; i < 8; i++) z[40 + i] ^= 0x5a;
            write_bytes(tpath(p, sizeof p, "deflate.npz"), z, n);
            rc = npz_read(&a, p, "f32", &err);
            CHECK_ERR(rc, err, "deflate.npz", "'f32'");
            free(z);
        }
    }
    CASE("random corruption of archives never crashes or overreads") {
        /* npz_parse works on exact-size heap copies, so under
         * -fsanitize=address any read past the end is caught. */
        const char *srcs[2] = { "c_all.npz", "c_zip64.npz" };
        int outcomes[2] = { 0, 0 }, unnamed = 0;
        for (int s = 0; s < 2; s++) {
            char *z;
            size_t n;
            if (read_file(tpath(q, sizeof q, srcs[s]), &z, &n, &err)) { CHECK(0, "%s", err.msg); continue; }
            for (int iter = 0; iter < 3000; iter++) {
                char *c = xmalloc(n);
                memcpy(c, z, n);
                size_t len = n;
                int kind = (int)(rng() % 4);
                if (kind == 0) len = (size_t)(rng() % n);                      /* truncate */
                int flips = 1 + (int)(rng() % 4);
                for (int f = 0; f < flips; f++) {
                    /* mostly hit the end records and central directory: they are the bounds */
                    size_t at = kind == 1 ? n - 1 - (size_t)(rng() % 400 % n) : (size_t)(rng() % n);
                    c[at] = kind == 2 ? (char)0xff : (char)(c[at] ^ (1 << (rng() % 8)));
                }
                char *exact = xmalloc(len ? len : 1);
                memcpy(exact, c, len);
                free(c);
                for (int m = 0; m < N_SPECS; m++) {
                    NpyArray a;
                    err.msg[0] = '\0';
                    int rc = npz_parse(&a, exact, len, "fuzz.npz", specs[m].name, &err);
                    outcomes[rc == 0]++;
                    if (rc == 0) npy_free(&a);
                    else if (!strstr(err.msg, "fuzz.npz")) unnamed++;
                }
                if (iter % 100 == 0) {   /* the file path too */
                    write_bytes(tpath(p, sizeof p, "fuzz.npz"), exact, len);
                    NpyArray a;
                    if (npz_read(&a, p, "f32", &err) == 0) npy_free(&a);
                    npz_has(p, "f32", &err);
                }
                free(exact);
            }
            free(z);
        }
        CHECK(unnamed == 0, "%d errors without the file name", unnamed);
        CHECK(outcomes[0] > 0 && outcomes[1] > 0, "%d reads ok, %d errors", outcomes[1], outcomes[0]);
    }

    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf %s", tmp_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_dir);
    return check_summary();
}
