/* cmd_synth.c — `kvlab synth`: write a random-weight Hugging Face Llama
 * checkpoint (config.json + model.safetensors, or N shards + index) of any
 * shape, for testing the loader and benchmarking shapes nobody can download
 * here (llama2-7b). The format and the values are described in synth.h. */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "model/synth.h"

static void synth_usage(FILE *out) {
    fprintf(out,
            "usage: kvlab synth -o DIR --shape SHAPE [options]\n\n"
            "Write a random-weight Hugging Face Llama checkpoint into DIR: config.json and\n"
            "model.safetensors (or N shards + model.safetensors.index.json). The same --seed and\n"
            "--shape give the same fp32 values for every --dtype and --shards. Written into\n"
            "DIR.tmp.PID and renamed to DIR when complete.\n\n"
            "  -o, --output DIR      the checkpoint directory to create (required)\n"
            "      --shape SHAPE     llama2-7b, llama2-13b, llama2-70b, demo-25m, or\n"
            "                        dim=N,layers=N,heads=N,ffn=N,vocab=N[,kv_heads=N,head_dim=N,seq=N]\n"
            "                        (kv_heads defaults to heads, head_dim to dim/heads, seq to 4096)\n"
            "      --dtype DT        bf16, f16 or f32 on disk [bf16]\n"
            "      --shards N        split into N files + index (1..64) [1]\n"
            "      --seed S          random seed (0 .. 2^63-1) [0]\n"
            "      --tied 0|1        share the embedding with the output head [1 for demo-25m, else 0]\n"
            "      --tokenizer FILE  copy this tokenizer.model (or .bin) into DIR\n"
            "      --force           replace DIR if it is an existing checkpoint directory\n"
            "      --quiet           no progress lines on stderr\n"
            "  -h, --help            this help\n\n"
            "Example: kvlab synth -o /tmp/llama2-7b-rand --shape llama2-7b --dtype bf16 --shards 3\n");
    cli_print_file_notes(out, HELP_INPUTS | HELP_OUTPUT);
}

int cmd_synth(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) { synth_usage(stdout); return 0; }
    SynthOpts o;
    synth_defaults(&o);
    const char *out = NULL, *shape = NULL;
    int tied = -1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-o") || !strcmp(a, "--output")) out = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--shape")) shape = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--dtype")) {
            const char *v = cli_value(argc, argv, &i);
            if (dtype_parse(v, &o.dtype) != 0) die("--dtype: '%s' is not bf16, f16 or f32", v);
        } else if (!strcmp(a, "--shards")) o.shards = (int)cli_int("--shards", cli_value(argc, argv, &i), 1, SYNTH_MAX_SHARDS);
        else if (!strcmp(a, "--seed")) o.seed = (uint64_t)cli_int("--seed", cli_value(argc, argv, &i), 0, LONG_MAX);
        else if (!strcmp(a, "--tied")) tied = (int)cli_int("--tied", cli_value(argc, argv, &i), 0, 1);
        else if (!strcmp(a, "--tokenizer")) o.tokenizer = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--force")) o.force = 1;
        else if (!strcmp(a, "--quiet")) o.progress = 0;
        else die("synth: unknown option '%s' (kvlab synth --help lists them)", a);
    }
    if (!out) die("synth: -o DIR is required (kvlab synth --help)");
    if (!shape) die("synth: --shape is required (llama2-7b, demo-25m or dim=..,layers=..,...)");
    Err err;
    if (synth_shape_parse(shape, &o.cfg, &err) != 0) die("%s", err.msg);
    if (tied >= 0) o.cfg.tied_embeddings = tied;
    double t0 = now_seconds();
    if (synth_write(&o, out, &err) != 0) die("%s", err.msg);
    double bytes = (double)synth_data_bytes(&o);
    printf("wrote %s: %s, %s, %d file%s, %.2f %s of weights in %.1f s\n", out, shape, dtype_name(o.dtype),
           o.shards, o.shards > 1 ? "s + index" : "", bytes >= 1e9 ? bytes / 1e9 : bytes / 1e6,
           bytes >= 1e9 ? "GB" : "MB", now_seconds() - t0);
    return 0;
}
