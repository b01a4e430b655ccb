/* main.c — `kvlab SUBCOMMAND [options]`: dispatch to the subcommand. */
#include <stdio.h>
#include <string.h>

#include "base/outguard.h"
#include "cli/commands.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} Command;

static const Command commands[] = {
    { "info",     cmd_info,     "print a model's architecture, sizes, dtypes and the CPU's kernels" },
    { "tokenize", cmd_tokenize, "text -> token ids, or ids -> text (--decode)" },
    { "generate", cmd_generate, "continue a prompt (greedy or sampled) and report tokens/s" },
    { "logits",   cmd_logits,   "write the T x vocab next-token logits of a prompt to a .npy file" },
    { "bench",    cmd_bench,    "measure prefill/decode speed against the machine's bandwidth and FMA peak" },
    { "trace",    cmd_trace,    "record selected attention rows with key/value norms (NPZ + meta.json)" },
    { "view",     cmd_view,     "the HTML page of a trace run, to watch decoding step by step (as trace --html)" },
    { "correlate", cmd_correlate, "key norm vs attention per layer/head: Spearman, Pearson, ALR, eviction loss" },
    { "ppl",      cmd_ppl,      "perplexity with a compressed KV cache, token by token, vs the full cache" },
    { "passkey",  cmd_passkey,  "passkey retrieval (Landmark prompt) accuracy per length and depth" },
    { "needle",   cmd_needle,   "needle in a haystack (Kamradt, L2-paper score): length x depth grid" },
    { "synth",    cmd_synth,    "write a random-weight HF safetensors checkpoint of any shape" },
    { "convert",  cmd_convert,  "convert a model to GGUF (llama.cpp) or an HF safetensors directory" },
};
#define N_COMMANDS (int)(sizeof commands / sizeof commands[0])

static void usage(FILE *out) {
    fprintf(out,
            "kvlab — a CPU research harness for KV-cache compression in Llama-2 models\n\n"
            "usage: kvlab SUBCOMMAND [options]     (kvlab SUBCOMMAND --help for its options)\n\n"
            "subcommands:\n");
    for (int i = 0; i < N_COMMANDS; i++) fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\nenvironment: KVLAB_ISA=scalar|avx2|avx512|neon forces a kernel set; OMP_NUM_THREADS as usual.\n");
}

int main(int argc, char **argv) {
    outguard_install();   /* interrupts remove temporary outputs (base/outguard.h) */
    if (argc < 2) { usage(stderr); return 2; }
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "help")) {
        usage(stdout);
        return 0;
    }
    for (int i = 0; i < N_COMMANDS; i++)
        if (!strcmp(argv[1], commands[i].name)) return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "kvlab: unknown subcommand '%s' (kvlab --help lists them)\n", argv[1]);
    return 2;
}
