/* mp_file: read-only file mappings and crash-safe output files.
 *
 * Inputs are mapped read-only and never copied; every consumer must treat the
 * mapped bytes as hostile. Outputs are written to "<final>.partial" and only
 * renamed to the final name by mp_outfile_commit, after an fsync, so a crash,
 * a kill or a full disk never leaves a half-written file under the final name. */
#ifndef MP_FILE_H
#define MP_FILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mp_error.h"

typedef struct mp_mapped_file {
    char *path;          /* owned copy, for error messages */
    const uint8_t *data; /* NULL when size == 0 */
    uint64_t size;
    int fd;
} mp_mapped_file;

/* Opens an input file read-only (close-on-exec) without blocking on a FIFO or
 * device that has no writer; -1 with errno set on failure. Every input goes
 * through it. */
int mp_open_input(const char *path);

/* Maps `path` read-only (MAP_SHARED so the page cache is shared with other
 * processes and nothing is copied). Anything but a regular file (a FIFO, a
 * device, a directory) is refused, without blocking. */
int mp_map_file(const char *path, mp_mapped_file *out, mp_error *err);
void mp_unmap_file(mp_mapped_file *f);

/* True when [offset, offset+size) lies within a buffer of `total` bytes,
 * without overflowing. */
static inline bool mp_range_ok(uint64_t offset, uint64_t size, uint64_t total)
{
    return offset <= total && size <= total - offset;
}

typedef struct mp_outfile {
    char *final_path;
    char *partial_path;
    int fd;
    uint64_t size; /* bytes written so far at the end of the file */
} mp_outfile;

/* Checks, before any work, that FINAL can be written as an output: not empty,
 * free or a regular file, not the same file as any of the n_inputs paths
 * (NULL entries skipped), and in a folder that exists and is writable.
 * Creates nothing. */
int mp_check_output_file(const char *final_path, const char *const *inputs, size_t n_inputs, mp_error *err);

/* Creates (or, with `resume`, reopens) FINAL.partial. An empty FINAL, or one
 * that exists and is not a regular file, is refused before anything is created. */
int mp_outfile_open(mp_outfile *f, const char *final_path, bool resume, mp_error *err);
/* Writes all of buf at `offset`; a short write (ENOSPC, EFBIG, EIO) is an error
 * that names the file. */
int mp_outfile_pwrite(mp_outfile *f, const void *buf, size_t n, uint64_t offset, mp_error *err);
/* Appends at f->size. */
int mp_outfile_append(mp_outfile *f, const void *buf, size_t n, mp_error *err);
/* Appends zero bytes until f->size is a multiple of `alignment` (a power of 2). */
int mp_outfile_pad_to(mp_outfile *f, uint64_t alignment, mp_error *err);
/* fsync, close and rename FINAL.partial to FINAL. */
int mp_outfile_commit(mp_outfile *f, mp_error *err);
/* Closes and removes FINAL.partial (safe to call after commit: then a no-op). */
void mp_outfile_abort(mp_outfile *f);
/* Closes without removing FINAL.partial, so `--resume` can continue it. */
void mp_outfile_close_keep(mp_outfile *f);

/* One piece of a file that mp_write_file_parts writes. */
typedef struct mp_file_part {
    const void *data;
    size_t len;
} mp_file_part;

/* Writes FINAL whole: the n parts one after the other into FINAL.partial,
 * then commit; on any error FINAL.partial is removed and FINAL left as it was. */
int mp_write_file_parts(const char *final_path, const mp_file_part *parts, size_t n, mp_error *err);

/* Reads the first n bytes of the open file fd (named path in errors) into a
 * malloc'd buffer *out with a NUL after them; a read error, or a file that
 * ends before n bytes, is an error ("cannot read") and *out is NULL. */
int mp_read_head(int fd, size_t n, const char *path, char **out, mp_error *err);

/* Reads up to n first bytes of the file at path into buf (one read: fewer
 * when it is shorter); 0 when it cannot be opened or read. For telling file
 * kinds apart by their magic; a FIFO without a writer reads as empty. */
size_t mp_read_prefix(const char *path, void *buf, size_t n);

/* Reads a whole (small) file into a NUL-terminated malloc'd buffer, refusing
 * files larger than max_size and, without blocking, non-regular files. */
int mp_read_small_file(const char *path, uint64_t max_size, char **out, size_t *out_len, mp_error *err);

/* A size as "12.34 GB", or "12.34 MB" below 1 GB (a tiny model's or a small
 * output's figures would read 0.00 GB), into buf of n bytes. */
void mp_format_bytes(char *buf, size_t n, double bytes);

/* Refuses, before anything is written, an output of `need` more bytes into
 * the folder dir when its file system has less free space than that for an
 * unprivileged user (statvfs: f_bavail * f_frsize): "[FILE: ]not enough disk
 * space in DIR: WHAT needs N, F are free" (file may be NULL). A file system
 * that statvfs cannot ask is let through: the writes then report a full disk
 * themselves. */
int mp_check_disk_space(const char *dir, uint64_t need, const char *file, const char *what, mp_error *err);

/* A file of a set split in numbered parts, "PREFIX-0000K-of-0000N" + ext
 * (safetensors shards, GGUF split parts). */
typedef struct mp_split_name {
    size_t prefix_len;   /* bytes of "PREFIX" (the folder included) */
    uint64_t no, count;  /* K and N */
    int no_digits, count_digits;
} mp_split_name;
/* Parses path (ending in ext, e.g. ".gguf"); false when it is not so named.
 * Each number has 1 to 9 digits. */
bool mp_split_name_parse(const char *path, const char *ext, mp_split_name *out);

/* Joins a directory and a file name into a malloc'd path. */
char *mp_path_join(const char *dir, const char *name);
/* The file name part of a path: what follows its last '/' (a pointer into path). */
const char *mp_path_basename(const char *path);
/* The directory part of a path (malloc'd; "." when there is none). */
char *mp_path_dirname(const char *path);
bool mp_is_directory(const char *path);
bool mp_file_exists(const char *path);
/* True when both paths exist and name the same file (device and inode). */
bool mp_same_file(const char *a, const char *b);

#endif
