/* trace.h — record selected attention rows next to the key/value norms and
 * positions of the tokens they look at, with bounded memory; plus the small
 * run-directory helpers `kvlab trace` and `kvlab correlate` share (the input
 * options and text chunks, a progress hook, meta.json).
 *
 * What a trace holds (written as trace.npz by tracer_write_npz), with
 * S sequences (chunks), NL selected layers, NH selected query heads, Q recorded
 * queries per sequence, P = n_prompt + n_gen positions, KV key/value heads:
 *
 *   attn        f32 [S, NL, NH, Q, P]  attention of query q on the token at
 *                                      ORIGINAL position p; NaN where the query
 *                                      does not see p (the causal future, or a
 *                                      token that is no longer in the cache)
 *   key_norm    f32 [S, NL, KV, P]     ‖k‖₂ of the cached key of position p
 *                                      (RoPE is a rotation: the same before and after)
 *   value_norm  f32 [S, NL, KV, P]     ‖v‖₂ of its value
 *   query_pos   i32 [Q]                position of each recorded query
 *   key_pos     i32 [P]                0..P-1 (the last axis of attn / key_norm)
 *   layers      i32 [NL], heads i32 [NH], kv_head i32 [NH] (KV head of each selected head)
 *   ids         i32 [S, P]             tokens: the prompt, then the greedy continuation
 *   n_prompt    i32 []                 prompt length (positions >= n_prompt were generated)
 *
 * The query of generated token s sits at position n_prompt + s: decode step s
 * runs that token and its attention row looks at positions 0..n_prompt+s.
 *
 * With an eviction policy (tracer_set_policy), a recorded row is NaN on the
 * tokens the policy had evicted before that step: the kept set of query q is
 * isfinite(attn[..., q, :]) (the same for every query head of a KV head), and
 * the norms of evicted tokens are still recorded (taken before eviction). */
#ifndef KVLAB_TRACE_H
#define KVLAB_TRACE_H

#include <stddef.h>
#include <stdint.h>

#include "cli/cli.h"
#include "engine/forward.h"
#include "lab/metrics.h"
#include "model/model.h"
#include "policy/policy.h"
#include "lab/progress.h"
#include "model/tokenizer.h"

typedef enum { TRACE_PREFILL = 1, TRACE_DECODE = 2, TRACE_ALL = 3 } TraceSteps;

typedef struct {
    int n_layers;  const int *layers;   /* selected layers, distinct, ascending */
    int n_heads;   const int *heads;    /* selected query heads, distinct, ascending */
    TraceSteps steps;                   /* which queries: prompt rows, decode rows, or both */
    int every;                          /* keep every K-th selected query, counted back from
                                           the last one (so the last is always kept) */
    int n_prompt;                       /* tokens per sequence, BOS included */
    int n_gen;                          /* greedy decode steps after the prompt */
    int n_seqs;                         /* sequences (chunks) */
} TracePlan;

/* The query positions the plan records, ascending (pos may be NULL); returns Q. */
int trace_plan_queries(const TracePlan *p, int *pos);
/* Bytes the trace holds in memory (and, before compression, on disk). */
size_t trace_plan_bytes(const TracePlan *p, const Config *cfg);

typedef struct Tracer Tracer;

/* Refuses (returns NULL, err names the size needed) when the plan needs more
 * than max_bytes, or selects a layer/head the model does not have. */
Tracer *tracer_create(const Config *cfg, const TracePlan *plan, size_t max_bytes, Err *err);
void tracer_free(Tracer *t);
/* Run sequence seq_index: prompt[0..plan.n_prompt) into an empty cache, then
 * plan.n_gen greedy decode steps (EOS does not stop them: the shapes stay fixed). */
int tracer_run(Tracer *t, Forward *f, KVCache *cache, const int *prompt, int seq_index,
               const StepHook *hook, Err *err);
/* Evict with this policy during tracer_run (NULL: none; the tracer does not own it). */
struct Policy;
void tracer_set_policy(Tracer *t, struct Policy *p);
/* Check the logits of every traced forward with this guard (numcheck.h):
 * NaN/Inf weights stop the trace with the layer and tensor, instead of
 * recording NaN attention (NULL: no check). */
struct NumGuard;
void tracer_set_guard(Tracer *t, struct NumGuard *g);
int tracer_write_npz(const Tracer *t, const char *path, Err *err);

/* ---- run-directory helpers ------------------------------------------------------ */

/* Text -> n_chunks sequences of `chunk` tokens, each [BOS] + the next chunk-1
 * tokens of the file (consecutive, non-overlapping). Only whole chunks are
 * returned: *n_got may be smaller than asked (never 0: that is an error). */
int *text_chunks(const Tokenizer *tok, const char *path, int chunk, int n_chunks, int *n_got, Err *err);

/* "1G", "512M", "64k", "1000" -> bytes (K = 1024). -1 on a bad value. */
int64_t parse_bytes(const char *s);
/* Human size: "1.5 GiB". */
const char *format_bytes(double bytes, char *buf, size_t size);

/* A StepHook that adds each step's tokens to a progress line (progress.h). */
StepHook progress_hook(ProgressLine *p);

/* The input of `kvlab trace` and `kvlab correlate`: one prompt (-p TEXT or
 * --ids LIST) or -f FILE cut into `chunks` sequences of `chunk` tokens. */
typedef struct {
    const char *text, *ids_str, *file;
    int chunk, chunks;
} TraceInput;
/* If argv[*i] is -p/--prompt, --ids, -f/--file, --chunk or --chunks, consume it and return 1. */
int trace_input_option(TraceInput *in, int argc, char **argv, int *i);
/* Load the model, its tokenizer (*tok NULL for --ids) and the context, then the
 * sequences, all of the same length: returns *n_seqs x *seq_len ids. Dies on
 * error; a short file is a warning starting with `command`. check_chunk: refuse
 * a --chunk longer than the context. */
int *trace_input_load(const TraceInput *in, const char *command, const CommonOpts *co, int check_chunk,
                      Model *m, Tokenizer **tok, int *ctx, int *n_seqs, int *seq_len);
struct cJSON;
/* knobs "input" (file, prompt or ids), "file", "prompt". */
void trace_input_knobs(struct cJSON *knobs, const TraceInput *in);

/* meta.json: the run's command line, model (path, format, size, mtime, shape),
 * git describe of kvlab, ISA, threads, start time; the caller adds "knobs" and
 * "outputs" (cJSON objects: see cJSON.h) and then writes it LAST, so a run
 * directory without meta.json is unfinished. */
struct cJSON;
struct cJSON *runmeta_new(const char *command, int argc, char **argv, const Model *m);
struct cJSON *runmeta_knobs(struct cJSON *meta);       /* the "knobs" object */
void runmeta_add_output(struct cJSON *meta, const char *file, const char *what);
/* meta's "policy": policy_json of the options. */
void runmeta_add_policy(struct cJSON *meta, const PolicyOpts *po);
/* Adds wall_seconds (now − t_start), writes RUN_DIR/meta.json atomically, frees meta. */
int runmeta_write(struct cJSON *meta, const char *run_dir, double t_start, Err *err);

/* mkdir -p */
int make_dirs(const char *path, Err *err);

#endif
