/* harness_util: what the libFuzzer harnesses (fuzz/fuzz_*.c) share.
 *
 * - Scratch files: the parsers under test open paths, so a harness writes its
 *   input into a private scratch folder and opens that.
 * - Several files in one input: parts separated by MP_FUZZ_SEP (an index and
 *   its shards, the parts of a split GGUF, tokenizer.json and its config).
 * - Exact-size mappings: the executables are linked with
 *   -Wl,--wrap=mmap,--wrap=munmap, and the wrappers below turn every
 *   read-only file mapping into a heap copy of exactly the file's size, so
 *   that AddressSanitizer sees a read even one byte past the end of a file
 *   (in a real mapping such a read lands in the zero-filled rest of the last
 *   page and goes unnoticed).
 * - The error contract: a refused input must give MP_ERR_INPUT and a message.
 *
 * Every harness defines LLVMFuzzerTestOneInput; harness_replay.c runs the
 * same function over stored inputs (corpus, regression cases) without
 * libFuzzer, which is how ctest replays them in every build. */
#ifndef MP_HARNESS_UTIL_H
#define MP_HARNESS_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "mp_error.h"

#define MP_FUZZ_SEP "MPFZPART"
#define MP_FUZZ_SEP_LEN 8
#define MP_FUZZ_MAX_PARTS 8

typedef struct mp_fuzz_part {
    const uint8_t *data;
    size_t len;
} mp_fuzz_part;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Splits data at each MP_FUZZ_SEP into at most `max` parts (the last part
 * keeps any further separators). Returns the number of parts (>= 1). */
size_t mp_fuzz_split(const uint8_t *data, size_t size, mp_fuzz_part *parts, size_t max);

/* The harness's scratch folder, created on first use and emptied by
 * mp_fuzz_clear (under $TMPDIR, else /dev/shm, else /tmp). */
const char *mp_fuzz_dir(void);
void mp_fuzz_clear(void);
/* Writes `name` in the scratch folder; returns its path (static storage,
 * valid until the next call). Aborts when the write fails: that is the
 * machine's problem, not a finding. */
const char *mp_fuzz_write(const char *name, const void *data, size_t len);

/* The fixtures folder ($MOEPACK_FIXTURES, else the one configured at build
 * time); exits with 77 ("skipped") when it is absent. */
const char *mp_fuzz_fixtures(void);

/* Aborts (a finding) unless a failed call kept the error contract: code
 * MP_ERR_INPUT (or `allowed_code`) and a non-empty message. With
 * MOEPACK_FUZZ_VERBOSE set in the environment, prints the message (to see
 * where seeds stop). */
void mp_fuzz_check_error(int rc, const mp_error *err, int allowed_code);

/* A refused open or load (rc != MP_OK): mp_fuzz_check_error with
 * MP_ERR_INPUT, and aborts when it still handed out an object (`made`, the
 * out-pointer's value; `what` names it in the message). */
void mp_fuzz_check_refused(int rc, const mp_error *err, const void *made, const char *what);

/* Aborts with a message: a broken invariant the harness checks. */
_Noreturn void mp_fuzz_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Reads every byte of [p, p + n) so that a view the parser handed out is
 * proven to lie inside its buffer (returns a value the caller must use). */
uint64_t mp_fuzz_touch(const void *p, size_t n);

#endif
