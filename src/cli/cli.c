/* cli.c — see cli.h. */
#include "cli/cli.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "simd/kernels.h"
#include "engine/numcheck.h"
#include "engine/ops.h"

long cli_int(const char *opt, const char *value, long min, long max) {
    char *end = NULL;
    errno = 0;
    long v = strtol(value, &end, 10);
    if (!*value || *end || errno == ERANGE)
        die("%s: '%s' is not an integer", opt, value);
    if (v < min || v > max) die("%s: %ld is out of range [%ld, %ld]", opt, v, min, max);
    return v;
}

double cli_float(const char *opt, const char *value, double min, double max) {
    char *end = NULL;
    errno = 0;
    double v = strtod(value, &end);
    if (!*value || *end || errno == ERANGE || !isfinite(v))
        die("%s: '%s' is not a finite number", opt, value);
    if (v < min || v > max) die("%s: %g is out of range [%g, %g]", opt, v, min, max);
    return v;
}

int *cli_int_list(const char *opt, const char *value, long min, long max, int *n) {
    int cap = 16, count = 0;
    int *out = xmalloc((size_t)cap * sizeof(int));
    const char *p = value;
    if (!*p) die("%s: empty list", opt);
    while (*p) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        char item[64];
        if (len == 0 || len >= sizeof item) die("%s: bad list element in '%s'", opt, value);
        memcpy(item, p, len);
        item[len] = '\0';
        if (count == cap) out = xrealloc(out, (size_t)(cap *= 2) * sizeof(int));
        out[count++] = (int)cli_int(opt, item, min, max);
        p += len;
        if (*p == ',') {
            p++;
            if (!*p) die("%s: trailing comma in '%s'", opt, value);
        }
    }
    *n = count;
    return out;
}

int *cli_ids(const char *opt, const char *value, int vocab_size, int *n) {
    return cli_int_list(opt, value, 0, vocab_size - 1, n);
}

const char *cli_value(int argc, char **argv, int *i) {
    if (*i + 1 >= argc) die("%s needs a value", argv[*i]);
    *i += 1;
    return argv[*i];
}

int cli_wants_help(int argc, char **argv) {
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) return 1;
    return 0;
}

void common_defaults(CommonOpts *o) {
    memset(o, 0, sizeof *o);
    o->dtype = DTYPE_F32;
    o->isa = getenv("KVLAB_ISA");
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
    else return 0;
    return 1;
}

void common_setup(const CommonOpts *o) {
    char msg[256];
    if (o->isa && *o->isa && kernels_select(o->isa, msg, sizeof msg) != 0) die("%s", msg);
    ops_set_threads(o->threads);
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

int *common_prompt_ids(const Model *m, Tokenizer *tok, const char *text, const char *ids_str, int ctx, int *n) {
    int *ids;
    if (ids_str) {
        ids = cli_ids("--ids", ids_str, m->cfg.vocab_size, n);
    } else {
        if (!text) die("give a prompt with -p TEXT or --ids 1,2,3");
        if (!tok) die("-p needs a tokenizer (-t FILE), or give --ids");
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
