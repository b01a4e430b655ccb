/* cmd_generate.c — `kvlab generate`: prefill the prompt in one pass, then decode
 * one token at a time, with an optional KV-cache eviction policy (policy.h);
 * the text streams to stdout, the speed, the KV memory and the policy's cost
 * go to stderr. */
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
    printf("usage: kvlab generate -m MODEL (-p PROMPT | --ids 1,2,3) [options]\n\n"
           "Continues the prompt; stops after -n tokens, at EOS, or when the context is full.\n"
           "Prints the prompt and the continuation on stdout, prefill/decode tokens/s on stderr.\n\n"
           "  -p, --prompt TEXT   prompt text (BOS is prepended)\n"
           "      --ids LIST      prompt as comma-separated token ids\n"
           "  -n, --tokens N      tokens to generate [128]\n"
           "      --temp T        sampling temperature; 0 = greedy (argmax) [0]\n"
           "      --top-p P       nucleus sampling mass, 1 = off [0.9]\n"
           "      --seed S        random seed: the same seed gives the same text [1]\n"
           "      --print-ids     print the generated token ids (comma-separated) instead of text\n"
           "      --batch N       tokens per prefill pass [512]\n"
           COMMON_OPTS_HELP
           "\n"
           POLICY_OPTS_HELP
           "\n");
    policy_print_help(stdout);
    printf("\nexample: kvlab generate -m MODEL -p TEXT --policy l2 --compression-ratio 0.5 --skip-layers 0,1 --schedule step\n"
           "         kvlab generate -m MODEL -p TEXT --policy lagkv:sink=16,lag=128,ratio=0.25\n"
           "stderr also reports the KV bytes in use and the policy's decide time per decode step.\n");
}

/* The KV memory and what the policy cost, on stderr. */
static void report_kv(const KVCache *cache, const Policy *policy, double t_decode) {
    long slots = kvcache_slots_used(cache), full = (long)cache->next_pos * cache->n_layers * cache->n_kv_heads;
    fprintf(stderr, "kv: %.2f MiB in use (%ld slots, %.1f%% of a full cache of %d tokens)",
            kvcache_bytes_used(cache) / 1048576.0, slots, full ? 100.0 * slots / full : 0.0, cache->next_pos);
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
    }
    fputc('\n', stderr);
}

int cmd_generate(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) { help(); return 0; }
    CommonOpts o;
    common_defaults(&o);
    PolicyOpts po;
    policy_defaults(&po);
    const char *text = NULL, *ids_str = NULL;
    int n_gen = 128, print_ids = 0, batch = 512;
    double temperature = 0.0, top_p = 0.9;
    unsigned long long seed = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) text = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--ids")) ids_str = cli_value(argc, argv, &i);
        else if (!strcmp(a, "-n") || !strcmp(a, "--tokens")) n_gen = (int)cli_int(a, cli_value(argc, argv, &i), 0, 1 << 22);
        else if (!strcmp(a, "--temp")) temperature = cli_float("--temp", cli_value(argc, argv, &i), 0.0, 100.0);
        else if (!strcmp(a, "--top-p")) top_p = cli_float("--top-p", cli_value(argc, argv, &i), 1e-6, 1.0);
        else if (!strcmp(a, "--seed")) seed = (unsigned long long)cli_int("--seed", cli_value(argc, argv, &i), 0, (1L << 62));
        else if (!strcmp(a, "--print-ids")) print_ids = 1;
        else if (!strcmp(a, "--batch")) batch = (int)cli_int("--batch", cli_value(argc, argv, &i), 1, 65536);
        else if (!common_option(&o, argc, argv, &i) && !policy_option(&po, argc, argv, &i)) die("generate: unknown option '%s' (kvlab generate --help)", a);
    }
    if (!!text == !!ids_str) die("generate: give exactly one of -p PROMPT or --ids LIST");
    policy_cli_finish(&po);

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
    Sampler sampler;
    sampler_init(&sampler, m.cfg.vocab_size, (float)temperature, (float)top_p, seed);
    float *scratch = xmalloc((size_t)m.cfg.vocab_size * sizeof(float));

    if (!print_ids && tok) {
        char *s = tokenizer_decode(tok, prompt, n_prompt, &err);
        if (s) { fputs(s, stdout); free(s); }
        fflush(stdout);
    }

    double t0 = now_seconds();
    if (policy_forward(policy, f, &cache, prompt, n_prompt, NULL, &err) != 0) die("%s", err.msg);
    if (numguard_check(guard, forward_last_logits(f), 1, &err) != 0) die("%s", err.msg);
    double t_prefill = now_seconds() - t0;

    int prev = prompt[n_prompt - 1], n_done = 0;
    const char *stop = "length";
    double t1 = now_seconds();
    while (n_done < n_gen) {
        memcpy(scratch, forward_last_logits(f), (size_t)m.cfg.vocab_size * sizeof(float));
        int next = sampler_next(&sampler, scratch);
        if (next == m.cfg.eos_id) { stop = "eos"; break; }
        n_done++;
        if (print_ids || !tok) printf(n_done > 1 ? ",%d" : "%d", next);
        else { char buf[8]; fputs(tokenizer_piece(tok, prev, next, buf), stdout); }
        fflush(stdout);
        prev = next;
        if (n_done == n_gen) break;
        if (n_prompt + n_done >= ctx) { stop = "context"; break; }
        if (policy_forward(policy, f, &cache, &next, 1, NULL, &err) != 0) die("%s", err.msg);
        if (numguard_check(guard, forward_last_logits(f), 1, &err) != 0) die("%s", err.msg);
    }
    double t_decode = now_seconds() - t1;
    printf("\n");
    /* the decode time covers n_done - 1 forward passes (the first token comes from prefill) */
    int n_decode_passes = n_done > 0 ? n_done - 1 : 0;
    fprintf(stderr, "prefill: %d tokens in %.1f ms = %.1f tok/s | decode: %d tokens in %.1f ms = %.1f tok/s | "
            "stop: %s | %s, %s weights, %d threads\n",
            n_prompt, t_prefill * 1e3, n_prompt / t_prefill, n_decode_passes, t_decode * 1e3,
            n_decode_passes > 0 ? n_decode_passes / t_decode : 0.0, stop, kernels_get()->name,
            dtype_name(m.compute_dtype), ops_threads());
    report_kv(&cache, policy, t_decode);

    free(scratch);
    sampler_free(&sampler);
    policy_free(policy);
    numguard_free(guard);
    forward_free(f);
    kvcache_free(&cache);
    free(prompt);
    if (tok) tokenizer_free(tok);
    model_free(&m);
    return 0;
}
