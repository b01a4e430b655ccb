/* trace.h — record selected attention rows next to the key/value norms and
 * positions of the tokens they look at, with bounded memory. (The run-directory
 * helpers `kvlab trace` shares with the other commands are lab/runmeta.h.)
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
 * the norms of evicted tokens are still recorded (taken before eviction).
 * A plan with_policy also records what the policy saw and did:
 *
 *   score       f32 [S, NL, KV, Q, P]  the policy's score (higher = keep) of each
 *                                      cached token, taken right after the forward
 *                                      of query q, before that forward's eviction;
 *                                      NaN where the policy ranks nothing (a
 *                                      skipped layer, full, lagkv), for tokens not
 *                                      cached, and for a prefill query other than
 *                                      the prompt's last (the policy decides once
 *                                      per forward)
 *   evicted_at  i32 [S, NL, KV, P]     position of the query after whose forward
 *                                      the token was evicted; -1: never evicted
 *   kv_bytes    i64 [S, Q, 2]          KV-cache bytes in use (all layers) when
 *                                      query q attended [..., 0] and after the
 *                                      eviction that followed its forward [..., 1]
 *                                      (0 for a prefill query other than the last) */
#ifndef KVLAB_TRACE_H
#define KVLAB_TRACE_H

#include <stddef.h>
#include <stdint.h>

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
    int with_policy;                    /* also record score, evicted_at, kv_bytes */
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

#endif
