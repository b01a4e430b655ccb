/* cmd_convert.c — `kvlab convert`: write any loadable model as a GGUF file
 * (llama.cpp) or as a Hugging Face safetensors directory. The writers, and
 * what they write, are model/convert.c. */
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "model/convert.h"

static int ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

/* ---- the command --------------------------------------------------------------------------- */

static void help(void) {
    printf("usage: kvlab convert -m MODEL -o OUTPUT [options]\n\n"
           "Writes MODEL (HF directory, llama2.c .bin or .gguf) as a GGUF file llama.cpp can load\n"
           "(OUTPUT ends in .gguf) or as a Hugging Face safetensors directory (any other OUTPUT):\n"
           "config.json, model.safetensors and the tokenizer (tokenizer.model / tokenizer.bin).\n"
           "The tokenizer is embedded in a GGUF (required). q/k rows are permuted between the\n"
           "Meta/llama2.c/GGUF RoPE pairing (2i, 2i+1) and the HF one (i, i+head_dim/2) as needed.\n"
           "Written to a temporary name and renamed when complete.\n\n"
           "  -m, --model PATH       the model to convert\n"
           "  -o, --output PATH      FILE.gguf, or a directory for HF safetensors\n"
           "  -t, --tokenizer FILE   tokenizer.model, tokenizer.bin or a .gguf (default: next to the\n"
           "                         model, or embedded in a .gguf model)\n"
           "      --dtype f32|bf16|f16  weights on disk [the model's own dtype: nothing is rounded]\n"
           "                         (GGUF norm weights are always f32, as llama.cpp writes them)\n"
           "      --name NAME        general.name in a GGUF [the output file name]\n"
           "      --force            replace an existing output (an HF output only if it looks like a checkpoint)\n"
           "  -h, --help             this text\n\n"
           "examples: kvlab convert -m ../shared/models/demo-25m -o demo.gguf\n"
           "          kvlab convert -m demo.gguf -o demo-hf --dtype f32\n");
    cli_print_file_notes(stdout, HELP_INPUTS | HELP_OUTPUT);
}

typedef struct {
    const char *model, *out, *tokenizer;
    ConvertOpts o;
    int dtype_given;
} Args;

static void parse_args(int argc, char **argv, Args *a) {
    memset(a, 0, sizeof *a);
    for (int i = 1; i < argc; i++) {
        const char *s = argv[i];
        if (!strcmp(s, "-m") || !strcmp(s, "--model")) a->model = cli_value(argc, argv, &i);
        else if (!strcmp(s, "-o") || !strcmp(s, "--output")) a->out = cli_value(argc, argv, &i);
        else if (!strcmp(s, "-t") || !strcmp(s, "--tokenizer")) a->tokenizer = cli_value(argc, argv, &i);
        else if (!strcmp(s, "--name")) a->o.name = cli_value(argc, argv, &i);
        else if (!strcmp(s, "--force")) a->o.force = 1;
        else if (!strcmp(s, "--dtype")) {
            const char *v = cli_value(argc, argv, &i);
            if (dtype_parse(v, &a->o.dtype) != 0) die("--dtype: '%s' is not f32, bf16 or f16", v);
            a->dtype_given = 1;
        } else die("convert: unknown option '%s' (kvlab convert --help)", s);
    }
    if (!a->model) die("convert: -m MODEL is required (kvlab convert --help)");
    if (!a->out || !*a->out) die("convert: -o OUTPUT is required (FILE.gguf or a directory)");
}

/* Load exactly: bf16 files stay bf16 (in place, no copy), anything else as f32,
 * which holds f32, f16 and bf16 values exactly. A llama2.c .bin is always
 * f32: load it so directly rather than converting it to bf16 first. */
static void load_exact(const char *path, Model *m) {
    Err err;
    DType first = ends_with(path, ".bin") ? DTYPE_F32 : DTYPE_BF16;
    if (model_load_weights(m, path, first, WEIGHTS_IN_PLACE, &err) != 0) die("%s", err.msg);
    if (first == DTYPE_F32 || m->file_dtype == DTYPE_BF16) return;
    model_free(m);
    if (model_load_weights(m, path, DTYPE_F32, WEIGHTS_IN_PLACE, &err) != 0) die("%s", err.msg);
}

int cmd_convert(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) { help(); return 0; }
    Args a;
    parse_args(argc, argv, &a);
    double t0 = now_seconds();
    Model m;
    load_exact(a.model, &m);
    if (!a.dtype_given) a.o.dtype = m.file_dtype;
    const char *tok_file = a.tokenizer ? a.tokenizer : m.tokenizer_path[0] ? m.tokenizer_path : NULL;
    Tokenizer *tok = NULL;
    Err err;
    if (tok_file && !(tok = tokenizer_load(tok_file, &err))) die("%s", err.msg);
    int gguf = ends_with(a.out, ".gguf");
    int rc = gguf ? convert_write_gguf(&m, tok, a.out, &a.o, &err)
                  : convert_write_hf(&m, tok, tok_file, a.out, &a.o, &err);
    if (rc != 0) die("%s", err.msg);
    fprintf(stderr, "convert: %s (%s, %s) -> %s (%s, %s, q/k %s) in %.2f s\n", a.model, m.format,
            dtype_name(m.file_dtype), a.out, gguf ? "gguf" : "HF safetensors", dtype_name(a.o.dtype),
            m.cfg.rope_pairing_halves == !gguf ? "as stored" : gguf ? "un-permuted to (2i, 2i+1)" : "permuted to (i, i+hd/2)",
            now_seconds() - t0);
    tokenizer_free(tok);
    model_free(&m);
    return 0;
}
