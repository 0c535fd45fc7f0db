// The raw C baseline for `npm run bench`: the same system calls ipc-ckpt makes, in a tight loop,
// with no image encoding. Built by scripts/bench.js with `gcc -O2`; not part of the package.
//
//   bench-baseline fill    --ns PATH [--queues Q] [--messages N] [--size S] [--msgmax B] [--msgmnb B]
//   bench-baseline restore --ns PATH [same options as fill] [--read FILE]
//                          (msg_next_id + msgget + IPC_SET + msgsnd; --read: each body is read from FILE first)
//   bench-baseline save    --ns PATH [--buffer learned|msgmax] [--write FILE]
//                          (MSG_INFO + MSG_STAT_ANY + MSG_COPY; --write: every message, 12-byte header and
//                          body, is written to FILE, which is fsync'ed at the end, as an image file is)
//   bench-baseline count   --ns PATH                           (queues, messages, bytes in the namespace)
//   bench-baseline run     --report FILE [--stdout FILE] -- CMD ARGS...  (wall time and peak RSS of one child)
//
// Every mode prints one JSON object on stdout (run writes it to FILE, leaving the child's output alone).
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef MSG_STAT_ANY
#define MSG_STAT_ANY 13
#endif
#ifndef MSG_COPY
#define MSG_COPY 040000
#endif

// Keys of the queues the benchmark makes: queue i gets BENCH_KEY_BASE + i.
#define BENCH_KEY_BASE 0x62650000
// How many slices the save loop's per-message MSG_COPY cost is reported in (shows the O(n^2)).
#define COST_SLICES 10

struct options {
  const char *ns;
  long queues;
  long messages;
  long size;
  long msgmax;
  long msgmnb;
  int buffer_msgmax;
  const char *report;
  const char *child_stdout;
  const char *write_file;
  const char *read_file;
};

static void die(const char *what) {
  fprintf(stderr, "bench-baseline: %s: %s\n", what, strerror(errno));
  exit(1);
}

static double now_seconds(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

// VmHWM, not ru_maxrss: ru_maxrss keeps the high-water mark of the parent's image from before exec.
static long peak_rss_kb(void) {
  char line[256];
  long kb = -1;
  FILE *status = fopen("/proc/self/status", "r");
  if (status == NULL) die("/proc/self/status");
  while (fgets(line, sizeof line, status) != NULL) {
    if (sscanf(line, "VmHWM: %ld kB", &kb) == 1) break;
  }
  fclose(status);
  return kb;
}

static void enter_namespace(const char *path) {
  if (path == NULL) return;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) die(path);
  if (setns(fd, CLONE_NEWIPC) != 0) die("setns");
  close(fd);
}

// /proc/sys/kernel/* belongs to the calling thread's IPC namespace; sysctl writes must start at offset 0.
static void write_sysctl(const char *name, long value) {
  char path[128];
  char text[32];
  snprintf(path, sizeof path, "/proc/sys/kernel/%s", name);
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) die(path);
  int len = snprintf(text, sizeof text, "%ld\n", value);
  if (pwrite(fd, text, (size_t)len, 0) != len) die(path);
  close(fd);
}

static long read_sysctl(const char *name) {
  char path[128];
  char text[32] = {0};
  snprintf(path, sizeof path, "/proc/sys/kernel/%s", name);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) die(path);
  if (read(fd, text, sizeof text - 1) <= 0) die(path);
  close(fd);
  return strtol(text, NULL, 10);
}

static void raise_limits(const struct options *opt) {
  if (opt->msgmax > 0) write_sysctl("msgmax", opt->msgmax);
  if (opt->msgmnb > 0) write_sysctl("msgmnb", opt->msgmnb);
}

struct message_buffer {
  long mtype;
  char mtext[];
};

// fill and restore: the same queues and messages; restore also places each queue at its id
// through msg_next_id and sets its qbytes, as a restore from an image must.
static int create_and_send(const struct options *opt, int restore) {
  raise_limits(opt);
  long qbytes = read_sysctl("msgmnb");
  struct message_buffer *msg = malloc(sizeof(long) + (size_t)opt->size);
  if (msg == NULL) die("malloc");
  memset(msg->mtext, 0x5a, (size_t)opt->size);
  int next_id_fd = -1;
  if (restore) {
    next_id_fd = open("/proc/sys/kernel/msg_next_id", O_WRONLY | O_CLOEXEC);
    if (next_id_fd < 0) die("/proc/sys/kernel/msg_next_id");
  }

  int read_fd = -1;
  if (restore && opt->read_file != NULL) {
    read_fd = open(opt->read_file, O_RDONLY | O_CLOEXEC);
    if (read_fd < 0) die(opt->read_file);
  }

  double start = now_seconds();
  long sent = 0;
  for (long q = 0; q < opt->queues; q++) {
    if (restore) {
      // A fresh namespace hands out ids 0, 1, 2, ... : the ids fill produced.
      char text[32];
      int len = snprintf(text, sizeof text, "%ld\n", q);
      if (pwrite(next_id_fd, text, (size_t)len, 0) != len) die("msg_next_id");
    }
    int id = msgget((key_t)(BENCH_KEY_BASE + q), IPC_CREAT | IPC_EXCL | 0600);
    if (id < 0) die("msgget");
    if (restore) {
      if (id != q) {
        fprintf(stderr, "bench-baseline: wanted queue id %ld, got %d\n", q, id);
        return 1;
      }
      struct msqid_ds ds;
      memset(&ds, 0, sizeof ds);
      ds.msg_perm.uid = getuid();
      ds.msg_perm.gid = getgid();
      ds.msg_perm.mode = 0600;
      ds.msg_qbytes = (msglen_t)qbytes;
      if (msgctl(id, IPC_SET, &ds) != 0) die("msgctl IPC_SET");
    }
    for (long m = 0; m < opt->messages; m++) {
      msg->mtype = 1 + (m % 7);
      // The same bytes a restore reads from its image; the fill's pattern stays when the file runs out.
      if (read_fd >= 0 && read(read_fd, msg->mtext, (size_t)opt->size) < 0) die(opt->read_file);
      if (msgsnd(id, msg, (size_t)opt->size, IPC_NOWAIT) != 0) die("msgsnd");
      sent++;
    }
  }
  double seconds = now_seconds() - start;
  if (next_id_fd >= 0) close(next_id_fd);
  if (read_fd >= 0) close(read_fd);
  printf("{\"mode\":\"%s\",\"queues\":%ld,\"messages\":%ld,\"bytes\":%ld,\"seconds\":%.6f,\"maxrssKb\":%ld}\n",
         restore ? "restore" : "fill", opt->queues, sent, sent * opt->size, seconds, peak_rss_kb());
  free(msg);
  return 0;
}

static int highest_index(void) {
  struct msginfo info;
  int highest = msgctl(0, MSG_INFO, (struct msqid_ds *)&info);
  if (highest < 0) die("msgctl MSG_INFO");
  return highest;
}

static int save(const struct options *opt) {
  long msgmax = read_sysctl("msgmax");
  size_t capacity = (size_t)msgmax;
  struct message_buffer *msg = malloc(sizeof(long) + capacity);
  if (msg == NULL) die("malloc");
  // The kernel allocates and copies the whole size passed on every MSG_COPY: start small, learn, grow on E2BIG.
  size_t buffer_size = opt->buffer_msgmax ? capacity : 64;
  long queues = 0, messages = 0, bytes = 0, grows = 0;
  double slice_seconds[COST_SLICES] = {0};
  long slice_messages[COST_SLICES] = {0};
  int write_fd = -1;
  if (opt->write_file != NULL) {
    write_fd = open(opt->write_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (write_fd < 0) die(opt->write_file);
  }

  double start = now_seconds();
  int highest = highest_index();
  for (int index = 0; index <= highest; index++) {
    struct msqid_ds ds;
    int id = msgctl(index, MSG_STAT_ANY, &ds);
    if (id < 0) {
      if (errno == EINVAL) continue;  // an unused slot
      die("msgctl MSG_STAT_ANY");
    }
    queues++;
    long qnum = (long)ds.msg_qnum;
    if (!opt->buffer_msgmax && qnum > 0) {
      size_t average = (size_t)((ds.__msg_cbytes + (unsigned long)qnum - 1) / (unsigned long)qnum);
      if (average > buffer_size) buffer_size = average < capacity ? average : capacity;
    }
    double slice_start = now_seconds();
    int slice = 0;
    for (long n = 0; n < qnum; n++) {
      int now_slice = (int)(n * COST_SLICES / qnum);
      if (now_slice != slice) {
        double t = now_seconds();
        slice_seconds[slice] += t - slice_start;
        slice_start = t;
        slice = now_slice;
      }
      ssize_t got = msgrcv(id, msg, buffer_size, n, IPC_NOWAIT | MSG_COPY);
      if (got < 0) {
        if (errno == E2BIG && buffer_size < capacity) {
          buffer_size = buffer_size * 2 < capacity ? buffer_size * 2 : capacity;
          grows++;
          n--;
          continue;
        }
        if (errno == ENOMSG) break;  // the queue shrank under us
        die("msgrcv MSG_COPY");
      }
      messages++;
      bytes += got;
      slice_messages[slice]++;
      if (write_fd >= 0) {
        // The 12-byte packed header (int64 type, uint32 size) sits just before the body, as in an image.
        struct {
          int64_t type;
          uint32_t size;
        } __attribute__((packed)) header = {msg->mtype, (uint32_t)got};
        struct iovec parts[2] = {{&header, sizeof header}, {msg->mtext, (size_t)got}};
        if (writev(write_fd, parts, 2) != (ssize_t)(sizeof header + (size_t)got)) die(opt->write_file);
      }
    }
    slice_seconds[slice] += now_seconds() - slice_start;
  }
  if (write_fd >= 0 && (fsync(write_fd) != 0 || close(write_fd) != 0)) die(opt->write_file);
  double seconds = now_seconds() - start;

  printf("{\"mode\":\"save\",\"buffer\":\"%s\",\"queues\":%ld,\"messages\":%ld,\"bytes\":%ld,\"seconds\":%.6f,"
         "\"maxrssKb\":%ld,\"bufferSize\":%zu,\"bufferGrows\":%ld,\"copyMicrosPerMessageBySlice\":[",
         opt->buffer_msgmax ? "msgmax" : "learned", queues, messages, bytes, seconds, peak_rss_kb(), buffer_size,
         grows);
  for (int s = 0; s < COST_SLICES; s++) {
    double micros = slice_messages[s] ? slice_seconds[s] * 1e6 / (double)slice_messages[s] : 0;
    printf("%s%.3f", s ? "," : "", micros);
  }
  printf("]}\n");
  free(msg);
  return 0;
}

static int count(void) {
  long queues = 0, messages = 0, bytes = 0;
  int highest = highest_index();
  for (int index = 0; index <= highest; index++) {
    struct msqid_ds ds;
    if (msgctl(index, MSG_STAT_ANY, &ds) < 0) {
      if (errno == EINVAL) continue;
      die("msgctl MSG_STAT_ANY");
    }
    queues++;
    messages += (long)ds.msg_qnum;
    bytes += (long)ds.__msg_cbytes;
  }
  printf("{\"mode\":\"count\",\"queues\":%ld,\"messages\":%ld,\"bytes\":%ld,\"msgmax\":%ld,\"msgmnb\":%ld}\n", queues,
         messages, bytes, read_sysctl("msgmax"), read_sysctl("msgmnb"));
  return 0;
}

// Wall time and peak RSS (ru_maxrss from wait4) of one child command.
static int run(const struct options *opt, char **argv) {
  double start = now_seconds();
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    if (opt->child_stdout != NULL) {
      int fd = open(opt->child_stdout, O_WRONLY | O_CREAT | O_TRUNC, 0600);
      if (fd < 0 || dup2(fd, STDOUT_FILENO) < 0) die(opt->child_stdout);
      close(fd);
    }
    execvp(argv[0], argv);
    fprintf(stderr, "bench-baseline: exec %s: %s\n", argv[0], strerror(errno));
    _exit(127);
  }
  int status = 0;
  struct rusage usage;
  if (wait4(pid, &status, 0, &usage) < 0) die("wait4");
  double seconds = now_seconds() - start;
  int exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  FILE *report = fopen(opt->report, "w");
  if (report == NULL) die(opt->report);
  fprintf(report, "{\"mode\":\"run\",\"exitCode\":%d,\"seconds\":%.6f,\"maxrssKb\":%ld,\"userSeconds\":%.6f,\"systemSeconds\":%.6f}\n",
          exit_code, seconds, usage.ru_maxrss, (double)usage.ru_utime.tv_sec + usage.ru_utime.tv_usec / 1e6,
          (double)usage.ru_stime.tv_sec + usage.ru_stime.tv_usec / 1e6);
  fclose(report);
  return exit_code;
}

static long number_argument(const char *name, const char *text) {
  char *end = NULL;
  long value = text ? strtol(text, &end, 10) : -1;
  if (text == NULL || *end != '\0' || value < 0) {
    fprintf(stderr, "bench-baseline: %s needs a non-negative number, got '%s'\n", name, text ? text : "");
    exit(2);
  }
  return value;
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: bench-baseline fill|restore|save|count|run [options]\n");
    return 2;
  }
  const char *mode = argv[1];
  struct options opt = {.queues = 1, .messages = 1000, .size = 64};
  int i = 2;
  for (; i < argc; i++) {
    const char *arg = argv[i];
    const char *value = i + 1 < argc ? argv[i + 1] : NULL;
    if (strcmp(arg, "--") == 0) { i++; break; }
    if (strcmp(arg, "--ns") == 0) opt.ns = value;
    else if (strcmp(arg, "--queues") == 0) opt.queues = number_argument(arg, value);
    else if (strcmp(arg, "--messages") == 0) opt.messages = number_argument(arg, value);
    else if (strcmp(arg, "--size") == 0) opt.size = number_argument(arg, value);
    else if (strcmp(arg, "--msgmax") == 0) opt.msgmax = number_argument(arg, value);
    else if (strcmp(arg, "--msgmnb") == 0) opt.msgmnb = number_argument(arg, value);
    else if (strcmp(arg, "--buffer") == 0) opt.buffer_msgmax = value && strcmp(value, "msgmax") == 0;
    else if (strcmp(arg, "--report") == 0) opt.report = value;
    else if (strcmp(arg, "--stdout") == 0) opt.child_stdout = value;
    else if (strcmp(arg, "--write") == 0) opt.write_file = value;
    else if (strcmp(arg, "--read") == 0) opt.read_file = value;
    else {
      fprintf(stderr, "bench-baseline: unknown option %s\n", arg);
      return 2;
    }
    i++;
  }
  if (strcmp(mode, "run") == 0) {
    if (opt.report == NULL || i >= argc) {
      fprintf(stderr, "usage: bench-baseline run --report FILE -- CMD ARGS...\n");
      return 2;
    }
    return run(&opt, argv + i);
  }
  enter_namespace(opt.ns);
  if (strcmp(mode, "fill") == 0) return create_and_send(&opt, 0);
  if (strcmp(mode, "restore") == 0) return create_and_send(&opt, 1);
  if (strcmp(mode, "save") == 0) return save(&opt);
  if (strcmp(mode, "count") == 0) return count();
  fprintf(stderr, "bench-baseline: unknown mode %s\n", mode);
  return 2;
}
