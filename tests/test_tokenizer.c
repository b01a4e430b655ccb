/* test_tokenizer.c — the SentencePiece BPE tokenizer against SentencePiece itself.
 *
 * golden/tokenizer_llama2.json holds SentencePiece 0.1.97's ids for 27 texts
 * (unicode, byte fallback, whitespace runs, digits, CRLF, control characters,
 * a 4000-character passage). Both files of the Llama-2 tokenizer
 * (tokenizer.model and llama2.c's tokenizer.bin) must give exactly those ids, and
 * decoding must give the text back. Then: llama2.c's 512-token vocabulary, the
 * streaming piece API, the flags of a small hand-written model, bad files, and
 * the speed on wikitext-2. */
#include "check.h"
#include "model/tokenizer.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <unistd.h>

/* CASE keeps a pointer to its name until the next CASE: give each its own. */
static const char *case_name(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static const char *case_name(const char *fmt, ...) {
    static char names[512][96];
    static int next;
    char *s = names[next++ % 512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s, sizeof names[0], fmt, ap);
    va_end(ap);
    return s;
}

/* ---- the golden file ------------------------------------------------------ */

typedef struct {
    char *text;
    size_t len;
    int *ids, n_ids;
    int *ids_bos, n_ids_bos;
} Golden;

/* cJSON strings end at the first NUL, and one golden text contains "\u0000".
 * Rewrite that escape to a code point the file does not use (U+10FFFF), and
 * turn it back into a NUL byte after parsing, keeping the true length. */
#define NUL_STANDIN "\xF4\x8F\xBF\xBF"
static char *escape_nuls(const char *json) {
    size_t n = strlen(json);
    char *out = xmalloc(2 * n + 1), *o = out;
    for (size_t i = 0; i < n; i++) {
        if (json[i] == '\\' && i + 1 < n) {
            if (strncmp(json + i + 1, "u0000", 5) == 0) {
                memcpy(o, "\\uDBFF\\uDFFF", 12);
                o += 12;
                i += 5;
            } else {
                *o++ = json[i++];
                *o++ = json[i];
            }
        } else {
            *o++ = json[i];
        }
    }
    *o = '\0';
    return out;
}

static int *int_array(const cJSON *arr, int *n_out) {
    int n = cJSON_GetArraySize(arr);
    int *v = xmalloc((size_t)(n ? n : 1) * sizeof *v);
    for (int i = 0; i < n; i++) v[i] = (int)cJSON_GetArrayItem(arr, i)->valuedouble;
    *n_out = n;
    return v;
}

static Golden *load_golden(int *n_out) {
    char path[512], *json;
    size_t size;
    Err err;
    *n_out = 0;
    if (read_file(shared_path(path, sizeof path, "golden/tokenizer_llama2.json"), &json, &size, &err)) {
        fprintf(stderr, "  %s\n", err.msg);
        return NULL;
    }
    if (strstr(json, NUL_STANDIN)) { free(json); return NULL; }   /* stand-in must be unused */
    char *escaped = escape_nuls(json);
    cJSON *root = cJSON_Parse(escaped);
    free(json);
    free(escaped);
    const cJSON *cases = cJSON_GetObjectItemCaseSensitive(root, "cases");
    if (!cJSON_IsArray(cases)) { cJSON_Delete(root); return NULL; }
    int n = cJSON_GetArraySize(cases);
    Golden *g = xcalloc((size_t)n, sizeof *g);
    for (int i = 0; i < n; i++) {
        const cJSON *c = cJSON_GetArrayItem(cases, i);
        const char *text = cJSON_GetStringValue(cJSON_GetObjectItemCaseSensitive(c, "text"));
        size_t tl = strlen(text ? text : "");
        g[i].text = xmalloc(tl + 1);
        size_t o = 0;
        for (size_t k = 0; k < tl; k++) {
            if (strncmp(text + k, NUL_STANDIN, 4) == 0) { g[i].text[o++] = '\0'; k += 3; }
            else g[i].text[o++] = text[k];
        }
        g[i].text[o] = '\0';
        g[i].len = o;
        g[i].ids = int_array(cJSON_GetObjectItemCaseSensitive(c, "ids"), &g[i].n_ids);
        g[i].ids_bos = int_array(cJSON_GetObjectItemCaseSensitive(c, "ids_with_bos"), &g[i].n_ids_bos);
    }
    cJSON_Delete(root);
    *n_out = n;
    return g;
}

/* A short printable label for a case. */
static const char *label(const Golden *g) {
    static char buf[4][40];
    static int k;
    char *s = buf[k++ % 4];
    size_t o = 0;
    for (size_t i = 0; i < g->len && o < 24; i++) {
        unsigned char c = (unsigned char)g->text[i];
        s[o++] = c >= 0x20 && c < 0x7F ? (char)c : '.';
    }
    if (g->len > 24) { s[o++] = '.'; s[o++] = '.'; }
    s[o] = '\0';
    return s;
}

static bool same_ids(const int *a, int na, const int *b, int nb) {
    return na == nb && (na == 0 || memcmp(a, b, (size_t)na * sizeof *a) == 0);
}

static void print_ids(const char *what, const int *ids, int n) {
    fprintf(stderr, "    %s:", what);
    for (int i = 0; i < n && i < 40; i++) fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, n > 40 ? " ...\n" : "\n");
}

/* Encode with a first call that only asks for the length (as callers do). */
static int *encode_all(const Tokenizer *t, const char *text, size_t len, int add_bos, int *n_out) {
    Err err;
    int n = tokenizer_encode_len(t, text, len, add_bos, NULL, 0, &err);
    if (n < 0) { fprintf(stderr, "    encode: %s\n", err.msg); *n_out = -1; return NULL; }
    int *ids = xmalloc((size_t)(n ? n : 1) * sizeof *ids);
    int n2 = tokenizer_encode_len(t, text, len, add_bos, ids, n, &err);
    *n_out = n2 == n ? n : -1;
    return ids;
}

static void check_golden(const Tokenizer *t, const char *fmt_name, const Golden *g, int n_golden) {
    for (int i = 0; i < n_golden; i++) {
        CASE(case_name("%s golden %2d \"%s\"", fmt_name, i, label(&g[i]))) {
            int n, nb;
            int *ids = encode_all(t, g[i].text, g[i].len, 0, &n);
            int *ids_bos = encode_all(t, g[i].text, g[i].len, 1, &nb);
            bool ok = same_ids(ids, n, g[i].ids, g[i].n_ids);
            CHECK(ok, "ids differ from SentencePiece (%d vs %d ids)", n, g[i].n_ids);
            if (!ok) { print_ids("ours", ids, n); print_ids("sentencepiece", g[i].ids, g[i].n_ids); }
            CHECK(same_ids(ids_bos, nb, g[i].ids_bos, g[i].n_ids_bos), "ids_with_bos differ");
            free(ids);
            free(ids_bos);
        }
    }
}

/* Every golden text round-trips under SentencePiece's DecodeIds: the identity
 * normaliser drops nothing, only the dummy-prefix "▁" is removed, and the texts
 * are valid UTF-8. So decode(ids) == text exactly, with and without BOS. */
static void check_round_trips(const Tokenizer *t, const char *fmt_name, const Golden *g, int n_golden) {
    CASE(case_name("%s decode(golden ids) == text for all %d cases", fmt_name, n_golden)) {
        for (int i = 0; i < n_golden; i++) {
            Err err;
            size_t len = 0, len_bos = 0;
            char *s = tokenizer_decode_len(t, g[i].ids, g[i].n_ids, &len, &err);
            char *s_bos = tokenizer_decode_len(t, g[i].ids_bos, g[i].n_ids_bos, &len_bos, &err);
            CHECK(s && len == g[i].len && memcmp(s, g[i].text, len) == 0,
                  "case %d \"%s\": decoded %zu bytes \"%.60s\"", i, label(&g[i]), len, s ? s : "(null)");
            CHECK(s_bos && len_bos == g[i].len && memcmp(s_bos, g[i].text, len_bos) == 0,
                  "case %d with BOS", i);
            free(s);
            free(s_bos);
        }
    }
}

/* ---- helpers for bad files and a hand-made model --------------------------- */

static char tmp_dir[256];

static const char *write_tmp(const char *name, const void *data, size_t n) {
    static char paths[16][512];
    static int k;
    char *path = paths[k++ % 16];
    snprintf(path, sizeof paths[0], "%s/%s", tmp_dir, name);
    FILE *f = fopen(path, "wb");
    if (f) { fwrite(data, 1, n, f); fclose(f); }
    return path;
}

/* Loading `path` must fail with a message that names the file. */
static void expect_load_error(const char *path, const char *why) {
    Err err = {{0}};
    Tokenizer *t = tokenizer_load(path, &err);
    CHECK(t == NULL, "%s: loaded", why);
    CHECK(strstr(err.msg, path) != NULL, "%s: message does not name the file: \"%s\"", why, err.msg);
    CHECK(strchr(err.msg, '\n') == NULL, "%s: message is not one line", why);
    printf("      (%s -> %s)\n", why, err.msg);
    tokenizer_free(t);
}

/* A minimal protobuf writer, to build a small SentencePiece model in the test. */
typedef struct { uint8_t b[8192]; size_t n; } PbOut;
static void put_varint(PbOut *o, uint64_t v) {
    while (v >= 0x80) { o->b[o->n++] = (uint8_t)(v | 0x80); v >>= 7; }
    o->b[o->n++] = (uint8_t)v;
}
static void put_bytes(PbOut *o, int field, const void *s, size_t n) {
    put_varint(o, (uint64_t)field << 3 | 2);
    put_varint(o, n);
    memcpy(o->b + o->n, s, n);
    o->n += n;
}
static void put_uint(PbOut *o, int field, uint64_t v) { put_varint(o, (uint64_t)field << 3); put_varint(o, v); }
static void put_piece(PbOut *model, const char *text, float score, int type) {
    PbOut p = { .n = 0 };
    put_bytes(&p, 1, text, strlen(text));
    uint32_t bits;
    memcpy(&bits, &score, 4);
    put_varint(&p, 2 << 3 | 5);
    for (int i = 0; i < 4; i++) p.b[p.n++] = (uint8_t)(bits >> (8 * i));
    if (type != 1) put_uint(&p, 3, (uint64_t)type);
    put_bytes(model, 1, p.b, p.n);
}

/* ---- main ----------------------------------------------------------------- */

int main(void) {
    char model_path[512], bin_path[512], tok512_path[512], wiki_path[512];
    shared_path(model_path, sizeof model_path, "models/llama2-tokenizer/tokenizer.model");
    shared_path(bin_path, sizeof bin_path, "models/llama2-tokenizer/tokenizer.bin");
    shared_path(tok512_path, sizeof tok512_path, "models/stories260k/tok512.bin");
    shared_path(wiki_path, sizeof wiki_path, "data/wikitext-2-raw-test.txt");
    snprintf(tmp_dir, sizeof tmp_dir, "%s/kvlab_tok_XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (!mkdtemp(tmp_dir)) { perror("mkdtemp"); return 1; }

    Err err;
    Tokenizer *tm = NULL, *tb = NULL;
    CASE("load tokenizer.model (SentencePiece protobuf)") {
        tm = tokenizer_load(model_path, &err);
        CHECK(tm != NULL, "%s", err.msg);
        if (tm) {
            CHECK(tokenizer_vocab_size(tm) == 32000, "vocab %d", tokenizer_vocab_size(tm));
            CHECK(tokenizer_bos_id(tm) == 1 && tokenizer_eos_id(tm) == 2, "bos %d eos %d",
                  tokenizer_bos_id(tm), tokenizer_eos_id(tm));
        }
    }
    CASE("load tokenizer.bin (llama2.c export)") {
        tb = tokenizer_load(bin_path, &err);
        CHECK(tb != NULL, "%s", err.msg);
        if (tb) {
            CHECK(tokenizer_vocab_size(tb) == 32000, "vocab %d", tokenizer_vocab_size(tb));
            CHECK(tokenizer_bos_id(tb) == 1 && tokenizer_eos_id(tb) == 2, "bos %d eos %d",
                  tokenizer_bos_id(tb), tokenizer_eos_id(tb));
        }
    }
    CASE("both files hold the same 32000 pieces") {
        CHECK(tm && tb, "a tokenizer failed to load");
        int differ = 0;
        for (int id = 0; tm && tb && id < 32000; id++) {
            char b1[8], b2[8];
            const char *p1 = tokenizer_piece(tm, 5, id, b1), *p2 = tokenizer_piece(tb, 5, id, b2);
            if (strcmp(p1, p2) != 0 && differ++ < 5)
                CHECK(0, "piece %d: \"%s\" vs \"%s\"", id, p1, p2);
        }
        CHECK(differ == 0, "%d pieces differ", differ);
    }

    int n_golden = 0;
    Golden *g = load_golden(&n_golden);
    CASE("golden file parses") CHECK(g && n_golden >= 27, "%d cases", n_golden);
    if (tm) { check_golden(tm, "model", g, n_golden); check_round_trips(tm, "model", g, n_golden); }
    if (tb) { check_golden(tb, "bin  ", g, n_golden); check_round_trips(tb, "bin  ", g, n_golden); }

    if (tm) {
        CASE("encode reports the needed size and never writes past max_ids") {
            int ids[4] = { -7, -7, -7, -7 };
            int n = tokenizer_encode(tm, "Hello world, this is a longer text", 1, ids, 3, &err);
            CHECK(n > 3, "n=%d", n);
            CHECK(ids[0] == 1 && ids[1] == 15043 && ids[2] == 3186 && ids[3] == -7, "ids %d %d %d %d",
                  ids[0], ids[1], ids[2], ids[3]);
            CHECK(tokenizer_encode(tm, "", 0, NULL, 0, &err) == 0, "empty text gives ids");
            CHECK(tokenizer_encode(tm, "", 1, ids, 4, &err) == 1 && ids[0] == 1, "empty text with BOS");
        }
        CASE("literal <0x41> and <unk> in the text stay text") {
            int ids[32];
            int n = tokenizer_encode(tm, "<0x41><unk>", 0, ids, 32, &err);
            int bad = 0;
            for (int i = 0; i < n; i++) bad += ids[i] < 259;   /* control, unk and byte ids */
            CHECK(n > 2 && bad == 0, "n=%d, %d special ids", n, bad);
        }
        CASE("invalid UTF-8: each bad byte becomes U+FFFD, as in SentencePiece") {
            int ids[32];
            const char *text = "a\xFF" "b\xC3";   /* a stray byte and a truncated 2-byte character */
            int n = tokenizer_encode(tm, text, 0, ids, 32, &err);
            /* SentencePiece 0.1.97 gives "▁a" "�" "b" "�" (30140 is the piece "�"). */
            CHECK(n == 4 && ids[0] == 263 && ids[1] == 30140 && ids[2] == 29890 && ids[3] == 30140,
                  "n=%d ids %d %d %d %d", n, ids[0], ids[1], ids[2], ids[3]);
            char *s = tokenizer_decode(tm, ids, n, &err);
            CHECK(s && strcmp(s, "a\xEF\xBF\xBD" "b\xEF\xBF\xBD") == 0, "decoded \"%s\"", s ? s : "(null)");
            free(s);
            /* Byte pieces that do not form valid UTF-8 also decode to U+FFFD. */
            int bad_bytes[] = { 263, 0xFF + 3, 0xC3 + 3 };
            s = tokenizer_decode(tm, bad_bytes, 3, &err);
            CHECK(s && strcmp(s, "a\xEF\xBF\xBD\xEF\xBF\xBD") == 0, "decoded \"%s\"", s ? s : "(null)");
            free(s);
            /* A valid character split over byte pieces is joined back. */
            int euro[3] = { 0xE2 + 3, 0x82 + 3, 0xAC + 3 };
            s = tokenizer_decode(tm, euro, 3, &err);
            CHECK(s && strcmp(s, "\xE2\x82\xAC") == 0, "euro sign \"%s\"", s ? s : "(null)");
            free(s);
        }
        CASE("decode: control pieces vanish, only the dummy-prefix space is removed, bad ids fail") {
            int ids[] = { 1, 29871, 15043, 2 };            /* <s> "▁" "▁Hello" </s> */
            char *s = tokenizer_decode(tm, ids, 4, &err);
            CHECK(s && strcmp(s, " Hello") == 0, "\"%s\"", s ? s : "(null)");
            free(s);
            int unk[] = { 15043, 0 };
            s = tokenizer_decode(tm, unk, 2, &err);
            CHECK(s && strcmp(s, "Hello \xE2\x81\x87 ") == 0, "unk surface \"%s\"", s ? s : "(null)");
            free(s);
            int bad[] = { 15043, 32000 };
            err.msg[0] = '\0';
            s = tokenizer_decode(tm, bad, 2, &err);
            CHECK(s == NULL && strstr(err.msg, "token id 32000 at position 1 is outside the tokenizer's vocabulary [0, 32000)"),
                  "out-of-range id accepted, or the message names no id, position and range: %s", err.msg);
            free(s);
        }
        CASE("tokenizer_piece streams the same text as tokenizer_decode") {
            const char *text = "Once upon a time,  there was\ta llama 🦙 named Ω.";
            int n;
            int *ids = encode_all(tm, text, strlen(text), 1, &n);
            char streamed[256] = "", buf[8];
            for (int i = 0; i < n; i++) strcat(streamed, tokenizer_piece(tm, i ? ids[i - 1] : -1, ids[i], buf));
            CHECK(strcmp(streamed, text) == 0, "streamed \"%s\"", streamed);
            CHECK(strcmp(tokenizer_piece(tm, 1, 15043, buf), "Hello") == 0, "after BOS");
            CHECK(strcmp(tokenizer_piece(tm, 3186, 15043, buf), " Hello") == 0, "mid-text");
            CHECK(strcmp(tokenizer_piece(tm, 3186, 13, buf), "\n") == 0, "byte piece <0x0A>");
            CHECK(strcmp(tokenizer_piece(tm, 3186, 2, buf), "") == 0, "EOS");
            free(ids);
        }
    }

    CASE("tok512.bin (llama2.c 512-token vocabulary) loads and round-trips English") {
        Tokenizer *t = tokenizer_load(tok512_path, &err);
        CHECK(t != NULL, "%s", err.msg);
        if (t) {
            CHECK(tokenizer_vocab_size(t) == 512 && tokenizer_bos_id(t) == 1 && tokenizer_eos_id(t) == 2,
                  "vocab %d", tokenizer_vocab_size(t));
            const char *text = "Once upon a time, there was a little girl named Lily. She loved to play outside!";
            int n;
            int *ids = encode_all(t, text, strlen(text), 1, &n);
            int out_of_range = 0, bytes = 0;
            for (int i = 0; i < n; i++) { out_of_range += ids[i] < 0 || ids[i] >= 512; bytes += ids[i] >= 3 && ids[i] < 259; }
            CHECK(n > 10 && n < (int)strlen(text) / 2, "%d ids for %zu characters", n, strlen(text));
            CHECK(ids[0] == 1 && out_of_range == 0 && bytes == 0, "bad ids (%d out of range, %d bytes)", out_of_range, bytes);
            char *s = tokenizer_decode(t, ids, n, &err);
            CHECK(s && strcmp(s, text) == 0, "decoded \"%s\"", s ? s : "(null)");
            free(s);
            free(ids);
            /* Characters outside the 512 pieces fall back to bytes and come back. */
            const char *uni = "naïve 日本";
            ids = encode_all(t, uni, strlen(uni), 0, &n);
            s = tokenizer_decode(t, ids, n, &err);
            CHECK(s && strcmp(s, uni) == 0, "decoded \"%s\"", s ? s : "(null)");
            free(s);
            free(ids);
        }
        tokenizer_free(t);
    }

    CASE("a hand-written model: flags, user-defined, unused and no byte fallback") {
        /* Pieces: ▁ab is UNUSED (formed, then split back into ▁a + b), <sep> is
         * USER_DEFINED (never split or merged), no byte pieces (unknown -> <unk>).
         * Normaliser: remove_extra_whitespaces = true. */
        PbOut m = { .n = 0 };
        put_piece(&m, "<unk>", 0, 2);
        put_piece(&m, "<s>", 0, 3);
        put_piece(&m, "</s>", 0, 3);
        put_piece(&m, "<sep>", 0, 4);                 /* 3 */
        put_piece(&m, "\xE2\x96\x81" "a", -1, 1);     /* 4: ▁a */
        put_piece(&m, "\xE2\x96\x81" "ab", -0.5f, 5); /* 5: ▁ab (unused) */
        put_piece(&m, "\xE2\x96\x81" "abc", -3, 1);   /* 6: ▁abc */
        put_piece(&m, "\xE2\x96\x81", -4, 1);         /* 7: ▁ */
        put_piece(&m, "a", -5, 1);                    /* 8 */
        put_piece(&m, "b", -6, 1);                    /* 9 */
        put_piece(&m, "c", -7, 1);                    /* 10 */
        PbOut ts = { .n = 0 }, ns = { .n = 0 };
        put_uint(&ts, 3, 2);                          /* model_type BPE */
        put_bytes(&ns, 1, "identity", 8);
        put_uint(&ns, 3, 1);                          /* add_dummy_prefix */
        put_uint(&ns, 4, 1);                          /* remove_extra_whitespaces */
        put_bytes(&m, 2, ts.b, ts.n);
        put_bytes(&m, 3, ns.b, ns.n);
        put_uint(&m, 99, 12345);                      /* an unknown field is skipped */
        Tokenizer *t = tokenizer_load(write_tmp("small.model", m.b, m.n), &err);
        CHECK(t != NULL, "%s", err.msg);
        if (t) {
            int ids[32];
            /* "  abc   ab<sep>xy " -> "▁abc▁ab<sep>xy": ▁abc; ▁ab is unused -> ▁a b;
             * <sep>; the unknown run "xy" is a single <unk> (no byte fallback). */
            int n = tokenizer_encode(t, "  abc   ab<sep>xy ", 0, ids, 32, &err);
            int want[] = { 6, 4, 9, 3, 0 };
            CHECK(same_ids(ids, n, want, 5), "n=%d: %d %d %d %d %d", n, ids[0], ids[1], ids[2], ids[3], ids[4]);
            n = tokenizer_encode(t, "x<sep>y", 1, ids, 32, &err);
            int want2[] = { 1, 7, 0, 3, 0 };   /* <s> ▁ <unk> <sep> <unk> */
            CHECK(same_ids(ids, n, want2, 5), "n=%d: %d %d %d %d %d", n, ids[0], ids[1], ids[2], ids[3], ids[4]);
            char *d = tokenizer_decode(t, ids, n, &err);
            CHECK(d && strcmp(d, " \xE2\x81\x87 <sep> \xE2\x81\x87 ") == 0, "decoded \"%s\"", d ? d : "(null)");
            free(d);
            CHECK(tokenizer_encode(t, "   ", 0, ids, 32, &err) == 0, "blank text gives ids");
            char *s = tokenizer_decode(t, ids, 0, &err);
            CHECK(s && s[0] == '\0', "empty decode");
            free(s);
        }
        tokenizer_free(t);

        /* Unigram models are refused, not silently mis-tokenised. */
        PbOut u = { .n = 0 };
        put_piece(&u, "<unk>", 0, 2);
        put_piece(&u, "a", -1, 1);
        PbOut uts = { .n = 0 };
        put_uint(&uts, 3, 1);
        put_bytes(&u, 2, uts.b, uts.n);
        put_bytes(&u, 3, ns.b, ns.n);
        expect_load_error(write_tmp("unigram.model", u.b, u.n), "unigram model");
    }

    CASE("bad files fail with a one-line message naming the file") {
        char *data;
        size_t size;
        if (read_file(model_path, &data, &size, &err) == 0) {
            expect_load_error(write_tmp("half.model", data, size / 2), "tokenizer.model cut in half");
            expect_load_error(write_tmp("cut.model", data, 100), "tokenizer.model cut at 100 bytes");
            expect_load_error(write_tmp("one.model", data, 1), "tokenizer.model cut at 1 byte");
            free(data);
        }
        if (read_file(bin_path, &data, &size, &err) == 0) {
            expect_load_error(write_tmp("cut.bin", data, size - 3), "tokenizer.bin cut short");
            free(data);
            /* max_token_length 27, then one token: score 0, length 20, but only 5 bytes follow. */
            uint8_t bin[] = { 27, 0, 0, 0,  0, 0, 0, 0,  20, 0, 0, 0,  '<', 'u', 'n', 'k', '>' };
            expect_load_error(write_tmp("long.bin", bin, sizeof bin), "tokenizer.bin length past the end");
        }
        expect_load_error(write_tmp("empty.model", "", 0), "empty file");
        char garbage[4096];
        uint32_t x = 12345;
        for (size_t i = 0; i < sizeof garbage; i++) { x = x * 1103515245u + 12345u; garbage[i] = (char)(x >> 16); }
        expect_load_error(write_tmp("garbage.model", garbage, sizeof garbage), "random bytes");
        garbage[0] = 0x0A; garbage[1] = 0x7F;
        expect_load_error(write_tmp("garbage2.model", garbage, sizeof garbage), "random bytes after a protobuf tag");
        expect_load_error(write_tmp("text.model", "hello, I am not a tokenizer\n", 28), "a text file");
        char missing[600];
        snprintf(missing, sizeof missing, "%s/does-not-exist.model", tmp_dir);
        expect_load_error(missing, "missing file");
    }

    if (tm) {
        CASE("wikitext-2 test (1.3 MB) encodes fast and decodes back") {
            char *text;
            size_t size;
            CHECK(read_file(wiki_path, &text, &size, &err) == 0, "%s", err.msg);
            if (text) {
                double t0 = now_seconds();
                int n;
                int *ids = encode_all(tm, text, size, 1, &n);
                double t_enc = (now_seconds() - t0) / 2;   /* encode_all encodes twice */
                t0 = now_seconds();
                size_t len = 0;
                char *back = tokenizer_decode_len(tm, ids + 1, n - 1, &len, &err);
                double t_dec = now_seconds() - t0;
                printf("      wikitext-2 test: %zu bytes -> %d tokens, encode %.3f s, decode %.3f s\n",
                       size, n, t_enc, t_dec);
                CHECK(n > 300000 && n < 360000, "%d tokens (expected about 333k)", n);
                CHECK(t_enc < 5.0, "encode took %.2f s", t_enc);
                CHECK(back && len == size && memcmp(back, text, size) == 0, "round trip differs");
                /* The first ids of golden/golden_demo_wikitext.npz (HF transformers). */
                int first[] = { 1, 29871, 353, 4755, 350, 5059, 357, 353, 29871, 13, 4755, 350, 5059, 357,
                                338, 385, 4223, 2706, 1919, 11456, 322, 24520, 11339, 869, 940, 750, 263,
                                17838, 732, 29899, 29992, 380, 23693, 6297, 373, 278, 11456, 3652, 450, 6682 };
                int nf = (int)(sizeof first / sizeof first[0]);
                CHECK(n > nf && same_ids(ids, nf, first, nf), "first ids differ from golden_demo_wikitext");
                if (n > nf && !same_ids(ids, nf, first, nf)) print_ids("ours", ids, nf);
                free(back);
                free(ids);
                free(text);
            }
        }
    }

    for (int i = 0; i < n_golden; i++) { free(g[i].text); free(g[i].ids); free(g[i].ids_bos); }
    free(g);
    tokenizer_free(tm);
    tokenizer_free(tb);
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmp_dir);
    return check_summary();
}
