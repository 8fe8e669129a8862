/* fuzz_replay.c: a main() for the fuzz harness (fuzz_abi.c) when it is not built with libFuzzer.
 *
 * Usage: rel_fuzz_replay [--generate <inputs> <seed>] [file-or-directory...]
 * Runs every file given (a directory: every file in it) through LLVMFuzzerTestOneInput, then,
 * with --generate, that many pseudo-random inputs (1 byte to 4 KiB) from the seed. The harness
 * aborts on the first divergence; the input that caused it is named on stderr first. So the
 * seed corpus and a reproducible batch of random sequences run with any compiler, under CTest
 * and under valgrind or a sanitizer, without clang's libFuzzer. */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "rel_common.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

enum { INPUT_BYTES_MAX = 1 << 20, GENERATED_MAX = 4096 };

static uint8_t buffer[INPUT_BYTES_MAX];
static char current[4096]; /* the input running now, named if the harness aborts */

static void run_file(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rel_say("cannot open %s", path);
        exit(2);
    }
    size_t len = 0;
    ssize_t n;
    while (len < sizeof(buffer) && (n = read(fd, buffer + len, sizeof(buffer) - len)) > 0)
        len += (size_t)n;
    close(fd);
    snprintf(current, sizeof(current), "%s", path);
    LLVMFuzzerTestOneInput(buffer, len);
}

static unsigned run_path(const char *path)
{
    struct stat st;
    if (stat(path, &st) != 0) {
        rel_say("cannot stat %s", path);
        exit(2);
    }
    if (!S_ISDIR(st.st_mode)) {
        run_file(path);
        return 1;
    }
    struct dirent **names = NULL;
    int count = scandir(path, &names, NULL, alphasort); /* sorted: a reproducible order */
    if (count < 0) {
        rel_say("cannot read directory %s", path);
        exit(2);
    }
    unsigned ran = 0;
    for (int i = 0; i < count; i++) {
        if (names[i]->d_name[0] != '.') {
            char file[4096];
            snprintf(file, sizeof(file), "%s/%s", path, names[i]->d_name);
            run_file(file);
            ran++;
        }
        free(names[i]);
    }
    free(names);
    return ran;
}

/* The harness reports a divergence and aborts: name the input that caused it, then die by
 * the same signal. */
static void name_input_on_abort(int sig)
{
    static const char head[] = "rel_fuzz_replay: the failing input was: ";
    rel_write_all(STDERR_FILENO, head, sizeof(head) - 1);
    rel_write_all(STDERR_FILENO, current, strlen(current));
    rel_write_all(STDERR_FILENO, "\n", 1);
    signal(sig, SIG_DFL);
    raise(sig);
}

int main(int argc, char **argv)
{
    rel_program = "rel_fuzz_replay";
    unsigned files = 0, generated = 0;
    signal(SIGABRT, name_input_on_abort);
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--generate") == 0) {
            unsigned long count = rel_arg(argc, argv, i + 1, 0, 1, 100000000ul);
            struct rel_rng rng = {rel_arg(argc, argv, i + 2, 0, 0, ~0ul)};
            i += 2;
            for (unsigned long k = 0; k < count; k++) {
                size_t len = 1 + rel_below(&rng, GENERATED_MAX);
                for (size_t b = 0; b < len; b++)
                    buffer[b] = (uint8_t)rel_next(&rng);
                snprintf(current, sizeof(current), "generated input %lu", k);
                LLVMFuzzerTestOneInput(buffer, len);
                generated++;
            }
            continue;
        }
        files += run_path(argv[i]);
    }
    printf("rel_fuzz_replay: %u corpus files and %u generated inputs passed\n", files, generated);
    return 0;
}
