/* SRC dispatch for tokenizer commands: one branch per kind of source. To add a kind (GGUF file,
 * moepack container), add a branch that recognises it and builds the tokenizer. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "container.h"
#include "container_tokenizer.h"
#include "convert_tokenizer.h"
#include "gguf.h"
#include "mp_file.h"
#include "tok_source.h"

static bool has_suffix(const char *s, const char *suffix)
{
    size_t ls = strlen(s), lx = strlen(suffix);
    return ls >= lx && strcmp(s + ls - lx, suffix) == 0;
}

int mp_cli_open_tokenizer(const char *src, mp_tokenizer **out, mp_error *err)
{
    *out = NULL;
    if (mp_is_directory(src)) {
        /* a Hugging Face model directory */
        char *tj = mp_path_join(src, "tokenizer.json");
        bool hf = tj && mp_file_exists(tj);
        int rc = hf ? mp_tokenizer_load_hf(tj, out, err)
                    : mp_fail(err, MP_ERR_INPUT, src, NULL, "no tokenizer.json in this directory");
        free(tj);
        return rc;
    }
    if (!mp_file_exists(src))
        return mp_fail(err, MP_ERR_INPUT, src, NULL, "no such file or directory");
    char magic[4] = {0};
    size_t got = mp_read_prefix(src, magic, sizeof magic);
    if (got == 4 && memcmp(magic, "GGUF", 4) == 0) {
        mp_gguf g;
        int rc = mp_gguf_open(src, &g, err);
        if (rc)
            return rc;
        rc = mp_tokenizer_load_gguf(&g, out, err);
        mp_gguf_close(&g);
        return rc;
    }
    if (got == 4 && memcmp(magic, "MOEP", 4) == 0) {
        mp_container *c;
        int rc = mp_container_open(src, &c, err);
        if (rc)
            return rc;
        rc = mp_container_load_tokenizer(c, out, err);
        mp_container_close(c);
        return rc;
    }
    if (has_suffix(src, ".json"))
        return mp_tokenizer_load_hf(src, out, err);
    return mp_fail(err, MP_ERR_INPUT, src, NULL,
                   "not a tokenizer source (expected a model directory, a tokenizer.json, a GGUF or a .moepack container)");
}
