/* cmd_trace.c — `kvlab trace`: record selected attention rows with the key and
 * value norms of the tokens they look at, into RUN_DIR/trace.npz + meta.json. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "engine/forward.h"
#include "engine/numcheck.h"
#include "policy/policy.h"
#include "cli/trace_input.h"
#include "lab/runmeta.h"
#include "lab/sinks.h"
#include "lab/trace.h"
#include "lab/trace_page.h"

static void help(void) {
    printf("usage: kvlab trace -m MODEL (-p PROMPT | --ids LIST | -f FILE [--chunk N --chunks K])\n"
           "                   [--gen N] [--layers L,..] [--heads H,..] [--steps prefill|decode|all]\n"
           "                   [--every K] [--max-bytes B] [--html FILE [--html-max-bytes B]] -o RUN_DIR\n\n"
           "Runs the prompt (or K chunks of a text file) through the model, then N greedy decode\n"
           "steps, and records for the selected layers / query heads / queries the attention\n"
           "probabilities over the cached tokens, next to those tokens' key and value L2 norms.\n"
           "Only the selection is kept in memory; --max-bytes refuses a selection that would need more.\n\n"
           "  -p, --prompt TEXT     prompt text (BOS is prepended)\n"
           "      --ids LIST        prompt as comma-separated token ids\n"
           "  -f, --file FILE       text file: K sequences of N tokens, each BOS + the next N-1 tokens\n"
           "      --chunk N         tokens per sequence with -f, BOS included [256]\n"
           "      --chunks K        sequences with -f [1]\n"
           "      --gen N           greedy decode steps after the prompt (EOS does not stop them) [0]\n"
           "      --layers LIST     layers to record, ascending, or 'all' [all]\n"
           "      --heads LIST      query heads to record, ascending, or 'all' [all]\n"
           "      --steps WHICH     queries to record: prefill (prompt rows), decode, all [all]\n"
           "      --every K         record every K-th selected query, counted back from the last [1]\n"
           "      --max-bytes B     refuse a trace larger than B bytes in memory (suffix K/M/G) [1G]\n"
           "  -o, --output DIR      run directory: trace.npz and meta.json (meta.json written last)\n"
           "                        meta.json's \"sinks\": the model's attention sinks per layer and\n"
           "                        head, measured once on the first prompt (full cache, up to 1024\n"
           "                        tokens; docs/analyses.md)\n"
           "      --html FILE       also write one self-contained HTML page (no network needed) to\n"
           "                        watch the decoding step by step: per layer, query head and\n"
           "                        recorded query, the attention over the cached tokens beside their\n"
           "                        key/value norms, with --policy its scores, evictions and KV bytes;\n"
           "                        per layer Spearman rho, ALR/n and the first-token sink (one sequence;\n"
           "                        kvlab view RUN_DIR -o FILE makes the same page later)\n"
           "      --html-max-bytes B  refuse a page larger than B bytes (suffix K/M/G) [16M]; the\n"
           "                        attention row of one layer x head x step takes 16*P/3 bytes\n"
           "      --batch N         tokens per prefill pass [512]\n"
           COMMON_OPTS_HELP
           "\ntrace.npz (S sequences, NL layers, NH heads, Q queries, P = prompt + gen positions,\n"
           "KV key/value heads; load with numpy.load):\n"
           "  attn        f32 [S,NL,NH,Q,P]  attention of each recorded query on each ORIGINAL\n"
           "                                 position; NaN where the query does not see it\n"
           "  key_norm    f32 [S,NL,KV,P]    L2 norm of each cached key (RoPE does not change it)\n"
           "  value_norm  f32 [S,NL,KV,P]    L2 norm of each cached value\n"
           "  query_pos   i32 [Q]            position of each recorded query (decode step s: prompt+s)\n"
           "  key_pos     i32 [P]            0..P-1\n"
           "  layers i32 [NL], heads i32 [NH], kv_head i32 [NH], ids i32 [S,P], n_prompt i32 []\n"
           "With --policy, the traced cache is evicted from as the policy decides: attn is NaN on\n"
           "the tokens evicted before that step, so the kept set of a recorded query is\n"
           "isfinite(attn[..., q, :]); key/value norms are taken before eviction. With --policy\n"
           "it also holds what the policy saw and did:\n"
           "  score       f32 [S,NL,KV,Q,P]  the policy's score (higher = keep) of each cached token\n"
           "                                 after query q's forward, before its eviction (NaN where\n"
           "                                 the policy ranks nothing; prefill: the last row only)\n"
           "  evicted_at  i32 [S,NL,KV,P]    position of the query after whose forward the token\n"
           "                                 was evicted; -1: never\n"
           "  kv_bytes    i64 [S,Q,2]        KV bytes in use when query q attended / after the\n"
           "                                 eviction that followed (0 for other prefill rows)\n\n"
           POLICY_OPTS_HELP);
    policy_print_help(stdout);
    cli_print_file_notes(stdout, HELP_INPUTS | HELP_OUTPUT);
}

typedef struct {
    CommonOpts common;
    PolicyOpts policy;
    int policy_given;
    TraceInput in;
    const char *out, *layers_str, *heads_str, *html;
    int gen, every, batch;
    TraceSteps steps;
    int64_t max_bytes, html_max_bytes;
} TraceOpts;

static TraceSteps parse_steps(const char *v) {
    if (!strcmp(v, "prefill")) return TRACE_PREFILL;
    if (!strcmp(v, "decode")) return TRACE_DECODE;
    if (!strcmp(v, "all")) return TRACE_ALL;
    die("--steps: '%s' is not prefill, decode or all", v);
}

static void parse_args(TraceOpts *o, int argc, char **argv) {
    memset(o, 0, sizeof *o);
    common_defaults(&o->common);
    policy_defaults(&o->policy);
    o->in.chunk = 256; o->in.chunks = 1; o->every = 1; o->batch = 512;
    o->steps = TRACE_ALL;
    o->max_bytes = (int64_t)1 << 30;
    o->html_max_bytes = (int64_t)16 << 20;
    o->layers_str = o->heads_str = "all";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (trace_input_option(&o->in, argc, argv, &i)) continue;
        if (!strcmp(a, "--gen")) o->gen = (int)cli_int(a, cli_value(argc, argv, &i), 0, 1 << 22);
        else if (!strcmp(a, "--layers")) o->layers_str = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--heads")) o->heads_str = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--steps")) o->steps = parse_steps(cli_value(argc, argv, &i));
        else if (!strcmp(a, "--every")) o->every = (int)cli_int(a, cli_value(argc, argv, &i), 1, 1 << 22);
        else if (!strcmp(a, "--max-bytes")) {
            const char *v = cli_value(argc, argv, &i);
            if ((o->max_bytes = parse_bytes(v)) < 0) die("--max-bytes: '%s' is not a size (e.g. 1000000, 512M, 2G)", v);
        } else if (!strcmp(a, "--html")) o->html = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--html-max-bytes")) {
            const char *v = cli_value(argc, argv, &i);
            if ((o->html_max_bytes = parse_bytes(v)) < 0) die("--html-max-bytes: '%s' is not a size (e.g. 1000000, 16M)", v);
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) o->out = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--batch")) o->batch = (int)cli_int(a, cli_value(argc, argv, &i), 1, 65536);
        else if (policy_option(&o->policy, argc, argv, &i)) o->policy_given = 1;
        else if (!common_option(&o->common, argc, argv, &i)) die("trace: unknown option '%s' (kvlab trace --help)", a);
    }
    policy_cli_finish(&o->policy);
    if (!o->out) die("trace: -o RUN_DIR is required");
    if ((!!o->in.text + !!o->in.ids_str + !!o->in.file) != 1) die("trace: give exactly one of -p PROMPT, --ids LIST or -f FILE");
}

/* "all" or an ascending list of indices below `limit`. */
static int *parse_selection(const char *opt, const char *v, int limit, int *n) {
    if (!strcmp(v, "all")) {
        int *all = xmalloc((size_t)limit * sizeof(int));
        for (int i = 0; i < limit; i++) all[i] = i;
        *n = limit;
        return all;
    }
    int *list = cli_int_list(opt, v, 0, limit - 1, n);
    for (int i = 1; i < *n; i++)
        if (list[i] <= list[i - 1]) {
            free(list);
            die("%s: '%s' must be ascending without repeats", opt, v);
        }
    return list;
}

static void add_knobs(cJSON *knobs, const TraceOpts *o, const TracePlan *plan, size_t bytes) {
    trace_input_knobs(knobs, &o->in);
    cJSON_AddNumberToObject(knobs, "n_prompt", plan->n_prompt);
    cJSON_AddNumberToObject(knobs, "n_seqs", plan->n_seqs);
    cJSON_AddNumberToObject(knobs, "gen", plan->n_gen);
    cJSON_AddItemToObject(knobs, "layers", cJSON_CreateIntArray(plan->layers, plan->n_layers));
    cJSON_AddItemToObject(knobs, "heads", cJSON_CreateIntArray(plan->heads, plan->n_heads));
    cJSON_AddStringToObject(knobs, "steps", plan->steps == TRACE_ALL ? "all" : plan->steps == TRACE_PREFILL ? "prefill" : "decode");
    cJSON_AddNumberToObject(knobs, "every", plan->every);
    cJSON_AddNumberToObject(knobs, "n_queries", trace_plan_queries(plan, NULL));
    cJSON_AddNumberToObject(knobs, "max_bytes", (double)o->max_bytes);
    cJSON_AddNumberToObject(knobs, "trace_bytes", (double)bytes);
    cJSON_AddNumberToObject(knobs, "batch", o->batch);
    cJSON_AddStringToObject(knobs, "decoding", "greedy");
}

/* --html: one sequence, and a page below --html-max-bytes (refused before tracing). */
static void check_page_size(const TraceOpts *o, const TracePlan *plan, const Config *cfg) {
    if (plan->n_seqs != 1) die("--html: the page shows one sequence; this trace has %d (use -p, --ids or --chunks 1)", plan->n_seqs);
    size_t need = trace_page_bytes(plan, cfg);
    if (need > (size_t)o->html_max_bytes) {
        char a[32], b[32];
        die("--html-max-bytes: this selection makes a page of about %zu bytes (%s; %zu per layer x head x step), "
            "more than the limit %lld (%s): select fewer --layers/--heads/--steps, a larger --every, or raise --html-max-bytes",
            need, format_bytes((double)need, a, sizeof a), trace_page_row_bytes(plan->n_prompt + plan->n_gen),
            (long long)o->html_max_bytes, format_bytes((double)o->html_max_bytes, b, sizeof b));
    }
}

int cmd_trace(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) { help(); return 0; }
    double t_start = now_seconds();
    TraceOpts o;
    parse_args(&o, argc, argv);
    Model m;
    Tokenizer *tok;
    int ctx, n_seqs, seq_len;
    int *seqs = trace_input_load(&o.in, "trace", &o.common, 0, &m, &tok, &ctx, &n_seqs, &seq_len);
    if (seq_len + o.gen > ctx)
        die("--gen: %d prompt + %d decode tokens exceed the context of %d (--ctx, --chunk)", seq_len, o.gen, ctx);

    TracePlan plan = { .steps = o.steps, .every = o.every, .n_prompt = seq_len, .n_gen = o.gen, .n_seqs = n_seqs,
                       .with_policy = o.policy_given };
    int *layers = parse_selection("--layers", o.layers_str, m.cfg.n_layers, &plan.n_layers);
    int *heads = parse_selection("--heads", o.heads_str, m.cfg.n_heads, &plan.n_heads);
    plan.layers = layers;
    plan.heads = heads;
    Err err;
    Tracer *t = tracer_create(&m.cfg, &plan, (size_t)o.max_bytes, &err);
    if (!t) die("%s", err.msg);
    OutLock lock;   /* one writer per output directory */
    if (run_dir_lock(&lock, o.out, &err) != 0) die("%s", err.msg);
    if (o.html) check_page_size(&o, &plan, &m.cfg);
    if (make_dirs(o.out, &err) != 0) die("-o: %s", err.msg);

    KVCache cache;
    if (forward_cache_init(&m, &cache, seq_len + o.gen, &err) != 0) die("%s", err.msg);
    Forward *f = forward_create(&m, o.batch);
    Policy *policy = NULL;
    if (o.policy_given && !(policy = policy_create(&o.policy, &m.cfg, seq_len + o.gen, &err))) die("%s", err.msg);
    tracer_set_policy(t, policy);
    NumGuard *guard = numguard_attach(f, &m);   /* NaN/Inf logits: an error naming the layer and tensor */
    tracer_set_guard(t, guard);
    ProgressLine prog;
    progress_line_start(&prog, "trace", "tokens", (int64_t)n_seqs * (seq_len + o.gen), 0);
    StepHook hook = progress_hook(&prog);
    for (int s = 0; s < n_seqs; s++)
        if (tracer_run(t, f, &cache, seqs + (size_t)s * seq_len, s, &hook, &err) != 0) die("%s", err.msg);
    progress_line_end(&prog);

    char path[4200], size_s[32];
    path_join(path, sizeof path, o.out, "trace.npz");
    if (tracer_write_npz(t, path, &err) != 0) die("%s", err.msg);
    cJSON *meta = runmeta_new("trace", argc, argv, &m);
    size_t bytes = trace_plan_bytes(&plan, &m.cfg);
    add_knobs(runmeta_knobs(meta), &o, &plan, bytes);
    runmeta_add_policy(meta, &o.policy);
    sink_profile_add(meta, &m, seqs, seq_len);   /* on the first sequence's prompt */
    runmeta_add_output(meta, "trace.npz", "attn, key_norm, value_norm, query_pos, key_pos, layers, heads, kv_head, ids, n_prompt");
    if (o.html) {
        if (trace_page_write_run(o.out, meta, tok, (size_t)o.html_max_bytes, o.html, &err) != 0) die("%s", err.msg);
        cJSON_AddStringToObject(runmeta_knobs(meta), "html", o.html);
    }
    if (runmeta_write(meta, o.out, t_start, &err) != 0) die("%s", err.msg);
    outlock_release(&lock);
    fprintf(stderr, "trace: %d sequence(s) x %d queries x %d layers x %d heads (%s) -> %s\n", n_seqs,
            trace_plan_queries(&plan, NULL), plan.n_layers, plan.n_heads,
            format_bytes((double)bytes, size_s, sizeof size_s), o.out);

    numguard_free(guard);
    tracer_free(t);
    policy_free(policy);
    free(layers); free(heads); free(seqs);
    forward_free(f);
    kvcache_free(&cache);
    if (tok) tokenizer_free(tok);
    model_free(&m);
    return 0;
}
