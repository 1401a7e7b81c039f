#include "mp_error.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int mp_fail(mp_error *err, int code, const char *file, const char *tensor, const char *fmt, ...)
{
    if (!err)
        return code;
    err->code = code;
    size_t used = 0;
    int n = 0;
    if (file && *file)
        n = snprintf(err->msg, sizeof err->msg, "%s: ", file);
    if (n > 0)
        used = (size_t)n < sizeof err->msg ? (size_t)n : sizeof err->msg - 1;
    if (tensor && *tensor) {
        n = snprintf(err->msg + used, sizeof err->msg - used, "%s: ", tensor);
        if (n > 0)
            used += (size_t)n < sizeof err->msg - used ? (size_t)n : sizeof err->msg - used - 1;
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg + used, sizeof err->msg - used, fmt, ap);
    va_end(ap);
    return code;
}

int mp_fail_errno(mp_error *err, const char *file, int errno_value, const char *what)
{
    return mp_fail(err, MP_ERR_INPUT, file, NULL, "%s: %s", what, strerror(errno_value));
}

int mp_error_prefix(mp_error *err, const char *context)
{
    if (!err)
        return MP_ERR_INPUT;
    /* shift the message right and write "context: " in front; truncation of
     * the tail is acceptable for an error message */
    size_t lc = strlen(context), lm = strnlen(err->msg, sizeof err->msg - 1);
    if (lc + 2 >= sizeof err->msg)
        lc = sizeof err->msg - 3;
    size_t keep = lm;
    if (lc + 2 + keep >= sizeof err->msg)
        keep = sizeof err->msg - 1 - lc - 2;
    memmove(err->msg + lc + 2, err->msg, keep);
    memcpy(err->msg, context, lc);
    err->msg[lc] = ':';
    err->msg[lc + 1] = ' ';
    err->msg[lc + 2 + keep] = '\0';
    return err->code;
}

void mp_error_clear(mp_error *err)
{
    if (err) {
        err->code = MP_OK;
        err->msg[0] = '\0';
    }
}
