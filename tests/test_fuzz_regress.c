/* test_fuzz_regress.c — replays every fuzz target (tests/fuzz/fuzz_*.c) on the
 * inputs committed under tests/fuzz/regress/TARGET/ (crashes the fuzzers found,
 * minimised, and hand-made edge cases), plus a few fixed inputs, with gcc: in
 * `make test` and, under ASan + UBSan, in `make test-asan`. A target "passes"
 * an input when it returns; the targets abort() on a broken invariant, and
 * the sanitizers turn memory errors and UB into a failing exit. Run from the
 * repository root (tests/run.sh does). */
#include <dirent.h>

#include "check.h"
#include "fuzz/fuzz_util.h"

/* Each target defines LLVMFuzzerTestOneInput: include each under its own name. */
#define LLVMFuzzerTestOneInput fuzz_one_safetensors
#include "fuzz/fuzz_safetensors.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_one_st_index
#include "fuzz/fuzz_st_index.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_one_config
#include "fuzz/fuzz_config.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_one_llama2c
#include "fuzz/fuzz_llama2c.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_one_gguf
#include "fuzz/fuzz_gguf.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_one_tok_model
#include "fuzz/fuzz_tok_model.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_one_tok_bin
#include "fuzz/fuzz_tok_bin.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_one_policy
#include "fuzz/fuzz_policy.c"
#undef LLVMFuzzerTestOneInput
#define LLVMFuzzerTestOneInput fuzz_one_npz
#include "fuzz/fuzz_npz.c"
#undef LLVMFuzzerTestOneInput

typedef int (*FuzzFn)(const uint8_t *, size_t);
static const struct { const char *name; FuzzFn fn; } targets[] = {
    { "safetensors", fuzz_one_safetensors }, { "st_index", fuzz_one_st_index },
    { "config", fuzz_one_config },           { "llama2c", fuzz_one_llama2c },
    { "gguf", fuzz_one_gguf },               { "tok_model", fuzz_one_tok_model },
    { "tok_bin", fuzz_one_tok_bin },         { "policy", fuzz_one_policy },
    { "npz", fuzz_one_npz },
};

/* Inputs every target must survive. */
static void run_fixed(FuzzFn fn) {
    static const uint8_t zeros[64];
    uint8_t ones[64];
    memset(ones, 0xFF, sizeof ones);
    fn(zeros, 0);
    fn((const uint8_t *)"\x0A", 1);
    fn(zeros, sizeof zeros);
    fn(ones, sizeof ones);
    fn((const uint8_t *)"{}", 2);
    fn((const uint8_t *)"GGUF\x03\x00\x00\x00", 8);
}

/* Every file in tests/fuzz/regress/NAME/; returns how many ran. */
static int run_dir(const char *name, FuzzFn fn) {
    char dir[512];
    snprintf(dir, sizeof dir, "tests/fuzz/regress/%s", name);
    DIR *d = opendir(dir);
    if (!d) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
        char *data;
        size_t size;
        Err err;
        if (read_file(path, &data, &size, &err) != 0) { CHECK(0, "%s", err.msg); continue; }
        fn((const uint8_t *)data, size);
        free(data);
        n++;
    }
    closedir(d);
    return n;
}

int main(void) {
    CASE("the regression inputs are there (run from the repository root)") {
        DIR *d = opendir("tests/fuzz/regress");
        CHECK(d != NULL, "tests/fuzz/regress: cannot open");
        if (d) closedir(d);
    }
    for (size_t i = 0; i < sizeof targets / sizeof targets[0]; i++) {
        char name[128];
        snprintf(name, sizeof name, "fuzz_%s: fixed inputs and tests/fuzz/regress/%s", targets[i].name, targets[i].name);
        CASE(name) {
            run_fixed(targets[i].fn);
            int n = run_dir(targets[i].name, targets[i].fn);
            printf("      %s: %d regression inputs\n", targets[i].name, n);
        }
    }
    return check_summary();
}
