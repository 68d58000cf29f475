/* SPDX-License-Identifier: Apache-2.0 */
/*
 * gpu-inspect: print a gpuswap image, and with --verify check every
 * checksum. Reads the image directory only; needs no GPU and no shim.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "image.h"

static const char usage[] =
	"Usage: gpu-inspect [OPTION]... DIR\n"
	"Print the gpuswap image in DIR (written by gpu-freeze --image DIR):\n"
	"where it comes from, its devices, memory and modules.\n"
	"\n"
	"  -v, --verify     read everything back and check every checksum\n"
	"                   (memory chunks and module files)\n"
	"  -e, --extents    list every memory extent\n"
	"  -j, --json       machine-readable output (one JSON object)\n"
	"  -q, --quiet      print nothing; only the exit status tells\n"
	"  -h, --help       this help\n"
	"\n"
	"Exit status: 0 the image is valid (and, with --verify, every checksum\n"
	"matched); 1 it is damaged, incomplete or not an image; 2 usage error.\n"
	"See gpu-inspect(1) and docs/image-format.md.\n";

struct options {
	bool verify, extents, json, quiet;
	const char *dir;
};

struct problems {
	json_t *list;
	bool quiet, json;
};

static void on_log(void *arg, enum gs_image_log_level level, const char *msg)
{
	struct problems *p = arg;

	if (level > GS_IMAGE_LOG_WARN)
		return;
	char *text = strdup(msg);

	if (!text)
		return;
	/* Messages quote values from the image: no control characters. */
	for (char *c = text; *c; c++)
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			*c = '?';
	if (p->list)
		json_array_append_new(p->list, json_string(text));
	if (!p->quiet && !p->json)
		fprintf(stderr, "gpu-inspect: %s%s\n", level == GS_IMAGE_LOG_WARN ? "warning: " : "",
			text);
	free(text);
}

static void on_progress(void *arg, uint64_t done, uint64_t total)
{
	static int last = -1;
	int pct = total ? (int)(done * 100 / total) : 100;

	if (pct != last) {
		fprintf(stderr, "\rverifying: %3d%%", pct);
		last = pct;
	}
}

/* The image is untrusted: a host or device name must not reach the
 * terminal with control sequences in it. */
static const char *printable(const char *s, char *buf, size_t len)
{
	size_t i;

	for (i = 0; s[i] && i + 1 < len; i++)
		buf[i] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
	buf[i] = '\0';
	return buf;
}

/* 1536 -> "1.5 KiB" */
static const char *human(uint64_t v, char buf[32])
{
	static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB"};
	double d = (double)v;
	int u = 0;

	while (d >= 1024 && u < 5) {
		d /= 1024;
		u++;
	}
	if (u == 0)
		snprintf(buf, 32, "%" PRIu64 " B", v);
	else
		snprintf(buf, 32, "%.1f %s", d, unit[u]);
	return buf;
}

static void print_text(struct gs_image_reader *r, const struct options *o)
{
	const struct gs_image_source *src = gs_image_source(r);
	json_t *m = gs_image_manifest(r), *mem = json_object_get(m, "memory");
	struct gs_image_stats st;
	char a[32], b[32], text[256];

	gs_image_read_stats(r, &st);
	printf("image        %s\n", o->dir);
	printf("format       gpuswap image version %" JSON_INTEGER_FORMAT ", created %s\n",
	       json_integer_value(json_object_get(m, "format_version")),
	       printable(json_string_value(json_object_get(m, "created")), text, sizeof(text)));
	printf("source       host %s", printable(src->host, text, sizeof(text)));
	if (src->pid)
		printf(", pid %d", src->pid);
	if (src->driver_version)
		printf(", driver %d.%d", src->driver_version / 1000,
		       src->driver_version % 1000 / 10);
	putchar('\n');
	for (unsigned i = 0; i < src->ndevices; i++) {
		const struct gs_image_device *d = &src->devices[i];
		char uuid[41];

		gs_image_uuid_format(d->uuid, uuid);
		printf("device %-5d %s, sm_%d%d, %s, %s\n", d->ordinal,
		       printable(d->name, text, sizeof(text)), d->cc_major, d->cc_minor,
		       human(d->total_mem, a), uuid);
	}
	printf("memory       %u extents, %" PRIu64 " chunks of %s, %s in total\n", st.extents,
	       st.chunks, human(gs_image_read_chunk_size(r), a), human(st.bytes_total, b));
	printf("             %s stored", human(st.bytes_stored, a));
	printf(", %s zero (holes)", human(st.bytes_zero, a));
	if (st.bytes_compressed_in)
		printf(", %s compressed to %s", human(st.bytes_compressed_in, a),
		       human(st.bytes_compressed_out, b));
	printf("\n             written with %s I/O, compression %s\n",
	       json_string_value(json_object_get(mem, "io")),
	       json_string_value(json_object_get(mem, "compression")));
	printf("modules      %u, %s\n", st.modules, human(st.module_bytes, a));
	if (o->extents) {
		printf("\n  extent               va          size  chunks      zero   file offset\n");
		for (uint32_t i = 0; i < gs_image_extent_count(r); i++) {
			struct gs_image_extent e;

			gs_image_extent_get(r, i, &e);
			printf("  %6u  0x%014" PRIx64 "  %12" PRIu64 "  %6u  %8s  %12" PRIu64 "\n",
			       e.id, e.va, e.size, e.chunks, human(e.bytes_zero, a), e.file_offset);
		}
	}
}

static json_t *summary_json(struct gs_image_reader *r)
{
	const struct gs_image_source *src = gs_image_source(r);
	json_t *m = gs_image_manifest(r), *devs = json_array(), *extents = json_array();
	struct gs_image_stats st;

	gs_image_read_stats(r, &st);
	for (unsigned i = 0; i < src->ndevices; i++) {
		const struct gs_image_device *d = &src->devices[i];
		char uuid[41];

		gs_image_uuid_format(d->uuid, uuid);
		json_array_append_new(devs, json_pack("{s:i, s:s, s:s, s:[i,i], s:I}", "ordinal",
						      d->ordinal, "uuid", uuid, "name", d->name,
						      "compute_capability", d->cc_major, d->cc_minor,
						      "total_mem", (json_int_t)d->total_mem));
	}
	for (uint32_t i = 0; i < gs_image_extent_count(r); i++) {
		struct gs_image_extent e;

		gs_image_extent_get(r, i, &e);
		json_array_append_new(extents, json_pack("{s:I, s:I, s:I, s:I, s:I}", "id",
							 (json_int_t)e.id, "va", (json_int_t)e.va,
							 "size", (json_int_t)e.size, "chunks",
							 (json_int_t)e.chunks, "zero",
							 (json_int_t)e.bytes_zero));
	}
	return json_pack("{s:I, s:s, s:{s:s, s:i, s:i, s:o}, s:{s:I, s:I, s:I, s:I, s:I, s:I, "
			 "s:I, s:I, s:O, s:O, s:o}, s:{s:I, s:I}, s:O}",
			 "format_version", json_integer_value(json_object_get(m, "format_version")),
			 "created", json_string_value(json_object_get(m, "created")),
			 "source", "host", src->host, "pid", src->pid, "driver_version",
			 src->driver_version, "devices", devs,
			 "memory", "extents", (json_int_t)st.extents, "chunks", (json_int_t)st.chunks,
			 "chunk_size", (json_int_t)gs_image_read_chunk_size(r),
			 "bytes", (json_int_t)st.bytes_total, "stored", (json_int_t)st.bytes_stored,
			 "zero", (json_int_t)st.bytes_zero,
			 "compressed_in", (json_int_t)st.bytes_compressed_in,
			 "compressed_out", (json_int_t)st.bytes_compressed_out,
			 "io", json_object_get(json_object_get(m, "memory"), "io"),
			 "compression", json_object_get(json_object_get(m, "memory"), "compression"),
			 "extent_list", extents,
			 "modules", "count", (json_int_t)st.modules, "bytes", (json_int_t)st.module_bytes,
			 "state", gs_image_state(r));
}

static int parse_args(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{"verify", no_argument, NULL, 'v'},
		{"extents", no_argument, NULL, 'e'},
		{"json", no_argument, NULL, 'j'},
		{"quiet", no_argument, NULL, 'q'},
		{"help", no_argument, NULL, 'h'},
		{0},
	};
	int c;

	while ((c = getopt_long(argc, argv, "vejqh", longopts, NULL)) != -1) {
		switch (c) {
		case 'v': o->verify = true; break;
		case 'e': o->extents = true; break;
		case 'j': o->json = true; break;
		case 'q': o->quiet = true; break;
		case 'h': fputs(usage, stdout); exit(0);
		default:
			fputs("Try 'gpu-inspect --help'.\n", stderr);
			return -1;
		}
	}
	if (optind != argc - 1) {
		fprintf(stderr, "gpu-inspect: %s\nTry 'gpu-inspect --help'.\n",
			optind == argc ? "which image? give its directory" : "one image at a time");
		return -1;
	}
	o->dir = argv[optind];
	return 0;
}

int main(int argc, char **argv)
{
	struct options o = {0};
	struct problems p = {0};
	struct gs_image_read_opts ropts = {.log = {.fn = on_log, .arg = &p}};
	struct gs_image_reader *r = NULL;
	uint64_t bad = 0;
	char *err = NULL;
	json_t *out = NULL;
	int ret;

	if (parse_args(argc, argv, &o) < 0)
		return 2;
	p.quiet = o.quiet;
	p.json = o.json;
	if (o.json)
		p.list = json_array();
	ret = gs_image_reader_open(o.dir, &ropts, &r, &err);
	if (ret == 0 && !o.quiet) {
		if (o.json)
			out = summary_json(r);
		else
			print_text(r, &o);
	}
	if (ret == 0 && o.verify) {
		bool bar = !o.quiet && !o.json && isatty(STDERR_FILENO);

		ret = gs_image_verify(r, bar ? on_progress : NULL, NULL, &bad);
		if (bar)
			fputs("\r               \r", stderr);
		if (!o.quiet && !o.json) {
			if (ret == 0)
				printf("verify       OK: every chunk and module matches its checksum\n");
			else if (ret == -EBADMSG)
				printf("verify       FAILED: %" PRIu64 " damaged chunk%s or module%s "
				       "(listed above); do not restore from this image\n", bad,
				       bad == 1 ? "" : "s", bad == 1 ? "" : "s");
			else
				printf("verify       FAILED: %s\n", gs_image_reader_errmsg(r));
		}
	}
	if (o.json) {
		if (!out)
			out = json_object();
		json_object_set_new(out, "ok", json_boolean(ret == 0));
		if (o.verify)
			json_object_set_new(out, "verified", json_pack("{s:b, s:I}", "ok", ret == 0,
								    "bad", (json_int_t)bad));
		json_object_set_new(out, "errors", p.list);
		p.list = NULL;
		if (!o.quiet) {
			json_dumpf(out, stdout, JSON_INDENT(2));
			putchar('\n');
		}
	}
	/* Errors went through on_log as they happened (once each). */
	json_decref(out);
	json_decref(p.list);
	free(err);
	gs_image_reader_close(r);
	return ret == 0 ? 0 : 1;
}
