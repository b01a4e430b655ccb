/* cmd_passkey.c — `kvlab passkey`: options, run directory, summaries; the
 * evaluation itself and its protocol are lab/eval_passkey.c. */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "lab/eval.h"
#include "lab/runlog.h"
#include "engine/sampler.h"
#include "lab/runmeta.h"
#include "lab/sinks.h"

/* ---- the command ------------------------------------------------------------------------ */

typedef struct {
    EvalOpts e;
    CommonOpts co;
    int *lengths, n_lengths;
    int *depths, n_depths;      /* percent; n_depths = 0: random (the spec's protocol) */
    int trials, digits, max_new, batch;
    unsigned long long seed;
    const char *dump_dir;       /* --dump-prompts DIR: write the prompts there, run nothing */
} PasskeyOpts;

static void help(void) {
    printf("usage: kvlab passkey -m MODEL -o RUN_DIR [--lengths L,...] [--depths D,...|random] [--trials N]\n"
           "                     [--seed S] [--digits 5|64] [policy options] [--resume]\n\n"
           "Passkey retrieval (the Landmark-attention prompt of Mohtashami & Jaggi 2023, as in the L2\n"
           "paper), with the policy's eviction applied once after the prompt (--schedule prefill unless\n"
           "given: full prefill, first answer token from the full cache, then compress; the paper's protocol).\n\n"
           "  --lengths LIST      prompt lengths in tokens, BOS included; the garbage text is sized with the\n"
           "                      tokenizer to fit [ctx/4, ctx/2, ctx - max-new]\n"
           "  --depths LIST       key depths in percent of the garbage, or 'random' (uniform per trial) [random]\n"
           "  --trials N          trials per (length, depth): a new key each [10]\n"
           "  --seed S            keys and random depths come from it [1]\n"
           "  --digits 5|64       5: key uniform in [1, 50000); 64: a 64-digit key (exact = substring,\n"
           "                      partial = longest common substring / 64) [5]\n"
           "  --max-new N         tokens decoded greedily [10 for 5 digits, 80 for 64]\n"
           "  --batch N           tokens per prefill pass [512]\n"
           "  -o, --output DIR    run directory; --resume continues an interrupted run there\n"
           "      --dump-prompts DIR  write every trial's prompt to DIR (one .txt per trial and\n"
           "                      prompts.csv: file, length, depth, trial, key, tokens) and run\n"
           "                      nothing: no -o, no policy; the same prompts a run would score\n"
           COMMON_OPTS_HELP
           "\n"
           POLICY_OPTS_HELP
           "\n");
    policy_print_help(stdout);
    printf("\nRUN_DIR: results.csv (one row per trial: key, depth, prompt tokens, kv kept, answer, correct,\n"
           "partial), summary.csv (accuracy per length x depth, per length, per depth, overall), summary.json,\n"
           "config.json, meta.json (written last), log/.\n"
           "With a policy that evicts: head_budgets.csv (per unit, layer and KV head: the budget at the\n"
           "eviction after the prompt, empty if none, and the slots kept; --budget-alloc adaptive gives\n"
           "heads different shares) and their means per (layer, KV head) in meta.json's \"head_budgets\".\n"
           "meta.json's \"sinks\": the model's attention sinks per layer and head, measured once on the first\n"
           "trial's prompt (full cache, up to 1024 tokens; docs/analyses.md).\n"
           "example: kvlab passkey -m ../shared/models/demo-25m --lengths 512,1024 --depths 0,50,100 --trials 5 \\\n"
           "           --policy l2 --compression-ratio 0.9 -o runs/passkey-l2\n");
    cli_print_file_notes(stdout, HELP_INPUTS | HELP_RUN_DIR);
}

static void parse(PasskeyOpts *o, int argc, char **argv) {
    eval_opts_defaults(&o->e);
    common_defaults(&o->co);
    o->trials = 10;
    o->digits = 5;
    o->max_new = 0;
    o->batch = 512;
    o->seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--lengths")) { free(o->lengths); o->lengths = cli_int_list(a, cli_value(argc, argv, &i), 8, 1 << 22, &o->n_lengths); }
        else if (!strcmp(a, "--depths")) {
            const char *v = cli_value(argc, argv, &i);
            free(o->depths);
            o->depths = NULL;
            o->n_depths = 0;
            if (strcmp(v, "random") != 0) o->depths = cli_int_list(a, v, 0, 100, &o->n_depths);
        }
        else if (!strcmp(a, "--trials")) o->trials = (int)cli_int(a, cli_value(argc, argv, &i), 1, 1 << 20);
        else if (!strcmp(a, "--seed")) o->seed = (unsigned long long)cli_int(a, cli_value(argc, argv, &i), 0, (1L << 62));
        else if (!strcmp(a, "--digits")) {
            o->digits = (int)cli_int(a, cli_value(argc, argv, &i), 5, 64);
            if (o->digits != 5 && o->digits != 64) die("--digits: %d is not 5 or 64", o->digits);
        }
        else if (!strcmp(a, "--max-new")) o->max_new = (int)cli_int(a, cli_value(argc, argv, &i), 1, 4096);
        else if (!strcmp(a, "--batch")) o->batch = (int)cli_int(a, cli_value(argc, argv, &i), 1, 65536);
        else if (!strcmp(a, "--dump-prompts")) o->dump_dir = cli_value(argc, argv, &i);
        else if (!common_option(&o->co, argc, argv, &i) && !eval_option(&o->e, argc, argv, &i))
            die("passkey: unknown option '%s' (kvlab passkey --help)", a);
    }
    if (!o->max_new) o->max_new = o->digits == 5 ? 10 : 80;
    if (o->dump_dir) return;    /* nothing runs: no run directory, no policy */
    eval_opts_finish(&o->e, "passkey", SCHED_PREFILL);
}

/* Default lengths from the context; every length must leave room for the answer. */
static void check_lengths(PasskeyOpts *o, int ctx) {
    if (!o->lengths) {
        o->n_lengths = 3;
        o->lengths = xmalloc(3 * sizeof(int));
        o->lengths[0] = ctx / 4;
        o->lengths[1] = ctx / 2;
        o->lengths[2] = ctx - o->max_new;
    }
    for (int i = 0; i < o->n_lengths; i++)
        if (o->lengths[i] + o->max_new > ctx)
            die("--lengths %d: with %d answer tokens (--max-new) longer than the context (%d; --ctx)",
                o->lengths[i], o->max_new, ctx);
}

/* Before anything runs: every length must hold the prompt without garbage
 * (checked with the longest key of --digits). */
static void check_fit(const PasskeyOpts *o, const Tokenizer *tok) {
    char key[80];
    memset(key, '9', (size_t)o->digits);
    key[o->digits] = '\0';
    for (int i = 0; i < o->n_lengths; i++) {
        Err err = { "" };
        int n_tok = 0;
        if (passkey_fit(tok, o->lengths[i], 0.0, key, &n_tok, &err) < 0) {
            if (err.msg[0]) die("%s", err.msg);
            die("--lengths %d: shorter than the passkey prompt without garbage (%d tokens with this tokenizer)",
                o->lengths[i], n_tok);
        }
    }
}

static long n_units(const PasskeyOpts *o) { return (long)o->n_lengths * (o->n_depths ? o->n_depths : 1) * o->trials; }

static char *config_json(const PasskeyOpts *o, const EvalEngine *s) {
    cJSON *c = eval_config_new("passkey", &o->e, &s->m, o->co.tokenizer_path ? o->co.tokenizer_path : s->m.tokenizer_path, s->ctx);
    cJSON *k = eval_config_knobs(c);
    cJSON_AddItemToObject(k, "lengths", cJSON_CreateIntArray(o->lengths, o->n_lengths));
    if (o->n_depths) cJSON_AddItemToObject(k, "depths", cJSON_CreateIntArray(o->depths, o->n_depths));
    else cJSON_AddStringToObject(k, "depths", "random");
    cJSON_AddNumberToObject(k, "trials", o->trials);
    cJSON_AddNumberToObject(k, "seed", (double)o->seed);
    cJSON_AddNumberToObject(k, "digits", o->digits);
    cJSON_AddNumberToObject(k, "max_new", o->max_new);
    char *text = cJSON_PrintUnformatted(c);
    cJSON_Delete(c);
    return text;
}

#define PK_COLUMNS "length,depth,trial,key,n_garbage,n_prefix,depth_actual,prompt_tokens,kv_tokens,answer,correct,partial"

/* The prompt of one trial (unit = length, then depth, then trial): its key,
 * depth and garbage sized with the tokenizer to the length. */
typedef struct {
    int length, depth_index, trial;
    char key[80];
    int n_garbage, n_prefix, n_tok;   /* garbage characters, of them before the key; prompt tokens */
    char *text;                       /* the prompt (BOS not included) */
} PasskeyTrial;

static void trial_prompt(const PasskeyOpts *o, const Tokenizer *tok, long unit, PasskeyTrial *t) {
    int per_len = (o->n_depths ? o->n_depths : 1) * o->trials;
    t->length = o->lengths[unit / per_len];
    t->depth_index = (int)(unit % per_len) / o->trials;
    t->trial = (int)(unit % o->trials);
    EvalRng rng = eval_rng(o->seed, 0x7061737367ULL /* "passk" */, (uint64_t)unit);
    passkey_make_key(&rng, o->digits, t->key, sizeof t->key);
    double depth = o->n_depths ? o->depths[t->depth_index] / 100.0 : eval_uniform(&rng);
    Err err;
    err.msg[0] = '\0';
    t->n_tok = 0;
    t->n_garbage = passkey_fit(tok, t->length, depth, t->key, &t->n_tok, &err);
    if (t->n_garbage < 0) {
        if (err.msg[0]) die("%s", err.msg);
        die("--lengths %d: shorter than the prompt without garbage (%d tokens)", t->length, t->n_tok);
    }
    t->n_prefix = (int)floor(depth * t->n_garbage);
    t->text = passkey_prompt(t->n_garbage, t->n_prefix, t->key);
}

/* One trial: build, prefill (+ eviction), greedy answer, score; the row. */
static void run_trial(const void *opts, void *state, long unit, Buf *row) {
    const PasskeyOpts *o = opts;
    EvalEngine *s = state;
    Err err;
    PasskeyTrial t;
    trial_prompt(o, s->tok, unit, &t);
    int *ids = xmalloc(((size_t)t.n_tok + 1) * sizeof(int));
    tokenizer_encode(s->tok, t.text, 1, ids, t.n_tok, &err);
    double kv;
    char *answer = eval_answer(s, ids, t.n_tok, o->max_new, &kv);
    int correct = o->digits == 5 ? passkey_correct(answer, t.key) : strstr(answer, t.key) != NULL;
    double partial = (double)longest_common_substring(answer, t.key) / (double)strlen(t.key);
    char *q = csv_quote(answer);
    if (o->n_depths) buf_printf(row, "%d,%d", t.length, o->depths[t.depth_index]);
    else buf_printf(row, "%d,", t.length);
    buf_printf(row, ",%d,%s,%d,%d,%.4f,%d,%.2f,%s,%d,%.6g", t.trial, t.key, t.n_garbage, t.n_prefix,
              t.n_garbage ? 100.0 * t.n_prefix / t.n_garbage : 0.0, t.n_tok, kv, q, correct, partial);
    free(q); free(answer); free(ids); free(t.text);
}

/* --dump-prompts DIR: every trial's prompt as a text file a user can read, and an
 * index; the prompts are the ones a run with the same options scores. */
static void dump_prompts(const PasskeyOpts *o, const Tokenizer *tok) {
    Err err;
    if (make_dirs(o->dump_dir, &err) != 0) die("%s", err.msg);
    Buf index = { 0 };
    buf_printf(&index, "file,length,depth,trial,key,n_garbage,n_prefix,prompt_tokens\n");
    for (long u = 0; u < n_units(o); u++) {
        PasskeyTrial t;
        trial_prompt(o, tok, u, &t);
        char name[96], depth[16];
        if (o->n_depths) snprintf(depth, sizeof depth, "%d", o->depths[t.depth_index]);
        else snprintf(depth, sizeof depth, "random");
        snprintf(name, sizeof name, "passkey_L%d_D%s_T%d.txt", t.length, depth, t.trial);
        /* the prompt exactly, no newline added: `kvlab generate -f FILE` feeds the same tokens */
        if (eval_write_text(o->dump_dir, name, t.text, &err) != 0) die("%s", err.msg);
        buf_printf(&index, "%s,%d,%s,%d,%s,%d,%d,%d\n", name, t.length, o->n_depths ? depth : "",
                   t.trial, t.key, t.n_garbage, t.n_prefix, t.n_tok);
        free(t.text);
    }
    if (eval_write_text(o->dump_dir, "prompts.csv", index.data, &err) != 0) die("%s", err.msg);
    fprintf(stderr, "passkey: %ld prompts written to %s (prompts.csv lists them)\n", n_units(o), o->dump_dir);
    buf_free(&index);
}

/* ---- summary: accuracy per (length, depth), per length, per depth, overall ------------- */

/* The summary's depth column of a trial with a random depth: its decile (0..9). */
static int depth_decile(const RunLog *log, long u) {
    int d = (int)(runlog_number(log, u, "depth_actual") / 10.0);
    return d > 9 ? 9 : d;
}

/* Accuracy and partial score per length x depth, per length, per depth and
 * overall (*all: the sums over every trial done). */
static char *summary_csv(const PasskeyOpts *o, const RunLog *log, GridMean *all) {
    static const int deciles[10] = { 0, 10, 20, 30, 40, 50, 60, 70, 80, 90 };   /* random depths */
    Grid g;
    grid_init(&g, o->lengths, o->n_lengths, o->n_depths ? o->depths : deciles, o->n_depths ? o->n_depths : 10, 2);
    long per_len = n_units(o) / o->n_lengths;
    for (long u = 0; u < n_units(o); u++) {
        if (!runlog_done(log, u)) continue;
        int li = (int)(u / per_len), di = o->n_depths ? (int)(u % per_len) / o->trials : depth_decile(log, u);
        double v[2] = { runlog_number(log, u, "correct"), runlog_number(log, u, "partial") };
        grid_add(&g, li, di, v);
    }
    char *csv = grid_csv(&g, "length,depth,trials,accuracy,partial");
    *all = g.all;
    grid_free(&g);
    return csv;
}

static void write_outputs(const PasskeyOpts *o, const EvalEngine *e, RunLog *log, cJSON *meta, double t_start) {
    GridMean all;
    char *csv = summary_csv(o, log, &all);
    double accuracy = all.sum[0] / all.n, partial = all.sum[1] / all.n;
    cJSON *sum = cJSON_CreateObject();
    cJSON_AddNumberToObject(sum, "trials", (double)all.n);
    cJSON_AddNumberToObject(sum, "accuracy", accuracy);
    cJSON_AddNumberToObject(sum, "partial", partial);
    eval_write_summaries(log, csv, sum);
    fprintf(stderr, "passkey: accuracy %.3f (%ld trials), partial %.3f\n", accuracy, all.n, partial);
    eval_finish_meta(log, e, meta, sum, "one row per trial", "accuracy per length x depth ('all' = aggregated)", t_start);
    free(csv);
}

int cmd_passkey(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) { help(); return 0; }
    double t_start = now_seconds();
    PasskeyOpts o;
    memset(&o, 0, sizeof o);
    parse(&o, argc, argv);
    EvalEngine s;
    memset(&s, 0, sizeof s);
    common_load(&o.co, &s.m, &s.tok, &s.ctx);
    check_lengths(&o, s.ctx);
    check_fit(&o, s.tok);
    if (o.dump_dir) {
        dump_prompts(&o, s.tok);
        tokenizer_free(s.tok);
        model_free(&s.m);
        free(o.lengths);
        free(o.depths);
        return 0;
    }
    eval_engine_start(&s, &o.e, o.batch);
    char *config = config_json(&o, &s);
    cJSON *meta;
    RunLog *log = eval_log_open("passkey", &o.e, &s, config, PK_COLUMNS, n_units(&o), argc, argv, &meta);
    PasskeyTrial first;
    trial_prompt(&o, s.tok, 0, &first);
    Err err;
    int *first_ids = xmalloc(((size_t)first.n_tok + 1) * sizeof(int));
    tokenizer_encode(s.tok, first.text, 1, first_ids, first.n_tok, &err);
    sink_profile_add(meta, &s.m, first_ids, first.n_tok);   /* on the first trial's prompt */
    free(first_ids);
    free(first.text);
    eval_run_units(log, &s, "passkey", "trials", n_units(&o), run_trial, &o, &s);
    write_outputs(&o, &s, log, meta, t_start);
    runlog_close(log);
    free(config);
    eval_engine_free(&s);
    free(o.lengths);
    free(o.depths);
    return 0;
}
