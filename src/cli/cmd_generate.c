/* cmd_generate.c — `kvlab generate`: prefill the prompt in one pass, then decode
 * one token at a time, with an optional KV-cache eviction policy (policy.h);
 * the text streams to stdout, the speed, the KV memory and the policy's cost
 * go to stderr. --compare-full continues the same prompt twice, with the full
 * cache and with the policy, and prints both texts, where they part and the KV
 * memory of each: the smallest experiment kvlab exists for. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "engine/forward.h"
#include "engine/numcheck.h"
#include "engine/ops.h"
#include "policy/policy.h"
#include "engine/sampler.h"

static void help(void) {
    printf("usage: kvlab generate -m MODEL (-p PROMPT | -f FILE | --ids 1,2,3) [options]\n\n"
           "Continues the prompt; stops after -n tokens, at EOS, or when the context is full.\n"
           "Prints the prompt and the continuation on stdout, prefill/decode tokens/s on stderr.\n\n"
           "  -p, --prompt TEXT   prompt text (BOS is prepended)\n"
           "  -f, --prompt-file FILE  the prompt is the text of FILE (BOS is prepended)\n"
           "      --ids LIST      prompt as comma-separated token ids\n"
           "  -n, --tokens N      tokens to generate [128]\n"
           "      --temp T        sampling temperature; 0 = greedy (argmax) [0]\n"
           "      --top-p P       nucleus sampling mass, 1 = off [0.9]\n"
           "      --seed S        random seed: the same seed gives the same text [1]\n"
           "      --print-ids     print the generated token ids (comma-separated) instead of text\n"
           "      --compare-full  continue the prompt twice, with the full cache and with the\n"
           "                      policy (same sampler seed), then print both continuations,\n"
           "                      how many tokens agree and the KV memory of each\n"
           "      --batch N       tokens per prefill pass [512]\n"
           COMMON_OPTS_HELP
           "\n"
           POLICY_OPTS_HELP
           "\n");
    policy_print_help(stdout);
    printf("\nexample: kvlab generate -m MODEL -p TEXT --policy l2 --compression-ratio 0.5 --skip-layers 0,1 --schedule step\n"
           "         kvlab generate -m MODEL -p TEXT --policy lagkv:sink=16,lag=128,ratio=0.25\n"
           "         kvlab generate -m MODEL -p TEXT --policy l2 --compression-ratio 0.5 --compare-full\n"
           "stderr also reports the KV bytes in use and the policy's decide time per decode step.\n");
    cli_print_file_notes(stdout, HELP_INPUTS);
}

/* The slots a full cache of the tokens seen so far would hold. */
static long full_cache_slots(const KVCache *cache) {
    return (long)cache->next_pos * cache->n_layers * cache->n_kv_heads;
}

/* One generated token on stdout: its text (the piece after `prev`), or its id
 * comma-separated when ids are printed or there is no tokenizer. */
static void print_token(const Tokenizer *tok, int prev, int id, int index, int print_ids) {
    if (print_ids || !tok) printf(index ? ",%d" : "%d", id);
    else { char buf[8]; fputs(tokenizer_piece(tok, prev, id, buf), stdout); }
}

/* The KV memory and what the policy cost, on stderr. */
static void report_kv(const KVCache *cache, const Policy *policy, double t_decode) {
    long slots = kvcache_slots_used(cache), full = full_cache_slots(cache);
    fprintf(stderr, "kv: %.2f MiB in use, %s K+V (%ld slots, %.1f%% of a full cache of %d tokens)",
            kvcache_bytes_used(cache) / 1048576.0, dtype_name(cache->kv_dtype), slots, full ? 100.0 * slots / full : 0.0, cache->next_pos);
    if (policy && strcmp(policy_opts(policy)->name, "full") != 0) {
        PolicyTiming t = policy_timing(policy);
        double steps = t.decode_forwards > 0 ? (double)t.decode_forwards : 1.0;
        fprintf(stderr, " | policy %s: %ld evicted, decide %.3f ms/decode step (%.2f%% of decode), "
                "apply %.3f ms/forward, decide total %.1f ms",
                policy_opts(policy)->name, t.evicted, 1e3 * t.decide_decode_s / steps,
                t_decode > 0 ? 100.0 * t.decide_decode_s / t_decode : 0.0,
                t.forwards ? 1e3 * t.apply_s / t.forwards : 0.0, 1e3 * t.decide_s);
    }
    if (policy) {
        char *json = policy_json(policy_opts(policy));
        fprintf(stderr, "\npolicy: %s", json);
        free(json);
        if (policy_opts(policy)->head_alloc == ALLOC_ADAPTIVE) {   /* each head's share of the last eviction */
            json = policy_budgets_json(policy);
            fprintf(stderr, "\nbudgets: %s", json);
            free(json);
        }
    }
    fputc('\n', stderr);
}

/* One continuation of the prompt: prefill it in one pass, then take up to n_gen
 * tokens from the sampler, feeding each back through the cache (and the policy,
 * which evicts as its schedule says). With `stream` the tokens are printed as
 * they come (text, or ids with print_ids / no tokenizer). */
typedef struct {
    int *ids;              /* the generated tokens (EOS not included) */
    int n;
    const char *stop;      /* "length", "eos" or "context" */
    double prefill_s, decode_s;
} Continuation;

static Continuation continue_prompt(Forward *f, KVCache *cache, Policy *policy, NumGuard *guard,
                                    const Model *m, const int *prompt, int n_prompt, int n_gen, int ctx,
                                    Sampler *sampler, const Tokenizer *tok, int stream, int print_ids) {
    Continuation c = {xmalloc((size_t)(n_gen > 0 ? n_gen : 1) * sizeof(int)), 0, "length", 0, 0};
    float *scratch = xmalloc((size_t)m->cfg.vocab_size * sizeof(float));
    Err err;
    double t0 = now_seconds();
    if (policy_forward(policy, f, cache, prompt, n_prompt, NULL, &err) != 0) die("%s", err.msg);
    if (numguard_check(guard, forward_last_logits(f), 1, &err) != 0) die("%s", err.msg);
    c.prefill_s = now_seconds() - t0;

    int prev = prompt[n_prompt - 1];
    double t1 = now_seconds();
    while (c.n < n_gen) {
        memcpy(scratch, forward_last_logits(f), (size_t)m->cfg.vocab_size * sizeof(float));
        int next = sampler_next(sampler, scratch);
        if (next == m->cfg.eos_id) { c.stop = "eos"; break; }
        c.ids[c.n++] = next;
        if (stream) {
            print_token(tok, prev, next, c.n - 1, print_ids);
            fflush(stdout);
        }
        prev = next;
        if (c.n == n_gen) break;
        if (n_prompt + c.n >= ctx) { c.stop = "context"; break; }
        if (policy_forward(policy, f, cache, &next, 1, NULL, &err) != 0) die("%s", err.msg);
        if (numguard_check(guard, forward_last_logits(f), 1, &err) != 0) die("%s", err.msg);
    }
    c.decode_s = now_seconds() - t1;
    free(scratch);
    return c;
}

/* The speed line on stderr; the decode time covers n - 1 forward passes (the
 * first token comes from the prefill). */
static void report_speed(const Continuation *c, int n_prompt, const Model *m) {
    int n_decode_passes = c->n > 0 ? c->n - 1 : 0;
    fprintf(stderr, "prefill: %d tokens in %.1f ms = %.1f tok/s | decode: %d tokens in %.1f ms = %.1f tok/s | "
            "stop: %s | %s, %s weights, %d threads\n",
            n_prompt, c->prefill_s * 1e3, n_prompt / c->prefill_s, n_decode_passes, c->decode_s * 1e3,
            n_decode_passes > 0 ? n_decode_passes / c->decode_s : 0.0, c->stop, kernels_get()->name,
            dtype_name(m->compute_dtype), ops_threads());
}

/* The prompt's text (or nothing when ids are printed). */
static void print_prompt(const Tokenizer *tok, const int *prompt, int n_prompt, int print_ids) {
    if (print_ids || !tok) return;
    Err err;
    char *s = tokenizer_decode(tok, prompt, n_prompt, &err);
    if (s) { fputs(s, stdout); free(s); }
}

/* A continuation, all at once (--compare-full). */
static void print_continuation(const Tokenizer *tok, const int *prompt, int n_prompt,
                               const Continuation *c, int print_ids) {
    int prev = prompt[n_prompt - 1];
    for (int i = 0; i < c->n; i++) {
        print_token(tok, prev, c->ids[i], i, print_ids);
        prev = c->ids[i];
    }
    printf("\n");
}

/* --compare-full: the full cache's continuation, then the policy's, then how far
 * they agree and what each cache holds. Agreement is counted position by position
 * (free-running: after the first difference the two texts see different tokens,
 * so the share of equal positions after it is only indicative). */
static void compare_with_full(Forward *f, KVCache *cache, Policy *policy, NumGuard *guard, const Model *m,
                              const Tokenizer *tok, const int *prompt, int n_prompt, int n_gen, int ctx,
                              float temperature, float top_p, unsigned long long seed, int print_ids) {
    PolicyOpts full_opts;
    policy_defaults(&full_opts);
    policy_cli_finish(&full_opts);
    Err err;
    Policy *full = policy_create(&full_opts, &m->cfg, ctx, &err);
    if (!full) die("%s", err.msg);

    Sampler sampler;
    sampler_init(&sampler, m->cfg.vocab_size, temperature, top_p, seed);
    Continuation a = continue_prompt(f, cache, full, guard, m, prompt, n_prompt, n_gen, ctx, &sampler, tok, 0, print_ids);
    size_t full_bytes = kvcache_bytes_used(cache);
    long full_slots = kvcache_slots_used(cache);
    int full_tokens = cache->next_pos;
    sampler_free(&sampler);

    kvcache_reset(cache);
    sampler_init(&sampler, m->cfg.vocab_size, temperature, top_p, seed);
    Continuation b = continue_prompt(f, cache, policy, guard, m, prompt, n_prompt, n_gen, ctx, &sampler, tok, 0, print_ids);
    size_t policy_bytes = kvcache_bytes_used(cache);
    long policy_slots = kvcache_slots_used(cache);
    sampler_free(&sampler);

    printf("--- prompt: %d tokens ---\n", n_prompt);
    print_prompt(tok, prompt, n_prompt, print_ids);
    printf("\n--- full cache: %.2f MiB of %s KV (%ld slots, %d tokens) ---\n", full_bytes / 1048576.0,
           dtype_name(cache->kv_dtype), full_slots, full_tokens);
    print_continuation(tok, prompt, n_prompt, &a, print_ids);
    long policy_full_slots = full_cache_slots(cache);
    printf("--- %s: %.2f MiB of %s KV (%ld slots, %.1f%% of a full cache of %d tokens) ---\n", policy_opts(policy)->name,
           policy_bytes / 1048576.0, dtype_name(cache->kv_dtype), policy_slots, policy_full_slots ? 100.0 * policy_slots / policy_full_slots : 0.0,
           cache->next_pos);
    print_continuation(tok, prompt, n_prompt, &b, print_ids);

    int n = a.n < b.n ? a.n : b.n, same_prefix = 0, same = 0;
    while (same_prefix < n && a.ids[same_prefix] == b.ids[same_prefix]) same_prefix++;
    for (int i = 0; i < n; i++) same += a.ids[i] == b.ids[i];
    printf("--- agreement: the first %d of %d generated tokens are identical; %d of %d positions equal ---\n",
           same_prefix, a.n, same, n);
    fflush(stdout);
    report_speed(&b, n_prompt, m);
    free(a.ids);
    free(b.ids);
    policy_free(full);
}

int cmd_generate(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) { help(); return 0; }
    CommonOpts o;
    common_defaults(&o);
    PolicyOpts po;
    policy_defaults(&po);
    const char *text = NULL, *ids_str = NULL, *prompt_file = NULL;
    int n_gen = 128, print_ids = 0, batch = 512, compare_full = 0;
    double temperature = 0.0, top_p = 0.9;
    unsigned long long seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) text = cli_value(argc, argv, &i);
        else if (!strcmp(a, "-f") || !strcmp(a, "--prompt-file")) prompt_file = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--ids")) ids_str = cli_value(argc, argv, &i);
        else if (!strcmp(a, "-n") || !strcmp(a, "--tokens")) n_gen = (int)cli_int(a, cli_value(argc, argv, &i), 0, 1 << 22);
        else if (!strcmp(a, "--temp")) temperature = cli_float("--temp", cli_value(argc, argv, &i), 0.0, 100.0);
        else if (!strcmp(a, "--top-p")) top_p = cli_float("--top-p", cli_value(argc, argv, &i), 1e-6, 1.0);
        else if (!strcmp(a, "--seed")) seed = (unsigned long long)cli_int("--seed", cli_value(argc, argv, &i), 0, (1L << 62));
        else if (!strcmp(a, "--print-ids")) print_ids = 1;
        else if (!strcmp(a, "--compare-full")) compare_full = 1;
        else if (!strcmp(a, "--batch")) batch = (int)cli_int("--batch", cli_value(argc, argv, &i), 1, 65536);
        else if (!common_option(&o, argc, argv, &i) && !policy_option(&po, argc, argv, &i)) die("generate: unknown option '%s' (kvlab generate --help)", a);
    }
    if (!!text + !!ids_str + !!prompt_file != 1) die("generate: give exactly one of -p PROMPT, -f FILE or --ids LIST");
    char *file_text = NULL;
    if (prompt_file) {
        Err ferr;
        size_t n_bytes;
        if (read_text_file(prompt_file, &file_text, &n_bytes, &ferr) != 0) die("%s", ferr.msg);
        if (strlen(file_text) != n_bytes) die("%s: a NUL byte in the prompt text", prompt_file);
        text = file_text;
    }
    policy_cli_finish(&po);
    if (compare_full && !strcmp(po.name, "full"))
        die("--compare-full: give a policy to compare with the full cache (e.g. --policy l2 --compression-ratio 0.5)");

    Model m;
    common_load_model(&o, &m);
    Tokenizer *tok = NULL;
    if (text || o.tokenizer_path || m.tokenizer_path[0]) tok = common_load_tokenizer(&o, &m);
    int ctx = common_ctx(&o, &m), n_prompt;
    int *prompt = common_prompt_ids(&m, tok, text, ids_str, ctx, &n_prompt);

    Err err;
    KVCache cache;
    if (forward_cache_init(&m, &cache, ctx, &err) != 0) die("%s", err.msg);
    Forward *f = forward_create(&m, batch);
    NumGuard *guard = numguard_attach(f, &m);   /* NaN/Inf logits: an error naming the layer and tensor */
    Policy *policy = policy_create(&po, &m.cfg, ctx, &err);
    if (!policy) die("%s", err.msg);

    if (compare_full) {
        compare_with_full(f, &cache, policy, guard, &m, tok, prompt, n_prompt, n_gen, ctx,
                          (float)temperature, (float)top_p, seed, print_ids);
    } else {
        Sampler sampler;
        sampler_init(&sampler, m.cfg.vocab_size, (float)temperature, (float)top_p, seed);
        print_prompt(tok, prompt, n_prompt, print_ids);
        fflush(stdout);
        Continuation c = continue_prompt(f, &cache, policy, guard, &m, prompt, n_prompt, n_gen, ctx,
                                         &sampler, tok, 1, print_ids);
        printf("\n");
        fflush(stdout);   /* the text ends its line before the statistics on stderr */
        report_speed(&c, n_prompt, &m);
        report_kv(&cache, policy, c.decode_s);
        free(c.ids);
        sampler_free(&sampler);
    }

    policy_free(policy);
    numguard_free(guard);
    forward_free(f);
    kvcache_free(&cache);
    free(prompt);
    free(file_text);
    if (tok) tokenizer_free(tok);
    model_free(&m);
    return 0;
}
