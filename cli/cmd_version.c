/* `moepack version` (also `moepack --version`): the version and the build's features. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "mp_version.h"

static void version_usage(FILE *out)
{
    fprintf(out, "usage: moepack version\n"
                 "\n"
                 "Prints the version and whether this build has the CUDA back end. Takes no options.\n");
}

int mp_cmd_version(int argc, char **argv)
{
    if (argc > 1) {
        const char *a = argv[1];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            version_usage(stdout);
            return MP_OK;
        }
        if (a[0] == '-' && a[1])
            return mp_cli_usage_error("version", "unknown option '%s'", a);
        return mp_cli_usage_error("version", "unexpected argument '%s'", a);
    }
    printf("moepack %s\n", MP_VERSION_STRING);
    printf("cuda: %s\n", MP_HAVE_CUDA ? "built" : "not built");
    return MP_OK;
}
