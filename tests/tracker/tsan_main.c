/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The tracker's concurrency stress as a plain program, built with
 * ThreadSanitizer together with the tracker's sources. Exit 0 on success,
 * 1 on a failed check (a race report aborts with TSan's own status).
 */
#include <stdio.h>
#include <stdlib.h>

#include "stress.h"

/* The fatbin fixture ($TRK_FIXTURES/trk.fatbin), or NULL. */
static void *read_fatbin(size_t *size)
{
	const char *dir = getenv("TRK_FIXTURES");
	char path[4096];
	void *buf = NULL;
	FILE *f;
	long n;

	if (!dir)
		return NULL;
	snprintf(path, sizeof(path), "%s/trk.fatbin", dir);
	f = fopen(path, "rb");
	if (!f)
		return NULL;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 && fseek(f, 0, SEEK_SET) == 0) {
		buf = malloc((size_t)n);
		if (buf && fread(buf, 1, (size_t)n, f) != (size_t)n) {
			free(buf);
			buf = NULL;
		}
		*size = (size_t)n;
	}
	fclose(f);
	return buf;
}

int main(void)
{
	char err[512] = "";
	size_t size = 0;
	void *fatbin = read_fatbin(&size);

	if (!fatbin) {
		fprintf(stderr, "FAIL: cannot read trk.fatbin from $TRK_FIXTURES\n");
		return 1;
	}
	if (trk_stress_handlemap(6, 3, 60000, err, sizeof(err)) ||
	    trk_stress_devmap(4, 2000, err, sizeof(err)) ||
	    trk_stress_records(6, 4000, 0, 1, err, sizeof(err)) ||
	    trk_stress_library(fatbin, size, 4, 40, err, sizeof(err))) {
		fprintf(stderr, "FAIL: %s\n", err);
		free(fatbin);
		return 1;
	}
	free(fatbin);
	printf("ok\n");
	return 0;
}
