/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench-freeze: how long closing the gate takes (gs_gate_close(): close,
 * then wait until no driver call is in flight) while threads keep calling
 * the driver through the shim, against the same close with nobody calling.
 * The target is 5 ms (DESIGN.md §6). What a freeze does after the gate is
 * closed (waiting for the GPU's queues) is not included: it depends on the
 * application's work, not on the shim.
 *
 * The program is linked with the shim's internals, so its driver calls are
 * the shim's wrappers, gated exactly as in a preloaded shim, and the gate is
 * closed by a direct call instead of a round trip through the control
 * socket (whose latency would swamp the figure). The driver under the shim
 * is the one GPUSWAP_REAL_LIBCUDA names: the simulator, in run.sh.
 *
 * The callers alternate cuCtxGetDevice and cuStreamQuery, two cheap gated
 * (`pass`) calls, so a close always finds some of them in flight or about
 * to enter. Three arms alternate in blocks: no caller (the baseline), the
 * given number of callers, and one caller per CPU; callers not in the
 * current arm are parked outside any call, so that whatever the machine
 * does to one arm it does to the others.
 *
 * A close's tail is where the machine shows through, so the program also
 * says where each close's time went: the membarrier against the wait for
 * the calls to drain (gs_gate_close_stats), and, for the closes over 1 ms,
 * what the scheduler did meanwhile, from the kernel's per-thread schedstat
 * (time on a CPU, time runnable but waiting for one) and the steal time of
 * /proc/stat (time the hypervisor ran something else on our virtual CPUs).
 */
#include <cuda.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "gate.h"

#define TARGET_MS 5.0
/* Far above any drain seen: a close that times out is counted, not timed. */
#define CLOSE_TIMEOUT_MS 2000u
#define BLOCK 20
/* A close slower than this is "in the tail" and gets explained. */
#define SLOW_MS 1.0
#define MAX_THREADS 256

struct options {
	long freezes;
	long threads;
	long open_us;
	bool rows_only;
	bool no_sched;
	const char *trace;
};

static CUcontext ctx;
static CUstream stream;
/* Callers with an index below this call the driver; the others park
 * (outside any call). */
static atomic_long active;
static atomic_bool stop;
static atomic_long parked;
static atomic_long calls;
static atomic_int call_errors;
static atomic_long started;

/* ---- what the scheduler did ------------------------------------------------ */

/* /proc/self/task/TID/schedstat of every caller and of this (the closing)
 * thread, kept open: read with pread before and after each close. */
struct sched_probe {
	int fd[MAX_THREADS + 1];
	pid_t tid[MAX_THREADS + 1];
	long n;        /* callers; [n] is the closer */
	int stat_fd;   /* /proc/stat, for steal */
	int ncpu;
	bool ok;
};

struct sched_sample {
	long long run_ns[MAX_THREADS + 1];
	long long wait_ns[MAX_THREADS + 1];
	long long steal_ticks;
};

static struct sched_probe probe;
static _Atomic pid_t caller_tids[MAX_THREADS];

static bool read_schedstat(int fd, long long *run, long long *wait)
{
	char buf[128];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);

	if (n <= 0)
		return false;
	buf[n] = '\0';
	return sscanf(buf, "%lld %lld", run, wait) == 2;
}

/* The 8th value of the aggregate "cpu" line, in USER_HZ ticks. */
static long long read_steal(int fd)
{
	char buf[256];
	long long v[8];
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);

	if (n <= 0)
		return 0;
	buf[n] = '\0';
	if (sscanf(buf, "cpu %lld %lld %lld %lld %lld %lld %lld %lld", &v[0], &v[1], &v[2], &v[3],
		   &v[4], &v[5], &v[6], &v[7]) != 8)
		return 0;
	return v[7];
}

static void probe_open(long n)
{
	char path[64];

	probe.n = n;
	probe.ncpu = (int)sysconf(_SC_NPROCESSORS_ONLN);
	probe.ok = true;
	for (long i = 0; i <= n; i++) {
		pid_t tid = i < n ? atomic_load(&caller_tids[i]) : gettid();

		snprintf(path, sizeof(path), "/proc/self/task/%d/schedstat", (int)tid);
		probe.tid[i] = tid;
		probe.fd[i] = open(path, O_RDONLY | O_CLOEXEC);
		if (probe.fd[i] < 0)
			probe.ok = false;
	}
	probe.stat_fd = open("/proc/stat", O_RDONLY | O_CLOEXEC);
	if (probe.stat_fd < 0)
		probe.ok = false;
}

static void probe_sample(struct sched_sample *s)
{
	for (long i = 0; i <= probe.n; i++)
		if (!read_schedstat(probe.fd[i], &s->run_ns[i], &s->wait_ns[i]))
			s->run_ns[i] = s->wait_ns[i] = 0;
	s->steal_ticks = read_steal(probe.stat_fd);
}

/* ---- the callers ---------------------------------------------------------- */

static void sleep_us(long us)
{
	struct timespec ts = {.tv_sec = us / 1000000, .tv_nsec = (us % 1000000) * 1000};

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
		;
}

static void *caller_main(void *arg)
{
	long index = (long)(intptr_t)arg;
	long n = 0;
	bool is_parked = false;
	CUdevice dev;

	atomic_store(&caller_tids[index], gettid());
	atomic_fetch_add(&started, 1);
	if (cuCtxSetCurrent(ctx) != CUDA_SUCCESS) {
		atomic_fetch_add(&call_errors, 1);
		return NULL;
	}
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		if (index >= atomic_load_explicit(&active, memory_order_acquire)) {
			if (!is_parked) {
				is_parked = true;
				atomic_fetch_add(&parked, 1);
			}
			/* Polling, not a condition variable: waking 8 threads at
			 * the start of a loaded block must not itself be timed. */
			sleep_us(200);
			continue;
		}
		if (is_parked) {
			is_parked = false;
			atomic_fetch_sub(&parked, 1);
		}
		/* cuStreamQuery may answer CUDA_ERROR_NOT_READY; only a real
		 * failure means the figures are not what they claim. */
		if (cuCtxGetDevice(&dev) != CUDA_SUCCESS)
			atomic_fetch_add(&call_errors, 1);
		CUresult r = cuStreamQuery(stream);
		if (r != CUDA_SUCCESS && r != CUDA_ERROR_NOT_READY)
			atomic_fetch_add(&call_errors, 1);
		n += 2;
	}
	atomic_fetch_add(&calls, n);
	return NULL;
}

/* ---- one arm ----------------------------------------------------------------- */

/* What one close of an arm's loaded blocks looked like. */
struct freeze {
	double ms;
	double barrier_ms;
	double drain_ms;
	double last_wait_share; /* of the close, the last call in flight runnable but off-CPU */
	double cpu_share;       /* of all CPUs' time during the close, this process's */
	long long steal_ticks;
	unsigned futex_timeouts;
	bool sched_known;
};

struct arm {
	const char *name;
	long callers;
	struct freeze *f;
	size_t n;
	long timeouts;
	int64_t loaded_ns;
	/* Machine-wide CPU time during the arm's blocks (ticks of /proc/stat's
	 * "cpu" line) and this process's share (getrusage). */
	long long busy_ticks, steal_ticks, all_ticks;
	double self_cpu_s;
};

/* One freeze: close and drain, timed; reopen; let the callers run again
 * for open_us so the next close meets them in their steady state. */
static void one_freeze(const struct options *o, struct arm *a, FILE *trace)
{
	struct gs_gate_report rep;
	struct gs_gate_close_stats st;
	static struct sched_sample before, after;
	bool sched = probe.ok && !o->no_sched;

	if (sched)
		probe_sample(&before);
	int64_t t0 = bench_now_ns();
	int rc = gs_gate_close_stats(CLOSE_TIMEOUT_MS, &rep, &st);
	int64_t t1 = bench_now_ns();
	if (sched)
		probe_sample(&after);

	if (rc != 0 && rc != -ETIMEDOUT) {
		fprintf(stderr, "bench-freeze: gs_gate_close: %s\n", strerror(-rc));
		exit(1);
	}
	if (rc == 0)
		gs_gate_open();

	struct freeze f = {
		.ms = (double)(t1 - t0) / 1e6,
		.barrier_ms = (double)st.barrier_ns / 1e6,
		.drain_ms = (double)st.drain_ns / 1e6,
		.futex_timeouts = st.timeouts,
		.sched_known = sched,
	};
	if (sched) {
		long long run = 0, last_wait = 0;

		for (long i = 0; i <= probe.n; i++) {
			run += after.run_ns[i] - before.run_ns[i];
			if (i < probe.n && probe.tid[i] == st.last_tid)
				last_wait = after.wait_ns[i] - before.wait_ns[i];
		}
		/* A wait is accounted when it ends, so it may have begun before
		 * the close: clip it to the close. */
		double close_ns = (double)(t1 - t0);
		f.last_wait_share = st.in_flight == 0 ? 0.0 :
				    (last_wait > close_ns ? 1.0 : (double)last_wait / close_ns);
		f.cpu_share = (double)run / (close_ns * probe.ncpu);
		if (f.cpu_share > 1.0)
			f.cpu_share = 1.0;
		f.steal_ticks = after.steal_ticks - before.steal_ticks;
	}
	if (trace)
		fprintf(trace, "%s %.6f %.6f %.6f %u %u %u %u %.3f %.3f %lld\n", a->name, f.ms,
			f.barrier_ms, f.drain_ms, st.in_flight, st.scans, st.sleeps, st.timeouts,
			f.last_wait_share, f.cpu_share, f.steal_ticks);
	if (rc == -ETIMEDOUT)
		a->timeouts++;
	else
		a->f[a->n++] = f;
	sleep_us(o->open_us);
}

/* The "cpu" line of /proc/stat: busy, steal and all ticks. */
static void machine_ticks(long long *busy, long long *steal, long long *all)
{
	FILE *f = fopen("/proc/stat", "r");
	long long v[8] = {0};

	*busy = *steal = *all = 0;
	if (!f)
		return;
	if (fscanf(f, "cpu %lld %lld %lld %lld %lld %lld %lld %lld", &v[0], &v[1], &v[2], &v[3],
		   &v[4], &v[5], &v[6], &v[7]) == 8) {
		*busy = v[0] + v[1] + v[2] + v[5] + v[6];
		*steal = v[7];
		*all = *busy + v[3] + v[4] + v[7];
	}
	fclose(f);
}

static double self_cpu_seconds(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static void run_block(const struct options *o, struct arm *a, long n, FILE *trace)
{
	long long b0, s0, t0all, b1, s1, t1all;
	double cpu0 = self_cpu_seconds();

	atomic_store(&active, a->callers);
	/* Wait for the callers outside the arm to park, and (first open
	 * period) let those in it start calling. */
	while (atomic_load(&parked) < o->threads - a->callers)
		sleep_us(100);
	machine_ticks(&b0, &s0, &t0all);
	int64_t t0 = bench_now_ns();
	sleep_us(o->open_us);
	for (long i = 0; i < n; i++)
		one_freeze(o, a, trace);
	a->loaded_ns += bench_now_ns() - t0;
	machine_ticks(&b1, &s1, &t1all);
	a->busy_ticks += b1 - b0;
	a->steal_ticks += s1 - s0;
	a->all_ticks += t1all - t0all;
	a->self_cpu_s += self_cpu_seconds() - cpu0;
}

/* ---- printing ------------------------------------------------------------- */

static int compare_double(const void *x, const void *y)
{
	double a = *(const double *)x, b = *(const double *)y;

	return (a > b) - (a < b);
}

/* Order statistics of one field of an arm's closes: median, p99 (by rank:
 * the smallest sample at or above 99% of the others) and max. */
static void field_stats(const struct arm *a, size_t offset, double *median, double *p99,
			double *max)
{
	double *v = malloc((a->n ? a->n : 1) * sizeof(*v));

	if (!v) {
		perror("bench-freeze");
		exit(1);
	}
	for (size_t i = 0; i < a->n; i++)
		memcpy(&v[i], (const char *)&a->f[i] + offset, sizeof(double));
	qsort(v, a->n, sizeof(*v), compare_double);
	*median = a->n ? (a->n % 2 ? v[a->n / 2] : (v[a->n / 2 - 1] + v[a->n / 2]) / 2) : 0;
	*p99 = a->n ? v[(size_t)(0.99 * (double)(a->n - 1) + 0.5)] : 0;
	*max = a->n ? v[a->n - 1] : 0;
	free(v);
}

static void print_row(const struct arm *a)
{
	double median, p99, max, min = 0;

	field_stats(a, offsetof(struct freeze, ms), &median, &p99, &max);
	for (size_t i = 0; i < a->n; i++)
		if (i == 0 || a->f[i].ms < min)
			min = a->f[i].ms;
	printf("%-40s %9.3f %9.3f %9.3f %9.3f %8ld\n", a->name, median, p99, max, min,
	       a->timeouts);
}

static void print_split(const struct arm *a)
{
	double m, p, x;
	char what[96];

	field_stats(a, offsetof(struct freeze, barrier_ms), &m, &p, &x);
	snprintf(what, sizeof(what), "  membarrier, %ld threads", a->callers);
	printf("%-40s %9.3f %9.3f %9.3f\n", what, m, p, x);
	field_stats(a, offsetof(struct freeze, drain_ms), &m, &p, &x);
	snprintf(what, sizeof(what), "  drain wait, %ld threads", a->callers);
	printf("%-40s %9.3f %9.3f %9.3f\n", what, m, p, x);
}

static double median_of(double *v, size_t n)
{
	if (n == 0)
		return 0;
	qsort(v, n, sizeof(*v), compare_double);
	return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Why the closes over SLOW_MS were slow. */
static void print_tail(const struct arm *a)
{
	size_t slow = 0, barrier_slow = 0, stolen = 0, futex_timeouts = 0, known = 0;
	double *wait = calloc(a->n + 1, sizeof(double));
	double *share = calloc(a->n + 1, sizeof(double));

	if (!wait || !share) {
		perror("bench-freeze");
		exit(1);
	}
	for (size_t i = 0; i < a->n; i++) {
		const struct freeze *f = &a->f[i];

		futex_timeouts += f->futex_timeouts;
		if (f->ms < SLOW_MS)
			continue;
		slow++;
		if (f->barrier_ms >= SLOW_MS)
			barrier_slow++;
		if (!f->sched_known)
			continue;
		wait[known] = f->last_wait_share;
		share[known] = f->cpu_share;
		known++;
		if (f->steal_ticks > 0)
			stolen++;
	}
	printf("%s: %zu of %zu closes took over %.0f ms; the closer's futex wait timed out %zu "
	       "times in all\n",
	       a->name, slow, a->n, SLOW_MS, futex_timeouts);
	if (slow) {
		printf("  in those: membarrier took over %.0f ms in %zu", SLOW_MS, barrier_slow);
		if (known)
			printf("; the hypervisor stole time (steal) during %zu; median share of the "
			       "close the last call in flight spent runnable, waiting for a CPU: "
			       "%.0f%%; median share of the %d CPUs' time this process got: %.0f%%",
			       stolen, 100 * median_of(wait, known), probe.ncpu,
			       100 * median_of(share, known));
		printf("\n");
	}
	free(wait);
	free(share);
}

static void print_machine(const struct arm *a)
{
	if (a->all_ticks <= 0)
		return;
	double tick = (double)sysconf(_SC_CLK_TCK);
	double all = (double)a->all_ticks;
	double self = a->self_cpu_s * tick;
	double others = (double)a->busy_ticks - self;

	printf("  the CPUs during these blocks: %.0f%% busy, this process %.0f%%, other processes "
	       "%.0f%%, stolen by the hypervisor %.1f%%\n",
	       100 * (double)a->busy_ticks / all, 100 * self / all,
	       100 * (others > 0 ? others : 0) / all, 100 * (double)a->steal_ticks / all);
}

static void usage(FILE *f)
{
	fputs("usage: bench-freeze [--freezes N] [--threads T] [--open-us U] [--no-sched]\n"
	      "                    [--trace FILE] [--rows-only]\n"
	      "  Times gs_gate_close() (close + drain) N times (default 200) while T threads\n"
	      "  (default 8) call cuCtxGetDevice/cuStreamQuery through the shim, against N\n"
	      "  closes with one caller per CPU and N with the threads parked; the gate\n"
	      "  stays open U us (default 2000) between closes. Explains the closes over\n"
	      "  1 ms from schedstat and steal time (--no-sched: do not read them).\n"
	      "  --trace writes one line per close. The driver is GPUSWAP_REAL_LIBCUDA.\n",
	      f);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{"freezes", required_argument, NULL, 'n'},
		{"threads", required_argument, NULL, 't'},
		{"open-us", required_argument, NULL, 'u'},
		{"trace", required_argument, NULL, 'T'},
		{"no-sched", no_argument, NULL, 's'},
		{"rows-only", no_argument, NULL, 'r'},
		{"help", no_argument, NULL, 'h'},
		{NULL, 0, NULL, 0},
	};
	struct options o = {.freezes = 200, .threads = 8, .open_us = 2000};
	CUdevice dev;
	FILE *trace = NULL;
	int c;

	while ((c = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		switch (c) {
		case 'n':
			if (!bench_parse_count("--freezes", optarg, &o.freezes))
				return 2;
			break;
		case 't':
			if (!bench_parse_count("--threads", optarg, &o.threads))
				return 2;
			if (o.threads > MAX_THREADS) {
				fprintf(stderr, "--threads: at most %d\n", MAX_THREADS);
				return 2;
			}
			break;
		case 'u':
			if (!bench_parse_count("--open-us", optarg, &o.open_us))
				return 2;
			break;
		case 'T':
			o.trace = optarg;
			break;
		case 's':
			o.no_sched = true;
			break;
		case 'r':
			o.rows_only = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (o.trace && !(trace = fopen(o.trace, "w"))) {
		perror(o.trace);
		return 1;
	}

	/* These go through the shim's wrappers, which initialise the shim
	 * (and its gate) and load the driver. */
	if (cuInit(0) != CUDA_SUCCESS || cuDeviceGet(&dev, 0) != CUDA_SUCCESS ||
	    cuDevicePrimaryCtxRetain(&ctx, dev) != CUDA_SUCCESS ||
	    cuCtxSetCurrent(ctx) != CUDA_SUCCESS ||
	    cuStreamCreate(&stream, CU_STREAM_NON_BLOCKING) != CUDA_SUCCESS) {
		fprintf(stderr, "bench-freeze: no driver context (is GPUSWAP_REAL_LIBCUDA set?)\n");
		return 1;
	}

	long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
	char name_t[64], name_c[64];
	struct arm arms[3] = {
		{.name = "no calling threads (baseline)", .callers = 0},
		{.name = name_t, .callers = o.threads},
		{.name = name_c, .callers = ncpu < o.threads ? ncpu : o.threads},
	};
	/* The per-CPU arm only where it differs from the main one. */
	size_t narms = arms[2].callers < o.threads ? 3 : 2;

	snprintf(name_t, sizeof(name_t), "%ld threads calling", o.threads);
	snprintf(name_c, sizeof(name_c), "%ld threads calling (1 per CPU)", arms[2].callers);
	for (size_t i = 0; i < narms; i++) {
		arms[i].f = calloc((size_t)o.freezes, sizeof(*arms[i].f));
		if (!arms[i].f) {
			perror("bench-freeze");
			return 1;
		}
	}

	pthread_t *tids = calloc((size_t)o.threads, sizeof(*tids));
	if (!tids) {
		perror("bench-freeze");
		return 1;
	}
	for (long i = 0; i < o.threads; i++)
		if (pthread_create(&tids[i], NULL, caller_main, (void *)(intptr_t)i) != 0) {
			perror("bench-freeze: pthread_create");
			return 1;
		}
	while (atomic_load(&started) < o.threads)
		sleep_us(100);
	probe_open(o.threads);

	for (long done = 0; done < o.freezes; done += BLOCK) {
		long n = o.freezes - done < BLOCK ? o.freezes - done : BLOCK;

		for (size_t i = 0; i < narms; i++)
			run_block(&o, &arms[i], n, trace);
	}
	atomic_store(&stop, true);
	for (long i = 0; i < o.threads; i++)
		pthread_join(tids[i], NULL);
	if (trace)
		fclose(trace);
	if (atomic_load(&call_errors) != 0) {
		fprintf(stderr, "bench-freeze: %d driver calls failed\n", atomic_load(&call_errors));
		return 1;
	}
	for (size_t i = 0; i < narms; i++)
		if (arms[i].n == 0) {
			fprintf(stderr, "bench-freeze: every close of '%s' timed out\n", arms[i].name);
			return 1;
		}

	if (!o.rows_only)
		printf("%-40s %9s %9s %9s %9s %8s\n", "gate close + drain, ms", "median", "p99",
		       "max", "min", "timeouts");
	for (size_t i = 0; i < narms; i++)
		print_row(&arms[i]);
	printf("%-40s %9s %9s %9s\n", "where the time went, ms", "median", "p99", "max");
	for (size_t i = 1; i < narms; i++)
		print_split(&arms[i]);
	for (size_t i = 1; i < narms; i++) {
		print_tail(&arms[i]);
		print_machine(&arms[i]);
	}

	int64_t loaded_ns = 0;
	for (size_t i = 1; i < narms; i++)
		loaded_ns += arms[i].loaded_ns;
	/* Calls kept flowing: without this a loaded arm whose threads were
	 * starved would look like a fast baseline. */
	printf("%ld freezes per arm, gate open %ld us between them; callers made %.2f M calls/s "
	       "during loaded blocks\n",
	       o.freezes, o.open_us, (double)atomic_load(&calls) / ((double)loaded_ns / 1e9) / 1e6);
	if (!probe.ok && !o.no_sched)
		printf("(no schedstat or /proc/stat here: the tail is not explained)\n");

	double median, p99, max;
	field_stats(&arms[1], offsetof(struct freeze, ms), &median, &p99, &max);
	printf("target < %.0f ms per freeze (close + drain, %ld threads calling): median %.3f ms, "
	       "p99 %.3f ms, max %.3f ms, %s\n",
	       TARGET_MS, o.threads, median, p99, max,
	       max < TARGET_MS && arms[1].timeouts == 0 ? "met"
	       : p99 < TARGET_MS                        ? "met at p99"
	       : median < TARGET_MS                     ? "met at the median"
							: "missed");
	for (size_t i = 0; i < narms; i++)
		free(arms[i].f);
	free(tids);
	return 0;
}
