#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The generator's handle-translation rules (shim/gen_api.py).

  * What the build generated: the classification g_symbols.txt lists for a
    set of representative entry points, and the shape of the wrappers in
    g_wrappers.c (the path taken before a migration must stay a plain
    forward behind one branch).
  * The rules themselves, on a small cuda.h written here: inputs, outputs,
    structures, unions, arrays, and the annotations that settle what the
    types cannot.

Exit status: 0 pass, 1 fail.
"""

import argparse
import os
import re
import sys
import tempfile

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print('FAIL: %s' % msg, file=sys.stderr)


# ---- the generated classification ------------------------------------------

# symbol -> (how, {parameter: classification}); parameters not named here
# are not checked.
EXPECTED = {
    # outputs of a track symbol: its hook records the object and maps it
    'cuStreamCreate': ('none', {'phStream': 'hook:stream'}),
    'cuModuleGetFunction': ('generated', {'hfunc': 'hook:function', 'hmod': 'in:module'}),
    'cuCtxCreate_v4': ('generated', {'pctx': 'hook:ctx', 'dev': 'in:device'}),
    # inputs by value
    'cuLaunchKernel': ('generated', {'f': 'in:function', 'hStream': 'in:stream',
                                     'dev:kernelParams': 'launch'}),
    'cuLaunchKernel_ptsz': ('generated', {'f': 'in:function', 'hStream': 'in:stream',
                                          'dev:kernelParams': 'launch'}),
    'cuDeviceGetAttribute': ('generated', {'dev': 'in:device'}),
    'cuStreamDestroy_v2': ('generated', {'hStream': 'in:stream'}),
    'cuCtxPushCurrent_v2': ('generated', {'ctx': 'in:ctx'}),
    'cuMemPrefetchAsync_v2': ('generated', {'location': 'in:memloc', 'hStream': 'in:stream'}),
    'cuMemMap': ('generated', {'handle': 'in:phys'}),
    'cuGraphLaunch': ('generated', {'hGraphExec': 'identity', 'hStream': 'in:stream'}),
    # outputs of plain symbols
    'cuCtxGetDevice': ('generated', {'device': 'out:device'}),
    'cuStreamGetCtx': ('generated', {'hStream': 'in:stream', 'pctx': 'out:ctx'}),
    'cuCtxPopCurrent_v2': ('generated', {'pctx': 'out:ctx'}),
    'cuFuncGetModule': ('generated', {'hmod': 'out:module', 'hfunc': 'in:function'}),
    'cuDeviceGet': ('generated', {'device': 'out:device', 'ordinal': 'in:device'}),
    # structures
    'cuMemSetAccess': ('generated', {'desc': 'in-array:struct(location:memloc)[count]'}),
    'cuMemCreate': ('generated', {'handle': 'hook:phys',
                                  'prop': 'in-ptr:struct(location:memloc)'}),
    'cuMemGetAllocationPropertiesFromHandle': (
        'generated', {'prop': 'out:struct(location:memloc)', 'handle': 'in:phys'}),
    'cuMemcpy3DPeer': ('generated',
                       {'pCopy': 'in-ptr:struct(srcContext:ctx,dstContext:ctx)'}),
    'cuGraphAddKernelNode_v2': (
        'generated', {'nodeParams': 'in-ptr:struct(func:function,kern:kernel,ctx:ctx)'}),
    'cuGraphInstantiateWithParams': (
        'generated', {'instantiateParams': 'inout-ptr:struct(hUploadStream:stream)'}),
    # annotated
    'cuMulticastCreate': ('generated', {'mcHandle': 'new:phys'}),
    'cuMemMapArrayAsync': ('generated', {'mapInfoList': 'unsupported', 'hStream': 'in:stream'}),
    'cuStreamGetAttribute': ('generated', {'hStream': 'in:stream', 'value_out': 'none'}),
    # hand-written
    'cuLaunchKernelEx': ('hook', {'config': 'manual', 'f': 'in:function',
                                  'dev:kernelParams': 'manual'}),
    'cuLaunchKernelEx_ptsz': ('hook', {'config': 'manual'}),
    'cuDeviceGetCount': ('hook', {}),
    'cuStreamAddCallback': ('hook', {'hStream': 'in:stream'}),
    # custom exports translate for themselves
    'cuStreamEndCapture': ('custom', {'hStream': 'in:stream'}),
    # device addresses of moved globals
    'cuMemcpyHtoD_v2': ('generated', {'dev:dstDevice': 'in'}),
    'cuMemcpyDtoDAsync_v2': ('generated', {'dev:dstDevice': 'in', 'dev:srcDevice': 'in',
                                           'hStream': 'in:stream'}),
    'cuMemcpy2D_v2': ('generated', {'dev:pCopy': 'in-ptr:devptr(srcDevice,dstDevice)'}),
    'cuMemcpy3DPeer_ptds': ('generated',
                            {'pCopy': 'in-ptr:struct(srcContext:ctx,dstContext:ctx)',
                             'dev:pCopy': 'in-ptr:devptr(srcDevice,dstDevice)'}),
    'cuGraphAddMemsetNode': ('generated', {'dev:memsetParams': 'in-ptr:devptr(dst)'}),
    'cuMemcpyBatchAsync_v2': ('generated', {'dev:dsts': 'in-array[count]',
                                            'dev:srcs': 'in-array[count]'}),
    'cuModuleGetGlobal_v2': ('generated', {'hmod': 'in:module', 'dev:dptr': 'out'}),
    'cuLibraryGetGlobal': ('generated', {'dev:dptr': 'out'}),
    'cuLaunchCooperativeKernel': ('generated', {'dev:kernelParams': 'launch'}),
    'cuMemFree_v2': ('custom', {'dev:dptr': 'manual'}),
    'cuStreamBatchMemOp_v2': ('generated', {'dev:paramArray': 'untranslated'}),
}

# Entry points with nothing to translate get no line (and no branch).
ABSENT = ['cuInit', 'cuCtxSynchronize', 'cuMemAlloc_v2', 'cuGetErrorString']


def read_xlat(path):
    out = {}
    with open(path, encoding='utf-8') as f:
        for line in f:
            if not line.startswith('xlat\t'):
                continue
            _, sym, how, params = line.rstrip('\n').split('\t')
            table = {}
            if params != '-':
                for item in params.split(' '):
                    name, _, what = item.partition('=')
                    table[name] = what
            out[sym] = (how, table)
    return out


def check_classification(symbols_txt):
    got = read_xlat(symbols_txt)
    check(len(got) > 200, 'only %d symbols classified' % len(got))
    for sym, (how, params) in EXPECTED.items():
        if sym not in got:
            check(False, '%s: not classified' % sym)
            continue
        ghow, gparams = got[sym]
        check(ghow == how, '%s: translation %r, expected %r' % (sym, ghow, how))
        for p, want in params.items():
            check(gparams.get(p) == want, '%s: %s is %r, expected %r'
                  % (sym, p, gparams.get(p), want))
    for sym in ABSENT:
        check(sym not in got, '%s: classified as %r, expected nothing to translate'
              % (sym, got.get(sym)))


# ---- the generated wrappers --------------------------------------------------

def function_body(text, header_re):
    m = re.search(header_re, text, re.M)
    if not m:
        return None
    end = text.index('\n}\n', m.end())
    return text[m.end():end + 3]


LAUNCH_ARGS = ('f, gridDimX, gridDimY, gridDimZ, blockDimX, blockDimY, blockDimZ, '
               'sharedMemBytes, hStream, kernelParams, extra')

# The wrapper of cuLaunchKernel up to and including the call, as before
# translation existed: the inside check, call accounting, the missing-symbol
# check, the gate; then one branch, whose not-taken side is the plain call.
LAUNCH_WRAPPER = '''{
	gs_fn_cuLaunchKernel *gs_fn;
	struct gs_thread *gs_self;
	CUresult gs_rc;

	if (GS_UNLIKELY(gs_inside())) {
		gs_fn = gs_real.cuLaunchKernel;
		return gs_fn ? gs_fn(%(a)s) : gs_missing(GS_SYM_cuLaunchKernel);
	}
	gs_rc = gs_call_begin(GS_SYM_cuLaunchKernel, &gs_self);
	if (GS_UNLIKELY(gs_rc != CUDA_SUCCESS))
		return gs_rc;
	gs_fn = gs_real.cuLaunchKernel;
	if (GS_UNLIKELY(gs_fn == NULL))
		return gs_missing(GS_SYM_cuLaunchKernel);
	gs_gate_enter(gs_self, GS_SYM_cuLaunchKernel);
	if (GS_UNLIKELY(gs_migrated_load()))
		gs_rc = gs_xlat_cuLaunchKernel(gs_fn, %(a)s);
	else
		gs_rc = gs_fn(%(a)s);
	gs_gate_exit(gs_self);
	return gs_rc;
}
''' % {'a': LAUNCH_ARGS}


def check_wrappers(wrappers_c):
    with open(wrappers_c, encoding='utf-8') as f:
        text = f.read()
    body = function_body(text, r'^GS_EXPORT CUresult cuLaunchKernel\([^)]*\)\n')
    check(body == LAUNCH_WRAPPER, 'cuLaunchKernel wrapper changed shape:\n%s' % body)
    xl = function_body(text, r'^static GS_XLAT_COLD CUresult gs_xlat_cuLaunchKernel\('
                       r'gs_fn_cuLaunchKernel \*gs_fn[^)]*\)\n')
    check(xl is not None, 'no cold translation function for cuLaunchKernel')
    if xl:
        check('gs_xlat_to_real(GS_KIND_FUNCTION' in xl and
              'gs_xlat_to_real(GS_KIND_STREAM' in xl,
              'cuLaunchKernel: f and hStream are not translated:\n%s' % xl)
    # Nothing to translate: no branch at all.
    body = function_body(text, r'^GS_EXPORT CUresult cuCtxSynchronize\(void\)\n')
    check(body is not None and 'gs_migrated_load' not in body,
          'cuCtxSynchronize has a translation branch:\n%s' % body)
    # A track hook runs after the translated call with the wrapper's own
    # (app) arguments.
    body = function_body(text, r'^GS_EXPORT CUresult cuModuleGetFunction\([^)]*\)\n')
    check(body is not None and
          'gs_rc = gs_xlat_cuModuleGetFunction(gs_fn, hfunc, hmod, name);' in body and
          'gs_track_cuModuleGetFunction(false, hfunc, hmod, name);' in body,
          'cuModuleGetFunction: translation or hook call missing:\n%s' % body)
    # Hand-written translation of a per-thread variant: the base hook.
    body = function_body(text, r'^GS_EXPORT CUresult cuLaunchKernelEx_ptsz\([^)]*\)\n')
    check(body is not None and
          'gs_xlat_hook_cuLaunchKernelEx(gs_fn, true, config, f, kernelParams, extra)'
          in body, 'cuLaunchKernelEx_ptsz does not call its hand-written hook:\n%s' % body)
    check('gs_translation_pending' not in text, 'translation still pending somewhere')
    # Kernel parameters: the layout is found by the app handle, so before f
    # is mapped; the private copies are released after the call.
    if xl:
        kp = xl.find('gs_xlat_kernel_params_begin(&gs_kp, f, &kernelParams, &extra)')
        fx = xl.find('gs_xlat_to_real(GS_KIND_FUNCTION')
        check(0 <= kp < fx and 'gs_xlat_kernel_params_end(&gs_kp)' in xl,
              'cuLaunchKernel: kernel parameters not translated first:\n%s' % xl)
    xl = function_body(text, r'^static GS_XLAT_COLD CUresult gs_xlat_cuMemcpyHtoD_v2\('
                       r'[^)]*\)\n')
    check(xl is not None and 'dstDevice = gs_xlat_devptr(dstDevice);' in xl,
          'cuMemcpyHtoD_v2: dstDevice not mapped:\n%s' % xl)
    xl = function_body(text, r'^static GS_XLAT_COLD CUresult gs_xlat_cuModuleGetGlobal_v2\('
                       r'[^)]*\)\n')
    check(xl is not None and '*dptr = gs_xlat_devptr_app(*dptr);' in xl,
          'cuModuleGetGlobal_v2: the address is not mapped back:\n%s' % xl)
    # After the unload hook dropped the code's globals, their ranges go.
    body = function_body(text, r'^GS_EXPORT CUresult cuModuleUnload\([^)]*\)\n')
    check(body is not None and
          body.find('gs_track_cuModuleUnload') < body.find('gs_xlat_moved_globals_unloaded()'),
          'cuModuleUnload: moved globals not dropped after the hook:\n%s' % body)


# ---- the rules, on a header written here -------------------------------------

MINI_CUDA_H = '''
typedef enum cudaError_enum { CUDA_SUCCESS = 0 } CUresult;
typedef struct CUctx_st *CUcontext;
typedef struct CUstream_st *CUstream;
typedef struct CUgraph_st *CUgraph;
typedef int CUdevice_v1;
typedef CUdevice_v1 CUdevice;
typedef struct CUmemLocation_st { int type; int id; } CUmemLocation_v1;
typedef CUmemLocation_v1 CUmemLocation;
typedef struct S_st {
    CUstream s;
    CUmemLocation loc;
    struct { CUcontext c; int pad; } inner;
    CUgraph g;
} S_v1;
typedef S_v1 S;
typedef union U_u { CUstream s; int x; } U;
typedef struct P_st { const CUstream *list; unsigned n; } P;
typedef void (*cb_t)(CUstream s, void *user);
typedef unsigned long long CUdeviceptr_v2;
typedef CUdeviceptr_v2 CUdeviceptr;
typedef unsigned int CUdeviceptr_v1;
typedef struct C_st { CUdeviceptr src; struct { CUdeviceptr dst; } to; CUcontext ctx; } C;
typedef union DU_u { CUdeviceptr p; int x; } DU;

CUresult cuOut(CUstream *phStream, CUgraph *phGraph);
CUresult cuIn(CUstream hStream, CUdevice dev, CUmemLocation loc, int n, cb_t cb);
CUresult cuStructIn(const S *in);
CUresult cuStructAmbiguous(S *x);
CUresult cuStructOut(S *x_out);
CUresult cuUnion(const U *u);
CUresult cuPointerMember(const P *p);
CUresult cuArray(const CUstream *streams, unsigned count);
CUresult cuOrdinal(CUdevice *device, int ordinal);
CUresult cuTracked(CUstream *phStream, CUcontext ctx);
CUresult cuDev(CUdeviceptr d, CUdeviceptr_v1 legacy, const C *c, const DU *u,
               CUdeviceptr *out, const CUdeviceptr *list);
CUresult cuModuleGetGlobal_v2(CUdeviceptr *dptr, const char *name);
'''


def check_rules(gen, cc):
    with tempfile.TemporaryDirectory() as d:
        with open(os.path.join(d, 'cuda.h'), 'w', encoding='utf-8') as f:
            f.write(MINI_CUDA_H)
        funcs = gen.declared_functions(cc, d, [])
        types = gen.type_table(cc, d)

        def classify(sym, tag='pass', ann=None):
            sx = gen.classify_symbol(funcs[sym], sym, tag, ann or {}, types)
            out = {x.name: x.describe().split('=', 1)[1] for x in sx.params}
            out.update(dx.describe().split('=', 1) for dx in sx.dev)
            return sx.how, out

        def fails(sym, tag='pass', ann=None, why=''):
            try:
                classify(sym, tag, ann)
            except gen.GenError as e:
                check(why in str(e), '%s: error %r does not mention %r' % (sym, str(e), why))
                return
            check(False, '%s: classified, expected an error' % sym)

        how, p = classify('cuOut')
        check(how == 'generated' and p == {'phStream': 'out:stream', 'phGraph': 'identity'},
              'cuOut: %s %s' % (how, p))
        how, p = classify('cuIn')
        check(p == {'hStream': 'in:stream', 'dev': 'in:device', 'loc': 'in:memloc'},
              'cuIn: %s' % p)
        # Device addresses: by value, members of a const structure (which
        # also carries a handle), a union and an array without a count are
        # listed untranslated, outputs are new addresses (except a
        # global's), 32-bit legacy addresses are not addresses to map.
        how, p = classify('cuDev')
        check(how == 'generated' and p == {
            'c': 'in-ptr:struct(ctx:ctx)',
            'dev:d': 'in', 'dev:c': 'in-ptr:devptr(src,to.dst)', 'dev:u': 'untranslated',
            'dev:list': 'untranslated'}, 'cuDev: %s %s' % (how, p))
        how, p = classify('cuModuleGetGlobal_v2')
        check(how == 'generated' and p == {'dev:dptr': 'out'},
              'cuModuleGetGlobal_v2: %s %s' % (how, p))
        how, p = classify('cuStructIn')
        check(p == {'in': 'in-ptr:struct(s:stream,loc:memloc,inner.c:ctx)'},
              'cuStructIn: %s' % p)
        fails('cuStructAmbiguous', why='annotate xlat-in or xlat-out')
        how, p = classify('cuStructAmbiguous', ann={'xlat-in': {'x': True}})
        check(p == {'x': 'inout-ptr:struct(s:stream,loc:memloc,inner.c:ctx)'},
              'cuStructAmbiguous xlat-in: %s' % p)
        how, p = classify('cuStructAmbiguous', ann={'xlat-out': {'x': True}})
        check(p == {'x': 'out:struct(s:stream,loc:memloc,inner.c:ctx)'},
              'cuStructAmbiguous xlat-out: %s' % p)
        how, p = classify('cuStructOut')
        check(p == {'x_out': 'out:struct(s:stream,loc:memloc,inner.c:ctx)'},
              'cuStructOut: %s' % p)
        fails('cuUnion', why='union')
        fails('cuPointerMember', why='points to')
        how, p = classify('cuUnion', ann={'xlat-unsupported': {'u': True}})
        check(how == 'generated' and p == {'u': 'unsupported'}, 'cuUnion unsupported: %s' % p)
        how, p = classify('cuPointerMember', ann={'xlat-hook': {None: True}})
        check(how == 'hook' and p == {'p': 'manual'}, 'cuPointerMember hook: %s' % p)
        fails('cuArray', why='xlat-count')
        how, p = classify('cuArray', ann={'xlat-count': {'streams': 'count'}})
        check(p == {'streams': 'in-array:stream[count]'}, 'cuArray counted: %s' % p)
        how, p = classify('cuOrdinal')
        check(p == {'device': 'out:device'}, 'cuOrdinal: %s' % p)
        how, p = classify('cuOrdinal', ann={'xlat-device': {'ordinal': True}})
        check(p == {'device': 'out:device', 'ordinal': 'in:device'},
              'cuOrdinal xlat-device: %s' % p)
        how, p = classify('cuTracked', tag='track')
        check(p == {'phStream': 'hook:stream', 'ctx': 'in:ctx'}, 'cuTracked: %s' % p)
        how, p = classify('cuTracked', tag='track', ann={'xlat-new': {'phStream': True}})
        check(p == {'phStream': 'new:stream', 'ctx': 'in:ctx'}, 'cuTracked xlat-new: %s' % p)
        fails('cuIn', ann={'xlat-in': {'nothere': True}}, why='names no parameter')

        # Annotation syntax.
        ann = os.path.join(d, 'annotations.txt')
        syms = set(funcs)
        for text, why in (('cuArray xlat-count=streams\n', 'xlat-count=ARG:COUNT'),
                          ('cuArray xlat-bogus=streams\n', 'unknown tag'),
                          ('cuArray track\ncuArray pass\n', 'annotated twice'),
                          ('cuArray xlat-hook=x\n', 'takes no value')):
            with open(ann, 'w', encoding='utf-8') as f:
                f.write(text)
            try:
                gen.read_annotations(ann, syms)
                check(False, 'annotations %r accepted' % text)
            except gen.GenError as e:
                check(why in str(e), 'annotations %r: %s' % (text, e))
        with open(ann, 'w', encoding='utf-8') as f:
            f.write('cuTracked track\ncuTracked xlat-new=phStream\n'
                    'cuArray xlat-in=streams xlat-count=streams:count\n')
        tags, xlat = gen.read_annotations(ann, syms)
        check(tags == {'cuTracked': 'track'}, 'tags: %s' % tags)
        check(xlat == {'cuTracked': {'xlat-new': {'phStream': True}},
                       'cuArray': {'xlat-in': {'streams': True},
                                   'xlat-count': {'streams': 'count'}}}, 'xlat: %s' % xlat)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--gen-api', required=True)
    ap.add_argument('--symbols', required=True)
    ap.add_argument('--wrappers', required=True)
    ap.add_argument('--cc-arg', action='append', required=True)
    args = ap.parse_args()

    # No __pycache__ in the source tree.
    sys.dont_write_bytecode = True
    sys.path.insert(0, os.path.dirname(os.path.abspath(args.gen_api)))
    import gen_api  # noqa: E402

    check_classification(args.symbols)
    check_wrappers(args.wrappers)
    check_rules(gen_api, args.cc_arg)
    if failures:
        print('generator translation rules: %d check(s) failed' % len(failures),
              file=sys.stderr)
        return 1
    print('generator translation rules: ok')
    return 0


if __name__ == '__main__':
    sys.exit(main())
