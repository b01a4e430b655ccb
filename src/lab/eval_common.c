/* eval_common.c — what `kvlab ppl`, `kvlab passkey` and `kvlab needle` share
 * (eval.h): the seeded streams, greedy decoding after a compressed prefill,
 * the shared options and config.json's common part. */
#include "lab/eval.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "base/args.h"
#include "lab/progress.h"
#include "lab/runlog.h"
#include "lab/runmeta.h"
#include "engine/sampler.h"
#include "base/splitmix64.h"

/* ---- randomness -------------------------------------------------------------------- */

EvalRng eval_rng(uint64_t seed, uint64_t stream, uint64_t unit) {
    EvalRng r = { splitmix64(splitmix64(splitmix64(seed) ^ stream) ^ unit) };
    return r;
}

uint64_t eval_next(EvalRng *r) { return splitmix64_next(&r->s); }

double eval_uniform(EvalRng *r) { return splitmix64_unit(&r->s); }

/* ---- decoding ---------------------------------------------------------------------- */

int eval_greedy(Policy *p, Forward *f, KVCache *c, int vocab, int eos_id, int max_new, int ctx, int *out, Err *err) {
    int n = 0;
    while (n < max_new) {
        const float *logits = forward_last_logits(f);
        int next = argmax(logits, vocab);
        if (next == eos_id) break;
        out[n++] = next;
        if (n == max_new || c->next_pos >= ctx) break;
        if (policy_forward(p, f, c, &next, 1, NULL, err) != 0) return -1;
    }
    return n;
}

double eval_kv_per_head(const KVCache *c) {
    long heads = (long)c->n_layers * c->n_kv_heads;
    return heads ? (double)kvcache_slots_used(c) / (double)heads : 0.0;
}

/* ---- options ----------------------------------------------------------------------- */

void eval_opts_defaults(EvalOpts *o) {
    memset(o, 0, sizeof *o);
    policy_defaults(&o->po);
}

int eval_option(EvalOpts *o, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    if (!strcmp(a, "-o") || !strcmp(a, "--output")) o->out_dir = cli_value(argc, argv, i);
    else if (!strcmp(a, "--resume")) o->resume = 1;
    else return policy_option(&o->po, argc, argv, i);
    return 1;
}

void eval_opts_finish(EvalOpts *o, const char *command, Schedule default_schedule) {
    if (!o->out_dir) die("%s: -o RUN_DIR is required (kvlab %s --help)", command, command);
    if (o->po.schedule == SCHED_DEFAULT && default_schedule != SCHED_DEFAULT) o->po.schedule = default_schedule;
    policy_cli_finish(&o->po);
}

/* ---- config.json ------------------------------------------------------------------- */

cJSON *eval_config_new(const char *command, const EvalOpts *o, const Model *m, const char *tokenizer_path, int ctx) {
    cJSON *c = cJSON_CreateObject();
    cJSON_AddStringToObject(c, "command", command);
    cJSON *model = runlog_file_identity(m->path);
    cJSON_ReplaceItemInObject(model, "bytes", cJSON_CreateNumber((double)m->file_bytes));
    cJSON_AddStringToObject(model, "compute_dtype", dtype_name(m->compute_dtype));
    /* the engine's choices, named only when not the defaults (older run directories resume as they are) */
    DType kv_dtype;
    AttentionPath attention;
    forward_defaults(&kv_dtype, &attention);
    if (kv_dtype != DTYPE_F32) cJSON_AddStringToObject(model, "kv_dtype", dtype_name(kv_dtype));
    if (attention != ATTENTION_EXACT) cJSON_AddStringToObject(model, "attention", attention_path_name(attention));
    cJSON_AddItemToObject(c, "model", model);
    cJSON_AddItemToObject(c, "tokenizer", runlog_file_identity(tokenizer_path));
    cJSON_AddNumberToObject(c, "ctx", ctx);
    char *pj = policy_json(&o->po);
    cJSON_AddItemToObject(c, "policy", cJSON_Parse(pj));
    free(pj);
    cJSON_AddItemToObject(c, "knobs", cJSON_CreateObject());
    return c;
}

cJSON *eval_config_knobs(cJSON *config) { return cJSON_GetObjectItem(config, "knobs"); }

int eval_write_text(const char *dir, const char *name, const char *text, Err *err) {
    char path[4200];
    path_join(path, sizeof path, dir, name);
    AtomicFile af;
    if (atomic_open(&af, path, err) != 0) return -1;
    fputs(text, af.f);
    return atomic_commit(&af, err);
}

/* ---- passkey and needle ------------------------------------------------------------ */

void eval_engine_start(EvalEngine *e, const EvalOpts *o, int batch) {
    Err err;
    if (forward_cache_init(&e->m, &e->cache, e->ctx, &err) != 0) die("%s", err.msg);
    e->f = forward_create(&e->m, batch);
    e->guard = numguard_attach(e->f, &e->m);
    if (!(e->policy = policy_create(&o->po, &e->m.cfg, e->ctx, &err))) die("%s", err.msg);
}

void eval_engine_free(EvalEngine *e) {
    buf_free(&e->head_rows);
    policy_free(e->policy);
    numguard_free(e->guard);
    forward_free(e->f);
    kvcache_free(&e->cache);
    tokenizer_free(e->tok);
    model_free(&e->m);
}

/* The budget each (layer, KV head) got at the eviction after the prompt and the
 * slots it holds now: what Ada-KV's head-wise allocation gave each head. */
static void head_rows(EvalEngine *e) {
    e->head_rows.len = 0;
    if (e->head_rows.data) e->head_rows.data[0] = '\0';
    if (!policy_evicts(e->policy)) return;
    const int *budget = policy_last_head_budgets(e->policy);
    int KV = e->cache.n_kv_heads;
    for (int l = 0; l < e->cache.n_layers; l++)
        for (int g = 0; g < KV; g++) {
            int b = budget[l * KV + g];
            buf_printf(&e->head_rows, "%d,%d,", l, g);
            if (b >= 0 && b != INT_MAX) buf_printf(&e->head_rows, "%d", b);
            buf_printf(&e->head_rows, ",%d\n", kvcache_head(&e->cache, l, g)->len);
        }
}

char *eval_answer(EvalEngine *e, const int *ids, int n, int max_new, double *kv) {
    Err err;
    int *ans = xmalloc((size_t)max_new * sizeof(int));
    kvcache_reset(&e->cache);
    if (policy_forward(e->policy, e->f, &e->cache, ids, n, NULL, &err) != 0) die("%s", err.msg);
    if (numguard_check(e->guard, forward_last_logits(e->f), 1, &err) != 0) die("%s", err.msg);
    *kv = eval_kv_per_head(&e->cache);
    head_rows(e);
    int n_ans = eval_greedy(e->policy, e->f, &e->cache, e->m.cfg.vocab_size, e->m.cfg.eos_id, max_new, e->ctx, ans, &err);
    if (n_ans < 0) die("%s", err.msg);
    /* the last answer token's logits: a NaN appearing during decoding shows here */
    if (numguard_check(e->guard, forward_last_logits(e->f), 1, &err) != 0) die("%s", err.msg);
    char *answer = tokenizer_decode(e->tok, ans, n_ans, &err);
    if (!answer) die("%s", err.msg);
    free(ans);
    return answer;
}

RunLog *eval_log_open(const char *command, const EvalOpts *o, const EvalEngine *e, const char *config,
                      const char *columns, long n_units, int argc, char **argv, cJSON **meta) {
    Err err;
    RunLogSpec spec = { o->out_dir, config, columns, policy_evicts(e->policy) ? EVAL_HEAD_COLUMNS : NULL, n_units,
                        o->resume };
    RunLog *log = runlog_open(&spec, &err);
    if (!log) die("%s", err.msg);
    *meta = runlog_meta_new(command, argc, argv, &e->m, &o->po, config);
    return log;
}

void eval_run_units(RunLog *log, const EvalEngine *e, const char *command, const char *unit_name, long n_units,
                    EvalUnitFn run, const void *opts, void *state) {
    Err err;
    ProgressLine pl;
    progress_line_start(&pl, command, unit_name, n_units, runlog_count(log));
    for (long u = 0; u < n_units; u++) {
        if (runlog_done(log, u)) continue;
        double t0 = now_seconds();
        Buf row = { 0 };
        run(opts, state, u, &row);
        const char *details = policy_evicts(e->policy) ? e->head_rows.data : NULL;
        if (runlog_append(log, u, row.data, details, now_seconds() - t0, &err) != 0) die("%s", err.msg);
        buf_free(&row);
        progress_line_add(&pl, 1);
    }
    progress_line_end(&pl);
}

void eval_write_summaries(RunLog *log, const char *csv, const cJSON *summary) {
    Err err;
    char *json = cJSON_Print(summary);
    Buf j = { 0 };
    buf_printf(&j, "%s\n", json);
    const char *dir = runlog_dir(log);
    if (runlog_write_results(log, "results.csv", &err) != 0 || eval_write_text(dir, "summary.csv", csv, &err) != 0 ||
        eval_write_text(dir, "summary.json", j.data, &err) != 0)
        die("%s", err.msg);
    buf_free(&j);
    free(json);
}

/* meta.json "head_budgets": the mean budget and slots of each (layer, KV head)
 * over the units done ([n_layers][n_kv_heads]; null where never evicted). */
static cJSON *head_means(const RunLog *log, long n_units, int n_layers, int n_kv_heads) {
    int col_layer = runlog_detail_column(log, "layer"), col_head = runlog_detail_column(log, "kv_head");
    int col_budget = runlog_detail_column(log, "budget"), col_slots = runlog_detail_column(log, "slots");
    size_t n = (size_t)n_layers * n_kv_heads;
    double *budget = xcalloc(n, sizeof(double)), *slots = xcalloc(n, sizeof(double));
    long *n_budget = xcalloc(n, sizeof(long)), *n_slots = xcalloc(n, sizeof(long));
    for (long u = 0; u < n_units; u++) {
        if (!runlog_done(log, u)) continue;
        for (int r = 0; r < runlog_detail_count(log, u); r++) {
            int l = atoi(runlog_detail_field(log, u, r, col_layer)), g = atoi(runlog_detail_field(log, u, r, col_head));
            if (l < 0 || l >= n_layers || g < 0 || g >= n_kv_heads) continue;
            const char *b = runlog_detail_field(log, u, r, col_budget);
            size_t i = (size_t)l * n_kv_heads + g;
            if (b && *b) { budget[i] += atof(b); n_budget[i]++; }
            slots[i] += atof(runlog_detail_field(log, u, r, col_slots));
            n_slots[i]++;
        }
    }
    cJSON *j = cJSON_CreateObject(), *jb = cJSON_AddArrayToObject(j, "mean_budget"), *js = cJSON_AddArrayToObject(j, "mean_slots");
    for (int l = 0; l < n_layers; l++) {
        cJSON *rb = cJSON_CreateArray(), *rs = cJSON_CreateArray();
        for (int g = 0; g < n_kv_heads; g++) {
            size_t i = (size_t)l * n_kv_heads + g;
            cJSON_AddItemToArray(rb, n_budget[i] ? cJSON_CreateNumber(budget[i] / n_budget[i]) : cJSON_CreateNull());
            cJSON_AddItemToArray(rs, n_slots[i] ? cJSON_CreateNumber(slots[i] / n_slots[i]) : cJSON_CreateNull());
        }
        cJSON_AddItemToArray(jb, rb);
        cJSON_AddItemToArray(js, rs);
    }
    free(budget); free(slots); free(n_budget); free(n_slots);
    return j;
}

void eval_finish_meta(RunLog *log, const EvalEngine *e, cJSON *meta, cJSON *summary, const char *results_what,
                      const char *summary_what, double t_start) {
    Err err;
    cJSON_AddItemToObject(meta, "summary", summary);
    runmeta_add_output(meta, "results.csv", results_what);
    runmeta_add_output(meta, "summary.csv", summary_what);
    if (policy_evicts(e->policy)) {
        if (runlog_write_details(log, "head_budgets.csv", &err) != 0) die("%s", err.msg);
        cJSON_AddItemToObject(meta, "head_budgets", head_means(log, runlog_units(log), e->cache.n_layers,
                                                               e->cache.n_kv_heads));
        runmeta_add_output(meta, "head_budgets.csv", "per trial: each (layer, KV head)'s budget at the eviction after "
                           "the prompt (empty: none then) and the slots it holds after it");
    }
    if (runlog_finish(log, meta, t_start, &err) != 0) die("%s", err.msg);
}

/* ---- the length x depth grid -------------------------------------------------------- */

void grid_init(Grid *g, const int *lengths, int n_lengths, const int *depths, int n_depths, int n_values) {
    memset(g, 0, sizeof *g);
    g->lengths = lengths;
    g->depths = depths;
    g->n_lengths = n_lengths;
    g->n_depths = n_depths;
    g->n_values = n_values;
    g->cell = xcalloc((size_t)n_lengths * (size_t)n_depths, sizeof *g->cell);
    g->by_length = xcalloc((size_t)n_lengths, sizeof *g->by_length);
    g->by_depth = xcalloc((size_t)n_depths, sizeof *g->by_depth);
}

void grid_add(Grid *g, int length_index, int depth_index, const double *values) {
    GridMean *targets[4] = { &g->cell[length_index * g->n_depths + depth_index], &g->by_length[length_index],
                             &g->by_depth[depth_index], &g->all };
    for (int t = 0; t < 4; t++) {
        for (int v = 0; v < g->n_values; v++) targets[t]->sum[v] += values[v];
        targets[t]->n++;
    }
}

static void mean_row(Buf *b, const char *length, const char *depth, const GridMean *m, int n_values) {
    if (!m->n) return;
    buf_printf(b, "%s,%s,%ld", length, depth, m->n);
    for (int v = 0; v < n_values; v++) buf_printf(b, ",%.6g", m->sum[v] / m->n);
    buf_printf(b, "\n");
}

char *grid_csv(const Grid *g, const char *header) {
    Buf b = { 0 };
    char ls[32], ds[32];
    buf_printf(&b, "%s\n", header);
    for (int li = 0; li < g->n_lengths; li++)
        for (int di = 0; di < g->n_depths; di++) {
            snprintf(ls, sizeof ls, "%d", g->lengths[li]);
            snprintf(ds, sizeof ds, "%d", g->depths[di]);
            mean_row(&b, ls, ds, &g->cell[li * g->n_depths + di], g->n_values);
        }
    for (int li = 0; li < g->n_lengths; li++) {
        snprintf(ls, sizeof ls, "%d", g->lengths[li]);
        mean_row(&b, ls, "all", &g->by_length[li], g->n_values);
    }
    for (int di = 0; di < g->n_depths; di++) {
        snprintf(ds, sizeof ds, "%d", g->depths[di]);
        mean_row(&b, "all", ds, &g->by_depth[di], g->n_values);
    }
    mean_row(&b, "all", "all", &g->all, g->n_values);
    return b.data;
}

void grid_free(Grid *g) {
    free(g->cell);
    free(g->by_length);
    free(g->by_depth);
    memset(g, 0, sizeof *g);
}
