/* trace_page.c — see trace_page.h. The page is the template trace_page.html
 * with one line, the comment KVLAB_TRACE_DATA, replaced by `const TRACE = {...};`. */
#include "lab/trace_page.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"
#include "base/dtype.h"
#include "formats/npy.h"
#include "lab/metrics.h"
#include "lab/runmeta.h"

/* The template, as bytes in the binary: the assembler copies the file in
 * (.incbin; paths are relative to the directory the compiler runs in, the
 * repository root) and ends it with a NUL. The Makefile makes this object
 * depend on the .html file. */
__asm__(".section .rodata\n"
        ".global kvlab_trace_page_html\n"
        "kvlab_trace_page_html:\n"
        ".incbin \"src/lab/trace_page.html\"\n"
        ".byte 0\n"
        ".previous\n");
extern const char kvlab_trace_page_html[];

#define DATA_MARKER "/*KVLAB_TRACE_DATA*/"

/* ---- sizes ------------------------------------------------------------------------ */

static size_t base64_len(size_t n_bytes) { return 4 * ((n_bytes + 2) / 3) + 2; }   /* + the quotes */

size_t trace_page_row_bytes(int n_positions) { return base64_len((size_t)n_positions * sizeof(float)); }

size_t trace_page_bytes(const TracePlan *p, const Config *cfg) {
    size_t NL = (size_t)p->n_layers, NH = (size_t)p->n_heads, KV = (size_t)cfg->n_kv_heads;
    size_t Q = (size_t)trace_plan_queries(p, NULL), P = (size_t)p->n_prompt + p->n_gen;
    size_t n = base64_len(NL * NH * Q * P * 4)            /* attn */
             + 2 * base64_len(NL * KV * P * 4)            /* key and value norms */
             + 4 * base64_len(NL * NH * Q * 4);           /* four metrics */
    if (p->with_policy)
        n += base64_len(NL * KV * Q * P * 4) + base64_len(NL * KV * P * 4) + Q * 2 * 21;   /* score, evicted_at, kv_bytes */
    return n + P * 24 + Q * 8 + 1024 + strlen(kvlab_trace_page_html);
}

/* ---- JSON pieces --------------------------------------------------------------------- */

static void put_base64(Buf *b, const void *data, size_t n) {
    static const char digits[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *s = data;
    char quad[4];
    buf_append(b, "\"", 1);
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)s[i] << 16 | (i + 1 < n ? (unsigned)s[i + 1] << 8 : 0) | (i + 2 < n ? s[i + 2] : 0);
        quad[0] = digits[v >> 18 & 63];
        quad[1] = digits[v >> 12 & 63];
        quad[2] = i + 1 < n ? digits[v >> 6 & 63] : '=';
        quad[3] = i + 2 < n ? digits[v & 63] : '=';
        buf_append(b, quad, 4);
    }
    buf_append(b, "\"", 1);
}

/* A JSON string that is also safe inside <script>: '<', '>' and '&' escaped. */
static void put_string(Buf *b, const char *s) {
    buf_append(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') buf_printf(b, "\\%c", c);
        else if (c < 0x20 || c == '<' || c == '>' || c == '&') buf_printf(b, "\\u%04x", c);
        else buf_append(b, s, 1);
    }
    buf_append(b, "\"", 1);
}

/* JSON text made elsewhere (cJSON): '<' can only be inside its strings, where \u003c means the same. */
static void put_json(Buf *b, const char *json) {
    for (; *json; json++)
        if (*json == '<') buf_append(b, "\\u003c", 6);
        else buf_append(b, json, 1);
}

static void put_key(Buf *b, const char *name) { buf_printf(b, ",\"%s\":", name); }

static void put_ints(Buf *b, const int *v, int64_t n) {
    buf_append(b, "[", 1);
    for (int64_t i = 0; i < n; i++) buf_printf(b, i ? ",%d" : "%d", v[i]);
    buf_append(b, "]", 1);
}

/* ---- reading the trace back ------------------------------------------------------------- */

typedef struct {
    NpyArray attn, key_norm, value_norm, query_pos, layers, heads, kv_head, ids, n_prompt;
    NpyArray score, evicted_at, kv_bytes;   /* with a policy (count 0 without) */
    int with_policy;
} TraceArrays;

static int read_member(const char *path, const char *name, NpyType type, int ndim, NpyArray *a, Err *err) {
    if (npz_read(a, path, name, err) != 0) return -1;
    if (a->type != type || a->ndim != ndim)
        return err_set(err, "%s: member '%s' has an unexpected type or shape (not a kvlab trace?)", path, name);
    return 0;
}

static void free_arrays(TraceArrays *t) {
    NpyArray *all[] = { &t->attn, &t->key_norm, &t->value_norm, &t->query_pos, &t->layers, &t->heads,
                        &t->kv_head, &t->ids, &t->n_prompt, &t->score, &t->evicted_at, &t->kv_bytes };
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++) npy_free(all[i]);
}

static int read_arrays(const char *path, TraceArrays *t, Err *err) {
    memset(t, 0, sizeof *t);
    int has = npz_has(path, "score", err);
    if (has < 0) return -1;
    t->with_policy = has;
    if (read_member(path, "attn", NPY_F32, 5, &t->attn, err) || read_member(path, "key_norm", NPY_F32, 4, &t->key_norm, err) ||
        read_member(path, "value_norm", NPY_F32, 4, &t->value_norm, err) ||
        read_member(path, "query_pos", NPY_I32, 1, &t->query_pos, err) || read_member(path, "layers", NPY_I32, 1, &t->layers, err) ||
        read_member(path, "heads", NPY_I32, 1, &t->heads, err) || read_member(path, "kv_head", NPY_I32, 1, &t->kv_head, err) ||
        read_member(path, "ids", NPY_I32, 2, &t->ids, err) || read_member(path, "n_prompt", NPY_I32, 0, &t->n_prompt, err) ||
        (has && (read_member(path, "score", NPY_F32, 5, &t->score, err) || read_member(path, "evicted_at", NPY_I32, 4, &t->evicted_at, err) ||
                 read_member(path, "kv_bytes", NPY_I64, 3, &t->kv_bytes, err)))) {
        free_arrays(t);
        return -1;
    }
    if (t->attn.shape[0] != 1) {
        free_arrays(t);
        return err_set(err, "--html: the page shows one sequence; this trace has %lld (use -p, --ids or --chunks 1)",
                       (long long)t->attn.shape[0]);
    }
    return 0;
}

/* ---- the metrics of every recorded row ------------------------------------------------------- */

/* Per (layer, head, query): Spearman ρ and ALR/n over the cached tokens (the finite
 * entries of the row), the first token's attention and its key norm over the median
 * (NaN when the first token is not cached). out: 4 arrays of NL*NH*Q. */
static void row_metrics(const TraceArrays *t, float *rho, float *alr, float *first, float *first_ratio) {
    int64_t NL = t->attn.shape[1], NH = t->attn.shape[2], Q = t->attn.shape[3], P = t->attn.shape[4], KV = t->key_norm.shape[2];
    const float *attn = t->attn.data, *key_norm = t->key_norm.data;
    const int *kv_head = t->kv_head.data;
    float *a = xmalloc((size_t)P * sizeof(float)), *k = xmalloc((size_t)P * sizeof(float));
    NormStats ns; RowScratch rs; RowMetrics m;
    normstats_init(&ns);
    rowscratch_init(&rs);
    for (int64_t li = 0; li < NL; li++)
        for (int64_t hi = 0; hi < NH; hi++)
            for (int64_t q = 0; q < Q; q++) {
                const float *row = attn + ((li * NH + hi) * Q + q) * P;
                const float *norms = key_norm + (li * KV + kv_head[hi]) * P;
                int n = 0;
                for (int64_t p = 0; p < P; p++)
                    if (isfinite(row[p]) && isfinite(norms[p])) { a[n] = row[p]; k[n] = norms[p]; n++; }
                size_t i = (size_t)((li * NH + hi) * Q + q);
                rho[i] = alr[i] = first[i] = first_ratio[i] = NAN;
                if (n == 0) continue;
                normstats_set(&ns, k, n, &rs);
                metrics_row(&ns, a, 0, &rs, &m);
                rho[i] = (float)m.spearman;
                alr[i] = (float)m.alr_per_n;
                if (isfinite(row[0])) {    /* slot 0 of the compacted row is position 0 */
                    first[i] = (float)m.first_token_attn;
                    first_ratio[i] = (float)m.first_key_norm_ratio;
                }
            }
    normstats_free(&ns);
    rowscratch_free(&rs);
    free(a); free(k);
}

/* ---- the page ------------------------------------------------------------------------------------ */

static void put_tokens(Buf *b, const TraceArrays *t, const Tokenizer *tok) {
    const int *ids = t->ids.data;
    int64_t P = t->ids.shape[1];
    char piece[8], hash[16];
    buf_append(b, "[", 1);
    for (int64_t p = 0; p < P; p++) {
        const char *text = NULL;
        if (tok && ids[p] >= 0 && ids[p] < tokenizer_vocab_size(tok)) {
            if (ids[p] == tokenizer_bos_id(tok)) text = "<s>";
            else if (ids[p] == tokenizer_eos_id(tok)) text = "</s>";
            else text = tokenizer_piece(tok, p ? ids[p - 1] : -1, ids[p], piece);
        }
        if (!text) { snprintf(hash, sizeof hash, "#%d", ids[p]); text = hash; }
        if (p) buf_append(b, ",", 1);
        put_string(b, text);
    }
    buf_append(b, "]", 1);
}

/* The data object; page_bytes is written as a fixed-width field (a number padded
 * with spaces) so the total can be filled in once the rest is known. */
static void put_data(Buf *b, const TraceArrays *t, const TracePageInfo *info, size_t *page_bytes_at) {
    int64_t NL = t->attn.shape[1], NH = t->attn.shape[2], Q = t->attn.shape[3], P = t->attn.shape[4], KV = t->key_norm.shape[2];
    int n_prompt = *(const int *)t->n_prompt.data;
    size_t n_rows = (size_t)(NL * NH * Q);
    float *rho = xmalloc(n_rows * sizeof(float)), *alr = xmalloc(n_rows * sizeof(float));
    float *first = xmalloc(n_rows * sizeof(float)), *first_ratio = xmalloc(n_rows * sizeof(float));
    row_metrics(t, rho, alr, first, first_ratio);

    buf_append(b, "{\"model\":", 9);
    put_string(b, info->model ? info->model : "");
    put_key(b, "kvlab_command");
    put_string(b, info->command_line ? info->command_line : "");
    buf_printf(b, ",\"n_prompt\":%d,\"n_gen\":%lld,\"n_kv_heads\":%lld,\"kv_bytes_per_token\":%lld",
               n_prompt, (long long)(P - n_prompt), (long long)KV, (long long)info->kv_bytes_per_token);
    buf_printf(b, ",\"bytes_per_row\":%zu", trace_page_row_bytes((int)P));
    put_key(b, "page_bytes");
    *page_bytes_at = b->len;
    buf_printf(b, "%-16s", "0");
    put_key(b, "layers");
    put_ints(b, t->layers.data, NL);
    put_key(b, "heads");
    put_ints(b, t->heads.data, NH);
    put_key(b, "kv_head");
    put_ints(b, t->kv_head.data, NH);
    put_key(b, "query_pos");
    put_ints(b, t->query_pos.data, Q);
    put_key(b, "ids");
    put_ints(b, t->ids.data, P);
    put_key(b, "tokens");
    put_tokens(b, t, info->tok);
    put_key(b, "policy");
    if (info->policy_json) put_json(b, info->policy_json);
    else buf_append(b, "null", 4);
    size_t data_start = b->len;
    put_key(b, "attn");
    put_base64(b, t->attn.data, (size_t)t->attn.count * sizeof(float));
    put_key(b, "key_norm");
    put_base64(b, t->key_norm.data, (size_t)t->key_norm.count * sizeof(float));
    put_key(b, "value_norm");
    put_base64(b, t->value_norm.data, (size_t)t->value_norm.count * sizeof(float));
    put_key(b, "metrics");
    buf_append(b, "{\"spearman\":", 12);
    put_base64(b, rho, n_rows * sizeof(float));
    put_key(b, "alr_per_n");
    put_base64(b, alr, n_rows * sizeof(float));
    put_key(b, "first_attn");
    put_base64(b, first, n_rows * sizeof(float));
    put_key(b, "first_norm_ratio");
    put_base64(b, first_ratio, n_rows * sizeof(float));
    buf_append(b, "}", 1);
    if (t->with_policy) {
        put_key(b, "score");
        put_base64(b, t->score.data, (size_t)t->score.count * sizeof(float));
        put_key(b, "evicted_at");
        put_base64(b, t->evicted_at.data, (size_t)t->evicted_at.count * sizeof(int));
        put_key(b, "kv_bytes");
        buf_append(b, "[", 1);
        const int64_t *kvb = t->kv_bytes.data;
        for (int64_t i = 0; i < t->kv_bytes.count; i++) buf_printf(b, i ? ",%lld" : "%lld", (long long)kvb[i]);
        buf_append(b, "]", 1);
    } else
        buf_printf(b, ",\"score\":null,\"evicted_at\":null,\"kv_bytes\":null");
    buf_printf(b, ",\"data_bytes\":%zu}", b->len - data_start);
    free(rho); free(alr); free(first); free(first_ratio);
}

int trace_page_write(const char *npz_path, const TracePageInfo *info, size_t max_bytes, const char *html_path, Err *err) {
    const char *page = kvlab_trace_page_html, *marker = strstr(page, DATA_MARKER);
    if (!marker) return err_set(err, "trace page: the built-in template has no data marker (a build problem)");
    TraceArrays t;
    if (read_arrays(npz_path, &t, err) != 0) return -1;
    Buf b = {0};
    buf_append(&b, page, (size_t)(marker - page));
    buf_append(&b, "const TRACE = ", 14);
    size_t page_bytes_at;
    put_data(&b, &t, info, &page_bytes_at);
    buf_append(&b, ";", 1);
    const char *rest = marker + strlen(DATA_MARKER);
    buf_append(&b, rest, strlen(rest));
    char total[17];
    snprintf(total, sizeof total, "%-16zu", b.len);
    memcpy(b.data + page_bytes_at, total, 16);
    free_arrays(&t);
    if (b.len > max_bytes) {
        char need[32], limit[32];
        err_set(err, "--html-max-bytes: this page needs %zu bytes (%s), more than the limit %zu (%s): "
                "trace fewer --layers/--heads/--steps or raise the limit", b.len,
                format_bytes((double)b.len, need, sizeof need), max_bytes, format_bytes((double)max_bytes, limit, sizeof limit));
        buf_free(&b);
        return -1;
    }

    AtomicFile af;
    int rc = -1;
    if (atomic_open(&af, html_path, err) == 0) {
        if (fwrite(b.data, 1, b.len, af.f) != b.len) {
            atomic_abort(&af);
            err_set(err, "%s: write failed", html_path);
        } else
            rc = atomic_commit(&af, err);
    }
    buf_free(&b);
    return rc;
}

static const char *meta_string(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int meta_int(const cJSON *obj, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNumber(v) ? v->valueint : 0;
}

int trace_page_write_run(const char *run_dir, const cJSON *meta, const Tokenizer *tok, size_t max_bytes,
                         const char *html_path, Err *err) {
    char npz[4200];
    path_join(npz, sizeof npz, run_dir, "trace.npz");
    int with_policy = npz_has(npz, "score", err);
    if (with_policy < 0) return -1;
    const cJSON *model = cJSON_GetObjectItemCaseSensitive(meta, "model");
    if (!cJSON_IsObject(model) || meta_int(model, "n_layers") <= 0)
        return err_set(err, "%s: meta.json has no model description (not a kvlab trace run?)", run_dir);
    /* a cache slot: key and value in the cache's dtype plus its position (kvcache_bytes_used);
     * runs from before meta.json named the dtype had an fp32 cache */
    DType kv_dtype = DTYPE_F32;
    const char *kv_dtype_name = meta_string(model, "kv_dtype");
    if (kv_dtype_name && dtype_parse(kv_dtype_name, &kv_dtype) != 0)
        return err_set(err, "%s: meta.json: model.kv_dtype '%s' is not a dtype", run_dir, kv_dtype_name);
    int64_t slot_bytes = 2 * (int64_t)meta_int(model, "head_dim") * (int64_t)dtype_size(kv_dtype) + (int64_t)sizeof(int);
    char *policy = with_policy ? cJSON_PrintUnformatted(cJSON_GetObjectItemCaseSensitive(meta, "policy")) : NULL;
    TracePageInfo info = {
        .model = meta_string(model, "path"),
        .command_line = meta_string(meta, "command_line"),
        .policy_json = policy,
        .tok = tok,
        .kv_bytes_per_token = (int64_t)meta_int(model, "n_layers") * meta_int(model, "n_kv_heads") * slot_bytes,
    };
    int rc = trace_page_write(npz, &info, max_bytes, html_path, err);
    free(policy);
    return rc;
}
