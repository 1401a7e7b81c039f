/* harness_util: see harness_util.h. Harness-side code only: nothing here is linked
 * into moepack itself. */
#include "harness_util.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MP_FUZZ_FIXTURES
#define MP_FUZZ_FIXTURES ""
#endif

_Noreturn void mp_fuzz_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("moepack fuzz: invariant broken: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    abort();
}

void mp_fuzz_check_refused(int rc, const mp_error *err, const void *made, const char *what)
{
    mp_fuzz_check_error(rc, err, MP_ERR_INPUT);
    if (made)
        mp_fuzz_fail("a failed call returned %s", what);
}

void mp_fuzz_check_error(int rc, const mp_error *err, int allowed_code)
{
    static int verbose = -1;
    if (verbose < 0)
        verbose = getenv("MOEPACK_FUZZ_VERBOSE") != NULL;
    if (verbose)
        fprintf(stderr, "refused (%d): %s\n", rc, err->msg);
    if (rc != MP_ERR_INPUT && rc != allowed_code)
        mp_fuzz_fail("failed with code %d (expected %d): %s", rc, MP_ERR_INPUT, err->msg);
    if (err->code != rc || err->msg[0] == '\0')
        mp_fuzz_fail("failed with code %d but the error says code %d, message '%s'", rc, err->code, err->msg);
}

uint64_t mp_fuzz_touch(const void *p, size_t n)
{
    const volatile uint8_t *b = p;
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += b[i];
    return sum;
}

size_t mp_fuzz_split(const uint8_t *data, size_t size, mp_fuzz_part *parts, size_t max)
{
    size_t n = 0, start = 0;
    for (size_t i = 0; n + 1 < max && i + MP_FUZZ_SEP_LEN <= size;) {
        if (memcmp(data + i, MP_FUZZ_SEP, MP_FUZZ_SEP_LEN) == 0) {
            parts[n++] = (mp_fuzz_part){data + start, i - start};
            i += MP_FUZZ_SEP_LEN;
            start = i;
        } else {
            i++;
        }
    }
    parts[n++] = (mp_fuzz_part){size ? data + start : data, size - start};
    return n;
}

/* ---- scratch folder ----------------------------------------------------- */

static char scratch[4096];

static void remove_entries(void)
{
    DIR *d = opendir(scratch);
    if (!d)
        return;
    struct dirent *de;
    char path[8192];
    while ((de = readdir(d)) != NULL) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
            continue;
        snprintf(path, sizeof path, "%s/%s", scratch, de->d_name);
        if (unlink(path) != 0 && errno == EISDIR)
            rmdir(path);
    }
    closedir(d);
}

static void remove_scratch(void)
{
    remove_entries();
    rmdir(scratch);
}

const char *mp_fuzz_dir(void)
{
    if (scratch[0])
        return scratch;
    const char *base = getenv("TMPDIR");
    if (!base || !base[0])
        base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(scratch, sizeof scratch, "%s/moepack-fuzz-XXXXXX", base);
    if (!mkdtemp(scratch)) {
        fprintf(stderr, "moepack fuzz: cannot create a scratch folder under %s: %s\n", base, strerror(errno));
        exit(1);
    }
    atexit(remove_scratch);
    return scratch;
}

void mp_fuzz_clear(void)
{
    if (scratch[0])
        remove_entries();
}

const char *mp_fuzz_write(const char *name, const void *data, size_t len)
{
    static char path[8192];
    snprintf(path, sizeof path, "%s/%s", mp_fuzz_dir(), name);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    const uint8_t *p = data;
    size_t done = 0;
    while (fd >= 0 && done < len) {
        ssize_t w = write(fd, p + done, len - done);
        if (w <= 0)
            break;
        done += (size_t)w;
    }
    if (fd < 0 || done != len || close(fd) != 0) {
        fprintf(stderr, "moepack fuzz: cannot write %s: %s\n", path, strerror(errno));
        exit(1);
    }
    return path;
}

const char *mp_fuzz_fixtures(void)
{
    const char *f = getenv("MOEPACK_FIXTURES");
    if (!f || !f[0])
        f = MP_FUZZ_FIXTURES;
    struct stat st;
    if (!f[0] || stat(f, &st) != 0 || !S_ISDIR(st.st_mode)) {
        fprintf(stderr, "SKIP: this harness needs the fixtures (MOEPACK_FIXTURES=%s)\n", f);
        exit(77);
    }
    return f;
}

/* ---- exact-size mappings (-Wl,--wrap=mmap,--wrap=munmap) ------------------ */

void *__real_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int __real_munmap(void *addr, size_t len);
void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off);
int __wrap_munmap(void *addr, size_t len);

#define MAX_COPIES 256
static struct {
    void *p;
    size_t len;
} copies[MAX_COPIES];
static pthread_mutex_t copies_lock = PTHREAD_MUTEX_INITIALIZER;

/* A whole regular file mapped read-only becomes a heap copy of its exact
 * size; anything else is a real mapping. */
void *__wrap_mmap(void *addr, size_t len, int prot, int flags, int fd, off_t off)
{
    struct stat st;
    if (addr || prot != PROT_READ || fd < 0 || off != 0 || len == 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) ||
        (uint64_t)st.st_size != len)
        return __real_mmap(addr, len, prot, flags, fd, off);
    uint8_t *p = malloc(len);
    if (!p) {
        errno = ENOMEM;
        return MAP_FAILED;
    }
    size_t done = 0;
    while (done < len) {
        ssize_t r = pread(fd, p + done, len - done, (off_t)done);
        if (r <= 0) {
            free(p);
            errno = r < 0 ? errno : EIO;
            return MAP_FAILED;
        }
        done += (size_t)r;
    }
    pthread_mutex_lock(&copies_lock);
    size_t i = 0;
    while (i < MAX_COPIES && copies[i].p)
        i++;
    if (i < MAX_COPIES)
        copies[i].p = p, copies[i].len = len;
    pthread_mutex_unlock(&copies_lock);
    if (i == MAX_COPIES) { /* more files open at once than expected: map for real */
        free(p);
        return __real_mmap(addr, len, prot, flags, fd, off);
    }
    return p;
}

int __wrap_munmap(void *addr, size_t len)
{
    pthread_mutex_lock(&copies_lock);
    for (size_t i = 0; i < MAX_COPIES; i++) {
        if (copies[i].p == addr) {
            if (copies[i].len != len) {
                pthread_mutex_unlock(&copies_lock);
                mp_fuzz_fail("munmap of %zu bytes of a %zu-byte mapping", len, copies[i].len);
            }
            copies[i].p = NULL;
            pthread_mutex_unlock(&copies_lock);
            free(addr);
            return 0;
        }
    }
    pthread_mutex_unlock(&copies_lock);
    return __real_munmap(addr, len);
}
