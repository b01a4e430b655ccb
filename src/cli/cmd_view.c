/* cmd_view.c — `kvlab view`: the page of `kvlab trace --html`, made afterwards from a
 * trace run directory (trace.npz + meta.json), e.g. with another size limit. */
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"
#include "lab/runmeta.h"
#include "lab/trace_page.h"

static void help(void) {
    printf("usage: kvlab view RUN_DIR -o FILE.html [-t TOKENIZER] [-m MODEL] [--html-max-bytes B]\n\n"
           "Writes the page `kvlab trace --html` writes (the same bytes) from a trace run directory:\n"
           "one self-contained HTML file (no network needed) to watch the decoding step by step.\n"
           "See `kvlab trace --help` and README.md, \"Watch the cache, step by step\".\n\n"
           "  RUN_DIR               a directory written by kvlab trace (trace.npz, meta.json), one sequence\n"
           "  -o, --output FILE     the page (written atomically)\n"
           "  -t, --tokenizer FILE  the tokens' texts (default: the tokenizer of the run's model)\n"
           "  -m, --model PATH      the model whose tokenizer to use [the one in meta.json]\n"
           "      --html-max-bytes B  refuse a page larger than B bytes (suffix K/M/G) [16M]\n");
}

int cmd_view(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) { help(); return 0; }
    const char *run = NULL, *out = NULL;
    CommonOpts common;
    common_defaults(&common);
    int64_t max_bytes = (int64_t)16 << 20;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "-o") || !strcmp(a, "--output")) out = cli_value(argc, argv, &i);
        else if (!strcmp(a, "-t") || !strcmp(a, "--tokenizer")) common.tokenizer_path = cli_value(argc, argv, &i);
        else if (!strcmp(a, "-m") || !strcmp(a, "--model")) common.model_path = cli_value(argc, argv, &i);
        else if (!strcmp(a, "--html-max-bytes")) {
            const char *v = cli_value(argc, argv, &i);
            if ((max_bytes = parse_bytes(v)) < 0) die("--html-max-bytes: '%s' is not a size (e.g. 1000000, 16M)", v);
        } else if (a[0] == '-') die("view: unknown option '%s' (kvlab view --help)", a);
        else if (!run) run = a;
        else die("view: one RUN_DIR only ('%s' is a second)", a);
    }
    if (!run) die("view: give the RUN_DIR of a kvlab trace run");
    if (!out) die("view: -o FILE.html is required");

    char meta_path[4200], *text = NULL;
    size_t size = 0;
    Err err;
    path_join(meta_path, sizeof meta_path, run, "meta.json");
    if (read_file(meta_path, &text, &size, &err) != 0) die("%s", err.msg);
    cJSON *meta = cJSON_ParseWithLength(text, size);
    free(text);
    const cJSON *command = cJSON_GetObjectItemCaseSensitive(meta, "command");
    if (!meta || !cJSON_IsString(command) || strcmp(command->valuestring, "trace") != 0)
        die("%s: not the meta.json of a kvlab trace run", meta_path);

    /* the tokenizer: -t, or the one found next to the run's model (its weights mapped, not read) */
    Tokenizer *tok;
    Model m;
    int have_model = 0;
    if (common.tokenizer_path) tok = common_load_tokenizer(&common, NULL);
    else {
        const cJSON *model = cJSON_GetObjectItemCaseSensitive(meta, "model");
        const cJSON *path = cJSON_GetObjectItemCaseSensitive(model, "path");
        if (!common.model_path && !cJSON_IsString(path)) die("%s: names no model: give -t TOKENIZER", meta_path);
        if (!common.model_path) common.model_path = path->valuestring;
        common.mmap_weights = 1;
        common_load_model(&common, &m);
        have_model = 1;
        tok = common_load_tokenizer(&common, &m);
    }
    if (trace_page_write_run(run, meta, tok, (size_t)max_bytes, out, &err) != 0) die("%s", err.msg);
    FILE *f = fopen(out, "rb");
    long bytes = -1;
    if (f && fseek(f, 0, SEEK_END) == 0) bytes = ftell(f);
    if (f) fclose(f);
    char size_s[32];
    fprintf(stderr, "view: %s (%s)\n", out, format_bytes((double)bytes, size_s, sizeof size_s));

    tokenizer_free(tok);
    if (have_model) model_free(&m);
    cJSON_Delete(meta);
    return 0;
}
