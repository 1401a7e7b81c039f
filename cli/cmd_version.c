#include <stdio.h>

#include "cli.h"
#include "mp_version.h"

int mp_cmd_version(int argc, char **argv)
{
    (void)argc;
    (void)argv;
    printf("moepack %s\n", MP_VERSION_STRING);
    printf("cuda: %s\n", MP_HAVE_CUDA ? "built" : "not built");
    return MP_OK;
}
