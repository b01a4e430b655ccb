/* cmd_needle.c — `kvlab needle`: options, run directory, summaries; the
 * evaluation itself and its protocol are lab/eval_needle.c. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "lab/eval.h"
#include "lab/runlog.h"
#include "lab/runmeta.h"
#include "lab/sinks.h"

/* ---- the command -------------------------------------------------------------------------- */

typedef struct {
    EvalOpts e;
    CommonOpts co;
    const char *haystack;
    int *lengths, n_lengths;
    int *depths, n_depths;
    int buffer, max_new, batch;
    const char *dump_dir;       /* --dump-prompts DIR: write the prompts there, run nothing */
} NeedleOpts;

static void help(void) {
    printf("usage: kvlab needle -m MODEL --haystack FILE -o RUN_DIR [--lengths L,...] [--depths D,...]\n"
           "                    [policy options] [--resume]\n\n"
           "Needle in a haystack (Kamradt's needle, sentence back-off, the L2 paper's prompt\n"
           "and word-overlap score) on a length x depth grid, with the policy's eviction applied once after\n"
           "the prompt (--schedule prefill unless given: the paper's protocol).\n\n"
           "  --haystack FILE     long text (e.g. ../shared/data/war-and-peace.txt)\n"
           "  --lengths LIST      context lengths in tokens (Kamradt's: haystack + needle = L - buffer)\n"
           "                      [ctx/2, 3ctx/4, ctx]\n"
           "  --depths LIST       needle depths in percent [0,11,22,33,44,56,67,78,89,100]\n"
           "  --buffer N          tokens left for the prompt template and the answer [200]\n"
           "  --max-new N         answer tokens, greedy [50]\n"
           "  --batch N           tokens per prefill pass [512]\n"
           "  -o, --output DIR    run directory; --resume continues an interrupted run there\n"
           "      --dump-prompts DIR  write every cell's prompt to DIR (one .txt per cell and\n"
           "                      prompts.csv: file, length, depth, tokens, needle position) and\n"
           "                      run nothing: no -o, no policy; the same prompts a run would score\n"
           COMMON_OPTS_HELP
           "\n"
           POLICY_OPTS_HELP
           "\n");
    policy_print_help(stdout);
    printf("\nRUN_DIR: results.csv (one row per cell: prompt tokens, needle position, kv kept, answer, score),\n"
           "summary.csv (score per length x depth, per length, per depth, overall), summary.json,\n"
           "config.json, meta.json (written last), log/.\n"
           "With a policy that evicts: head_budgets.csv (per unit, layer and KV head: the budget at the\n"
           "eviction after the prompt, empty if none, and the slots kept; --budget-alloc adaptive gives\n"
           "heads different shares) and their means per (layer, KV head) in meta.json's \"head_budgets\".\n"
           "meta.json's \"sinks\": the model's attention sinks per layer and head, measured once on the first\n"
           "cell's prompt (full cache, up to 1024 tokens; docs/analyses.md).\n"
           "example: kvlab needle -m ../shared/models/demo-25m --haystack ../shared/data/war-and-peace.txt \\\n"
           "           --lengths 512,1024 --policy l2 --compression-ratio 0.5 -o runs/needle-l2\n");
    cli_print_file_notes(stdout, HELP_INPUTS | HELP_RUN_DIR);
}

static void parse(NeedleOpts *o, int argc, char **argv) {
    eval_opts_defaults(&o->e);
    common_defaults(&o->co);
    o->buffer = 200;
    o->max_new = 50;
    o->batch = 512;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--haystack")) o->haystack = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--lengths")) { free(o->lengths); o->lengths = cli_int_list(a, cli_value(argc, argv, &i), 8, 1 << 22, &o->n_lengths); }
        else if (!strcmp(a, "--depths")) { free(o->depths); o->depths = cli_int_list(a, cli_value(argc, argv, &i), 0, 100, &o->n_depths); }
        else if (!strcmp(a, "--buffer")) o->buffer = (int)cli_int(a, cli_value(argc, argv, &i), 0, 1 << 22);
        else if (!strcmp(a, "--max-new")) o->max_new = (int)cli_int(a, cli_value(argc, argv, &i), 1, 4096);
        else if (!strcmp(a, "--batch")) o->batch = (int)cli_int(a, cli_value(argc, argv, &i), 1, 65536);
        else if (!strcmp(a, "--dump-prompts")) o->dump_dir = cli_value(argc, argv, &i);
        else if (!common_option(&o->co, argc, argv, &i) && !eval_option(&o->e, argc, argv, &i))
            die("needle: unknown option '%s' (kvlab needle --help)", a);
    }
    if (!o->haystack) die("needle: --haystack FILE is required (kvlab needle --help)");
    if (!path_exists(o->haystack)) die("--haystack: %s: no such file", o->haystack);
    if (!o->depths) {   /* Kamradt: np.round(np.linspace(0, 100, 10)) */
        o->n_depths = 10;
        o->depths = xmalloc(10 * sizeof(int));
        for (int i = 0; i < 10; i++) o->depths[i] = (int)lround(i * 100.0 / 9.0);
    }
    if (o->dump_dir) return;    /* nothing runs: no run directory, no policy */
    eval_opts_finish(&o->e, "needle", SCHED_PREFILL);
}

typedef struct {
    EvalEngine e;
    int *hay, n_hay;          /* the haystack's first tokens (no BOS) */
    int *needle, n_needle;
} NdState;

/* Tokenize enough of the haystack for the longest length: a prefix of ~6
 * bytes a token, doubled until long enough; the last 16 tokens of a cut
 * prefix are dropped (their word may continue). */
static void load_haystack(const NeedleOpts *o, NdState *s, int need) {
    Err err;
    char *text;
    size_t size;
    if (read_text_file(o->haystack, &text, &size, &err) != 0) die("%s", err.msg);
    size_t bytes = (size_t)need * 6 + 4096;
    for (;;) {
        if (bytes > size) bytes = size;
        free(s->hay);
        s->hay = xmalloc((bytes + 16) * sizeof(int));
        s->n_hay = tokenizer_encode_len(s->e.tok, text, bytes, 0, s->hay, (int)bytes + 16, &err);
        if (s->n_hay < 0) die("%s: %s", o->haystack, err.msg);
        if (bytes == size || s->n_hay >= need + 16) break;
        bytes *= 2;
    }
    if (bytes < size) s->n_hay -= 16;
    free(text);
    if (s->n_hay < need)
        fprintf(stderr, "kvlab: %s: only %d tokens; the longest contexts get all of it\n", o->haystack, s->n_hay);
}

static void check_lengths(NeedleOpts *o, NdState *s) {
    Err err;
    s->n_needle = tokenizer_encode(s->e.tok, NEEDLE_TEXT, 0, NULL, 0, &err);
    s->needle = xmalloc((size_t)s->n_needle * sizeof(int));
    tokenizer_encode(s->e.tok, NEEDLE_TEXT, 0, s->needle, s->n_needle, &err);
    int min_len = o->buffer + s->n_needle + 1;
    if (!o->lengths) {
        int cand[3] = { s->e.ctx / 2, s->e.ctx * 3 / 4, s->e.ctx };
        o->lengths = xmalloc(3 * sizeof(int));
        for (int i = 0; i < 3; i++) if (cand[i] >= min_len) o->lengths[o->n_lengths++] = cand[i];
        if (!o->n_lengths) die("needle: the context (%d) is too short for --buffer %d and the needle: give --lengths and a smaller --buffer", s->e.ctx, o->buffer);
    }
    int longest = 0;
    for (int i = 0; i < o->n_lengths; i++) {
        if (o->lengths[i] < min_len)
            die("--lengths %d: no room for the haystack (the --buffer of %d and the needle's %d tokens take it)",
                o->lengths[i], o->buffer, s->n_needle);
        if (o->lengths[i] > longest) longest = o->lengths[i];
    }
    load_haystack(o, s, longest);
}

/* Before anything runs: the longest prompt of each length must leave room for the answer. */
static int *cell_prompt(const NeedleOpts *o, const NdState *s, int length, int depth, int *n, int *n_context, int *needle_at);
static void check_prompts(const NeedleOpts *o, const NdState *s) {
    for (int i = 0; i < o->n_lengths; i++)
        for (int d = 0; d <= 100; d += 100) {
            int n, n_context, at;
            free(cell_prompt(o, s, o->lengths[i], d, &n, &n_context, &at));
        }
}

static long n_units(const NeedleOpts *o) { return (long)o->n_lengths * o->n_depths; }

static char *config_json(const NeedleOpts *o, const NdState *s) {
    cJSON *c = eval_config_new("needle", &o->e, &s->e.m, o->co.tokenizer_path ? o->co.tokenizer_path : s->e.m.tokenizer_path, s->e.ctx);
    cJSON *k = eval_config_knobs(c);
    cJSON_AddItemToObject(k, "haystack", runlog_file_identity(o->haystack));
    cJSON_AddItemToObject(k, "lengths", cJSON_CreateIntArray(o->lengths, o->n_lengths));
    cJSON_AddItemToObject(k, "depths", cJSON_CreateIntArray(o->depths, o->n_depths));
    cJSON_AddNumberToObject(k, "buffer", o->buffer);
    cJSON_AddNumberToObject(k, "max_new", o->max_new);
    char *text = cJSON_PrintUnformatted(c);
    cJSON_Delete(c);
    return text;
}

/* The prompt's text and ids (BOS first) for one cell; *n, *needle_at (in the context).
 * *text_out (may be NULL) receives the text, the caller frees it. */
static int *cell_prompt_text(const NeedleOpts *o, const NdState *s, int length, int depth, int *n, int *n_context,
                             int *needle_at, char **text_out) {
    Err err;
    int *ctx_ids = xmalloc(((size_t)s->n_hay + s->n_needle) * sizeof(int));
    *n_context = needle_insert(s->e.tok, s->hay, s->n_hay, s->needle, s->n_needle, length - o->buffer, depth, ctx_ids, needle_at);
    char *context = tokenizer_decode(s->e.tok, ctx_ids, *n_context, &err);
    if (!context) die("%s", err.msg);
    Buf b = { 0 };
    buf_printf(&b, NEEDLE_PROMPT_HEAD "%s" NEEDLE_PROMPT_TAIL, context, NEEDLE_QUESTION);
    *n = tokenizer_encode(s->e.tok, b.data, 1, NULL, 0, &err);
    int *ids = xmalloc(((size_t)*n + 1) * sizeof(int));
    tokenizer_encode(s->e.tok, b.data, 1, ids, *n, &err);
    if (*n + o->max_new > s->e.ctx)
        die("--lengths %d: the prompt has %d tokens; with %d answer tokens (--max-new) longer than the context (%d; --buffer, --ctx)",
            length, *n, o->max_new, s->e.ctx);
    if (text_out) *text_out = b.data;
    else buf_free(&b);
    free(context);
    free(ctx_ids);
    return ids;
}

static int *cell_prompt(const NeedleOpts *o, const NdState *s, int length, int depth, int *n, int *n_context, int *needle_at) {
    return cell_prompt_text(o, s, length, depth, n, n_context, needle_at, NULL);
}

/* --dump-prompts DIR: every cell's prompt as a text file a user can read, and an
 * index; the prompts are the ones a run with the same options scores. */
static void dump_prompts(const NeedleOpts *o, const NdState *s) {
    Err err;
    if (make_dirs(o->dump_dir, &err) != 0) die("%s", err.msg);
    Buf index = { 0 };
    buf_printf(&index, "file,length,depth,prompt_tokens,context_tokens,needle_at\n");
    for (int i = 0; i < o->n_lengths; i++) {
        for (int j = 0; j < o->n_depths; j++) {
            int n, n_context, at;
            char *text = NULL, name[96];
            free(cell_prompt_text(o, s, o->lengths[i], o->depths[j], &n, &n_context, &at, &text));
            snprintf(name, sizeof name, "needle_L%d_D%d.txt", o->lengths[i], o->depths[j]);
            /* the prompt exactly, no newline added: `kvlab generate -f FILE` feeds the same tokens */
            if (eval_write_text(o->dump_dir, name, text, &err) != 0) die("%s", err.msg);
            buf_printf(&index, "%s,%d,%d,%d,%d,%d\n", name, o->lengths[i], o->depths[j], n, n_context, at);
            free(text);
        }
    }
    if (eval_write_text(o->dump_dir, "prompts.csv", index.data, &err) != 0) die("%s", err.msg);
    fprintf(stderr, "needle: %ld prompts written to %s (prompts.csv lists them)\n", n_units(o), o->dump_dir);
    buf_free(&index);
}

#define ND_COLUMNS "length,depth,prompt_tokens,context_tokens,needle_at,depth_actual,kv_tokens,answer,score"

static void run_cell(const void *opts, void *state, long unit, Buf *row) {
    const NeedleOpts *o = opts;
    NdState *s = state;
    int length = o->lengths[unit / o->n_depths], depth = o->depths[unit % o->n_depths];
    int n, n_context, at;
    int *ids = cell_prompt(o, s, length, depth, &n, &n_context, &at);
    double kv;
    char *answer = eval_answer(&s->e, ids, n, o->max_new, &kv);
    char *q = csv_quote(answer);
    int n_hay = n_context - s->n_needle;
    buf_printf(row, "%d,%d,%d,%d,%d,%.4f,%.2f,%s,%.6g", length, depth, n, n_context, at,
              n_hay ? 100.0 * at / n_hay : 0.0, kv, q, needle_score(answer, NEEDLE_TEXT));
    free(q); free(answer); free(ids);
}

/* ---- summary ------------------------------------------------------------------------------ */

/* The mean score per length x depth, per length, per depth and overall. */
static char *summary_csv(const NeedleOpts *o, const RunLog *log, double *mean) {
    Grid g;
    grid_init(&g, o->lengths, o->n_lengths, o->depths, o->n_depths, 1);
    for (long u = 0; u < n_units(o); u++) {
        if (!runlog_done(log, u)) continue;
        double score = runlog_number(log, u, "score");
        grid_add(&g, (int)(u / o->n_depths), (int)(u % o->n_depths), &score);
    }
    char *csv = grid_csv(&g, "length,depth,cells,score");
    *mean = g.all.n ? g.all.sum[0] / g.all.n : NAN;
    grid_free(&g);
    return csv;
}

static void write_outputs(const NeedleOpts *o, const EvalEngine *e, RunLog *log, cJSON *meta, double t_start) {
    double mean;
    char *csv = summary_csv(o, log, &mean);
    cJSON *sum = cJSON_CreateObject();
    cJSON_AddNumberToObject(sum, "cells", (double)n_units(o));
    cJSON_AddNumberToObject(sum, "score", mean);
    eval_write_summaries(log, csv, sum);
    fprintf(stderr, "needle: mean score %.3f over %ld cells\n", mean, n_units(o));
    eval_finish_meta(log, e, meta, sum, "one row per (length, depth) cell", "score per length x depth ('all' = aggregated)",
                     t_start);
    free(csv);
}

int cmd_needle(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) { help(); return 0; }
    double t_start = now_seconds();
    NeedleOpts o;
    memset(&o, 0, sizeof o);
    parse(&o, argc, argv);
    NdState s;
    memset(&s, 0, sizeof s);
    common_load(&o.co, &s.e.m, &s.e.tok, &s.e.ctx);
    check_lengths(&o, &s);
    check_prompts(&o, &s);
    if (o.dump_dir) {
        dump_prompts(&o, &s);
        tokenizer_free(s.e.tok);
        model_free(&s.e.m);
        free(s.hay);
        free(s.needle);
        free(o.lengths);
        free(o.depths);
        return 0;
    }
    eval_engine_start(&s.e, &o.e, o.batch);
    char *config = config_json(&o, &s);
    cJSON *meta;
    RunLog *log = eval_log_open("needle", &o.e, &s.e, config, ND_COLUMNS, n_units(&o), argc, argv, &meta);
    int first_n, first_context, first_at;   /* the sink profile, on the first cell's prompt */
    int *first_ids = cell_prompt(&o, &s, o.lengths[0], o.depths[0], &first_n, &first_context, &first_at);
    sink_profile_add(meta, &s.e.m, first_ids, first_n);
    free(first_ids);
    eval_run_units(log, &s.e, "needle", "cells", n_units(&o), run_cell, &o, &s);
    write_outputs(&o, &s.e, log, meta, t_start);
    runlog_close(log);
    free(config);
    eval_engine_free(&s.e);
    free(s.hay);
    free(s.needle);
    free(o.lengths);
    free(o.depths);
    return 0;
}
