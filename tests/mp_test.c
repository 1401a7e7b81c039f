#include "mp_test.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int mp_test_failures;
int mp_test_checks;

const char *mp_test_fixtures(void)
{
    const char *f = getenv("MOEPACK_FIXTURES");
    struct stat st;
    if (!f || stat(f, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "SKIP: fixtures folder not found (MOEPACK_FIXTURES=%s)\n", f ? f : "(unset)");
        exit(MP_TEST_SKIP);
    }
    return f;
}

const char *mp_test_tmpdir(const char *test_name)
{
    static char path[4096];
    const char *base = getenv("MOEPACK_TEST_TMP");
    if (!base)
        base = "/tmp/moepack-test";
    snprintf(path, sizeof path, "%s/%s", base, test_name);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", path, path);
    if (system(cmd) != 0) {
        fprintf(stderr, "cannot create %s\n", path);
        exit(1);
    }
    return path;
}

const char *mp_test_path(const char *dir, const char *name)
{
    static char ring[8][4096];
    static int next;
    char *p = ring[next++ & 7];
    snprintf(p, 4096, "%s/%s", dir, name);
    return p;
}

int mp_test_finish(void)
{
    if (mp_test_failures) {
        fprintf(stderr, "%d of %d checks failed\n", mp_test_failures, mp_test_checks);
        return 1;
    }
    printf("all %d checks passed\n", mp_test_checks);
    return 0;
}
