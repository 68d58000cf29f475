# SPDX-License-Identifier: Apache-2.0
"""The real-GPU kit's checks, cheapest and most diagnostic first.

Each check is a function of one CheckRun: it runs commands with bounded
waits, records parts (pass / fail / skipped, with a detail) and figures, and
never lets one failing part stop the others. A part that needs gpu-freeze or
gpu-thaw while they are not built is skipped with that reason; everything
else runs now."""

import os
import re
import shutil
import statistics
import subprocess
from pathlib import Path

import shimstats
from harness import (SMI_FIELDS, Skip, Spec, compare_lines, deterministic_lines, freeze_thaw, migrate_during,
                     parse_smi, python_cmd, record_migration, result_lines, torch_facts)
from kitlib import is_elf, ldd


# ---- 1. device facts ---------------------------------------------------------

def kit_unresolved(k):
    """(file, soname) pairs the loader cannot resolve here for the kit's own
    binaries, in the environment they run in."""
    out = []
    env = k.our_env()
    files = [p for d in ("bin", "lib", "programs") for p in sorted((k.root / d).glob("*"))
             if p.is_file() and is_elf(p)]
    for f in files:
        for soname, resolved in ldd(f, env) or []:
            pair = (f"{f.parent.name}/{f.name}", soname)
            if resolved is None and pair not in out:
                out.append(pair)
    return out


def check_device_facts(c):
    k = c.kit
    smi = shutil.which("nvidia-smi")
    if smi:
        r = c.run("nvidia-smi", [smi], k.base_env(), 20)
        c.part("nvidia-smi", "pass" if r.ok else "fail", "" if r.ok else r.why())
        q = c.run("nvidia-smi-query", [smi, "--query-gpu=" + ",".join(SMI_FIELDS), "--format=csv,noheader"],
                  k.base_env(), 20)
        if q.ok:
            c.figures["nvidia_smi"] = k.facts["smi"] = parse_smi(q.lines)
    else:
        c.part("nvidia-smi", "fail", "nvidia-smi is not on PATH")
    try:
        c.figures["nvidia_proc_version"] = Path("/proc/driver/nvidia/version").read_text().splitlines()[0]
    except (OSError, IndexError):
        c.figures["nvidia_proc_version"] = "unavailable"
    c.figures["kernel"] = os.uname().release
    try:
        osr = dict(line.split("=", 1) for line in Path("/etc/os-release").read_text().splitlines() if "=" in line)
        c.figures["os"] = osr.get("PRETTY_NAME", "").strip('"')
    except OSError:
        pass
    try:
        r = subprocess.run(["ldconfig", "-p"], capture_output=True, text=True, timeout=20)
        c.figures["ldconfig_libcuda"] = [ln.strip() for ln in r.stdout.splitlines() if "libcuda.so" in ln]
    except (OSError, subprocess.TimeoutExpired):
        pass

    r = c.run("probe-facts", [k.bin / "gs-probe-driver", "facts"], k.our_env(), 30)
    objs = r.json_lines()
    driver = next((o for o in objs if o.get("part") == "driver"), {})
    devices = [o for o in objs if o.get("part") == "device"]
    c.figures["driver"] = driver
    c.figures["devices"] = devices
    k.facts["driver"] = driver
    k.facts["devices"] = devices
    if r.ok and devices:
        c.part("driver-probe", "pass", f"{len(devices)} device(s), libcuda {driver.get('libcuda')}, "
               f"CUDA driver API {driver.get('cuda_driver_version')}")
    else:
        c.part("driver-probe", "fail", r.why())
    for d in devices:
        cc = f"{d.get('cc_major')}.{d.get('cc_minor')}"
        ok = d.get("vmm") is True
        c.part(f"vmm-device-{d.get('ordinal')}", "pass" if ok else "fail",
               f"{d.get('name')} sm_{cc.replace('.', '')}: VMM supported, granularity {d.get('granularity_min')}"
               if ok else "no VMM support: the shim's arena and thaw's fixed addresses need it")

    unresolved = kit_unresolved(k)
    c.figures["kit_unresolved_libraries"] = [f"{f}: {s}" for f, s in unresolved]
    c.figures["cublas_dir"] = k.cublas_dir() or "(found by the loader)"
    c.part("kit-libraries", "fail" if unresolved else "pass",
           ", ".join(f"{f} needs {s}" for f, s in unresolved[:5]) if unresolved
           else "every kit binary's libraries resolve here")

    t = torch_facts(c)
    c.figures["torch"] = t
    if t.get("available"):
        c.part("torch", "pass", f"torch {t.get('torch')} (CUDA {t.get('cuda')}) sees {t.get('name')}")
    else:
        c.part("torch", "skipped", f"torch cannot use the GPU: {t.get('error')}")
    if devices:
        d = devices[0]
        c.key = (f"{d.get('name')}, sm_{d.get('cc_major')}{d.get('cc_minor')}, "
                 f"{int(d.get('total_mem', 0)) >> 20} MiB, VMM {'yes' if d.get('vmm') else 'no'}")


# ---- 2. interception ---------------------------------------------------------

def save_excerpt(src, dest, head=300, tail=300):
    """A bounded copy of a possibly huge log for the returned bundle."""
    try:
        with open(src, "r", encoding="utf-8", errors="replace") as f:
            lines = f.readlines()
    except OSError:
        return
    if len(lines) > head + tail:
        lines = lines[:head] + [f"[... {len(lines) - head - tail} lines left out ...]\n"] + lines[-tail:]
    dest.write_text("".join(lines))


TORCH_SMOKE = "import torch; torch.zeros(1).cuda()"


def check_interception(c):
    k = c.kit
    if not k.shim:
        raise Skip("libgpuswap.so not built")
    c.figures["kit_libraries_python_takes"] = sorted(p.name for p in k.missing_libdir().iterdir())
    wl = k.bin / "gs-cudart-workload"
    plain = c.run("cudart-plain", [wl, "--steps", "3"], k.our_env(), 30)
    ref = deterministic_lines(plain.lines) if plain.ok else None
    if not plain.ok:
        c.part("cudart-plain", "fail", "without the shim: " + plain.why())

    torch_ok = torch_facts(c).get("available")
    targets = [("cudart", [wl, "--steps", "3"], k.our_env, 30),
               ("torch", [python_cmd(), "-c", TORCH_SMOKE], k.py_env, 90)]
    keys = []
    for name, cmd, envf, timeout in targets:
        if name == "torch" and not torch_ok:
            c.part("torch-under-shim", "skipped", "torch cannot use the GPU without the shim either")
            continue
        trace = k.scratch / f"trace-{name}.log"
        stats = k.scratch / f"stats-{name}-%p.json"
        stats_glob = str(k.scratch / f"stats-{name}-*.json")
        shim_vars = {"GPUSWAP_LOG": "trace", "GPUSWAP_LOG_FILE": str(trace), "GPUSWAP_STATS_FILE": str(stats)}
        r = c.run(f"{name}-shim", cmd, envf(shim=True, **shim_vars), timeout)
        libcuda = k.facts.get("driver", {}).get("libcuda")
        if (not r.ok and name == "cudart" and not k.shim_env_extra and libcuda and libcuda != "unknown"
                and "GPUSWAP_REAL_LIBCUDA" not in os.environ):
            # Is it only the shim's search for the real driver?
            for f in (trace, *Path(k.scratch).glob(f"stats-{name}-*.json")):
                f.unlink(missing_ok=True)
            r2 = c.run(f"{name}-shim-real-libcuda", cmd,
                       envf(shim=True, GPUSWAP_REAL_LIBCUDA=libcuda, **shim_vars), timeout)
            if r2.ok:
                k.shim_env_extra["GPUSWAP_REAL_LIBCUDA"] = libcuda
                c.part("shim-finds-driver", "fail", f"the shim did not find the real driver by itself; "
                       f"with GPUSWAP_REAL_LIBCUDA={libcuda} it works (the later checks use that)")
                r = r2
        c.part(f"{name}-under-shim", "pass" if r.ok else "fail",
               f"ran in {r.seconds:.1f} s" if r.ok else r.why())
        if name == "cudart" and r.ok and ref is not None:
            diff = compare_lines(ref, deterministic_lines(r.lines))
            c.part("cudart-output-unchanged", "fail" if diff else "pass",
                   diff or "digests identical with and without the shim")
        counts = shimstats.summarise(stats_glob, trace)
        c.figures[name] = counts
        if trace.exists():
            save_excerpt(trace, c.log_path(f"trace-{name}"))
        if counts["source"] == "none":
            c.part(f"{name}-counts", "fail", "the shim wrote no GPUSWAP_STATS_FILE and no look-up in its trace log")
            continue
        calls = "calls not counted" if counts["calls_total"] is None else \
            f"{counts['calls_total']} calls to {counts['calls_distinct']} functions"
        summary = (f"{calls}, {counts['proc_address_lookups']} cuGetProcAddress look-ups of "
                   f"{counts['proc_address_distinct_names']} names ({counts['proc_address_ptds_lookups']} ptds), "
                   f"{len(counts['returned_raw'])} returned raw, {len(counts['export_tables'])} export tables")
        c.part(f"{name}-counts", "pass", f"{summary} (from {counts['source']})")
        keys.append(f"{name}: {counts['calls_total']} calls, {counts['proc_address_distinct_names']} names "
                    f"looked up, {len(counts['returned_raw'])} raw, {len(counts['export_tables'])} tables")
    c.key = "; ".join(keys)


# ---- 3. driver behaviour -----------------------------------------------------

def check_driver_behaviour(c):
    k = c.kit
    cmd = [k.bin / "gs-probe-driver", "behaviour", "--image", k.root / "data" / "probe_kernels.fatbin"]
    if os.environ.get("GPUSWAP_ARENA_BASE"):
        cmd += ["--hint", os.environ["GPUSWAP_ARENA_BASE"]]
    r = c.run("probe", cmd, k.our_env(), 40)
    objs = r.json_lines()
    answers = {}
    c.figures["errors"] = []
    for o in objs:
        name = o.pop("part", "?")
        if name in ("setup", "done"):
            c.figures[name] = o
            continue
        if name == "error":
            c.figures["errors"].append(o)
            continue
        if name == "hint_far":
            name = f"hint_far@{o.get('hint')}"
        answer, expect = o.pop("answer", None), o.pop("expect", None)
        question = o.pop("question", "")
        detail = o.pop("detail", None)
        text = {True: "yes", False: "no", None: "could not tell"}[answer]
        if answer is None:
            status = "fail"
        elif expect is None:
            status = "pass"  # an open question: the answer is the result
        else:
            status = "pass" if answer == expect else "fail"
        extra = "" if expect is None else f" (the design assumes {'yes' if expect else 'no'})"
        c.part(name, status, f"{question}: {text}{extra}" + (f"; {detail}" if detail else ""), **o)
        answers[name] = text
    c.figures["answers"] = answers
    if not r.ok or not any(o.get("part") == "done" for o in r.json_lines()):
        c.part("probe-completed", "fail", r.why())
    short = {"hint_after_all_contexts_destroyed": "hint after destroy",
             "reservation_survives_last_context": "VA survives",
             "library_kernel_survive_contexts": "CUlibrary survives",
             "host_register_devptr_equals_hostptr": "hostreg ptr equal"}
    c.key = ", ".join(f"{v} {answers[n]}" for n, v in short.items() if n in answers)


# ---- 4. the simulator's driver-API workloads on the real driver --------------

WORKLOAD_STEPS = 40
IMAGE_SUFFIXES = (".fatbin", ".cubin", ".ptx")
def simulator_reference(k):
    """What the simulated driver printed for gs-workload when the kit was
    packed, and the arguments it ran with."""
    path = k.root / "data" / "gs-workload.sim.out"
    if not path.exists():
        return None, ["--steps", str(WORKLOAD_STEPS)]
    lines = path.read_text().splitlines()
    args = ["--steps", str(WORKLOAD_STEPS)]
    for ln in lines:
        if ln.startswith("# args: "):
            args = ln[len("# args: "):].split()
    return result_lines(lines), args


def run_gs_workload(c, prog, pdir, miss):
    """The reference workload (tests/programs/gs-workload.c): every kind of
    state a migration must carry; output independent of device and code
    image. Run with each kernel image, against the simulator's output, under
    the shim, and migrated twice."""
    k = c.kit
    images = sorted(p.name for p in pdir.iterdir() if p.suffix in IMAGE_SUFFIXES)
    main = "gs_kernels.fatbin" if "gs_kernels.fatbin" in images else (images[0] if images else None)
    if main is None:
        c.part("gs-workload", "fail", "no kernel image beside it in the kit")
        return "gs-workload: no kernel image"
    sim_ref, steps = simulator_reference(k)

    def cmd(image, *extra):
        return [prog, "--module", pdir / image, *steps, *extra]

    plain = c.run("gs-workload-plain", cmd(main), k.our_env(), 30, cwd=pdir)
    ref = result_lines(plain.lines)
    if not plain.ok or not ref or ref[-1] != "done":
        c.part("gs-workload-plain", "fail", "on the real driver: " + (plain.why() if not plain.ok else
                                                                       "did not print 'done' last"))
        return "gs-workload fails on the real driver"
    c.part("gs-workload-plain", "pass", f"{main}: {len(ref)} lines in {plain.seconds:.1f} s, {ref[-2]}")
    for image in images:
        if image == main or c.left() < 20:
            continue
        r = c.run(f"gs-workload-{image}", cmd(image), k.our_env(), 30, cwd=pdir)
        diff = compare_lines(ref, result_lines(r.lines)) if r.ok else r.why()
        c.part(f"gs-workload-image-{image}", "fail" if diff else "pass",
               diff or f"same output as with {main}")
    if sim_ref is not None:
        diff = compare_lines(sim_ref, ref)
        c.part("gs-workload-matches-simulator", "fail" if diff else "pass",
               f"real GPU vs the simulated driver's output at pack time: {diff}" if diff
               else "the real GPU prints exactly what the simulated driver printed")
    if not k.shim:
        c.part("gs-workload-migrate", "skipped", "libgpuswap.so not built")
        return "gs-workload ran; no shim"
    sh = c.run("gs-workload-shim", cmd(main), k.our_env(shim=True), 30, cwd=pdir)
    diff = compare_lines(ref, result_lines(sh.lines)) if sh.ok else sh.why()
    c.part("gs-workload-shim", "fail" if diff else "pass", diff or "same output under the shim")
    if miss:
        c.part("gs-workload-migrate", "skipped", miss)
        return f"gs-workload identical under the shim: {'no' if diff else 'yes'}"
    res, events = migrate_during(c, "gs-workload-migrated", cmd(main, "--sleep-ms", "40"), k.our_env(shim=True),
                                 [(r"^step 10 ", "host"), (r"^step 25 ", "image"), (r"^step 33 ", "swap")], 60)
    c.figures["gs_workload_migrations"] = events
    good = record_migration(c, "gs-workload-migrate", ref, res, events, parse=result_lines)
    return "gs-workload bit-identical after 3 migrations" if good else "gs-workload migration: see parts"


def run_other_program(c, prog, pdir):
    """Any other workload (gs-ctor: the driver used from a library
    constructor before main): it must succeed, and the same under the shim."""
    k = c.kit
    name = prog.name
    plain = c.run(f"{name}-plain", [prog], k.our_env(), 20, cwd=pdir)
    if not plain.ok:
        c.part(f"{name}-plain", "fail", "on the real driver: " + plain.why())
        return f"{name} fails on the real driver"
    ref = result_lines(plain.lines)
    c.part(f"{name}-plain", "pass", ref[-1] if ref else "exit 0")
    if not k.shim:
        return f"{name} ran"
    sh = c.run(f"{name}-shim", [prog], k.our_env(shim=True), 20, cwd=pdir)
    diff = compare_lines(ref, result_lines(sh.lines)) if sh.ok else sh.why()
    c.part(f"{name}-shim", "fail" if diff else "pass", diff or "same under the shim")
    return f"{name} {'fails' if diff else 'passes'} under the shim"


def check_sim_workloads(c):
    k = c.kit
    programs = k.programs()
    if not programs:
        raise Skip("no driver-API workloads were built (tests/programs)")
    miss = k.migration_missing()
    pdir = k.root / "programs"
    summary = []
    for prog in programs:
        if c.left() < 15:
            c.part(prog.name, "skipped", "time allowance used up")
            continue
        if prog.name == "gs-workload":
            summary.append(run_gs_workload(c, prog, pdir, miss))
        else:
            summary.append(run_other_program(c, prog, pdir))
    c.key = "; ".join(summary)


# ---- 5. a cudart program frozen mid-run --------------------------------------

CUDART_STEPS = 400


def check_cudart_migration(c):
    k = c.kit
    wl = k.bin / "gs-cudart-workload"
    steps = ["--steps", str(CUDART_STEPS)]
    plain = c.run("plain", [wl, *steps], k.our_env(), 40)
    ref = deterministic_lines(plain.lines)
    if not plain.ok or len(ref) != CUDART_STEPS + 1:
        c.part("plain", "fail", plain.why() if not plain.ok else f"{len(ref)} result lines")
        return
    c.part("plain", "pass", f"{CUDART_STEPS} steps in {plain.seconds:.2f} s, {ref[-1]}")
    if not k.shim:
        c.part("migration", "skipped", "libgpuswap.so not built")
        return
    sh = c.run("shim", [wl, *steps], k.our_env(shim=True), 40)
    diff = compare_lines(ref, deterministic_lines(sh.lines)) if sh.ok else sh.why()
    c.part("under-shim", "fail" if diff else "pass",
           diff or f"bit-identical under the shim ({sh.seconds:.2f} s vs {plain.seconds:.2f} s)")
    c.figures["seconds_plain"] = round(plain.seconds, 3)
    c.figures["seconds_shim"] = round(sh.seconds, 3)
    miss = k.migration_missing()
    if miss:
        c.part("migration", "skipped", miss)
        c.key = f"under shim identical: {'no' if diff else 'yes'}; migration: {miss}"
        return
    # Paced so that a freeze lands mid-run: 400 steps take over 3 s. Two
    # migrations: the second one runs on handles already translated once.
    res, events = migrate_during(c, "migrated", [wl, *steps, "--pace-ms", "8"], k.our_env(shim=True),
                                 [(r"^step 80 ", "host"), (r"^step 240 ", "image"), (r"^step 320 ", "swap")], 60)
    c.figures["migrations"] = events
    good = record_migration(c, "migrate", ref, res, events)
    c.key = "bit-identical after 3 migrations" if good else "see parts"


# ---- 6. PyTorch --------------------------------------------------------------

TRAIN_STEPS = 300
WARMUP_STEPS = 20
STEP_RX = re.compile(r"^step (\d+) loss (\S+) ms ([0-9.]+)$")


def parse_training(lines):
    losses, ms, final = [], [], None
    for ln in lines:
        m = STEP_RX.match(ln)
        if m:
            losses.append(f"{m.group(1)} {m.group(2)}")
            ms.append(float(m.group(3)))
        elif ln.startswith("final params "):
            final = ln
    return losses, ms, final


def training_lines(lines):
    losses, _, final = parse_training(lines)
    return losses + ([final] if final else [])


def check_pytorch(c):
    k = c.kit
    t = torch_facts(c)
    if not t.get("available"):
        raise Skip(f"torch cannot use the GPU: {t.get('error')}")
    cmd = [python_cmd(), k.root / "gskit" / "train_lm.py", "--steps", str(TRAIN_STEPS)]
    plain = c.run("plain", cmd, k.py_env(), 150)
    ref = training_lines(plain.lines)
    _, ms_plain, _ = parse_training(plain.lines)
    if not plain.ok or len(ref) != TRAIN_STEPS + 1:
        c.part("plain", "fail", plain.why() if not plain.ok else f"{len(ref)} result lines")
        return
    med_plain = statistics.median(ms_plain[WARMUP_STEPS:])
    c.figures["step_ms_plain_median"] = round(med_plain, 3)
    c.figures["loss_first_last"] = [ref[0], ref[-2]]
    c.part("plain", "pass", f"{TRAIN_STEPS} steps, median step {med_plain:.2f} ms, {ref[-1]}")
    if not k.shim:
        c.part("migration", "skipped", "libgpuswap.so not built")
        return
    sh = c.run("shim", cmd, k.py_env(shim=True), 150)
    _, ms_shim, _ = parse_training(sh.lines)
    diff = compare_lines(ref, training_lines(sh.lines)) if sh.ok else sh.why()
    c.part("under-shim", "fail" if diff else "pass",
           diff or "per-step losses and final parameters bit-identical under the shim")
    if sh.ok and len(ms_shim) > WARMUP_STEPS:
        med_shim = statistics.median(ms_shim[WARMUP_STEPS:])
        ratio = med_shim / med_plain if med_plain > 0 else float("nan")
        c.figures["step_ms_shim_median"] = round(med_shim, 3)
        c.figures["overhead_ratio"] = round(ratio, 4)
        c.part("overhead", "pass", f"median step {med_shim:.3f} ms with the shim vs {med_plain:.3f} ms "
               f"without: x{ratio:.3f}")
        c.key = f"step x{ratio:.3f} under the shim"
    miss = k.migration_missing()
    if miss:
        c.part("migration", "skipped", miss)
        return
    res, events = migrate_during(c, "migrated", [*cmd, "--pace-ms", "5"], k.py_env(shim=True),
                                 [(r"^step 100 ", "host"), (r"^step 200 ", "image"), (r"^step 250 ", "swap")], 120)
    c.figures["migrations"] = events
    good = record_migration(c, "migrate", ref, res, events, parse=training_lines)
    c.key += "; losses bit-identical after 3 migrations" if good else "; migration: see parts"


# ---- 7. speed on a ~20 GB process --------------------------------------------

def holder_size_gib(k):
    want = float(os.environ.get("GS_KIT_BIG_GIB", "20"))
    devices = k.facts.get("devices") or []
    free = devices[0].get("free_mem") if devices else None
    if free:
        # Room for the driver's own allocations and cuBLAS in other checks.
        want = min(want, max(0.0, free / (1 << 30) * 0.8 - 2))
    return round(want, 1)


def holder_verify(c, h, part, **figures):
    start = len(h.lines)
    if not h.send("verify\n"):
        return c.part(part, "fail", "the holder is gone", **figures)
    hit = h.wait_line(r"^verify (ok|bad)", min(60, max(1, c.left())), start=start)
    if hit is None:
        return c.part(part, "fail", "no answer to 'verify' (" + ("exited" if not h.alive() else "timed out") + ")",
                      **figures)
    good = hit[1].group(1) == "ok"
    return c.part(part, "pass" if good else "fail", h.lines[hit[0]], **figures)


def holder_start(c, name, env, gib):
    k = c.kit
    h = c.spawn(name, [k.bin / "gs-mem-holder", "--gib", str(gib)], env, stdin=True)
    hit = h.wait_line(r"^ready ", min(150, max(1, c.left() - 20)))
    if hit is None:
        c.part(f"{name}-start", "fail", "never became ready: " + ("it exited" if not h.alive() else "timed out")
               + (f"; {h.lines[-1]}" if h.lines else ""))
        h.kill()
        return None, {}
    info = dict(kv.split("=", 1) for kv in h.lines[hit[0]].split()[1:] if "=" in kv)
    return h, info


def holder_stop(h):
    h.send("quit\n")
    h.close_stdin()
    h.wait(30)
    h.kill()


def check_speed(c):
    k = c.kit
    bw = {}
    r = c.run("bandwidth", [k.bin / "gs-probe-driver", "bandwidth", "--mib", "1024", "--reps", "5"], k.our_env(), 60)
    for o in r.json_lines():
        if o.get("part") == "bandwidth":
            bw = o
    c.figures["pinned_bandwidth"] = bw
    if r.ok and bw.get("ok"):
        c.part("pinned-bandwidth", "pass", f"H2D {bw['h2d_gbps_best']:.1f} GB/s, D2H {bw['d2h_gbps_best']:.1f} GB/s "
               f"(best of {bw['reps']} x 1 GiB), D2D {bw['d2d_gbps_best']:.0f} GB/s")
    else:
        c.part("pinned-bandwidth", "fail", r.why())

    gib = holder_size_gib(k)
    if gib < 1:
        raise Skip(f"not enough free device memory for a big process ({gib} GiB)")
    nbytes = int(gib * (1 << 30))
    c.figures["holder_gib"] = gib
    bound = {}
    if bw.get("ok") and bw.get("d2h_gbps_best", 0) > 0 and bw.get("h2d_gbps_best", 0) > 0:
        bound = {"out_s": nbytes / (bw["d2h_gbps_best"] * 1e9), "in_s": nbytes / (bw["h2d_gbps_best"] * 1e9)}
        c.figures["bandwidth_bound_s"] = {kk: round(v, 3) for kk, v in bound.items()}

    # The driver's own checkpoint, on a process without the shim.
    driver = {}
    c.need(40, "driver checkpoint")
    h, info = holder_start(c, "holder-plain", k.our_env(), gib)
    if h:
        c.figures["holder_plain"] = info
        ck = c.run("driver-ckpt", [k.bin / "gs-driver-ckpt", str(h.pid)], k.our_env(), 240)
        steps = {o["part"]: o for o in ck.json_lines() if "part" in o}
        driver = {s: steps[s].get("seconds") for s in ("lock", "checkpoint", "restore", "unlock") if s in steps}
        c.figures["driver_checkpoint"] = {"steps": steps, "seconds": driver}
        if ck.rc == 3:
            c.part("driver-checkpoint", "skipped", "the driver refuses its checkpoint API here: "
                   + steps.get("lock", {}).get("result", "CUDA_ERROR_NOT_SUPPORTED"))
        elif ck.ok:
            def gbs(seconds):
                return nbytes / seconds / 1e9 if seconds else 0.0
            c.part("driver-checkpoint", "pass",
                   f"{gib} GiB: checkpoint {driver['checkpoint']:.2f} s ({gbs(driver['checkpoint']):.1f} GB/s), "
                   f"restore {driver['restore']:.2f} s ({gbs(driver['restore']):.1f} GB/s), "
                   f"lock {driver['lock']:.3f} s, unlock {driver['unlock']:.3f} s")
            holder_verify(c, h, "driver-checkpoint-contents")
        else:
            # The baseline, not gpuswap, failed: no comparison, but no verdict
            # on gpuswap either. Whether the holder survived still counts.
            failed = next((f"{s}: {o.get('result')}" for s, o in steps.items()
                           if o.get("result") not in (None, "CUDA_SUCCESS")), ck.why())
            c.part("driver-checkpoint", "skipped", f"the driver's checkpoint API failed here ({failed})")
            holder_verify(c, h, "driver-checkpoint-contents")
        holder_stop(h)

    if not k.shim:
        c.part("gpuswap", "skipped", "libgpuswap.so not built")
        return
    c.need(30, "holder under the shim")
    h, info = holder_start(c, "holder-shim", k.our_env(shim=True), gib)
    if not h:
        return
    c.figures["holder_shim"] = info
    c.part("holder-under-shim", "pass", f"{gib} GiB allocated in {info.get('alloc_s')} s "
           f"(without the shim: {c.figures.get('holder_plain', {}).get('alloc_s')} s)")
    miss = k.migration_missing()
    try:
        if miss:
            c.part("freeze-to-host", "skipped", miss)
            c.part("freeze-to-image", "skipped", miss)
            c.part("swap-same-gpu", "skipped", miss)
            holder_verify(c, h, "contents-under-shim")
            c.key = f"{gib} GiB; driver checkpoint {driver.get('checkpoint', '-')} s / restore " \
                    f"{driver.get('restore', '-')} s; gpuswap: {miss}"
            return
        results = {}
        for mode in ("host", "image", "swap"):
            if mode == "image":
                free = shutil.disk_usage(k.scratch).free
                if free < nbytes * 1.1 + (1 << 30):
                    c.part("freeze-to-image", "skipped", f"{free >> 30} GiB free on the image's file system")
                    continue
            c.need(20, f"freeze to {mode}")
            ev = freeze_thaw(c, h.pid, mode, f"big-{mode}")
            if mode == "swap":
                # The whole stop of a swap that rebuilds the process on its
                # own GPU; device to device when the GPU has room for a
                # second copy, else through host memory (its warning says).
                if "error" in ev:
                    c.part("swap-same-gpu", "fail", ev["error"], **ev)
                    break
                swap_s = max(ev["swap_s"], 1e-3)
                ev["swap_gbps"] = round(nbytes / swap_s / 1e9, 2)
                results[mode] = ev
                c.part("swap-same-gpu", "pass", f"gpu-swap --force: stopped {ev['swap_s']} s "
                       f"({ev['swap_gbps']} GB/s), {ev.get('bytes_device')} of {ev.get('bytes')} bytes device to "
                       f"device", **ev)
                holder_verify(c, h, "contents-after-swap")
                continue
            if "error" in ev:
                c.part(f"freeze-to-{mode}", "fail", ev["error"], **ev)
                break
            # Timer resolution: a zero would only mean "too fast to see".
            freeze_s, thaw_s = max(ev["freeze_s"], 1e-3), max(ev["thaw_s"], 1e-3)
            ev["freeze_gbps"] = round(nbytes / freeze_s / 1e9, 2)
            ev["thaw_gbps"] = round(nbytes / thaw_s / 1e9, 2)
            if bound:
                ev["freeze_vs_bandwidth_bound"] = round(freeze_s / bound["out_s"], 2)
                ev["thaw_vs_bandwidth_bound"] = round(thaw_s / bound["in_s"], 2)
            if driver.get("checkpoint") and driver.get("restore"):
                ev["freeze_vs_driver_checkpoint"] = round(freeze_s / driver["checkpoint"], 2)
                ev["thaw_vs_driver_restore"] = round(thaw_s / driver["restore"], 2)
            results[mode] = ev
            c.part(f"freeze-to-{mode}", "pass",
                   f"freeze+release {ev['freeze_s']} s ({ev['freeze_gbps']} GB/s), thaw {ev['thaw_s']} s "
                   f"({ev['thaw_gbps']} GB/s)" + (f"; {ev['freeze_vs_bandwidth_bound']}x and "
                                                  f"{ev['thaw_vs_bandwidth_bound']}x the time pinned copies take"
                                                  if bound else ""), **ev)
            holder_verify(c, h, f"contents-after-{mode}")
        c.figures["gpuswap"] = results
        host = results.get("host", {})
        c.key = (f"{gib} GiB: freeze {host.get('freeze_s', '-')} s / thaw {host.get('thaw_s', '-')} s; driver "
                 f"{driver.get('checkpoint', '-')} s / {driver.get('restore', '-')} s")
    finally:
        holder_stop(h)


CHECKS = [
    Spec(1, "device-facts", "Device facts", 45, 10, check_device_facts,
         "nvidia-smi, /proc/driver/nvidia, the real libcuda.so.1, compute capability, VMM, torch's view",
         "same"),
    Spec(2, "interception", "Interception under the shim", 75, 20, check_interception,
         "a cudart program and torch.zeros(1).cuda() under the shim: calls, cuGetProcAddress names/versions, "
         "raw returns, export-table UUIDs",
         "same"),
    Spec(3, "driver-behaviour", "Driver behaviour the design relies on", 40, 10, check_driver_behaviour,
         "address hints (also after every context is gone), VA reservations and CUlibrary/CUkernel across "
         "context destruction, cuMemHostRegister pointers",
         "same"),
    Spec(4, "sim-workloads", "Simulator workloads on the real driver", 60, 15, check_sim_workloads,
         "gs-workload (driver API, VMM, module globals, two threads) with each kernel image (fatbin, "
         "compressed, PTX, cubin), against the simulator's output, and under the shim; gs-ctor (driver used "
         "in a constructor) without and with the shim",
         "+ gs-workload frozen at step 10 (to host) and 25 (to an image), gpu-swap --force at 33 (memory "
         "copied within the GPU), output bit-identical"),
    Spec(5, "cudart-migration", "cudart program frozen mid-run", 45, 15, check_cudart_migration,
         "400 steps of kernels + SGEMM + streams/events, without and with the shim, digests compared",
         "+ frozen at step 80 (to host) and 240 (to an image), thawed, gpu-swap --force at 320, digests "
         "bit-identical"),
    Spec(6, "pytorch-training", "PyTorch training, losses bit-identical", 120, 40, check_pytorch,
         "300 AdamW steps of a small transformer LM without and with the shim: losses compared, step-time ratio",
         "+ frozen at step 100 (to host) and 200 (to an image), gpu-swap --force at 250, losses "
         "bit-identical"),
    Spec(7, "speed-20gb", "Speed on a ~20 GB process", 150, 45, check_speed,
         "pinned H2D/D2H bandwidth; the driver's cuCheckpoint lock/checkpoint/restore/unlock on a 20 GiB "
         "process, contents verified; the same process allocated under the shim",
         "+ gpu-freeze --release to host and to an image on local disk, gpu-thaw, gpu-swap --force (device to "
         "device within the GPU), timed and verified"),
]
