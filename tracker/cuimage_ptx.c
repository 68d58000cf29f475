/* SPDX-License-Identifier: Apache-2.0 */
/*
 * cuimage: kernels, parameter layouts and variables declared in PTX text.
 *
 * nvcc 13.0 writes, at module scope:
 *   .visible .entry NAME(
 *           .param .u32 NAME_param_0,
 *           .param .align 8 .b8 NAME_param_3[24]
 *   ) { ... }
 *   .global .align 4 .b8 g_table[400] = {0, 0, 128, 63};
 *   .global .attribute(.managed) .align 4 .u32 m_val = 5;
 *   .const .align 4 .b8 c_coef[64] = {0, 0, 128, 63};
 *   .global .align 8 .f64 g_scalar = 0d400C000000000000;
 * Parameters are laid out as the driver lays out the buffer: each at the
 * next multiple of its alignment (.align N, else its type's size), which
 * gives the offsets the cubin's KPARAM_INFO records for the same kernel.
 */
#include "cuimage_internal.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

/* Largest initialised variable whose initial bytes we build. */
#define INIT_MAX_SIZE ((size_t)1 << 30)

struct lexer {
	const char *s;
	size_t len;
	size_t pos;
	const char *tok; /* current token; tlen == 0 at the end */
	size_t tlen;
};

static bool is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_word(char c)
{
	return is_alpha(c) || is_digit(c) || c == '_' || c == '$' || c == '.' || c == '%';
}

static void lex_next(struct lexer *lx)
{
	const char *s = lx->s;
	size_t i = lx->pos, n = lx->len, start;

	for (;;) {
		while (i < n && is_space(s[i]))
			i++;
		if (n - i >= 2 && s[i] == '/' && s[i + 1] == '/') {
			while (i < n && s[i] != '\n')
				i++;
		} else if (n - i >= 2 && s[i] == '/' && s[i + 1] == '*') {
			i += 2;
			while (i < n && !(s[i] == '*' && n - i >= 2 && s[i + 1] == '/'))
				i++;
			i = i < n ? i + 2 : n;
		} else {
			break;
		}
	}
	start = i;
	if (i >= n) {
		/* nothing */
	} else if (is_word(s[i])) {
		while (i < n && is_word(s[i])) {
			i++;
			/* 1.5e-3: the sign belongs to a decimal exponent (not
			 * to 0x1e, 0f3F800000 and the like). */
			if (i < n && (s[i] == '+' || s[i] == '-') &&
			    (s[i - 1] == 'e' || s[i - 1] == 'E') && is_digit(s[start]) &&
			    !(i - start >= 2 && is_alpha(s[start + 1])))
				i++;
		}
	} else if (s[i] == '"') {
		i++;
		while (i < n && s[i] != '"')
			i += (s[i] == '\\' && i + 1 < n) ? 2 : 1;
		if (i < n)
			i++;
	} else {
		i++;
	}
	lx->tok = s + start;
	lx->tlen = i - start;
	lx->pos = i;
}

static bool tok_is(const struct lexer *lx, const char *str)
{
	size_t l = strlen(str);

	return lx->tlen == l && memcmp(lx->tok, str, l) == 0;
}

static bool tok_is_name(const struct lexer *lx)
{
	return lx->tlen > 0 && lx->tok[0] != '.' && !is_digit(lx->tok[0]) &&
	       is_word(lx->tok[0]);
}

/* Skips a balanced {...} block starting at the current "{". */
static void skip_block(struct lexer *lx)
{
	size_t depth = 0;

	while (lx->tlen) {
		if (tok_is(lx, "{"))
			depth++;
		else if (tok_is(lx, "}") && depth > 0 && --depth == 0) {
			lex_next(lx);
			return;
		}
		lex_next(lx);
	}
}

/* Skips one module-level statement: up to a ";" or through a block. */
static void skip_statement(struct lexer *lx)
{
	size_t parens = 0;

	while (lx->tlen) {
		if (tok_is(lx, "("))
			parens++;
		else if (tok_is(lx, ")") && parens > 0)
			parens--;
		else if (parens == 0 && tok_is(lx, "{")) {
			skip_block(lx);
			return;
		} else if (parens == 0 && tok_is(lx, ";")) {
			lex_next(lx);
			return;
		}
		lex_next(lx);
	}
}

static int parse_hex(const char *t, size_t n, uint64_t *v)
{
	uint64_t r = 0;

	for (size_t i = 0; i < n; i++) {
		char c = t[i];

		if (is_digit(c))
			r = r << 4 | (uint64_t)(c - '0');
		else if (c >= 'a' && c <= 'f')
			r = r << 4 | (uint64_t)(c - 'a' + 10);
		else if (c >= 'A' && c <= 'F')
			r = r << 4 | (uint64_t)(c - 'A' + 10);
		else
			return -EINVAL;
	}
	*v = r;
	return 0;
}

/* Unsigned integer literal: decimal, 0x hex, 0b binary, 0 octal, with an
 * optional U suffix. */
static int parse_uint(const char *t, size_t n, uint64_t *v)
{
	unsigned base = 10;
	uint64_t r = 0;
	size_t i = 0;

	if (n > 0 && (t[n - 1] == 'U' || t[n - 1] == 'u'))
		n--;
	if (n == 0)
		return -EINVAL;
	if (n > 2 && t[0] == '0' && (t[1] == 'x' || t[1] == 'X')) {
		base = 16;
		i = 2;
	} else if (n > 2 && t[0] == '0' && (t[1] == 'b' || t[1] == 'B')) {
		base = 2;
		i = 2;
	} else if (n > 1 && t[0] == '0') {
		base = 8;
		i = 1;
	}
	for (; i < n; i++) {
		unsigned d;

		if (is_digit(t[i]))
			d = (unsigned)(t[i] - '0');
		else if (t[i] >= 'a' && t[i] <= 'f')
			d = (unsigned)(t[i] - 'a' + 10);
		else if (t[i] >= 'A' && t[i] <= 'F')
			d = (unsigned)(t[i] - 'A' + 10);
		else
			return -EINVAL;
		if (d >= base)
			return -EINVAL;
		r = r * base + d;
	}
	*v = r;
	return 0;
}

/* --- PTX .target -------------------------------------------------------------- */

int gs_ptx_target(const char *ptx, size_t size, unsigned *arch, unsigned *flags)
{
	struct lexer lx = { .s = ptx };
	unsigned sm = 0;
	size_t i;

	if (!ptx || !arch || !flags)
		return -EINVAL;
	lx.len = strnlen(ptx, size);
	for (lex_next(&lx); lx.tlen && !tok_is(&lx, ".target"); lex_next(&lx))
		;
	if (!lx.tlen)
		return -EINVAL;
	lex_next(&lx);
	if (lx.tlen < 4 || memcmp(lx.tok, "sm_", 3) != 0)
		return -EINVAL;
	for (i = 3; i < lx.tlen && is_digit(lx.tok[i]) && sm < 10000; i++)
		sm = sm * 10 + (unsigned)(lx.tok[i] - '0');
	if (i == 3 || sm == 0 || sm >= 10000)
		return -EINVAL;
	*flags = 0;
	if (i + 1 == lx.tlen && lx.tok[i] == 'a')
		*flags = GS_FATBIN_FLAG_ARCH_SPECIFIC;
	else if (i + 1 == lx.tlen && lx.tok[i] == 'f')
		*flags = GS_FATBIN_FLAG_FAMILY;
	else if (i != lx.tlen)
		return -EINVAL;
	*arch = sm;
	return 0;
}

/* --- module ------------------------------------------------------------------ */

struct ptx {
	struct lexer lx;
	struct gs_code_info *info;
	size_t kcap, gcap, scap;
};

enum num_kind { NUM_INT, NUM_F32_BITS, NUM_F64_BITS, NUM_DOUBLE };

struct ptx_type {
	unsigned size;  /* bytes of one scalar */
	char fkind;     /* 0 integer, 'f' f32, 'd' f64, 'h' f16/bf16 */
};

static struct ptx_type type_of(const struct lexer *lx)
{
	static const struct {
		const char *name;
		struct ptx_type t;
	} types[] = {
		{ ".b8", { 1, 0 } },   { ".u8", { 1, 0 } },   { ".s8", { 1, 0 } },
		{ ".b16", { 2, 0 } },  { ".u16", { 2, 0 } },  { ".s16", { 2, 0 } },
		{ ".f16", { 2, 'h' } }, { ".bf16", { 2, 'h' } },
		{ ".b32", { 4, 0 } },  { ".u32", { 4, 0 } },  { ".s32", { 4, 0 } },
		{ ".f32", { 4, 'f' } }, { ".f16x2", { 4, 0 } }, { ".bf16x2", { 4, 0 } },
		{ ".b64", { 8, 0 } },  { ".u64", { 8, 0 } },  { ".s64", { 8, 0 } },
		{ ".f64", { 8, 'd' } }, { ".b128", { 16, 0 } },
	};
	struct ptx_type none = { 0, 0 };

	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++)
		if (tok_is(lx, types[i].name))
			return types[i].t;
	return none;
}

static unsigned vector_of(const struct lexer *lx)
{
	if (tok_is(lx, ".v2"))
		return 2;
	if (tok_is(lx, ".v4"))
		return 4;
	if (tok_is(lx, ".v8"))
		return 8;
	return 0;
}

static char *tok_dup(const struct lexer *lx)
{
	return strndup(lx->tok, lx->tlen);
}

/* One `.param ...` of an entry; on return the token after it. */
static int parse_param(struct lexer *lx, size_t *cursor, struct gs_kparam *out)
{
	struct ptx_type t = { 0, 0 };
	uint64_t align = 0, count = 1, size, off;
	unsigned vec = 1;
	bool ptr = false;

	lex_next(lx); /* .param */
	while (lx->tlen && lx->tok[0] == '.') {
		if (tok_is(lx, ".align")) {
			lex_next(lx);
			if (parse_uint(lx->tok, lx->tlen, &off) != 0)
				return -EINVAL;
			/* .ptr .global .align N states the pointee's
			 * alignment, not the parameter's. */
			if (!ptr)
				align = off;
		} else if (tok_is(lx, ".ptr")) {
			ptr = true;
		} else if (vector_of(lx)) {
			vec = vector_of(lx);
		} else if (type_of(lx).size) {
			t = type_of(lx);
		}
		lex_next(lx);
	}
	if (!t.size || !tok_is_name(lx))
		return -EINVAL;
	lex_next(lx);
	if (tok_is(lx, "[")) {
		lex_next(lx);
		if (parse_uint(lx->tok, lx->tlen, &count) != 0 || count == 0)
			return -EINVAL;
		lex_next(lx);
		if (!tok_is(lx, "]"))
			return -EINVAL;
		lex_next(lx);
	}
	if (count > UINT16_MAX)
		return -EINVAL;
	size = count * t.size * vec;
	if (!align)
		align = (uint64_t)t.size * vec;
	if (align == 0 || align > 4096 || (align & (align - 1)))
		return -EINVAL;
	off = (*cursor + align - 1) & ~(align - 1);
	if (size > UINT16_MAX || off + size > UINT16_MAX)
		return -EINVAL;
	out->offset = (uint16_t)off;
	out->size = (uint16_t)size;
	*cursor = off + size;
	return 0;
}

/* `.entry NAME (params) [directives] { body }` */
static int parse_entry(struct ptx *px, bool ext)
{
	struct lexer *lx = &px->lx;
	struct gs_kernel_info k = { 0 }, *kernels;
	size_t pcap = 0, cursor = 0;
	bool body = false;
	int ret = -EINVAL;

	lex_next(lx); /* .entry */
	if (!tok_is_name(lx))
		return -EINVAL;
	k.name = tok_dup(lx);
	if (!k.name)
		return -ENOMEM;
	lex_next(lx);
	if (tok_is(lx, "(")) {
		lex_next(lx);
		while (!tok_is(lx, ")")) {
			if (!tok_is(lx, ".param"))
				goto fail;
			struct gs_kparam *np = cuimage_grow(k.params, &pcap, k.nparams,
							    sizeof *k.params);

			if (!np) {
				ret = -ENOMEM;
				goto fail;
			}
			k.params = np;
			ret = parse_param(lx, &cursor, &k.params[k.nparams]);
			if (ret)
				goto fail;
			ret = -EINVAL;
			k.nparams++;
			if (tok_is(lx, ","))
				lex_next(lx);
			else if (!tok_is(lx, ")"))
				goto fail;
		}
		lex_next(lx);
	}
	k.param_bytes = cursor;
	/* .maxntid, .reqntid, .minnctapersm ... then the body, or ";" for a
	 * declaration without one. */
	while (lx->tlen && !tok_is(lx, "{") && !tok_is(lx, ";"))
		lex_next(lx);
	if (tok_is(lx, "{")) {
		body = true;
		skip_block(lx);
	} else if (tok_is(lx, ";")) {
		lex_next(lx);
	} else {
		goto fail;
	}
	if (ext || !body) {
		ret = 0;
		goto fail;
	}
	kernels = cuimage_grow(px->info->kernels, &px->kcap, px->info->nkernels, sizeof k);
	if (!kernels) {
		ret = -ENOMEM;
		goto fail;
	}
	px->info->kernels = kernels;
	px->info->kernels[px->info->nkernels++] = k;
	return 0;
fail:
	free(k.name);
	free(k.params);
	return ret;
}

struct init {
	unsigned char *buf;
	size_t cap;    /* bytes */
	size_t n;      /* scalars written */
	size_t max;    /* scalars allowed (SIZE_MAX when a dimension is open) */
	bool partial;
};

static void put_le(unsigned char *p, uint64_t v, unsigned size)
{
	for (unsigned i = 0; i < size; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static int store_scalar(struct init *in, struct ptx_type t, enum num_kind kind,
			uint64_t bits, double d, bool neg)
{
	size_t at = in->n * t.size;
	uint64_t v = 0;

	if (in->n >= in->max || at + t.size > INIT_MAX_SIZE)
		return -EINVAL;
	if (at + t.size > in->cap) {
		size_t ncap = in->cap ? in->cap * 2 : 64;
		unsigned char *p;

		while (ncap < at + t.size)
			ncap *= 2;
		p = realloc(in->buf, ncap);
		if (!p)
			return -ENOMEM;
		memset(p + in->cap, 0, ncap - in->cap);
		in->buf = p;
		in->cap = ncap;
	}
	/* Bring the literal to the variable's type, as ptxas does. */
	if (t.fkind == 'f' || t.fkind == 'd') {
		if (kind == NUM_INT)
			d = neg ? -(double)bits : (double)bits;
		else if (kind == NUM_F32_BITS) {
			float f;
			uint32_t b = (uint32_t)bits;

			memcpy(&f, &b, sizeof f);
			d = neg ? -(double)f : (double)f;
		} else if (kind == NUM_F64_BITS) {
			memcpy(&d, &bits, sizeof d);
			d = neg ? -d : d;
		} else if (neg) {
			d = -d;
		}
		if (t.fkind == 'f') {
			float f = (float)d;
			uint32_t b;

			memcpy(&b, &f, sizeof b);
			v = b;
		} else {
			memcpy(&v, &d, sizeof v);
		}
	} else if (t.fkind == 'h' && kind != NUM_INT) {
		/* Half-precision conversions are left out: nvcc writes f16
		 * data as .b16 integers. */
		in->partial = true;
	} else if (kind == NUM_DOUBLE) {
		v = (uint64_t)(int64_t)(neg ? -d : d);
	} else {
		v = neg ? (uint64_t)0 - bits : bits;
	}
	put_le(in->buf + at, v, t.size);
	in->n++;
	return 0;
}

/* Does the token end an initialiser element? */
static bool elem_end(const struct lexer *lx)
{
	return !lx->tlen || tok_is(lx, ",") || tok_is(lx, "}") || tok_is(lx, ";");
}

static int parse_scalar(struct lexer *lx, struct ptx_type t, struct init *in)
{
	enum num_kind kind = NUM_INT;
	uint64_t bits = 0;
	double d = 0;
	bool neg = false;
	const char *s;
	size_t n;

	while (tok_is(lx, "-") || tok_is(lx, "+")) {
		neg ^= tok_is(lx, "-");
		lex_next(lx);
	}
	s = lx->tok;
	n = lx->tlen;
	if (n >= 2 && s[0] == '0' && (s[1] == 'f' || s[1] == 'F')) {
		/* 0fXXXXXXXX: the bits of an f32, 8 hex digits. */
		if (n != 10 || parse_hex(s + 2, 8, &bits) != 0)
			return -EINVAL;
		kind = NUM_F32_BITS;
	} else if (n >= 2 && s[0] == '0' && (s[1] == 'd' || s[1] == 'D')) {
		/* 0dXXXXXXXXXXXXXXXX: the bits of an f64. */
		if (n != 18 || parse_hex(s + 2, 16, &bits) != 0)
			return -EINVAL;
		kind = NUM_F64_BITS;
	} else if (n > 0 && is_digit(s[0]) && parse_uint(s, n, &bits) == 0) {
		kind = NUM_INT;
	} else if (n > 0 && n < 64 && is_digit(s[0])) {
		char buf[64], *end;

		memcpy(buf, s, n);
		buf[n] = 0;
		d = strtod(buf, &end);
		if (*end)
			return -EINVAL;
		kind = NUM_DOUBLE;
	} else if (tok_is_name(lx)) {
		/* A symbol's address (x, generic(x), x+4): the loader
		 * relocates it; we leave the bytes zero. */
		size_t parens = 0;

		while (lx->tlen && (parens || !elem_end(lx))) {
			if (tok_is(lx, "("))
				parens++;
			else if (tok_is(lx, ")") && parens)
				parens--;
			lex_next(lx);
		}
		in->partial = true;
		return store_scalar(in, t, NUM_INT, 0, 0, false);
	} else {
		return -EINVAL;
	}
	lex_next(lx);
	if (!elem_end(lx))
		return -EINVAL; /* constant expressions are not supported */
	return store_scalar(in, t, kind, bits, d, neg);
}

/* `= value` or `= {v, {v, v}, ...}` (nested braces flatten). */
static int parse_init(struct lexer *lx, struct ptx_type t, struct init *in)
{
	size_t depth = 0;
	int ret;

	if (!tok_is(lx, "{"))
		return parse_scalar(lx, t, in);
	while (lx->tlen) {
		if (tok_is(lx, "{")) {
			depth++;
			lex_next(lx);
		} else if (tok_is(lx, "}")) {
			lex_next(lx);
			if (--depth == 0)
				return 0;
		} else if (tok_is(lx, ",")) {
			lex_next(lx);
		} else {
			ret = parse_scalar(lx, t, in);
			if (ret)
				return ret;
		}
	}
	return -EINVAL;
}

static int add_global(struct ptx *px, char *name, uint64_t size, struct init *in,
		      bool has_init, unsigned flags)
{
	struct gs_code_info *info = px->info;
	struct gs_global_info g = { 0 }, *globals;
	unsigned char *init = NULL;
	void **storage;

	if (has_init) {
		if (size > INIT_MAX_SIZE)
			return -EINVAL;
		init = calloc(size ? size : 1, 1);
		if (!init)
			return -ENOMEM;
		if (in->cap)
			memcpy(init, in->buf, in->cap < size ? in->cap : size);
	}
	/* storage[i] owns globals[i].init; both grow together. */
	globals = cuimage_grow(info->globals, &px->gcap, info->nglobals, sizeof g);
	if (globals)
		info->globals = globals;
	storage = globals ? cuimage_grow(info->storage, &px->scap, info->nglobals,
					 sizeof(void *))
			  : NULL;
	if (!storage) {
		free(init);
		return -ENOMEM;
	}
	info->storage = storage;
	g.name = name;
	g.size = (size_t)size;
	g.init = init;
	g.init_size = init ? (size_t)size : 0;
	g.flags = flags | (in->partial ? GS_GLOBAL_INIT_PARTIAL : 0);
	storage[info->nglobals] = init;
	info->globals[info->nglobals++] = g;
	return 0;
}

/* `.global|.const [.attribute(.managed)] [.align N] [.vN] .TYPE name[..] [= init]
 *  {, name[..] [= init]} ;` */
static int parse_var(struct ptx *px, bool ext, unsigned flags)
{
	struct lexer *lx = &px->lx;
	struct ptx_type t = { 0, 0 };
	unsigned vec = 1;
	bool skip = false;
	uint64_t dummy;

	lex_next(lx); /* .global / .const */
	while (lx->tlen && lx->tok[0] == '.') {
		if (tok_is(lx, ".attribute")) {
			lex_next(lx);
			if (!tok_is(lx, "("))
				return -EINVAL;
			while (lx->tlen && !tok_is(lx, ")")) {
				if (tok_is(lx, ".managed"))
					flags |= GS_GLOBAL_MANAGED;
				lex_next(lx);
			}
		} else if (tok_is(lx, ".align")) {
			lex_next(lx);
			if (parse_uint(lx->tok, lx->tlen, &dummy) != 0)
				return -EINVAL;
		} else if (vector_of(lx)) {
			vec = vector_of(lx);
		} else if (type_of(lx).size) {
			t = type_of(lx);
		} else {
			skip = true; /* .texref, .samplerref, .surfref, ... */
		}
		lex_next(lx);
	}
	if (skip || !t.size) {
		skip_statement(lx);
		return 0;
	}
	for (;;) {
		struct init in = { .max = SIZE_MAX };
		uint64_t count = 1, n, size;
		bool open = false, has_init = false;
		char *name;
		int ret;

		if (!tok_is_name(lx))
			return -EINVAL;
		name = tok_dup(lx);
		if (!name)
			return -ENOMEM;
		lex_next(lx);
		ret = -EINVAL;
		for (bool first = true; tok_is(lx, "["); first = false) {
			lex_next(lx);
			if (tok_is(lx, "]") && first) {
				open = true;
			} else {
				if (parse_uint(lx->tok, lx->tlen, &n) != 0 ||
				    (n && count > UINT64_MAX / 16 / n))
					goto fail;
				count *= n;
				lex_next(lx);
				if (!tok_is(lx, "]"))
					goto fail;
			}
			lex_next(lx);
		}
		/* No variable is near 2^40 elements; keeps the sizes below
		 * from overflowing. */
		if (count > (uint64_t)1 << 40)
			goto fail;
		count *= vec; /* scalars per outermost element when open */
		if (!open)
			in.max = count;
		if (tok_is(lx, "=")) {
			lex_next(lx);
			has_init = true;
			ret = parse_init(lx, t, &in);
			if (ret)
				goto fail;
			ret = -EINVAL;
		}
		if (open) {
			if (!has_init || count == 0)
				goto fail;
			count *= (in.n + count - 1) / count;
		}
		size = count * t.size;
		if (!ext) {
			ret = add_global(px, name, size, &in, has_init, flags);
			if (ret)
				goto fail;
			name = NULL;
		}
		free(name);
		free(in.buf);
		if (tok_is(lx, ";")) {
			lex_next(lx);
			return 0;
		}
		if (!tok_is(lx, ","))
			return -EINVAL;
		lex_next(lx);
		continue;
fail:
		free(name);
		free(in.buf);
		return ret;
	}
}

int gs_ptx_parse(const char *ptx, size_t size, struct gs_code_info *info)
{
	struct ptx px = { .info = info };
	struct lexer *lx = &px.lx;
	bool ext = false;
	int ret = 0;

	if (!info)
		return -EINVAL;
	memset(info, 0, sizeof *info);
	if (!ptx)
		return -EINVAL;
	lx->s = ptx;
	lx->len = strnlen(ptx, size);
	lex_next(lx);
	while (lx->tlen && ret == 0) {
		if (tok_is(lx, ".version") || tok_is(lx, ".address_size")) {
			/* These directives and .target, .file take no ";". */
			lex_next(lx);
			lex_next(lx);
		} else if (tok_is(lx, ".target") || tok_is(lx, ".file")) {
			lex_next(lx);
			lex_next(lx);
			if (lx->tlen && lx->tok[0] == '"') /* .file N "name" */
				lex_next(lx);
			while (tok_is(lx, ",")) {
				lex_next(lx);
				lex_next(lx);
			}
		} else if (tok_is(lx, ".visible") || tok_is(lx, ".weak") ||
			   tok_is(lx, ".common")) {
			lex_next(lx);
			continue;
		} else if (tok_is(lx, ".extern")) {
			ext = true;
			lex_next(lx);
			continue;
		} else if (tok_is(lx, ".entry")) {
			ret = parse_entry(&px, ext);
		} else if (tok_is(lx, ".global")) {
			ret = parse_var(&px, ext, 0);
		} else if (tok_is(lx, ".const")) {
			ret = parse_var(&px, ext, GS_GLOBAL_CONSTANT);
		} else {
			/* .func, .section, .shared, .pragma, .alias, ... */
			skip_statement(lx);
		}
		ext = false;
	}
	if (ret)
		gs_code_info_free(info);
	return ret;
}
