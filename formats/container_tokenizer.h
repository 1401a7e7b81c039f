#ifndef MP_CONTAINER_TOKENIZER_H
#define MP_CONTAINER_TOKENIZER_H

#include "container.h"
#include "tokenizer.h"

/* Decompresses and rebuilds the container's tokenizer. */
int mp_container_load_tokenizer(const mp_container *c, mp_tokenizer **out, mp_error *err);

#endif
