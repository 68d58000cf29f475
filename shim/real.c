/* SPDX-License-Identifier: Apache-2.0 */
#define GS_LOG_SUBSYS "shim"
#include "real.h"

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

#include "g_api.h"
#include "log.h"

#define DRIVER_NAME "libcuda.so.1"

/*
 * The sanitizer runtimes refuse RTLD_DEEPBIND (a deep-bound library would
 * bypass their interceptors). Sanitizer builds are test builds: without
 * it, a driver's calls to its own exported functions may bind to the
 * shim's wrappers, which forward them back, gated.
 */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define GS_DEEPBIND 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer) || __has_feature(thread_sanitizer) || \
	__has_feature(memory_sanitizer)
#define GS_DEEPBIND 0
#endif
#endif
#ifndef GS_DEEPBIND
#define GS_DEEPBIND RTLD_DEEPBIND
#endif

const char *const gs_real_search_dirs[] = {
	"/usr/local/nvidia/lib64", /* container runtimes (nvidia-docker, k8s) */
	"/usr/local/nvidia/lib",
#if defined(__x86_64__)
	"/usr/lib/x86_64-linux-gnu", /* Debian, Ubuntu */
	"/lib/x86_64-linux-gnu",
#elif defined(__aarch64__)
	"/usr/lib/aarch64-linux-gnu",
	"/lib/aarch64-linux-gnu",
#endif
	"/usr/lib64", /* RHEL, SUSE */
	"/lib64",
	"/usr/lib",
	"/usr/lib/wsl/lib", /* WSL2 */
	NULL,
};

/* Written once during initialisation (pthread_once), read-only after. */
static void *real_handle;
static char real_path[PATH_MAX];

/* The address range -> file of this shim, from /proc/self/maps: an absolute
 * path even when the shim was preloaded by a relative one. */
static int maps_path_of(const void *addr, char *out, size_t len)
{
	FILE *f = fopen("/proc/self/maps", "re");
	char line[PATH_MAX + 256];
	int rc = -ENOENT;

	if (!f)
		return -errno;
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		int off = 0;

		if (sscanf(line, "%lx-%lx %*s %*s %*s %*s %n", &lo, &hi, &off) < 2 || off == 0)
			continue;
		if ((uintptr_t)addr < lo || (uintptr_t)addr >= hi)
			continue;
		line[strcspn(line, "\n")] = '\0';
		if (line[off] != '/')
			break;
		snprintf(out, len, "%s", line + off);
		rc = 0;
		break;
	}
	fclose(f);
	return rc;
}

/* Any address inside the shim identifies it. A read-only object: it lies
 * in a file-backed mapping (unlike .bss), and needs no conversion of a
 * function pointer. */
static const char self_marker[] = "gpuswap";

/* Device and inode of the shim's own file. */
static int self_identity(struct stat *st)
{
	Dl_info info;
	char path[PATH_MAX];

	if (dladdr(self_marker, &info) && info.dli_fname &&
	    info.dli_fname[0] == '/' && stat(info.dli_fname, st) == 0)
		return 0;
	if (maps_path_of(self_marker, path, sizeof(path)) == 0 &&
	    stat(path, st) == 0)
		return 0;
	return -ENOENT;
}

enum try_result {
	TRY_OK,
	TRY_ABSENT,    /* no such file */
	TRY_SELF,      /* this shim, or another copy of gpuswap */
	TRY_UNLOADABLE,
};

/* Load `path` unless it is the shim. On failure, why (for the one error
 * line an explicit GPUSWAP_REAL_LIBCUDA gets) goes to reason. */
static enum try_result try_open(const char *path, const struct stat *self, bool have_self,
				char *reason, size_t reason_len)
{
	struct stat st;
	void *h;

	if (stat(path, &st) != 0) {
		snprintf(reason, reason_len, "%s", strerror(errno));
		return TRY_ABSENT;
	}
	if (have_self && st.st_dev == self->st_dev && st.st_ino == self->st_ino) {
		snprintf(reason, reason_len, "it is gpuswap itself, not the driver");
		return TRY_SELF;
	}
	h = dlopen(path, RTLD_NOW | RTLD_LOCAL | GS_DEEPBIND);
	if (!h) {
		snprintf(reason, reason_len, "%s", dlerror());
		return TRY_UNLOADABLE;
	}
	/* Another copy of the shim (a second build, or one installed as
	 * libcuda.so.1 elsewhere) would forward to itself forever. */
	if (dlsym(h, "gs_introspect_version")) {
		dlclose(h);
		snprintf(reason, reason_len, "it is a copy of gpuswap, not the driver");
		return TRY_SELF;
	}
	real_handle = h;
	snprintf(real_path, sizeof(real_path), "%s", path);
	return TRY_OK;
}

static bool search_dir(const char *dir, size_t dirlen, const struct stat *self, bool have_self)
{
	char path[PATH_MAX], reason[512];
	int n;

	/* Empty entries mean the current directory to the loader; never load
	 * a driver from wherever the application happens to run. */
	if (dirlen == 0)
		return false;
	n = snprintf(path, sizeof(path), "%.*s/" DRIVER_NAME, (int)dirlen, dir);
	if (n < 0 || (size_t)n >= sizeof(path))
		return false;
	switch (try_open(path, self, have_self, reason, sizeof(reason))) {
	case TRY_OK:
		return true;
	case TRY_ABSENT:
		break;
	case TRY_SELF:
		gs_debug("skipping %s: %s", path, reason);
		break;
	case TRY_UNLOADABLE:
		/* A driver that is there but cannot load is worth knowing
		 * about even when another one is found later. */
		gs_warn("cannot load %s: %s", path, reason);
		break;
	}
	return false;
}

int gs_real_load(void)
{
	const char *explicit_path = getenv("GPUSWAP_REAL_LIBCUDA");
	const char *ld_path = getenv("LD_LIBRARY_PATH");
	struct stat self;
	bool have_self = self_identity(&self) == 0;
	int found;

	if (!have_self)
		gs_warn("cannot identify the shim's own file: a libcuda.so.1 that is the "
			"shim will only be recognised after loading it");

	if (explicit_path && *explicit_path) {
		char reason[512];

		if (try_open(explicit_path, &self, have_self, reason, sizeof(reason)) != TRY_OK) {
			gs_error("no real CUDA driver: GPUSWAP_REAL_LIBCUDA=%s: %s; point it at "
				 "the NVIDIA driver's libcuda.so.1. Every CUDA call will fail with "
				 "CUDA_ERROR_NO_DEVICE", explicit_path, reason);
			return -ENOENT;
		}
	} else {
		bool ok = false;

		for (const char *p = ld_path; p && *p && !ok;) {
			size_t len = strcspn(p, ":;");

			ok = search_dir(p, len, &self, have_self);
			p += len;
			if (*p)
				p++;
		}
		for (int i = 0; gs_real_search_dirs[i] && !ok; i++)
			ok = search_dir(gs_real_search_dirs[i], strlen(gs_real_search_dirs[i]),
					&self, have_self);
		if (!ok) {
			gs_error("no real CUDA driver: no " DRIVER_NAME " other than gpuswap in "
				 "$LD_LIBRARY_PATH or the driver directories (/usr/local/nvidia/lib64, "
				 "/usr/lib/x86_64-linux-gnu, /usr/lib64, /usr/lib, ...); set "
				 "GPUSWAP_REAL_LIBCUDA to the driver's path. Every CUDA call will "
				 "fail with CUDA_ERROR_NO_DEVICE");
			return -ENOENT;
		}
	}
	found = gs_real_table_load(&gs_real, real_handle);
	gs_info("real driver %s: %d of %d entry points", real_path, found, GS_API_COUNT);
	return 0;
}

void *gs_real_dlsym(const char *name)
{
	return real_handle ? dlsym(real_handle, name) : NULL;
}

const char *gs_real_path(void)
{
	return real_handle ? real_path : NULL;
}
