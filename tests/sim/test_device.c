/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Initialisation, devices, attributes and the SIMCUDA_* environment; memory
 * accounting (cuMemGetInfo) and running out of memory.
 */
#include <stdio.h>
#include <string.h>

#include "sim_test.h"

TestSuite(device, .timeout = SIM_TEST_TIMEOUT);

static int attr(CUdevice_attribute a, int dev)
{
	int v = -12345;

	CU_OK(cuDeviceGetAttribute(&v, a, st_device(dev)));
	return v;
}

Test(device, calls_before_init_fail)
{
	int n = -1;
	CUdevice dev;
	CUdeviceptr p;
	CUcontext ctx;

	CU_ERR(cuDeviceGetCount(&n), CUDA_ERROR_NOT_INITIALIZED);
	CU_ERR(cuDeviceGet(&dev, 0), CUDA_ERROR_NOT_INITIALIZED);
	CU_ERR(cuCtxGetCurrent(&ctx), CUDA_ERROR_NOT_INITIALIZED);
	CU_ERR(cuMemAlloc(&p, 16), CUDA_ERROR_NOT_INITIALIZED);
	CU_OK(cuInit(0));
	CU_OK(cuDeviceGetCount(&n));
}

Test(device, init_flags_must_be_zero)
{
	CU_ERR(cuInit(1), CUDA_ERROR_INVALID_VALUE);
	CU_OK(cuInit(0));
	CU_OK(cuInit(0)); /* idempotent */
}

Test(device, driver_version_before_init)
{
	int v = 0;

	CU_OK(cuDriverGetVersion(&v));
	cr_assert_geq(v, CUDA_VERSION, "driver %d older than the headers (%d)", v, CUDA_VERSION);
	CU_ERR(cuDriverGetVersion(NULL), CUDA_ERROR_INVALID_VALUE);
}

Test(device, default_two_devices)
{
	int n = 0;

	unsetenv("SIMCUDA_DEVICES");
	CU_OK(cuInit(0));
	CU_OK(cuDeviceGetCount(&n));
	cr_assert_eq(n, 2);
}

Test(device, count_from_env)
{
	int n = 0;
	CUdevice dev;

	st_setenv("SIMCUDA_DEVICES", "5");
	CU_OK(cuInit(0));
	CU_OK(cuDeviceGetCount(&n));
	cr_assert_eq(n, 5);
	CU_OK(cuDeviceGet(&dev, 4));
	cr_assert_eq(dev, 4);
	CU_ERR(cuDeviceGet(&dev, 5), CUDA_ERROR_INVALID_DEVICE);
	CU_ERR(cuDeviceGet(&dev, -1), CUDA_ERROR_INVALID_DEVICE);
}

Test(device, no_devices)
{
	st_setenv("SIMCUDA_DEVICES", "0");
	CU_ERR(cuInit(0), CUDA_ERROR_NO_DEVICE);
}

Test(device, arch_per_device)
{
	st_setenv("SIMCUDA_DEVICES", "3");
	st_setenv("SIMCUDA_ARCH", "sm_90,sm_86,sm_80");
	CU_OK(cuInit(0));
	cr_assert_eq(attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, 0), 9);
	cr_assert_eq(attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, 0), 0);
	cr_assert_eq(attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, 1), 8);
	cr_assert_eq(attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, 1), 6);
	cr_assert_eq(attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, 2), 8);
	cr_assert_eq(attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, 2), 0);
}

/* DESIGN §11: the default is SIMCUDA_ARCH=sm_80,sm_90. */
Test(device, default_arch)
{
	unsetenv("SIMCUDA_ARCH");
	st_setenv("SIMCUDA_DEVICES", "2");
	CU_OK(cuInit(0));
	cr_assert_eq(attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, 0), 8);
	cr_assert_eq(attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, 1), 9);
}

Test(device, memory_size_from_env)
{
	size_t total = 0;

	st_setenv("SIMCUDA_DEVICES", "2");
	st_setenv("SIMCUDA_MEM_MB", "64,96");
	CU_OK(cuInit(0));
	CU_OK(cuDeviceTotalMem(&total, st_device(0)));
	cr_assert_eq(total, (size_t)64 << 20);
	CU_OK(cuDeviceTotalMem(&total, st_device(1)));
	cr_assert_eq(total, (size_t)96 << 20);
}

Test(device, malformed_env_aborts, .signal = SIGABRT)
{
	/* A fixture that ignored a typo would let a test pass for the wrong
	 * reason; the simulator refuses it at the first call. */
	st_setenv("SIMCUDA_ARCH", "ampere");
	cuInit(0);
}

Test(device, names)
{
	char name[256];

	CU_OK(cuInit(0));
	memset(name, 'x', sizeof(name));
	CU_OK(cuDeviceGetName(name, sizeof(name), st_device(0)));
	cr_assert(memchr(name, '\0', sizeof(name)), "name not NUL-terminated");
	cr_assert_gt(strlen(name), 0);
	/* A short buffer gets a truncated, still terminated name. */
	memset(name, 'x', sizeof(name));
	CU_OK(cuDeviceGetName(name, 4, st_device(0)));
	cr_assert_leq(strlen(name), 3);
}

Test(device, uuids_distinct_and_stable)
{
	CUuuid u[4], again;

	st_setenv("SIMCUDA_DEVICES", "4");
	CU_OK(cuInit(0));
	for (int i = 0; i < 4; i++)
		CU_OK(cuDeviceGetUuid(&u[i], st_device(i)));
	for (int i = 0; i < 4; i++)
		for (int j = i + 1; j < 4; j++)
			cr_assert_neq(memcmp(u[i].bytes, u[j].bytes, sizeof(u[i].bytes)), 0,
				      "devices %d and %d share a UUID", i, j);
	CU_OK(cuDeviceGetUuid(&again, st_device(2)));
	cr_assert_eq(memcmp(u[2].bytes, again.bytes, sizeof(again.bytes)), 0);
}

Test(device, pci_ids_distinct_and_round_trip)
{
	char bus_id[4][32];

	st_setenv("SIMCUDA_DEVICES", "4");
	CU_OK(cuInit(0));
	for (int i = 0; i < 4; i++) {
		int domain = attr(CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID, i);
		int bus = attr(CU_DEVICE_ATTRIBUTE_PCI_BUS_ID, i);
		int slot = attr(CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID, i);
		char want[32];
		CUdevice dev = -1;

		CU_OK(cuDeviceGetPCIBusId(bus_id[i], sizeof(bus_id[i]), st_device(i)));
		/* The documented format: [domain]:[bus]:[device].[function]. */
		snprintf(want, sizeof(want), "%04x:%02x:%02x.0", domain, bus, slot);
		cr_assert(!strcasecmp(bus_id[i], want), "device %d: bus id %s, attributes say %s",
			  i, bus_id[i], want);
		CU_OK(cuDeviceGetByPCIBusId(&dev, bus_id[i]));
		cr_assert_eq(dev, i);
		for (int j = 0; j < i; j++)
			cr_assert(strcasecmp(bus_id[i], bus_id[j]), "devices %d and %d: %s", j, i,
				  bus_id[i]);
	}
	CUdevice dev;
	CU_FAILS(cuDeviceGetByPCIBusId(&dev, "0000:ff:1f.0"));
}

Test(device, attributes_like_a_gpu)
{
	CU_OK(cuInit(0));
	for (int d = 0; d < 2; d++) {
		cr_assert_eq(attr(CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK, d), 1024);
		cr_assert_eq(attr(CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X, d), 1024);
		cr_assert_eq(attr(CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z, d), 64);
		cr_assert_eq(attr(CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X, d), 0x7fffffff);
		cr_assert_eq(attr(CU_DEVICE_ATTRIBUTE_WARP_SIZE, d), 32);
		cr_assert_eq(attr(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK, d), 48 * 1024);
		cr_assert_gt(attr(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, d), 0);
		cr_assert_eq(attr(CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING, d), 1);
		cr_assert_eq(attr(CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY, d), 1);
		cr_assert_eq(attr(CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, d), 1);
		cr_assert_gt(attr(CU_DEVICE_ATTRIBUTE_TEXTURE_PITCH_ALIGNMENT, d), 0);
		cr_assert_geq(attr(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, d),
			      48 * 1024);
	}
}

Test(device, bad_attribute_queries)
{
	int v;

	CU_OK(cuInit(0));
	CU_ERR(cuDeviceGetAttribute(&v, CU_DEVICE_ATTRIBUTE_MAX, st_device(0)),
	       CUDA_ERROR_INVALID_VALUE);
	CU_ERR(cuDeviceGetAttribute(NULL, CU_DEVICE_ATTRIBUTE_WARP_SIZE, st_device(0)),
	       CUDA_ERROR_INVALID_VALUE);
}

Test(device, vmm_support_from_env)
{
	st_setenv("SIMCUDA_DEVICES", "2");
	st_setenv("SIMCUDA_VMM", "1,0");
	CU_OK(cuInit(0));
	cr_assert_eq(attr(CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, 0), 1);
	cr_assert_eq(attr(CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, 1), 0);
}

Test(device, peers)
{
	int can = -1;

	st_setenv("SIMCUDA_DEVICES", "2");
	CU_OK(cuInit(0));
	CU_OK(cuDeviceCanAccessPeer(&can, st_device(0), st_device(1)));
	cr_assert_eq(can, 1);
	CU_OK(cuDeviceCanAccessPeer(&can, st_device(1), st_device(0)));
	cr_assert_eq(can, 1);
}

Test(device, no_peers_from_env)
{
	int can = -1;

	st_setenv("SIMCUDA_DEVICES", "2");
	st_setenv("SIMCUDA_P2P", "0");
	CU_OK(cuInit(0));
	CU_OK(cuDeviceCanAccessPeer(&can, st_device(0), st_device(1)));
	cr_assert_eq(can, 0);
}

Test(device, mem_info_goes_down_and_up)
{
	size_t free0, free1, free2, total;
	CUdeviceptr p;

	st_setenv("SIMCUDA_MEM_MB", "64");
	st_init(0);
	CU_OK(cuMemGetInfo(&free0, &total));
	cr_assert_eq(total, (size_t)64 << 20);
	cr_assert_leq(free0, total);
	CU_OK(cuMemAlloc(&p, 16 << 20));
	CU_OK(cuMemGetInfo(&free1, &total));
	cr_assert_leq(free1, free0 - (16 << 20), "free %zu -> %zu after 16 MiB", free0, free1);
	CU_OK(cuMemFree(p));
	CU_OK(cuMemGetInfo(&free2, &total));
	cr_assert_eq(free2, free0);
}

Test(device, out_of_memory)
{
	size_t free0, total;
	CUdeviceptr p[64], big = 0;
	int n = 0;
	CUresult rc;

	st_setenv("SIMCUDA_MEM_MB", "64");
	st_init(0);
	CU_OK(cuMemGetInfo(&free0, &total));
	CU_ERR(cuMemAlloc(&big, free0 + (1 << 20)), CUDA_ERROR_OUT_OF_MEMORY);
	/* Fill the device 4 MiB at a time: it must run out before 64 MiB +. */
	while ((rc = cuMemAlloc(&p[n], 4 << 20)) == CUDA_SUCCESS) {
		n++;
		cr_assert_lt(n, 64, "allocated more than the device has");
	}
	cr_assert_eq(rc, CUDA_ERROR_OUT_OF_MEMORY, "%s", st_err(rc));
	cr_assert_geq(n, 8, "only %d x 4 MiB fit in 64 MiB", n);
	cr_assert_lt(st_mem_free(), (size_t)4 << 20);
	while (n--)
		CU_OK(cuMemFree(p[n]));
	cr_assert_eq(st_mem_free(), free0);
	/* OOM is not sticky: the context still works. */
	CU_OK(cuMemAlloc(&big, 1 << 20));
	CU_OK(cuMemFree(big));
}

Test(device, memory_is_per_device)
{
	CUcontext c0, c1;
	size_t free1;
	CUdeviceptr p;

	st_setenv("SIMCUDA_DEVICES", "2");
	st_setenv("SIMCUDA_MEM_MB", "64");
	c0 = st_init(0);
	CU_OK(cuDevicePrimaryCtxRetain(&c1, st_device(1)));
	CU_OK(cuCtxSetCurrent(c1));
	free1 = st_mem_free();
	CU_OK(cuCtxSetCurrent(c0));
	CU_OK(cuMemAlloc(&p, 32 << 20));
	CU_OK(cuCtxSetCurrent(c1));
	cr_assert_eq(st_mem_free(), free1, "allocating on device 0 used device 1's memory");
}

/* What A100 and H100 report: kernels opting in to more shared memory are
 * checked against it, so it must differ by architecture as on GPUs. */
Test(device, shared_memory_optin_per_arch)
{
	st_setenv("SIMCUDA_DEVICES", "2");
	st_setenv("SIMCUDA_ARCH", "sm_80,sm_90");
	CU_OK(cuInit(0));
	cr_assert_eq(attr(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, 0), 166912);
	cr_assert_eq(attr(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN, 1), 232448);
}
