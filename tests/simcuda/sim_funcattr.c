/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Function attributes: the static resource use a kernel's code records (what
 * cuFuncGetAttribute reports and launches are checked against) and the
 * attributes an application may set on a CUfunction or CUkernel.
 */
#include <gelf.h>
#include <libelf.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_exec.h"

/* ---- device limits ---------------------------------------------------------- */

/* The launch-relevant columns of sim_device.c's per-architecture table (which
 * keeps it private); the values must stay equal to what cuDeviceGetAttribute
 * reports there. Ordered by compute capability; an unlisted one takes the
 * closest below. */
static const struct {
	int cc;
	int sm_count, threads_per_sm, blocks_per_sm, smem_optin, cluster_launch;
} arch_limits[] = {
	{ 70, 80, 2048, 32, 98304, 0 },   { 75, 40, 1024, 16, 65536, 0 },
	{ 80, 108, 2048, 32, 166912, 0 }, { 86, 84, 1536, 16, 101376, 0 },
	{ 89, 142, 1536, 24, 101376, 0 }, { 90, 132, 2048, 32, 232448, 1 },
	{ 100, 148, 2048, 32, 232448, 1 }, { 120, 188, 1536, 24, 101376, 1 },
};

int sim_device_limit(const struct sim_device *dev, CUdevice_attribute attrib)
{
	int cc = dev->sm_major * 10 + dev->sm_minor;
	size_t best = 0;

	for (size_t i = 0; i < sizeof(arch_limits) / sizeof(arch_limits[0]); i++)
		if (arch_limits[i].cc <= cc)
			best = i;
	switch (attrib) {
	case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT:
		return arch_limits[best].sm_count;
	case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR:
		return arch_limits[best].threads_per_sm;
	case CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR:
		return arch_limits[best].blocks_per_sm;
	case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN:
		return arch_limits[best].smem_optin;
	case CU_DEVICE_ATTRIBUTE_CLUSTER_LAUNCH:
		return arch_limits[best].cluster_launch;
	case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK:
		return 48 * 1024;
	case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK:
		return 1024;
	case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK:
		return 65536;
	default:
		sim_abort("simcuda", "no launch limit for device attribute %d", (int)attrib);
	}
}

/* ---- resources recorded in a cubin ------------------------------------------ */

/* .nv.info records (u8 format, u8 attribute, u16 value or size). */
#define EIFMT_SVAL 4
#define EIATTR_MAX_THREADS 0x05 /* SVAL u32 x, y, z from __launch_bounds__ / .maxntid */
#define EIATTR_REQNTID 0x10     /* SVAL u32 x, y, z from .reqntid */
#define EIATTR_FRAME_SIZE 0x11  /* SVAL u32 symbol, u32 bytes of local memory */
#define EIATTR_REGCOUNT 0x2f    /* SVAL u32 symbol, u32 registers */

static uint32_t rd32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Calls fn on every record of an .nv.info section. */
static void info_records(Elf_Data *data, void (*fn)(unsigned attr, const unsigned char *val,
						    size_t len, void *arg),
			 void *arg)
{
	const unsigned char *p = data->d_buf;
	size_t n = data->d_size, off = 0;

	while (off + 4 <= n) {
		unsigned fmt = p[off], attr = p[off + 1];
		size_t len = (size_t)p[off + 2] | (size_t)p[off + 3] << 8;
		if (fmt != EIFMT_SVAL) {
			off += 4;
			continue;
		}
		if (off + 4 + len > n)
			return;
		fn(attr, p + off + 4, len, arg);
		off += 4 + len;
	}
}

struct kernel_scan {
	size_t symbol;
	struct sim_kres *res;
	int bound_threads;
};

static void scan_global_info(unsigned attr, const unsigned char *val, size_t len, void *arg)
{
	struct kernel_scan *k = arg;

	if (len < 8 || rd32(val) != k->symbol)
		return;
	if (attr == EIATTR_FRAME_SIZE)
		k->res->local_bytes = (int)rd32(val + 4);
	else if (attr == EIATTR_REGCOUNT)
		k->res->regs = (int)rd32(val + 4);
}

static void scan_kernel_info(unsigned attr, const unsigned char *val, size_t len, void *arg)
{
	struct kernel_scan *k = arg;

	if ((attr == EIATTR_MAX_THREADS || attr == EIATTR_REQNTID) && len >= 12) {
		uint64_t n = (uint64_t)rd32(val) * rd32(val + 4) * rd32(val + 8);
		if (n && (!k->bound_threads || n < (uint64_t)k->bound_threads))
			k->bound_threads = n > 1024 ? 1024 : (int)n;
	}
}

static pthread_once_t elf_once = PTHREAD_ONCE_INIT;
static bool elf_ok;

static void elf_init(void)
{
	elf_ok = elf_version(EV_CURRENT) != EV_NONE;
}

static void cubin_resources(const struct gs_code *code, const char *name, struct sim_kres *res,
			    int *bound_threads)
{
	pthread_once(&elf_once, elf_init);
	if (!elf_ok)
		return;
	/* C++ kernel names can be long: no fixed buffers. */
	char *text = NULL, *info = NULL, *shared = NULL;
	if (asprintf(&text, ".text.%s", name) < 0 || asprintf(&info, ".nv.info.%s", name) < 0 ||
	    asprintf(&shared, ".nv.shared.%s", name) < 0)
		goto strings;
	Elf *elf = elf_memory(code->data, code->size);
	if (!elf)
		goto strings;

	size_t shstrndx;
	bool reserved_window = false;
	struct kernel_scan scan = { .res = res };
	Elf_Scn *global_info = NULL, *kernel_info = NULL;
	if (elf_getshdrstrndx(elf, &shstrndx) != 0)
		goto out;
	for (Elf_Scn *scn = elf_nextscn(elf, NULL); scn; scn = elf_nextscn(elf, scn)) {
		GElf_Shdr sh;
		if (!gelf_getshdr(scn, &sh))
			continue;
		const char *sname = elf_strptr(elf, shstrndx, sh.sh_name);
		if (!sname)
			continue;
		if (strcmp(sname, text) == 0) {
			/* nvcc keeps the register count in the top byte of the
			 * text section's sh_info, the kernel's symbol below it. */
			res->regs = (int)(sh.sh_info >> 24);
			scan.symbol = sh.sh_info & 0xffffff;
		} else if (strcmp(sname, shared) == 0) {
			res->static_shared = (int)sh.sh_size;
		} else if (strncmp(sname, ".nv.shared.reserved.", 20) == 0) {
			reserved_window = true;
		} else if (strcmp(sname, ".nv.info") == 0) {
			global_info = scn;
		} else if (strcmp(sname, info) == 0) {
			kernel_info = scn;
		}
	}
	/* sm_90 and later cubins lay the 1 KiB the system reserves per block
	 * (CU_DEVICE_ATTRIBUTE_RESERVED_SHARED_MEMORY_PER_BLOCK) into each
	 * kernel's shared section, next to a .nv.shared.reserved.N marker
	 * (seen with nvcc 13). It is no part of the kernel's own static shared
	 * memory, which is what the driver reports. */
	if (reserved_window)
		res->static_shared = res->static_shared > 1024 ? res->static_shared - 1024 : 0;
	Elf_Data *data;
	if (global_info && scan.symbol && (data = elf_getdata(global_info, NULL)))
		info_records(data, scan_global_info, &scan);
	if (kernel_info && (data = elf_getdata(kernel_info, NULL)))
		info_records(data, scan_kernel_info, &scan);
	*bound_threads = scan.bound_threads;
out:
	elf_end(elf);
strings:
	free(text);
	free(info);
	free(shared);
}

/* The largest block the register file allows: registers are allocated per
 * warp in units of 256. */
static int register_limited_threads(int regs, const struct sim_device *dev)
{
	if (regs <= 0)
		return 1024;
	int per_warp = (regs * 32 + 255) / 256 * 256;
	int warps = sim_device_limit(dev, CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK) / per_warp;
	int threads = warps * 32;
	return threads > 1024 ? 1024 : threads;
}

void sim_kernel_resources(const struct gs_code *code, const struct gs_code_info *info,
			  size_t kernel, const struct sim_device *dev, struct sim_kres *res)
{
	int bound_threads = 0;
	int sm = dev->sm_major * 10 + dev->sm_minor;

	memset(res, 0, sizeof(*res));
	if (code->kind == GS_IMAGE_CUBIN) {
		cubin_resources(code, info->kernels[kernel].name, res, &bound_threads);
		res->binary_version = (int)code->arch;
	} else {
		/* The simulator compiles no PTX: report the figures of a
		 * small kernel, as the JIT would give for one, built for the
		 * device itself. */
		res->regs = 16;
		res->binary_version = sm;
	}
	res->ptx_version = (int)code->arch;
	for (size_t i = 0; i < info->nglobals; i++)
		if (info->globals[i].flags & GS_GLOBAL_CONSTANT)
			res->const_bytes += (int)info->globals[i].size;
	res->max_threads = register_limited_threads(res->regs, dev);
	if (bound_threads && bound_threads < res->max_threads)
		res->max_threads = bound_threads;
}

/* ---- settable attributes ------------------------------------------------------ */

void sim_fattrs_default(struct sim_fattrs *a, const struct sim_kres *res)
{
	memset(a, 0, sizeof(*a));
	/* Without opting in, a block gets the 48 KiB every GPU has, less what
	 * the kernel declares statically. */
	a->max_dynamic_shared = 48 * 1024 - res->static_shared;
	if (a->max_dynamic_shared < 0)
		a->max_dynamic_shared = 0;
	a->carveout = -1;
	a->cache_config = CU_FUNC_CACHE_PREFER_NONE;
}

CUresult sim_fattr_get(const struct sim_fattrs *a, const struct sim_kres *res,
		       CUfunction_attribute attrib, int *value)
{
	switch (attrib) {
	case CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *value = res->max_threads; break;
	case CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES: *value = res->static_shared; break;
	case CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES: *value = res->const_bytes; break;
	case CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES: *value = res->local_bytes; break;
	case CU_FUNC_ATTRIBUTE_NUM_REGS: *value = res->regs; break;
	case CU_FUNC_ATTRIBUTE_PTX_VERSION: *value = res->ptx_version; break;
	case CU_FUNC_ATTRIBUTE_BINARY_VERSION: *value = res->binary_version; break;
	case CU_FUNC_ATTRIBUTE_CACHE_MODE_CA: *value = 0; break;
	case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: *value = a->max_dynamic_shared; break;
	case CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT: *value = a->carveout; break;
	case CU_FUNC_ATTRIBUTE_CLUSTER_SIZE_MUST_BE_SET: *value = 0; break;
	case CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_WIDTH: *value = a->cluster_dim[0]; break;
	case CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_HEIGHT: *value = a->cluster_dim[1]; break;
	case CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_DEPTH: *value = a->cluster_dim[2]; break;
	case CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED: *value = a->non_portable_cluster; break;
	case CU_FUNC_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE: *value = a->cluster_policy; break;
	default:
		return CUDA_ERROR_INVALID_VALUE;
	}
	return CUDA_SUCCESS;
}

CUresult sim_fattr_set(struct sim_fattrs *a, const struct sim_kres *res,
		       const struct sim_device *dev, CUfunction_attribute attrib, int value)
{
	bool clusters = sim_device_limit(dev, CU_DEVICE_ATTRIBUTE_CLUSTER_LAUNCH) != 0;

	switch (attrib) {
	case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: {
		int optin = sim_device_limit(dev, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN);
		if (value < 0 || value > optin - res->static_shared)
			return CUDA_ERROR_INVALID_VALUE;
		a->max_dynamic_shared = value;
		return CUDA_SUCCESS;
	}
	case CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT:
		if (value < -1 || value > 100)
			return CUDA_ERROR_INVALID_VALUE;
		a->carveout = value;
		return CUDA_SUCCESS;
	case CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_WIDTH:
	case CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_HEIGHT:
	case CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_DEPTH:
		if (!clusters)
			return CUDA_ERROR_NOT_SUPPORTED;
		if (value < 0)
			return CUDA_ERROR_INVALID_VALUE;
		a->cluster_dim[attrib - CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_WIDTH] = value;
		return CUDA_SUCCESS;
	case CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED:
		if (!clusters)
			return CUDA_ERROR_NOT_SUPPORTED;
		if (value != 0 && value != 1)
			return CUDA_ERROR_INVALID_VALUE;
		a->non_portable_cluster = value;
		return CUDA_SUCCESS;
	case CU_FUNC_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE:
		if (value < CU_CLUSTER_SCHEDULING_POLICY_DEFAULT ||
		    value > CU_CLUSTER_SCHEDULING_POLICY_LOAD_BALANCING)
			return CUDA_ERROR_INVALID_VALUE;
		a->cluster_policy = value;
		return CUDA_SUCCESS;
	default:
		/* The rest describe the code and are read-only. */
		return CUDA_ERROR_INVALID_VALUE;
	}
}

void sim_fattrs_copy(struct sim_fattrs *to, const struct sim_fattrs *from, unsigned mask)
{
	if (mask & SIM_FATTR_BIT(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES))
		to->max_dynamic_shared = from->max_dynamic_shared;
	if (mask & SIM_FATTR_BIT(CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT))
		to->carveout = from->carveout;
	for (int i = 0; i < 3; i++)
		if (mask & SIM_FATTR_BIT(CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_WIDTH + i))
			to->cluster_dim[i] = from->cluster_dim[i];
	if (mask & SIM_FATTR_BIT(CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED))
		to->non_portable_cluster = from->non_portable_cluster;
	if (mask & SIM_FATTR_BIT(CU_FUNC_ATTRIBUTE_CLUSTER_SCHEDULING_POLICY_PREFERENCE))
		to->cluster_policy = from->cluster_policy;
	if (mask & SIM_FATTR_CACHE_BIT)
		to->cache_config = from->cache_config;
}
