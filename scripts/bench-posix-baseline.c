/*
 * The C baseline of `node scripts/bench-posix.js`: the system calls a POSIX queue save and restore make,
 * in a plain loop, in the caller's IPC namespace (run it under nsenter --ipc).
 *   bench-posix-baseline take-back NAME...   mq_receive every message of each queue, then mq_send them all back
 *   bench-posix-baseline send NAME COUNT SIZE   mq_send COUNT messages of SIZE bytes (priority n % 32768)
 * Prints the seconds the loop took (CLOCK_MONOTONIC), nothing else.
 * Build: gcc -O2 -o bench-posix-baseline bench-posix-baseline.c
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <mqueue.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static mqd_t open_queue(const char *name, int flags)
{
    char path[300];
    snprintf(path, sizeof(path), "/%s", name);
    mqd_t queue = mq_open(path, flags);
    if (queue == (mqd_t)-1) {
        fprintf(stderr, "mq_open %s: %s\n", name, strerror(errno));
        exit(1);
    }
    return queue;
}

int main(int argc, char **argv)
{
    if (argc >= 3 && strcmp(argv[1], "take-back") == 0) {
        double total = 0;
        for (int q = 2; q < argc; q++) {
            mqd_t queue = open_queue(argv[q], O_RDWR | O_NONBLOCK);
            struct mq_attr attr;
            mq_getattr(queue, &attr);
            size_t slot = 8 + (size_t)attr.mq_msgsize;
            char *buffer = malloc(slot * (size_t)attr.mq_maxmsg);
            double start = now();
            long taken = 0;
            for (;;) {
                unsigned prio;
                char *at = buffer + (size_t)taken * slot;
                ssize_t size = mq_receive(queue, at + 8, (size_t)attr.mq_msgsize, &prio);
                if (size < 0) break;
                memcpy(at, &prio, 4);
                memcpy(at + 4, &size, 4);
                taken++;
            }
            for (long i = 0; i < taken; i++) {
                char *at = buffer + (size_t)i * slot;
                unsigned prio, size;
                memcpy(&prio, at, 4);
                memcpy(&size, at + 4, 4);
                if (mq_send(queue, at + 8, size, prio) != 0) {
                    fprintf(stderr, "mq_send: %s\n", strerror(errno));
                    return 1;
                }
            }
            total += now() - start;
            free(buffer);
        }
        printf("%.6f\n", total);
        return 0;
    }
    if (argc == 5 && strcmp(argv[1], "send") == 0) {
        mqd_t queue = open_queue(argv[2], O_WRONLY | O_NONBLOCK);
        long count = atol(argv[3]);
        size_t size = (size_t)atol(argv[4]);
        char *body = calloc(1, size + 1);
        double start = now();
        for (long n = 0; n < count; n++) {
            if (mq_send(queue, body, size, (unsigned)(n % 32768)) != 0) {
                fprintf(stderr, "mq_send: %s\n", strerror(errno));
                return 1;
            }
        }
        printf("%.6f\n", now() - start);
        return 0;
    }
    fprintf(stderr, "usage: bench-posix-baseline take-back NAME... | send NAME COUNT SIZE\n");
    return 2;
}
