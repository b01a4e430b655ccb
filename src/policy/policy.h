/* policy.h — KV-cache eviction policies (../shared/spec/methods.md §0–§4).
 *
 * A policy answers up to three questions, each a small function in its own
 * file src/policy_NAME.c:
 *
 *   score    how much is each cached token of (layer, KV head) worth keeping?
 *            (higher = keep; l2: minus the key norm, h2o: accumulated attention)
 *   select   which slots stay? Default: the protected slots plus the best
 *            scores up to the budget (policy_select_top). LagKV and H2O bring
 *            their own.
 *   budgets  how many tokens may each layer keep? Default: the same for every
 *            layer. pyramid and zigzag share a total out unevenly.
 *
 * A policy that needs a per-slot statistic (accumulated attention, a cached
 * key norm, ...) declares it as a column (PolicyColumn, below) in its own
 * file: the framework registers it with the cache as a side column, which the
 * cache fills on append and compacts with its slots (kvcache.h), and feeds it
 * the attention rows if it observes them.
 *
 * This module adds what every policy shares (../shared/spec/methods.md §0): the budget, the schedule, the
 * skipped layers, the protected sinks / recent tokens, the positions mode and
 * the granularity; one command-line syntax for all of them; and the code that
 * applies a selection to the cache (kvcache_keep / kvcache_evict).
 *
 * Use (a command or an evaluation):
 *   PolicyOpts po;  policy_defaults(&po);
 *   for (...) { if (policy_option(&po, argc, argv, &i)) continue; ... }
 *   policy_cli_finish(&po);                          // resolve defaults, or die
 *   Policy *p = policy_create(&po, &model.cfg, ctx, &err);
 *   policy_forward(p, f, &cache, prompt, n, NULL, &err);   // forward, then evict
 *   policy_forward(p, f, &cache, &tok, 1, NULL, &err);     // per decode step
 *   policy_timing(p)                                 // decide / apply seconds
 *
 * Adding a policy = one file defining `const PolicyDef policy_NAME` and one
 * X(policy_NAME) line in POLICY_LIST (policy.c). */
#ifndef KVLAB_POLICY_H
#define KVLAB_POLICY_H

#include <math.h>
#include <stdio.h>

#include "engine/forward.h"
#include "engine/kvcache.h"
#include "model/model.h"
#include "base/util.h"

/* ---- the knobs (../shared/spec/methods.md §0) ------------------------------------------------- */

typedef enum { BUDGET_NONE = 0, BUDGET_TOKENS, BUDGET_COMPRESSION, BUDGET_KEEP } BudgetKind;
typedef enum { ROUND_AUTO = 0, ROUND_FLOOR, ROUND_CEIL } Rounding;
typedef enum { SCHED_DEFAULT = 0, SCHED_PREFILL, SCHED_STEP, SCHED_INTERVAL, SCHED_THRESHOLD } Schedule;
typedef enum { GRAN_DEFAULT = 0, GRAN_HEAD, GRAN_LAYER } Granularity;
typedef enum { ALLOC_UNIFORM = 0, ALLOC_ADAPTIVE } HeadAlloc;

#define POLICY_MAX_PARAMS 12
#define POLICY_FEW 8   /* evicting at most this many slots of a head takes the one-pass path */
#define POLICY_MAX_LAYERS 256

/* Everything that defines a run's eviction, as plain data (printable as JSON).
 * "unset" values (SCHED_DEFAULT, -1, ...) are filled by policy_resolve from
 * the policy's own defaults, then from the common ones. */
typedef struct {
    char name[32];                          /* --policy NAME            [full] */
    int n_params;                           /* NAME:key=val,...  after resolve: every */
    char param_key[POLICY_MAX_PARAMS][24];  /*   parameter of the policy, defaults  */
    char param_val[POLICY_MAX_PARAMS][64];  /*   included, in the table's order     */
    BudgetKind budget_kind;                 /* --budget / --compression-ratio / --keep-ratio */
    double budget;                          /* tokens, or the ratio */
    Rounding rounding;                      /* --rounding floor|ceil */
    Schedule schedule;                      /* --schedule prefill|step|interval:N|threshold:T */
    int schedule_n;                         /*   N or T */
    int skip_given, n_skip;                 /* --skip-layers 0,1 | none */
    int skip[POLICY_MAX_LAYERS];
    int sinks, recent;                      /* --protect-sinks S, --protect-recent W (-1 unset) */
    int positions_shifted;                  /* --positions true|shifted */
    Granularity granularity;                /* --granularity head|layer */
    HeadAlloc head_alloc;                   /* --budget-alloc uniform|adaptive */
    double head_floor;                      /* --head-floor A: adaptive's per-head safeguard (-1 unset) */
    int decoding_press;                     /* --target-size / --target-compression-ratio given:
                                               the schedule defaults to interval:512 (kvpress) */
    int resolved;
} PolicyOpts;

#define POLICY_OPTS_HELP \
    "  KV-cache eviction (every policy, its parameters and defaults below):\n" \
    "      --policy NAME[:k=v,...]    eviction policy and its parameters [full]\n" \
    "      --budget N                 tokens kept per layer\n" \
    "      --compression-ratio R      fraction REMOVED, keep n*(1-R) (kvpress convention)\n" \
    "      --keep-ratio K             fraction kept, keep n*K (l2compress convention)\n" \
    "                                 (n = tokens seen; with threshold:T, the layer's length)\n" \
    "      --rounding floor|ceil      rounding of a ratio budget, never below 1\n" \
    "                                 [floor; ceil with threshold:T, like l2compress]\n" \
    "      --schedule WHEN            prefill: once after the prompt; step: after every\n" \
    "                                 forward once over budget; interval:N: every N decode\n" \
    "                                 steps; threshold:T: when a layer holds >= T tokens\n" \
    "                                 [snapkv, pyramid, zigzag: prefill; others: step]\n" \
    "      --skip-layers LIST|none    layers never compressed [l2: 0,1; others: none]\n" \
    "      --protect-sinks S          always keep the first S tokens [window: 4; others: 0]\n" \
    "      --protect-recent W         always keep the last W tokens\n" \
    "                                 [snapkv, pyramid: their window; others: 0]\n" \
    "      --positions true|shifted   true: keys keep their original RoPE; shifted\n" \
    "                                 (StreamingLLM): keys re-rotated to their slot [true]\n" \
    "      --granularity head|layer   one token set per KV head or per layer [tova: layer]\n" \
    "      --budget-alloc uniform|adaptive\n" \
    "                                 uniform: every KV head of a layer keeps the layer's\n" \
    "                                 budget; adaptive (Ada-KV, arXiv 2407.11550): the\n" \
    "                                 layer's budget x KV heads goes to the top scores of\n" \
    "                                 all its heads together, so heads keep different\n" \
    "                                 counts and the freed slots are released [uniform]\n" \
    "      --head-floor A             adaptive: each head first keeps its own top\n" \
    "                                 max(1, A x budget) (Ada-KV's safeguard) [0.2]\n" \
    "  kvpress names (DecodingPress, CompressionRatioDecodingPress):\n" \
    "      --target-size N            = --budget N, compressing only while decoding\n" \
    "      --target-compression-ratio R\n" \
    "                                 = --compression-ratio R of the tokens seen, the same\n" \
    "      --compression-interval K   = --schedule interval:K (every K decode steps back\n" \
    "                                 to the budget) [512 after the two above]\n"

void policy_defaults(PolicyOpts *o);
/* If argv[*i] is a policy option, consume it (and its value) and return 1.
 * A bad value dies with one line naming the option and the value. */
int  policy_option(PolicyOpts *o, int argc, char **argv, int *i);
/* Parse "NAME" or "NAME:key=val,key=val" into o (validated). */
int  policy_parse_spec(PolicyOpts *o, const char *spec, Err *err);
/* Fill every unset knob (policy defaults, then common ones) and check the
 * combination (e.g. a budget is required). Idempotent. */
int  policy_resolve(PolicyOpts *o, Err *err);
/* policy_resolve, or die with its message (for commands). */
void policy_cli_finish(PolicyOpts *o);
/* Every policy, its rule and its parameters with defaults (for --help). */
void policy_print_help(FILE *out);
/* Every knob of a resolved PolicyOpts as one JSON object (malloc'ed string),
 * e.g. {"policy":"l2","params":{},"budget":{"kind":"compression_ratio",...},...}. */
char *policy_json(const PolicyOpts *o);

/* ../shared/spec/methods.md §0, budget: tokens kept out of n for a ratio budget (rounded as asked;
 * the product is taken with a 1e-9 tolerance so 0.7*10 keeps 7, not 8), the
 * absolute budget, or INT_MAX when there is none. Never below 1. */
int  policy_budget_of(const PolicyOpts *o, int n);

/* ---- running a policy --------------------------------------------------- */

typedef struct Policy Policy;

/* max_tokens: the cache's context (per-slot statistics are sized for it). */
Policy *policy_create(const PolicyOpts *o, const Config *cfg, int max_tokens, Err *err);
void    policy_free(Policy *p);
const PolicyOpts *policy_opts(const Policy *p);

/* forward() with the policy around it: before, the per-slot statistics are
 * prepared (a new sequence — cache->next_pos == 0 — resets the policy and sets
 * the cache's positions mode and side columns); the policy's attention
 * observer is added for the forward only if one of its columns observes
 * attention (beside any observer already there); after, the schedule decides
 * whether to evict. p == NULL: plain forward(). */
int policy_forward(Policy *p, Forward *f, KVCache *c, const int *tokens, int n, float *logits_all, Err *err);

/* The two halves of policy_forward, for callers that run forward themselves
 * (and tests that fill a cache by hand): n = tokens about to be appended;
 * start_pos = c->next_pos before those tokens. */
int  policy_before_forward(Policy *p, KVCache *c, int n, Err *err);
int  policy_after_forward(Policy *p, KVCache *c, int start_pos, Err *err);
/* The AttentionObserver callback (public so tests can feed attention rows). */
void policy_observe(void *policy, int layer, int head, int query_pos, const float *probs, const int *key_pos, int n_keys);
int  policy_needs_attention(const Policy *p);
/* 1 if the policy can remove slots (every policy but full; NULL: 0). */
int  policy_evicts(const Policy *p);
/* The policy's observer {p, policy_observe} in *out, if it needs attention
 * (returns 1), for callers that run forward themselves; else 0. */
int  policy_observer(Policy *p, AttentionObserver *out);

/* The score (higher = keep) the policy gives each slot of (layer, kv_head)
 * now, in out[0..len) of that head: what its next decision would rank by.
 * Returns 0, or -1 (out untouched) where it ranks nothing: a skipped layer, a
 * policy that never evicts or chooses without a score (full, lagkv). For
 * tools that show the decision (kvlab trace); one thread at a time. */
int policy_head_scores(Policy *p, const KVCache *c, int layer, int kv_head, float *out);

/* Budgets per layer for an average of `avg` tokens per compressed layer (what
 * the policy's allocator gives; skipped layers get INT_MAX). out: [n_layers]. */
void policy_layer_budgets(Policy *p, const KVCache *c, int avg, int *out);
/* The per-layer budgets of the last eviction (-1 for a layer not evicted then). */
const int *policy_last_budgets(const Policy *p);
/* The per-(layer, KV head) budgets of the last eviction, [n_layers * n_kv_heads]
 * (-1: not evicted then). Uniform allocation: the layer's budget for each head;
 * adaptive: what each head was given of the layer's total. */
const int *policy_last_head_budgets(const Policy *p);
/* The budgets of the most recent decision (the schedule ran the policy) as
 * JSON (malloc'ed): {"layer":[...],"head":[[...],...]}; null for a layer that
 * decision left alone (skipped, under a threshold) or before any decision. */
char *policy_budgets_json(const Policy *p);

typedef struct {
    double decide_s;         /* scoring + selection, all forwards */
    double decide_decode_s;  /* the same, decode forwards only (start_pos > 0, one token) */
    double apply_s;          /* compaction: kvcache_keep / kvcache_evict (side columns included) */
    long forwards, decode_forwards;
    long decisions;          /* forwards after which the schedule ran the policy */
    long evicted;            /* slots removed, all layers and heads */
} PolicyTiming;
PolicyTiming policy_timing(const Policy *p);
void policy_timing_reset(Policy *p);

/* ---- for policy files (src/policy/policy_*.c) ---------------------------- */
/* (policy.c: the runtime; policy_opts.c: the knobs above; policy_select.c:
 * the selection toolkit below) */

enum {
    POLICY_OWN_BUDGET = 8,     /* no --budget needed (full, lagkv) */
    POLICY_NEVER_EVICTS = 16,  /* full */
};

#define POLICY_MAX_COLUMNS 4

/* A per-slot statistic, kept by the cache as a side column (kvcache.h) so it
 * always describes the slots still there. One row per KV head, or one per
 * query head of the KV head's group (an attention statistic: each query head
 * adds its own rows without locks). Declared by the policy file that needs it
 * (PolicyDef.columns); policies listing the same PolicyColumn share it (the
 * window attention of snapkv is tova's, pyramid's and zigzag's too). Read it
 * with policy_column(p, c, name, layer, head). */
typedef struct PolicyColumn {
    const char *name;
    int per_query_head;
    /* A new slot's value, from its cached key and value (NULL: 0). */
    KVColumnFill fill;
    /* Before a forward of n tokens (NULL: nothing), e.g. zeroing a sum that
     * covers one forward's queries. */
    void (*begin)(Policy *p, const KVCache *c, int n);
    /* One attention row (NULL: the column does not observe; a policy with an
     * observing column installs the attention observer). row: this column's
     * row of (layer, query head), by slot; probs[j] is the attention on slot
     * j < n_keys. Not called for skipped layers. Threads: as AttentionObserver. */
    void (*observe)(Policy *p, float *row, int layer, int head, int query_pos,
                    const float *probs, int n_keys);
} PolicyColumn;

typedef struct {
    const char *key;
    const char *def;       /* default, as text */
    const char *kind;      /* "int", "float", or choices "max|avg" */
    double min, max;       /* range of a number */
    const char *help;
} PolicyParam;

typedef struct PolicyDef {
    const char *name;
    const char *rule;          /* one line: the rule, for --help */
    const char *paper;         /* where the rule comes from, for --help: authors, year, arXiv
                                  id (NULL: none, e.g. full). Never a section of the spec,
                                  which is not part of the repository */
    const PolicyParam *params; /* terminated by {0} */
    const PolicyColumn *const *columns;   /* per-slot statistics, NULL-terminated (NULL: none) */
    unsigned flags;            /* POLICY_OWN_BUDGET | POLICY_NEVER_EVICTS */
    /* Fill the common knobs this policy defaults differently (only unset ones,
     * e.g. l2: skip layers 0,1) and check the ones it cannot use. May be NULL. */
    int  (*defaults)(PolicyOpts *o, Err *err);
    /* After creation: read parameters, allocate p->priv. May be NULL. */
    int  (*init)(Policy *p, Err *err);
    void (*free)(Policy *p);
    /* A new sequence starts (reset p->priv). May be NULL. */
    void (*reset)(Policy *p);
    /* The scores of slots [0, len) of (layer, kv_head), higher = more worth
     * keeping: `out` filled in, or an array the policy keeps up to date itself
     * (l2: the cached scores, so a decode step copies nothing). NaN ranks lowest.
     * Hooks below may run concurrently for different (layer, kv_head): they
     * write only their head's state and take temporaries from policy_scratch. */
    const float *(*score)(Policy *p, const KVCache *c, int layer, int kv_head, float *out);
    /* Per-layer budgets for an average `avg` (NULL: every layer gets avg). */
    void (*budgets)(Policy *p, const KVCache *c, int avg, int *budget);
    /* Choose the slots (ascending) of (layer, kv_head) to keep; returns how many.
     * NULL: policy_select_top with the common protections. */
    int  (*select)(Policy *p, const KVCache *c, int layer, int kv_head, int budget, int *keep);
} PolicyDef;

/* Scratch memory of one thread: score and select functions run in parallel
 * over (layer, KV head), each takes its temporaries from policy_scratch(p). */
typedef struct {
    float  *score, *sum, *tmp;   /* [max(max_tokens, 2*head_dim)] */
    double *dtmp;                /* [max_tokens] */
    int    *order, *itmp;        /* [max_tokens] */
    unsigned char *mark;         /* [max_tokens] */
    float  *rows;                /* [rows_cap] cached key/value rows (policy_rows) */
    size_t  rows_cap;
} PolicyScratch;

struct Policy {
    PolicyOpts o;                /* resolved */
    const PolicyDef *def;
    const PolicyDef *scorer;     /* whose score() ranks tokens: def, or score=NAME */
    int n_layers, n_heads, n_kv_heads, head_dim, group, max_tokens;
    unsigned char *skip;         /* [n_layers] 1 = never touched */
    unsigned flags;              /* def's | scorer's */
    int window;                  /* queries in the attention window */
    int window_protect;          /* snapkv/pyramid: the last `window` slots are kept and not pooled */
    int win_from;                /* a query at position >= win_from is in the window */
    /* the per-slot statistics of def and scorer: the cache's side columns
     * 0..n_columns-1, in this order, while the policy runs it */
    const PolicyColumn *columns[POLICY_MAX_COLUMNS];
    KVColumn cache_columns[POLICY_MAX_COLUMNS];
    int n_columns;
    KVCache *cache;              /* the cache of the forward in progress (the observer's) */
    void  *priv;                 /* the policy's own state */
    /* the decision in progress: decided for every (layer, KV head) in
     * parallel, then applied in parallel */
    int   *budget;               /* [L] */
    int   *last_budget;          /* [L] */
    int   *head_budget;          /* [L, KV] per head: the layer's, or adaptive's share */
    int   *last_head_budget;     /* [L, KV] */
    float *alloc_score;          /* [KV * max_tokens] adaptive: a layer's scores, all heads */
    int   *alloc_key, *alloc_idx;/* [KV * max_tokens] their tie-break keys, the selection */
    int   *keeps;                /* [L, KV, max_tokens] the slots each head keeps */
    int   *n_keeps;              /* [L, KV] how many; -1 = the head is left alone */
    int   *evicts;               /* [L, KV, POLICY_FEW] or, when a head loses at most
                                    POLICY_FEW slots, just those (ascending) */
    int   *n_evicts;             /* [L, KV] how many; -1 = use keeps */
    PolicyScratch *scratch;      /* [n_scratch] one per thread (policy_scratch) */
    int    n_scratch;
    int    decode_steps;         /* decode forwards since the prompt (interval:N) */
    PolicyTiming timing;
};

/* For a policy's defaults hook (the parameters are filled in by then): the
 * value of parameter `key` (NULL if absent), and setting one. */
const char *policy_opts_param(const PolicyOpts *o, const char *key);
void policy_opts_set_param(PolicyOpts *o, const char *key, const char *val);

/* Parameter values (resolved: always present, else the program aborts —
 * a missing key is a bug in a policy file, not a user error). */
double      policy_param(const Policy *p, const char *key);
const char *policy_param_str(const Policy *p, const char *key);
/* The same, with a fallback when the running policy has no such parameter
 * (a score borrowed by zigzag/pyramid reads its knobs this way). */
double      policy_param_or(const Policy *p, const char *key, double fallback);
const char *policy_param_str_or(const Policy *p, const char *key, const char *fallback);

/* The calling thread's scratch (valid inside the policy's hooks and for
 * policy_select_top; thread 0 outside a parallel region). */
PolicyScratch *policy_scratch(Policy *p);
/* The calling thread's room for n cached rows (kvcache_key_rows'
 * scratch: n * head_dim floats), grown as needed. */
float *policy_rows(Policy *p, int n);

/* The row, by slot, of the policy's column `name` in cache c: of (layer, KV
 * head `head`), or for a per-query-head column of (layer, query head `head`).
 * A name the policy did not declare is a bug in a policy file (abort). */
float *policy_column(const Policy *p, const KVCache *c, const char *name, int layer, int head);

/* out[j] = mean over the query heads of kv_head's group of the per-query-head
 * column `name` at slot j, j < n. Spec: the score of a KV head is the mean over
 * the query heads of its group. */
void policy_group_mean(const Policy *p, const KVCache *c, const char *name, int layer, int kv_head, int n, float *out);

/* The default selection: keep the first `sinks` and the last `recent` slots,
 * and the best-scoring others until `budget` slots are kept (if the protected
 * slots alone exceed the budget, only they stay). Ties: the lower original
 * position wins (pos[] is ascending: slot order, as in the cache). keep[]
 * receives ascending slot indices; returns the count. */
int policy_select_top(Policy *p, const int *pos, int len, const float *score,
                      int budget, int sinks, int recent, int *keep);

/* policy_select_top, and when at most POLICY_FEW candidates go and `evict` is
 * given, only the evicted slots are written (evict[0..*n_evict), ascending;
 * keep[] untouched; else *n_evict = -1): a decode step then writes a few
 * ints, not the whole head. */
int policy_select_top_few(Policy *p, const int *pos, int len, const float *score, int budget, int sinks,
                          int recent, int *keep, int *evict, int *n_evict);

/* Rearrange idx[0..m) (indices into score[] and key[]) so that idx[0..k)
 * are the k best: higher score, then lower key (Wirth's selection, expected
 * O(m)); 1 <= k <= m. */
void policy_select_best(int *idx, int m, int k, const float *score, const int *key);

/* Adaptive head budgets (Ada-KV) for `layer`, whose heads share
 * budget * n_kv_heads slots: out[g] for each KV head g (policy_headalloc.c). */
void policy_adaptive_head_budgets(Policy *p, const KVCache *c, int layer, int budget, int *out);

/* A score as ranked: NaN counts as the lowest, so the order stays total. */
static inline float policy_rank(float v) { return v == v ? v : -INFINITY; }

/* Integer budgets out[l] for the layers with skip[l] == 0, near the real
 * targets x[l], each within [lo, hi[l]], summing to exactly `total` (or to
 * Σ hi when that is smaller). Units are moved one at a time to the layer
 * furthest below its target (ties: the lower layer). Skipped: INT_MAX. */
void policy_distribute(const double *x, const unsigned char *skip, int n_layers, long total,
                       int lo, const int *hi, int *out);

/* Columns shared by several policy files. */
extern const PolicyColumn policy_window_attention;   /* policy_snapkv.c: Σ attention of the window's queries */

/* The registry: the policies of POLICY_LIST (policy.c), then any added by
 * policy_register (a policy defined outside src/, e.g. by a test; returns -1
 * if the name is taken or the table is full). */
int policy_register(const PolicyDef *def);
const PolicyDef *policy_find(const char *name);
int policy_count(void);
const PolicyDef *policy_at(int i);

#endif
