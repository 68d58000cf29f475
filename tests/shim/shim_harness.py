#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Shim tests that need a process boundary. Exit 0 pass, 1 fail, 77 skip.

  exports  the shim exports exactly the functions cuda.h and cudaProfiler.h
           declare, plus the legacy ABIs cuda.h no longer declares (both
           computed here from the preprocessor, independently of
           shim/gen_api.py), the legacy cuGetProcAddress and the
           gs_introspect_* API, and carries the SONAME libcuda.so.1
  noreal   without a usable driver every call fails with
           CUDA_ERROR_NO_DEVICE and one clear error line is printed
  ctor     a library constructor that uses the driver before main() works
           under the shim, and its calls went through the shim
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

SKIP = 77


def fail(msg):
    print('FAIL: ' + msg, file=sys.stderr)
    return 1


# ---------------------------------------------------------------- exports

def header_text(cc, include_dir, defines, header):
    """The preprocessed text that comes from `header` itself."""
    cmd = cc + ['-E', '-I', include_dir] + ['-D' + d for d in defines] + ['-x', 'c', '-']
    text = subprocess.run(cmd, input='#include <%s>\n' % header, capture_output=True,
                          text=True, check=True).stdout
    keep = []
    in_header = False
    for line in text.splitlines():
        m = re.match(r'^# \d+ "([^"]*)"', line)
        if m:
            in_header = os.path.basename(m.group(1)) == header
            continue
        if in_header:
            keep.append(line)
    return keep


def header_symbols(cc, include_dir, defines, header='cuda.h'):
    """Functions a header declares, from the preprocessed text: every
    top-level `CUresult name(` statement of it that is not static."""
    keep = header_text(cc, include_dir, defines, header)
    flat = re.sub(r'\s+', ' ', ' '.join(keep))
    names = set()
    for stmt in re.split(r'[;{}]', flat):
        stmt = re.sub(r'__attribute__ ?\(\(.*?\)\)', ' ', stmt).strip()
        m = re.match(r'^(?:extern )?CUresult (cu\w+) ?\(', stmt)
        if m:
            names.add(m.group(1))
    return names


def legacy_symbols(cc, include_dir, declared):
    """The names the driver exports the ABIs under that cudaTypedefs.h lists
    (with __CUDA_API_VERSION_INTERNAL, legacy ones included) and cuda.h no
    longer declares. The driver numbers the default-stream ABIs of a name
    in order of version: NAME, NAME_v2, NAME_v3...; a per-thread ABI is the
    newest default one not newer than it, plus _ptsz/_ptds."""
    text = ' '.join(header_text(cc, include_dir, ['__CUDA_API_VERSION_INTERNAL'],
                                'cudaTypedefs.h'))
    default, ptds = {}, []
    for m in re.finditer(r'\(\s*\*\s*PFN_(\w+)_v(\d+)(_ptsz|_ptds)?\s*\)', text):
        base, version, suffix = m.group(1), int(m.group(2)), m.group(3)
        if suffix:
            ptds.append((base, version, suffix))
        else:
            default.setdefault(base, set()).add(version)
    names = {}
    for base, versions in default.items():
        for n, v in enumerate(sorted(versions), 1):
            names[(base, v)] = base if n == 1 else '%s_v%d' % (base, n)
    out = {names[k] for k in names}
    for base, version, suffix in ptds:
        older = [v for v in default.get(base, ()) if v <= version]
        if older:
            out.add(names[(base, max(older))] + suffix)
        else:
            out.add(base + suffix)
    return out - declared


def dynamic_symbols(lib):
    res = subprocess.run(['nm', '-D', '--defined-only', lib], capture_output=True, text=True,
                         check=True)
    syms = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3:
            syms[parts[2]] = parts[1]
    return syms


def soname(lib):
    res = subprocess.run(['readelf', '-d', lib], capture_output=True, text=True, check=True)
    m = re.search(r'\(SONAME\)\s+Library soname: \[([^\]]+)\]', res.stdout)
    return m.group(1) if m else None


def cmd_exports(args):
    if not shutil.which('nm') or not shutil.which('readelf'):
        print('SKIP: binutils (nm, readelf) not found', file=sys.stderr)
        return SKIP
    cc = args.cc_arg
    declared = header_symbols(cc, args.cuda_include, []) | \
        header_symbols(cc, args.cuda_include, ['CUDA_API_PER_THREAD_DEFAULT_STREAM'])
    profiler = header_symbols(cc, args.cuda_include, [], 'cudaProfiler.h')
    # The legacy cuGetProcAddress is the one exported by hand (checked below).
    legacy = legacy_symbols(cc, args.cuda_include, declared) - {'cuGetProcAddress'}
    exported = dynamic_symbols(args.lib)
    rc = 0
    missing = sorted(declared - set(exported))
    missing_legacy = sorted((legacy | profiler) - set(exported))
    cu_exported = {s for s in exported if s.startswith('cu')}
    extra = sorted(cu_exported - declared - legacy - profiler - {'cuGetProcAddress'})
    others = sorted(s for s in exported if not s.startswith('cu')
                    and not s.startswith('gs_introspect_'))
    not_code = sorted(s for s in declared | legacy | profiler
                      if s in exported and exported[s] not in 'T')
    print('%d/%d symbols cuda.h declares are exported' % (len(declared) - len(missing),
                                                       len(declared)))
    print('also exported: cuGetProcAddress (legacy ABI): %s; %d gs_introspect_* functions'
          % ('yes' if 'cuGetProcAddress' in exported else 'NO',
             sum(1 for s in exported if s.startswith('gs_introspect_'))))
    print('%d/%d legacy ABIs cuda.h no longer declares are exported; %d/%d profiler '
          'functions' % (len(legacy & set(exported)), len(legacy),
                         len(profiler & set(exported)), len(profiler)))
    if args.expect_count and len(declared) != args.expect_count:
        print('note: cuda.h declares %d symbols here (CUDA 13.0 declares %d)'
              % (len(declared), args.expect_count))
    if args.expect_legacy and len(legacy) != args.expect_legacy:
        print('note: %d legacy ABIs here (CUDA 13.0 has %d)'
              % (len(legacy), args.expect_legacy))
    if missing:
        rc = fail('not exported: ' + ' '.join(missing))
    if missing_legacy:
        rc = fail('legacy or profiler function not exported: ' + ' '.join(missing_legacy))
    if extra:
        rc = fail('exported but not declared by cuda.h: ' + ' '.join(extra))
    if 'cuGetProcAddress' not in exported:
        rc = fail('the legacy cuGetProcAddress is not exported')
    if others:
        rc = fail('unexpected exports (visibility leak): ' + ' '.join(others))
    if not_code:
        rc = fail('exported, but not as functions: ' + ' '.join(not_code))
    name = soname(args.lib)
    if name != 'libcuda.so.1':
        rc = fail('SONAME is %r, want libcuda.so.1' % name)
    return rc


# ---------------------------------------------------------------- noreal

def run(prog, env, timeout=60):
    full = dict(os.environ)
    for k in ('GPUSWAP_REAL_LIBCUDA', 'GPUSWAP_LOG', 'GPUSWAP_LOG_FILE', 'LD_PRELOAD'):
        full.pop(k, None)
    full.update(env)
    return subprocess.run(prog, env=full, capture_output=True, text=True, timeout=timeout)


def gpuswap_lines(stderr):
    return [l for l in stderr.splitlines() if l.startswith('gpuswap[')]


def cmd_noreal(args):
    shim = os.path.abspath(args.shim)
    preload = args.preload or shim
    rc = 0
    cases = [
        ('missing GPUSWAP_REAL_LIBCUDA', '/nonexistent/libcuda.so.1', None,
         ['no real CUDA driver', 'No such file']),
        ('GPUSWAP_REAL_LIBCUDA is the shim', shim, None,
         ['no real CUDA driver', 'gpuswap itself']),
    ]
    # Search mode, with only the shim itself (as libcuda.so.1) on the path;
    # meaningless where a real driver sits in the system directories.
    system_driver = any(os.path.exists(os.path.join(d, 'libcuda.so.1')) for d in (
        '/usr/local/nvidia/lib64', '/usr/local/nvidia/lib', '/usr/lib/x86_64-linux-gnu',
        '/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/lib64',
        '/usr/lib', '/usr/lib/wsl/lib'))
    tmp = tempfile.mkdtemp(prefix='gs-noreal-')
    try:
        os.symlink(shim, os.path.join(tmp, 'libcuda.so.1'))
        if system_driver:
            print('note: a libcuda.so.1 is installed; not testing the search without one')
        else:
            cases.append(('only the shim on LD_LIBRARY_PATH', None, tmp,
                          ['no real CUDA driver', 'GPUSWAP_REAL_LIBCUDA']))
        for what, real, libpath, needles in cases:
            env = {'LD_PRELOAD': preload}
            if real is not None:
                env['GPUSWAP_REAL_LIBCUDA'] = real
            env['LD_LIBRARY_PATH'] = libpath or ''
            res = run([args.helper], env)
            lines = gpuswap_lines(res.stderr)
            print('%s: exit %d, %d line(s): %s' % (what, res.returncode, len(lines),
                                                   ' | '.join(lines)))
            if res.returncode != 0:
                rc = fail('%s: the helper failed:\n%s%s' % (what, res.stdout, res.stderr))
            if len(lines) != 1:
                rc = fail('%s: want exactly one gpuswap line on stderr, got %d'
                          % (what, len(lines)))
            elif not all(n in lines[0] for n in needles) or ': shim: error: ' not in lines[0]:
                rc = fail('%s: the line lacks %s' % (what, needles))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rc


# ---------------------------------------------------------------- ctor

def cmd_ctor(args):
    real = os.path.abspath(args.real)
    fd, stats = tempfile.mkstemp(prefix='gs-ctor-stats-', suffix='.json')
    os.close(fd)
    try:
        env = {'LD_PRELOAD': args.preload, 'GPUSWAP_REAL_LIBCUDA': real,
               'GPUSWAP_STATS_FILE': stats,
               'LD_LIBRARY_PATH': os.path.dirname(real)}
        res = run([args.prog], env)
        sys.stdout.write(res.stdout)
        sys.stderr.write(res.stderr)
        if res.returncode != 0:
            if 'has no cu' in res.stderr and args.allow_missing:
                print('SKIP: the driver lacks an entry point the program needs',
                      file=sys.stderr)
                return SKIP
            return fail('%s exited %d under the shim' % (args.prog, res.returncode))
        with open(stats) as f:
            data = json.load(f)
        calls = data.get('calls', {})
        rc = 0
        for sym in ('cuInit', 'cuDevicePrimaryCtxRetain', 'cuCtxSetCurrent', 'cuMemAlloc_v2',
                    'cuMemsetD32_v2'):
            if calls.get(sym, 0) < 1:
                rc = fail('%s did not go through the shim (calls: %s)' % (sym, calls))
        if data.get('driver') != real:
            rc = fail('the shim loaded %r, not %r' % (data.get('driver'), real))
        return rc
    finally:
        os.unlink(stats)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    sub = ap.add_subparsers(dest='cmd', required=True)
    e = sub.add_parser('exports')
    e.add_argument('--lib', required=True)
    e.add_argument('--cuda-include', required=True)
    e.add_argument('--cc-arg', action='append', required=True)
    e.add_argument('--expect-count', type=int, default=0)
    e.add_argument('--expect-legacy', type=int, default=0)
    n = sub.add_parser('noreal')
    n.add_argument('--shim', required=True)
    n.add_argument('--preload', help='LD_PRELOAD value (default: the shim alone)')
    n.add_argument('--helper', required=True)
    c = sub.add_parser('ctor')
    c.add_argument('--preload', required=True, help='LD_PRELOAD value, ending with the shim')
    c.add_argument('--real', required=True)
    c.add_argument('--prog', required=True)
    c.add_argument('--allow-missing', action='store_true',
                   help='skip (77) when the driver lacks an entry point')
    args = ap.parse_args()
    return {'exports': cmd_exports, 'noreal': cmd_noreal, 'ctor': cmd_ctor}[args.cmd](args)


if __name__ == '__main__':
    sys.exit(main())
