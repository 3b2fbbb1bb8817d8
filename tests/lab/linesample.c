/* linesample: sample a sysfs value file (gpio-sim's sim_gpioN/value) over time and print its edges.
 *   linesample FILE SECONDS [INTERVAL_US [STOPFILE]]       (static; runs in the lab VM)
 * Reads FILE every INTERVAL_US (default 1000) for at most SECONDS (or until STOPFILE exists) on
 * CLOCK_MONOTONIC and prints
 *   START <value>
 *   EDGE <t_us> <value> <prev_us>   one line per change, t from the first sample; the change happened after
 *                                   the previous sample (prev_us) and no later than this one (t_us)
 *   END <t_us> <value> samples=<n> maxgap_us=<largest interval between two samples>
 * A loaded emulator can stall the sampler: prev_us keeps each edge's uncertainty exact. */
#include <fcntl.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static long long now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000000LL + ts.tv_nsec / 1000;
}

static int read_value(int fd) {
  char c = '?';
  if (pread(fd, &c, 1, 0) != 1) return -1;
  return c == '1' ? 1 : c == '0' ? 0 : -1;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: linesample FILE SECONDS [INTERVAL_US [STOPFILE]]\n");
    return 2;
  }
  int fd = open(argv[1], O_RDONLY);
  if (fd < 0) {
    perror(argv[1]);
    return 1;
  }
  long long dur = (long long)(atof(argv[2]) * 1e6), interval = argc > 3 ? atoll(argv[3]) : 1000;
  const char *stop = argc > 4 ? argv[4] : NULL;
  long long t0 = now_us(), last = t0, maxgap = 0, n = 0;
  int v = read_value(fd), prev = v;
  printf("START %d\n", v);
  for (;;) {
    struct timespec d = {0, interval * 1000};
    nanosleep(&d, NULL);
    v = read_value(fd);
    long long t = now_us();
    n++;
    if (t - last > maxgap) maxgap = t - last;
    if (v != prev) {
      printf("EDGE %lld %d %lld\n", t - t0, v, last - t0);
      prev = v;
    }
    last = t;
    if (t - t0 >= dur || (stop && access(stop, F_OK) == 0)) break;
  }
  printf("END %lld %d samples=%lld maxgap_us=%lld\n", last - t0, v, n, maxgap);
  return 0;
}
