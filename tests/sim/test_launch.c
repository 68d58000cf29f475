/* SPDX-License-Identifier: Apache-2.0 */
/*
 * Kernel launches: both parameter forms (kernelParams and the `extra`
 * buffer), launch geometry and dynamic shared memory reaching the kernel,
 * parameters captured at launch time, a kernel without emulation, launch
 * validation, __device__ globals seen by kernels, cuLaunchKernelEx.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gs_kernels.h"
#include "sim_test.h"

TestSuite(launch, .timeout = SIM_TEST_TIMEOUT);

static CUmodule setup(void)
{
	st_init(0);
	return st_load_module("gs_kernels.fatbin");
}

static CUdeviceptr dev_alloc(size_t n)
{
	CUdeviceptr p;

	CU_OK(cuMemAlloc(&p, n));
	CU_OK(cuMemsetD8(p, 0, n));
	return p;
}

static const struct gs_mix24 mix = { .i = -7, .f = 2.5f, .d = 1e100, .l = -(1LL << 40) };
static const struct gs_float4 vec = { 1.0f, -2.0f, 3.5f, 1e-3f };

static void check_mixed(const double *out, int i, int p, double d)
{
	const double want[GS_PARAMS_MIXED_OUT] = {
		i, p, d, mix.i, mix.f, mix.d, (double)mix.l, vec.x, vec.y, vec.z, vec.w,
	};

	for (int k = 0; k < GS_PARAMS_MIXED_OUT; k++)
		cr_assert_eq(out[k], want[k], "params_mixed out[%d] = %g, expected %g", k, out[k],
			     want[k]);
}

Test(launch, kernel_params)
{
	CUmodule mod = setup();
	CUdeviceptr dp = dev_alloc(sizeof(int)), dout = dev_alloc(GS_PARAMS_MIXED_OUT * 8);
	int i = 41, pv = -99;
	double d = 0.125, out[GS_PARAMS_MIXED_OUT];
	struct gs_mix24 s = mix;
	struct gs_float4 v = vec;

	CU_OK(cuMemcpyHtoD(dp, &pv, sizeof(pv)));
	st_launch(st_function(mod, "params_mixed"), 1, 1, 0, NULL,
		  (void *[]){ &i, &dp, &d, &s, &v, &dout });
	CU_OK(cuMemcpyDtoH(out, dout, sizeof(out)));
	check_mixed(out, 41, -99, 0.125);
}

/* The `extra` form: one buffer laid out as the kernel's parameter block. */
Test(launch, extra_buffer)
{
	static const int off[] = GS_PARAMS_MIXED_OFFSETS;
	CUmodule mod = setup();
	CUdeviceptr dp = dev_alloc(sizeof(int)), dout = dev_alloc(GS_PARAMS_MIXED_OUT * 8);
	int i = 1234567, pv = 42;
	double d = -3.75, out[GS_PARAMS_MIXED_OUT];
	unsigned char buf[GS_PARAMS_MIXED_BYTES] __attribute__((aligned(16)));
	size_t size = sizeof(buf);

	CU_OK(cuMemcpyHtoD(dp, &pv, sizeof(pv)));
	memset(buf, 0xcd, sizeof(buf)); /* padding holds junk, as it may */
	memcpy(buf + off[0], &i, sizeof(i));
	memcpy(buf + off[1], &dp, sizeof(dp));
	memcpy(buf + off[2], &d, sizeof(d));
	memcpy(buf + off[3], &mix, sizeof(mix));
	memcpy(buf + off[4], &vec, sizeof(vec));
	memcpy(buf + off[5], &dout, sizeof(dout));
	void *extra[] = { CU_LAUNCH_PARAM_BUFFER_POINTER, buf, CU_LAUNCH_PARAM_BUFFER_SIZE, &size,
			  CU_LAUNCH_PARAM_END };
	CU_OK(cuLaunchKernel(st_function(mod, "params_mixed"), 1, 1, 1, 1, 1, 1, 0, NULL, NULL,
			     extra));
	CU_OK(cuMemcpyDtoH(out, dout, sizeof(out)));
	check_mixed(out, 1234567, 42, -3.75);
}

Test(launch, extra_buffer_padding)
{
	static const int off[] = GS_PARAMS_PAD_OFFSETS;
	CUmodule mod = setup();
	CUdeviceptr dout = dev_alloc(GS_PARAMS_PAD_OUT * 8);
	char c = -5;
	short sh = -300;
	unsigned long long u = 1ull << 52;
	double out[GS_PARAMS_PAD_OUT];
	unsigned char buf[GS_PARAMS_PAD_BYTES] __attribute__((aligned(16)));
	size_t size = sizeof(buf);

	memset(buf, 0x77, sizeof(buf));
	memcpy(buf + off[0], &c, sizeof(c));
	memcpy(buf + off[1], &vec, sizeof(vec));
	memcpy(buf + off[2], &sh, sizeof(sh));
	memcpy(buf + off[3], &u, sizeof(u));
	memcpy(buf + off[4], &dout, sizeof(dout));
	void *extra[] = { CU_LAUNCH_PARAM_BUFFER_POINTER, buf, CU_LAUNCH_PARAM_BUFFER_SIZE, &size,
			  CU_LAUNCH_PARAM_END };
	CU_OK(cuLaunchKernel(st_function(mod, "params_pad"), 1, 1, 1, 1, 1, 1, 0, NULL, NULL,
			     extra));
	CU_OK(cuMemcpyDtoH(out, dout, sizeof(out)));
	const double want[GS_PARAMS_PAD_OUT] = { -5, vec.x, vec.y, vec.z, vec.w, -300,
						 (double)(1ull << 52) };
	for (int k = 0; k < GS_PARAMS_PAD_OUT; k++)
		cr_assert_eq(out[k], want[k], "params_pad out[%d] = %g", k, out[k]);

	/* The same through kernelParams. */
	CU_OK(cuMemsetD8(dout, 0, sizeof(out)));
	struct gs_float4 v = vec;
	st_launch(st_function(mod, "params_pad"), 1, 1, 0, NULL, (void *[]){ &c, &v, &sh, &u, &dout });
	CU_OK(cuMemcpyDtoH(out, dout, sizeof(out)));
	for (int k = 0; k < GS_PARAMS_PAD_OUT; k++)
		cr_assert_eq(out[k], want[k], "params_pad out[%d] = %g", k, out[k]);
}

Test(launch, bad_parameter_forms)
{
	CUmodule mod = setup();
	CUfunction f = st_function(mod, "fill_u32");
	CUdeviceptr p = dev_alloc(64);
	unsigned v = 1, n = 16;
	unsigned char buf[16];
	size_t size = sizeof(buf);
	void *params[] = { &p, &v, &n };
	void *extra[] = { CU_LAUNCH_PARAM_BUFFER_POINTER, buf, CU_LAUNCH_PARAM_BUFFER_SIZE, &size,
			  CU_LAUNCH_PARAM_END };

	/* Documented: both forms at once is invalid. */
	CU_ERR(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, params, extra),
	       CUDA_ERROR_INVALID_VALUE);
	/* A buffer of the wrong size for the kernel's parameters. */
	size = 8;
	CU_FAILS(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, extra));
}

/* Parameter values are copied when cuLaunchKernel is called, not when the
 * kernel runs: the caller may reuse its variables at once. */
Test(launch, params_copied_at_launch)
{
	CUmodule mod = setup();
	CUdeviceptr dp = dev_alloc(sizeof(int)), dout = dev_alloc(GS_PARAMS_MIXED_OUT * 8);
	CUdeviceptr out_addr = dout;
	struct st_gate gate;
	CUstream s;
	int i = 5, pv = 6;
	double d = 7.0, out[GS_PARAMS_MIXED_OUT];
	struct gs_mix24 sm = mix;
	struct gs_float4 v = vec;
	void *params[] = { &i, &dp, &d, &sm, &v, &dout };

	CU_OK(cuMemcpyHtoD(dp, &pv, sizeof(pv)));
	/* A non-blocking stream is not ordered after the legacy stream's
	 * memset and copy above: wait for them. */
	CU_OK(cuCtxSynchronize());
	st_gate_init(&gate);
	CU_OK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
	CU_OK(cuLaunchHostFunc(s, st_gate_wait, &gate));
	CU_OK(cuLaunchKernel(st_function(mod, "params_mixed"), 1, 1, 1, 1, 1, 1, 0, s, params,
			     NULL));
	/* Scribble over everything the launch was given. */
	i = -1;
	d = -1.0;
	memset(&sm, 0, sizeof(sm));
	memset(&v, 0, sizeof(v));
	dout = 0;
	for (size_t k = 0; k < sizeof(params) / sizeof(params[0]); k++)
		params[k] = NULL;
	st_gate_open(&gate);
	CU_OK(cuStreamSynchronize(s));
	CU_OK(cuMemcpyDtoH(out, out_addr, sizeof(out)));
	check_mixed(out, 5, 6, 7.0);
}

Test(launch, missing_emulation_not_found)
{
	CUmodule mod = setup();
	CUdeviceptr p = dev_alloc(sizeof(int));
	int v = 0;

	/* A kernel the program has no simcuda_kernel_ function for. */
	CU_ERR(cuLaunchKernel(st_function(mod, "unemulated"), 1, 1, 1, 1, 1, 1, 0, NULL,
			      (void *[]){ &p }, NULL),
	       CUDA_ERROR_NOT_FOUND);
	/* Nothing ran, and the context is not broken by it. */
	CU_OK(cuCtxSynchronize());
	CU_OK(cuMemcpyDtoH(&v, p, sizeof(v)));
	cr_assert_eq(v, 0);
	st_launch(st_function(mod, "noop"), 1, 1, 0, NULL, NULL);
	CU_OK(cuCtxSynchronize());
}

Test(launch, geometry_reaches_kernel)
{
	CUmodule mod = setup();
	CUdeviceptr p = dev_alloc(6 * sizeof(unsigned));
	unsigned got[6];

	CU_OK(cuLaunchKernel(st_function(mod, "report_launch"), 3, 2, 7, 4, 5, 6, 0, NULL,
			     (void *[]){ &p }, NULL));
	CU_OK(cuMemcpyDtoH(got, p, sizeof(got)));
	const unsigned want[6] = { 3, 2, 7, 4, 5, 6 };
	for (int k = 0; k < 6; k++)
		cr_assert_eq(got[k], want[k], "dim %d: %u", k, got[k]);
}

/* loss_reduce needs blockDim floats of dynamic shared memory; the
 * emulation reports NaN when the launch did not pass them. */
Test(launch, dynamic_shared_memory)
{
	enum { M = 300, B = 64 };
	CUmodule mod = setup();
	CUfunction f = st_function(mod, "loss_reduce");
	CUdeviceptr r = dev_alloc(M * sizeof(float)), loss = dev_alloc(sizeof(float));
	float host[M], part[B], got = 0.0f, want;
	int m = M;

	for (int i = 0; i < M; i++)
		host[i] = (float)(i % 17) * 0.25f - 1.0f;
	CU_OK(cuMemcpyHtoD(r, host, sizeof(host)));
	for (int t = 0; t < B; t++) {
		part[t] = 0.0f;
		for (int i = t; i < M; i += B)
			part[t] = part[t] + host[i] * host[i];
	}
	for (int s = B / 2; s > 0; s /= 2)
		for (int t = 0; t < s; t++)
			part[t] = part[t] + part[t + s];
	want = part[0] / (float)M;

	st_launch(f, 1, B, B * sizeof(float), NULL, (void *[]){ &r, &m, &loss });
	CU_OK(cuMemcpyDtoH(&got, loss, sizeof(got)));
	cr_assert_eq(got, want, "loss %a, expected %a", (double)got, (double)want);
}

Test(launch, validation)
{
	CUmodule mod = setup();
	CUfunction f = st_function(mod, "noop");
	int optin = 0;

	CU_ERR(cuLaunchKernel(f, 0, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL), CUDA_ERROR_INVALID_VALUE);
	CU_ERR(cuLaunchKernel(f, 1, 1, 1, 0, 1, 1, 0, NULL, NULL, NULL), CUDA_ERROR_INVALID_VALUE);
	CU_ERR(cuLaunchKernel(f, 1, 1, 1, 1025, 1, 1, 0, NULL, NULL, NULL),
	       CUDA_ERROR_INVALID_VALUE);
	CU_ERR(cuLaunchKernel(f, 1, 1, 1, 512, 2, 2, 0, NULL, NULL, NULL),
	       CUDA_ERROR_INVALID_VALUE);
	CU_ERR(cuLaunchKernel(f, 1, 1, 1, 1, 1, 65, 0, NULL, NULL, NULL),
	       CUDA_ERROR_INVALID_VALUE);
	CU_ERR(cuLaunchKernel(f, 1, 65536, 1, 1, 1, 1, 0, NULL, NULL, NULL),
	       CUDA_ERROR_INVALID_VALUE);
	/* More dynamic shared memory than the function allows, until it opts in. */
	CU_ERR(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 48 * 1024 + 4, NULL, NULL, NULL),
	       CUDA_ERROR_INVALID_VALUE);
	CU_OK(cuDeviceGetAttribute(&optin, CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN,
				   st_device(0)));
	CU_OK(cuFuncSetAttribute(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, optin));
	CU_OK(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 48 * 1024 + 4, NULL, NULL, NULL));
	/* The largest grid dimensions are legal. */
	CU_OK(cuLaunchKernel(f, 1, 65535, 1, 1, 1, 1, 0, NULL, NULL, NULL));
	CU_OK(cuLaunchKernel(f, 1, 1, 65535, 1, 1, 64, 0, NULL, NULL, NULL));
	CU_OK(cuCtxSynchronize());
}

Test(launch, needs_a_context)
{
	CUmodule mod = setup();
	CUfunction f = st_function(mod, "noop");

	CU_OK(cuCtxSetCurrent(NULL));
	CU_ERR(cuLaunchKernel(f, 1, 1, 1, 1, 1, 1, 0, NULL, NULL, NULL), CUDA_ERROR_INVALID_CONTEXT);
}

Test(launch, asynchronous_and_ordered)
{
	CUmodule mod = setup();
	struct st_gate gate;
	CUstream s;
	unsigned *h;
	CUdeviceptr d;
	unsigned n = 1000, v1 = 1, v2 = 2;

	st_gate_init(&gate);
	CU_OK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
	CU_OK(cuMemHostAlloc((void **)&h, n * sizeof(unsigned), CU_MEMHOSTALLOC_DEVICEMAP));
	memset(h, 0, n * sizeof(unsigned));
	CU_OK(cuMemHostGetDevicePointer(&d, h, 0));
	CU_OK(cuLaunchHostFunc(s, st_gate_wait, &gate));
	st_launch(st_function(mod, "fill_u32"), 2, 64, 0, s, (void *[]){ &d, &v1, &n });
	st_launch(st_function(mod, "fill_u32"), 3, 32, 0, s, (void *[]){ &d, &v2, &n });
	st_sleep_ms(50);
	cr_assert_eq(h[0], 0, "a kernel ran before the stream reached it");
	st_gate_open(&gate);
	CU_OK(cuStreamSynchronize(s));
	for (unsigned i = 0; i < n; i++)
		cr_assert_eq(h[i], 2, "h[%u] = %u: kernels ran out of order or partly", i, h[i]);
}

Test(launch, kernels_on_several_streams_in_order)
{
	enum { N = 64 };
	CUmodule mod = setup();
	CUfunction f = st_function(mod, "seq_append");
	CUdeviceptr log = dev_alloc((N + 1) * sizeof(unsigned));
	unsigned got[N + 1];
	CUstream s;

	CU_OK(cuStreamCreate(&s, 0));
	for (unsigned v = 0; v < N; v++)
		st_launch(f, 1, 1, 0, s, (void *[]){ &log, &v });
	CU_OK(cuStreamSynchronize(s));
	CU_OK(cuMemcpyDtoH(got, log, sizeof(got)));
	cr_assert_eq(got[0], N);
	for (unsigned v = 0; v < N; v++)
		cr_assert_eq(got[1 + v], v);
}

Test(launch, kernels_see_module_globals)
{
	CUmodule a = setup(), b = st_load_module("gs_kernels.fatbin");
	CUdeviceptr list_sum = dev_alloc(sizeof(float)), scale = dev_alloc(sizeof(float));
	CUdeviceptr magic = dev_alloc(sizeof(int)), step = dev_alloc(8);
	CUdeviceptr table = dev_alloc(GS_TABLE_LEN * sizeof(float));
	CUdeviceptr ga;
	float two = 2.0f, got_scale = 0.0f, tab[GS_TABLE_LEN];
	unsigned long long s = 0;
	int nodes = 1, m = 0, new_magic = 0x7777;

	CU_OK(cuMemcpyHtoD(list_sum, &two, sizeof(two)));
	for (int k = 0; k < 3; k++)
		st_launch(st_function(a, "step_tick"), 1, 1, 0, NULL,
			  (void *[]){ &list_sum, &scale, &nodes });
	CU_OK(cuModuleGetGlobal(&ga, NULL, a, "gs_step"));
	CU_OK(cuMemcpyDtoH(&s, ga, sizeof(s)));
	cr_assert_eq(s, 3, "gs_step of module a is %llu after 3 ticks", s);
	CU_OK(cuMemcpyDtoH(&got_scale, scale, sizeof(got_scale)));
	cr_assert_eq(got_scale, 2.0f / (1.0f + 0.125f * 3.0f));

	/* Module b's globals are untouched by a's kernels... */
	st_launch(st_function(b, "global_read"), 1, 1, 0, NULL, (void *[]){ &magic, &step, &table });
	CU_OK(cuMemcpyDtoH(&s, step, sizeof(s)));
	CU_OK(cuMemcpyDtoH(&m, magic, sizeof(m)));
	cr_assert_eq(s, 0);
	cr_assert_eq(m, GS_MAGIC_INIT);

	/* ...and a host write through cuModuleGetGlobal is what kernels read. */
	CUdeviceptr gm;
	CU_OK(cuModuleGetGlobal(&gm, NULL, b, "gs_magic"));
	CU_OK(cuMemcpyHtoD(gm, &new_magic, sizeof(new_magic)));
	st_launch(st_function(b, "global_read"), 1, 1, 0, NULL, (void *[]){ &magic, &step, &table });
	CU_OK(cuMemcpyDtoH(&m, magic, sizeof(m)));
	cr_assert_eq(m, 0x7777);

	/* A kernel's writes are what the host reads. */
	float base = 10.0f;
	int mg = 0x4242;
	st_launch(st_function(b, "global_write"), 1, 1, 0, NULL, (void *[]){ &mg, &base });
	CUdeviceptr gt;
	CU_OK(cuModuleGetGlobal(&gt, NULL, b, "gs_table"));
	CU_OK(cuMemcpyDtoH(tab, gt, sizeof(tab)));
	for (int k = 0; k < GS_TABLE_LEN; k++)
		cr_assert_eq(tab[k], 10.0f + (float)k);
	CU_OK(cuMemcpyDtoH(&m, gm, sizeof(m)));
	cr_assert_eq(m, 0x4242);
}

/* The list kernel follows device pointers stored in device memory across
 * separate allocations. */
Test(launch, linked_list_in_device_memory)
{
	enum { K = 5 };
	CUmodule mod = setup();
	CUdeviceptr node[K], root = dev_alloc(8), sum = dev_alloc(sizeof(float));
	float got = 0.0f;

	for (int k = 0; k < K; k++)
		node[k] = dev_alloc(sizeof(struct gs_list_node));
	for (int k = 0; k < K; k++) {
		struct gs_list_node n = { .value = (float)(k + 1), .index = (unsigned)k,
					  .next = k + 1 < K ? node[k + 1] : 0 };
		CU_OK(cuMemcpyHtoD(node[k], &n, sizeof(n)));
	}
	CU_OK(cuMemcpyHtoD(root, &node[0], sizeof(node[0])));
	st_launch(st_function(mod, "list_walk"), 1, 1, 0, NULL, (void *[]){ &root, &sum });
	CU_OK(cuMemcpyDtoH(&got, sum, sizeof(got)));
	cr_assert_eq(got, 15.0f);
	struct gs_list_node n;
	CU_OK(cuMemcpyDtoH(&n, node[2], sizeof(n)));
	cr_assert_eq(n.value, 3.0f * 0.9375f + 0.0625f, "the walk did not update the node");
}

Test(launch, launch_kernel_ex)
{
	CUmodule mod = setup();
	CUdeviceptr p = dev_alloc(6 * sizeof(unsigned));
	unsigned got[6];
	CUstream s;
	CUlaunchAttribute attr = { .id = CU_LAUNCH_ATTRIBUTE_PRIORITY, .value.priority = 0 };

	CU_OK(cuStreamCreate(&s, 0));
	CUlaunchConfig cfg = {
		.gridDimX = 2, .gridDimY = 3, .gridDimZ = 1,
		.blockDimX = 32, .blockDimY = 2, .blockDimZ = 1,
		.sharedMemBytes = 0, .hStream = s, .attrs = &attr, .numAttrs = 1,
	};
	CU_OK(cuLaunchKernelEx(&cfg, st_function(mod, "report_launch"), (void *[]){ &p }, NULL));
	CU_OK(cuStreamSynchronize(s));
	CU_OK(cuMemcpyDtoH(got, p, sizeof(got)));
	const unsigned want[6] = { 2, 3, 1, 32, 2, 1 };
	for (int k = 0; k < 6; k++)
		cr_assert_eq(got[k], want[k], "dim %d: %u", k, got[k]);
}

/* A CUkernel from a library launches like a CUfunction (CUDA 12+). */
Test(launch, library_kernel_handle)
{
	CUlibrary lib;
	CUkernel k;
	CUdeviceptr d;
	unsigned v = 9, n = 100, h[100];
	void *image;

	st_init(0);
	image = st_read_kernel("gs_kernels.fatbin", NULL);
	CU_OK(cuLibraryLoadData(&lib, image, NULL, NULL, 0, NULL, NULL, 0));
	free(image);
	CU_OK(cuLibraryGetKernel(&k, lib, "fill_u32"));
	d = dev_alloc(sizeof(h));
	CU_OK(cuLaunchKernel((CUfunction)k, 1, 32, 1, 1, 1, 1, 0, NULL, (void *[]){ &d, &v, &n },
			     NULL));
	CU_OK(cuMemcpyDtoH(h, d, sizeof(h)));
	for (unsigned i = 0; i < n; i++)
		cr_assert_eq(h[i], 9);
}

/* A CUkernel launches in the context of the stream it is given, which need
 * not be the current one (cuda.h, cuLaunchKernel). */
Test(launch, library_kernel_in_stream_context)
{
	CUlibrary lib;
	CUkernel k;
	CUcontext c0, c1;
	CUstream s1;
	CUdeviceptr d1;
	unsigned v = 3, n = 64, h[64];
	int ordinal = -1;
	void *image;

	st_setenv("SIMCUDA_DEVICES", "2");
	c0 = st_init(0);
	image = st_read_kernel("gs_kernels.fatbin", NULL);
	CU_OK(cuLibraryLoadData(&lib, image, NULL, NULL, 0, NULL, NULL, 0));
	free(image);
	CU_OK(cuLibraryGetKernel(&k, lib, "fill_u32"));
	CU_OK(cuDevicePrimaryCtxRetain(&c1, st_device(1)));
	CU_OK(cuCtxSetCurrent(c1));
	CU_OK(cuStreamCreate(&s1, CU_STREAM_NON_BLOCKING));
	CU_OK(cuMemAlloc(&d1, sizeof(h)));
	CU_OK(cuPointerGetAttribute(&ordinal, CU_POINTER_ATTRIBUTE_DEVICE_ORDINAL, d1));
	cr_assert_eq(ordinal, 1);
	CU_OK(cuCtxSetCurrent(c0));
	CU_OK(cuLaunchKernel((CUfunction)k, 1, 16, 1, 1, 1, 1, 0, s1, (void *[]){ &d1, &v, &n },
			     NULL));
	CU_OK(cuStreamSynchronize(s1));
	CU_OK(cuMemcpyDtoH(h, d1, sizeof(h)));
	for (unsigned i = 0; i < n; i++)
		cr_assert_eq(h[i], 3);
}

/* Kernels reach page-locked host memory through its device pointer. */
Test(launch, kernel_on_mapped_host_memory)
{
	CUmodule mod = setup();
	unsigned *h;
	CUdeviceptr d;
	unsigned v = 0x5eed, n = 77;

	CU_OK(cuMemHostAlloc((void **)&h, 128 * sizeof(unsigned), CU_MEMHOSTALLOC_DEVICEMAP));
	memset(h, 0, 128 * sizeof(unsigned));
	CU_OK(cuMemHostGetDevicePointer(&d, h, 0));
	st_launch(st_function(mod, "fill_u32"), 1, 16, 0, NULL, (void *[]){ &d, &v, &n });
	CU_OK(cuCtxSynchronize());
	for (unsigned i = 0; i < 128; i++)
		cr_assert_eq(h[i], i < n ? 0x5eed : 0, "h[%u]", i);
}
