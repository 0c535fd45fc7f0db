// How far into a second the kernel still stamps a queue's stime with the previous second (its coarse
// clock, ktime_get_real_seconds, advances at timer ticks): the evidence behind save's allowance
// (KERNEL_SECOND_LAG_MS in lib/save.ts, docs/RELIABILITY.md "Certifying a copy").
// Usage: gcc -O2 -o /tmp/coarse-clock-lag scripts/coarse-clock-lag.c && unshare --ipc /tmp/coarse-clock-lag [SECONDS]
#include <stdio.h>
#include <stdlib.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <time.h>

// Only the start of each second is sampled: the lag can show only there.
#define SAMPLED_NS 60000000L

int main(int argc, char** argv) {
  const long seconds = argc > 1 ? atol(argv[1]) : 20;
  const int id = msgget(IPC_PRIVATE, IPC_CREAT | 0600);
  if (id < 0) return perror("msgget"), 1;
  struct {
    long type;
    char body[1];
  } message = {1, {0}};
  long samples = 0, previous = 0, latestNs = -1;
  struct timespec start;
  clock_gettime(CLOCK_REALTIME, &start);
  for (;;) {
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    if (now.tv_sec - start.tv_sec >= seconds) break;
    if (now.tv_nsec > SAMPLED_NS) {
      // Sleep to 2 ms before the next second.
      const struct timespec rest = {0, 1000000000L - now.tv_nsec - 2000000L};
      if (rest.tv_nsec > 0) nanosleep(&rest, NULL);
      continue;
    }
    struct msqid_ds ds;
    if (msgsnd(id, &message, 1, IPC_NOWAIT) != 0 || msgctl(id, IPC_STAT, &ds) != 0 || msgrcv(id, &message, 1, 0, IPC_NOWAIT) < 0) {
      return perror("msgsnd/IPC_STAT/msgrcv"), 1;
    }
    samples++;
    if (ds.msg_stime < now.tv_sec) {
      previous++;
      if (now.tv_nsec > latestNs) latestNs = now.tv_nsec;
    }
  }
  msgctl(id, IPC_RMID, NULL);
  printf("%ld samples in the first %ld ms of each second: %ld stamped the previous second, the latest %.3f ms into it\n", samples,
         SAMPLED_NS / 1000000, previous, latestNs < 0 ? 0.0 : latestNs / 1e6);
  return 0;
}
