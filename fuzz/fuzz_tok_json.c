/* fuzz_tok_json: loading a Hugging Face tokenizer.json (+ tokenizer_config.json
 * and chat_template.jinja beside it) with mp_tokenizer_load_hf.
 *
 * Input: tokenizer.json, optionally followed by MP_FUZZ_SEP and
 * tokenizer_config.json, and by MP_FUZZ_SEP and chat_template.jinja. A
 * tokenizer that loads is checked by mp_fuzz_check_tokenizer (sample
 * encodes, decode, streaming, serialize round trip). */
#include "harness_tok.h"
#include "harness_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const names[] = {"tokenizer.json", "tokenizer_config.json", "chat_template.jinja"};
    mp_fuzz_part parts[3];
    size_t n = mp_fuzz_split(data, size, parts, 3);
    mp_fuzz_clear();
    for (size_t i = 0; i < n; i++)
        mp_fuzz_write(names[i], parts[i].data, parts[i].len);
    mp_tokenizer *tok = NULL;
    mp_error err = {0};
    int rc = mp_tokenizer_load_hf(mp_fuzz_dir(), &tok, &err);
    mp_fuzz_check_tokenizer_load(rc, &err, tok);
    return 0;
}
