/* tests/common/child.h: running part of a cmocka test in a forked child, for code that must
 * abort, fault or write to stderr. Include after <cmocka.h>.
 *
 * Header-only (static inline functions); the parent side asserts with cmocka, the child side never
 * does (a failed cmocka assertion in a child would report a test of its own). */
#ifndef STARMALLOC_TESTS_CHILD_H
#define STARMALLOC_TESTS_CHILD_H

#include <signal.h>
#include <stddef.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

/* Prepares a forked child: default dispositions for the signals cmocka catches (the child
 * then dies by them instead of reporting a crashed test), no core dump, and a 10 s deadline
 * (a deadlock becomes SIGALRM). */
static inline void child_setup(void)
{
    static const int signals[] = {SIGSEGV, SIGBUS, SIGABRT, SIGILL, SIGFPE, SIGALRM};
    for (size_t i = 0; i < sizeof(signals) / sizeof(signals[0]); i++)
        signal(signals[i], SIG_DFL);
    struct rlimit no_core = {0, 0};
    setrlimit(RLIMIT_CORE, &no_core);
    alarm(10);
}

/* Waits for child `pid` (asserting that fork gave one) and returns its wait status. */
static inline int wait_child(pid_t pid)
{
    int status;
    assert_true(pid > 0);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return status;
}

enum { CAPTURED_MESSAGES_MAX = 8, CAPTURED_MESSAGE_MAX = 1024 };

/* What was written to a captured stderr, one entry per write(2), each NUL-terminated. */
struct captured_stderr {
    unsigned count;
    size_t length[CAPTURED_MESSAGES_MAX];
    char text[CAPTURED_MESSAGES_MAX][CAPTURED_MESSAGE_MAX + 1];
};

/* A SOCK_SEQPACKET socket pair to stand in for stderr: each write(2) to fds[1] arrives at
 * fds[0] as one message. */
static inline void capture_open(int fds[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_SEQPACKET, 0, fds), 0);
}

/* Reads every message from fd until the writing side is closed. */
static inline void capture_read(int fd, struct captured_stderr *out)
{
    memset(out, 0, sizeof(*out));
    for (;;) {
        char buf[CAPTURED_MESSAGE_MAX + 1];
        ssize_t n = recv(fd, buf, sizeof(buf) - 1, 0);
        assert_true(n >= 0);
        if (n == 0)
            break;
        assert_true(out->count < CAPTURED_MESSAGES_MAX);
        memcpy(out->text[out->count], buf, (size_t)n);
        out->length[out->count++] = (size_t)n;
    }
}

/* Runs what(arg) in a forked child (child_setup first, then _exit(0) if `what` returns)
 * whose stderr is captured into *out; returns the child's wait status. */
static inline int run_in_child(void (*what)(void *), void *arg, struct captured_stderr *out)
{
    int fds[2];
    capture_open(fds);
    pid_t pid = fork();
    if (pid == 0) {
        child_setup();
        close(fds[0]);
        dup2(fds[1], STDERR_FILENO);
        close(fds[1]);
        what(arg);
        _exit(0);
    }
    close(fds[1]);
    capture_read(fds[0], out);
    close(fds[0]);
    return wait_child(pid);
}

/* Asserts that the child died by SIGABRT. */
static inline void assert_child_aborted(int status)
{
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGABRT);
}

/* Asserts that the child wrote exactly one message to stderr, `expected`. */
static inline void assert_child_wrote_once(const struct captured_stderr *out, const char *expected)
{
    assert_int_equal(out->count, 1);
    assert_int_equal(out->length[0], strlen(expected));
    assert_string_equal(out->text[0], expected);
}

#endif
