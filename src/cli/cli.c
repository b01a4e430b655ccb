/* cli.c — see cli.h. */
#include "cli/cli.h"

#include <stdlib.h>
#include <string.h>

#include "simd/kernels.h"
#include "engine/numcheck.h"
#include "engine/ops.h"

void cli_print_file_notes(FILE *out, int which) {
    if (which & HELP_INPUTS)
        fprintf(out, "\nInput files read whole (texts, prompt files, tokenizers, JSON) must be regular files of at\n"
                     "most %zu MiB: a fifo, a device or a directory is refused before anything is read.\n"
                     "Texts and prompts must be valid UTF-8 (the first invalid byte is named).\n",
                READ_FILE_MAX_BYTES >> 20);
    if (which & (HELP_OUTPUT | HELP_RUN_DIR))
        fprintf(out, "\nOne writer per output: while it runs, the command holds a lock on OUT.lock (beside OUT),\n"
                     "and a second command writing OUT is refused (\"OUT: in use by pid N\"). SIGINT, SIGTERM\n"
                     "and SIGHUP remove the temporary files (*.tmp.PID) and exit with status 128 + the signal%s\n",
                which & HELP_RUN_DIR ? ";\nan interrupted run directory keeps its finished units for --resume, which refuses a\n"
                                       "directory that does not exist (nothing to resume)." : ".");
}

void common_defaults(CommonOpts *o) {
    memset(o, 0, sizeof *o);
    o->dtype = DTYPE_F32;
    o->isa = getenv("KVLAB_ISA");
    /* The command line runs attention fused unless told otherwise: the same
     * results within fp32 rounding, 2-3x faster prefill of long prompts. An
     * attention observer (a policy scoring by attention, trace, correlate)
     * gets the exact rows either way. The engine's own default stays exact,
     * the reference the C tests compare against the goldens. */
    o->attention = ATTENTION_FUSED;
}

int common_option(CommonOpts *o, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    if (!strcmp(a, "-m") || !strcmp(a, "--model")) o->model_path = cli_value(argc, argv, i);
    else if (!strcmp(a, "-t") || !strcmp(a, "--tokenizer")) o->tokenizer_path = cli_value(argc, argv, i);
    else if (!strcmp(a, "--dtype")) {
        const char *v = cli_value(argc, argv, i);
        if (dtype_parse(v, &o->dtype) != 0 || o->dtype == DTYPE_F16)
            die("--dtype: '%s' is not a compute dtype (f32 or bf16)", v);
    } else if (!strcmp(a, "--threads")) o->threads = (int)cli_int("--threads", cli_value(argc, argv, i), 1, 1024);
    else if (!strcmp(a, "--isa")) o->isa = cli_value(argc, argv, i);
    else if (!strcmp(a, "--ctx")) o->ctx = (int)cli_int("--ctx", cli_value(argc, argv, i), 1, 1 << 22);
    else if (!strcmp(a, "--mmap")) o->mmap_weights = 1;
    else if (!strcmp(a, "--bf16-dot")) o->bf16_dot = 1;
    else if (!strcmp(a, "--kv-dtype")) {
        const char *v = cli_value(argc, argv, i);
        if (dtype_parse(v, &o->kv_dtype) != 0 || o->kv_dtype == DTYPE_F16)
            die("--kv-dtype: '%s' is not a KV cache dtype (f32 or bf16)", v);
    } else if (!strcmp(a, "--attention")) {
        const char *v = cli_value(argc, argv, i);
        if (attention_path_parse(v, &o->attention) != 0) die("--attention: '%s' is not exact or fused", v);
    }
    else return 0;
    return 1;
}

void common_setup(const CommonOpts *o) {
    char msg[256];
    if (o->isa && *o->isa && kernels_select(o->isa, msg, sizeof msg) != 0) die("%s", msg);
    ops_set_threads(o->threads);
    forward_set_defaults(o->kv_dtype, o->attention);
    if (o->bf16_dot && o->dtype != DTYPE_BF16)
        die("--bf16-dot: needs --dtype bf16 (it multiplies bf16 weights)");
    if (o->bf16_dot) common_enable_bf16_dot("--bf16-dot");
}

void common_enable_bf16_dot(const char *option) {
    if (ops_set_bf16_dot(1) != 0)
        die("%s: the %s kernels have no bf16 dot product (needs avx512 on a CPU with avx512_bf16)",
            option, kernels_get()->name);
}

void common_load_model(const CommonOpts *o, Model *m) {
    if (!o->model_path) die("-m MODEL is required (an HF directory, a llama2.c .bin or a .gguf)");
    common_setup(o);
    Err err;
    if (model_load_weights(m, o->model_path, o->dtype, o->mmap_weights ? WEIGHTS_IN_PLACE : WEIGHTS_COPY, &err) != 0)
        die("%s", err.msg);
}

Tokenizer *common_load_tokenizer(const CommonOpts *o, const Model *m) {
    const char *path = o->tokenizer_path;
    if (!path) {
        if (!m || !m->tokenizer_path[0])
            die("%s: no tokenizer next to the model (tokenizer.model or tokenizer.bin) or embedded in it: give one with -t FILE",
                m ? m->path : "(no model)");
        path = m->tokenizer_path;
    }
    Err err;
    Tokenizer *t = tokenizer_load(path, &err);
    if (!t) die("%s", err.msg);
    if (m && tokenizer_vocab_size(t) != m->cfg.vocab_size)
        die("%s: tokenizer has %d tokens but the model %s has a vocabulary of %d",
            path, tokenizer_vocab_size(t), m->path, m->cfg.vocab_size);
    return t;
}

int common_ctx(const CommonOpts *o, const Model *m) {
    if (o->ctx > m->cfg.max_seq_len)
        die("--ctx %d: longer than the model's context length (%d)", o->ctx, m->cfg.max_seq_len);
    int ctx = o->ctx ? o->ctx : m->cfg.max_seq_len;
    /* the KV cache grows lazily: refuse now what would run out of memory later */
    Err err;
    if (numcheck_ctx_fits(m, ctx, o->ctx != 0, numcheck_mem_available(), &err) != 0) die("%s", err.msg);
    return ctx;
}

void common_load(const CommonOpts *o, Model *m, Tokenizer **tok, int *ctx) {
    common_load_model(o, m);
    *tok = common_load_tokenizer(o, m);
    *ctx = common_ctx(o, m);
}

int *common_prompt_ids(const Model *m, Tokenizer *tok, const char *text, const char *ids_str, int ctx, int *n) {
    int *ids;
    if (ids_str) {
        ids = cli_ids("--ids", ids_str, m->cfg.vocab_size, n);
    } else {
        if (!text) die("give a prompt with -p TEXT or --ids 1,2,3");
        if (!tok) die("-p needs a tokenizer (-t FILE), or give --ids");
        size_t bad = utf8_invalid_offset(text, strlen(text));
        if (bad < strlen(text)) die("-p: invalid UTF-8 at byte %zu (the prompt is read as UTF-8)", bad);
        Err err;
        int need = tokenizer_encode(tok, text, 1, NULL, 0, &err);
        if (need < 0) die("-p: %s", err.msg);
        ids = xmalloc((size_t)(need + 1) * sizeof(int));
        tokenizer_encode(tok, text, 1, ids, need, &err);
        *n = need;
    }
    if (*n <= 0) die("the prompt is empty");
    if (*n > ctx)
        die("the prompt has %d tokens, longer than the context (%d tokens; --ctx or a shorter prompt)", *n, ctx);
    return ids;
}
