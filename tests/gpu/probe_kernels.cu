// SPDX-License-Identifier: Apache-2.0
//
// The one kernel gs-probe-driver loads through cuLibraryLoadData, to see
// whether CUlibrary/CUkernel handles outlive every context and whether a
// registered host pointer works as a device pointer. extern "C": the probe
// looks it up by its plain name.
extern "C" __global__ void gs_add_one(unsigned int *p, unsigned int n)
{
	unsigned int i = blockIdx.x * blockDim.x + threadIdx.x;

	if (i < n)
		p[i] += 1;
}
