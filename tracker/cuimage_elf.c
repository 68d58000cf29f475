/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cuimage: kernels, parameter layouts and __device__ variables of a cubin,
 * read with libelf. Facts checked against nvcc 13.0 cubins (sm_75 .. sm_121,
 * linked and -rdc relocatable).
 */
#include "cuimage_internal.h"

#include <errno.h>
#include <gelf.h>
#include <libelf.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* st_other bits nvcc sets: kernels (__global__) carry 0x10; device
 * functions of -rdc code have their own .text.NAME and .nv.info.NAME too
 * but not this bit. __managed__ variables carry 0x4. */
#define STO_CUDA_ENTRY 0x10
#define STO_CUDA_MANAGED 0x4
/* -rdc cubins type __device__ and __constant__ variables 13 (STT_LOPROC)
 * rather than STT_OBJECT. */
#define STT_CUDA_OBJECT 13

/* .nv.info records: u8 format, u8 attribute, then a u16 value, or for
 * format 4 a u16 size and that many bytes. */
#define EIFMT_NVAL 1
#define EIFMT_BVAL 2
#define EIFMT_HVAL 3
#define EIFMT_SVAL 4
/* 12 bytes: u32 index, u16 ordinal, u16 offset, u32 bits with the size in
 * bytes in bits 18 and up. nvcc writes one per parameter, last first. */
#define EIATTR_KPARAM_INFO 0x17
/* An HVAL: size of the parameter buffer. */
#define EIATTR_CBANK_PARAM_SIZE 0x19
/* Kernels whose parameters take more than 4096 bytes (CUDA 12.1's large
 * parameters) get this instead of KPARAM_INFO for every parameter: u32
 * index, u16 ordinal, u16 offset, u32 size in bytes. */
#define EIATTR_KPARAM_INFO_V2 0x45

static uint16_t rd16(const unsigned char *p)
{
	return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t rd32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static pthread_once_t elf_once = PTHREAD_ONCE_INIT;
static bool elf_ok;

static void elf_init(void)
{
	elf_ok = elf_version(EV_CURRENT) != EV_NONE;
}

struct param_rec {
	uint32_t ordinal;
	uint32_t offset;
	uint32_t size;
};

static int parse_nv_info(const unsigned char *p, size_t n, struct gs_kernel_info *k)
{
	struct param_rec *recs = NULL;
	size_t nrecs = 0, cap = 0, i = 0, end = 0;
	long param_size = -1;
	int ret = -EINVAL;

	while (i < n) {
		unsigned fmt, attr;
		size_t len;

		if (n - i < 4)
			goto out;
		fmt = p[i];
		attr = p[i + 1];
		if (fmt == EIFMT_NVAL || fmt == EIFMT_BVAL || fmt == EIFMT_HVAL) {
			if (attr == EIATTR_CBANK_PARAM_SIZE)
				param_size = rd16(p + i + 2);
			i += 4;
			continue;
		}
		if (fmt != EIFMT_SVAL)
			goto out;
		len = rd16(p + i + 2);
		if (len > n - i - 4)
			goto out;
		if (attr == EIATTR_KPARAM_INFO || attr == EIATTR_KPARAM_INFO_V2) {
			const unsigned char *r = p + i + 4;

			if (len < 12)
				goto out;
			struct param_rec *nr = cuimage_grow(recs, &cap, nrecs, sizeof *recs);

			if (!nr) {
				ret = -ENOMEM;
				goto out;
			}
			recs = nr;
			recs[nrecs].ordinal = rd16(r + 4);
			recs[nrecs].offset = rd16(r + 6);
			recs[nrecs].size = attr == EIATTR_KPARAM_INFO ? rd32(r + 8) >> 18
								    : rd32(r + 8);
			nrecs++;
		}
		i += 4 + len;
	}

	if (nrecs) {
		k->params = calloc(nrecs, sizeof *k->params);
		if (!k->params) {
			ret = -ENOMEM;
			goto out;
		}
	}
	for (size_t r = 0; r < nrecs; r++) {
		struct param_rec *pr = &recs[r];

		/* Ordinals must be 0 .. n-1, each once. */
		if (pr->ordinal >= nrecs || pr->size == 0 || pr->size > UINT16_MAX ||
		    k->params[pr->ordinal].size != 0)
			goto out;
		k->params[pr->ordinal].offset = (uint16_t)pr->offset;
		k->params[pr->ordinal].size = (uint16_t)pr->size;
		if (pr->offset + pr->size > end)
			end = pr->offset + pr->size;
	}
	if (param_size >= 0 && (size_t)param_size < end)
		goto out;
	k->nparams = (unsigned)nrecs;
	k->param_bytes = param_size >= 0 ? (size_t)param_size : end;
	ret = 0;
out:
	if (ret) {
		free(k->params);
		k->params = NULL;
	}
	free(recs);
	return ret;
}

struct cubin {
	Elf *elf;
	const unsigned char *image; /* the caller's bytes, for init pointers */
	size_t size;
	size_t shnum;
	size_t shstrndx;
	size_t *info_of; /* section index -> its .nv.info.NAME section, or 0 */
};

static const char *section_name(struct cubin *c, size_t idx, GElf_Shdr *sh)
{
	Elf_Scn *scn = elf_getscn(c->elf, idx);

	if (!scn || !gelf_getshdr(scn, sh))
		return NULL;
	return elf_strptr(c->elf, c->shstrndx, sh->sh_name);
}

/* The bytes of a section inside the caller's image, or NULL. */
static const unsigned char *section_bytes(struct cubin *c, const GElf_Shdr *sh)
{
	if (sh->sh_type == SHT_NOBITS || sh->sh_offset > c->size ||
	    sh->sh_size > c->size - sh->sh_offset)
		return NULL;
	return c->image + sh->sh_offset;
}

/* .nv.info.NAME sections point at the kernel's .text.NAME with sh_info. */
static int index_nv_info(struct cubin *c)
{
	c->info_of = calloc(c->shnum ? c->shnum : 1, sizeof *c->info_of);
	if (!c->info_of)
		return -ENOMEM;
	for (size_t i = 1; i < c->shnum; i++) {
		GElf_Shdr sh;
		const char *name = section_name(c, i, &sh);

		if (name && strncmp(name, ".nv.info.", 9) == 0 && sh.sh_info > 0 &&
		    sh.sh_info < c->shnum)
			c->info_of[sh.sh_info] = i;
	}
	return 0;
}

static int add_kernel(struct cubin *c, struct gs_code_info *info, size_t *cap,
		      const char *name, size_t text_idx)
{
	struct gs_kernel_info k = { 0 }, *kernels;
	GElf_Shdr sh;
	const char *sname = section_name(c, text_idx, &sh);
	size_t info_idx;
	int ret;

	if (!sname || strncmp(sname, ".text.", 6) != 0 || strcmp(sname + 6, name) != 0)
		return 0; /* not a kernel's own code section */
	info_idx = c->info_of[text_idx];
	for (size_t i = 1; !info_idx && i < c->shnum; i++) {
		/* Not linked by sh_info as nvcc does: look for the name. */
		const char *iname = section_name(c, i, &sh);

		if (iname && strncmp(iname, ".nv.info.", 9) == 0 && strcmp(iname + 9, name) == 0)
			info_idx = i;
	}
	if (info_idx) {
		const char *iname = section_name(c, info_idx, &sh);
		const unsigned char *bytes = section_bytes(c, &sh);

		if (!iname || strcmp(iname + 9, name) != 0 || !bytes)
			return -EINVAL;
		ret = parse_nv_info(bytes, sh.sh_size, &k);
		if (ret)
			return ret;
	}
	k.name = strdup(name);
	kernels = k.name ? cuimage_grow(info->kernels, cap, info->nkernels, sizeof k) : NULL;
	if (!kernels) {
		free(k.name);
		free(k.params);
		return -ENOMEM;
	}
	info->kernels = kernels;
	info->kernels[info->nkernels++] = k;
	return 0;
}

static int add_global(struct cubin *c, struct gs_code_info *info, size_t *cap,
		      const char *name, const GElf_Sym *sym, size_t sec_idx)
{
	struct gs_global_info g = { 0 }, *globals;
	const unsigned char *bytes;
	const char *sname;
	GElf_Shdr sh;

	sname = section_name(c, sec_idx, &sh);
	if (!sname)
		return -EINVAL;
	/* __device__ variables: zero ones in .nv.global, initialised ones in
	 * .nv.global.init; __constant__ ones in .nv.constant3 (zero ones too,
	 * as bytes). Other objects (_param in .nv.constant0.NAME) are not
	 * variables a module lookup finds. */
	if (strcmp(sname, ".nv.constant3") == 0)
		g.flags |= GS_GLOBAL_CONSTANT;
	else if (strcmp(sname, ".nv.global") != 0 && strcmp(sname, ".nv.global.init") != 0)
		return 0;
	if (sym->st_value > sh.sh_size || sym->st_size > sh.sh_size - sym->st_value)
		return -EINVAL;
	if (strcmp(sname, ".nv.global") != 0 && sh.sh_type != SHT_NOBITS) {
		bytes = section_bytes(c, &sh);
		if (!bytes)
			return -EINVAL;
		g.init = bytes + sym->st_value;
		g.init_size = sym->st_size;
	}
	if (sym->st_other & STO_CUDA_MANAGED)
		g.flags |= GS_GLOBAL_MANAGED;
	g.size = sym->st_size;
	g.name = strdup(name);
	globals = g.name ? cuimage_grow(info->globals, cap, info->nglobals, sizeof g) : NULL;
	if (!globals) {
		free(g.name);
		return -ENOMEM;
	}
	info->globals = globals;
	info->globals[info->nglobals++] = g;
	return 0;
}

static int walk_symbols(struct cubin *c, struct gs_code_info *info)
{
	Elf_Scn *symscn = NULL, *xscn = NULL;
	Elf_Data *syms, *xndx = NULL;
	size_t kcap = 0, gcap = 0, nsyms, symidx = 0;
	GElf_Shdr symsh, sh;
	int ret;

	for (size_t i = 1; i < c->shnum && !symscn; i++) {
		Elf_Scn *scn = elf_getscn(c->elf, i);

		if (scn && gelf_getshdr(scn, &sh) && sh.sh_type == SHT_SYMTAB) {
			symscn = scn;
			symsh = sh;
			symidx = i;
		}
	}
	if (!symscn)
		return 0; /* no symbols: nothing to find by name */
	/* Cubins with more than 65280 sections keep symbol section indices in
	 * .symtab_shndx (nvcc names one in every .shstrtab). */
	for (size_t i = 1; i < c->shnum; i++) {
		Elf_Scn *scn = elf_getscn(c->elf, i);

		if (scn && gelf_getshdr(scn, &sh) && sh.sh_type == SHT_SYMTAB_SHNDX &&
		    sh.sh_link == symidx)
			xscn = scn;
	}
	syms = elf_getdata(symscn, NULL);
	if (!syms || symsh.sh_entsize != sizeof(Elf64_Sym) || symsh.sh_link >= c->shnum)
		return -EINVAL;
	if (xscn && !(xndx = elf_getdata(xscn, NULL)))
		return -EINVAL;
	nsyms = syms->d_size / sizeof(Elf64_Sym);

	for (size_t i = 1; i < nsyms; i++) {
		GElf_Sym sym;
		Elf32_Word xi = 0;
		size_t sec;
		const char *name;
		int type;

		if (!gelf_getsymshndx(syms, xndx, (int)i, &sym, &xi))
			return -EINVAL;
		sec = sym.st_shndx == SHN_XINDEX ? xi : sym.st_shndx;
		if (sec == SHN_UNDEF || (sym.st_shndx >= SHN_LORESERVE &&
					 sym.st_shndx != SHN_XINDEX))
			continue; /* extern or absolute: no storage here */
		if (sec >= c->shnum)
			return -EINVAL;
		type = GELF_ST_TYPE(sym.st_info);
		if (type != STT_FUNC && type != STT_OBJECT && type != STT_CUDA_OBJECT)
			continue;
		name = elf_strptr(c->elf, symsh.sh_link, sym.st_name);
		if (!name)
			return -EINVAL;
		if (!*name)
			continue;
		if (type == STT_FUNC)
			ret = (sym.st_other & STO_CUDA_ENTRY) ? add_kernel(c, info, &kcap, name, sec) : 0;
		else
			ret = add_global(c, info, &gcap, name, &sym, sec);
		if (ret)
			return ret;
	}
	return 0;
}

int gs_cubin_parse(const void *cubin, size_t size, struct gs_code_info *info)
{
	struct cubin c = { 0 };
	enum gs_image_kind kind;
	char *copy = NULL;
	int ret = -EINVAL;

	if (!info)
		return -EINVAL;
	memset(info, 0, sizeof *info);
	if (!cubin || gs_image_probe(cubin, size, &kind, &c.size, NULL) != 0 ||
	    kind != GS_IMAGE_CUBIN)
		return -EINVAL;
	pthread_once(&elf_once, elf_init);
	if (!elf_ok)
		return -EINVAL;
	/* libelf wants a writable image; the caller's may be read-only
	 * (an application's .rodata), so give it a copy. Pointers handed
	 * out (global init) are computed into the caller's bytes. */
	copy = malloc(c.size);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, cubin, c.size);
	c.image = cubin;
	c.elf = elf_memory(copy, c.size);
	if (!c.elf || elf_kind(c.elf) != ELF_K_ELF || gelf_getclass(c.elf) != ELFCLASS64 ||
	    elf_getshdrnum(c.elf, &c.shnum) != 0 ||
	    elf_getshdrstrndx(c.elf, &c.shstrndx) != 0 || c.shstrndx >= c.shnum)
		goto out;
	ret = index_nv_info(&c);
	if (ret == 0)
		ret = walk_symbols(&c, info);
out:
	if (c.elf)
		elf_end(c.elf);
	free(c.info_of);
	free(copy);
	if (ret)
		gs_code_info_free(info);
	return ret;
}
