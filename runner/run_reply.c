/* run_reply: a reply streamed to a FILE, reasoning shown apart (mp_reply.h). */
#include "mp_reply.h"

#include <stdlib.h>
#include <string.h>

#define SGR_DIM "\x1b[2m"
#define SGR_RESET "\x1b[0m"

void mp_reply_printer_init(mp_reply_printer *p, const mp_tokenizer *tok, FILE *out, bool tty, bool start_in_think)
{
    memset(p, 0, sizeof *p);
    mp_detok_init(&p->dt, tok, MP_TOK_DECODE_SKIP_SPECIAL);
    p->out = out;
    p->tty = tty;
    p->think_open = mp_tokenizer_find(tok, "<think>", 7);
    p->think_close = mp_tokenizer_find(tok, "</think>", 8);
    if (p->think_open < 0 || p->think_close < 0) /* a block no token could close is never shown */
        p->think_open = p->think_close = -1;
    p->in_think = start_in_think && p->think_close >= 0;
    /* the prompt's "<think>\n" took the newline the model writes after <think> */
    if (p->in_think)
        fputs(tty ? SGR_DIM : "[thinking]\n", out);
}

static bool keep_text(mp_reply_printer *p, const char *s, size_t n)
{
    if (p->len + n + 1 > p->cap) {
        size_t cap = (p->cap ? p->cap * 2 : 1024) + n;
        char *t = realloc(p->text, cap);
        if (!t) {
            mp_fail(&p->err, MP_ERR_INPUT, NULL, NULL, "out of memory keeping the reply's text");
            return false;
        }
        p->text = t;
        p->cap = cap;
    }
    memcpy(p->text + p->len, s, n);
    p->len += n;
    p->text[p->len] = 0;
    return true;
}

bool mp_reply_printer_token(int32_t id, void *printer)
{
    mp_reply_printer *p = printer;
    const char *s;
    size_t n;
    if (mp_detok_push(&p->dt, id, &s, &n, &p->err) || !keep_text(p, s, n)) {
        p->failed = true;
        return false;
    }
    if (p->think_open >= 0 && id == p->think_open && !p->in_think) {
        p->in_think = true;
        fputs(p->tty ? SGR_DIM : "[thinking]", p->out);
    } else if (p->think_close >= 0 && id == p->think_close && p->in_think) {
        p->in_think = false;
        fputs(p->tty ? SGR_RESET : "[/thinking]", p->out);
    } else {
        fwrite(s, 1, n, p->out);
    }
    fflush(p->out);
    return true;
}

void mp_reply_printer_finish(mp_reply_printer *p)
{
    const char *s;
    size_t n;
    if (mp_detok_flush(&p->dt, &s, &n, &p->err) == MP_OK) {
        p->failed |= !keep_text(p, s, n);
        fwrite(s, 1, n, p->out);
    }
    if (p->in_think) /* cut off while reasoning: the markers still pair */
        fputs(p->tty ? SGR_RESET : "[/thinking]", p->out);
    fputc('\n', p->out);
    fflush(p->out);
}

void mp_reply_printer_free(mp_reply_printer *p)
{
    mp_detok_free(&p->dt);
    free(p->text);
    p->text = NULL;
    p->len = p->cap = 0;
}
