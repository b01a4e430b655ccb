/* policy_line.h — the policy of a command line in tests: "--policy l2 --budget 4 ..."
 * parsed by the same policy_option the subcommands use, so a test states a
 * policy exactly as a user would type it. */
#ifndef KVLAB_TEST_POLICY_LINE_H
#define KVLAB_TEST_POLICY_LINE_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "policy/policy.h"

/* The options of `line`, unresolved (policy_resolve / policy_cli_finish not run);
 * an option policy_option does not take ends the test binary. */
static inline void policy_opts_from_line(const char *line, PolicyOpts *o) {
    policy_defaults(o);
    char buf[512], *argv[64];
    int argc = 0;
    snprintf(buf, sizeof buf, "x %s", line);
    for (char *t = strtok(buf, " "); t && argc < 64; t = strtok(NULL, " ")) argv[argc++] = t;
    for (int i = 1; i < argc; i++)
        if (!policy_option(o, argc, argv, &i)) { fprintf(stderr, "bad test option %s\n", argv[i]); exit(1); }
}

/* The policy of `line` for a model of shape cfg and a cache of max_tokens;
 * a refused line ends the test binary with the message. */
static inline Policy *policy_from_line(const char *line, const Config *cfg, int max_tokens) {
    PolicyOpts o;
    policy_opts_from_line(line, &o);
    policy_cli_finish(&o);
    Err err;
    Policy *p = policy_create(&o, cfg, max_tokens, &err);
    if (!p) { fprintf(stderr, "%s: %s\n", line, err.msg); exit(1); }
    return p;
}

#endif
