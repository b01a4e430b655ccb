/* cmd_ppl.c — `kvlab ppl`: options, run directory, summaries; the
 * evaluation itself and its protocol are lab/eval_ppl.c. */
#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "lab/eval.h"
#include "lab/progress.h"
#include "lab/runlog.h"
#include "engine/sampler.h"
#include "lab/runmeta.h"
#include "lab/output_error.h"
#include "lab/sinks.h"

/* ---- the command --------------------------------------------------------------------- */

typedef struct {
    EvalOpts e;
    CommonOpts co;
    const char *text_path;
    int chunk, n_chunks, reference;
    int output_error;          /* --output-error */
} PplOpts;

static void help(void) {
    printf("usage: kvlab ppl -m MODEL -f TEXT -o RUN_DIR [--chunk N] [--chunks K] [policy options] [--resume]\n\n"
           "Perplexity with a compressed KV cache: each chunk = BOS + the next N-1 tokens of\n"
           "TEXT, decoded one token per forward from an empty cache, the policy's schedule applied after\n"
           "each step (the L2 paper / StreamingLLM protocol; the paper's: --policy l2 --keep-ratio K\n"
           "--schedule threshold:T). A full-cache run of the same tokens alongside gives KL(full || policy)\n"
           "and top-1 agreement per token.\n\n"
           "  -f, --text FILE      text to score (UTF-8)\n"
           "      --chunk N        tokens per chunk, BOS included [1024, at most the context]\n"
           "      --chunks K       chunks to score, from the start of the text [all whole chunks]\n"
           "      --no-reference   skip the full-cache run (no KL / agreement; half the time)\n"
           "      --output-error   also compare the attention OUTPUT with the full-cache run's, per decode\n"
           "                       step, layer and head: |o_policy - o_full| / |o_full| of each head's\n"
           "                       output before Wo, beside the attention mass lost and the KL of the\n"
           "                       logits; output_error.csv (mean, std, p95 per layer x head and per\n"
           "                       layer), output_error_steps.csv (per position), meta.json\n"
           "                       \"output_error\" (per layer mean and p95). Needs a policy that evicts\n"
           "                       and the reference; not with --resume (every value is held: 8 bytes\n"
           "                       per layer x head x token). It observes attention, so both runs take\n"
           "                       the exact attention path (--attention exact)\n"
           "  -o, --output DIR     run directory (see below)\n"
           "      --resume         continue an interrupted run in DIR: finished chunks are kept\n"
           COMMON_OPTS_HELP
           "\n"
           POLICY_OPTS_HELP
           "\n");
    policy_print_help(stdout);
    printf("\nRUN_DIR: results.csv (one row per chunk), tokens.csv (one row per predicted token),\n"
           "positions.csv (mean and cumulative NLL / perplexity per position over chunks), summary.csv,\n"
           "summary.json, config.json, meta.json (written last), log/ (the resumable append-only logs).\n"
           "meta.json's \"sinks\": the model's attention sinks per layer and head, measured once on the first\n"
           "chunk (full cache, up to 1024 tokens; docs/analyses.md).\n"
           "example: kvlab ppl -m ../shared/models/demo-25m -f ../shared/data/wikitext-2-raw-test.txt \\\n"
           "           --chunk 1024 --chunks 4 --policy l2 --keep-ratio 0.5 --schedule threshold:512 -o runs/l2\n");
    cli_print_file_notes(stdout, HELP_INPUTS | HELP_RUN_DIR);
}

static void parse(PplOpts *o, int argc, char **argv) {
    eval_opts_defaults(&o->e);
    common_defaults(&o->co);
    o->chunk = 0;
    o->n_chunks = 0;
    o->reference = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-f") || !strcmp(a, "--text")) o->text_path = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--chunk")) o->chunk = (int)cli_int(a, cli_value(argc, argv, &i), 2, 1 << 22);
        else if (!strcmp(a, "--chunks")) o->n_chunks = (int)cli_int(a, cli_value(argc, argv, &i), 1, 1 << 24);
        else if (!strcmp(a, "--no-reference")) o->reference = 0;
        else if (!strcmp(a, "--output-error")) o->output_error = 1;
        else if (!common_option(&o->co, argc, argv, &i) && !eval_option(&o->e, argc, argv, &i))
            die("ppl: unknown option '%s' (kvlab ppl --help)", a);
    }
    if (!o->text_path) die("ppl: -f TEXT is required (kvlab ppl --help)");
    if (!path_exists(o->text_path)) die("-f: %s: no such file", o->text_path);
    eval_opts_finish(&o->e, "ppl", SCHED_DEFAULT);
    if (o->output_error && !o->reference) die("--output-error: compares with the full-cache run; not with --no-reference");
    if (o->output_error && o->e.resume)
        die("--output-error: the percentiles need every step of every chunk in one run; not with --resume");
    if (o->e.po.schedule == SCHED_PREFILL && strcmp(o->e.po.name, "full") != 0)
        fprintf(stderr, "kvlab: ppl: warning: --schedule prefill (policy %s's default) evicts once, after the first "
                "token: give --schedule step, interval:N or threshold:T to compress while decoding\n", o->e.po.name);
}

#define PPL_COLUMNS "first_token,tokens,nll,ppl,accuracy,nll_ref,ppl_ref,accuracy_ref,kl,top1_agree,kv_mean,kv_final,kv_fraction"
#define PPL_DETAIL_COLUMNS "pos,target,nll,nll_ref,kl,correct,agree,kv"

/* "" for a missing reference value, so pandas reads NaN. */
static void put_num(Buf *b, const char *sep, double v) {
    if (isnan(v)) buf_printf(b, "%s", sep);
    else buf_printf(b, "%s%.10g", sep, v);
}

/* One chunk's row and per-token rows. */
static void chunk_rows(const PplToken *t, int n, const int *ids, long first_token, Buf *row, Buf *det) {
    double nll = 0, nll_ref = 0, kl = 0, kv = 0, frac = 0;
    long correct = 0, correct_ref = 0, agree = 0;
    for (int i = 0; i < n; i++) {
        nll += t[i].nll; nll_ref += t[i].nll_ref; kl += t[i].kl;
        correct += t[i].correct; correct_ref += t[i].correct_ref; agree += t[i].agree;
        kv += t[i].kv; frac += t[i].kv / (i + 1);
        buf_printf(det, "%d,%d,%.10g", i + 1, ids[i + 1], t[i].nll);
        put_num(det, ",", t[i].nll_ref);
        put_num(det, ",", t[i].kl);
        buf_printf(det, ",%d", t[i].correct);
        if (t[i].agree < 0) buf_printf(det, ",");
        else buf_printf(det, ",%d", t[i].agree);
        buf_printf(det, ",%.6g\n", t[i].kv);
    }
    int has_ref = !isnan(nll_ref);
    buf_printf(row, "%ld,%d,%.10g,%.10g,%.10g", first_token, n, nll / n, exp(nll / n), (double)correct / n);
    put_num(row, ",", has_ref ? nll_ref / n : NAN);
    put_num(row, ",", has_ref ? exp(nll_ref / n) : NAN);
    put_num(row, ",", has_ref ? (double)correct_ref / n : NAN);
    put_num(row, ",", has_ref ? kl / n : NAN);
    put_num(row, ",", has_ref ? (double)agree / n : NAN);
    buf_printf(row, ",%.6g,%.6g,%.6g", kv / n, t[n - 1].kv, frac / n);
}

static void tick(void *ctx) { progress_line_add(ctx, 1); }

typedef struct {
    Model m;
    Tokenizer *tok;
    int ctx, n_chunks;
    int *chunks;               /* [n_chunks * chunk] */
    Forward *f, *f_ref;
    KVCache cache, cache_ref;
    Policy *policy;
    NumGuard *guard;       /* checks the policy run's logits after every token */
    OutputError *output_error;   /* --output-error, else NULL */
} PplState;

static void setup(PplOpts *o, PplState *s) {
    Err err;
    common_load(&o->co, &s->m, &s->tok, &s->ctx);
    if (o->chunk == 0) o->chunk = s->ctx < 1024 ? s->ctx : 1024;
    if (o->chunk > s->ctx) die("--chunk %d: longer than the context (%d tokens; --ctx)", o->chunk, s->ctx);
    s->chunks = text_chunks(s->tok, o->text_path, o->chunk, o->n_chunks ? o->n_chunks : INT_MAX, &s->n_chunks, &err);
    if (!s->chunks) die("%s", err.msg);
    if (o->n_chunks && s->n_chunks < o->n_chunks)
        fprintf(stderr, "kvlab: %s: only %d whole chunks of %d tokens (asked for %d)\n", o->text_path,
                s->n_chunks, o->chunk, o->n_chunks);
    if (forward_cache_init(&s->m, &s->cache, o->chunk, &err) != 0) die("%s", err.msg);
    s->f = forward_create(&s->m, 1);
    s->guard = numguard_attach(s->f, &s->m);
    s->policy = policy_create(&o->e.po, &s->m.cfg, o->chunk, &err);
    if (!s->policy) die("%s", err.msg);
    int never_evicts = !strcmp(o->e.po.name, "full") && !o->e.po.positions_shifted;
    if (o->reference && !never_evicts) {
        if (forward_cache_init(&s->m, &s->cache_ref, o->chunk, &err) != 0) die("%s", err.msg);
        s->f_ref = forward_create(&s->m, 1);
    }
    if (o->output_error) {
        if (!s->f_ref) die("--output-error: policy %s never evicts: its output is the full cache's", o->e.po.name);
        s->output_error = output_error_create(&s->m.cfg, o->chunk, o->chunk);
        output_error_attach(s->output_error, s->f, s->f_ref);
    }
}

static char *config_json(const PplOpts *o, const PplState *s) {
    cJSON *c = eval_config_new("ppl", &o->e, &s->m, o->co.tokenizer_path ? o->co.tokenizer_path : s->m.tokenizer_path, s->ctx);
    cJSON *k = eval_config_knobs(c);
    cJSON_AddItemToObject(k, "text", runlog_file_identity(o->text_path));
    cJSON_AddNumberToObject(k, "chunk", o->chunk);
    cJSON_AddNumberToObject(k, "chunks", s->n_chunks);
    cJSON_AddBoolToObject(k, "reference", o->reference);
    char *text = cJSON_PrintUnformatted(c);
    cJSON_Delete(c);
    return text;
}

static void run_chunks(const PplOpts *o, PplState *s, RunLog *log) {
    Err err;
    PplRunner r = { s->f, s->f_ref, &s->cache, s->f_ref ? &s->cache_ref : NULL, s->policy,
                    o->reference && !s->f_ref, s->m.cfg.vocab_size, s->guard, s->output_error };
    PplToken *tokens = xmalloc((size_t)o->chunk * sizeof(PplToken));
    ProgressLine pl;
    progress_line_start(&pl, "ppl", "tok", (int64_t)s->n_chunks * (o->chunk - 1), runlog_count(log) * (int64_t)(o->chunk - 1));
    progress_line_group(&pl, "chunks", s->n_chunks, runlog_count(log));
    for (int c = 0; c < s->n_chunks; c++) {
        if (runlog_done(log, c)) continue;
        const int *ids = s->chunks + (size_t)c * o->chunk;
        double t0 = now_seconds();
        if (ppl_run_sequence(&r, ids, o->chunk, tokens, tick, &pl, &err) != 0) die("%s", err.msg);
        Buf row = { 0 }, det = { 0 };
        chunk_rows(tokens, o->chunk - 1, ids, (long)c * (o->chunk - 1), &row, &det);
        if (runlog_append(log, c, row.data, det.data, now_seconds() - t0, &err) != 0) die("%s", err.msg);
        buf_free(&row);
        buf_free(&det);
        progress_line_group_add(&pl, 1);
    }
    progress_line_end(&pl);
    free(tokens);
}

/* ---- summaries (from the log, so a resumed run summarises exactly the same numbers) ---- */

typedef struct { double nll, nll_ref, kl, correct, correct_ref, agree, kv; long n, n_ref; } Sums;

static double field(const RunLog *log, long unit, int row, int col) {
    const char *s = runlog_detail_field(log, unit, row, col);
    return s && *s ? atof(s) : NAN;
}

/* Per position (over chunks) and overall sums from tokens.csv's rows. */
static void sum_positions(const RunLog *log, int n_chunks, int n_pos, Sums *pos, Sums *all) {
    int c_nll = runlog_detail_column(log, "nll"), c_ref = runlog_detail_column(log, "nll_ref");
    int c_kl = runlog_detail_column(log, "kl"), c_ok = runlog_detail_column(log, "correct");
    int c_ag = runlog_detail_column(log, "agree"), c_kv = runlog_detail_column(log, "kv");
    memset(all, 0, sizeof *all);
    memset(pos, 0, (size_t)n_pos * sizeof *pos);
    for (int c = 0; c < n_chunks; c++) {
        for (int i = 0; i < runlog_detail_count(log, c) && i < n_pos; i++) {
            Sums *p = &pos[i];
            double ref = field(log, c, i, c_ref);
            p->nll += field(log, c, i, c_nll);
            p->correct += field(log, c, i, c_ok);
            p->kv += field(log, c, i, c_kv);
            p->n++;
            if (!isnan(ref)) {
                p->nll_ref += ref;
                p->kl += field(log, c, i, c_kl);
                p->agree += field(log, c, i, c_ag);
                p->n_ref++;
            }
        }
    }
    for (int i = 0; i < n_pos; i++) {
        all->nll += pos[i].nll; all->nll_ref += pos[i].nll_ref; all->kl += pos[i].kl;
        all->correct += pos[i].correct; all->agree += pos[i].agree; all->kv += pos[i].kv;
        all->n += pos[i].n; all->n_ref += pos[i].n_ref;
    }
}

static char *positions_csv(const Sums *pos, int n_pos) {
    Buf b = { 0 };
    Sums cum = { 0 };
    buf_printf(&b, "pos,chunks,nll,cum_nll,cum_ppl,nll_ref,cum_nll_ref,cum_ppl_ref,kl,top1_agree,accuracy,kv\n");
    for (int i = 0; i < n_pos; i++) {
        const Sums *p = &pos[i];
        cum.nll += p->nll; cum.nll_ref += p->nll_ref; cum.n += p->n; cum.n_ref += p->n_ref;
        buf_printf(&b, "%d,%ld,%.8g,%.8g,%.8g", i + 1, p->n, p->nll / p->n, cum.nll / cum.n, exp(cum.nll / cum.n));
        if (p->n_ref) buf_printf(&b, ",%.8g,%.8g,%.8g,%.8g,%.6g", p->nll_ref / p->n_ref, cum.nll_ref / cum.n_ref,
                                exp(cum.nll_ref / cum.n_ref), p->kl / p->n_ref, p->agree / p->n_ref);
        else buf_printf(&b, ",,,,,");
        buf_printf(&b, ",%.6g,%.6g\n", p->correct / p->n, p->kv / p->n);
    }
    return b.data;
}

static void add_num(cJSON *o, const char *k, double v) {
    if (isnan(v)) cJSON_AddNullToObject(o, k);
    else cJSON_AddNumberToObject(o, k, v);
}

/* summary.json's numbers (summary.csv is the same as one row). */
static cJSON *summary_object(const RunLog *log, int n_chunks, const Sums *a) {
    double frac = 0;
    for (int c = 0; c < n_chunks; c++) frac += runlog_number(log, c, "kv_fraction");
    int ref = a->n_ref > 0;
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "chunks", n_chunks);
    cJSON_AddNumberToObject(o, "tokens", (double)a->n);
    add_num(o, "ppl", exp(a->nll / a->n));
    add_num(o, "nll", a->nll / a->n);
    add_num(o, "accuracy", a->correct / a->n);
    add_num(o, "ppl_ref", ref ? exp(a->nll_ref / a->n_ref) : NAN);
    add_num(o, "nll_ref", ref ? a->nll_ref / a->n_ref : NAN);
    add_num(o, "delta_ppl", ref ? exp(a->nll / a->n) - exp(a->nll_ref / a->n_ref) : NAN);
    add_num(o, "kl", ref ? a->kl / a->n_ref : NAN);
    add_num(o, "top1_agree", ref ? a->agree / a->n_ref : NAN);
    add_num(o, "kv_mean", a->kv / a->n);
    add_num(o, "kv_fraction", frac / n_chunks);
    return o;
}

/* The same object as one CSV row (keys = header; null = empty). */
static char *object_csv(const cJSON *o) {
    Buf b = { 0 };
    const cJSON *it;
    int i = 0;
    cJSON_ArrayForEach(it, o) buf_printf(&b, "%s%s", i++ ? "," : "", it->string);
    buf_printf(&b, "\n");
    i = 0;
    cJSON_ArrayForEach(it, o) {
        if (cJSON_IsNumber(it)) buf_printf(&b, "%s%.10g", i++ ? "," : "", it->valuedouble);
        else buf_printf(&b, "%s", i++ ? "," : "");
    }
    buf_printf(&b, "\n");
    return b.data;
}

/* --output-error: its two files, its per-layer summary in meta.json, one line on stderr. */
static void write_output_error(const OutputError *oe, const char *dir, cJSON *meta) {
    Err err;
    if (output_error_write(oe, dir, &err) != 0) die("%s", err.msg);
    cJSON *j = output_error_json(oe);
    cJSON *layers = cJSON_GetObjectItem(j, "layers");
    double mean = 0, p95 = 0;
    int n = cJSON_GetArraySize(layers);
    for (int l = 0; l < n; l++) {
        mean += cJSON_GetNumberValue(cJSON_GetObjectItem(cJSON_GetArrayItem(layers, l), "output_error_mean"));
        p95 += cJSON_GetNumberValue(cJSON_GetObjectItem(cJSON_GetArrayItem(layers, l), "output_error_p95"));
    }
    fprintf(stderr, "ppl: attention output error |o - o_full| / |o_full|: mean %.4g, p95 %.4g (averaged over %d layers)\n",
            mean / n, p95 / n, n);
    cJSON_AddItemToObject(meta, "output_error", j);
    runmeta_add_output(meta, "output_error.csv", "layer,head,kv_head,metric,mean,std,p95,n (per layer: head empty)");
    runmeta_add_output(meta, "output_error_steps.csv", "per position over chunks, layers and heads: output error, attention loss, KL");
}

static void write_outputs(const PplOpts *o, const PplState *s, RunLog *log, cJSON *meta, double t_start) {
    Err err;
    int n_pos = o->chunk - 1;
    Sums *pos = xcalloc((size_t)n_pos, sizeof *pos), all;
    sum_positions(log, s->n_chunks, n_pos, pos, &all);
    char *positions = positions_csv(pos, n_pos);
    cJSON *summary = summary_object(log, s->n_chunks, &all);
    char *csv = object_csv(summary), *json = cJSON_Print(summary);
    const char *dir = runlog_dir(log);
    if (runlog_write_results(log, "results.csv", &err) != 0 || runlog_write_details(log, "tokens.csv", &err) != 0 ||
        eval_write_text(dir, "positions.csv", positions, &err) != 0 || eval_write_text(dir, "summary.csv", csv, &err) != 0)
        die("%s", err.msg);
    Buf j = { 0 };
    buf_printf(&j, "%s\n", json);
    if (eval_write_text(dir, "summary.json", j.data, &err) != 0) die("%s", err.msg);
    double kv_mib = all.kv / all.n * s->m.cfg.n_layers * s->m.cfg.n_kv_heads * (double)kvcache_slot_bytes(&s->cache) / 1048576.0;
    fprintf(stderr, "ppl %.4f (full cache %.4f), accuracy %.4f, KL %.4g, top-1 agreement %.4f, kv %.1f tokens/head "
            "(%.2f MiB of %s K+V)\n",
            exp(all.nll / all.n), all.n_ref ? exp(all.nll_ref / all.n_ref) : NAN, all.correct / all.n,
            all.n_ref ? all.kl / all.n_ref : NAN, all.n_ref ? all.agree / all.n_ref : NAN, all.kv / all.n,
            kv_mib, dtype_name(s->cache.kv_dtype));
    cJSON_AddItemToObject(meta, "summary", summary);
    runmeta_add_budgets(meta, s->policy);   /* each (layer, KV head)'s budget, e.g. Ada-KV's shares */
    runmeta_add_output(meta, "results.csv", "one row per chunk");
    runmeta_add_output(meta, "tokens.csv", "one row per predicted token (pos = its position in the chunk)");
    runmeta_add_output(meta, "positions.csv", "per position over chunks: mean and cumulative NLL / perplexity");
    runmeta_add_output(meta, "summary.csv", "overall, one row");
    if (s->output_error) write_output_error(s->output_error, dir, meta);
    if (runlog_finish(log, meta, t_start, &err) != 0) die("%s", err.msg);
    buf_free(&j);
    free(positions); free(csv); free(json); free(pos);
}

int cmd_ppl(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) { help(); return 0; }
    double t_start = now_seconds();
    PplOpts o;
    parse(&o, argc, argv);
    PplState s;
    memset(&s, 0, sizeof s);
    setup(&o, &s);
    char *config = config_json(&o, &s);
    RunLogSpec spec = { o.e.out_dir, config, PPL_COLUMNS, PPL_DETAIL_COLUMNS, s.n_chunks, o.e.resume };
    Err err;
    RunLog *log = runlog_open(&spec, &err);
    if (!log) die("%s", err.msg);
    cJSON *meta = runlog_meta_new("ppl", argc, argv, &s.m, &o.e.po, config);
    sink_profile_add(meta, &s.m, s.chunks, o.chunk);   /* on the first chunk */
    run_chunks(&o, &s, log);
    write_outputs(&o, &s, log, meta, t_start);
    runlog_close(log);
    free(config);
    free(s.chunks);
    if (s.output_error) output_error_detach(s.output_error, s.f, s.f_ref);
    output_error_free(s.output_error);
    policy_free(s.policy);
    numguard_free(s.guard);
    forward_free(s.f);
    kvcache_free(&s.cache);
    if (s.f_ref) { forward_free(s.f_ref); kvcache_free(&s.cache_ref); }
    tokenizer_free(s.tok);
    model_free(&s.m);
    return 0;
}
