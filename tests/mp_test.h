/* mp_test: a minimal test harness. A test program calls CHECK* as often as it
 * likes; failures are counted and reported with file:line, and
 * mp_test_finish() turns them into the exit code ctest reads. */
#ifndef MP_TEST_H
#define MP_TEST_H

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

extern int mp_test_failures;
extern int mp_test_checks;

#define CHECK(cond)                                                                        \
    do {                                                                                   \
        mp_test_checks++;                                                                  \
        if (!(cond)) {                                                                     \
            mp_test_failures++;                                                            \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);       \
        }                                                                                  \
    } while (0)

#define CHECKF(cond, ...)                                                                  \
    do {                                                                                   \
        mp_test_checks++;                                                                  \
        if (!(cond)) {                                                                     \
            mp_test_failures++;                                                            \
            fprintf(stderr, "%s:%d: CHECK failed: %s: ", __FILE__, __LINE__, #cond);       \
            fprintf(stderr, __VA_ARGS__);                                                  \
            fputc('\n', stderr);                                                           \
        }                                                                                  \
    } while (0)

/* Stops the test at once (e.g. when later checks would crash). */
#define REQUIRE(cond)                                                                      \
    do {                                                                                   \
        mp_test_checks++;                                                                  \
        if (!(cond)) {                                                                     \
            fprintf(stderr, "%s:%d: REQUIRE failed: %s\n", __FILE__, __LINE__, #cond);     \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)

#define MP_TEST_SKIP 77

/* The fixtures folder ($MOEPACK_FIXTURES); exits with "skipped" when absent. */
const char *mp_test_fixtures(void);
/* A fresh, empty scratch directory for this test (under $MOEPACK_TEST_TMP). */
const char *mp_test_tmpdir(const char *test_name);
/* Joins two path parts into a static buffer ring (fine for tests). */
const char *mp_test_path(const char *dir, const char *name);
int mp_test_finish(void);

#endif
