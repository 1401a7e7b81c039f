/* Opening a tokenizer from a SRC argument, shared by the commands that take one. */
#ifndef MP_CLI_TOK_SOURCE_H
#define MP_CLI_TOK_SOURCE_H

#include "mp_error.h"
#include "tokenizer.h"

/* SRC is a model directory or a tokenizer file; see tok_source.c for the kinds recognised. */
int mp_cli_open_tokenizer(const char *src, mp_tokenizer **out, mp_error *err);

#endif
