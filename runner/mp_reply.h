/* mp_reply: streams a generated reply to a FILE token by token (`moepack run`
 * and `chat`), with R1-style reasoning, <think> ... </think>, shown apart from
 * the answer: dim on a terminal (SGR 2, reset by SGR 0), between "[thinking]"
 * and "[/thinking]" markers otherwise. The reasoning tokens themselves are not
 * printed; the text kept for the chat history has them, as the model wrote it,
 * whatever their token type (MP_TOK_DECODE_SKIP_SPECIAL keeps them), so that
 * the next prompt's template can drop the reasoning. Other special tokens
 * (EOS) print nothing and are not kept.
 *
 * A block opens when the <think> token is generated, or at the start when the
 * prompt already opened it (mp_chat_prompt_opens_think: R1's prompt ends with
 * "<think>\n"), and closes at the </think> token. A tokenizer without both
 * tokens never shows a block. A reply cut off inside a block ends with the
 * terminal's attributes reset, or with "[/thinking]", so the markers pair.
 *
 * The printer writes only to the FILE it is given (the command's output). */
#ifndef MP_REPLY_H
#define MP_REPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "mp_error.h"
#include "tokenizer.h"

typedef struct mp_reply_printer {
    mp_detok dt;
    FILE *out;
    bool tty;      /* escape codes instead of markers */
    bool in_think; /* inside a reasoning block */
    int32_t think_open, think_close; /* the <think> / </think> ids, -1 when absent */
    char *text;    /* everything generated (NUL-terminated; NULL before the first text) */
    size_t len, cap;
    bool failed;   /* a token could not be decoded or kept: err says why */
    mp_error err;
} mp_reply_printer;

/* Starts a reply. start_in_think: the prompt opened a reasoning block (ignored
 * when the tokenizer lacks the think tokens); its opening is shown at once. */
void mp_reply_printer_init(mp_reply_printer *p, const mp_tokenizer *tok, FILE *out, bool tty, bool start_in_think);
/* One generated token (an mp_token_fn: `printer` is the mp_reply_printer).
 * Returns false, with p->failed and p->err set, when the token cannot be
 * decoded or the text not kept (out of memory): generation should stop. */
bool mp_reply_printer_token(int32_t id, void *printer);
/* Prints what the detokenizer still holds, resets the terminal's attributes
 * if a block is open, and ends the line (p->failed is set if the held text
 * could not be kept). */
void mp_reply_printer_finish(mp_reply_printer *p);
void mp_reply_printer_free(mp_reply_printer *p);

#endif
