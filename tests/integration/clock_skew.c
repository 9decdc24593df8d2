/* A clock 300 s ahead for Python programs only: sshd's sandbox must not notice. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <string.h>
#include <time.h>

extern char *program_invocation_short_name;
static int (*real_clock_gettime)(clockid_t, struct timespec *);
static int skewed;

__attribute__((constructor)) static void init(void) {
    real_clock_gettime = dlsym(RTLD_NEXT, "clock_gettime");
    skewed = strncmp(program_invocation_short_name, "python", 6) == 0;
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    int rc = real_clock_gettime(clock, ts);
    if (rc == 0 && skewed && clock == CLOCK_REALTIME)
        ts->tv_sec += 300;
    return rc;
}
