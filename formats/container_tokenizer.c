/* The tokenizer stored in a container (zstd-compressed blob, docs/TOKENIZER.md). */
#include <stdlib.h>

#include "container.h"
#include "container_tokenizer.h"

int mp_container_load_tokenizer(const mp_container *c, mp_tokenizer **out, mp_error *err)
{
    uint8_t *blob;
    size_t len;
    int rc = mp_container_tokenizer_blob(c, &blob, &len, err);
    if (rc)
        return rc;
    rc = mp_tokenizer_deserialize(blob, len, c->file.path, out, err);
    free(blob);
    return rc;
}
