/* cli.h — command-line parsing shared by every subcommand: the options of
 * every model-using command (the argv helpers cli_int, cli_value, ... are
 * base/args.h). Every bad value is refused with a one-line message naming the option. */
#ifndef KVLAB_CLI_H
#define KVLAB_CLI_H

#include <stdio.h>

#include "base/args.h"
#include "engine/forward.h"
#include "model/model.h"
#include "model/tokenizer.h"

/* Options every model-using command understands. */
typedef struct {
    const char *model_path;      /* -m, --model */
    const char *tokenizer_path;  /* -t, --tokenizer */
    DType dtype;                 /* --dtype f32|bf16 (default f32) */
    int threads;                 /* --threads N (0 = all cores) */
    const char *isa;             /* --isa auto|scalar|avx2|avx512|neon */
    int ctx;                     /* --ctx N (0 = the model's context length) */
    int mmap_weights;            /* --mmap: weights used in place from the file (WEIGHTS_IN_PLACE) */
    int bf16_dot;                /* --bf16-dot: activations rounded to bf16, hardware bf16 dot */
    DType kv_dtype;              /* --kv-dtype f32|bf16: how the KV cache stores keys and values */
    AttentionPath attention;     /* --attention exact|fused (engine/forward.h) */
} CommonOpts;

#define COMMON_OPTS_HELP \
    "  -m, --model PATH      model: HF directory (config.json + *.safetensors), llama2.c .bin, .gguf\n" \
    "  -t, --tokenizer FILE  tokenizer.model/.bin or a .gguf (default: next to the model, or in its .gguf)\n" \
    "      --dtype f32|bf16  weights in memory (bf16 keeps bf16 files as they are; sums in fp32) [f32]\n" \
    "      --threads N       OpenMP threads [all cores]\n" \
    "      --isa NAME        kernels: auto, scalar, avx2, avx512, neon (or env KVLAB_ISA) [auto]\n" \
    "      --ctx N           context length: most tokens the KV cache holds [model's]\n" \
    "      --mmap            use weights in place from the mapped file when no conversion is needed:\n" \
    "                        no copy, less memory, instant load, but slower to stream (4 KiB pages)\n" \
    "      --bf16-dot        with --dtype bf16: round activations to bf16 and use the CPU's bf16 dot\n" \
    "                        instruction (avx512_bf16): faster decode, |dy| <= 2^-8 sum|w x| [off]\n" \
    "      --kv-dtype f32|bf16  KV cache storage: bf16 halves its bytes (keys and values rounded once\n" \
    "                        when cached, attention summed in fp32; logits within ~1e-2) [f32]\n" \
    "      --attention exact|fused  without an attention observer: exact (score rows, softmax) or\n" \
    "                        fused (one pass, online softmax; equal within fp32 rounding) [fused]\n"


/* The notes at the end of a --help on the files a command reads and writes:
 * the limits of input files (base/util.h read_file), and the one-writer lock
 * and interrupt behaviour of outputs (base/outguard.h). */
enum { HELP_INPUTS = 1, HELP_OUTPUT = 2, HELP_RUN_DIR = 4 };
void cli_print_file_notes(FILE *out, int which);

void common_defaults(CommonOpts *o);
/* If argv[*i] is a common option, consume it (and its value) and return 1. */
int  common_option(CommonOpts *o, int argc, char **argv, int *i);
/* Apply --threads and --isa; then load the model (dies with a clear message). */
void common_setup(const CommonOpts *o);
/* Turn on the bf16 dot kernel (ops_set_bf16_dot) or die naming `option` (the
 * command-line spelling that asked for it) and the kernels that lack it. */
void common_enable_bf16_dot(const char *option);
void common_load_model(const CommonOpts *o, Model *m);
/* Load the tokenizer from -t or next to the model; dies if there is none. */
Tokenizer *common_load_tokenizer(const CommonOpts *o, const Model *m);
/* The context length to use: --ctx if given (not above the model's), else the model's. */
int common_ctx(const CommonOpts *o, const Model *m);
/* The three above: the model, its tokenizer and the context (dies on error). */
void common_load(const CommonOpts *o, Model *m, Tokenizer **tok, int *ctx);



/* The prompt as token ids: from --ids (checked against the vocabulary) or from
 * -p TEXT encoded with BOS (needs the tokenizer). Dies if the prompt is empty
 * or longer than `ctx` tokens. */
int *common_prompt_ids(const Model *m, Tokenizer *tok, const char *text, const char *ids_str, int ctx, int *n);
#endif
