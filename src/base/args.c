/* args.c — see args.h. */
#include "base/args.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "base/util.h"

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
