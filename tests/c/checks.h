/*
 * The check counting shared by the C test programs that report "all N
 * checks passed" (tests/common/mod.rs's run_checks reads that line).
 */
#ifndef ANYFORK_TEST_CHECKS_H
#define ANYFORK_TEST_CHECKS_H

#include <stdio.h>

static int failures, checks;

/* Counts a check; a failed one is printed on stderr with its place. */
#define CHECK(cond, ...)                                         \
    do {                                                         \
        checks++;                                                \
        if (!(cond)) {                                           \
            failures++;                                          \
            fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); \
            fprintf(stderr, __VA_ARGS__);                        \
            fprintf(stderr, "\n");                               \
        }                                                        \
    } while (0)

/* The program's exit status: 0 when every check passed (said on stdout),
 * else 1 (the count said on stderr). */
static inline int checks_done(void)
{
    if (failures) {
        fprintf(stderr, "%d of %d checks failed\n", failures, checks);
        return 1;
    }
    printf("all %d checks passed\n", checks);
    return 0;
}

#endif
