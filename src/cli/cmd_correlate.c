/* cmd_correlate.c — `kvlab correlate`: per (layer, head) correlation between
 * key norms and attention, the paper's ALR and the attention loss of norm-based
 * eviction, streamed over chunks of a text (no attention map is stored). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "engine/forward.h"
#include "lab/metrics.h"
#include "lab/score_metrics.h"
#include "policy/policy.h"
#include "cli/trace_input.h"
#include "lab/runmeta.h"
#include "lab/trace.h"

static void help(void) {
    printf("usage: kvlab correlate -m MODEL (-f FILE [--chunk N --chunks K] | -p PROMPT | --ids LIST)\n"
           "                       [--query first-gen|all-decode|last-prefill] [--gen N] -o RUN_DIR\n\n"
           "For every layer and query head: Spearman rho and Pearson r between the key L2 norm\n"
           "and the attention a query pays each cached token; the L2 paper's ALR (Eqs. 5-7) and\n"
           "ALR/n; the attention mass lost when evicting 10%%..90%% of the tokens by keeping the\n"
           "lowest norms (L2), the highest norms, at random, or the highest attention (oracle);\n"
           "and each kept set's overlap with the oracle's. Mean and std over queries and chunks.\n"
           "Attention sinks, per layer: the mean attention on the first token, the share of\n"
           "heads putting more than 0.3 on it (Gu et al., arXiv 2410.10781: Sink_1^0.3, per\n"
           "layer, averaged over the measured queries) and the first token's key norm over the\n"
           "median key norm (per KV head, then the mean). A model without any such head gets\n"
           "a warning: the L2 paper's low-norm mechanism rests on the sink.\n"
           "Streaming: only the current attention rows are held, never a map.\n\n"
           "  -f, --file FILE      text file: K sequences of N tokens, each BOS + the next N-1 tokens\n"
           "      --chunk N        tokens per sequence, BOS included [1024]\n"
           "      --chunks K       sequences [32]\n"
           "  -p, --prompt TEXT    a single prompt instead (BOS prepended)\n"
           "      --ids LIST       a single prompt as token ids\n"
           "      --query WHICH    which queries are measured [first-gen]:\n"
           "                         first-gen    the query of the first generated token after the\n"
           "                                      chunk (greedy): the paper's protocol\n"
           "                         last-prefill the last row of the prompt\n"
           "                         all-decode   every step of --gen greedy decode steps\n"
           "      --gen N          greedy decode steps for --query all-decode and policy mode [128]\n"
           "      --seed S         seed of the random eviction baseline [1]\n"
           "      --score LIST     also measure these token scores, NAME[:k=v,...][,NAME...]: any\n"
           "                       policy with a per-token score (higher = keep; the list below),\n"
           "                       e.g. l2 (-|k|), l2-high (+|k|), vnorm (|v|, VATP), keydiff\n"
           "                       (-cos(k, mean key)), h2o, tova, snapkv, lagkv (rank inside its\n"
           "                       lag partition, as kvpress's LagKVPress), random, with the\n"
           "                       policies' own parameters (snapkv:window=16). Each score is taken just before\n"
           "                       the measured query's forward, over the tokens cached then (what\n"
           "                       a policy evicting after the previous forward ranks; attention\n"
           "                       scores have seen every earlier query), and compared with that\n"
           "                       query's attention on them: Spearman/Pearson of (score,\n"
           "                       attention) (positive = a good score), ALR, attention loss and\n"
           "                       oracle overlap when keeping the top scores. One table per score\n"
           "                       on stdout; metrics.csv/npz gain score_<NAME>_* rows/members\n"
           "                       (NAME with every character outside [A-Za-z0-9] as '_').\n"
           "                       Not with --query last-prefill or a policy option.\n"
           "  -o, --output DIR     run directory: metrics.csv, metrics.npz, meta.json (written last)\n"
           "      --batch N        tokens per prefill pass [512]\n"
           COMMON_OPTS_HELP
           "\nPolicy mode: any of the options below switches correlate to measuring a policy\n"
           "against the full cache instead: both caches take the same tokens (the full cache's\n"
           "greedy continuation, --gen steps per chunk) and at every decode step, per layer and\n"
           "head, attention_loss = the full-cache attention mass on the tokens the policy evicted,\n"
           "oracle_loss = the same for keeping the top-k attention (k = what the policy kept),\n"
           "overlap_oracle = |kept & oracle kept| / k, kept_fraction = k / n. Reported per step\n"
           "(attention_loss@500, @1000, ... like cold-compress) and per layer x head.\n"
           "Outputs: policy_loss.csv (layer,head,kv_head,metric,mean,std,n), policy_steps.csv\n"
           "(step,<metric>_mean,<metric>_std,...,n), policy.npz, meta.json. --query does not apply.\n"
           POLICY_OPTS_HELP
           "\nmetrics.csv columns: layer,head,kv_head,metric,ratio,mean,std,n (std: sample, n-1;\n"
           "ratio empty for scalar metrics). Metrics: spearman, pearson, alr, alr_per_n,\n"
           "loss_{lownorm,highnorm,random,oracle} (attention mass evicted at compression ratio\n"
           "`ratio` = fraction removed, keep = max(1, floor(n(1-ratio)))), overlap_{lownorm,highnorm,\n"
           "random} (|kept & oracle kept| / keep), then first_token_attn (attention on the first\n"
           "token) and first_key_norm_ratio (its key norm / the median key norm of the head's KV\n"
           "head) for every layer x head, then one row per layer with head and kv_head empty:\n"
           "sink_first_token_attn (mean over heads), sink_head_share (share of heads with\n"
           "first_token_attn > 0.3), sink_key_norm_ratio (mean over KV heads); their std is the\n"
           "spread over those heads (nan for the share), n their number (KV heads for the ratio).\n"
           "metrics.npz: ratios [9]; <metric>_mean, <metric>_std (f64), <metric>_n (i64), each\n"
           "[layers, heads] for scalars and [layers, heads, 9] for loss_* / overlap_*;\n"
           "sink_first_token_attn, sink_head_share, sink_key_norm_ratio [layers].\n\n");
    /* the scores --score takes: every registered policy with a score function */
    printf("Scores for --score:");
    for (int i = 0; i < policy_count(); i++)
        if (policy_at(i)->score && !(policy_at(i)->flags & POLICY_NEVER_EVICTS)) printf(" %s", policy_at(i)->name);
    printf("\n\n");
    policy_print_help(stdout);
    cli_print_file_notes(stdout, HELP_INPUTS | HELP_OUTPUT);
}

typedef struct {
    CommonOpts common;
    PolicyOpts policy;
    int policy_mode;          /* a policy option was given: measure it against the full cache */
    TraceInput in;
    const char *out;
    const char *scores;       /* --score LIST, or NULL */
    int gen, batch;
    QueryMode query;
    long seed;
} CorrOpts;

static void parse_args(CorrOpts *o, int argc, char **argv) {
    memset(o, 0, sizeof *o);
    common_defaults(&o->common);
    policy_defaults(&o->policy);
    o->in.chunk = 1024; o->in.chunks = 32; o->gen = 128; o->batch = 512; o->seed = 1;
    o->query = QUERY_FIRST_GEN;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (trace_input_option(&o->in, argc, argv, &i)) continue;
        if (!strcmp(a, "--gen")) o->gen = (int)cli_int(a, cli_value(argc, argv, &i), 1, 1 << 22);
        else if (!strcmp(a, "--seed")) o->seed = cli_int(a, cli_value(argc, argv, &i), 0, (1L << 62));
        else if (!strcmp(a, "--query")) {
            const char *v = cli_value(argc, argv, &i);
            if (query_mode_parse(v, &o->query) != 0) die("--query: '%s' is not first-gen, all-decode or last-prefill", v);
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) o->out = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--score")) o->scores = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--batch")) o->batch = (int)cli_int(a, cli_value(argc, argv, &i), 1, 65536);
        else if (policy_option(&o->policy, argc, argv, &i)) o->policy_mode = 1;
        else if (!common_option(&o->common, argc, argv, &i)) die("correlate: unknown option '%s' (kvlab correlate --help)", a);
    }
    if (o->policy_mode) policy_cli_finish(&o->policy);
    if (!o->out) die("correlate: -o RUN_DIR is required");
    if (o->scores && o->policy_mode) die("--score: measures scores on the full cache; not with a policy option");
    if (o->scores && o->query == QUERY_LAST_PREFILL)
        die("--score: scores are taken before a decode query; not with --query last-prefill");
    if ((!!o->in.text + !!o->in.ids_str + !!o->in.file) != 1) die("correlate: give exactly one of -f FILE, -p PROMPT or --ids LIST");
}

/* Per layer: the mean over heads of the per-head mean ρ, and the spread of
 * those head means, and the sink diagnostics (the quick look; the CSV has
 * everything). */
static void print_summary(const Correlator *c, const Config *cfg, FILE *out) {
    fprintf(out, "layer  spearman(mean over heads, min..max)   pearson   ALR/n   loss@50%% lownorm / oracle / random"
                 "   attn on first token   heads > 0.3   first key norm / median\n");
    for (int l = 0; l < cfg->n_layers; l++) {
        double rho = 0, lo = 1e9, hi = -1e9, r = 0, alr = 0, ll = 0, lo_ = 0, lr = 0;
        for (int h = 0; h < cfg->n_heads; h++) {
            const MetricsAcc *a = correlator_acc(c, l, h);
            double x = metrics_acc_mean(a, SLOT_SPEARMAN);
            rho += x; lo = x < lo ? x : lo; hi = x > hi ? x : hi;
            r += metrics_acc_mean(a, SLOT_PEARSON);
            alr += metrics_acc_mean(a, SLOT_ALR_N);
            ll += metrics_acc_mean(a, SLOT_LOSS + EVICT_LOWNORM * METRICS_N_RATIOS + 4);
            lo_ += metrics_acc_mean(a, SLOT_LOSS + EVICT_ORACLE * METRICS_N_RATIOS + 4);
            lr += metrics_acc_mean(a, SLOT_LOSS + EVICT_RANDOM * METRICS_N_RATIOS + 4);
        }
        int H = cfg->n_heads;
        LayerSink ls = correlator_layer_sink(c, l);
        fprintf(out, "%5d  %+.3f (%+.3f..%+.3f)                %+.3f    %.4f  %.3f / %.3f / %.3f"
                     "                  %.3f         %2d/%-2d         %.3f\n", l, rho / H, lo, hi,
                r / H, alr / H, ll / H, lo_ / H, lr / H, ls.first_token_attn, ls.sink_heads, H, ls.key_norm_ratio);
    }
}

/* One line on stderr when no head of any layer is an attention sink. */
static void warn_without_sink(const Correlator *c, const Config *cfg) {
    double top = -1;
    int top_l = 0, top_h = 0;
    for (int l = 0; l < cfg->n_layers; l++) {
        if (correlator_layer_sink(c, l).sink_heads > 0) return;
        for (int h = 0; h < cfg->n_heads; h++) {
            double a = metrics_acc_mean(correlator_acc(c, l, h), SLOT_FIRST_ATTN);
            if (a > top) { top = a; top_l = l; top_h = h; }
        }
    }
    fprintf(stderr, "kvlab: correlate: warning: no attention sink: no head puts more than %.1f of its attention on "
            "the first token (at most %.3f: layer %d head %d); the L2 paper's low-norm mechanism needs one\n",
            SINK_THRESHOLD, top, top_l, top_h);
}

static void add_knobs(cJSON *knobs, const CorrOpts *o, int n_seqs, int seq_len) {
    trace_input_knobs(knobs, &o->in);
    cJSON_AddNumberToObject(knobs, "chunk", seq_len);
    cJSON_AddNumberToObject(knobs, "chunks", n_seqs);
    cJSON_AddNumberToObject(knobs, "chunks_requested", o->in.file ? o->in.chunks : 1);
    cJSON_AddStringToObject(knobs, "query", query_mode_name(o->query));
    cJSON_AddNumberToObject(knobs, "gen", o->query == QUERY_ALL_DECODE ? o->gen : o->query == QUERY_FIRST_GEN ? 1 : 0);
    cJSON_AddNumberToObject(knobs, "seed", (double)o->seed);
    cJSON_AddNumberToObject(knobs, "batch", o->batch);
    cJSON_AddStringToObject(knobs, "decoding", "greedy");
    cJSON_AddStringToObject(knobs, "compression_ratio", "fraction removed; keep = max(1, floor(n*(1-ratio)))");
}

/* --score: the scores as given and their member-name keys (only when asked,
 * so the meta of a key-norm run stays as it was). */
static void add_scores(cJSON *knobs, const ScoreSet *s) {
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; i < scoreset_count(s); i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "score", scoreset_spec(s, i));
        cJSON_AddStringToObject(o, "key", scoreset_key(s, i));
        cJSON_AddItemToArray(arr, o);
    }
    cJSON_AddItemToObject(knobs, "scores", arr);
}

static void add_timing(cJSON *meta, const CorrelatorTiming *t) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "prefill_seconds", t->prefill_seconds);
    cJSON_AddNumberToObject(o, "prefill_tokens", (double)t->prefill_tokens);
    cJSON_AddNumberToObject(o, "decode_seconds", t->decode_seconds);
    cJSON_AddNumberToObject(o, "decode_steps", (double)t->decode_steps);
    cJSON_AddNumberToObject(o, "metric_seconds", t->metric_seconds);
    cJSON_AddNumberToObject(o, "rows_measured", (double)t->rows);
    cJSON_AddItemToObject(meta, "timing", o);
}

static void write_outputs(const Correlator *c, const ScoreSet *scores, const CorrOpts *o, const Model *m,
                          int argc, char **argv, int n_seqs, int seq_len, double t_start) {
    Err err;
    char path[4200];
    if (make_dirs(o->out, &err) != 0) die("-o: %s", err.msg);
    path_join(path, sizeof path, o->out, "metrics.csv");
    if (correlator_write_csv(c, path, &err) != 0) die("%s", err.msg);
    path_join(path, sizeof path, o->out, "metrics.npz");
    if (correlator_write_npz(c, path, &err) != 0) die("%s", err.msg);
    cJSON *meta = runmeta_new("correlate", argc, argv, m);
    add_knobs(runmeta_knobs(meta), o, n_seqs, seq_len);
    if (scores) add_scores(runmeta_knobs(meta), scores);
    CorrelatorTiming t = correlator_timing(c);
    add_timing(meta, &t);
    runmeta_add_output(meta, "metrics.csv", "layer,head,kv_head,metric,ratio,mean,std,n");
    runmeta_add_output(meta, "metrics.npz", "ratios; <metric>_mean/_std/_n [layers, heads(, 9)]; sink_* [layers]");
    if (runmeta_write(meta, o->out, t_start, &err) != 0) die("%s", err.msg);
}

/* attention_loss@N (cold-compress): the step-N value, mean over chunks, layers
 * and heads, at N = 500, 1000, ... and the last step; and the mean up to N. */
static void print_probe_summary(const PolicyProbe *pp, int n_steps, FILE *out) {
    double sum = 0;
    int64_t cnt = 0;
    fprintf(out, "step   attention_loss@step (std)   mean over steps 1..N   oracle_loss   overlap_oracle   kept\n");
    for (int s = 1; s <= n_steps; s++) {
        const RunStat *l = policy_probe_step(pp, s, PROBE_LOSS);
        sum += l->mean * l->n;
        cnt += l->n;
        if (s % 500 != 0 && s != n_steps && s != 1) continue;
        fprintf(out, "%5d  %.4f (%.4f)             %.4f                 %.4f        %.4f           %.3f\n", s, l->mean,
                runstat_std(l), cnt ? sum / cnt : NAN, policy_probe_step(pp, s, PROBE_ORACLE_LOSS)->mean,
                policy_probe_step(pp, s, PROBE_OVERLAP)->mean, policy_probe_step(pp, s, PROBE_KEPT)->mean);
    }
}

/* Policy mode: the policy's cache against the full cache, step by step. */
static void run_policy_probe(const CorrOpts *o, const Model *m, const int *seqs, int n_seqs, int seq_len,
                             int argc, char **argv, double t_start) {
    Err err;
    int total = seq_len + o->gen;
    KVCache full, pcache;
    if (forward_cache_init(m, &full, total, &err) != 0 || forward_cache_init(m, &pcache, total, &err) != 0)
        die("%s", err.msg);
    Policy *policy = policy_create(&o->policy, &m->cfg, total, &err);
    if (!policy) die("%s", err.msg);
    Forward *f = forward_create(m, o->batch);
    PolicyProbe *pp = policy_probe_create(&m->cfg, total, o->gen);
    ProgressLine prog;
    progress_line_start(&prog, "correlate", "tokens", (int64_t)n_seqs * total, 0);
    StepHook hook = progress_hook(&prog);
    for (int s = 0; s < n_seqs; s++)
        if (policy_probe_run(pp, f, &full, &pcache, policy, seqs + (size_t)s * seq_len, seq_len, &hook, &err) != 0)
            die("%s", err.msg);
    progress_line_end(&prog);

    if (make_dirs(o->out, &err) != 0) die("-o: %s", err.msg);
    if (policy_probe_write(pp, o->out, &err) != 0) die("%s", err.msg);
    cJSON *meta = runmeta_new("correlate", argc, argv, m);
    add_knobs(runmeta_knobs(meta), o, n_seqs, seq_len);
    cJSON_ReplaceItemInObject(runmeta_knobs(meta), "query", cJSON_CreateString("policy"));
    cJSON_ReplaceItemInObject(runmeta_knobs(meta), "gen", cJSON_CreateNumber(o->gen));
    runmeta_add_policy(meta, &o->policy);
    runmeta_add_output(meta, "policy_loss.csv", "layer,head,kv_head,metric,mean,std,n");
    runmeta_add_output(meta, "policy_steps.csv", "step,<metric>_mean,<metric>_std,...,n");
    runmeta_add_output(meta, "policy.npz", "<metric>_mean/_std/_n [layers, heads]; steps_<metric>_mean/_std [steps]");
    if (runmeta_write(meta, o->out, t_start, &err) != 0) die("%s", err.msg);
    print_probe_summary(pp, o->gen, stderr);
    PolicyTiming pt = policy_timing(policy);
    fprintf(stderr, "correlate: policy %s, %d chunk(s) of %d tokens + %d decode steps, %ld slots evicted -> %s\n",
            o->policy.name, n_seqs, seq_len, o->gen, pt.evicted, o->out);
    policy_probe_free(pp);
    forward_free(f);
    policy_free(policy);
    kvcache_free(&full);
    kvcache_free(&pcache);
}

int cmd_correlate(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) { help(); return 0; }
    double t_start = now_seconds();
    CorrOpts o;
    parse_args(&o, argc, argv);
    Model m;
    Tokenizer *tok;
    int ctx, n_seqs, seq_len;
    int *seqs = trace_input_load(&o.in, "correlate", &o.common, 1, &m, &tok, &ctx, &n_seqs, &seq_len);
    int steps = o.policy_mode || o.query == QUERY_ALL_DECODE ? o.gen : o.query == QUERY_FIRST_GEN ? 1 : 0;
    if (seq_len + steps > ctx)
        die("%s: %d prompt + %d decode tokens exceed the context of %d (--ctx, --chunk)",
            o.policy_mode || o.query == QUERY_ALL_DECODE ? "--gen" : "--chunk", seq_len, steps, ctx);
    Err err;
    OutLock lock;   /* one writer per output directory, for the whole run */
    if (run_dir_lock(&lock, o.out, &err) != 0) die("%s", err.msg);
    if (o.policy_mode) {
        run_policy_probe(&o, &m, seqs, n_seqs, seq_len, argc, argv, t_start);
        outlock_release(&lock);
        free(seqs);
        if (tok) tokenizer_free(tok);
        model_free(&m);
        return 0;
    }

    KVCache cache;
    if (forward_cache_init(&m, &cache, seq_len + steps, &err) != 0) die("%s", err.msg);
    Forward *f = forward_create(&m, o.batch);
    Correlator *c = correlator_create(&m.cfg, seq_len + steps, (uint64_t)o.seed);
    ScoreSet *scores = NULL;
    if (o.scores) {
        if (!(scores = scoreset_create(o.scores, &m.cfg, seq_len + steps, &err))) die("%s", err.msg);
        correlator_set_scores(c, scores);
    }
    ProgressLine prog;
    progress_line_start(&prog, "correlate", "tokens", (int64_t)n_seqs * (seq_len + steps), 0);
    StepHook hook = progress_hook(&prog);
    for (int s = 0; s < n_seqs; s++)
        if (correlator_run(c, f, &cache, seqs + (size_t)s * seq_len, seq_len, o.query, o.gen, s, &hook, &err) != 0)
            die("%s", err.msg);
    progress_line_end(&prog);

    write_outputs(c, scores, &o, &m, argc, argv, n_seqs, seq_len, t_start);
    if (scores) scoreset_print_tables(scores, stdout);
    outlock_release(&lock);
    CorrelatorTiming t = correlator_timing(c);
    print_summary(c, &m.cfg, stderr);
    warn_without_sink(c, &m.cfg);
    double steps_n = t.decode_steps > 0 ? (double)t.decode_steps : 1;
    double metric_decode = o.query == QUERY_LAST_PREFILL ? 0 : t.metric_seconds;   /* collected after decode steps */
    double fwd_ms = (t.decode_seconds - metric_decode) / steps_n * 1e3, met_ms = metric_decode / steps_n * 1e3;
    fprintf(stderr, "correlate: %d chunk(s) of %d tokens, query %s; prefill %.1f tok/s; decode %lld steps, "
            "%.2f ms/step = forward %.2f + metrics %.2f (x%.2f of plain decoding) -> %s\n",
            n_seqs, seq_len, query_mode_name(o.query),
            t.prefill_tokens / (t.prefill_seconds > 0 ? t.prefill_seconds : 1), (long long)t.decode_steps,
            fwd_ms + met_ms, fwd_ms, met_ms, fwd_ms > 0 ? (fwd_ms + met_ms) / fwd_ms : 1.0, o.out);

    correlator_free(c);
    scoreset_free(scores);
    free(seqs);
    forward_free(f);
    kvcache_free(&cache);
    if (tok) tokenizer_free(tok);
    model_free(&m);
    return 0;
}
