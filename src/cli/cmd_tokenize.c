/* cmd_tokenize.c — `kvlab tokenize`: text -> ids, ids -> text. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "cli/commands.h"

static void help(void) {
    printf("usage: kvlab tokenize (-m MODEL | -t TOKENIZER) (-p TEXT | -f FILE | --decode IDS) [--no-bos] [--pieces]\n\n"
           "  -p, --prompt TEXT   text to encode; prints the ids, comma-separated (ready for --ids)\n"
           "  -f, --file FILE     encode a file's contents instead\n"
           "      --decode IDS    comma-separated ids to turn back into text\n"
           "      --no-bos        do not prepend BOS (id 1) when encoding\n"
           "      --pieces        also print each id's piece, one per line\n"
           "  -m, --model PATH    take the tokenizer found next to this model\n"
           "  -t, --tokenizer F   tokenizer.model (SentencePiece) or tokenizer.bin (llama2.c)\n");
    cli_print_file_notes(stdout, HELP_INPUTS);
}

int cmd_tokenize(int argc, char **argv) {
    if (cli_wants_help(argc, argv)) { help(); return 0; }
    CommonOpts o;
    common_defaults(&o);
    const char *text = NULL, *file = NULL, *decode = NULL;
    int add_bos = 1, pieces = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-p") || !strcmp(argv[i], "--prompt")) text = cli_value(argc, argv, &i);
        else if (!strcmp(argv[i], "-f") || !strcmp(argv[i], "--file")) file = cli_value(argc, argv, &i);
        else if (!strcmp(argv[i], "--decode")) decode = cli_value(argc, argv, &i);
        else if (!strcmp(argv[i], "--no-bos")) add_bos = 0;
        else if (!strcmp(argv[i], "--pieces")) pieces = 1;
        else if (!common_option(&o, argc, argv, &i)) die("tokenize: unknown option '%s' (kvlab tokenize --help)", argv[i]);
    }
    if (!!text + !!file + !!decode != 1) die("tokenize: give exactly one of -p TEXT, -f FILE, --decode IDS");
    Model m;
    int have_model = 0;
    if (!o.tokenizer_path) {
        if (!o.model_path) die("tokenize: give -t TOKENIZER or -m MODEL");
        common_load_model(&o, &m);
        have_model = 1;
    }
    Tokenizer *tok = common_load_tokenizer(&o, have_model ? &m : NULL);
    Err err;
    if (decode) {
        int n;
        int *ids = cli_ids("--decode", decode, tokenizer_vocab_size(tok), &n);
        char *s = tokenizer_decode(tok, ids, n, &err);
        if (!s) die("--decode: %s", err.msg);
        printf("%s\n", s);
        free(s);
        free(ids);
    } else {
        char *owned = NULL;
        if (file && read_text_file(file, &owned, NULL, &err) != 0) die("%s", err.msg);
        const char *input = file ? owned : text;
        if (!file && utf8_invalid_offset(text, strlen(text)) < strlen(text))
            die("-p: invalid UTF-8 at byte %zu (the text is read as UTF-8)", utf8_invalid_offset(text, strlen(text)));
        int n = tokenizer_encode(tok, input, add_bos, NULL, 0, &err);
        if (n < 0) die("%s", err.msg);
        int *ids = xmalloc((size_t)(n + 1) * sizeof(int));
        tokenizer_encode(tok, input, add_bos, ids, n, &err);
        for (int i = 0; i < n; i++) printf(i ? ",%d" : "%d", ids[i]);
        printf("\n");
        if (pieces) {
            char buf[8];
            for (int i = 0; i < n; i++) printf("%6d  '%s'\n", ids[i], tokenizer_piece(tok, -1, ids[i], buf));
        }
        fprintf(stderr, "%d tokens\n", n);
        free(ids);
        free(owned);
    }
    tokenizer_free(tok);
    if (have_model) model_free(&m);
    return 0;
}
