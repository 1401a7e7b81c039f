/* fuzz_tok_blob: mp_tokenizer_deserialize, the tokenizer blob a container
 * stores (docs/TOKENIZER.md).
 *
 * Input: a blob. Its trailing XXH3-64 checksum would stop nearly every
 * mutation, so the harness recomputes it on a copy of every even-length
 * input; odd-length inputs are taken as they are, so that the mismatch path
 * stays reachable (a valid blob can have either parity). A tokenizer that
 * loads is checked by mp_fuzz_check_tokenizer. */
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "harness_tok.h"
#include "harness_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *copy = malloc(size ? size : 1);
    if (!copy)
        return 0;
    memcpy(copy, data, size);
    if (size >= 8 && size % 2 == 0) {
        uint64_t sum = XXH3_64bits(copy, size - 8);
        for (int i = 0; i < 8; i++)
            copy[size - 8 + i] = (uint8_t)(sum >> (8 * i));
    }
    mp_tokenizer *tok = NULL;
    mp_error err = {0};
    int rc = mp_tokenizer_deserialize(copy, size, "fuzz blob", &tok, &err);
    free(copy);
    mp_fuzz_check_tokenizer_load(rc, &err, tok);
    return 0;
}
