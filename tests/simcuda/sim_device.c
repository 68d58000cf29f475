/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Device queries. Values follow the data-center part of each compute
 * capability (A100 for sm_80, H100 SXM for sm_90, ...), so code that sizes
 * launches or checks features from attributes sees what it would on such a
 * GPU. Features the simulator does not implement (managed memory, memory
 * pools, arrays and textures beyond their limits) report as unsupported, so
 * well-behaved callers never reach them.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sim_internal.h"

#undef cuDeviceGetUuid
SIM_EXPORT CUresult cuDeviceGetUuid(CUuuid *uuid, CUdevice dev);

struct arch_props {
	int major, minor;
	int sm_count;
	int clock_khz, mem_clock_khz, bus_width;
	int l2_bytes, max_persisting_l2;
	int smem_per_block_optin, smem_per_sm;
	int threads_per_sm, blocks_per_sm;
	int cluster_launch;
};

/* Ordered by compute capability; an unlisted one takes the closest below. */
static const struct arch_props arch_props[] = {
	{ 7, 0, 80, 1530000, 877000, 4096, 6291456, 0, 98304, 98304, 2048, 32, 0 },
	{ 7, 5, 40, 1590000, 5001000, 256, 4194304, 0, 65536, 65536, 1024, 16, 0 },
	{ 8, 0, 108, 1410000, 1215000, 5120, 41943040, 31457280, 166912, 167936, 2048, 32, 0 },
	{ 8, 6, 84, 1800000, 8001000, 384, 6291456, 4194304, 101376, 102400, 1536, 16, 0 },
	{ 8, 9, 142, 2520000, 9001000, 384, 100663296, 75497472, 101376, 102400, 1536, 24, 0 },
	{ 9, 0, 132, 1980000, 2619000, 5120, 52428800, 39321600, 232448, 233472, 2048, 32, 1 },
	{ 10, 0, 148, 1965000, 3996000, 8192, 132120576, 82837504, 232448, 233472, 2048, 32, 1 },
	{ 12, 0, 188, 2617000, 14001000, 512, 134217728, 83886080, 101376, 102400, 1536, 24, 1 },
};

static const struct arch_props *props_of(const struct sim_device *d)
{
	const struct arch_props *best = &arch_props[0];
	for (size_t i = 0; i < sizeof(arch_props) / sizeof(arch_props[0]); i++) {
		const struct arch_props *p = &arch_props[i];
		if (p->major * 10 + p->minor <= d->sm_major * 10 + d->sm_minor)
			best = p;
	}
	return best;
}

SIM_EXPORT CUresult cuDeviceGet(CUdevice *device, int ordinal)
{
	SIM_ENTER("cuDeviceGet");
	if (!device)
		return CUDA_ERROR_INVALID_VALUE;
	/* Probing ordinals is legitimate: an error, not an abort. */
	if (!sim_device(ordinal))
		return CUDA_ERROR_INVALID_DEVICE;
	*device = ordinal;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuDeviceGetCount(int *count)
{
	SIM_ENTER("cuDeviceGetCount");
	if (!count)
		return CUDA_ERROR_INVALID_VALUE;
	*count = sim_device_count();
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuDeviceGetName(char *name, int len, CUdevice dev)
{
	SIM_ENTER("cuDeviceGetName");
	const struct sim_device *d = sim_device_get(dev, "cuDeviceGetName");
	if (!name || len <= 0)
		return CUDA_ERROR_INVALID_VALUE;
	snprintf(name, (size_t)len, "%s", d->name);
	return CUDA_SUCCESS;
}

static CUresult device_uuid(const char *fn, CUuuid *uuid, CUdevice dev)
{
	SIM_ENTER(fn);
	const struct sim_device *d = sim_device_get(dev, fn);
	if (!uuid)
		return CUDA_ERROR_INVALID_VALUE;
	*uuid = d->uuid;
	return CUDA_SUCCESS;
}

/* The two ABIs differ only for MIG instances, which the simulator has none of. */
SIM_EXPORT CUresult cuDeviceGetUuid(CUuuid *uuid, CUdevice dev)
{
	return device_uuid("cuDeviceGetUuid", uuid, dev);
}

SIM_EXPORT CUresult cuDeviceGetUuid_v2(CUuuid *uuid, CUdevice dev)
{
	return device_uuid("cuDeviceGetUuid_v2", uuid, dev);
}

SIM_EXPORT CUresult cuDeviceTotalMem_v2(size_t *bytes, CUdevice dev)
{
	SIM_ENTER("cuDeviceTotalMem_v2");
	const struct sim_device *d = sim_device_get(dev, "cuDeviceTotalMem_v2");
	if (!bytes)
		return CUDA_ERROR_INVALID_VALUE;
	*bytes = d->mem_total;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuDeviceComputeCapability(int *major, int *minor, CUdevice dev)
{
	SIM_ENTER("cuDeviceComputeCapability");
	const struct sim_device *d = sim_device_get(dev, "cuDeviceComputeCapability");
	if (!major || !minor)
		return CUDA_ERROR_INVALID_VALUE;
	*major = d->sm_major;
	*minor = d->sm_minor;
	return CUDA_SUCCESS;
}

bool sim_device_attribute(const struct sim_device *d, CUdevice_attribute a, int *v)
{
	const struct arch_props *p = props_of(d);
	int cc = d->sm_major * 10 + d->sm_minor;

	switch (a) {
	case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *v = 1024; break;
	case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X: *v = 1024; break;
	case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: *v = 1024; break;
	case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: *v = 64; break;
	case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: *v = 2147483647; break;
	case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y: *v = 65535; break;
	case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: *v = 65535; break;
	case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: *v = 49152; break;
	case CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY: *v = 65536; break;
	case CU_DEVICE_ATTRIBUTE_WARP_SIZE: *v = 32; break;
	case CU_DEVICE_ATTRIBUTE_MAX_PITCH: *v = 2147483647; break;
	case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK: *v = 65536; break;
	case CU_DEVICE_ATTRIBUTE_CLOCK_RATE: *v = p->clock_khz; break;
	case CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT: *v = 512; break;
	case CU_DEVICE_ATTRIBUTE_GPU_OVERLAP: *v = 1; break;
	case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *v = p->sm_count; break;
	case CU_DEVICE_ATTRIBUTE_KERNEL_EXEC_TIMEOUT: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_INTEGRATED: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY: *v = 1; break;
	case CU_DEVICE_ATTRIBUTE_COMPUTE_MODE: *v = CU_COMPUTEMODE_DEFAULT; break;
	case CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_WIDTH: *v = 131072; break;
	case CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_WIDTH: *v = 131072; break;
	case CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_HEIGHT: *v = 65536; break;
	case CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_WIDTH: *v = 16384; break;
	case CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_HEIGHT: *v = 16384; break;
	case CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_DEPTH: *v = 16384; break;
	case CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LAYERED_WIDTH: *v = 32768; break;
	case CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LAYERED_HEIGHT: *v = 32768; break;
	case CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE2D_LAYERED_LAYERS: *v = 2048; break;
	case CU_DEVICE_ATTRIBUTE_SURFACE_ALIGNMENT: *v = 512; break;
	case CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS: *v = 1; break;
	case CU_DEVICE_ATTRIBUTE_ECC_ENABLED: *v = cc >= 80 && cc != 86 && cc != 89 && cc != 120; break;
	case CU_DEVICE_ATTRIBUTE_PCI_BUS_ID: *v = d->pci_bus; break;
	case CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_TCC_DRIVER: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE: *v = p->mem_clock_khz; break;
	case CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH: *v = p->bus_width; break;
	case CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE: *v = p->l2_bytes; break;
	case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR: *v = p->threads_per_sm; break;
	case CU_DEVICE_ATTRIBUTE_ASYNC_ENGINE_COUNT: *v = 3; break;
	case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING: *v = 1; break;
	case CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_LAYERED_WIDTH: *v = 32768; break;
	case CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_LAYERED_LAYERS: *v = 2048; break;
	case CU_DEVICE_ATTRIBUTE_TEXTURE_PITCH_ALIGNMENT: *v = 32; break;
	case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *v = d->sm_major; break;
	case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *v = d->sm_minor; break;
	case CU_DEVICE_ATTRIBUTE_STREAM_PRIORITIES_SUPPORTED: *v = 1; break;
	case CU_DEVICE_ATTRIBUTE_GLOBAL_L1_CACHE_SUPPORTED: *v = 1; break;
	case CU_DEVICE_ATTRIBUTE_LOCAL_L1_CACHE_SUPPORTED: *v = 1; break;
	case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: *v = p->smem_per_sm; break;
	case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR: *v = 65536; break;
	/* Managed memory is not simulated: say so, so callers do not use it. */
	case CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_MULTI_GPU_BOARD: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_MULTI_GPU_BOARD_GROUP_ID: *v = d->ordinal; break;
	case CU_DEVICE_ATTRIBUTE_HOST_NATIVE_ATOMIC_SUPPORTED: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_SINGLE_TO_DOUBLE_PRECISION_PERF_RATIO: *v = cc == 80 || cc == 90 || cc == 70 || cc == 100 ? 2 : 64; break;
	case CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_CONCURRENT_MANAGED_ACCESS: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_COMPUTE_PREEMPTION_SUPPORTED: *v = 1; break;
	case CU_DEVICE_ATTRIBUTE_CAN_USE_HOST_POINTER_FOR_REGISTERED_MEM: *v = 1; break;
	case CU_DEVICE_ATTRIBUTE_CAN_USE_STREAM_MEM_OPS_V1: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_CAN_USE_64_BIT_STREAM_MEM_OPS_V1: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_CAN_USE_STREAM_WAIT_VALUE_NOR_V1: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_COOPERATIVE_LAUNCH: *v = 1; break;
	case CU_DEVICE_ATTRIBUTE_COOPERATIVE_MULTI_DEVICE_LAUNCH: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: *v = p->smem_per_block_optin; break;
	case CU_DEVICE_ATTRIBUTE_CAN_FLUSH_REMOTE_WRITES: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_HOST_REGISTER_SUPPORTED: *v = 1; break;
	case CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_DIRECT_MANAGED_MEM_ACCESS_FROM_HOST: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED: *v = d->vmm; break;
	case CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR_SUPPORTED: *v = d->vmm; break;
	case CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_WIN32_HANDLE_SUPPORTED: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_WIN32_KMT_HANDLE_SUPPORTED: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR: *v = p->blocks_per_sm; break;
	case CU_DEVICE_ATTRIBUTE_GENERIC_COMPRESSION_SUPPORTED: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_MAX_PERSISTING_L2_CACHE_SIZE: *v = p->max_persisting_l2; break;
	case CU_DEVICE_ATTRIBUTE_MAX_ACCESS_POLICY_WINDOW_SIZE: *v = cc >= 80 ? 134213632 : 0; break;
	case CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WITH_CUDA_VMM_SUPPORTED: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_RESERVED_SHARED_MEMORY_PER_BLOCK: *v = 1024; break;
	case CU_DEVICE_ATTRIBUTE_SPARSE_CUDA_ARRAY_SUPPORTED: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_READ_ONLY_HOST_REGISTER_SUPPORTED: *v = 1; break;
	case CU_DEVICE_ATTRIBUTE_TIMELINE_SEMAPHORE_INTEROP_SUPPORTED: *v = 0; break;
	/* Stream-ordered allocation is not simulated. */
	case CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_SUPPORTED: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_FLUSH_WRITES_OPTIONS: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_GPU_DIRECT_RDMA_WRITES_ORDERING: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_MEMPOOL_SUPPORTED_HANDLE_TYPES: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_CLUSTER_LAUNCH: *v = p->cluster_launch; break;
	case CU_DEVICE_ATTRIBUTE_DEFERRED_MAPPING_CUDA_ARRAY_SUPPORTED: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_CAN_USE_64_BIT_STREAM_MEM_OPS: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_CAN_USE_STREAM_WAIT_VALUE_NOR: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_DMA_BUF_SUPPORTED: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_IPC_EVENT_SUPPORTED: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_MEM_SYNC_DOMAIN_COUNT: *v = cc >= 90 ? 4 : 1; break;
	case CU_DEVICE_ATTRIBUTE_TENSOR_MAP_ACCESS_SUPPORTED: *v = cc >= 90; break;
	case CU_DEVICE_ATTRIBUTE_HANDLE_TYPE_FABRIC_SUPPORTED: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_UNIFIED_FUNCTION_POINTERS: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_NUMA_CONFIG: *v = CU_DEVICE_NUMA_CONFIG_NONE; break;
	case CU_DEVICE_ATTRIBUTE_NUMA_ID: *v = -1; break;
	case CU_DEVICE_ATTRIBUTE_MULTICAST_SUPPORTED: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_MPS_ENABLED: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_HOST_NUMA_ID: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_D3D12_CIG_SUPPORTED: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_MEM_DECOMPRESS_ALGORITHM_MASK: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_MEM_DECOMPRESS_MAXIMUM_LENGTH: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_VULKAN_CIG_SUPPORTED: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_GPU_PCI_SUBSYSTEM_ID: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_HOST_NUMA_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_HOST_NUMA_MEMORY_POOLS_SUPPORTED: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_HOST_NUMA_MULTINODE_IPC_SUPPORTED: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_HOST_MEMORY_POOLS_SUPPORTED: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_HOST_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_HOST_ALLOC_DMA_BUF_SUPPORTED: *v = 0; break;
	case CU_DEVICE_ATTRIBUTE_ONLY_PARTIAL_HOST_NATIVE_ATOMIC_SUPPORTED: *v = 0; break;
	default:
		/* Texture/surface sizes nobody sizes buffers from, and values
		 * cuda.h does not define. */
		if (a >= CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE3D_WIDTH_ALTERNATE &&
		    a <= CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_MIPMAPPED_WIDTH) {
			*v = 16384;
			break;
		}
		return false;
	}
	return true;
}

SIM_EXPORT CUresult cuDeviceGetAttribute(int *pi, CUdevice_attribute attrib, CUdevice dev)
{
	SIM_ENTER("cuDeviceGetAttribute");
	const struct sim_device *d = sim_device_get(dev, "cuDeviceGetAttribute");
	if (!pi)
		return CUDA_ERROR_INVALID_VALUE;
	int v;
	if (!sim_device_attribute(d, attrib, &v))
		return CUDA_ERROR_INVALID_VALUE;
	*pi = v;
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuDeviceGetPCIBusId(char *pciBusId, int len, CUdevice dev)
{
	SIM_ENTER("cuDeviceGetPCIBusId");
	const struct sim_device *d = sim_device_get(dev, "cuDeviceGetPCIBusId");
	if (!pciBusId || len <= 0)
		return CUDA_ERROR_INVALID_VALUE;
	snprintf(pciBusId, (size_t)len, "%04X:%02X:00.0", 0, d->pci_bus);
	return CUDA_SUCCESS;
}

/* Accepts [domain:]bus:device[.function] in hex, as the driver does. */
SIM_EXPORT CUresult cuDeviceGetByPCIBusId(CUdevice *dev, const char *pciBusId)
{
	SIM_ENTER("cuDeviceGetByPCIBusId");
	if (!dev || !pciBusId)
		return CUDA_ERROR_INVALID_VALUE;
	unsigned long part[3];
	int n = 0;
	const char *c = pciBusId;
	char *end;
	for (;;) {
		if (!isxdigit((unsigned char)*c) || n == 3)
			return CUDA_ERROR_INVALID_VALUE;
		part[n++] = strtoul(c, &end, 16);
		c = end;
		if (*c != ':')
			break;
		c++;
	}
	unsigned long fn = 0;
	if (*c == '.') {
		if (!isxdigit((unsigned char)c[1]))
			return CUDA_ERROR_INVALID_VALUE;
		fn = strtoul(c + 1, &end, 16);
		c = end;
	}
	if (*c || n < 2)
		return CUDA_ERROR_INVALID_VALUE;
	unsigned long domain = n == 3 ? part[0] : 0, bus = part[n - 2], device = part[n - 1];
	for (int i = 0; i < sim_device_count(); i++) {
		if (domain == 0 && bus == (unsigned long)sim_device(i)->pci_bus && device == 0 &&
		    fn == 0) {
			*dev = i;
			return CUDA_SUCCESS;
		}
	}
	return CUDA_ERROR_INVALID_DEVICE;
}

bool sim_device_can_peer(const struct sim_device *a, const struct sim_device *b)
{
	return a != b && a->p2p && b->p2p;
}

SIM_EXPORT CUresult cuDeviceCanAccessPeer(int *canAccessPeer, CUdevice dev, CUdevice peerDev)
{
	SIM_ENTER("cuDeviceCanAccessPeer");
	const struct sim_device *a = sim_device_get(dev, "cuDeviceCanAccessPeer");
	const struct sim_device *b = sim_device_get(peerDev, "cuDeviceCanAccessPeer");
	if (!canAccessPeer)
		return CUDA_ERROR_INVALID_VALUE;
	*canAccessPeer = sim_device_can_peer(a, b);
	return CUDA_SUCCESS;
}

SIM_EXPORT CUresult cuDeviceGetP2PAttribute(int *value, CUdevice_P2PAttribute attrib,
					    CUdevice srcDevice, CUdevice dstDevice)
{
	SIM_ENTER("cuDeviceGetP2PAttribute");
	const struct sim_device *a = sim_device_get(srcDevice, "cuDeviceGetP2PAttribute");
	const struct sim_device *b = sim_device_get(dstDevice, "cuDeviceGetP2PAttribute");
	if (!value)
		return CUDA_ERROR_INVALID_VALUE;
	/* The driver refuses the question for a device and itself. */
	if (a == b)
		return CUDA_ERROR_INVALID_DEVICE;
	bool peer = sim_device_can_peer(a, b);
	switch (attrib) {
	case CU_DEVICE_P2P_ATTRIBUTE_PERFORMANCE_RANK:
		*value = 0;
		break;
	case CU_DEVICE_P2P_ATTRIBUTE_ACCESS_SUPPORTED:
	case CU_DEVICE_P2P_ATTRIBUTE_NATIVE_ATOMIC_SUPPORTED:
	case CU_DEVICE_P2P_ATTRIBUTE_CUDA_ARRAY_ACCESS_SUPPORTED:
		*value = peer;
		break;
	case CU_DEVICE_P2P_ATTRIBUTE_ONLY_PARTIAL_NATIVE_ATOMIC_SUPPORTED:
		*value = 0;
		break;
	default:
		return CUDA_ERROR_INVALID_VALUE;
	}
	return CUDA_SUCCESS;
}
