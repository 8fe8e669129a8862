/* Fatal-error and warning reporting: one write(2), no allocation, no stdio. */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "starmalloc/hardening.h"

size_t sm_format_hex(char *buf, uintptr_t value)
{
    static const char digits[] = "0123456789abcdef";
    char tmp[16];
    size_t n = 0;
    do {
        tmp[n++] = digits[value & 15];
        value >>= 4;
    } while (value);
    buf[0] = '0';
    buf[1] = 'x';
    for (size_t i = 0; i < n; i++)
        buf[2 + i] = tmp[n - 1 - i];
    buf[2 + n] = '\0';
    return 2 + n;
}

static size_t append(char *buf, size_t len, size_t cap, const char *text)
{
    size_t n = strlen(text);
    if (n > cap - len)
        n = cap - len;
    memcpy(buf + len, text, n);
    return len + n;
}

static void write_all(const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(STDERR_FILENO, buf, len);
        if (n <= 0)
            return;
        buf += n;
        len -= (size_t)n;
    }
}

__attribute__((noreturn)) void sm_fatal(const char *what, const void *addr)
{
    char line[256];
    char hex[20];
    sm_format_hex(hex, (uintptr_t)addr);
    size_t len = append(line, 0, sizeof(line) - 1, "starmalloc: fatal: ");
    len = append(line, len, sizeof(line) - 1, what);
    len = append(line, len, sizeof(line) - 1, " at ");
    len = append(line, len, sizeof(line) - 1, hex);
    line[len++] = '\n';
    write_all(line, len);
    abort();
}

void sm_warn(const char *what)
{
    char line[256];
    size_t len = append(line, 0, sizeof(line) - 1, "starmalloc: warning: ");
    len = append(line, len, sizeof(line) - 1, what);
    line[len++] = '\n';
    write_all(line, len);
}
