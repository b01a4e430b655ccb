/* trace_input.h — the input options of `kvlab trace` and `kvlab correlate`. */
#ifndef KVLAB_TRACE_INPUT_H
#define KVLAB_TRACE_INPUT_H

#include "cli/cli.h"
#include "model/model.h"
#include "model/tokenizer.h"

/* The input of `kvlab trace` and `kvlab correlate`: one prompt (-p TEXT or
 * --ids LIST) or -f FILE cut into `chunks` sequences of `chunk` tokens. */
typedef struct {
    const char *text, *ids_str, *file;
    int chunk, chunks;
} TraceInput;
/* If argv[*i] is -p/--prompt, --ids, -f/--file, --chunk or --chunks, consume it and return 1. */
int trace_input_option(TraceInput *in, int argc, char **argv, int *i);
/* Load the model, its tokenizer (*tok NULL for --ids) and the context, then the
 * sequences, all of the same length: returns *n_seqs x *seq_len ids. Dies on
 * error; a short file is a warning starting with `command`. check_chunk: refuse
 * a --chunk longer than the context. */
int *trace_input_load(const TraceInput *in, const char *command, const CommonOpts *co, int check_chunk,
                      Model *m, Tokenizer **tok, int *ctx, int *n_seqs, int *seq_len);
struct cJSON;
/* knobs "input" (file, prompt or ids), "file", "prompt". */
void trace_input_knobs(struct cJSON *knobs, const TraceInput *in);

#endif
