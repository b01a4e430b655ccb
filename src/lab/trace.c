/* trace.c — see trace.h. The tracer is an AttentionObserver that copies the
 * selected rows into one NaN-filled array sized up front (so memory is bounded
 * and known before the run starts), plus the key/value norms read from the
 * cache after every forward(). */
#include "lab/trace.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "simd/kernels.h"
#include "formats/npy.h"
#include "engine/numcheck.h"
#include "engine/ops.h"
#include "policy/policy.h"
#include "engine/sampler.h"

/* ---- the plan ------------------------------------------------------------------- */

int trace_plan_queries(const TracePlan *p, int *pos) {
    int first = (p->steps & TRACE_PREFILL) ? 0 : p->n_prompt;
    int end = (p->steps & TRACE_DECODE) ? p->n_prompt + p->n_gen : p->n_prompt;
    int every = p->every > 0 ? p->every : 1, q = 0;
    for (int x = first; x < end; x++)
        if ((end - 1 - x) % every == 0) {      /* counted back from the last candidate */
            if (pos) pos[q] = x;
            q++;
        }
    return q;
}

size_t trace_plan_bytes(const TracePlan *p, const Config *cfg) {
    size_t S = (size_t)p->n_seqs, P = (size_t)p->n_prompt + p->n_gen, Q = (size_t)trace_plan_queries(p, NULL);
    size_t attn = S * p->n_layers * p->n_heads * Q * P;
    size_t norms = 2 * S * p->n_layers * cfg->n_kv_heads * P;
    return (attn + norms + S * P) * sizeof(float);
}

/* ---- the tracer ----------------------------------------------------------------- */

struct Tracer {
    TracePlan plan;
    int *layers, *heads;          /* copies of the plan's lists */
    int L, H, KV, hd, group, vocab;
    int P, Q;
    int *layer_sel, *head_sel;    /* [L], [H]: index in the selection, or -1 */
    int *query_row;               /* [P]: row of the query at that position, or -1 */
    int *query_pos;               /* [Q] */
    float *attn, *key_norm, *value_norm;
    int *ids;                     /* [S, P] */
    int seq;                      /* the sequence being run */
    Policy *policy;               /* evicts from the traced cache (NULL: none) */
    NumGuard *guard;              /* checks each forward's logits (NULL: none) */
};

void tracer_set_policy(Tracer *t, Policy *p) { t->policy = p; }
void tracer_set_guard(Tracer *t, NumGuard *g) { t->guard = g; }

static int check_selection(const char *what, const int *v, int n, int limit, Err *err) {
    if (n <= 0) return err_set(err, "trace: no %s selected", what);
    for (int i = 0; i < n; i++) {
        if (v[i] < 0 || v[i] >= limit)
            return err_set(err, "--%s: %d is out of range (the model has %d: 0..%d)", what, v[i], limit, limit - 1);
        if (i > 0 && v[i] <= v[i - 1])
            return err_set(err, "--%s: the list must be ascending without repeats (%d after %d)", what, v[i], v[i - 1]);
    }
    return 0;
}

static int *index_of(const int *sel, int n_sel, int n_all) {
    int *idx = xmalloc((size_t)n_all * sizeof(int));
    for (int i = 0; i < n_all; i++) idx[i] = -1;
    for (int i = 0; i < n_sel; i++) idx[sel[i]] = i;
    return idx;
}

static float *nan_array(size_t n) {
    float *a = malloc(n * sizeof(float) + 1);
    if (a) for (size_t i = 0; i < n; i++) a[i] = NAN;
    return a;
}

Tracer *tracer_create(const Config *cfg, const TracePlan *plan, size_t max_bytes, Err *err) {
    if (check_selection("layers", plan->layers, plan->n_layers, cfg->n_layers, err) ||
        check_selection("heads", plan->heads, plan->n_heads, cfg->n_heads, err))
        return NULL;
    if (plan->n_prompt < 1 || plan->n_gen < 0 || plan->n_seqs < 1) {
        err_set(err, "trace: empty plan (%d prompt tokens, %d decode steps, %d sequences)",
                plan->n_prompt, plan->n_gen, plan->n_seqs);
        return NULL;
    }
    int Q = trace_plan_queries(plan, NULL);
    if (Q == 0) {
        err_set(err, "--steps: no query selected (%s rows requested, --gen %d)",
                plan->steps == TRACE_DECODE ? "decode" : "prefill", plan->n_gen);
        return NULL;
    }
    size_t need = trace_plan_bytes(plan, cfg);
    if (need > max_bytes) {
        char a[32], b[32];
        err_set(err, "--max-bytes: this selection needs %zu bytes (%s) of trace memory, more than the limit %zu (%s): "
                "select fewer --layers/--heads/--steps, a larger --every, or raise --max-bytes",
                need, format_bytes((double)need, a, sizeof a), max_bytes, format_bytes((double)max_bytes, b, sizeof b));
        return NULL;
    }
    Tracer *t = xcalloc(1, sizeof *t);
    t->plan = *plan;
    t->L = cfg->n_layers; t->H = cfg->n_heads; t->KV = cfg->n_kv_heads; t->hd = cfg->head_dim;
    t->group = cfg->n_heads / cfg->n_kv_heads; t->vocab = cfg->vocab_size;
    t->P = plan->n_prompt + plan->n_gen;
    t->Q = Q;
    t->layers = xmalloc((size_t)plan->n_layers * sizeof(int));
    memcpy(t->layers, plan->layers, (size_t)plan->n_layers * sizeof(int));
    t->heads = xmalloc((size_t)plan->n_heads * sizeof(int));
    memcpy(t->heads, plan->heads, (size_t)plan->n_heads * sizeof(int));
    t->plan.layers = t->layers;
    t->plan.heads = t->heads;
    t->layer_sel = index_of(t->layers, plan->n_layers, t->L);
    t->head_sel = index_of(t->heads, plan->n_heads, t->H);
    t->query_pos = xmalloc((size_t)Q * sizeof(int));
    trace_plan_queries(plan, t->query_pos);
    t->query_row = index_of(t->query_pos, Q, t->P);
    size_t S = (size_t)plan->n_seqs, NL = (size_t)plan->n_layers, NH = (size_t)plan->n_heads;
    t->attn = nan_array(S * NL * NH * Q * t->P);
    t->key_norm = nan_array(S * NL * t->KV * t->P);
    t->value_norm = nan_array(S * NL * t->KV * t->P);
    t->ids = xcalloc(S * t->P, sizeof(int));
    if (!t->attn || !t->key_norm || !t->value_norm) {
        tracer_free(t);
        err_set(err, "trace: out of memory for %zu bytes of trace", need);
        return NULL;
    }
    return t;
}

void tracer_free(Tracer *t) {
    if (!t) return;
    free(t->layers); free(t->heads); free(t->layer_sel); free(t->head_sel);
    free(t->query_row); free(t->query_pos);
    free(t->attn); free(t->key_norm); free(t->value_norm); free(t->ids);
    free(t);
}

/* The observer (several threads at once, each its own (layer, head, query):
 * they write disjoint rows of t->attn). Slot j holds the token at ORIGINAL
 * position key_pos[j]: the row is stored by position, so a trace lines up
 * with the sequence even when a policy has compacted the cache. */
static void tracer_observe(void *ctx, int layer, int head, int query_pos,
                           const float *probs, const int *key_pos, int n_keys) {
    Tracer *t = ctx;
    if (query_pos >= t->P) return;
    int li = t->layer_sel[layer], hi = t->head_sel[head], q = t->query_row[query_pos];
    if (li < 0 || hi < 0 || q < 0) return;
    size_t row = (((size_t)t->seq * t->plan.n_layers + li) * t->plan.n_heads + hi) * t->Q + q;
    float *out = t->attn + row * t->P;
    for (int j = 0; j < n_keys; j++)
        if (key_pos[j] >= 0 && key_pos[j] < t->P) out[key_pos[j]] = probs[j];
}

/* sqrt(Σ x²), as the l2 policy and the golden test take it (here of the
 * cached key: after RoPE with `true` positions; the policy's is before). */
static float l2_norm(const float *x, int n) {
    return sqrtf(kernels_get()->sum_squares(x, n));
}

/* ‖k‖ and ‖v‖ of every cached token of the selected layers not measured yet
 * (read after each forward(), so tokens a policy evicts later are measured too). */
static void record_norms(Tracer *t, const KVCache *cache) {
    for (int li = 0; li < t->plan.n_layers; li++)
        for (int g = 0; g < t->KV; g++) {
            const KVHead *kv = kvcache_head(cache, t->layers[li], g);
            size_t base = (((size_t)t->seq * t->plan.n_layers + li) * t->KV + g) * t->P;
            for (int slot = 0; slot < kv->len; slot++) {
                int p = kv->pos[slot];
                if (p < 0 || p >= t->P || !isnan(t->key_norm[base + p])) continue;
                t->key_norm[base + p] = l2_norm(kv->keys + (size_t)slot * t->hd, t->hd);
                t->value_norm[base + p] = l2_norm(kv->values + (size_t)slot * t->hd, t->hd);
            }
        }
}

/* One forward(), between the policy's two halves when there is one, so the
 * norms of this forward's tokens are recorded before the policy may evict
 * them. Our observer is added only when one of these positions is a recorded
 * query, the policy's only when it scores by attention (the engine's
 * observer-free attention path is faster). */
static int traced_forward(Tracer *t, Forward *f, KVCache *cache, const int *ids, int n,
                          const StepHook *hook, Err *err) {
    int p0 = cache->next_pos, wanted = 0;
    for (int p = p0; p < p0 + n && p < t->P && !wanted; p++) wanted = t->query_row[p] >= 0;
    AttentionObserver mine = { t, tracer_observe }, policy_obs;
    int policy_sees = policy_observer(t->policy, &policy_obs);
    if (policy_before_forward(t->policy, cache, n, err) != 0) return -1;
    if (wanted) forward_add_observer(f, &mine);
    if (policy_sees) forward_add_observer(f, &policy_obs);
    int rc = forward(f, cache, ids, n, NULL, err);
    forward_remove_observer(f, &mine);
    forward_remove_observer(f, &policy_obs);
    if (rc != 0) return -1;
    if (t->guard && numguard_check(t->guard, forward_last_logits(f), 1, err) != 0) return -1;
    record_norms(t, cache);
    if (policy_after_forward(t->policy, cache, p0, err) != 0) return -1;
    if (hook && hook->step) hook->step(hook->ctx, n);
    return 0;
}

int tracer_run(Tracer *t, Forward *f, KVCache *cache, const int *prompt, int seq_index,
               const StepHook *hook, Err *err) {
    if (seq_index < 0 || seq_index >= t->plan.n_seqs)
        return err_set(err, "trace: sequence %d outside the plan's %d", seq_index, t->plan.n_seqs);
    int n = t->plan.n_prompt, *ids = t->ids + (size_t)seq_index * t->P;
    memcpy(ids, prompt, (size_t)n * sizeof(int));
    t->seq = seq_index;
    kvcache_reset(cache);
    int rc = traced_forward(t, f, cache, ids, n, hook, err);
    for (int s = 0; rc == 0 && s < t->plan.n_gen; s++) {
        ids[n + s] = argmax(forward_last_logits(f), t->vocab);    /* greedy */
        rc = traced_forward(t, f, cache, &ids[n + s], 1, hook, err);
    }
    return rc;
}

int tracer_write_npz(const Tracer *t, const char *path, Err *err) {
    const TracePlan *p = &t->plan;
    int64_t S = p->n_seqs, NL = p->n_layers, NH = p->n_heads, Q = t->Q, P = t->P, KV = t->KV;
    int64_t attn_shape[5] = { S, NL, NH, Q, P }, norm_shape[4] = { S, NL, KV, P }, ids_shape[2] = { S, P };
    int *key_pos = xmalloc((size_t)P * sizeof(int)), *kv_head = xmalloc((size_t)NH * sizeof(int));
    for (int i = 0; i < P; i++) key_pos[i] = i;
    for (int i = 0; i < NH; i++) kv_head[i] = t->heads[i] / t->group;
    int n_prompt = p->n_prompt, rc = -1;
    NpzWriter *w = npz_open(path, err);
    if (w && npz_add(w, "attn", NPY_F32, 5, attn_shape, t->attn, err) == 0 &&
        npz_add(w, "key_norm", NPY_F32, 4, norm_shape, t->key_norm, err) == 0 &&
        npz_add(w, "value_norm", NPY_F32, 4, norm_shape, t->value_norm, err) == 0 &&
        npz_add(w, "query_pos", NPY_I32, 1, &Q, t->query_pos, err) == 0 &&
        npz_add(w, "key_pos", NPY_I32, 1, &P, key_pos, err) == 0 &&
        npz_add(w, "layers", NPY_I32, 1, &NL, t->layers, err) == 0 &&
        npz_add(w, "heads", NPY_I32, 1, &NH, t->heads, err) == 0 &&
        npz_add(w, "kv_head", NPY_I32, 1, &NH, kv_head, err) == 0 &&
        npz_add(w, "ids", NPY_I32, 2, ids_shape, t->ids, err) == 0 &&
        npz_add(w, "n_prompt", NPY_I32, 0, NULL, &n_prompt, err) == 0)
        rc = npz_close(w, err);
    else if (w)
        npz_abort(w);
    free(key_pos); free(kv_head);
    return rc;
}

/* ---- text chunks ------------------------------------------------------------------- */

/* Tokenize (without BOS) the first `bytes` bytes of text; *n_out tokens. */
static int *tokenize_prefix(const Tokenizer *tok, const char *text, size_t bytes, int *n_out, Err *err) {
    int cap = (int)(bytes + 16);
    int *ids = xmalloc((size_t)cap * sizeof(int));
    int n = tokenizer_encode_len(tok, text, bytes, 0, ids, cap, err);
    if (n < 0 || n > cap) { free(ids); if (n >= 0) err_set(err, "tokenizer: more tokens than bytes"); return NULL; }
    *n_out = n;
    return ids;
}

int *text_chunks(const Tokenizer *tok, const char *path, int chunk, int n_chunks, int *n_got, Err *err) {
    if (chunk < 2) { err_set(err, "--chunk: %d is too short (BOS + at least one token)", chunk); return NULL; }
    char *text;
    size_t size;
    if (read_file(path, &text, &size, err) != 0) return NULL;
    int64_t need = (int64_t)n_chunks * (chunk - 1);
    /* tokenize only a prefix of a long file: ~4 bytes a token, doubled until
     * enough (a margin of 16 tokens keeps the cut word out of the chunks) */
    size_t bytes = (size_t)need * 6 + 4096;
    int *toks = NULL, n = 0;
    for (;;) {
        if (bytes > size) bytes = size;
        free(toks);
        toks = tokenize_prefix(tok, text, bytes, &n, err);
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

/* ---- progress and input -------------------------------------------------------------- */

static void progress_step(void *ctx, int n) { progress_line_add(ctx, n); }
StepHook progress_hook(ProgressLine *p) { StepHook h = { p, progress_step }; return h; }

int trace_input_option(TraceInput *in, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) in->text = cli_value(argc, argv, i);
    else if (!strcmp(a, "--ids")) in->ids_str = cli_value(argc, argv, i);
    else if (!strcmp(a, "-f") || !strcmp(a, "--file")) in->file = cli_value(argc, argv, i);
    else if (!strcmp(a, "--chunk")) in->chunk = (int)cli_int(a, cli_value(argc, argv, i), 2, 1 << 22);
    else if (!strcmp(a, "--chunks")) in->chunks = (int)cli_int(a, cli_value(argc, argv, i), 1, 1 << 20);
    else return 0;
    return 1;
}

int *trace_input_load(const TraceInput *in, const char *command, const CommonOpts *co, int check_chunk,
                      Model *m, Tokenizer **tok, int *ctx, int *n_seqs, int *seq_len) {
    common_load_model(co, m);
    *tok = (in->text || in->file) ? common_load_tokenizer(co, m) : NULL;
    *ctx = common_ctx(co, m);
    if (!in->file) {
        *n_seqs = 1;
        return common_prompt_ids(m, *tok, in->text, in->ids_str, *ctx, seq_len);
    }
    if (check_chunk && in->chunk > *ctx) die("--chunk: %d tokens exceed the context of %d (--ctx)", in->chunk, *ctx);
    Err err;
    int *ids = text_chunks(*tok, in->file, in->chunk, in->chunks, n_seqs, &err);
    if (!ids) die("%s", err.msg);
    if (*n_seqs < in->chunks)
        fprintf(stderr, "%s: %s holds only %d whole chunks of %d tokens (asked --chunks %d)\n",
                command, in->file, *n_seqs, in->chunk, in->chunks);
    *seq_len = in->chunk;
    return ids;
}

void trace_input_knobs(cJSON *knobs, const TraceInput *in) {
    cJSON_AddStringToObject(knobs, "input", in->file ? "file" : in->text ? "prompt" : "ids");
    if (in->file) cJSON_AddStringToObject(knobs, "file", in->file);
    if (in->text) cJSON_AddStringToObject(knobs, "prompt", in->text);
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

int make_dirs(const char *path, Err *err) {
    char buf[4096];
    if (snprintf(buf, sizeof buf, "%s", path) >= (int)sizeof buf) return err_set(err, "%s: path too long", path);
    for (char *p = buf + 1; ; p++) {
        if (*p == '/' || *p == '\0') {
            char saved = *p;
            *p = '\0';
            if (mkdir(buf, 0777) != 0 && errno != EEXIST)
                return err_set(err, "%s: cannot create directory: %s", buf, strerror(errno));
            *p = saved;
            if (!saved) break;
        }
    }
    if (!path_is_dir(path)) return err_set(err, "%s: exists and is not a directory", path);
    return 0;
}
