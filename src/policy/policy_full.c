/* policy_full.c — `full`: no eviction. The reference every metric compares
 * against (../shared/spec/methods.md §4.7). It still runs through the framework, so a run with
 * `--policy full --positions shifted` exercises the shifted positions alone. */
#include "policy/policy.h"

static const PolicyParam params[] = { {0} };

const PolicyDef policy_full = {
    .name = "full",
    .rule = "no eviction: the reference",
    .params = params,
    .flags = POLICY_OWN_BUDGET | POLICY_NEVER_EVICTS,
};
