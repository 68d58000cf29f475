/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The tracker's concurrency stress as a plain program, built with
 * ThreadSanitizer together with the tracker's sources. Exit 0 on success,
 * 1 on a failed check (a race report aborts with TSan's own status).
 */
#include <stdio.h>

#include "stress.h"

int main(void)
{
	char err[512] = "";

	if (trk_stress_handlemap(6, 3, 60000, err, sizeof(err)) ||
	    trk_stress_devmap(4, 2000, err, sizeof(err)) ||
	    trk_stress_records(6, 4000, 0, 1, err, sizeof(err))) {
		fprintf(stderr, "FAIL: %s\n", err);
		return 1;
	}
	printf("ok\n");
	return 0;
}
