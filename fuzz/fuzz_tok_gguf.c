/* fuzz_tok_gguf: the tokenizer of a GGUF file (tokenizer.ggml.* keys), read by
 * mp_tokenizer_load_gguf (convert/convert_tokenizer.h).
 *
 * Input: a GGUF file (the seeds are vocabulary-only files). A tokenizer that
 * loads is checked by mp_fuzz_check_tokenizer. */
#include "convert_tokenizer.h"
#include "harness_tok.h"
#include "harness_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    mp_fuzz_clear();
    const char *path = mp_fuzz_write("vocab.gguf", data, size);
    mp_gguf g;
    mp_error err = {0};
    int rc = mp_gguf_open(path, &g, &err);
    if (rc) {
        mp_fuzz_check_error(rc, &err, MP_ERR_INPUT);
        return 0;
    }
    mp_tokenizer *tok = NULL;
    rc = mp_tokenizer_load_gguf(&g, &tok, &err);
    mp_fuzz_check_tokenizer_load(rc, &err, tok);
    mp_gguf_close(&g);
    return 0;
}
