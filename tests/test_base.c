/* test_base.c — the small shared pieces of src/base/ that every layer uses:
 * splitmix64 (every seeded choice in kvlab; a changed output would change
 * every random policy, passkey key and synthetic checkpoint), the growable
 * buffer and the running mean / standard deviation. */
#include <stdint.h>

#include "check.h"
#include "base/buf.h"
#include "base/runstat.h"
#include "base/splitmix64.h"

static void splitmix64_cases(void) {
    CASE("splitmix64: the reference stream from state 0 (Vigna's splitmix64.c)") {
        uint64_t s = 0;
        const uint64_t want[3] = { 0xe220a8397b1dcdafull, 0x6e789e6aa1b965f4ull, 0x06c45d188009454full };
        for (int k = 0; k < 3; k++) {
            uint64_t x = splitmix64_next(&s);
            CHECK(x == want[k], "output %d: %016llx", k, (unsigned long long)x);
        }
        CHECK(s == 3 * SPLITMIX64_GAMMA, "the state is a counter");
    }
    CASE("splitmix64: random access and the hash are the same stream") {
        uint64_t s = 12345, ok = 1;
        for (uint64_t k = 0; k < 100; k++) ok &= splitmix64_next(&s) == splitmix64_at(12345, k);
        CHECK(ok, "splitmix64_at(seed, k) == the k-th output of the stream");
        CHECK(splitmix64(77) == splitmix64_at(77, 0), "splitmix64(x) == splitmix64_at(x, 0)");
        s = 0;
        double u = splitmix64_unit(&s);
        CHECK(u == (double)(0xe220a8397b1dcdafull >> 11) * 0x1.0p-53 && u >= 0 && u < 1, "unit: top 53 bits, %.17g", u);
    }
}

static void buf_cases(void) {
    CASE("buf: appends and printf grow it; always NUL-terminated, even when empty") {
        Buf b = { 0 };
        buf_append(&b, NULL, 0);
        CHECK(b.data && b.len == 0 && b.data[0] == '\0', "an empty append allocates an empty string");
        for (int i = 0; i < 1000; i++) buf_printf(&b, "%d,", i % 10);
        buf_append(&b, "end", 3);
        CHECK(b.len == 2003 && b.cap > b.len && b.data[b.len] == '\0', "len %zu cap %zu", b.len, b.cap);
        CHECK(!strncmp(b.data, "0,1,2,", 6) && !strcmp(b.data + 1990, "5,6,7,8,9,end"), "contents in order");
        b.len = 0;
        buf_append(&b, "\0x", 2);
        CHECK(b.len == 2 && b.data[0] == '\0' && b.data[1] == 'x' && b.data[2] == '\0', "bytes, NUL included, after a reset");
        buf_free(&b);
        CHECK(!b.data && !b.len && !b.cap, "freed back to {0}");
    }
}

static void runstat_cases(void) {
    CASE("runstat: Welford's mean and sample std equal the two-pass formulas; NaN is skipped") {
        RunStat s = { 0 };
        CHECK(isnan(runstat_mean(&s)) && isnan(runstat_std(&s)), "empty: NaN");
        double x[5] = { 1e9 + 1, 1e9 + 4, 1e9 + 7, 1e9 + 13, 1e9 + 25 }, sum = 0, ss = 0;
        for (int i = 0; i < 5; i++) { runstat_add(&s, x[i]); runstat_add(&s, NAN); sum += x[i]; }
        double mean = sum / 5;
        for (int i = 0; i < 5; i++) ss += (x[i] - mean) * (x[i] - mean);
        CHECK(s.n == 5, "n %lld", (long long)s.n);
        CHECK_CLOSE(runstat_mean(&s), mean, 1e-6, "mean");
        CHECK_CLOSE(runstat_std(&s), sqrt(ss / 4), 1e-6, "std");
        RunStat one = { 0 };
        runstat_add(&one, 3.0);
        CHECK(runstat_mean(&one) == 3.0 && isnan(runstat_std(&one)), "one value: its mean, no std");
    }
}

int main(void) {
    splitmix64_cases();
    buf_cases();
    runstat_cases();
    return check_summary();
}
