#include "mp_file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

/* O_NONBLOCK makes the open of a FIFO (or a device) that has no writer
 * return at once, so the callers' regular-file checks refuse it instead of
 * the process hanging in open(); the flag is cleared again, as it means
 * nothing for a regular file (and a FIFO without a writer then reads as
 * empty). */
int mp_open_input(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd >= 0) {
        int flags = fcntl(fd, F_GETFL);
        if (flags >= 0)
            fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
    }
    return fd;
}

int mp_map_file(const char *path, mp_mapped_file *out, mp_error *err)
{
    memset(out, 0, sizeof *out);
    out->fd = -1;
    int fd = mp_open_input(path);
    if (fd < 0)
        return mp_fail_errno(err, path, errno, "cannot open");
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return mp_fail_errno(err, path, e, "cannot stat");
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return mp_fail(err, MP_ERR_INPUT, path, NULL, "not a regular file");
    }
    out->path = strdup(path);
    out->size = (uint64_t)st.st_size;
    out->fd = fd;
    if (!out->path) {
        close(fd);
        return mp_fail(err, MP_ERR_INPUT, path, NULL, "out of memory");
    }
    if (out->size > 0) {
        void *p = mmap(NULL, (size_t)out->size, PROT_READ, MAP_SHARED, fd, 0);
        if (p == MAP_FAILED) {
            int e = errno;
            mp_unmap_file(out);
            return mp_fail_errno(err, path, e, "cannot mmap");
        }
        out->data = p;
    }
    return MP_OK;
}

void mp_unmap_file(mp_mapped_file *f)
{
    if (f->data)
        munmap((void *)f->data, (size_t)f->size);
    if (f->fd >= 0)
        close(f->fd);
    free(f->path);
    memset(f, 0, sizeof *f);
    f->fd = -1;
}

static char *concat(const char *a, const char *b)
{
    size_t la = strlen(a), lb = strlen(b);
    char *s = malloc(la + lb + 1);
    if (s) {
        memcpy(s, a, la);
        memcpy(s + la, b, lb + 1);
    }
    return s;
}

/* The final name must be free or an existing regular file: the commit
 * renames over it, which would replace a device node such as /dev/null (as
 * root) and fails on a directory only after all the work is done. */
static int check_output_path(const char *final_path, mp_error *err)
{
    if (!*final_path)
        return mp_fail(err, MP_ERR_INPUT, NULL, NULL, "the output path is empty");
    struct stat st;
    if (stat(final_path, &st) == 0 && !S_ISREG(st.st_mode))
        return mp_fail(err, MP_ERR_INPUT, final_path, NULL,
                       "exists and is not a regular file; choose another output path");
    return MP_OK;
}

int mp_check_output_file(const char *final_path, const char *const *inputs, size_t n_inputs, mp_error *err)
{
    int rc = check_output_path(final_path, err);
    if (rc)
        return rc;
    for (size_t i = 0; i < n_inputs; i++)
        if (inputs[i] && mp_same_file(final_path, inputs[i]))
            return mp_fail(err, MP_ERR_INPUT, final_path, NULL, "is the input file %s; choose another output path",
                           inputs[i]);
    char *dir = mp_path_dirname(final_path);
    if (!dir)
        return mp_fail(err, MP_ERR_INPUT, final_path, NULL, "out of memory");
    /* access() answers for the real user, as open() will; a folder that is
     * missing or read-only fails here instead of after the work. */
    int e = access(dir, W_OK | X_OK) == 0 ? 0 : errno;
    if (e == 0 && !mp_is_directory(dir))
        e = ENOTDIR;
    free(dir);
    return e ? mp_fail_errno(err, final_path, e, "cannot be created") : MP_OK;
}

int mp_outfile_open(mp_outfile *f, const char *final_path, bool resume, mp_error *err)
{
    memset(f, 0, sizeof *f);
    f->fd = -1;
    int rc = check_output_path(final_path, err);
    if (rc)
        return rc;
    f->final_path = strdup(final_path);
    f->partial_path = concat(final_path, ".partial");
    if (!f->final_path || !f->partial_path) {
        mp_outfile_abort(f);
        return mp_fail(err, MP_ERR_INPUT, final_path, NULL, "out of memory");
    }
    int flags = O_RDWR | O_CREAT | O_CLOEXEC | (resume ? 0 : O_TRUNC);
    f->fd = open(f->partial_path, flags, 0644);
    if (f->fd < 0) {
        int e = errno;
        char *p = f->partial_path;
        f->partial_path = NULL; /* nothing of ours to remove */
        mp_fail_errno(err, p, e, "cannot create");
        free(p);
        mp_outfile_abort(f);
        return MP_ERR_INPUT;
    }
    struct stat st;
    if (fstat(f->fd, &st) == 0)
        f->size = (uint64_t)st.st_size;
    return MP_OK;
}

int mp_outfile_pwrite(mp_outfile *f, const void *buf, size_t n, uint64_t offset, mp_error *err)
{
    const uint8_t *p = buf;
    while (n > 0) {
        ssize_t w = pwrite(f->fd, p, n, (off_t)offset);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0) {
            int e = w < 0 ? errno : ENOSPC;
            if (e == ENOSPC || e == EFBIG || e == EDQUOT)
                return mp_fail(err, MP_ERR_INPUT, f->partial_path, NULL,
                               "cannot write: %s (out of disk space or over the file size limit?)", strerror(e));
            return mp_fail_errno(err, f->partial_path, e, "cannot write");
        }
        p += w;
        n -= (size_t)w;
        offset += (uint64_t)w;
    }
    if (offset > f->size)
        f->size = offset;
    return MP_OK;
}

int mp_outfile_append(mp_outfile *f, const void *buf, size_t n, mp_error *err)
{
    return mp_outfile_pwrite(f, buf, n, f->size, err);
}

int mp_outfile_pad_to(mp_outfile *f, uint64_t alignment, mp_error *err)
{
    static const uint8_t zeros[4096];
    uint64_t target = (f->size + alignment - 1) & ~(alignment - 1);
    while (f->size < target) {
        uint64_t n = target - f->size;
        if (n > sizeof zeros)
            n = sizeof zeros;
        int rc = mp_outfile_append(f, zeros, (size_t)n, err);
        if (rc)
            return rc;
    }
    return MP_OK;
}

int mp_outfile_commit(mp_outfile *f, mp_error *err)
{
    if (fsync(f->fd) != 0)
        return mp_fail_errno(err, f->partial_path, errno, "cannot sync");
    if (close(f->fd) != 0) {
        f->fd = -1;
        return mp_fail_errno(err, f->partial_path, errno, "cannot close");
    }
    f->fd = -1;
    if (rename(f->partial_path, f->final_path) != 0)
        return mp_fail_errno(err, f->final_path, errno, "cannot rename the finished output into place");
    free(f->partial_path);
    f->partial_path = NULL;
    free(f->final_path);
    f->final_path = NULL;
    return MP_OK;
}

void mp_outfile_abort(mp_outfile *f)
{
    if (f->fd >= 0)
        close(f->fd);
    if (f->partial_path)
        unlink(f->partial_path);
    free(f->partial_path);
    free(f->final_path);
    memset(f, 0, sizeof *f);
    f->fd = -1;
}

void mp_outfile_close_keep(mp_outfile *f)
{
    if (f->fd >= 0)
        close(f->fd);
    free(f->partial_path);
    free(f->final_path);
    memset(f, 0, sizeof *f);
    f->fd = -1;
}

int mp_write_file_parts(const char *final_path, const mp_file_part *parts, size_t n, mp_error *err)
{
    mp_outfile f;
    int rc = mp_outfile_open(&f, final_path, false, err);
    for (size_t i = 0; i < n && rc == MP_OK; i++)
        rc = mp_outfile_append(&f, parts[i].data, parts[i].len, err);
    if (rc == MP_OK)
        rc = mp_outfile_commit(&f, err);
    if (rc)
        mp_outfile_abort(&f);
    return rc;
}

int mp_read_head(int fd, size_t n, const char *path, char **out, mp_error *err)
{
    *out = NULL;
    char *buf = n < SIZE_MAX ? malloc(n + 1) : NULL;
    if (!buf)
        return mp_fail(err, MP_ERR_INPUT, path, NULL, "out of memory");
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, buf + got, n - got, (off_t)got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0) { /* 0: the file ended before n bytes */
            int e = r < 0 ? errno : EIO;
            free(buf);
            return mp_fail_errno(err, path, e, "cannot read");
        }
        got += (size_t)r;
    }
    buf[n] = '\0';
    *out = buf;
    return MP_OK;
}

size_t mp_read_prefix(const char *path, void *buf, size_t n)
{
    int fd = mp_open_input(path);
    if (fd < 0)
        return 0;
    ssize_t got = read(fd, buf, n);
    close(fd);
    return got > 0 ? (size_t)got : 0;
}

int mp_read_small_file(const char *path, uint64_t max_size, char **out, size_t *out_len, mp_error *err)
{
    *out = NULL;
    if (out_len)
        *out_len = 0;
    int fd = mp_open_input(path);
    if (fd < 0)
        return mp_fail_errno(err, path, errno, "cannot open");
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return mp_fail(err, MP_ERR_INPUT, path, NULL, "not a readable regular file");
    }
    if ((uint64_t)st.st_size > max_size) {
        close(fd);
        return mp_fail(err, MP_ERR_INPUT, path, NULL, "file is %lld bytes, more than the limit of %llu",
                       (long long)st.st_size, (unsigned long long)max_size);
    }
    size_t n = (size_t)st.st_size;
    int rc = mp_read_head(fd, n, path, out, err);
    close(fd);
    if (rc)
        return rc;
    if (out_len)
        *out_len = n;
    return MP_OK;
}

char *mp_path_join(const char *dir, const char *name)
{
    size_t ld = strlen(dir);
    bool slash = ld > 0 && dir[ld - 1] != '/';
    size_t ln = strlen(name);
    char *s = malloc(ld + slash + ln + 1);
    if (!s)
        return NULL;
    memcpy(s, dir, ld);
    if (slash)
        s[ld] = '/';
    memcpy(s + ld + slash, name, ln + 1);
    return s;
}

const char *mp_path_basename(const char *path)
{
    const char *slash = strrchr(path, '/');
    return slash ? slash + 1 : path;
}

char *mp_path_dirname(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

bool mp_is_directory(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool mp_file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

bool mp_same_file(const char *a, const char *b)
{
    struct stat sa, sb;
    return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

void mp_format_bytes(char *buf, size_t n, double bytes)
{
    if (bytes < 1e9)
        snprintf(buf, n, "%.2f MB", bytes / 1e6);
    else
        snprintf(buf, n, "%.2f GB", bytes / 1e9);
}

int mp_check_disk_space(const char *dir, uint64_t need, const char *file, const char *what, mp_error *err)
{
    struct statvfs vs;
    if (statvfs(dir, &vs) != 0)
        return MP_OK;
    uint64_t avail = (uint64_t)vs.f_bavail * vs.f_frsize;
    if (need <= avail)
        return MP_OK;
    char need_s[32], avail_s[32];
    mp_format_bytes(need_s, sizeof need_s, (double)need);
    mp_format_bytes(avail_s, sizeof avail_s, (double)avail);
    return mp_fail(err, MP_ERR_INPUT, file, NULL, "not enough disk space in %s: %s needs %s, %s are free", dir, what,
                   need_s, avail_s);
}

/* Steps back over the digits that end at `end`; the start, or SIZE_MAX when
 * there are none or more than 9. */
static size_t digits_before(const char *s, size_t end)
{
    size_t i = end;
    while (i > 0 && s[i - 1] >= '0' && s[i - 1] <= '9')
        i--;
    return i == end || end - i > 9 ? SIZE_MAX : i;
}

bool mp_split_name_parse(const char *path, const char *ext, mp_split_name *out)
{
    size_t n = strlen(path), le = strlen(ext);
    if (n <= le || strcmp(path + n - le, ext) != 0)
        return false;
    size_t end = n - le, i = digits_before(path, end);
    if (i == SIZE_MAX || i < 4 || memcmp(path + i - 4, "-of-", 4) != 0)
        return false;
    size_t j_end = i - 4, j = digits_before(path, j_end);
    if (j == SIZE_MAX || j < 1 || path[j - 1] != '-')
        return false;
    out->count = strtoull(path + i, NULL, 10);
    out->count_digits = (int)(end - i);
    out->no = strtoull(path + j, NULL, 10);
    out->no_digits = (int)(j_end - j);
    out->prefix_len = j - 1;
    return true;
}
