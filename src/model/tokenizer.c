/* tokenizer.c — SentencePiece BPE tokenizer (Llama-2), bit-exact with SentencePiece.
 *
 * Loading. Two file formats hold the same vocabulary (piece text, score, type):
 *   - tokenizer.model: a SentencePiece ModelProto, read with the small protobuf
 *     wire-format reader below (varint / fixed32 / fixed64 / length-delimited,
 *     every read bounds-checked). Besides the pieces we read the trainer_spec
 *     (model type, byte_fallback, unk/bos/eos pieces) and the normalizer_spec
 *     (add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces).
 *   - tokenizer.bin: llama2.c's export (u32 max_token_length, then per piece f32
 *     score, u32 length, bytes). It has no types and writes "▁" as a space, so we
 *     undo that and infer the types: id 0 = UNKNOWN, 1/2 = CONTROL (BOS/EOS),
 *     "<0xXX>" = BYTE, the rest NORMAL; the normalizer flags are Llama-2's.
 * The format is detected from the first bytes (a ModelProto starts with the tag
 * of field 1, length-delimited: 0x0A, followed by a non-zero length).
 *
 * Encoding (SentencePiece bpe_model.cc + normalizer.cc + byte fallback):
 *   1. normalise: optionally drop leading/trailing/repeated spaces, prepend the
 *      dummy prefix "▁", turn every ' ' into "▁" (U+2581), and replace every
 *      byte that is not part of a valid UTF-8 character by U+FFFD "�" (as
 *      SentencePiece does: "a\xFF" encodes like "a�", which Llama-2 has as
 *      piece 30140; the bad byte itself is not kept);
 *   2. split the result into Unicode characters;
 *   3. put every adjacent pair whose concatenation is a vocabulary piece into a
 *      max-heap keyed by (piece score, then leftmost position); pop the best
 *      pair, merge it in the doubly-linked symbol list, push the two new pairs it
 *      forms with its neighbours. Entries made stale by earlier merges are
 *      recognised and skipped when popped. This is O(n log n). A character
 *      that occurs in no multi-character piece can never merge (only 264
 *      characters occur in Llama-2's: '\n', '\t', CJK... never merge), so the
 *      text is cut at such characters and each segment gets its own small
 *      heap: the same result, but cache-friendly (4x faster on wikitext);
 *   4. emit the id of every final symbol; a symbol that is not in the vocabulary
 *      becomes its UTF-8 bytes as <0xXX> pieces (byte fallback) or, without
 *      byte fallback, UNK (one UNK for a run of unknown symbols).
 * Only NORMAL, USER_DEFINED and UNUSED pieces can be produced by merging (exactly
 * SentencePiece's `pieces_` map): "<s>" or "<0x41>" typed in the text stay text.
 *
 * Decoding follows SentencePieceProcessor::Decode: control pieces vanish, runs
 * of byte pieces are joined into bytes (invalid UTF-8 in them becomes U+FFFD),
 * "▁" becomes ' ', and the dummy-prefix space of the first piece is removed. */
#include "model/tokenizer.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "base/buf.h"

enum {   /* ModelProto.SentencePiece.Type */
    PIECE_NORMAL = 1, PIECE_UNKNOWN = 2, PIECE_CONTROL = 3,
    PIECE_USER_DEFINED = 4, PIECE_UNUSED = 5, PIECE_BYTE = 6,
};

#define SPACE_SYMBOL "\xE2\x96\x81"   /* U+2581 "▁" */
#define SPACE_SYMBOL_LEN 3
#define REPLACEMENT_CHAR "\xEF\xBF\xBD" /* U+FFFD */
#define MAX_TEXT_BYTES ((size_t)1 << 28)   /* keeps every offset comfortably in an int */
#define MAX_VOCAB (1 << 24)

/* Open-addressing hash set of piece ids, keyed by the piece bytes. */
typedef struct { uint32_t hash; int32_t id; } Slot;
typedef struct { Slot *slots; uint32_t mask; } PieceTable;

struct Tokenizer {
    int n_vocab;
    char **piece;          /* piece text as in the model ("▁" for spaces), NUL-terminated */
    int *piece_len;
    float *score;
    uint8_t *type;
    char **surface;        /* what the piece prints as: "▁" -> ' ' */
    int *surface_len;
    char *arena;           /* storage of piece[] and surface[] */
    PieceTable normal;     /* NORMAL, USER_DEFINED, UNUSED: what merges may produce */
    PieceTable reserved;   /* CONTROL, UNKNOWN, BYTE: reachable only by exact lookup */
    int byte_id[256];      /* id of <0xXX>, or unk_id when absent */
    int unk_id, bos_id, eos_id;
    int max_user_defined_len;   /* 0 when there are no USER_DEFINED pieces */
    /* Set of code points that occur in some mergeable multi-character piece;
     * any other character never merges (see split_symbols). */
    uint32_t *merge_chars;      /* code point + 1, 0 = empty slot */
    uint32_t merge_chars_mask;
    bool all_mergeable;         /* a piece is not valid UTF-8: no shortcut */
    int n_unused;
    bool byte_fallback, add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces;
    char unk_surface[64];
};

/* ------------------------------------------------------------------------- */
/* UTF-8                                                                     */

static bool is_trail(unsigned char c) { return (c & 0xC0) == 0x80; }

/* Decode the UTF-8 character at s (n bytes available): returns its length and
 * sets *cp, or returns 0 if s does not start a valid character. Same rules as
 * SentencePiece's IsValidDecodeUTF8: no overlong forms, no surrogates, nothing
 * above U+10FFFF. */
static int utf8_decode(const unsigned char *s, size_t n, uint32_t *cp) {
    uint32_t c = s[0];
    if (c < 0x80) { *cp = c; return 1; }
    if ((c & 0xE0) == 0xC0) {
        if (n < 2 || !is_trail(s[1])) return 0;
        *cp = ((c & 0x1Fu) << 6) | (s[1] & 0x3Fu);
        return *cp >= 0x80 ? 2 : 0;
    }
    if ((c & 0xF0) == 0xE0) {
        if (n < 3 || !is_trail(s[1]) || !is_trail(s[2])) return 0;
        *cp = ((c & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu);
        return *cp >= 0x800 && (*cp < 0xD800 || *cp > 0xDFFF) ? 3 : 0;
    }
    if ((c & 0xF8) == 0xF0) {
        if (n < 4 || !is_trail(s[1]) || !is_trail(s[2]) || !is_trail(s[3])) return 0;
        *cp = ((c & 0x07u) << 18) | ((s[1] & 0x3Fu) << 12) | ((s[2] & 0x3Fu) << 6) | (s[3] & 0x3Fu);
        return *cp >= 0x10000 && *cp <= 0x10FFFF ? 4 : 0;
    }
    return 0;
}

static int utf8_char_len(const unsigned char *s, size_t n) {
    uint32_t cp;
    return utf8_decode(s, n, &cp);
}

/* "<0xXX>" (upper-case hex, as SentencePiece writes it) -> the byte, else -1. */
static int byte_piece_value(const char *s, int len) {
    if (len != 6 || memcmp(s, "<0x", 3) != 0 || s[5] != '>') return -1;
    int v = 0;
    for (int i = 3; i < 5; i++) {
        char c = s[i];
        if (c >= '0' && c <= '9') v = v * 16 + (c - '0');
        else if (c >= 'A' && c <= 'F') v = v * 16 + (c - 'A' + 10);
        else return -1;
    }
    return v;
}

/* A piece's text made safe for a one-line error message: control characters
 * and invalid UTF-8 as \xNN, cut after about 40 bytes. */
static const char *printable(const char *s, size_t len, char out[64]) {
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        if (o > 44) { memcpy(out + o, "...", 3); o += 3; break; }
        int n = utf8_char_len((const unsigned char *)s + i, len - i);
        unsigned char c = (unsigned char)s[i];
        if (n == 0 || c < 0x20 || c == 0x7F) {
            snprintf(out + o, 5, "\\x%02X", c);
            o += 4;
            i++;
        } else {
            memcpy(out + o, s + i, (size_t)n);
            o += (size_t)n;
            i += (size_t)n;
        }
    }
    out[o] = '\0';
    return out;
}

/* ------------------------------------------------------------------------- */
/* Piece lookup                                                              */

static uint32_t hash_bytes(const char *s, int n) {   /* FNV-1a */
    uint32_t h = 2166136261u;
    for (int i = 0; i < n; i++) { h ^= (unsigned char)s[i]; h *= 16777619u; }
    return h;
}

static void table_init(PieceTable *tab, int n_keys) {
    uint32_t cap = 16;
    while (cap < (uint32_t)n_keys * 2u) cap *= 2;
    tab->slots = xmalloc(cap * sizeof *tab->slots);
    for (uint32_t i = 0; i < cap; i++) tab->slots[i].id = -1;
    tab->mask = cap - 1;
}

static int table_find(const Tokenizer *t, const PieceTable *tab, const char *s, int n) {
    uint32_t h = hash_bytes(s, n);
    for (uint32_t i = h & tab->mask;; i = (i + 1) & tab->mask) {
        const Slot *sl = &tab->slots[i];
        if (sl->id < 0) return -1;
        if (sl->hash == h && t->piece_len[sl->id] == n && memcmp(t->piece[sl->id], s, (size_t)n) == 0)
            return sl->id;
    }
}

/* Insert `id`; returns the id already holding the same text, or -1. */
static int table_insert(const Tokenizer *t, PieceTable *tab, int id) {
    int found = table_find(t, tab, t->piece[id], t->piece_len[id]);
    if (found >= 0) return found;
    uint32_t h = hash_bytes(t->piece[id], t->piece_len[id]);
    uint32_t i = h & tab->mask;
    while (tab->slots[i].id >= 0) i = (i + 1) & tab->mask;
    tab->slots[i].hash = h;
    tab->slots[i].id = id;
    return -1;
}

/* SentencePiece's PieceToId: reserved pieces first, then normal ones, else UNK. */
static int piece_to_id(const Tokenizer *t, const char *s, int n) {
    int id = table_find(t, &t->reserved, s, n);
    if (id < 0) id = table_find(t, &t->normal, s, n);
    return id >= 0 ? id : t->unk_id;
}

static bool is_normal_type(int type) {
    return type == PIECE_NORMAL || type == PIECE_USER_DEFINED || type == PIECE_UNUSED;
}

/* The set of characters that can take part in a merge. */
static uint32_t *merge_char_slot(const Tokenizer *t, uint32_t cp) {
    for (uint32_t i = (cp * 2654435761u) & t->merge_chars_mask;; i = (i + 1) & t->merge_chars_mask)
        if (t->merge_chars[i] == 0 || t->merge_chars[i] == cp + 1) return &t->merge_chars[i];
}

static bool can_merge(const Tokenizer *t, uint32_t cp) {
    return t->all_mergeable || *merge_char_slot(t, cp) != 0;
}

/* Record every character of every mergeable piece longer than one character. */
static void build_merge_chars(Tokenizer *t) {
    size_t n_chars = 0;
    for (int i = 0; i < t->n_vocab; i++) if (is_normal_type(t->type[i])) n_chars += (size_t)t->piece_len[i];
    uint32_t cap = 64;
    while (cap < 2 * n_chars && cap < (1u << 30)) cap *= 2;   /* distinct chars <= bytes */
    t->merge_chars = xcalloc(cap, sizeof *t->merge_chars);
    t->merge_chars_mask = cap - 1;
    for (int i = 0; i < t->n_vocab; i++) {
        const unsigned char *s = (const unsigned char *)t->piece[i];
        int len = t->piece_len[i];
        if (!is_normal_type(t->type[i])) continue;
        uint32_t cp;
        int first = utf8_decode(s, (size_t)len, &cp);
        if (first == 0) { t->all_mergeable = true; return; }
        if (first == len) continue;   /* a single character: merges only as a whole */
        for (int k = 0; k < len;) {
            int n = utf8_decode(s + k, (size_t)(len - k), &cp);
            if (n == 0) { t->all_mergeable = true; return; }
            *merge_char_slot(t, cp) = cp + 1;
            k += n;
        }
    }
}

/* ------------------------------------------------------------------------- */
/* Building a Tokenizer from a list of pieces (shared by both formats)        */

typedef struct {
    int n, cap;
    Buf text;              /* all piece bytes, NUL-separated */
    size_t *offset;
    int *len;
    float *score;
    uint8_t *type;
} Vocab;

static void vocab_add(Vocab *v, const char *s, size_t len, float score, int type) {
    if (v->n == v->cap) {
        v->cap = v->cap ? v->cap * 2 : 1024;
        v->offset = xrealloc(v->offset, (size_t)v->cap * sizeof *v->offset);
        v->len = xrealloc(v->len, (size_t)v->cap * sizeof *v->len);
        v->score = xrealloc(v->score, (size_t)v->cap * sizeof *v->score);
        v->type = xrealloc(v->type, (size_t)v->cap);
    }
    v->offset[v->n] = v->text.len;
    v->len[v->n] = (int)len;
    v->score[v->n] = score;
    v->type[v->n] = (uint8_t)type;
    buf_append(&v->text, s, len);
    buf_append(&v->text, "", 1);   /* keep the NUL terminator */
    v->n++;
}

static void vocab_free(Vocab *v) {
    free(v->text.data); free(v->offset); free(v->len); free(v->score); free(v->type);
}

/* The printable form of a piece: every "▁" becomes ' '. Returns bytes written. */
static size_t make_surface(const char *piece, int len, char *out) {
    size_t o = 0;
    for (int i = 0; i < len;) {
        if (i + SPACE_SYMBOL_LEN <= len && memcmp(piece + i, SPACE_SYMBOL, SPACE_SYMBOL_LEN) == 0) {
            out[o++] = ' ';
            i += SPACE_SYMBOL_LEN;
        } else {
            out[o++] = piece[i++];
        }
    }
    out[o] = '\0';
    return o;
}

/* Move the vocabulary into t and build the lookup tables. Checks what
 * SentencePiece checks when it loads a model: non-empty pieces, no duplicates,
 * well-formed byte pieces. */
static int tokenizer_build(Tokenizer *t, Vocab *v, const char *path, Err *err) {
    int n = v->n;
    char shown[64];
    if (n == 0) return err_set(err, "%s: the vocabulary is empty", path);
    t->n_vocab = n;
    t->piece = xmalloc((size_t)n * sizeof *t->piece);
    t->surface = xmalloc((size_t)n * sizeof *t->surface);
    t->surface_len = xmalloc((size_t)n * sizeof *t->surface_len);
    t->piece_len = v->len; v->len = NULL;
    t->score = v->score;   v->score = NULL;
    t->type = v->type;     v->type = NULL;
    /* One arena: the piece texts, then the surfaces (never longer than the piece). */
    size_t text_bytes = v->text.len;
    t->arena = xmalloc(2 * text_bytes + 1);
    memcpy(t->arena, v->text.data, text_bytes);
    size_t s_off = text_bytes;
    for (int i = 0; i < n; i++) {
        t->piece[i] = t->arena + v->offset[i];
        t->surface[i] = t->arena + s_off;
        t->surface_len[i] = (int)make_surface(t->piece[i], t->piece_len[i], t->surface[i]);
        s_off += (size_t)t->surface_len[i] + 1;
    }

    int n_normal = 0;
    for (int i = 0; i < n; i++) n_normal += is_normal_type(t->type[i]);
    table_init(&t->normal, n_normal);
    table_init(&t->reserved, n - n_normal);
    for (int b = 0; b < 256; b++) t->byte_id[b] = -1;
    t->unk_id = -1;
    for (int i = 0; i < n; i++) {
        int type = t->type[i];
        if (t->piece_len[i] == 0) return err_set(err, "%s: piece %d is empty", path, i);
        if (type < PIECE_NORMAL || type > PIECE_BYTE)
            return err_set(err, "%s: piece %d '%s' has unknown type %d", path, i,
                           printable(t->piece[i], (size_t)t->piece_len[i], shown), type);
        int dup = table_insert(t, is_normal_type(type) ? &t->normal : &t->reserved, i);
        if (dup >= 0)
            return err_set(err, "%s: piece %d '%s' duplicates piece %d", path, i,
                           printable(t->piece[i], (size_t)t->piece_len[i], shown), dup);
        if (type == PIECE_UNKNOWN) {
            if (t->unk_id >= 0) return err_set(err, "%s: pieces %d and %d are both UNKNOWN", path, t->unk_id, i);
            t->unk_id = i;
        } else if (type == PIECE_BYTE) {
            int b = byte_piece_value(t->piece[i], t->piece_len[i]);
            if (b < 0)
                return err_set(err, "%s: piece %d '%s' has type BYTE but is not <0xXX>", path, i,
                               printable(t->piece[i], (size_t)t->piece_len[i], shown));
            t->byte_id[b] = i;
        } else if (type == PIECE_USER_DEFINED) {
            if (t->piece_len[i] > t->max_user_defined_len) t->max_user_defined_len = t->piece_len[i];
        } else if (type == PIECE_UNUSED) {
            t->n_unused++;
        }
    }
    if (t->unk_id < 0) return err_set(err, "%s: no UNKNOWN piece (<unk>) in the vocabulary", path);
    /* A missing byte piece falls back to UNK, as PieceToId("<0xXX>") would. */
    for (int b = 0; b < 256; b++) if (t->byte_id[b] < 0) t->byte_id[b] = t->unk_id;
    build_merge_chars(t);
    return 0;
}

/* ------------------------------------------------------------------------- */
/* Protobuf wire format                                                      */

enum { WIRE_VARINT = 0, WIRE_FIXED64 = 1, WIRE_LEN = 2, WIRE_FIXED32 = 5 };

/* A bounded reader over one (sub)message. `base` is the start of the file, for
 * offsets in error messages; `ctx` says which message we are in. */
typedef struct {
    const uint8_t *p, *end, *base;
    const char *path;
    const char *ctx;
    Err *err;
} Pb;

static int pb_fail(const Pb *r, const char *problem) {
    err_set(r->err, "%s: corrupt SentencePiece model: %s in %s at byte %zu",
            r->path, problem, r->ctx, (size_t)(r->p - r->base));
    return -1;   /* a constant, so the compiler sees outputs are set on success */
}

static int pb_varint(Pb *r, uint64_t *out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 70; shift += 7) {
        if (r->p >= r->end) return pb_fail(r, "truncated varint");
        uint8_t byte = *r->p++;
        v |= (uint64_t)(byte & 0x7F) << shift;
        if (!(byte & 0x80)) { *out = v; return 0; }
    }
    return pb_fail(r, "varint longer than 10 bytes");
}

static int pb_tag(Pb *r, int *field, int *wire) {
    uint64_t tag;
    if (pb_varint(r, &tag)) return -1;
    if ((tag >> 3) == 0 || (tag >> 3) > 0x1FFFFFFF) return pb_fail(r, "invalid field number");
    *field = (int)(tag >> 3);
    *wire = (int)(tag & 7);
    return 0;
}

static int pb_fixed(Pb *r, int n_bytes, uint64_t *out) {
    if (r->end - r->p < n_bytes) return pb_fail(r, "truncated fixed-width field");
    uint64_t v = 0;
    for (int i = n_bytes - 1; i >= 0; i--) v = (v << 8) | r->p[i];   /* little-endian */
    r->p += n_bytes;
    *out = v;
    return 0;
}

static int pb_bytes(Pb *r, const uint8_t **s, size_t *n) {
    uint64_t len;
    if (pb_varint(r, &len)) return -1;
    if (len > (uint64_t)(r->end - r->p)) return pb_fail(r, "length-delimited field runs past its end");
    *s = r->p;
    *n = (size_t)len;
    r->p += len;
    return 0;
}

/* Skip a field we do not need (proto files grow new fields: never refuse them). */
static int pb_skip(Pb *r, int wire) {
    uint64_t v;
    const uint8_t *s;
    size_t n;
    switch (wire) {
    case WIRE_VARINT:  return pb_varint(r, &v);
    case WIRE_FIXED64: return pb_fixed(r, 8, &v);
    case WIRE_FIXED32: return pb_fixed(r, 4, &v);
    case WIRE_LEN:     return pb_bytes(r, &s, &n);
    default:           return pb_fail(r, "unsupported wire type (groups or garbage)");
    }
}

/* Read a field's value after its tag, checking it has the wire type we expect. */
static int pb_expect(Pb *r, int wire, int want) {
    if (wire != want) return pb_fail(r, "field has an unexpected wire type");
    return 0;
}

static Pb pb_sub(const Pb *r, const uint8_t *s, size_t n, const char *ctx) {
    Pb sub = { s, s + n, r->base, r->path, ctx, r->err };
    return sub;
}

/* What we need from ModelProto besides the pieces. */
typedef struct {
    bool have_trainer, have_normalizer;
    int model_type;                 /* UNIGRAM=1 BPE=2 WORD=3 CHAR=4 */
    bool byte_fallback, treat_whitespace_as_suffix;
    const uint8_t *unk_surface; size_t unk_surface_len; bool have_unk_surface;
    const uint8_t *bos_piece; size_t bos_piece_len;
    const uint8_t *eos_piece; size_t eos_piece_len;
    bool add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces;
    size_t charsmap_len;
    const uint8_t *norm_name; size_t norm_name_len;
} ModelSpec;

static int parse_piece(Pb *r, Vocab *v) {
    const uint8_t *text = NULL;
    size_t len = 0;
    float score = 0.0f;
    uint64_t type = PIECE_NORMAL;   /* proto2 default */
    while (r->p < r->end) {
        int field, wire;
        uint64_t u;
        if (pb_tag(r, &field, &wire)) return -1;
        if (field == 1) {
            if (pb_expect(r, wire, WIRE_LEN) || pb_bytes(r, &text, &len)) return -1;
        } else if (field == 2) {
            if (pb_expect(r, wire, WIRE_FIXED32) || pb_fixed(r, 4, &u)) return -1;
            uint32_t bits = (uint32_t)u;
            memcpy(&score, &bits, sizeof score);
        } else if (field == 3) {
            if (pb_expect(r, wire, WIRE_VARINT) || pb_varint(r, &type)) return -1;
        } else if (pb_skip(r, wire)) {
            return -1;
        }
    }
    if (!text) return pb_fail(r, "piece without text");
    if (len > 65536) return pb_fail(r, "piece text longer than 64 KiB");
    if (!isfinite(score)) return pb_fail(r, "piece score is not finite");
    if (type > 255) type = 0;   /* reported as an unknown type by tokenizer_build */
    vocab_add(v, (const char *)text, len, score, (int)type);
    return 0;
}

static int parse_trainer_spec(Pb *r, ModelSpec *ms) {
    while (r->p < r->end) {
        int field, wire;
        uint64_t u;
        const uint8_t *s;
        size_t n;
        if (pb_tag(r, &field, &wire)) return -1;
        switch (field) {
        case 3:  if (pb_expect(r, wire, WIRE_VARINT) || pb_varint(r, &u)) return -1; ms->model_type = (int)(u & 0xFF); break;
        case 24: if (pb_expect(r, wire, WIRE_VARINT) || pb_varint(r, &u)) return -1; ms->treat_whitespace_as_suffix = u != 0; break;
        case 35: if (pb_expect(r, wire, WIRE_VARINT) || pb_varint(r, &u)) return -1; ms->byte_fallback = u != 0; break;
        case 44:
            if (pb_expect(r, wire, WIRE_LEN) || pb_bytes(r, &s, &n)) return -1;
            ms->unk_surface = s; ms->unk_surface_len = n; ms->have_unk_surface = true;
            break;
        case 46: if (pb_expect(r, wire, WIRE_LEN) || pb_bytes(r, &ms->bos_piece, &ms->bos_piece_len)) return -1; break;
        case 47: if (pb_expect(r, wire, WIRE_LEN) || pb_bytes(r, &ms->eos_piece, &ms->eos_piece_len)) return -1; break;
        default: if (pb_skip(r, wire)) return -1;
        }
    }
    return 0;
}

static int parse_normalizer_spec(Pb *r, ModelSpec *ms) {
    while (r->p < r->end) {
        int field, wire;
        uint64_t u;
        const uint8_t *s;
        size_t n;
        if (pb_tag(r, &field, &wire)) return -1;
        switch (field) {
        case 1: if (pb_expect(r, wire, WIRE_LEN) || pb_bytes(r, &ms->norm_name, &ms->norm_name_len)) return -1; break;
        case 2: if (pb_expect(r, wire, WIRE_LEN) || pb_bytes(r, &s, &n)) return -1; ms->charsmap_len = n; break;
        case 3: if (pb_expect(r, wire, WIRE_VARINT) || pb_varint(r, &u)) return -1; ms->add_dummy_prefix = u != 0; break;
        case 4: if (pb_expect(r, wire, WIRE_VARINT) || pb_varint(r, &u)) return -1; ms->remove_extra_whitespaces = u != 0; break;
        case 5: if (pb_expect(r, wire, WIRE_VARINT) || pb_varint(r, &u)) return -1; ms->escape_whitespaces = u != 0; break;
        default: if (pb_skip(r, wire)) return -1;
        }
    }
    return 0;
}

/* ModelProto: 1 pieces (repeated), 2 trainer_spec, 3 normalizer_spec, others skipped. */
static int parse_model_proto(const uint8_t *data, size_t size, const char *path, Vocab *v, ModelSpec *ms, Err *err) {
    Pb r = { data, data + size, data, path, "ModelProto", err };
    char ctx[64];
    while (r.p < r.end) {
        int field, wire;
        const uint8_t *s;
        size_t n;
        if (pb_tag(&r, &field, &wire)) return -1;
        if (field >= 1 && field <= 3) {
            if (pb_expect(&r, wire, WIRE_LEN) || pb_bytes(&r, &s, &n)) return -1;
        } else {
            if (pb_skip(&r, wire)) return -1;
            continue;
        }
        if (field == 1) {
            if (v->n >= MAX_VOCAB) return pb_fail(&r, "too many pieces");
            snprintf(ctx, sizeof ctx, "piece %d", v->n);
            Pb sub = pb_sub(&r, s, n, ctx);
            if (parse_piece(&sub, v)) return -1;
        } else if (field == 2) {
            Pb sub = pb_sub(&r, s, n, "trainer_spec");
            ms->have_trainer = true;
            if (parse_trainer_spec(&sub, ms)) return -1;
        } else {
            Pb sub = pb_sub(&r, s, n, "normalizer_spec");
            ms->have_normalizer = true;
            if (parse_normalizer_spec(&sub, ms)) return -1;
        }
    }
    return 0;
}

/* SentencePiece's bos_id()/eos_id(): the id of the named piece if it is CONTROL. */
static int control_id(const Tokenizer *t, const uint8_t *name, size_t len, const char *dflt) {
    if (!name) { name = (const uint8_t *)dflt; len = strlen(dflt); }
    if (len > 1024) return -1;
    int id = piece_to_id(t, (const char *)name, (int)len);
    return id >= 0 && t->type[id] == PIECE_CONTROL ? id : -1;
}

static int load_model_proto(Tokenizer *t, const uint8_t *data, size_t size, const char *path, Err *err) {
    Vocab v = {0};
    ModelSpec ms = { .model_type = 1, .add_dummy_prefix = true,   /* proto2 defaults */
                     .remove_extra_whitespaces = true, .escape_whitespaces = true };
    int rc = parse_model_proto(data, size, path, &v, &ms, err);
    if (rc == 0 && !ms.have_trainer)
        rc = err_set(err, "%s: no trainer_spec in the SentencePiece model (truncated file?)", path);
    else if (rc == 0 && !ms.have_normalizer)
        rc = err_set(err, "%s: no normalizer_spec in the SentencePiece model (truncated file?)", path);
    else if (rc == 0 && ms.model_type != 2)
        rc = err_set(err, "%s: SentencePiece model_type %d is not supported (only BPE = 2)", path, ms.model_type);
    else if (rc == 0 && ms.treat_whitespace_as_suffix)
        rc = err_set(err, "%s: treat_whitespace_as_suffix models are not supported", path);
    else if (rc == 0 && ms.charsmap_len > 0) {
        /* A precompiled_charsmap is a compiled NFKC-style rewrite table: applying
         * it exactly is a project of its own. Llama-2's normaliser is "identity". */
        char shown[64];
        rc = err_set(err, "%s: normalizer '%s' (precompiled_charsmap) is not supported, only identity", path,
                     printable((const char *)ms.norm_name, ms.norm_name ? ms.norm_name_len : 0, shown));
    }
    if (rc == 0) rc = tokenizer_build(t, &v, path, err);
    vocab_free(&v);
    if (rc) return -1;

    bool has_byte_pieces = false;
    for (int i = 0; i < t->n_vocab; i++) has_byte_pieces |= t->type[i] == PIECE_BYTE;
    if (has_byte_pieces && !ms.byte_fallback)
        return err_set(err, "%s: the model has byte pieces but byte_fallback is false", path);
    t->byte_fallback = ms.byte_fallback;
    t->add_dummy_prefix = ms.add_dummy_prefix;
    t->remove_extra_whitespaces = ms.remove_extra_whitespaces;
    t->escape_whitespaces = ms.escape_whitespaces;
    if (ms.have_unk_surface) {
        if (ms.unk_surface_len >= sizeof t->unk_surface)
            return err_set(err, "%s: unk_surface is too long (%zu bytes)", path, ms.unk_surface_len);
        memcpy(t->unk_surface, ms.unk_surface, ms.unk_surface_len);
        t->unk_surface[ms.unk_surface_len] = '\0';
    }
    t->bos_id = control_id(t, ms.bos_piece, ms.bos_piece_len, "<s>");
    t->eos_id = control_id(t, ms.eos_piece, ms.eos_piece_len, "</s>");
    return 0;
}

/* ------------------------------------------------------------------------- */
/* llama2.c tokenizer.bin                                                    */

static uint32_t read_u32le(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* llama2.c's export wrote ' ' for "▁" and "\n<s>\n" / "\n</s>\n" for BOS/EOS:
 * put the SentencePiece piece text back. */
static void bin_piece_text(int id, const uint8_t *s, size_t n, Buf *out) {
    out->len = 0;
    if ((id == 1 || id == 2) && n >= 3 && s[0] == '\n' && s[n - 1] == '\n') { s++; n -= 2; }
    for (size_t i = 0; i < n; i++) {
        if (s[i] == ' ') buf_append(out, SPACE_SYMBOL, SPACE_SYMBOL_LEN);
        else buf_append(out, s + i, 1);
    }
    if (!out->data) buf_append(out, "", 0);
}

static int load_llama2c_bin(Tokenizer *t, const uint8_t *data, size_t size, const char *path, Err *err) {
    if (size < 4) return err_set(err, "%s: too short for a tokenizer (%zu bytes)", path, size);
    uint32_t max_len = read_u32le(data);
    if (max_len == 0 || max_len > 65536)
        return err_set(err, "%s: not a tokenizer: max_token_length %u is implausible "
                            "(neither a SentencePiece .model nor a llama2.c tokenizer.bin)", path, max_len);
    Vocab v = {0};
    Buf text = {0};
    size_t off = 4;
    int rc = 0;
    while (off < size && rc == 0) {
        int id = v.n;
        if (id >= MAX_VOCAB) { rc = err_set(err, "%s: more than %d tokens", path, MAX_VOCAB); break; }
        if (size - off < 8) {
            rc = err_set(err, "%s: token %d: header (score, length) truncated at byte %zu", path, id, off);
            break;
        }
        float score;
        uint32_t bits = read_u32le(data + off);
        memcpy(&score, &bits, sizeof score);
        uint32_t len = read_u32le(data + off + 4);
        off += 8;
        if (!isfinite(score)) rc = err_set(err, "%s: token %d: score is not finite", path, id);
        else if (len == 0) rc = err_set(err, "%s: token %d: empty piece", path, id);
        else if (len > max_len)
            rc = err_set(err, "%s: token %d: length %u exceeds max_token_length %u", path, id, len, max_len);
        else if (len > size - off)
            rc = err_set(err, "%s: token %d: length %u runs past the end of the file (%zu bytes left)",
                         path, id, len, size - off);
        if (rc) break;
        int type = PIECE_NORMAL;
        if (id == 0) type = PIECE_UNKNOWN;
        else if (id == 1 || id == 2) type = PIECE_CONTROL;
        else if (byte_piece_value((const char *)data + off, (int)len) >= 0) type = PIECE_BYTE;
        bin_piece_text(id, data + off, len, &text);
        vocab_add(&v, text.data, text.len, score, type);
        off += len;
    }
    free(text.data);
    if (rc == 0) rc = tokenizer_build(t, &v, path, err);
    vocab_free(&v);
    if (rc) return -1;
    /* Llama-2's normaliser; byte fallback when the vocabulary has byte pieces. */
    t->byte_fallback = false;
    for (int i = 0; i < t->n_vocab; i++) t->byte_fallback |= t->type[i] == PIECE_BYTE;
    t->add_dummy_prefix = true;
    t->remove_extra_whitespaces = false;
    t->escape_whitespaces = true;
    t->bos_id = t->n_vocab > 1 ? 1 : -1;
    t->eos_id = t->n_vocab > 2 ? 2 : -1;
    return 0;
}

/* ------------------------------------------------------------------------- */
/* A vocabulary given in memory (GGUF's tokenizer.ggml.*)                    */

Tokenizer *tokenizer_from_vocab(const TokenizerVocab *tv, const char *what, Err *err) {
    if (tv->n <= 0 || tv->n > MAX_VOCAB)
        return err_set(err, "%s: vocabulary of %d pieces (must be 1..%d)", what, tv->n, MAX_VOCAB), NULL;
    Tokenizer *t = xcalloc(1, sizeof *t);
    strcpy(t->unk_surface, " \xE2\x81\x87 ");   /* SentencePiece's default: " ⁇ " */
    Vocab v = {0};
    int rc = 0;
    for (int i = 0; i < tv->n && rc == 0; i++) {
        float score = tv->scores ? tv->scores[i] : 0.0f;
        if (tv->lens[i] < 0 || tv->lens[i] > 65536) rc = err_set(err, "%s: piece %d is longer than 64 KiB", what, i);
        else if (!isfinite(score)) rc = err_set(err, "%s: piece %d: score is not finite", what, i);
        else vocab_add(&v, tv->pieces[i], (size_t)tv->lens[i], score, tv->types[i]);
    }
    if (rc == 0) rc = tokenizer_build(t, &v, what, err);
    vocab_free(&v);
    if (rc == 0 && ((tv->bos_id >= tv->n) || (tv->eos_id >= tv->n)))
        rc = err_set(err, "%s: bos id %d / eos id %d outside the vocabulary (%d pieces)", what, tv->bos_id, tv->eos_id, tv->n);
    if (rc) { tokenizer_free(t); return NULL; }
    t->byte_fallback = false;
    for (int i = 0; i < t->n_vocab; i++) t->byte_fallback |= t->type[i] == PIECE_BYTE;
    t->add_dummy_prefix = tv->add_dummy_prefix != 0;
    t->remove_extra_whitespaces = tv->remove_extra_whitespaces != 0;
    t->escape_whitespaces = true;
    t->bos_id = tv->bos_id < 0 ? -1 : tv->bos_id;
    t->eos_id = tv->eos_id < 0 ? -1 : tv->eos_id;
    return t;
}

void tokenizer_get_vocab(const Tokenizer *t, TokenizerVocab *out) {
    memset(out, 0, sizeof *out);
    out->n = t->n_vocab;
    out->pieces = (const char *const *)t->piece;
    out->lens = t->piece_len;
    out->scores = t->score;
    out->types = t->type;
    out->bos_id = t->bos_id;
    out->eos_id = t->eos_id;
    out->unk_id = t->unk_id;
    out->add_dummy_prefix = t->add_dummy_prefix;
    out->remove_extra_whitespaces = t->remove_extra_whitespaces;
    out->byte_fallback = t->byte_fallback;
}

/* ------------------------------------------------------------------------- */
/* Public: load / free / properties                                          */

Tokenizer *tokenizer_load_file(const char *path, Err *err) {
    char *data;
    size_t size;
    if (read_file(path, &data, &size, err)) return NULL;
    Tokenizer *t = xcalloc(1, sizeof *t);
    strcpy(t->unk_surface, " \xE2\x81\x87 ");   /* SentencePiece's default: " ⁇ " */
    const uint8_t *u = (const uint8_t *)data;
    int rc;
    if (size == 0)
        rc = err_set(err, "%s: empty file, not a tokenizer", path);
    else if (u[0] == 0x0A && (size < 2 || u[1] != 0))   /* field 1, length-delimited, non-empty */
        rc = load_model_proto(t, u, size, path, err);
    else
        rc = load_llama2c_bin(t, u, size, path, err);
    free(data);
    if (rc) { tokenizer_free(t); return NULL; }
    return t;
}

void tokenizer_free(Tokenizer *t) {
    if (!t) return;
    free(t->piece); free(t->piece_len); free(t->score); free(t->type);
    free(t->surface); free(t->surface_len); free(t->arena);
    free(t->normal.slots); free(t->reserved.slots);
    free(t->merge_chars);
    free(t);
}

int tokenizer_vocab_size(const Tokenizer *t) { return t->n_vocab; }
int tokenizer_bos_id(const Tokenizer *t) { return t->bos_id; }
int tokenizer_eos_id(const Tokenizer *t) { return t->eos_id; }

/* ------------------------------------------------------------------------- */
/* Encoding                                                                  */

/* SentencePiece's Normalizer::Normalize without a charsmap. `out` needs room
 * for 3 * n + 3 bytes (a space or a bad byte becomes 3 bytes). Returns the
 * normalised length (0 for an empty or, with remove_extra_whitespaces, blank text). */
static size_t normalize(const Tokenizer *t, const char *in, size_t n, char *out) {
    const char *space = t->escape_whitespaces ? SPACE_SYMBOL : " ";
    size_t space_len = t->escape_whitespaces ? SPACE_SYMBOL_LEN : 1;
    size_t i = 0, o = 0;
    if (t->remove_extra_whitespaces) while (i < n && in[i] == ' ') i++;
    if (i == n) return 0;   /* no dummy prefix for an empty text */
    if (t->add_dummy_prefix) { memcpy(out, space, space_len); o = space_len; }
    bool prev_space = t->remove_extra_whitespaces;
    while (i < n) {
        if (in[i] == ' ') {
            if (!(t->remove_extra_whitespaces && prev_space)) { memcpy(out + o, space, space_len); o += space_len; }
            prev_space = true;
            i++;
        } else {
            /* One character; a malformed byte becomes U+FFFD, consuming 1 byte
             * (Normalizer::NormalizePrefix). */
            int len = utf8_char_len((const unsigned char *)in + i, n - i);
            if (len > 0) { memcpy(out + o, in + i, (size_t)len); o += (size_t)len; i += (size_t)len; }
            else { memcpy(out + o, REPLACEMENT_CHAR, 3); o += 3; i++; }
            prev_space = false;
        }
    }
    if (t->remove_extra_whitespaces)
        while (o >= space_len && memcmp(out + o - space_len, space, space_len) == 0) o -= space_len;
    return o;
}

typedef struct { int start, len, prev, next; } Symbol;
typedef struct { float score; int left, right, size; } Pair;

/* The merge agenda: a binary max-heap of candidate pairs. */
typedef struct { Pair *a; size_t n, cap; } Heap;

/* Higher score first; on equal scores the leftmost pair (SentencePiece's order). */
static bool pair_before(const Pair *x, const Pair *y) {
    return x->score > y->score || (x->score == y->score && x->left < y->left);
}

static void heap_push(Heap *h, Pair p) {
    if (h->n == h->cap) {
        h->cap = h->cap ? h->cap * 2 : 256;
        h->a = xrealloc(h->a, h->cap * sizeof *h->a);
    }
    size_t i = h->n++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!pair_before(&p, &h->a[parent])) break;
        h->a[i] = h->a[parent];
        i = parent;
    }
    h->a[i] = p;
}

static Pair heap_pop(Heap *h) {
    Pair top = h->a[0];
    Pair last = h->a[--h->n];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= h->n) break;
        if (c + 1 < h->n && pair_before(&h->a[c + 1], &h->a[c])) c++;
        if (!pair_before(&h->a[c], &last)) break;
        h->a[i] = h->a[c];
        i = c;
    }
    if (h->n > 0) h->a[i] = last;
    return top;
}

typedef struct {
    const Tokenizer *t;
    const char *text;        /* the normalised text */
    Symbol *sym;
    uint8_t *lone;           /* 1: this symbol never merges (USER_DEFINED, or a
                                character in no multi-character piece) */
    Heap heap;
    int *unused_split;       /* UNUSED piece id -> length of its left part (NULL if none) */
    int *ids;                /* output */
    int max_ids, n_ids;
    bool prev_unk;           /* the last symbol emitted was unknown */
} Bpe;

static void emit(Bpe *b, int id) {
    if (b->n_ids < b->max_ids) b->ids[b->n_ids] = id;
    b->n_ids++;
}

/* Push the pair (left, right) if their concatenation is a piece merges may form. */
static void maybe_add_pair(Bpe *b, int left, int right) {
    if (left < 0 || right < 0) return;
    if (b->lone[left] || b->lone[right]) return;
    const Symbol *l = &b->sym[left], *r = &b->sym[right];
    int size = l->len + r->len;
    int id = table_find(b->t, &b->t->normal, b->text + l->start, size);
    if (id < 0) return;
    heap_push(&b->heap, (Pair){ b->t->score[id], left, right, size });
    /* An UNUSED piece may be formed as an intermediate step but is split back
     * into the two parts it was made from at the end (SentencePiece's rev_merge). */
    if (b->unused_split && b->t->type[id] == PIECE_UNUSED) b->unused_split[id] = l->len;
}

/* Length of the USER_DEFINED piece at the start of s (longest match), or 0. */
static int user_defined_prefix(const Tokenizer *t, const char *s, int n) {
    for (int l = t->max_user_defined_len < n ? t->max_user_defined_len : n; l > 0; l--) {
        int id = table_find(t, &t->normal, s, l);
        if (id >= 0 && t->type[id] == PIECE_USER_DEFINED) return l;
    }
    return 0;
}

/* Split the normalised text into initial symbols: one per character, a
 * USER_DEFINED piece as one symbol that never merges (SentencePiece's
 * PrefixMatcher + `freeze`). The text is valid UTF-8 by now; a stray byte
 * would still be a symbol of its own. */
static int split_symbols(Bpe *b, int n_text) {
    const Tokenizer *t = b->t;
    int n = 0;
    for (int i = 0; i < n_text;) {
        const unsigned char *s = (const unsigned char *)b->text + i;
        int len = t->max_user_defined_len > 0 ? user_defined_prefix(t, b->text + i, n_text - i) : 0;
        uint32_t cp;
        if (len > 0) {
            b->lone[n] = 1;
        } else if ((len = utf8_decode(s, (size_t)(n_text - i), &cp)) > 0) {
            b->lone[n] = !can_merge(t, cp);
        } else {
            len = 1;
            b->lone[n] = !t->all_mergeable;
        }
        b->sym[n] = (Symbol){ i, len, n - 1, i + len < n_text ? n + 1 : -1 };
        n++;
        i += len;
    }
    return n;
}

/* BPE on symbols [first, end): the caller guarantees no merge can cross either
 * boundary, so segments are independent and their merge order is unchanged. */
static void merge_segment(Bpe *b, int first, int end) {
    for (int i = first; i + 1 < end; i++) maybe_add_pair(b, i, i + 1);
    while (b->heap.n > 0) {
        Pair top = heap_pop(&b->heap);
        Symbol *l = &b->sym[top.left], *r = &b->sym[top.right];
        /* Stale: one side was merged away (len 0) or grew since the push. */
        if (l->len == 0 || r->len == 0 || l->len + r->len != top.size) continue;
        l->len += r->len;
        l->next = r->next;
        if (r->next >= 0) b->sym[r->next].prev = top.left;
        r->len = 0;
        maybe_add_pair(b, l->prev, top.left);
        maybe_add_pair(b, top.left, l->next);
    }
}

/* Cut the text at symbols that never merge and run BPE on each piece between.
 * Not with UNUSED pieces: how one is split back depends on the global order of
 * the pushes (the last one wins, as in SentencePiece), so keep that order. */
static void merge_all(Bpe *b, int n_sym) {
    if (b->t->n_unused > 0) { merge_segment(b, 0, n_sym); return; }
    int first = 0;
    for (int i = 0; i <= n_sym; i++) {
        if (i < n_sym && !b->lone[i]) continue;
        if (i - first > 1) merge_segment(b, first, i);
        first = i + 1;
    }
}

/* Emit the ids of one final symbol: undo UNUSED merges, then byte fallback. */
static void emit_symbol(Bpe *b, int start, int len) {
    const Tokenizer *t = b->t;
    const char *s = b->text + start;
    int id = piece_to_id(t, s, len);
    if (t->type[id] == PIECE_UNUSED && b->unused_split && b->unused_split[id] > 0) {
        int left = b->unused_split[id];
        emit_symbol(b, start, left);
        emit_symbol(b, start + left, len - left);
        return;
    }
    bool is_unk = t->type[id] == PIECE_UNKNOWN;
    if (is_unk && t->byte_fallback) {
        for (int i = 0; i < len; i++) emit(b, t->byte_id[(unsigned char)s[i]]);
    } else if (!(is_unk && b->prev_unk)) {
        emit(b, id);   /* without byte fallback a run of unknown symbols is one UNK */
    }
    b->prev_unk = is_unk;
}

int tokenizer_encode_len(const Tokenizer *t, const char *text, size_t len, int add_bos,
                         int *ids, int max_ids, Err *err) {
    if (!text && len > 0) return err_set(err, "no text to tokenize (a null pointer)");
    if (len > MAX_TEXT_BYTES)
        return err_set(err, "a text of %zu bytes is too long to tokenize (at most %zu)", len, MAX_TEXT_BYTES);
    if (add_bos && t->bos_id < 0) return err_set(err, "the tokenizer has no BOS piece (<s>) to start the sequence with");
    Bpe b = { .t = t, .ids = ids, .max_ids = ids ? (max_ids > 0 ? max_ids : 0) : 0 };
    if (add_bos) emit(&b, t->bos_id);
    if (len == 0) return b.n_ids;

    char *norm = xmalloc(3 * len + 4);
    int n_text = (int)normalize(t, text, len, norm);
    if (n_text > 0) {
        b.text = norm;
        b.sym = xmalloc((size_t)n_text * sizeof *b.sym);
        b.lone = xmalloc((size_t)n_text);
        if (t->n_unused > 0) b.unused_split = xcalloc((size_t)t->n_vocab, sizeof *b.unused_split);
        int n_sym = split_symbols(&b, n_text);
        merge_all(&b, n_sym);
        for (int i = 0; i >= 0; i = b.sym[i].next) emit_symbol(&b, b.sym[i].start, b.sym[i].len);
        free(b.sym); free(b.lone); free(b.unused_split); free(b.heap.a);
    }
    free(norm);
    return b.n_ids;
}

int tokenizer_encode(const Tokenizer *t, const char *text, int add_bos, int *ids, int max_ids, Err *err) {
    if (!text) return err_set(err, "no text to tokenize (a null pointer)");
    return tokenizer_encode_len(t, text, strlen(text), add_bos, ids, max_ids, err);
}

/* ------------------------------------------------------------------------- */
/* Decoding                                                                  */

/* Whether a piece's leading "▁" is the dummy prefix that decoding removes. */
static bool strips_dummy_prefix(const Tokenizer *t) {
    return t->add_dummy_prefix || t->remove_extra_whitespaces;
}

const char *tokenizer_piece(const Tokenizer *t, int prev_id, int id, char buf[8]) {
    if (id < 0 || id >= t->n_vocab) return "";
    switch (t->type[id]) {
    case PIECE_CONTROL: return "";
    case PIECE_UNKNOWN: return t->unk_surface;
    case PIECE_BYTE:
        buf[0] = (char)byte_piece_value(t->piece[id], t->piece_len[id]);
        buf[1] = '\0';
        return buf;
    default: break;
    }
    const char *s = t->surface[id];
    bool at_start = prev_id < 0 || (prev_id < t->n_vocab && t->type[prev_id] == PIECE_CONTROL);
    if (at_start && strips_dummy_prefix(t) && memcmp(t->piece[id], SPACE_SYMBOL, SPACE_SYMBOL_LEN) == 0) s++;
    return s;
}

/* Append a run of bytes from byte pieces; a byte that does not start a valid
 * UTF-8 character becomes U+FFFD, as in SentencePiece's ProcessBytePieces. */
static void flush_bytes(Buf *out, Buf *bytes) {
    const unsigned char *s = (const unsigned char *)bytes->data;
    for (size_t i = 0; i < bytes->len;) {
        int n = utf8_char_len(s + i, bytes->len - i);
        if (n == 0) { buf_append(out, REPLACEMENT_CHAR, 3); i++; }
        else { buf_append(out, s + i, (size_t)n); i += (size_t)n; }
    }
    bytes->len = 0;
}

/* One non-byte piece (SentencePiece's DecodeSentencePiece). Returns whether it
 * consumed the dummy-prefix "▁". */
static bool decode_piece(const Tokenizer *t, int id, bool is_bos_ws, Buf *out) {
    if (t->type[id] == PIECE_CONTROL) return false;
    if (t->type[id] == PIECE_UNKNOWN) { buf_append(out, t->unk_surface, strlen(t->unk_surface)); return false; }
    const char *s = t->surface[id];
    size_t len = (size_t)t->surface_len[id];
    bool consumed = false;
    if (is_bos_ws && strips_dummy_prefix(t) && memcmp(t->piece[id], SPACE_SYMBOL, SPACE_SYMBOL_LEN) == 0) {
        s++;
        len--;
        /* With remove_extra_whitespaces every leading space is dropped, so keep looking. */
        consumed = !t->remove_extra_whitespaces;
    }
    buf_append(out, s, len);
    return consumed;
}

char *tokenizer_decode_len(const Tokenizer *t, const int *ids, int n_ids, size_t *len_out, Err *err) {
    Buf out = {0}, bytes = {0};
    buf_append(&out, "", 0);
    /* The dummy prefix is stripped from the first piece that starts with "▁",
     * provided nothing visible came before it and no "▁" was stripped yet. */
    bool is_bos_ws = true, bos_ws_seen = false;
    for (int i = 0; i < n_ids; i++) {
        int id = ids[i];
        if (id < 0 || id >= t->n_vocab) {
            free(out.data); free(bytes.data);
            err_set(err, "token id %d at position %d is outside the tokenizer's vocabulary [0, %d)",
                    id, i, t->n_vocab);
            return NULL;
        }
        if (t->type[id] == PIECE_BYTE) {
            char c = (char)byte_piece_value(t->piece[id], t->piece_len[id]);
            buf_append(&bytes, &c, 1);
            continue;
        }
        flush_bytes(&out, &bytes);
        if (bos_ws_seen || out.len > 0) is_bos_ws = false;
        bos_ws_seen = decode_piece(t, id, is_bos_ws, &out);
    }
    flush_bytes(&out, &bytes);
    free(bytes.data);
    if (len_out) *len_out = out.len;
    return out.data;
}

char *tokenizer_decode(const Tokenizer *t, const int *ids, int n_ids, Err *err) {
    return tokenizer_decode_len(t, ids, n_ids, NULL, err);
}
