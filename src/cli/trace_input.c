/* trace_input.c — see trace_input.h. */
#include "cli/trace_input.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <string.h>

#include "lab/runmeta.h"

int trace_input_option(TraceInput *in, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    if (!strcmp(a, "-p") || !strcmp(a, "--prompt")) in->text = cli_value(argc, argv, i);
    else if (!strcmp(a, "--ids")) in->ids_str = cli_value(argc, argv, i);
    else if (!strcmp(a, "-f") || !strcmp(a, "--file")) in->file = cli_value(argc, argv, i);
    else if (!strcmp(a, "--chunk")) in->chunk = (int)cli_int(a, cli_value(argc, argv, i), 2, 1 << 22);
    else if (!strcmp(a, "--chunks")) in->chunks = (int)cli_int(a, cli_value(argc, argv, i), 1, 1 << 20);
    else return 0;
    return 1;
}

int *trace_input_load(const TraceInput *in, const char *command, const CommonOpts *co, int check_chunk,
                      Model *m, Tokenizer **tok, int *ctx, int *n_seqs, int *seq_len) {
    common_load_model(co, m);
    *tok = (in->text || in->file) ? common_load_tokenizer(co, m) : NULL;
    *ctx = common_ctx(co, m);
    if (!in->file) {
        *n_seqs = 1;
        return common_prompt_ids(m, *tok, in->text, in->ids_str, *ctx, seq_len);
    }
    if (check_chunk && in->chunk > *ctx) die("--chunk: %d tokens exceed the context of %d (--ctx)", in->chunk, *ctx);
    Err err;
    int *ids = text_chunks(*tok, in->file, in->chunk, in->chunks, n_seqs, &err);
    if (!ids) die("%s", err.msg);
    if (*n_seqs < in->chunks)
        fprintf(stderr, "%s: %s holds only %d whole chunks of %d tokens (asked --chunks %d)\n",
                command, in->file, *n_seqs, in->chunk, in->chunks);
    *seq_len = in->chunk;
    return ids;
}

void trace_input_knobs(cJSON *knobs, const TraceInput *in) {
    cJSON_AddStringToObject(knobs, "input", in->file ? "file" : in->text ? "prompt" : "ids");
    if (in->file) cJSON_AddStringToObject(knobs, "file", in->file);
    if (in->text) cJSON_AddStringToObject(knobs, "prompt", in->text);
}
