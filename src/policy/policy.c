/* policy.c — the policy framework (see policy.h): the registry, the common
 * knobs of spec §0 and their parser, the schedule, and applying a policy's
 * selection to the cache together with the per-slot statistics. */
#include "policy/policy.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "cli/cli.h"

/* ---- the registry: one X(...) line per policy ------------------------------ */

#define POLICY_LIST(X) \
    X(policy_full)     \
    X(policy_l2)       \
    X(policy_l2_high)  \
    X(policy_random)   \
    X(policy_window)   \
    X(policy_h2o)      \
    X(policy_snapkv)   \
    X(policy_tova)     \
    X(policy_pyramid)  \
    X(policy_lagkv)    \
    X(policy_zigzag)

#define POLICY_DECLARE(def) extern const PolicyDef def;
POLICY_LIST(POLICY_DECLARE)
#define POLICY_ENTRY(def) &def,
#define N_BUILTIN (int)(sizeof (const PolicyDef *[]){ POLICY_LIST(POLICY_ENTRY) } / sizeof(const PolicyDef *))
#define POLICY_MAX_ADDED 8
static const PolicyDef *registry[N_BUILTIN + POLICY_MAX_ADDED] = { POLICY_LIST(POLICY_ENTRY) };
static int n_policies = N_BUILTIN;

int policy_count(void) { return n_policies; }
const PolicyDef *policy_at(int i) { return i >= 0 && i < n_policies ? registry[i] : NULL; }

const PolicyDef *policy_find(const char *name) {
    for (int i = 0; i < n_policies; i++)
        if (!strcmp(registry[i]->name, name)) return registry[i];
    return NULL;
}

int policy_register(const PolicyDef *def) {
    if (policy_find(def->name) || n_policies == N_BUILTIN + POLICY_MAX_ADDED) return -1;
    registry[n_policies++] = def;
    return 0;
}

static void policy_names(char *buf, size_t size) {
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < n_policies && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? ", " : "", registry[i]->name);
}

/* ---- option values -------------------------------------------------------- */

static const char *budget_option(BudgetKind k) {
    return k == BUDGET_TOKENS ? "--budget" : k == BUDGET_COMPRESSION ? "--compression-ratio"
         : k == BUDGET_KEEP ? "--keep-ratio" : "(none)";
}
static const char *budget_json_kind(BudgetKind k) {
    return k == BUDGET_TOKENS ? "tokens" : k == BUDGET_COMPRESSION ? "compression_ratio" : "keep_ratio";
}
static const char *schedule_name(Schedule s) {
    return s == SCHED_PREFILL ? "prefill" : s == SCHED_STEP ? "step" : s == SCHED_INTERVAL ? "interval"
         : s == SCHED_THRESHOLD ? "threshold" : "default";
}

void policy_defaults(PolicyOpts *o) {
    memset(o, 0, sizeof *o);
    snprintf(o->name, sizeof o->name, "full");
    o->sinks = -1;
    o->recent = -1;
}

static const PolicyParam *find_param(const PolicyDef *d, const char *key) {
    for (const PolicyParam *q = d->params; q && q->key; q++)
        if (!strcmp(q->key, key)) return q;
    return NULL;
}

/* Is `val` acceptable for parameter q? (a whole number in range, or one of the choices) */
static int check_param_value(const PolicyDef *d, const PolicyParam *q, const char *val, Err *err) {
    if (strcmp(q->kind, "int") && strcmp(q->kind, "float")) {   /* choices "a|b|c" */
        size_t n = strlen(val);
        for (const char *c = q->kind; *c;) {
            const char *bar = strchr(c, '|');
            size_t len = bar ? (size_t)(bar - c) : strlen(c);
            if (len == n && !strncmp(c, val, n)) return 0;
            c += len + (bar != NULL);
        }
        return err_set(err, "--policy %s: %s='%s' is not one of %s", d->name, q->key, val, q->kind);
    }
    char *end = NULL;
    double v = strtod(val, &end);
    if (!*val || *end || !isfinite(v))
        return err_set(err, "--policy %s: %s='%s' is not a number", d->name, q->key, val);
    if (!strcmp(q->kind, "int") && v != floor(v))
        return err_set(err, "--policy %s: %s='%s' is not an integer", d->name, q->key, val);
    if (v < q->min || v > q->max)
        return err_set(err, "--policy %s: %s=%s is out of range [%g, %g]", d->name, q->key, val, q->min, q->max);
    return 0;
}

const char *policy_opts_param(const PolicyOpts *o, const char *key) {
    for (int i = 0; i < o->n_params; i++)
        if (!strcmp(o->param_key[i], key)) return o->param_val[i];
    return NULL;
}

void policy_opts_set_param(PolicyOpts *o, const char *key, const char *val) {
    int i = 0;
    while (i < o->n_params && strcmp(o->param_key[i], key)) i++;
    if (i == o->n_params) {
        if (o->n_params == POLICY_MAX_PARAMS) return;
        o->n_params++;
    }
    snprintf(o->param_key[i], sizeof o->param_key[i], "%.23s", key);   /* lengths checked by the parser */
    snprintf(o->param_val[i], sizeof o->param_val[i], "%.63s", val);
}

/* "NAME" or "NAME:key=val,key=val" */
int policy_parse_spec(PolicyOpts *o, const char *spec, Err *err) {
    const char *colon = strchr(spec, ':');
    size_t name_len = colon ? (size_t)(colon - spec) : strlen(spec);
    char name[32], names[256];
    if (name_len == 0 || name_len >= sizeof name) {
        policy_names(names, sizeof names);
        return err_set(err, "--policy: '%s' is not a policy (%s)", spec, names);
    }
    memcpy(name, spec, name_len);
    name[name_len] = '\0';
    const PolicyDef *d = policy_find(name);
    if (!d) {
        policy_names(names, sizeof names);
        return err_set(err, "--policy: unknown policy '%s' (%s)", name, names);
    }
    snprintf(o->name, sizeof o->name, "%s", name);
    o->n_params = 0;
    o->resolved = 0;
    if (!colon) return 0;
    for (const char *p = colon + 1; *p;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[96];
        if (len == 0 || len >= sizeof item) return err_set(err, "--policy %s: bad parameter list '%s'", name, colon + 1);
        memcpy(item, p, len);
        item[len] = '\0';
        char *eq = strchr(item, '=');
        if (!eq) return err_set(err, "--policy %s: '%s' is not key=value", name, item);
        *eq = '\0';
        const PolicyParam *q = find_param(d, item);
        if (!q) return err_set(err, "--policy %s: unknown parameter '%s' (policy_print_help: kvlab generate --help)", name, item);
        if (policy_opts_param(o, item)) return err_set(err, "--policy %s: parameter '%s' given twice", name, item);
        if (strlen(eq + 1) >= sizeof o->param_val[0])
            return err_set(err, "--policy %s: value of '%s' too long", name, item);
        if (check_param_value(d, q, eq + 1, err) != 0) return -1;
        policy_opts_set_param(o, item, eq + 1);
        p += len;
        if (*p == ',' && !*++p) return err_set(err, "--policy %s: trailing comma in '%s'", name, colon + 1);
    }
    return 0;
}

static void set_budget(PolicyOpts *o, BudgetKind kind, double value, const char *opt) {
    if (o->budget_kind != BUDGET_NONE && o->budget_kind != kind)
        die("%s: a budget was already given with %s (give one of --budget, --compression-ratio, --keep-ratio)",
            opt, budget_option(o->budget_kind));
    o->budget_kind = kind;
    o->budget = value;
}

static void parse_schedule(PolicyOpts *o, const char *v) {
    if (!strcmp(v, "prefill")) { o->schedule = SCHED_PREFILL; o->schedule_n = 0; }
    else if (!strcmp(v, "step")) { o->schedule = SCHED_STEP; o->schedule_n = 0; }
    else if (!strncmp(v, "interval:", 9)) {
        o->schedule = SCHED_INTERVAL;
        o->schedule_n = (int)cli_int("--schedule interval:N", v + 9, 1, 1 << 22);
    } else if (!strncmp(v, "threshold:", 10)) {
        o->schedule = SCHED_THRESHOLD;
        o->schedule_n = (int)cli_int("--schedule threshold:T", v + 10, 2, 1 << 22);
    } else die("--schedule: '%s' is not prefill, step, interval:N or threshold:T", v);
}

static double ratio_option(const char *opt, const char *v, int open_at_zero) {
    double r = cli_float(opt, v, 0.0, 1.0);
    if (open_at_zero ? r <= 0.0 : r >= 1.0)
        die("%s: %g is out of range %s", opt, r, open_at_zero ? "(0, 1]" : "[0, 1)");
    return r;
}

int policy_option(PolicyOpts *o, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    Err err;
    if (!strcmp(a, "--policy")) {
        if (policy_parse_spec(o, cli_value(argc, argv, i), &err) != 0) die("%s", err.msg);
    } else if (!strcmp(a, "--budget")) {
        set_budget(o, BUDGET_TOKENS, (double)cli_int(a, cli_value(argc, argv, i), 1, 1 << 22), a);
    } else if (!strcmp(a, "--compression-ratio")) {
        set_budget(o, BUDGET_COMPRESSION, ratio_option(a, cli_value(argc, argv, i), 0), a);
    } else if (!strcmp(a, "--keep-ratio")) {
        set_budget(o, BUDGET_KEEP, ratio_option(a, cli_value(argc, argv, i), 1), a);
    } else if (!strcmp(a, "--rounding")) {
        const char *v = cli_value(argc, argv, i);
        if (!strcmp(v, "floor")) o->rounding = ROUND_FLOOR;
        else if (!strcmp(v, "ceil")) o->rounding = ROUND_CEIL;
        else die("--rounding: '%s' is not floor or ceil", v);
    } else if (!strcmp(a, "--schedule")) {
        parse_schedule(o, cli_value(argc, argv, i));
    } else if (!strcmp(a, "--skip-layers")) {
        const char *v = cli_value(argc, argv, i);
        o->skip_given = 1;
        o->n_skip = 0;
        if (strcmp(v, "none") != 0) {
            int n, *list = cli_int_list(a, v, 0, POLICY_MAX_LAYERS - 1, &n);
            if (n > POLICY_MAX_LAYERS) die("--skip-layers: more than %d layers in '%s'", POLICY_MAX_LAYERS, v);
            memcpy(o->skip, list, (size_t)n * sizeof(int));
            o->n_skip = n;
            free(list);
        }
    } else if (!strcmp(a, "--protect-sinks")) {
        o->sinks = (int)cli_int(a, cli_value(argc, argv, i), 0, 1 << 22);
    } else if (!strcmp(a, "--protect-recent")) {
        o->recent = (int)cli_int(a, cli_value(argc, argv, i), 0, 1 << 22);
    } else if (!strcmp(a, "--positions")) {
        const char *v = cli_value(argc, argv, i);
        if (!strcmp(v, "true")) o->positions_shifted = 0;
        else if (!strcmp(v, "shifted")) o->positions_shifted = 1;
        else die("--positions: '%s' is not true or shifted", v);
    } else if (!strcmp(a, "--granularity")) {
        const char *v = cli_value(argc, argv, i);
        if (!strcmp(v, "head")) o->granularity = GRAN_HEAD;
        else if (!strcmp(v, "layer")) o->granularity = GRAN_LAYER;
        else die("--granularity: '%s' is not head or layer", v);
    } else {
        return 0;
    }
    o->resolved = 0;
    return 1;
}

int policy_resolve(PolicyOpts *o, Err *err) {
    const PolicyDef *d = policy_find(o->name);
    if (!d) return err_set(err, "--policy: unknown policy '%s'", o->name);
    /* every parameter, in the table's order, given or default */
    PolicyOpts given = *o;
    o->n_params = 0;
    for (const PolicyParam *q = d->params; q && q->key; q++) {
        const char *v = policy_opts_param(&given, q->key);
        policy_opts_set_param(o, q->key, v ? v : q->def);
    }
    /* the policy's own defaults first, then the common ones (spec §0) */
    if (d->defaults && d->defaults(o, err) != 0) return -1;
    if (o->schedule == SCHED_DEFAULT) o->schedule = SCHED_STEP;
    if (o->sinks < 0) o->sinks = 0;
    if (o->recent < 0) o->recent = 0;
    if (o->granularity == GRAN_DEFAULT) o->granularity = GRAN_HEAD;
    if (o->rounding == ROUND_AUTO) o->rounding = o->schedule == SCHED_THRESHOLD ? ROUND_CEIL : ROUND_FLOOR;
    o->skip_given = 1;
    if (!(d->flags & POLICY_OWN_BUDGET) && o->budget_kind == BUDGET_NONE)
        return err_set(err, "--policy %s needs a budget: --budget N, --compression-ratio R or --keep-ratio K", d->name);
    if (o->schedule == SCHED_THRESHOLD && o->budget_kind == BUDGET_TOKENS && o->budget >= o->schedule_n)
        return err_set(err, "--schedule threshold:%d: --budget %g must be below the threshold", o->schedule_n, o->budget);
    if (o->granularity == GRAN_LAYER && d->select)
        return err_set(err, "--granularity layer: policy %s chooses its tokens per KV head", d->name);
    o->resolved = 1;
    return 0;
}

void policy_cli_finish(PolicyOpts *o) {
    Err err;
    if (policy_resolve(o, &err) != 0) die("%s", err.msg);
}

void policy_print_help(FILE *out) {
    fprintf(out, "  policies (--policy NAME or NAME:key=val,key=val; docs/policies.md):\n");
    for (int i = 0; i < n_policies; i++) {
        const PolicyDef *d = registry[i];
        fprintf(out, "    %-9s %s (%s)\n", d->name, d->rule, d->spec);
        for (const PolicyParam *q = d->params; q && q->key; q++) {
            char kv[64];
            snprintf(kv, sizeof kv, "%s=%s", q->key, q->def);
            int choices = strcmp(q->kind, "int") && strcmp(q->kind, "float");
            fprintf(out, "              %-16s %s%s%s%s\n", kv, q->help, choices ? " (" : "", choices ? q->kind : "",
                    choices ? ")" : "");
        }
    }
}

int policy_budget_of(const PolicyOpts *o, int n) {
    double x;
    switch (o->budget_kind) {
    case BUDGET_TOKENS: return (int)o->budget;
    case BUDGET_COMPRESSION: x = (double)n * (1.0 - o->budget); break;
    case BUDGET_KEEP: x = (double)n * o->budget; break;
    default: return INT_MAX;
    }
    long keep = o->rounding == ROUND_CEIL ? (long)ceil(x - 1e-9) : (long)floor(x + 1e-9);
    return keep < 1 ? 1 : (int)keep;
}

/* ---- JSON ------------------------------------------------------------------ */

static void json_param(FILE *f, const PolicyDef *d, const char *key, const char *val) {
    const PolicyParam *q = d ? find_param(d, key) : NULL;
    char *end = NULL;
    strtod(val, &end);
    int number = q && (!strcmp(q->kind, "int") || !strcmp(q->kind, "float")) && *val && !*end;
    fprintf(f, number ? "\"%s\":%s" : "\"%s\":\"%s\"", key, val);
}

char *policy_json(const PolicyOpts *o) {
    char *buf = NULL;
    size_t size = 0;
    FILE *f = open_memstream(&buf, &size);
    if (!f) die("out of memory writing the policy's JSON");
    const PolicyDef *d = policy_find(o->name);
    fprintf(f, "{\"policy\":\"%s\",\"spec\":\"%s\",\"params\":{", o->name, d ? d->spec : "");
    for (int i = 0; i < o->n_params; i++) {
        if (i) fputc(',', f);
        json_param(f, d, o->param_key[i], o->param_val[i]);
    }
    fprintf(f, "},\"budget\":");
    if (o->budget_kind == BUDGET_NONE) fprintf(f, "null");
    else fprintf(f, "{\"kind\":\"%s\",\"value\":%.17g}", budget_json_kind(o->budget_kind), o->budget);
    fprintf(f, ",\"rounding\":\"%s\",\"schedule\":\"%s\",\"schedule_n\":%d,\"skip_layers\":[",
            o->rounding == ROUND_CEIL ? "ceil" : "floor", schedule_name(o->schedule), o->schedule_n);
    for (int i = 0; i < o->n_skip; i++) fprintf(f, i ? ",%d" : "%d", o->skip[i]);
    fprintf(f, "],\"protect_sinks\":%d,\"protect_recent\":%d,\"positions\":\"%s\",\"granularity\":\"%s\"}",
            o->sinks, o->recent, o->positions_shifted ? "shifted" : "true",
            o->granularity == GRAN_LAYER ? "layer" : "head");
    fclose(f);
    return buf;
}

/* ---- parameters ------------------------------------------------------------ */

const char *policy_param_str_or(const Policy *p, const char *key, const char *fallback) {
    for (int i = 0; i < p->o.n_params; i++)
        if (!strcmp(p->o.param_key[i], key)) return p->o.param_val[i];
    return fallback;
}

double policy_param_or(const Policy *p, const char *key, double fallback) {
    const char *v = policy_param_str_or(p, key, NULL);
    return v ? strtod(v, NULL) : fallback;
}

const char *policy_param_str(const Policy *p, const char *key) {
    const char *v = policy_param_str_or(p, key, NULL);
    if (!v) {
        fprintf(stderr, "kvlab: bug: policy %s has no parameter '%s'\n", p->def->name, key);
        abort();
    }
    return v;
}

double policy_param(const Policy *p, const char *key) { return strtod(policy_param_str(p, key), NULL); }

/* ---- create / free ---------------------------------------------------------- */

/* One scratch per thread that may run a decision. */
static void ensure_scratch(Policy *p, int n_threads) {
    if (n_threads <= p->n_scratch) return;
    p->scratch = xrealloc(p->scratch, (size_t)n_threads * sizeof(PolicyScratch));
    size_t T = (size_t)p->max_tokens, F = T > 2 * (size_t)p->head_dim ? T : 2 * (size_t)p->head_dim;
    for (int i = p->n_scratch; i < n_threads; i++) {
        PolicyScratch *s = &p->scratch[i];
        s->score = xcalloc(F, sizeof(float));
        s->sum = xcalloc(F, sizeof(float));
        s->tmp = xcalloc(F, sizeof(float));
        s->dtmp = xcalloc(T, sizeof(double));
        s->order = xcalloc(T, sizeof(int));
        s->itmp = xcalloc(T, sizeof(int));
        s->mark = xcalloc(T, 1);
    }
    p->n_scratch = n_threads;
}

PolicyScratch *policy_scratch(Policy *p) { return &p->scratch[omp_get_thread_num()]; }

/* The columns of d not listed yet (a borrowed score brings its own). */
static int add_columns(Policy *p, const PolicyDef *d, Err *err) {
    for (const PolicyColumn *const *col = d->columns; col && *col; col++) {
        int i = 0;
        while (i < p->n_columns && p->columns[i] != *col) i++;
        if (i < p->n_columns) continue;
        if (p->n_columns == POLICY_MAX_COLUMNS)
            return err_set(err, "policy %s: more than %d per-slot columns", d->name, POLICY_MAX_COLUMNS);
        p->columns[p->n_columns] = *col;
        p->cache_columns[p->n_columns] = (KVColumn){ (*col)->name, (*col)->per_query_head ? p->group : 1, (*col)->fill };
        p->n_columns++;
    }
    return 0;
}

float *policy_column(const Policy *p, const KVCache *c, const char *name, int layer, int head) {
    for (int i = 0; i < p->n_columns; i++)
        if (!strcmp(p->columns[i]->name, name))
            return p->columns[i]->per_query_head ? kvcache_column(c, layer, head / p->group, i, head % p->group)
                                                 : kvcache_column(c, layer, head, i, 0);
    fprintf(stderr, "kvlab: bug: policy %s has no column '%s'\n", p->def->name, name);
    abort();
}

Policy *policy_create(const PolicyOpts *opts, const Config *cfg, int max_tokens, Err *err) {
    PolicyOpts o = *opts;
    if (policy_resolve(&o, err) != 0) return NULL;
    if (cfg->n_layers > POLICY_MAX_LAYERS) {
        err_set(err, "policy: %d layers, more than the %d supported", cfg->n_layers, POLICY_MAX_LAYERS);
        return NULL;
    }
    for (int i = 0; i < o.n_skip; i++)
        if (o.skip[i] >= cfg->n_layers) {
            err_set(err, "--skip-layers: layer %d does not exist (the model has %d layers)", o.skip[i], cfg->n_layers);
            return NULL;
        }
    Policy *p = xcalloc(1, sizeof *p);
    p->o = o;
    p->def = p->scorer = policy_find(o.name);
    p->n_layers = cfg->n_layers;
    p->n_heads = cfg->n_heads;
    p->n_kv_heads = cfg->n_kv_heads;
    p->head_dim = cfg->head_dim;
    p->group = cfg->n_heads / cfg->n_kv_heads;
    p->max_tokens = max_tokens;
    p->skip = xcalloc((size_t)p->n_layers, 1);
    for (int i = 0; i < o.n_skip; i++) p->skip[o.skip[i]] = 1;
    size_t L = (size_t)p->n_layers, T = (size_t)max_tokens;
    p->budget = xcalloc(L, sizeof(int));
    p->last_budget = xcalloc(L, sizeof(int));
    p->keeps = xcalloc(L * p->n_kv_heads * T, sizeof(int));
    p->n_keeps = xcalloc(L * p->n_kv_heads, sizeof(int));
    p->evicts = xcalloc(L * p->n_kv_heads * POLICY_FEW, sizeof(int));
    p->n_evicts = xcalloc(L * p->n_kv_heads, sizeof(int));
    ensure_scratch(p, 1);
    if (p->def->init && p->def->init(p, err) != 0) { policy_free(p); return NULL; }
    p->flags = p->def->flags | p->scorer->flags;
    if (add_columns(p, p->def, err) != 0 || add_columns(p, p->scorer, err) != 0) { policy_free(p); return NULL; }
    return p;
}

void policy_free(Policy *p) {
    if (!p) return;
    if (p->def->free) p->def->free(p);
    free(p->skip); free(p->budget); free(p->last_budget); free(p->keeps); free(p->n_keeps); free(p->evicts); free(p->n_evicts);
    for (int i = 0; i < p->n_scratch; i++) {
        PolicyScratch *s = &p->scratch[i];
        free(s->score); free(s->sum); free(s->tmp); free(s->dtmp); free(s->order); free(s->itmp); free(s->mark);
    }
    free(p->scratch);
    free(p);
}

const PolicyOpts *policy_opts(const Policy *p) { return &p->o; }
int policy_needs_attention(const Policy *p) {
    for (int i = 0; i < p->n_columns; i++)
        if (p->columns[i]->observe) return 1;
    return 0;
}

int policy_observer(Policy *p, AttentionObserver *out) {
    if (!p || !policy_needs_attention(p)) return 0;
    *out = (AttentionObserver){ p, policy_observe };
    return 1;
}
PolicyTiming policy_timing(const Policy *p) { return p->timing; }
void policy_timing_reset(Policy *p) { memset(&p->timing, 0, sizeof p->timing); }
const int *policy_last_budgets(const Policy *p) { return p->last_budget; }

/* ---- observing attention (spec: h2o, snapkv, tova, pyramid, zigzag) ---------- */

/* Runs inside the forward pass. forward.h guarantees that one (layer, head)
 * is only ever handled by one thread at a time, in query order, so each head
 * adds into its own rows without locks, and the sums are reproducible. */
void policy_observe(void *ctx, int layer, int head, int query_pos, const float *probs, const int *key_pos, int n_keys) {
    (void)key_pos;
    Policy *p = ctx;
    if (p->skip[layer]) return;
    for (int i = 0; i < p->n_columns; i++) {
        const PolicyColumn *col = p->columns[i];
        if (col->observe)
            col->observe(p, kvcache_column(p->cache, layer, head / p->group, i, head % p->group), layer, head,
                         query_pos, probs, n_keys);
    }
}

/* A new sequence (the cache is empty): forget everything. */
static int start_sequence(Policy *p, KVCache *c, Err *err) {
    if (kvcache_set_shifted(c, p->o.positions_shifted, err) != 0) return -1;
    if (kvcache_set_columns(c, p->cache_columns, p->n_columns, err) != 0) return -1;
    p->decode_steps = 0;
    if (p->def->reset) p->def->reset(p);
    return 0;
}

int policy_before_forward(Policy *p, KVCache *c, int n, Err *err) {
    if (!p) return 0;
    if (c->max_tokens > p->max_tokens)
        return err_set(err, "policy: created for %d tokens, the cache holds up to %d", p->max_tokens, c->max_tokens);
    if (c->next_pos == 0) {
        if (start_sequence(p, c, err) != 0) return -1;
    } else if (c->shifted != p->o.positions_shifted) {
        return err_set(err, "policy: the cache holds keys with positions %s, the policy wants %s",
                       c->shifted ? "shifted" : "true", p->o.positions_shifted ? "shifted" : "true");
    } else if (!kvcache_has_columns(c, p->cache_columns, p->n_columns)) {
        return err_set(err, "policy %s: the cache's sequence was started without this policy's per-slot columns",
                       p->def->name);
    }
    p->cache = c;
    for (int i = 0; i < p->n_columns; i++)
        if (p->columns[i]->begin) p->columns[i]->begin(p, c, n);
    return 0;
}

/* ---- choosing ------------------------------------------------------------------ */

/* A score as ranked: NaN counts as the lowest, so the order stays total. */
static inline float rank_of(float v) { return v == v ? v : -INFINITY; }

/* The total order of "worth keeping": higher score, then lower position. */
static inline int better(const float *score, const int *pos, int a, int b) {
    float x = rank_of(score[a]), y = rank_of(score[b]);
    return x > y || (x == y && pos[a] < pos[b]);
}

/* Rearrange idx[0..m) so that idx[0..k) are the k best (Wirth's selection,
 * expected O(m)); 1 <= k <= m. */
static void select_best(int *idx, int m, int k, const float *score, const int *pos) {
    int lo = 0, hi = m - 1, kth = k - 1;
    while (lo < hi) {
        int pivot = idx[kth], i = lo, j = hi;
        do {
            while (better(score, pos, idx[i], pivot)) i++;
            while (better(score, pos, pivot, idx[j])) j--;
            if (i <= j) { int t = idx[i]; idx[i] = idx[j]; idx[j] = t; i++; j--; }
        } while (i <= j);
        if (j < kth) lo = i;
        if (kth < i) hi = j;
    }
}

/* The e worst candidates of [lo, hi) in one pass (e small): w[0..e) holds the
 * worst seen so far, worst first. Worse = lower score, and among equal scores
 * the higher position (slots are in position order: the later slot). */
static void worst_few(const float *score, int lo, int hi, int e, int *w) {
    int n = 0;
    float bound = INFINITY;                                   /* rank of w[e-1] once full */
    for (int j = lo; j < hi; j++) {
        float v = rank_of(score[j]);
        if (v > bound) continue;                              /* the usual case */
        int i = n < e ? n++ : e - 1;                          /* drop the least bad */
        while (i > 0 && v <= rank_of(score[w[i - 1]])) { w[i] = w[i - 1]; i--; }
        w[i] = j;
        if (n == e) bound = rank_of(score[w[e - 1]]);
    }
}

static int cmp_int(const void *a, const void *b) { return *(const int *)a - *(const int *)b; }

/* policy_select_top, and when at most POLICY_FEW candidates go and `evict` is
 * given, only the evicted slots are written (evict[0..*n_evict), ascending;
 * keep[] untouched): a decode step then writes a few ints, not the whole head. */
static int select_top(Policy *p, const int *pos, int len, const float *score, int budget, int sinks,
                      int recent, int *keep, int *evict, int *n_evict) {
    int s = sinks < len ? sinks : len;
    int r = recent < len - s ? recent : len - s;
    int lo = s, hi = len - r;                 /* candidates: slots [lo, hi) */
    int m = hi - lo, k = budget - s - r;
    if (k > m) k = m;
    if (k < 0) k = 0;
    int n = 0;
    if (n_evict) *n_evict = -1;
    if (m - k <= POLICY_FEW) {
        /* Evicting a few (a decode step of the step schedule evicts one): one
         * pass finds them, then the runs between them are kept. */
        int ev[POLICY_FEW + 1], n_ev = m - k;
        if (n_ev > 0) worst_few(score, lo, hi, n_ev, ev);
        qsort(ev, (size_t)n_ev, sizeof(int), cmp_int);
        if (evict) {
            memcpy(evict, ev, (size_t)n_ev * sizeof(int));
            *n_evict = n_ev;
            return len - n_ev;
        }
        ev[n_ev] = len;
        for (int e = 0, j = 0; e <= n_ev; j = ev[e++] + 1)
            while (j < ev[e]) keep[n++] = j++;
        return n;
    }
    /* evicting many (after a prompt): the k best by selection, expected O(m) */
    PolicyScratch *sc = policy_scratch(p);
    int *idx = sc->order;
    unsigned char *mark = sc->mark;           /* mark[j] = 1: candidate j is kept */
    for (int j = 0; j < m; j++) idx[j] = lo + j;
    if (k > 0) select_best(idx, m, k, score, pos);
    memset(mark + lo, 0, (size_t)m);
    for (int j = 0; j < k; j++) mark[idx[j]] = 1;
    for (int j = 0; j < lo; j++) keep[n++] = j;
    for (int j = lo; j < hi; j++) if (mark[j]) keep[n++] = j;
    for (int j = hi; j < len; j++) keep[n++] = j;
    return n;
}

int policy_select_top(Policy *p, const int *pos, int len, const float *score,
                      int budget, int sinks, int recent, int *keep) {
    return select_top(p, pos, len, score, budget, sinks, recent, keep, NULL, NULL);
}

void policy_group_mean(const Policy *p, const KVCache *c, const char *name, int layer, int kv_head, int n, float *out) {
    int h0 = kv_head * p->group;
    memcpy(out, policy_column(p, c, name, layer, h0), (size_t)n * sizeof(float));
    for (int h = h0 + 1; h < h0 + p->group; h++) {
        const float *row = policy_column(p, c, name, layer, h);
        for (int j = 0; j < n; j++) out[j] += row[j];
    }
    if (p->group > 1)
        for (int j = 0; j < n; j++) out[j] /= (float)p->group;
}

void policy_distribute(const double *x, const unsigned char *skip, int n_layers, long total,
                       int lo, const int *hi, int *out) {
    long sum = 0;
    for (int l = 0; l < n_layers; l++) {
        if (skip && skip[l]) { out[l] = INT_MAX; continue; }
        double v = floor(x[l]);
        int b = v < lo ? lo : v > hi[l] ? hi[l] : (int)v;
        if (b < lo) b = lo > hi[l] ? hi[l] : lo;
        out[l] = b;
        sum += b;
    }
    /* one unit at a time to (from) the layer furthest below (above) its target */
    while (sum != total) {
        int best = -1, up = sum < total;
        double best_gap = 0;
        for (int l = 0; l < n_layers; l++) {
            if (skip && skip[l]) continue;
            if (up ? out[l] >= hi[l] : out[l] <= lo) continue;
            double gap = up ? x[l] - out[l] : out[l] - x[l];
            if (best < 0 || gap > best_gap) { best = l; best_gap = gap; }
        }
        if (best < 0) break;                     /* every layer at its bound */
        out[best] += up ? 1 : -1;
        sum += up ? 1 : -1;
    }
}

void policy_layer_budgets(Policy *p, const KVCache *c, int avg, int *out) {
    if (p->def->budgets) p->def->budgets(p, c, avg, out);
    else for (int l = 0; l < p->n_layers; l++) out[l] = avg;
    for (int l = 0; l < p->n_layers; l++) if (p->skip[l]) out[l] = INT_MAX;
}

/* Decisions over fewer slots than this (all heads together) run on one thread. */
#define POLICY_PARALLEL_SLOTS (1L << 16)

/* ---- applying ------------------------------------------------------------------ */

/* Decide (layer, g): the slots to keep (or the few to evict, *n_evict >= 0),
 * or -1 when the head stays as it is. */
static int decide_head(Policy *p, const KVCache *c, int layer, int g, int budget, int *keep,
                       int *evict, int *n_evict) {
    const KVHead *h = kvcache_head(c, layer, g);
    *n_evict = -1;
    if (p->def->select) {
        int n = p->def->select(p, c, layer, g, budget, keep);
        return n < h->len ? n : -1;
    }
    if (h->len <= budget) return -1;
    const float *score = p->scorer->score(p, c, layer, g, policy_scratch(p)->score);
    return select_top(p, h->pos, h->len, score, budget, p->o.sinks, p->o.recent, keep, evict, n_evict);
}

/* Granularity `layer` (TOVA): one token set for every head of the layer,
 * chosen by the score averaged over its KV heads, which must hold the same
 * tokens. Returns the count, -1 to leave the layer alone, -2 on mismatch. */
static int decide_layer(Policy *p, const KVCache *c, int layer, int budget, int *keep) {
    const KVHead *h0 = kvcache_head(c, layer, 0);
    int len = h0->len;
    if (len <= budget) return -1;
    PolicyScratch *sc = policy_scratch(p);
    for (int g = 0; g < p->n_kv_heads; g++) {
        const KVHead *h = kvcache_head(c, layer, g);
        if (h->len != len || memcmp(h->pos, h0->pos, (size_t)len * sizeof(int)) != 0) return -2;
        const float *score = p->scorer->score(p, c, layer, g, sc->score);
        for (int j = 0; j < len; j++) sc->sum[j] = g ? sc->sum[j] + rank_of(score[j]) : rank_of(score[j]);
    }
    for (int j = 0; j < len; j++) sc->sum[j] /= (float)p->n_kv_heads;
    return policy_select_top(p, h0->pos, len, sc->sum, budget, p->o.sinks, p->o.recent, keep);
}

static int layer_longest(const KVCache *c, int layer) {
    int n = 0;
    for (int g = 0; g < c->n_kv_heads; g++)
        if (kvcache_head(c, layer, g)->len > n) n = kvcache_head(c, layer, g)->len;
    return n;
}

/* The budget of each layer for this eviction (-1: leave the layer alone). */
static void eviction_budgets(Policy *p, const KVCache *c) {
    if (p->o.schedule == SCHED_THRESHOLD) {
        /* l2compress prune_after: a layer at >= T tokens keeps keep_ratio of its length */
        for (int l = 0; l < p->n_layers; l++) {
            int n = layer_longest(c, l);
            p->budget[l] = p->skip[l] || n < p->o.schedule_n ? -1 : policy_budget_of(&p->o, n);
        }
    } else {
        policy_layer_budgets(p, c, policy_budget_of(&p->o, c->next_pos), p->budget);
        for (int l = 0; l < p->n_layers; l++) if (p->skip[l]) p->budget[l] = -1;
    }
}

static int schedule_fires(Policy *p, int start_pos) {
    switch (p->o.schedule) {
    case SCHED_PREFILL: return start_pos == 0;
    case SCHED_INTERVAL:   /* kvpress DecodingPress: every N decode steps (not after the prompt) */
        return start_pos > 0 && ++p->decode_steps % p->o.schedule_n == 0;
    default: return 1;     /* step and threshold look after every forward */
    }
}

/* Phase 1: every (layer, KV head) — or every layer with granularity layer —
 * decides what it keeps (p->keeps, p->n_keeps). Called by every thread of the
 * team (an orphaned `omp for`); a layer whose heads disagree (granularity
 * layer) is reported in *bad_layer and left alone. */
static void decide_all(Policy *p, const KVCache *c, int *bad_layer) {
    int KV = p->n_kv_heads, per_layer = p->o.granularity == GRAN_LAYER;
    int n_tasks = per_layer ? p->n_layers : p->n_layers * KV;
    size_t T = (size_t)p->max_tokens;
    #pragma omp for schedule(dynamic, 1)
    for (int task = 0; task < n_tasks; task++) {
        int l = per_layer ? task : task / KV, g = per_layer ? 0 : task % KV;
        int *n_keep = &p->n_keeps[l * KV + g], *keep = p->keeps + ((size_t)l * KV + g) * T;
        int *n_evict = &p->n_evicts[l * KV + g], *evict = p->evicts + ((size_t)l * KV + g) * POLICY_FEW;
        *n_keep = *n_evict = -1;
        if (p->budget[l] < 0) continue;
        *n_keep = per_layer ? decide_layer(p, c, l, p->budget[l], keep)
                            : decide_head(p, c, l, g, p->budget[l], keep, evict, n_evict);
        if (*n_keep == -2) {
            *n_keep = -1;
            #pragma omp critical(policy_bad_layer)
            *bad_layer = l;
        }
    }
}

/* Phase 2: compact every head that keeps fewer than it holds (orphaned `omp for`). */
static void apply_all(Policy *p, KVCache *c) {
    int KV = p->n_kv_heads, per_layer = p->o.granularity == GRAN_LAYER;
    size_t T = (size_t)p->max_tokens;
    #pragma omp for schedule(dynamic, 1)
    for (int task = 0; task < p->n_layers * KV; task++) {
        int l = task / KV, g = task % KV, src = per_layer ? l * KV : task;
        int n_keep = p->n_keeps[src], n_evict = p->n_evicts[src];
        if (n_keep < 0) continue;
        long evicted = kvcache_head(c, l, g)->len - n_keep;
        if (n_evict >= 0) kvcache_evict(c, l, g, p->evicts + (size_t)src * POLICY_FEW, n_evict);
        else kvcache_keep(c, l, g, p->keeps + (size_t)src * T, n_keep);
        #pragma omp atomic
        p->timing.evicted += evicted;
    }
}

int policy_after_forward(Policy *p, KVCache *c, int start_pos, Err *err) {
    if (!p) return 0;
    int decode = start_pos > 0, bad_layer = -1;
    p->timing.forwards++;
    if (decode) p->timing.decode_forwards++;
    for (int l = 0; l < p->n_layers; l++) p->last_budget[l] = -1;
    if ((p->flags & POLICY_NEVER_EVICTS) || !schedule_fires(p, start_pos)) return 0;
    p->timing.decisions++;
    ensure_scratch(p, omp_get_max_threads());
    double t0 = now_seconds(), t1 = t0;
    eviction_budgets(p, c);
    /* One team for both phases; the barrier after phase 1 is where the decide
     * time ends and the apply time starts. A decode step of a few thousand
     * slots per head runs on one thread: it is cheaper than waking a team
     * (and than waiting for one on a busy machine). */
    long slots = 0;
    for (int l = 0; l < p->n_layers; l++)
        if (p->budget[l] >= 0) slots += (long)layer_longest(c, l) * p->n_kv_heads;
    #pragma omp parallel if (slots >= POLICY_PARALLEL_SLOTS)
    {
        decide_all(p, c, &bad_layer);
        #pragma omp master
        t1 = now_seconds();
        apply_all(p, c);
    }
    p->timing.decide_s += t1 - t0;
    if (decode) p->timing.decide_decode_s += t1 - t0;
    p->timing.apply_s += now_seconds() - t1;
    memcpy(p->last_budget, p->budget, (size_t)p->n_layers * sizeof(int));
    if (bad_layer >= 0)
        return err_set(err, "granularity layer: the KV heads of layer %d hold different tokens", bad_layer);
    return 0;
}

int policy_forward(Policy *p, Forward *f, KVCache *c, const int *tokens, int n, float *logits_all, Err *err) {
    if (!p) return forward(f, c, tokens, n, logits_all, err);
    int start = c->next_pos;
    if (policy_before_forward(p, c, n, err) != 0) return -1;
    /* l2, window, random, lagkv, full observe nothing: their forward keeps the
     * observer-free schedule of the attention rows (forward.h) */
    AttentionObserver obs;
    int observes = policy_observer(p, &obs);
    if (observes) forward_add_observer(f, &obs);
    int rc = forward(f, c, tokens, n, logits_all, err);
    if (observes) forward_remove_observer(f, &obs);
    if (rc != 0) return -1;
    return policy_after_forward(p, c, start, err);
}
