/* fuzz_policy.c — policy option strings (--policy NAME:key=val,...) and the
 * common knobs, then the policy run for real on a tiny model: a prompt and
 * decode steps through policy_forward, so every combination the parser
 * accepts is also executed (budgets, schedules, protections, skipped layers,
 * shifted positions, granularity).
 *
 * Input: 8 bytes of knobs (each mapped into the range the command line
 * accepts), then the spec string. */
#include "fuzz_util.h"
#include "policy/policy.h"

#define POL_CTX 48

static Model pol_model;
static int pol_loaded;

/* The knob bytes as the command line would have set them (policy_option). */
static void pol_knobs(PolicyOpts *o, const uint8_t *k) {
    switch (k[0] % 4) {
    case 1: o->budget_kind = BUDGET_TOKENS; o->budget = 1 + k[1] % 70; break;
    case 2: o->budget_kind = BUDGET_COMPRESSION; o->budget = (k[1] % 100) / 100.0; break;   /* [0, 1) */
    case 3: o->budget_kind = BUDGET_KEEP; o->budget = (k[1] % 100 + 1) / 100.0; break;      /* (0, 1] */
    default: break;
    }
    o->rounding = (Rounding)(k[2] % 3);
    o->schedule = (Schedule)(k[3] % 5);
    if (o->schedule == SCHED_INTERVAL) o->schedule_n = 1 + k[4] % 8;
    if (o->schedule == SCHED_THRESHOLD) o->schedule_n = 2 + k[4] % 70;
    o->sinks = k[5] & 0x80 ? -1 : k[5] % 12;
    o->recent = k[6] & 0x80 ? -1 : k[6] % 12;
    o->positions_shifted = k[7] & 1;
    o->granularity = (Granularity)((k[7] >> 1) % 3);
    if (k[7] & 0x08) {
        o->skip_given = 1;
        o->n_skip = (k[7] >> 4) % 3;   /* 0..2 layers, some beyond the model's 2 */
        for (int i = 0; i < o->n_skip; i++) o->skip[i] = (k[4] >> (2 * i)) % 4;
    }
}

/* A prompt as one prefill, then decode steps, the policy around every forward. */
static void pol_run(Policy *p, const uint8_t *data, size_t size) {
    const Model *m = &pol_model;
    Err err;
    KVCache cache;
    if (forward_cache_init(m, &cache, POL_CTX, &err) != 0) return;
    Forward *f = forward_create(m, 8);
    int ids[POL_CTX];
    for (int i = 0; i < POL_CTX; i++) ids[i] = (int)((i < (int)size ? data[i] : 3 * i) % m->cfg.vocab_size);
    int n_prompt = 4 + (int)(size % 24);
    if (policy_forward(p, f, &cache, ids, n_prompt, NULL, &err) == 0)
        for (int t = n_prompt; t < POL_CTX; t++)
            if (policy_forward(p, f, &cache, &ids[t], 1, NULL, &err) != 0) break;
    forward_free(f);
    kvcache_free(&cache);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 8) return 0;
    Err err;
    if (!pol_loaded) {
        char dir[4200];
        fuzz_tiny_checkpoint("pol", 1, dir, sizeof dir);
        if (model_load(&pol_model, dir, DTYPE_F32, &err) != 0) { fprintf(stderr, "fuzz: %s\n", err.msg); abort(); }
        pol_loaded = 1;
    }
    PolicyOpts o;
    policy_defaults(&o);
    pol_knobs(&o, data);
    char *spec = fuzz_cstr(data + 8, size - 8);
    if (policy_parse_spec(&o, spec, &err) == 0 && policy_resolve(&o, &err) == 0) {
        free(policy_json(&o));
        (void)policy_budget_of(&o, (int)(size % 100));
        Policy *p = policy_create(&o, &pol_model.cfg, POL_CTX, &err);
        if (p) {
            pol_run(p, data, size);
            policy_free(p);
        }
    }
    free(spec);
    return 0;
}
