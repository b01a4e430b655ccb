/* cmd_logits.c — `kvlab logits`: the T x vocab next-token logits of a prompt,
 * as a .npy file, for tests and for comparing kvlab with other implementations. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "base/outguard.h"
#include "cli/cli.h"
#include "cli/commands.h"
#include "engine/forward.h"
#include "engine/numcheck.h"
#include "formats/npy.h"

static void help(void) {
    printf("usage: kvlab logits -m MODEL (-p PROMPT | --ids 1,2,3) -o FILE.npy [options]\n\n"
           "Runs the prompt as one prefill and writes float32 logits of shape [T, vocab]\n"
           "(row t predicts token t+1). -p text is encoded with BOS prepended.\n\n"
           "  -p, --prompt TEXT   prompt text\n"
           "      --ids LIST      prompt as comma-separated token ids (no tokenizer needed)\n"
           "  -o, --output FILE   .npy file to write (atomically)\n"
           "      --batch N       tokens per prefill pass [512]\n"
           COMMON_OPTS_HELP);
    cli_print_file_notes(stdout, HELP_INPUTS | HELP_OUTPUT);
}

int cmd_logits(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) { help(); return 0; }
    CommonOpts o;
    common_defaults(&o);
    const char *text = NULL, *ids_str = NULL, *out = NULL;
    int batch = 512;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-p") || !strcmp(argv[i], "--prompt")) text = cli_value(argc, argv, &i);
        else if (!strcmp(argv[i], "--ids")) ids_str = cli_value(argc, argv, &i);
        else if (!strcmp(argv[i], "-o") || !strcmp(argv[i], "--output")) out = cli_value(argc, argv, &i);
        else if (!strcmp(argv[i], "--batch")) batch = (int)cli_int("--batch", cli_value(argc, argv, &i), 1, 65536);
        else if (!common_option(&o, argc, argv, &i)) die("logits: unknown option '%s' (kvlab logits --help)", argv[i]);
    }
    if (!out) die("logits: -o FILE.npy is required");
    if (!!text == !!ids_str) die("logits: give exactly one of -p PROMPT or --ids LIST");
    Model m;
    common_load_model(&o, &m);
    Tokenizer *tok = text ? common_load_tokenizer(&o, &m) : NULL;
    int ctx = common_ctx(&o, &m), n;
    int *ids = common_prompt_ids(&m, tok, text, ids_str, ctx, &n);

    Err err;
    OutLock lock;   /* one writer per output file */
    if (outlock_acquire(&lock, out, &err) != 0) die("%s", err.msg);
    KVCache cache;
    if (forward_cache_init(&m, &cache, ctx, &err) != 0) die("%s", err.msg);
    Forward *f = forward_create(&m, batch);
    NumGuard *guard = numguard_attach(f, &m);
    size_t V = (size_t)m.cfg.vocab_size;
    float *logits = aligned_alloc64((size_t)n * V * sizeof(float));
    if (!logits) die("out of memory for %d x %zu logits", n, V);
    double t0 = now_seconds();
    if (forward(f, &cache, ids, n, logits, &err) != 0) die("%s", err.msg);
    /* NaN/Inf logits: an error naming the layer and tensor, and no .npy written */
    if (numguard_check(guard, logits, n, &err) != 0) die("%s", err.msg);
    double dt = now_seconds() - t0;
    int64_t shape[2] = { n, (int64_t)V };
    if (npy_write(out, NPY_F32, 2, shape, logits, &err) != 0) die("%s", err.msg);
    outlock_release(&lock);
    fprintf(stderr, "%d tokens in %.1f ms (%.1f tok/s); wrote %s [%d, %zu]\n", n, dt * 1e3, n / dt, out, n, V);
    free(logits);
    free(ids);
    numguard_free(guard);
    forward_free(f);
    kvcache_free(&cache);
    if (tok) tokenizer_free(tok);
    model_free(&m);
    return 0;
}
