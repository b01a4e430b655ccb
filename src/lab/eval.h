/* eval.h — the pieces of the evaluations (`kvlab ppl`, `kvlab passkey`,
 * `kvlab needle`; ../shared/spec/methods.md §6) that tests check on their
 * own: the per-token scores of the perplexity protocol, the passkey prompt
 * builder and answer parser, the needle insertion and score, and the seeded
 * generator every random choice comes from. */
#ifndef KVLAB_EVAL_H
#define KVLAB_EVAL_H

#include <stdint.h>

#include "engine/forward.h"
#include "engine/kvcache.h"
#include "engine/numcheck.h"
#include "policy/policy.h"
#include "lab/runlog.h"
#include "model/tokenizer.h"

/* ---- seeded randomness: one independent splitmix64 stream per unit ------------------- */

typedef struct { uint64_t s; } EvalRng;
/* The stream of unit `unit` of a run with seed `seed`: independent of which
 * units ran before, so a resumed run draws exactly what a full run draws. */
EvalRng eval_rng(uint64_t seed, uint64_t stream, uint64_t unit);
uint64_t eval_next(EvalRng *r);
double eval_uniform(EvalRng *r);                     /* [0, 1), 53 bits */

/* ---- perplexity (../shared/spec/methods.md §6): one token per forward, the policy after each step ---- */

typedef struct {
    double nll, nll_ref;      /* -log p(target) under the policy's / the full cache's logits */
    double kl;                /* KL(P_full || P_policy), nats */
    int correct, correct_ref; /* argmax == target */
    int agree;                /* argmax of the two runs equal */
    double kv;                /* slots per (layer, KV head) after the step's eviction */
} PplToken;

/* Scores of one prediction from the two logit rows (ref may be NULL: the
 * reference columns are then NaN / -1). Sums in double. */
void ppl_token_score(const float *logits, const float *ref, int vocab, int target, PplToken *out);

typedef struct {
    Forward *f, *f_ref;       /* f_ref NULL: no reference run */
    KVCache *cache, *cache_ref;
    Policy *policy;           /* NULL = full cache */
    int ref_is_policy;        /* the policy never evicts: the reference is the run itself */
    int vocab;
    NumGuard *guard;          /* NULL: logits not checked (numcheck.h) */
    struct OutputError *output_error;   /* NULL: not measured (output_error.h; needs f_ref) */
} PplRunner;

/* Runs ids[0..n) one token at a time from an empty cache (policy_forward:
 * forward, then the schedule's eviction) and scores the n-1 predictions into
 * out[0..n-1). tick (may be NULL) is called after each token. */
int ppl_run_sequence(PplRunner *r, const int *ids, int n, PplToken *out,
                     void (*tick)(void *ctx), void *tick_ctx, Err *err);

/* ---- passkey (../shared/spec/methods.md §6, the Landmark-attention prompt) --------------- */

#define PASSKEY_TASK "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz you about the important information there."
#define PASSKEY_GARBAGE "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again."
#define PASSKEY_QUESTION "What is the pass key? The pass key is"

/* The key: digits == 5 -> uniform in [1, 50000) (as the Landmark code's
 * randint); otherwise `digits` random digits, the first one non-zero. */
void passkey_make_key(EvalRng *rng, int digits, char *key, int size);
/* garbage_inf[:n] where garbage_inf = " ".join([garbage] * 5000) (for n up to its length). */
char *passkey_garbage(int n);
/* "\n".join([task, garbage_inf[:n_prefix], info, garbage_inf[:n_garbage-n_prefix], question]) */
char *passkey_prompt(int n_garbage, int n_prefix, const char *key);
/* Largest n_garbage whose prompt (BOS included) has at most `tokens` tokens,
 * with the key at fraction `depth` of the garbage (n_prefix = floor(depth * n)).
 * Returns n_garbage (>= 0) with *n_tokens, or -1 if even n_garbage = 0 is too long. */
int passkey_fit(const Tokenizer *tok, int tokens, double depth, const char *key, int *n_tokens, Err *err);
/* The first run of decimal digits in text, into out ("" if none). */
void passkey_first_integer(const char *text, char *out, int size);
/* Correct iff the first integer of the answer equals the key (../shared/spec/methods.md §6). */
int passkey_correct(const char *answer, const char *key);
/* Length of the longest common substring of a and b. */
int longest_common_substring(const char *a, const char *b);

/* ---- needle in a haystack (../shared/spec/methods.md §6, Kamradt + the L2 paper's scoring) ---- */

#define NEEDLE_TEXT "The best thing to do in San Francisco is eat a sandwich and sit in Dolores Park on a sunny day."
#define NEEDLE_QUESTION "What is the best thing to do in San Francisco?"
#define NEEDLE_PROMPT_HEAD "This is a very long story book: <book> "
#define NEEDLE_PROMPT_TAIL " </book>.\n Based on the content of the book, Question: %s\nAnswer:"

/* Is token id a sentence end (its piece, spaces aside, is ".")? */
int needle_is_period(const Tokenizer *tok, int id);
/* Kamradt insert_needle in token space: the context is cut to `budget` -
 * n_needle tokens; the needle goes at floor(len * depth/100), moved back to
 * just after the previous period token (depth 100: at the end). Writes the
 * new context to out (room for n_context + n_needle) and returns its length;
 * *insert_at receives the needle's first index. */
int needle_insert(const Tokenizer *tok, const int *context, int n_context, const int *needle, int n_needle,
                  int budget, double depth_percent, int *out, int *insert_at);
/* |words(answer) ∩ words(needle)| / |words(needle)|: lower-cased words
 * (runs of letters, digits and apostrophes), as sets. */
double needle_score(const char *answer, const char *needle);

/* ---- shared by the three commands ----------------------------------------------------- */

/* Greedy continuation after a prompt already run through policy_forward:
 * the first token comes from forward_last_logits (the full cache when the
 * schedule is `prefill`), then up to max_new-1 more decode steps. Stops at EOS
 * or when the context is full. Returns the number of tokens in out. */
int eval_greedy(Policy *p, Forward *f, KVCache *c, int vocab, int eos_id, int max_new, int ctx, int *out, Err *err);
/* Mean slots per (layer, KV head) in the cache now. */
double eval_kv_per_head(const KVCache *c);

/* The options the three commands share: -o, --resume and the policy options
 * (policy.h); the model options are the command's (cli/cli.h CommonOpts). */
typedef struct {
    PolicyOpts po;
    const char *out_dir;
    int resume;
} EvalOpts;
void eval_opts_defaults(EvalOpts *o);
/* Consume argv[*i] if it is one of the shared options (returns 1). */
int  eval_option(EvalOpts *o, int argc, char **argv, int *i);
/* -o is required; resolve the policy (dies with one line on a bad option).
 * passkey/needle pass default_schedule = SCHED_PREFILL: the L2 paper's
 * protocol (../shared/spec/methods.md §1) unless --schedule was given. */
void eval_opts_finish(EvalOpts *o, const char *command, Schedule default_schedule);

struct cJSON;
/* config.json's common part: command, model identity (path, bytes, mtime),
 * compute dtype, tokenizer, context, policy (every knob). The caller adds its
 * own knobs under "knobs" and prints it with cJSON_PrintUnformatted. */
struct cJSON *eval_config_new(const char *command, const EvalOpts *o, const Model *m, const char *tokenizer_path, int ctx);
/* The "knobs" object of such a config. */
struct cJSON *eval_config_knobs(struct cJSON *config);

/* Write a text file atomically into the run directory. */
int eval_write_text(const char *dir, const char *name, const char *text, Err *err);

/* ---- passkey and needle: one prompt and a greedy answer per unit ------------------------- */

typedef struct {
    Model m;
    Tokenizer *tok;
    int ctx;
    Forward *f;
    KVCache cache;
    Policy *policy;
    NumGuard *guard;          /* NaN/Inf in the logits stops the run, naming the layer and tensor */
    Buf head_rows;            /* eval_answer: the unit's EVAL_HEAD_COLUMNS rows (policies that evict) */
} EvalEngine;

/* head_budgets.csv of passkey and needle: per trial, each (layer, KV head)'s
 * budget at the eviction after the prompt (empty: no eviction then, e.g. a
 * skipped layer or a decode-time schedule) and the slots it holds after it.
 * With --budget-alloc adaptive the heads of a layer hold different numbers. */
#define EVAL_HEAD_COLUMNS "layer,kv_head,budget,slots"


/* With e->m, e->tok and e->ctx loaded (cli.h common_load): the cache (ctx),
 * a forward of `batch` tokens a pass and the policy. */
void eval_engine_start(EvalEngine *e, const EvalOpts *o, int batch);
void eval_engine_free(EvalEngine *e);

/* Prefill ids[0..n) from an empty cache (policy_forward: the eviction of the
 * schedule), then eval_greedy for up to max_new tokens: the answer's text.
 * *kv = eval_kv_per_head after the prefill; e->head_rows = the per-head
 * budgets and slots after it (when the policy evicts). Dies on error. */
char *eval_answer(EvalEngine *e, const int *ids, int n, int max_new, double *kv);

/* Open the run directory (config.json written, resume checked) and start meta.json. */
RunLog *eval_log_open(const char *command, const EvalOpts *o, const EvalEngine *e, const char *config,
                      const char *columns, long n_units, int argc, char **argv, struct cJSON **meta);

/* Every unit not yet in the log: run(opts, state, unit, row) fills its row,
 * appended to the log with e->head_rows as its detail rows; a progress line
 * counts `unit_name`s. */
typedef void (*EvalUnitFn)(const void *opts, void *state, long unit, Buf *row);
void eval_run_units(RunLog *log, const EvalEngine *e, const char *command, const char *unit_name, long n_units,
                    EvalUnitFn run, const void *opts, void *state);

/* results.csv, summary.csv (csv) and summary.json (summary, pretty-printed). Dies on error. */
void eval_write_summaries(RunLog *log, const char *csv, const struct cJSON *summary);
/* meta.json, last: the summary (now owned by meta), what results.csv and
 * summary.csv hold; for a policy that evicts, head_budgets.csv and the mean
 * budget and slots per (layer, KV head) over the units; then runlog_finish.
 * Dies on error. */
void eval_finish_meta(RunLog *log, const EvalEngine *e, struct cJSON *meta, struct cJSON *summary,
                      const char *results_what, const char *summary_what, double t_start);

/* ---- passkey and needle: the summary over the length x depth grid ------------------------- */

/* Means of each unit's values (passkey: correct, partial; needle: score) per
 * (length, depth) cell, per length, per depth and overall. */
#define GRID_MAX_VALUES 2
typedef struct { double sum[GRID_MAX_VALUES]; long n; } GridMean;
typedef struct {
    const int *lengths, *depths;   /* the labels of the rows and columns (not owned) */
    int n_lengths, n_depths, n_values;
    GridMean *cell;                /* [n_lengths * n_depths] */
    GridMean *by_length, *by_depth, all;
} Grid;

void grid_init(Grid *g, const int *lengths, int n_lengths, const int *depths, int n_depths, int n_values);
/* One unit's values[0 .. n_values) into its cell, its length, its depth and the total. */
void grid_add(Grid *g, int length_index, int depth_index, const double *values);
/* summary.csv: the header line, then LENGTH,DEPTH,N,mean... (%.6g) for every
 * non-empty cell, every length (DEPTH "all"), every depth (LENGTH "all") and
 * all. Returns a malloc'ed string. */
char *grid_csv(const Grid *g, const char *header);
void grid_free(Grid *g);

#endif
