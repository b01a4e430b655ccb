/* policy_opts.c — the knobs of a run (../shared/spec/methods.md §0), as plain
 * data: the command-line options every command shares, "NAME:key=val,..."
 * specs checked against the policy's parameter table, the defaults (the
 * policy's own, then the common ones), --help and the JSON record of a run. */
#include "policy/policy.h"

#include <float.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/args.h"

static void policy_names(char *buf, size_t size) {
    size_t used = 0;
    buf[0] = '\0';
    for (int i = 0; i < policy_count() && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, "%s%s", i ? ", " : "", policy_at(i)->name);
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
    o->head_floor = -1;
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
        if (!q) return err_set(err, "--policy %s: unknown parameter '%s' (the policies and their parameters: kvlab generate --help)", name, item);
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
    /* one range check, so 1.5 and 1 are told the same half-open range */
    double r = cli_float(opt, v, -DBL_MAX, DBL_MAX);
    if (open_at_zero ? r <= 0.0 || r > 1.0 : r < 0.0 || r >= 1.0)
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
    } else if (!strcmp(a, "--target-size")) {             /* kvpress DecodingPress */
        set_budget(o, BUDGET_TOKENS, (double)cli_int(a, cli_value(argc, argv, i), 1, 1 << 22), a);
        o->decoding_press = 1;
    } else if (!strcmp(a, "--target-compression-ratio")) {   /* kvpress CompressionRatioDecodingPress */
        set_budget(o, BUDGET_COMPRESSION, ratio_option(a, cli_value(argc, argv, i), 0), a);
        o->decoding_press = 1;
    } else if (!strcmp(a, "--compression-interval")) {
        o->schedule = SCHED_INTERVAL;
        o->schedule_n = (int)cli_int(a, cli_value(argc, argv, i), 1, 1 << 22);
    } else if (!strcmp(a, "--budget-alloc")) {
        const char *v = cli_value(argc, argv, i);
        if (!strcmp(v, "uniform")) o->head_alloc = ALLOC_UNIFORM;
        else if (!strcmp(v, "adaptive")) o->head_alloc = ALLOC_ADAPTIVE;
        else die("--budget-alloc: '%s' is not uniform or adaptive", v);
    } else if (!strcmp(a, "--head-floor")) {
        o->head_floor = cli_float(a, cli_value(argc, argv, i), 0.0, 1.0);
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
    /* kvpress's DecodingPress compresses every compression_interval (512)
     * decode steps, never after the prompt */
    if (o->decoding_press && o->schedule == SCHED_DEFAULT) { o->schedule = SCHED_INTERVAL; o->schedule_n = 512; }
    /* the policy's own defaults first, then the common ones (../shared/spec/methods.md §0) */
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
    if (o->head_floor < 0) o->head_floor = 0.2;
    if (o->head_alloc == ALLOC_ADAPTIVE && o->granularity == GRAN_LAYER)
        return err_set(err, "--budget-alloc adaptive: policy %s keeps one token set per layer (add --granularity head)", d->name);
    if (o->head_alloc == ALLOC_ADAPTIVE && d->select && !d->score)
        return err_set(err, "--budget-alloc adaptive: policy %s has no per-token score to share a budget by", d->name);
    o->resolved = 1;
    return 0;
}

void policy_cli_finish(PolicyOpts *o) {
    Err err;
    if (policy_resolve(o, &err) != 0) die("%s", err.msg);
}

void policy_print_help(FILE *out) {
    fprintf(out, "  policies (--policy NAME or NAME:key=val,key=val; docs/policies.md):\n");
    for (int i = 0; i < policy_count(); i++) {
        const PolicyDef *d = policy_at(i);
        fprintf(out, "    %-9s %s\n", d->name, d->rule);
        if (d->paper) fprintf(out, "              (%s)\n", d->paper);
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
    fprintf(f, "{\"policy\":\"%s\",\"params\":{", o->name);
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
    fprintf(f, "],\"protect_sinks\":%d,\"protect_recent\":%d,\"positions\":\"%s\",\"granularity\":\"%s\"",
            o->sinks, o->recent, o->positions_shifted ? "shifted" : "true",
            o->granularity == GRAN_LAYER ? "layer" : "head");
    if (o->head_alloc == ALLOC_ADAPTIVE)   /* uniform, the default, adds nothing: records stay as they were */
        fprintf(f, ",\"budget_alloc\":\"adaptive\",\"head_floor\":%g", o->head_floor);
    fputc('}', f);
    fclose(f);
    return buf;
}
