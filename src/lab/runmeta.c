/* runmeta.c — see runmeta.h. */
#include "lab/runmeta.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "engine/forward.h"
#include "engine/ops.h"
#include "simd/kernels.h"

/* ---- text chunks ------------------------------------------------------------------- */

/* Tokenize (without BOS) the first `bytes` bytes of text (from file `path`); *n_out tokens. */
static int *tokenize_prefix(const Tokenizer *tok, const char *path, const char *text, size_t bytes, int *n_out, Err *err) {
    int cap = (int)(bytes + 16);
    int *ids = xmalloc((size_t)cap * sizeof(int));
    int n = tokenizer_encode_len(tok, text, bytes, 0, ids, cap, err);
    if (n > cap)   /* a token is at least one byte, except byte-fallback pieces of a replaced character */
        err_set(err, "%s: the tokenizer made %d tokens of %zu bytes, more tokens than bytes "
                "(an invalid or unknown character became byte-fallback tokens)", path, n, bytes);
    if (n < 0 || n > cap) { free(ids); return NULL; }
    *n_out = n;
    return ids;
}

int *text_chunks(const Tokenizer *tok, const char *path, int chunk, int n_chunks, int *n_got, Err *err) {
    if (chunk < 2) { err_set(err, "--chunk: %d is too short (BOS + at least one token)", chunk); return NULL; }
    char *text;
    size_t size;
    if (read_text_file(path, &text, &size, err) != 0) return NULL;
    int64_t need = (int64_t)n_chunks * (chunk - 1);
    /* tokenize only a prefix of a long file: ~4 bytes a token, doubled until
     * enough (a margin of 16 tokens keeps the cut word out of the chunks) */
    size_t bytes = (size_t)need * 6 + 4096;
    int *toks = NULL, n = 0;
    for (;;) {
        if (bytes > size) bytes = size;
        free(toks);
        toks = tokenize_prefix(tok, path, text, bytes, &n, err);
        if (!toks) { free(text); return NULL; }
        if (bytes == size || n >= need + 16) break;
        bytes *= 2;
    }
    free(text);
    if (bytes < size) n -= 16;
    int got = (int)(n / (chunk - 1) < n_chunks ? n / (chunk - 1) : n_chunks);
    if (got < 1) {
        free(toks);
        err_set(err, "%s: %d tokens, fewer than one --chunk of %d (BOS + %d)", path, n, chunk, chunk - 1);
        return NULL;
    }
    int *out = xmalloc((size_t)got * chunk * sizeof(int));
    for (int c = 0; c < got; c++) {
        out[(size_t)c * chunk] = tokenizer_bos_id(tok);
        memcpy(out + (size_t)c * chunk + 1, toks + (size_t)c * (chunk - 1), (size_t)(chunk - 1) * sizeof(int));
    }
    free(toks);
    *n_got = got;
    return out;
}

/* ---- sizes ------------------------------------------------------------------------- */

int64_t parse_bytes(const char *s) {
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || errno == ERANGE || !(v >= 0)) return -1;
    double mult = 1;
    switch (*end) {
    case 'k': case 'K': mult = 1024.0; end++; break;
    case 'm': case 'M': mult = 1024.0 * 1024; end++; break;
    case 'g': case 'G': mult = 1024.0 * 1024 * 1024; end++; break;
    case 't': case 'T': mult = 1024.0 * 1024 * 1024 * 1024; end++; break;
    default: break;
    }
    if (mult > 1 && *end == 'i') end++;
    if (*end == 'B' || *end == 'b') end++;
    if (*end) return -1;
    double b = v * mult;
    return b > 9.2e18 ? -1 : (int64_t)b;
}

const char *format_bytes(double bytes, char *buf, size_t size) {
    static const char *units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    int u = 0;
    while (bytes >= 1024 && u < 4) { bytes /= 1024; u++; }
    snprintf(buf, size, u ? "%.1f %s" : "%.0f %s", bytes, units[u]);
    return buf;
}

/* ---- meta.json ---------------------------------------------------------------------- */

static void git_describe(char *out, size_t size) {
    char exe[4096] = "", dir[4096], cmd[4400];
    out[0] = '\0';
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) return;
    exe[n] = '\0';
    path_dirname(dir, sizeof dir, exe);
    if (strchr(dir, '\'')) return;
    snprintf(cmd, sizeof cmd, "git -C '%s' describe --always --dirty --tags 2>/dev/null", dir);
    FILE *p = popen(cmd, "r");
    if (!p) return;
    if (fgets(out, (int)size, p)) out[strcspn(out, "\r\n")] = '\0';
    else out[0] = '\0';
    pclose(p);
}

static void utc_now(char *buf, size_t size) {
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(buf, size, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

static cJSON *model_json(const Model *m) {
    cJSON *o = cJSON_CreateObject();
    const Config *c = &m->cfg;
    struct stat st;
    cJSON_AddStringToObject(o, "path", m->path);
    cJSON_AddStringToObject(o, "format", m->format);
    cJSON_AddNumberToObject(o, "file_bytes", (double)m->file_bytes);
    if (stat(m->path, &st) == 0) cJSON_AddNumberToObject(o, "mtime", (double)st.st_mtime);
    cJSON_AddNumberToObject(o, "n_params", (double)m->n_params);
    cJSON_AddStringToObject(o, "file_dtype", dtype_name(m->file_dtype));
    cJSON_AddStringToObject(o, "compute_dtype", dtype_name(m->compute_dtype));
    /* how the KV cache stores keys and values (--kv-dtype): the bytes a cached token takes */
    DType kv_dtype;
    AttentionPath attention;
    forward_defaults(&kv_dtype, &attention);
    cJSON_AddStringToObject(o, "kv_dtype", dtype_name(kv_dtype));
    cJSON_AddNumberToObject(o, "n_layers", c->n_layers);
    cJSON_AddNumberToObject(o, "n_heads", c->n_heads);
    cJSON_AddNumberToObject(o, "n_kv_heads", c->n_kv_heads);
    cJSON_AddNumberToObject(o, "head_dim", c->head_dim);
    cJSON_AddNumberToObject(o, "dim", c->dim);
    cJSON_AddNumberToObject(o, "vocab_size", c->vocab_size);
    cJSON_AddNumberToObject(o, "max_seq_len", c->max_seq_len);
    return o;
}

cJSON *runmeta_new(const char *command, int argc, char **argv, const Model *m) {
    cJSON *meta = cJSON_CreateObject();
    char buf[4096], line[16384] = "kvlab";
    size_t len = strlen(line);
    cJSON *args = cJSON_CreateArray();
    for (int i = 0; i < argc; i++) {
        cJSON_AddItemToArray(args, cJSON_CreateString(argv[i]));
        len += (size_t)snprintf(line + len, len < sizeof line ? sizeof line - len : 0,
                                strpbrk(argv[i], " \t'\"") ? " '%s'" : " %s", argv[i]);
        if (len >= sizeof line) len = sizeof line - 1;
    }
    cJSON_AddStringToObject(meta, "command", command);
    cJSON_AddStringToObject(meta, "command_line", line);
    cJSON_AddItemToObject(meta, "argv", args);
    utc_now(buf, sizeof buf);
    cJSON_AddStringToObject(meta, "started_utc", buf);
    git_describe(buf, sizeof buf);
    if (buf[0]) cJSON_AddStringToObject(meta, "git_describe", buf);
    else cJSON_AddNullToObject(meta, "git_describe");
    cJSON_AddStringToObject(meta, "isa", kernels_get()->name);
    cJSON_AddNumberToObject(meta, "threads", ops_threads());
    if (gethostname(buf, sizeof buf) == 0) { buf[sizeof buf - 1] = '\0'; cJSON_AddStringToObject(meta, "host", buf); }
    if (m) cJSON_AddItemToObject(meta, "model", model_json(m));
    cJSON_AddItemToObject(meta, "knobs", cJSON_CreateObject());
    cJSON_AddItemToObject(meta, "outputs", cJSON_CreateObject());
    return meta;
}

cJSON *runmeta_knobs(cJSON *meta) { return cJSON_GetObjectItem(meta, "knobs"); }

void runmeta_add_output(cJSON *meta, const char *file, const char *what) {
    cJSON_AddStringToObject(cJSON_GetObjectItem(meta, "outputs"), file, what);
}

void runmeta_add_policy(cJSON *meta, const PolicyOpts *po) {
    char *json = policy_json(po);
    cJSON *p = json ? cJSON_Parse(json) : NULL;
    if (p) cJSON_AddItemToObject(meta, "policy", p);
    else cJSON_AddStringToObject(meta, "policy", json ? json : "?");
    free(json);
}

void runmeta_add_budgets(cJSON *meta, const Policy *p) {
    if (!p || policy_timing(p).decisions == 0) return;
    char *json = policy_budgets_json(p);
    cJSON *b = cJSON_Parse(json);
    if (b) cJSON_AddItemToObject(meta, "policy_budgets", b);
    free(json);
}

int runmeta_write(cJSON *meta, const char *run_dir, double t_start, Err *err) {
    char path[4200];
    cJSON_AddNumberToObject(meta, "wall_seconds", now_seconds() - t_start);
    char *text = cJSON_Print(meta);
    cJSON_Delete(meta);
    if (!text) return err_set(err, "meta.json: out of memory");
    path_join(path, sizeof path, run_dir, "meta.json");
    AtomicFile af;
    if (atomic_open(&af, path, err) != 0) { free(text); return -1; }
    fputs(text, af.f);
    fputc('\n', af.f);
    free(text);
    return atomic_commit(&af, err);
}

int run_dir_lock(OutLock *lock, const char *dir, Err *err) {
    char parent[4096];
    path_dirname(parent, sizeof parent, dir);
    if (make_dirs(parent, err) != 0) return -1;
    return outlock_acquire(lock, dir, err);
}
