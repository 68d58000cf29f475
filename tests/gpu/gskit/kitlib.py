# SPDX-License-Identifier: Apache-2.0
"""Plumbing of the real-GPU kit: its layout, the environments its programs
run in, shared-library policy, and child processes that can never hang the
run. Python 3 standard library only: the GPU machine installs nothing."""

import json
import os
import re
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path

MANIFEST = "MANIFEST.json"
MANIFEST_FORMAT = 1
SIZE_LIMIT = 60 << 20  # what may be carried to the GPU machine

# What the kit must hold to be worth carrying. Everything else is optional
# and the checks that need it skip with a reason.
REQUIRED = (
    "run",
    "gskit/kitlib.py",
    "gskit/checks.py",
    "gskit/report.py",
    "gskit/harness.py",
    "gskit/shimstats.py",
    "gskit/train_lm.py",
    "bin/gs-probe-driver",
    "bin/gs-driver-ckpt",
    "bin/gs-cudart-workload",
    "bin/gs-mem-holder",
    "data/probe_kernels.fatbin",
)
OPTIONAL = {
    "lib/libgpuswap.so": "the shim",
    "bin/gpu-freeze": "gpu-freeze",
    "bin/gpu-thaw": "gpu-thaw",
    "bin/gpu-swap": "gpu-swap",
    "bin/gpu-inspect": "gpu-inspect",
    "bin/gpu-ps": "gpu-ps",
}

# Libraries every Linux machine that runs CUDA has, in a compatible version:
# never copied. glibc is forward compatible, and the GPU machine's is newer.
BASE_LIBS = frozenset({
    "linux-vdso.so.1", "ld-linux-x86-64.so.2", "libc.so.6", "libm.so.6", "libdl.so.2",
    "libpthread.so.0", "librt.so.1", "libutil.so.1", "libresolv.so.2", "libgcc_s.so.1",
    "libstdc++.so.6",
})
# Libraries the GPU machine provides and the kit must not carry: the driver
# (a copy would not match the kernel module) and cuBLAS (over 500 MiB; the
# machine's CUDA toolkit and PyTorch both have it).
GPU_PROVIDED = re.compile(r"^(libcuda\.so\.1|libcublas(Lt)?\.so(\.\d+)*|libnvidia-[\w.+-]+\.so(\.\d+)*)$")
SYSTEM_LIB_DIRS = ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib64",
                   "/lib", "/usr/lib", "/usr/local/lib")


EM_CUDA = 190


def is_elf(path):
    """A host ELF file (program or library); cubins are ELF too, for the GPU."""
    try:
        with open(path, "rb") as f:
            head = f.read(20)
    except OSError:
        return False
    return len(head) == 20 and head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") != EM_CUDA


def ldd(path, env):
    """[(soname, resolved path or None)], or None when ldd cannot say
    (not a dynamic object, or no ldd)."""
    try:
        r = subprocess.run(["ldd", str(path)], env=env, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if r.returncode != 0:
        return None
    deps = []
    for line in r.stdout.splitlines():
        line = line.strip()
        m = re.match(r"^(\S+) => (not found|(\S+) \(0x[0-9a-f]+\))$", line)
        if m:
            deps.append((m.group(1), m.group(3)))
            continue
        m = re.match(r"^(\S+) \(0x[0-9a-f]+\)$", line)
        if m:
            deps.append((os.path.basename(m.group(1)), m.group(1)))
    return deps


def classify(soname, resolved, kit_lib):
    """'kit', 'base', 'gpu' (the GPU machine provides it), 'missing', or
    'foreign' (resolved outside the kit: absent on the GPU machine)."""
    if soname in BASE_LIBS:
        return "base"
    if GPU_PROVIDED.match(soname):
        return "gpu"
    if resolved is None:
        return "missing"
    if Path(resolved).resolve().parent == Path(kit_lib).resolve():
        return "kit"
    return "foreign"


_ldconfig_names = None


def system_has(soname):
    """Whether the dynamic loader finds soname without any help."""
    global _ldconfig_names
    if _ldconfig_names is None:
        _ldconfig_names = set()
        try:
            r = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=20)
            if r.returncode == 0:
                _ldconfig_names = {line.split()[0] for line in r.stdout.splitlines()[1:] if line.strip()}
        except (OSError, subprocess.TimeoutExpired):
            pass
    return soname in _ldconfig_names or any(Path(d, soname).exists() for d in SYSTEM_LIB_DIRS)


class Kit:
    """A kit directory, and the environments its programs run in."""

    def __init__(self, root, scratch=None):
        self.root = Path(root).resolve()
        self.manifest = {}
        mpath = self.root / MANIFEST
        if mpath.exists():
            self.manifest = json.loads(mpath.read_text())
        self.bin = self.root / "bin"
        self.lib = self.root / "lib"
        self.scratch = Path(scratch or os.environ.get("GS_KIT_SCRATCH") or self.root / "scratch")
        self.logdir = self.scratch / "logs"
        # The shim's control sockets live here: a unix socket path has at
        # most 107 bytes, and the kit's own path on the GPU machine is not
        # known in advance, so not under scratch.
        self.rtdir = Path(os.environ.get("GS_KIT_RUNTIME_DIR") or f"/tmp/gpuswap-kit-{os.getuid()}-{os.getpid()}")
        self.facts = {}          # filled by the checks: device, driver, torch
        self.shim_env_extra = {}  # e.g. GPUSWAP_REAL_LIBCUDA when discovery failed
        self._missing_libdir = None
        self._cublas_dir = False
        self._preload = None
        # Another libcuda.so.1 than the system's, for the kit's own binaries
        # and the shim: the simulated driver, to test the kit without a GPU.
        self.libcuda_dir = os.environ.get("GS_KIT_LIBCUDA_DIR") or None

    # -- parts --------------------------------------------------------------
    def has(self, rel):
        return (self.root / rel).is_file()

    @property
    def shim(self):
        p = self.lib / "libgpuswap.so"
        return p if p.is_file() else None

    def tool(self, name):
        p = self.bin / name
        return p if p.is_file() and os.access(p, os.X_OK) else None

    def programs(self):
        d = self.root / "programs"
        if not d.is_dir():
            return []
        return sorted(p for p in d.iterdir() if p.is_file() and os.access(p, os.X_OK) and is_elf(p))

    def migration_missing(self):
        """Why migration parts cannot run, or None when they can."""
        missing = [n for n in ("gpu-freeze", "gpu-thaw") if not self.tool(n)]
        if missing:
            return " and ".join(missing) + " not built"
        if not self.shim:
            return "libgpuswap.so not built"
        return None

    # -- environments -------------------------------------------------------
    def base_env(self, **extra):
        """The caller's environment without any preload. GPUSWAP_* settings
        given to the run pass through, except those the kit owns."""
        env = dict(os.environ)
        env.pop("LD_PRELOAD", None)
        env.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        env["PYTHONUNBUFFERED"] = "1"
        env["PYTHONDONTWRITEBYTECODE"] = "1"
        env["GPUSWAP_RUNTIME_DIR"] = str(self.rtdir)
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def cublas_dir(self):
        """Where the GPU machine keeps libcublas.so.13, when the loader
        would not find it by itself (the toolkit, or PyTorch's wheels)."""
        if self._cublas_dir is False:
            self._cublas_dir = None
            if not system_has("libcublas.so.13"):
                import glob
                import sys
                patterns = ["/usr/local/cuda/lib64", "/usr/local/cuda-13*/lib64",
                            "/usr/local/cuda/targets/x86_64-linux/lib",
                            sys.prefix + "/lib/python3*/site-packages/nvidia/cu13/lib",
                            sys.prefix + "/lib/python3*/site-packages/nvidia/cublas/lib",
                            "/usr/lib/python3*/dist-packages/nvidia/cu13/lib",
                            "/usr/local/lib/python3*/dist-packages/nvidia/cu13/lib",
                            "/usr/local/lib/python3*/dist-packages/nvidia/cublas/lib"]
                for pat in patterns:
                    for d in sorted(glob.glob(pat)):
                        if Path(d, "libcublas.so.13").exists():
                            self._cublas_dir = d
                            break
                    if self._cublas_dir:
                        break
        return self._cublas_dir

    def our_env(self, shim=False, **extra):
        """For the kit's own binaries: the kit's libraries first."""
        env = self.base_env(**extra)
        path = [str(self.lib)]
        if self.libcuda_dir:
            path.append(self.libcuda_dir)
        if self.cublas_dir():
            path.append(self.cublas_dir())
        if env.get("LD_LIBRARY_PATH"):
            path.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = ":".join(path)
        if shim:
            self._add_shim(env)
        return env

    def missing_libdir(self):
        """A directory holding only those kit libraries the system lacks, for
        the shim inside python: the kit never shadows a system library there."""
        if self._missing_libdir is None:
            d = self.scratch / "lib-missing"
            d.mkdir(parents=True, exist_ok=True)
            for lib in sorted(self.lib.glob("*.so*")):
                if lib.name == "libgpuswap.so" or system_has(lib.name):
                    continue
                link = d / lib.name
                if not link.exists():
                    link.symlink_to(lib)
            self._missing_libdir = d
        return self._missing_libdir

    def py_env(self, shim=False, **extra):
        """For python3/torch: nothing of the kit's, except the shim and the
        libraries the system lacks, appended after everything else."""
        env = self.base_env(**extra)
        if shim:
            path = [p for p in env.get("LD_LIBRARY_PATH", "").split(":") if p]
            path.append(str(self.missing_libdir()))
            env["LD_LIBRARY_PATH"] = ":".join(path)
            self._add_shim(env)
        return env

    def shim_preload(self):
        """LD_PRELOAD for the shim. A sanitizer build of the shim carries the
        sanitizer's runtime, which must be the process's first library: it
        goes ahead of the shim (never the case in a kit packed for a GPU)."""
        if self._preload is None:
            first = []
            for soname, resolved in ldd(self.shim, dict(os.environ, LD_LIBRARY_PATH=str(self.lib))) or []:
                if re.match(r"^lib(asan|tsan|hwasan)\.so", soname) and resolved:
                    first.append(resolved)
            self._preload = ":".join(first + [str(self.shim)])
        return self._preload

    def _add_shim(self, env):
        env["LD_PRELOAD"] = self.shim_preload()
        if self.libcuda_dir:
            env.setdefault("GPUSWAP_REAL_LIBCUDA", str(Path(self.libcuda_dir, "libcuda.so.1")))
        for k, v in self.shim_env_extra.items():
            env.setdefault(k, v)

    def tool_env(self, **extra):
        return self.our_env(**extra)


class Proc:
    """A child in its own session, so that a kill reaches everything it
    started; stdout and stderr merged, kept line by line and teed to a log
    file capped in size. Every wait has a timeout."""

    LOG_CAP = 4 << 20
    LINES_CAP = 200000
    live = set()  # every Proc not yet reaped, for the final cleanup

    def __init__(self, cmd, env, log_path, cwd=None, stdin=False):
        self.cmd = [str(c) for c in cmd]
        self.lines = []
        self.eof = False
        self.cond = threading.Condition()
        self.started = time.monotonic()
        self.spawn_error = None
        self.log = open(log_path, "a", encoding="utf-8", errors="replace")
        self.log_lock = threading.Lock()
        self.log_bytes = 0
        self._log("$ " + shlex.join(self.cmd) + "\n")
        self.p = None
        try:
            self.p = subprocess.Popen(self.cmd, env=env, cwd=cwd,
                                      stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      start_new_session=True)
        except OSError as e:
            self.spawn_error = f"cannot start {self.cmd[0]}: {e}"
            self._log(self.spawn_error + "\n")
            self.eof = True
            with self.log_lock:
                self.log.close()
            return
        Proc.live.add(self)
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    @property
    def pid(self):
        return self.p.pid if self.p else None

    def _log(self, text):
        with self.log_lock:
            if self.log.closed or self.log_bytes >= self.LOG_CAP:
                return
            self.log.write(text)
            self.log_bytes += len(text)
            if self.log_bytes >= self.LOG_CAP:
                self.log.write("[log capped]\n")
            self.log.flush()

    def _read(self):
        for raw in iter(self.p.stdout.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.cond:
                if len(self.lines) < self.LINES_CAP:
                    self.lines.append(line)
                self.cond.notify_all()
            self._log(line + "\n")
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def wait_line(self, pattern, timeout, start=0):
        """The first line from index `start` on matching pattern, as (index,
        match); None on timeout or when the output ended without one."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + max(0.0, timeout)
        i = start
        with self.cond:
            while True:
                while i < len(self.lines):
                    m = rx.search(self.lines[i])
                    if m:
                        return i, m
                    i += 1
                left = deadline - time.monotonic()
                if self.eof or left <= 0:
                    return None
                self.cond.wait(min(left, 0.5))

    def send(self, text):
        try:
            self.p.stdin.write(text.encode())
            self.p.stdin.flush()
            return True
        except (OSError, ValueError, AttributeError):
            return False

    def close_stdin(self):
        try:
            self.p.stdin.close()
        except (OSError, ValueError, AttributeError):
            pass

    def alive(self):
        return self.p is not None and self.p.poll() is None

    def wait(self, timeout):
        """Exit status, or None if still running after timeout seconds."""
        if self.p is None:
            return None
        try:
            rc = self.p.wait(timeout=max(0.0, timeout))
        except subprocess.TimeoutExpired:
            return None
        self._reap()
        return rc

    def kill(self):
        if self.p is None:
            return
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except OSError:
                pass
            try:
                self.p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                # Stuck in the kernel (a driver call): nothing more to do.
                self._log("[did not die within 10 s of SIGKILL]\n")
        else:
            # Its children may outlive it in the same session.
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except OSError:
                pass
        self._reap()

    def _reap(self):
        if self in Proc.live and self.p.poll() is not None:
            if hasattr(self, "reader"):
                self.reader.join(timeout=5)
            Proc.live.discard(self)
            self._log(f"[exit status {self.p.returncode} after {time.monotonic() - self.started:.1f} s]\n")
            with self.log_lock:
                self.log.close()

    def text(self):
        with self.cond:
            return "\n".join(self.lines)

    @classmethod
    def kill_all(cls):
        for p in list(cls.live):
            p.kill()


class Result:
    """What a finished (or abandoned) command gave."""

    def __init__(self, proc, rc, seconds, timed_out):
        self.proc = proc
        self.rc = rc
        self.seconds = seconds
        self.timed_out = timed_out
        self.lines = list(proc.lines)
        self.spawn_error = proc.spawn_error

    @property
    def ok(self):
        return self.rc == 0

    def tail(self, n=20):
        return "\n".join(self.lines[-n:])

    def why(self):
        """One line saying how it went wrong."""
        if self.spawn_error:
            return self.spawn_error
        if self.timed_out:
            return f"timed out after {self.seconds:.0f} s"
        if self.rc is not None and self.rc < 0:
            return f"killed by signal {-self.rc}"
        last = next((ln for ln in reversed(self.lines) if ln.strip()), "")
        return f"exit status {self.rc}" + (f": {last[:300]}" if last else "")

    def json_lines(self):
        out = []
        for line in self.lines:
            line = line.strip()
            if line.startswith("{") and line.endswith("}"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out
