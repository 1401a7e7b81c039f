/* A mapped input file that shrinks (truncated, or on a failing or vanishing
 * network disk) while a command reads it makes the kernel send SIGBUS on the
 * next access to a page past its new end. Instead of dying with "Bus error"
 * the command then names the file and exits 2, like any other bad input.
 *
 * The handler may only use async-signal-safe calls: it finds the mapping that
 * holds the faulting address by reading /proc/self/maps with open/read (no
 * stdio, no malloc) and reports with write. */
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

static const char *what_happened =
    ": the file shrank or became unreadable while moepack was reading it (bus error); any partial output is kept "
    "as it would be after a kill\n";

static bool parse_hex(const char **p, const char *end, uintptr_t *v)
{
    const char *s = *p;
    uintptr_t x = 0;
    while (s < end) {
        char c = *s;
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (d < 0)
            break;
        x = x << 4 | (uintptr_t)d;
        s++;
    }
    if (s == *p)
        return false;
    *p = s;
    *v = x;
    return true;
}

/* One line of /proc/self/maps: "start-end perms offset dev inode   path".
 * True when the mapping holds addr and has a path (*path, *len). */
static bool line_holds(const char *line, const char *end, uintptr_t addr, const char **path, size_t *len)
{
    uintptr_t lo, hi;
    const char *p = line;
    if (!parse_hex(&p, end, &lo) || p >= end || *p++ != '-' || !parse_hex(&p, end, &hi) || addr < lo || addr >= hi)
        return false;
    for (int field = 0; field < 4; field++) { /* perms, offset, dev, inode */
        while (p < end && *p == ' ')
            p++;
        while (p < end && *p != ' ')
            p++;
    }
    while (p < end && *p == ' ')
        p++;
    *path = p;
    *len = (size_t)(end - p);
    return *len > 0;
}

static void on_sigbus(int sig, siginfo_t *info, void *ctx)
{
    (void)sig;
    (void)ctx;
    /* several worker threads may fault at once: the first one reports */
    static atomic_flag reporting = ATOMIC_FLAG_INIT;
    if (atomic_flag_test_and_set(&reporting))
        for (;;)
            pause();
    char buf[8192];
    uintptr_t addr = (uintptr_t)info->si_addr;
    bool named = false;
    int fd = open("/proc/self/maps", O_RDONLY | O_CLOEXEC);
    size_t have = 0;
    while (fd >= 0 && !named) {
        ssize_t r = read(fd, buf + have, sizeof buf - have);
        if (r <= 0)
            break;
        have += (size_t)r;
        size_t start = 0;
        for (size_t i = 0; i < have && !named; i++) {
            if (buf[i] != '\n')
                continue;
            const char *path;
            size_t len;
            if (line_holds(buf + start, buf + i, addr, &path, &len)) {
                mp_cli_write_stderr_raw("moepack: ", 9);
                mp_cli_write_stderr_raw(path, len);
                mp_cli_write_stderr_raw(what_happened, strlen(what_happened));
                named = true;
            }
            start = i + 1;
        }
        memmove(buf, buf + start, have - start);
        have -= start;
        if (have == sizeof buf) /* a line longer than the buffer: skip it */
            have = 0;
    }
    if (fd >= 0)
        close(fd);
    if (!named) {
        static const char msg[] = "moepack: an input file";
        mp_cli_write_stderr_raw(msg, sizeof msg - 1);
        mp_cli_write_stderr_raw(what_happened, strlen(what_happened));
    }
    _exit(MP_ERR_INPUT);
}

void mp_cli_trap_sigbus(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_sigbus;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, NULL);
}
