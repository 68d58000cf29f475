/* SPDX-License-Identifier: Apache-2.0 */
/*
 * bench-gate: the cost of the gate's fast path (shim/gate.h), a
 * gs_gate_enter()/gs_gate_exit() pair with the gate open, against an empty
 * loop, on one thread and on several at once. The gate code is compiled
 * into this program exactly as into the shim (it is inline).
 *
 * With several threads, each times its own short batches: a batch is far
 * shorter than a scheduler time slice, so when there are more threads than
 * CPUs most batches still run uninterrupted, and the median is the cost of a
 * thread that is running, not of one waiting for a CPU. What it shows is
 * whether the threads slow each other down: they should not, since each
 * writes only its own record and the gate word is only read.
 *
 * Last, for reference, the fallback for kernels without
 * membarrier(PRIVATE_EXPEDITED), in which every call pays a locked
 * instruction.
 */
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "gate.h"
#include "thread.h"

struct options {
	long rounds;
	long pairs;
	long threads;
	long thread_rounds;
	long thread_pairs;
	bool rows_only;
};

/* The baseline: what a loop costs with no gate in it. The compiler barrier
 * stands in for the one gs_gate_enter() has, so the loop is not folded. */
static __attribute__((noinline)) void empty_batch(struct gs_thread *t, long n)
{
	for (long i = 0; i < n; i++)
		__asm__ __volatile__("" ::: "memory");
}

static __attribute__((noinline)) void gate_batch(struct gs_thread *t, long n)
{
	for (long i = 0; i < n; i++) {
		gs_gate_enter(t, 0);
		gs_gate_exit(t);
	}
}

static double time_batch(void (*batch)(struct gs_thread *t, long n), struct gs_thread *t, long n)
{
	int64_t t0 = bench_now_ns();

	batch(t, n);
	return (double)(bench_now_ns() - t0) / (double)n;
}

/* Alternating rounds, as in bench-calls; warm-up rounds first. */
static void run_rounds(struct gs_thread *t, long rounds, long pairs, double *base, double *with)
{
	for (long r = -2; r < rounds; r++) {
		double b, g;

		if (r & 1) {
			g = time_batch(gate_batch, t, pairs);
			b = time_batch(empty_batch, t, pairs);
		} else {
			b = time_batch(empty_batch, t, pairs);
			g = time_batch(gate_batch, t, pairs);
		}
		if (r >= 0) {
			base[r] = b;
			with[r] = g;
		}
	}
}

struct worker {
	pthread_t thread;
	const struct options *opt;
	pthread_barrier_t *start;
	double *base;
	double *with;
};

static void *worker_main(void *arg)
{
	struct worker *wk = arg;
	struct gs_thread *t = gs_thread_get();

	if (!t) {
		fprintf(stderr, "bench-gate: no thread record\n");
		exit(1);
	}
	/* All threads in their loops at once. */
	pthread_barrier_wait(wk->start);
	run_rounds(t, wk->opt->thread_rounds, wk->opt->thread_pairs, wk->base, wk->with);
	return NULL;
}

static void run_threads(const struct options *opt, double *base, double *with)
{
	struct worker *wk = calloc((size_t)opt->threads, sizeof(*wk));
	pthread_barrier_t start;

	if (!wk) {
		fprintf(stderr, "bench-gate: out of memory\n");
		exit(1);
	}
	pthread_barrier_init(&start, NULL, (unsigned)opt->threads);
	for (long i = 0; i < opt->threads; i++) {
		wk[i].opt = opt;
		wk[i].start = &start;
		wk[i].base = base + i * opt->thread_rounds;
		wk[i].with = with + i * opt->thread_rounds;
		if (pthread_create(&wk[i].thread, NULL, worker_main, &wk[i]) != 0) {
			fprintf(stderr, "bench-gate: pthread_create failed\n");
			exit(1);
		}
	}
	for (long i = 0; i < opt->threads; i++)
		pthread_join(wk[i].thread, NULL);
	pthread_barrier_destroy(&start);
	free(wk);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: bench-gate [options]\n"
		"Times gs_gate_enter()+gs_gate_exit() with the gate open against an empty\n"
		"loop, in alternating rounds.\n"
		"  --rounds N         single-thread rounds (default 31)\n"
		"  --pairs N          pairs per single-thread round (default 2000000)\n"
		"  --threads N        threads of the concurrent run (default 8)\n"
		"  --thread-rounds N  rounds per thread (default 1000)\n"
		"  --thread-pairs N   pairs per round per thread (default 50000)\n"
		"  --rows-only        no column headings\n");
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "rounds", required_argument, NULL, 'r' },
		{ "pairs", required_argument, NULL, 'p' },
		{ "threads", required_argument, NULL, 't' },
		{ "thread-rounds", required_argument, NULL, 'T' },
		{ "thread-pairs", required_argument, NULL, 'P' },
		{ "rows-only", no_argument, NULL, 'R' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct options opt = {
		.rounds = 31, .pairs = 2000000,
		.threads = 8, .thread_rounds = 1000, .thread_pairs = 50000,
	};
	struct gs_thread *self;
	double *base, *with;
	size_t samples;
	char what[128];
	int c;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'r': if (!bench_parse_count("--rounds", optarg, &opt.rounds)) return 2; break;
		case 'p': if (!bench_parse_count("--pairs", optarg, &opt.pairs)) return 2; break;
		case 't': if (!bench_parse_count("--threads", optarg, &opt.threads)) return 2; break;
		case 'T':
			if (!bench_parse_count("--thread-rounds", optarg, &opt.thread_rounds))
				return 2;
			break;
		case 'P':
			if (!bench_parse_count("--thread-pairs", optarg, &opt.thread_pairs))
				return 2;
			break;
		case 'R': opt.rows_only = true; break;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}

	/* As the shim's initialisation does. */
	if (gs_gate_setup(GS_GATE_BARRIER_AUTO) != 0 || gs_gate_uses_fences()) {
		fprintf(stderr, "bench-gate: membarrier(PRIVATE_EXPEDITED) is unavailable; "
			"the gate runs in fence mode, as the shim would here\n");
	}
	self = gs_thread_get();
	samples = (size_t)(opt.rounds > opt.threads * opt.thread_rounds ?
			   opt.rounds : opt.threads * opt.thread_rounds);
	base = calloc(samples, sizeof(*base));
	with = calloc(samples, sizeof(*with));
	if (!self || !base || !with) {
		fprintf(stderr, "bench-gate: out of memory\n");
		return 1;
	}
	if (!opt.rows_only)
		bench_print_header();

	run_rounds(self, opt.rounds, opt.pairs, base, with);
	bench_print_row(gs_gate_uses_fences() ? "gate enter+exit, 1 thread (fence mode)" :
			"gate enter+exit, 1 thread", base, with, (size_t)opt.rounds);

	run_threads(&opt, base, with);
	snprintf(what, sizeof(what), "gate enter+exit, %ld threads on %ld CPUs", opt.threads,
		 sysconf(_SC_NPROCESSORS_ONLN));
	bench_print_row(what, base, with, (size_t)(opt.threads * opt.thread_rounds));

	/*
	 * Switching modes is only safe with nothing in flight, which holds
	 * here: every other thread has been joined and this one is outside
	 * the gate.
	 */
	if (!gs_gate_uses_fences()) {
		gs_gate_setup(GS_GATE_BARRIER_FENCE);
		run_rounds(self, opt.rounds, opt.pairs / 4, base, with);
		bench_print_row("gate enter+exit, 1 thread, fence fallback", base, with,
				(size_t)opt.rounds);
		gs_gate_setup(GS_GATE_BARRIER_AUTO);
	}
	free(base);
	free(with);
	return 0;
}
