/* check.h — the test harness: named cases, assertions that count, one summary.
 *
 *   int main(void) {
 *       CASE("rmsnorm of ones") { ... CHECK(x == 1.0f, "x=%g", x); ... }
 *       return check_summary();
 *   }
 * Each CASE passes when none of its CHECKs failed. The binary prints
 * "RESULT <file> passed=N failed=M" last; tests/run.sh adds these up. */
#ifndef KVLAB_CHECK_H
#define KVLAB_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_cases_passed, check_cases_failed, check_case_failed;
static const char *check_case_name;
static char check_case_buf[512];   /* a copy: callers may pass a buffer they reuse */

static inline void check_end_case(void) {
    if (!check_case_name) return;
    if (check_case_failed) { check_cases_failed++; printf("FAIL  %s\n", check_case_name); }
    else { check_cases_passed++; printf("ok    %s\n", check_case_name); }
    fflush(stdout);
    check_case_name = NULL;
}

static inline int check_begin_case(const char *name) {
    check_end_case();
    snprintf(check_case_buf, sizeof check_case_buf, "%s", name);
    check_case_name = check_case_buf;
    check_case_failed = 0;
    return 1;
}

/* CASE("name") { body }  — a named test case. */
#define CASE(name) if (check_begin_case(name))

#define CHECK(cond, ...) do { \
    if (!(cond)) { \
        check_case_failed = 1; \
        fprintf(stderr, "  %s:%d: check failed: %s: ", __FILE__, __LINE__, #cond); \
        fprintf(stderr, __VA_ARGS__); fputc('\n', stderr); \
    } } while (0)

/* |a - b| <= tol (NaN fails). */
#define CHECK_CLOSE(a, b, tol, what) do { \
    double check_a_ = (double)(a), check_b_ = (double)(b); \
    CHECK(fabs(check_a_ - check_b_) <= (tol), "%s: %.9g vs %.9g (|diff| %.3g > %.3g)", \
          (what), check_a_, check_b_, fabs(check_a_ - check_b_), (double)(tol)); \
} while (0)

static inline int check_summary_named(const char *file) {
    check_end_case();
    const char *base = strrchr(file, '/');
    printf("RESULT %s passed=%d failed=%d\n", base ? base + 1 : file, check_cases_passed, check_cases_failed);
    return check_cases_failed ? 1 : 0;
}
#define check_summary() check_summary_named(__FILE__)

/* Where ../shared is (tests run from the repository root). */
static inline const char *shared_dir(void) {
    const char *s = getenv("KVLAB_SHARED");
    return s && *s ? s : "../shared";
}
static inline const char *shared_path(char *buf, size_t size, const char *rel) {
    snprintf(buf, size, "%s/%s", shared_dir(), rel);
    return buf;
}

#endif
