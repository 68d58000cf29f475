/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Helpers of the shim-over-simulator acceptance programs (tests/shimsim).
 *
 * Each program is an application: written against cuda.h, run with the shim
 * preloaded over the simulated driver (see meson.build), and it exits 0
 * (pass), 1 (fail) or 77 (skip). They are plain C rather than Criterion so
 * that the multi-threaded ones also run under ThreadSanitizer, where
 * Criterion cannot start: the failure counter is atomic and messages are
 * written whole, because checks run on several threads at once.
 *
 * The shim's introspection API (shim/introspect.h, plus the tracker counts
 * the shim exports as gs_introspect_tracker_count) is reached the way a
 * tool does it: dlsym on the preloaded library. No gpuswap header is needed.
 */
#ifndef SHIMSIM_H
#define SHIMSIM_H

#include <cuda.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SS_SKIP 77

extern atomic_int ss_failures;

/* One message, written in one piece even with several threads. */
void ss_report(const char *kind, const char *file, int line, const char *cond, const char *fmt,
	       ...) __attribute__((format(printf, 5, 6)));

#define CHECK(cond, ...)                                                        \
	do {                                                                    \
		if (!(cond)) {                                                  \
			ss_report("FAIL", __FILE__, __LINE__, #cond, __VA_ARGS__); \
			atomic_fetch_add(&ss_failures, 1);                      \
		}                                                               \
	} while (0)

/* Stop now: what follows cannot run meaningfully. */
#define REQUIRE(cond, ...)                                                      \
	do {                                                                    \
		if (!(cond)) {                                                  \
			ss_report("FATAL", __FILE__, __LINE__, #cond, __VA_ARGS__); \
			exit(1);                                                \
		}                                                               \
	} while (0)

#define SKIP(...)                                                               \
	do {                                                                    \
		ss_report("SKIP", __FILE__, __LINE__, "", __VA_ARGS__);          \
		exit(SS_SKIP);                                                  \
	} while (0)

/* "CUDA_ERROR_OUT_OF_MEMORY (2)"; never NULL. Thread-safe (a static table
 * of the driver's answers is never modified). */
const char *ss_err(CUresult rc);

#define CU_CHECK(call)                                                          \
	do {                                                                    \
		CUresult ss_rc_ = (call);                                       \
		CHECK(ss_rc_ == CUDA_SUCCESS, "%s: %s", #call, ss_err(ss_rc_)); \
	} while (0)

#define CU_REQUIRE(call)                                                        \
	do {                                                                    \
		CUresult ss_rc_ = (call);                                       \
		REQUIRE(ss_rc_ == CUDA_SUCCESS, "%s: %s", #call, ss_err(ss_rc_)); \
	} while (0)

/* "name: ok" and 0, or the failure count and 1. */
int ss_result(const char *name);

/* A function pointer from an object address, the POSIX way (ISO C has no
 * cast between the two). */
#define SS_LOAD(fp, addr)                                \
	do {                                             \
		void *ss_addr_ = (addr);                 \
		memcpy(&(fp), &ss_addr_, sizeof(ss_addr_)); \
	} while (0)

/* ---- the shim's introspection API ---------------------------------------------- */

/* Mirrors of shim/introspect.h's structures (that header documents them). */
struct ss_call {
	const char *symbol;
	uint64_t count;
};
struct ss_lookup {
	const char *name;
	int version;
	uint64_t count;
	uint64_t ptds_count;
};
struct ss_unknown {
	const char *name;
	int version;
	uint64_t flags;
	uint64_t count;
};
struct ss_export_table {
	unsigned char uuid[16];
	const char *name;
	int hooked;
	uint64_t count;
};

struct ss_introspect {
	int (*version)(void);
	uint64_t (*call_count)(const char *symbol);
	size_t (*calls)(struct ss_call *out, size_t cap);
	size_t (*lookups)(struct ss_lookup *out, size_t cap);
	size_t (*unknown_entries)(struct ss_unknown *out, size_t cap);
	size_t (*export_tables)(struct ss_export_table *out, size_t cap);
	uint64_t (*dropped)(void);
	/* Exported by the shim next to the others (track_context.c). */
	int (*tracker_count)(const char *kind, uint64_t *count, uint64_t *bytes);
};

/* The API of the preloaded shim (handle: RTLD_DEFAULT, or a dlopen handle).
 * Fails the program when the shim is not loaded or an entry is missing. */
extern struct ss_introspect ss_gs;
void ss_introspect_load(void *handle);

/* Every record kind the tracker counts, by the names it answers to. */
enum ss_kind {
	SS_CTX,
	SS_STREAM,
	SS_EVENT,
	SS_MODULE,
	SS_LIBRARY,
	SS_FUNCTION,
	SS_KERNEL,
	SS_GLOBAL,
	SS_LINK,
	SS_ALLOC,
	SS_HOST,
	SS_RESERVATION,
	SS_PHYS,
	SS_MAPPING,
	SS_UNSUPPORTED,
	SS_NKINDS
};
extern const char *const ss_kind_names[SS_NKINDS];

struct ss_counts {
	uint64_t count[SS_NKINDS];
	uint64_t bytes[SS_NKINDS];
};

/* A snapshot of every count (one call per kind: take it while the program
 * is quiet). */
void ss_counts_get(struct ss_counts *out);
/* Print every kind whose count or bytes differ; returns how many. */
int ss_counts_diff(const char *what, const struct ss_counts *want, const struct ss_counts *got);

/* ---- environment ---------------------------------------------------------------- */

/* $GS_KERNELS_DIR/file (malloc'd); fails the program without it. */
char *ss_kernel_path(const char *file);
/* The whole file plus a NUL, malloc'd. */
void *ss_read_file(const char *path, size_t *size);

/* xorshift64*: a seeded, per-thread stream of numbers. */
static inline uint64_t ss_rand(uint64_t *state)
{
	uint64_t x = *state;

	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	*state = x;
	return x * 0x2545F4914F6CDD1Dull;
}

/* Milliseconds, monotonic. */
uint64_t ss_now_ms(void);
void ss_sleep_ms(unsigned ms);

#endif
