/* SPDX-License-Identifier: Apache-2.0 */
/*
 * simcuda core: the environment, cuInit, every entry point's prologue
 * (initialisation check, host-function refusal, fault injection), the handle
 * registry, cuGetProcAddress and cuGetExportTable.
 *
 * Environment (read once, at the first call of any entry point):
 *   SIMCUDA_DEVICES=N        number of devices (0..SIM_MAX_DEVICES, default 2;
 *                            0 makes cuInit fail with CUDA_ERROR_NO_DEVICE)
 *   SIMCUDA_ARCH=sm_80,...   compute capability per device; a shorter list
 *                            repeats (default sm_80,sm_90)
 *   SIMCUDA_MEM_MB=M[,M...]  memory per device in MiB, repeating (default 1024)
 *   SIMCUDA_VMM=1[,0...]     whether each device supports VMM, repeating
 *                            (default 1)
 *   SIMCUDA_P2P=0|1          whether distinct devices can be peers (default 1)
 *   SIMCUDA_VA_BASE=0xADDR   where the device VA windows start (sim_mem.c)
 *   SIMCUDA_FAIL=spec[,spec] fault injection, see fault_parse()
 * A malformed value aborts: a fixture that silently ignores a typo would let
 * a test pass for the wrong reason.
 */
#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "proctable.h"
#include "sim_internal.h"
#include "sim_mem.h"

/* The 4-argument CUDA 11.3 ABI and the pre-11.4 cuDeviceGetUuid: cuda.h
 * only declares them for the driver's own build, and maps the names to the
 * newer symbols for everybody else. */
#undef cuGetProcAddress
#undef cuDeviceGetUuid
SIM_EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion,
				     cuuint64_t flags);

/* ---- diagnostics ------------------------------------------------------------ */

_Noreturn void sim_abort(const char *fn, const char *fmt, ...)
{
	va_list ap;

	flockfile(stderr);
	fprintf(stderr, "simcuda: %s: ", fn);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	funlockfile(stderr);
	fflush(stderr);
	abort();
}

static struct sim_device devices[SIM_MAX_DEVICES];
static int device_count;
static pthread_once_t env_once = PTHREAD_ONCE_INIT;
static const char *_Atomic env_fn; /* entry point that triggered the parse, for messages */

/* ---- fault injection ------------------------------------------------------------ */

/*
 * SIMCUDA_FAIL=<function>:<nth>[+][:<CUresult>][,...]
 *
 * The nth call (counting from 1) of <function> returns <CUresult> (a name
 * such as CUDA_ERROR_OUT_OF_MEMORY or a number; default CUDA_ERROR_UNKNOWN)
 * before doing anything else, so it has no side effects. With '+', that call
 * and every later one fail. <function> and the entry points are compared by
 * base name: the _ptds/_ptsz suffix and a _v<N> version suffix are dropped,
 * so "cuMemAlloc" and "cuMemAlloc_v2" name the same counter, and the calls of
 * cuMemcpyHtoD_v2 and cuMemcpyHtoD_v2_ptds count together. A call is
 * counted once the initialisation check has passed (calls answered with
 * CUDA_ERROR_NOT_INITIALIZED are not counted). Counters are atomic, so with
 * several threads exactly one call is the nth.
 */
#define FAULT_MAX 32

static struct fault {
	char base[96];
	long nth;
	bool and_later;
	CUresult code;
	atomic_long calls;
} faults[FAULT_MAX];
static int fault_count;

static void base_name(const char *fn, char *out, size_t len)
{
	size_t n = strlen(fn);
	if (n >= len)
		n = len - 1;
	memcpy(out, fn, n);
	out[n] = '\0';
	if (n > 5 && (!strcmp(out + n - 5, "_ptds") || !strcmp(out + n - 5, "_ptsz")))
		out[n -= 5] = '\0';
	size_t d = n;
	while (d > 0 && isdigit((unsigned char)out[d - 1]))
		d--;
	if (d < n && d >= 2 && out[d - 1] == 'v' && out[d - 2] == '_')
		out[d - 2] = '\0';
}

static void fault_parse(const char *spec)
{
	if (!spec || !*spec)
		return;
	char *copy = strdup(spec), *save = NULL;
	if (!copy)
		sim_abort(env_fn, "out of host memory");
	for (char *item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
		if (fault_count == FAULT_MAX)
			sim_abort(env_fn, "SIMCUDA_FAIL: more than %d entries", FAULT_MAX);
		struct fault *f = &faults[fault_count++];
		char *name = item, *nth = strchr(item, ':'), *code = NULL, *end;
		if (!nth)
			sim_abort(env_fn, "SIMCUDA_FAIL: '%s' is not <function>:<nth>[+][:<CUresult>]",
				  item);
		*nth++ = '\0';
		code = strchr(nth, ':');
		if (code)
			*code++ = '\0';
		errno = 0;
		f->nth = strtol(nth, &end, 10);
		f->and_later = *end == '+';
		if (errno || end == nth || f->nth < 1 || *(end + f->and_later) || !*name)
			sim_abort(env_fn, "SIMCUDA_FAIL: bad count '%s' for %s (want N or N+, N >= 1)",
				  nth, name);
		base_name(name, f->base, sizeof(f->base));
		f->code = CUDA_ERROR_UNKNOWN;
		if (code && !sim_result_parse(code, &f->code))
			sim_abort(env_fn, "SIMCUDA_FAIL: '%s' is not a CUresult name or number", code);
		if (f->code == CUDA_SUCCESS)
			sim_abort(env_fn, "SIMCUDA_FAIL: %s cannot fail with CUDA_SUCCESS", name);
	}
	free(copy);
}

static CUresult fault_check(const char *fn)
{
	if (!fault_count)
		return CUDA_SUCCESS;
	char base[96];
	base_name(fn, base, sizeof(base));
	CUresult rc = CUDA_SUCCESS;
	for (int i = 0; i < fault_count; i++) {
		struct fault *f = &faults[i];
		if (strcmp(f->base, base) != 0)
			continue;
		long n = atomic_fetch_add(&f->calls, 1) + 1;
		if (rc == CUDA_SUCCESS && (n == f->nth || (f->and_later && n > f->nth)))
			rc = f->code;
	}
	return rc;
}

/* ---- environment and devices ------------------------------------------------- */


static const struct {
	int major, minor;
	const char *model;
} arch_models[] = {
	{ 7, 0, "Tesla V100-SXM2" },  { 7, 5, "Tesla T4" },
	{ 8, 0, "A100-SXM4" },        { 8, 6, "RTX A6000" },
	{ 8, 9, "L40S" },             { 9, 0, "H100 80GB HBM3" },
	{ 10, 0, "B200" },            { 12, 0, "RTX PRO 6000" },
};

/* The i-th element of a comma-separated list, cycling when the list is
 * shorter than i; copies it to buf. */
static const char *list_item(const char *list, int i, char *buf, size_t len)
{
	int n = 1;
	for (const char *c = list; *c; c++)
		n += *c == ',';
	i %= n;
	const char *start = list;
	while (i-- > 0)
		start = strchr(start, ',') + 1;
	size_t l = strcspn(start, ",");
	if (l >= len)
		l = len - 1;
	memcpy(buf, start, l);
	buf[l] = '\0';
	return buf;
}

static long env_number(const char *name, const char *text, long min, long max)
{
	char *end;
	errno = 0;
	long v = strtol(text, &end, 0);
	if (errno || end == text || *end || v < min || v > max)
		sim_abort(env_fn, "%s: '%s' is not a number in [%ld, %ld]", name, text, min, max);
	return v;
}

static void parse_arch(const char *text, struct sim_device *d)
{
	char *end;
	if (strncmp(text, "sm_", 3) != 0 || !isdigit((unsigned char)text[3]))
		sim_abort(env_fn, "SIMCUDA_ARCH: '%s' is not of the form sm_XY", text);
	long cc = strtol(text + 3, &end, 10);
	/* sm_90a / sm_100f name the same compute capability. */
	if ((*end && !((*end == 'a' || *end == 'f') && end[1] == '\0')) || cc < 30 || cc > 199)
		sim_abort(env_fn, "SIMCUDA_ARCH: '%s' is not of the form sm_XY", text);
	d->sm_major = (int)(cc / 10);
	d->sm_minor = (int)(cc % 10);
}

static void env_parse(void)
{
	const char *e = getenv("SIMCUDA_DEVICES");
	device_count = e ? (int)env_number("SIMCUDA_DEVICES", e, 0, SIM_MAX_DEVICES) : 2;

	const char *arch = getenv("SIMCUDA_ARCH");
	const char *mem = getenv("SIMCUDA_MEM_MB");
	const char *vmm = getenv("SIMCUDA_VMM");
	const char *p2p = getenv("SIMCUDA_P2P");
	bool p2p_on = p2p ? env_number("SIMCUDA_P2P", p2p, 0, 1) != 0 : true;
	char buf[64];

	for (int i = 0; i < device_count; i++) {
		struct sim_device *d = &devices[i];
		d->ordinal = i;
		parse_arch(list_item(arch && *arch ? arch : "sm_80,sm_90", i, buf, sizeof(buf)), d);
		long mb = mem ? env_number("SIMCUDA_MEM_MB", list_item(mem, i, buf, sizeof(buf)),
					   4, 1L << 20)
			      : 1024;
		d->mem_total = (size_t)mb << 20;
		d->vmm = vmm ? env_number("SIMCUDA_VMM", list_item(vmm, i, buf, sizeof(buf)), 0, 1) != 0
			     : true;
		d->p2p = p2p_on;

		const char *model = NULL;
		for (size_t m = 0; m < sizeof(arch_models) / sizeof(arch_models[0]); m++)
			if (arch_models[m].major == d->sm_major && arch_models[m].minor == d->sm_minor)
				model = arch_models[m].model;
		/* Distinct names, so a test can tell devices apart by name too. */
		if (model)
			snprintf(d->name, sizeof(d->name), "NVIDIA %s (simcuda %d)", model, i);
		else
			snprintf(d->name, sizeof(d->name), "simcuda sm_%d%d device %d", d->sm_major,
				 d->sm_minor, i);

		/* Stable across runs (an image records the source UUID), distinct
		 * per ordinal, and shaped like an RFC 4122 version-4 UUID. */
		static const char prefix[6] = { 's', 'i', 'm', 'c', 'u', 'd' };
		memcpy(d->uuid.bytes, prefix, sizeof(prefix));
		d->uuid.bytes[6] = 0x40;		       /* version 4 */
		d->uuid.bytes[7] = (char)(d->sm_major * 10 + d->sm_minor);
		d->uuid.bytes[8] = (char)0x80;		       /* RFC 4122 variant */
		memset(d->uuid.bytes + 9, 0x5a, 6);
		d->uuid.bytes[15] = (char)i;

		d->pci_bus = (0x18 + 0x11 * i) & 0xff;
	}
	sim_mem_layout(devices, device_count, env_fn);
	fault_parse(getenv("SIMCUDA_FAIL"));
}

int sim_device_count(void)
{
	return device_count;
}

const struct sim_device *sim_device(int ordinal)
{
	if (ordinal < 0 || ordinal >= device_count)
		return NULL;
	return &devices[ordinal];
}

const struct sim_device *sim_device_get(CUdevice dev, const char *fn)
{
	const struct sim_device *d = sim_device(dev);
	if (!d)
		sim_abort(fn, "invalid CUdevice %d (there are %d devices)", dev, device_count);
	return d;
}

/* ---- entry ----------------------------------------------------------------------- */

static atomic_bool initialized;

static void env_once_fn(void)
{
	env_parse();
}

CUresult sim_enter(const char *fn, bool needs_init)
{
	/* pthread_once has no argument: the first caller's name is only used
	 * for messages, and a racing second caller waits inside pthread_once. */
	if (!env_fn)
		env_fn = fn;
	pthread_once(&env_once, env_once_fn);
	if (needs_init && !atomic_load_explicit(&initialized, memory_order_acquire))
		return CUDA_ERROR_NOT_INITIALIZED;
	/* Host functions and kernel emulations run on stream workers; the
	 * driver refuses calls from there. Pure queries (needs_init false:
	 * error strings, versions, look-ups) stay allowed. */
	if (needs_init && sim_exec_in_user_code())
		return CUDA_ERROR_NOT_PERMITTED;
	return fault_check(fn);
}

static pthread_mutex_t init_lock = PTHREAD_MUTEX_INITIALIZER;

SIM_EXPORT CUresult cuInit(unsigned int Flags)
{
	CUresult rc = sim_enter("cuInit", false);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (Flags != 0)
		return CUDA_ERROR_INVALID_VALUE;
	if (device_count == 0)
		return CUDA_ERROR_NO_DEVICE;
	pthread_mutex_lock(&init_lock);
	if (!atomic_load(&initialized)) {
		rc = sim_mem_init("cuInit");
		if (rc == CUDA_SUCCESS)
			atomic_store_explicit(&initialized, true, memory_order_release);
	}
	pthread_mutex_unlock(&init_lock);
	return rc;
}

SIM_EXPORT CUresult cuDriverGetVersion(int *driverVersion)
{
	CUresult rc = sim_enter("cuDriverGetVersion", false);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!driverVersion)
		return CUDA_ERROR_INVALID_VALUE;
	*driverVersion = SIM_DRIVER_VERSION;
	return CUDA_SUCCESS;
}

/* ---- handles ----------------------------------------------------------------------- */

#define SIM_OBJ_MAGIC 0x53494d43u /* "SIMC" */

static const char *const kind_names[] = {
	[SIM_KIND_CTX] = "CUcontext",       [SIM_KIND_STREAM] = "CUstream",
	[SIM_KIND_EVENT] = "CUevent",       [SIM_KIND_MODULE] = "CUmodule",
	[SIM_KIND_FUNCTION] = "CUfunction", [SIM_KIND_LIBRARY] = "CUlibrary",
	[SIM_KIND_KERNEL] = "CUkernel",     [SIM_KIND_LINK] = "CUlinkState",
	[SIM_KIND_MEMHANDLE] = "CUmemGenericAllocationHandle",
};

static const char *kind_name(enum sim_kind k)
{
	if ((size_t)k < sizeof(kind_names) / sizeof(kind_names[0]) && kind_names[k])
		return kind_names[k];
	return "handle";
}

/* Every object ever created, live or tombstone: an open-addressing set of
 * addresses that is never shrunk, so "is this a handle we made" can be
 * answered for any value without dereferencing it. */
static struct {
	pthread_rwlock_t lock;
	uintptr_t *slots;
	size_t cap, count;
} registry = { .lock = PTHREAD_RWLOCK_INITIALIZER };

static size_t slot_hash(uintptr_t v, size_t cap)
{
	v ^= v >> 33;
	v *= 0xff51afd7ed558ccdULL;
	v ^= v >> 33;
	return (size_t)v & (cap - 1);
}

static void registry_put(uintptr_t v)
{
	size_t i = slot_hash(v, registry.cap);
	while (registry.slots[i])
		i = (i + 1) & (registry.cap - 1);
	registry.slots[i] = v;
}

static bool registry_has(uintptr_t v)
{
	if (!registry.cap)
		return false;
	for (size_t i = slot_hash(v, registry.cap); registry.slots[i]; i = (i + 1) & (registry.cap - 1))
		if (registry.slots[i] == v)
			return true;
	return false;
}

void *sim_handle_new(enum sim_kind kind, size_t size)
{
	struct sim_obj *o = calloc(1, size < sizeof(*o) ? sizeof(*o) : size);
	if (!o)
		sim_abort("sim_handle_new", "out of host memory");
	o->magic = SIM_OBJ_MAGIC;
	o->kind = kind;
	pthread_rwlock_wrlock(&registry.lock);
	if (2 * (registry.count + 1) > registry.cap) {
		uintptr_t *old = registry.slots;
		size_t old_cap = registry.cap;
		registry.cap = old_cap ? 2 * old_cap : 1024;
		registry.slots = calloc(registry.cap, sizeof(*registry.slots));
		if (!registry.slots)
			sim_abort("sim_handle_new", "out of host memory");
		for (size_t i = 0; i < old_cap; i++)
			if (old[i])
				registry_put(old[i]);
		free(old);
	}
	registry_put((uintptr_t)o);
	registry.count++;
	pthread_rwlock_unlock(&registry.lock);
	return o;
}

void *sim_handle_get(enum sim_kind kind, const void *handle, const char *fn)
{
	if (!handle)
		sim_abort(fn, "NULL %s", kind_name(kind));
	pthread_rwlock_rdlock(&registry.lock);
	if (!registry_has((uintptr_t)handle)) {
		pthread_rwlock_unlock(&registry.lock);
		sim_abort(fn, "%p is not a %s (garbage or foreign handle)", handle, kind_name(kind));
	}
	const struct sim_obj *o = handle;
	enum sim_kind got = o->kind;
	bool dead = o->dead;
	pthread_rwlock_unlock(&registry.lock);
	if (got != kind)
		sim_abort(fn, "%p is a %s, not a %s", handle, kind_name(got), kind_name(kind));
	if (dead)
		sim_abort(fn, "%s %p was destroyed", kind_name(kind), handle);
	return (void *)handle;
}

bool sim_handle_is_live(enum sim_kind kind, const void *handle)
{
	bool live = false;
	pthread_rwlock_rdlock(&registry.lock);
	if (handle && registry_has((uintptr_t)handle)) {
		const struct sim_obj *o = handle;
		live = o->kind == kind && !o->dead;
	}
	pthread_rwlock_unlock(&registry.lock);
	return live;
}

void sim_handle_destroy(void *obj)
{
	struct sim_obj *o = obj;
	/* Under the registry lock: sim_handle_get reads `dead` under it too. */
	pthread_rwlock_wrlock(&registry.lock);
	o->dead = true;
	pthread_rwlock_unlock(&registry.lock);
}

/* ---- cuGetProcAddress / cuGetExportTable --------------------------------------------- */

static void *self_handle;
static uintptr_t self_base;
static pthread_once_t self_once = PTHREAD_ONCE_INIT;

/* The simulator's own dlopen handle. RTLD_DEFAULT would search the global
 * scope first, where a preloaded shim exports the same names: a look-up must
 * return the simulator's implementation, as the real driver returns its own. */
static const char self_anchor; /* any object of this library, for dladdr */

static void self_open(void)
{
	Dl_info info;
	if (!dladdr(&self_anchor, &info) || !info.dli_fname)
		sim_abort("cuGetProcAddress_v2", "dladdr on the simulator itself failed");
	self_base = (uintptr_t)info.dli_fbase;
	self_handle = dlopen(info.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_LOCAL);
	if (!self_handle)
		sim_abort("cuGetProcAddress_v2", "dlopen(%s, RTLD_NOLOAD): %s", info.dli_fname,
			  dlerror());
}

/* A symbol defined by the simulator itself, or NULL. dlsym on a handle also
 * searches the object's dependencies, hence the check of where it lives. */
static void *self_symbol(const char *name)
{
	pthread_once(&self_once, self_open);
	void *p = dlsym(self_handle, name);
	Dl_info info;
	if (!p || !dladdr(p, &info) || (uintptr_t)info.dli_fbase != self_base)
		return NULL;
	return p;
}

/*
 * The exported name of an ABI cuda.h no longer declares (an entry without a
 * symbol). The driver names the ABIs of one function in order of version:
 * NAME, NAME_v2, NAME_v3, ... (cuCtxCreate 2000/3020/11040/12050 are
 * cuCtxCreate, cuCtxCreate_v2, _v3, _v4), so the k-th default-stream entry is
 * NAME_v<k>. Whether the simulator exports that name decides the answer.
 */
static bool legacy_symbol(const struct gs_proc_entry *e, char *buf, size_t len)
{
	const struct gs_proc_entry *first;
	size_t n = gs_proc_entries(e->name, &first), k = 0;
	for (size_t i = 0; i < n && &first[i] != e; i++)
		k += !first[i].ptds;
	int w = k ? snprintf(buf, len, "%s_v%zu", e->name, k + 1) : snprintf(buf, len, "%s", e->name);
	return w > 0 && (size_t)w < len;
}

static CUresult proc_address(const char *fn, const char *symbol, void **pfn, int cudaVersion,
			     cuuint64_t flags, CUdriverProcAddressQueryResult *status)
{
	CUdriverProcAddressQueryResult st = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;

	if (!symbol || !pfn)
		return CUDA_ERROR_INVALID_VALUE;
	*pfn = NULL;
	if (flags & ~(cuuint64_t)(CU_GET_PROC_ADDRESS_LEGACY_STREAM |
				  CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM))
		return CUDA_ERROR_INVALID_VALUE;
	/* Documented: asking for a CUDA newer than the driver is invalid. */
	if (cudaVersion > SIM_DRIVER_VERSION)
		return CUDA_ERROR_INVALID_VALUE;
	const struct gs_proc_entry *e = gs_proc_lookup(symbol, cudaVersion, flags, &st);
	char legacy[128];
	const char *name = e ? e->symbol : NULL;
	if (e && !name && !e->ptds && legacy_symbol(e, legacy, sizeof(legacy)))
		name = legacy;
	void *p = name ? self_symbol(name) : NULL;
	if (e && !p)
		st = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND;
	if (status)
		*status = p ? CU_GET_PROC_ADDRESS_SUCCESS : st;
	if (!p)
		return CUDA_ERROR_NOT_FOUND;
	*pfn = p;
	return CUDA_SUCCESS;
}

/* No initialisation needed: cudart looks entry points up before cuInit. */
SIM_EXPORT CUresult cuGetProcAddress_v2(const char *symbol, void **pfn, int cudaVersion,
					cuuint64_t flags, CUdriverProcAddressQueryResult *symbolStatus)
{
	CUresult rc = sim_enter("cuGetProcAddress_v2", false);
	if (rc != CUDA_SUCCESS)
		return rc;
	return proc_address("cuGetProcAddress_v2", symbol, pfn, cudaVersion, flags, symbolStatus);
}

SIM_EXPORT CUresult cuGetProcAddress(const char *symbol, void **pfn, int cudaVersion,
				     cuuint64_t flags)
{
	CUresult rc = sim_enter("cuGetProcAddress", false);
	if (rc != CUDA_SUCCESS)
		return rc;
	return proc_address("cuGetProcAddress", symbol, pfn, cudaVersion, flags, NULL);
}

/* The undocumented tables cudart asks for are the real driver's private
 * interface; the simulator has none, which cudart tolerates. */
SIM_EXPORT CUresult cuGetExportTable(const void **ppExportTable, const CUuuid *pExportTableId)
{
	CUresult rc = sim_enter("cuGetExportTable", false);
	if (rc != CUDA_SUCCESS)
		return rc;
	if (!ppExportTable || !pExportTableId)
		return CUDA_ERROR_INVALID_VALUE;
	*ppExportTable = NULL;
	return CUDA_ERROR_NOT_SUPPORTED;
}
