/* mp_error: explicit error reporting for every moepack module.
 *
 * Functions that can fail take an `mp_error *` and return an `int` status:
 * MP_OK (0) on success, otherwise one of the codes below, which double as the
 * process exit codes of the CLI. The message is formatted once, where the
 * problem is found, as "FILE: [TENSOR: ]problem"; the CLI prefixes "moepack: ".
 * There is no global error state: whoever calls owns the mp_error. */
#ifndef MP_ERROR_H
#define MP_ERROR_H

#include <stddef.h>

enum {
    MP_OK = 0,
    MP_ERR_USAGE = 1, /* bad command line */
    MP_ERR_INPUT = 2, /* bad input file, I/O error, out of memory or disk */
    MP_ERR_CHECK = 3, /* a check ran and failed (verify, compare thresholds) */
};

#define MP_ERROR_MSG_MAX 1024

typedef struct mp_error {
    int code;
    char msg[MP_ERROR_MSG_MAX];
} mp_error;

/* Sets *err (when err is non-NULL) and returns `code`. `file` and `tensor` may
 * be NULL. The formatted problem follows printf conventions. */
int mp_fail(mp_error *err, int code, const char *file, const char *tensor, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* Like mp_fail with MP_ERR_INPUT and strerror(errno_value) appended. */
int mp_fail_errno(mp_error *err, const char *file, int errno_value, const char *what);

/* Prefixes an existing message with "context: " (e.g. a tensor name found
 * only by the caller). Keeps the code. Returns err->code. */
int mp_error_prefix(mp_error *err, const char *context);

void mp_error_clear(mp_error *err);

#endif
