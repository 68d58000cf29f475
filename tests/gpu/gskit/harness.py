# SPDX-License-Identifier: Apache-2.0
"""How a check runs: its time allowance, its parts and figures, commands
with bounded waits, and the freeze / release / thaw steps several checks
share. Python 3 standard library only."""

import json
import os
import re
import shutil
import subprocess
import sys
import time

from kitlib import Proc, Result


class Skip(Exception):
    """The whole check cannot run here; the message says why."""


class OutOfTime(Exception):
    """The check's time allowance ran out; the message names the step."""


class CheckRun:
    def __init__(self, kit, spec, allowance, reduced):
        self.kit = kit
        self.spec = spec
        self.allowance = allowance
        self.reduced = reduced  # the global budget cut the allowance short
        self.started = time.monotonic()
        self.deadline = self.started + allowance
        self.parts = []
        self.figures = {}
        self.status = None
        self.reason = ""
        self.key = ""  # a few words for the results table
        self.logs = []

    def left(self):
        return self.deadline - time.monotonic()

    def need(self, seconds, what):
        if self.left() < seconds:
            raise OutOfTime(what)

    def log_path(self, name):
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        p = self.kit.logdir / f"{self.spec.id}-{self.spec.name}-{safe}.log"
        if p not in self.logs:
            self.logs.append(p)
        return p

    def spawn(self, name, cmd, env, cwd=None, stdin=False):
        return Proc(cmd, env, self.log_path(name), cwd=cwd, stdin=stdin)

    def run(self, name, cmd, env, timeout, cwd=None):
        """Runs cmd to its end, or kills it after min(timeout, time left)."""
        timeout = min(timeout, self.left())
        if timeout < 1:
            raise OutOfTime(name)
        p = self.spawn(name, cmd, env, cwd=cwd)
        t0 = time.monotonic()
        rc = p.wait(timeout)
        seconds = time.monotonic() - t0
        p.kill()  # also whatever it left behind in its session
        return Result(p, rc, seconds, rc is None)

    def part(self, name, status, detail="", **figures):
        assert status in ("pass", "fail", "skipped"), status
        entry = {"name": name, "status": status, "detail": str(detail)}
        if figures:
            entry["figures"] = figures
        self.parts.append(entry)
        mark = {"pass": "ok  ", "fail": "FAIL", "skipped": "skip"}[status]
        print(f"    {mark} {name}" + (f": {detail}" if detail else ""), flush=True)
        return status == "pass"

    def finish(self):
        if self.status is None:
            fails = [p for p in self.parts if p["status"] == "fail"]
            skips = [p for p in self.parts if p["status"] == "skipped"]
            if fails:
                self.status = "fail"
                self.reason = "; ".join(f"{p['name']}: {p['detail']}" for p in fails[:3])
            elif not self.parts:
                self.status = "fail"
                self.reason = "the check recorded nothing"
            elif skips:
                self.status = "skipped"
                reasons = []
                for p in skips:
                    if p["detail"] not in reasons:
                        reasons.append(p["detail"])
                self.reason = "; ".join(reasons)
            else:
                self.status = "pass"
        return {
            "id": self.spec.id,
            "name": self.spec.name,
            "title": self.spec.title,
            "status": self.status,
            "reason": self.reason,
            "key": self.key,
            "seconds": round(time.monotonic() - self.started, 2),
            "allowance_s": round(self.allowance, 1),
            "parts": self.parts,
            "figures": self.figures,
            "logs": [p.name for p in self.logs if p.exists()],
        }


class Spec:
    def __init__(self, id, name, title, cap_s, min_s, fn, plan_now, plan_migration):
        self.id, self.name, self.title = id, name, title
        self.cap_s, self.min_s, self.fn = cap_s, min_s, fn
        self.plan_now, self.plan_migration = plan_now, plan_migration


# ---- shared helpers ----------------------------------------------------------

def python_cmd():
    return os.environ.get("GS_KIT_PYTHON") or sys.executable or "python3"


def deterministic_lines(lines):
    """What two runs of a kit program must print identically."""
    return [ln for ln in lines if ln.startswith("step ") or ln.startswith("done ")]


def compare_lines(ref, got):
    """None when equal, else a description of the first difference."""
    if ref == got:
        return None
    for i, (a, b) in enumerate(zip(ref, got)):
        if a != b:
            return f"first difference at line {i + 1}: expected '{a}', got '{b}'"
    return f"{len(got)} lines instead of {len(ref)}"


def last_json(lines):
    for line in reversed(lines):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                pass
    return None


def dir_bytes(path):
    total = 0
    for root, _, files in os.walk(path):
        for f in files:
            try:
                total += os.lstat(os.path.join(root, f)).st_size
            except OSError:
                pass
    return total


def fs_type(path):
    try:
        r = subprocess.run(["stat", "-f", "-c", "%T", str(path)], capture_output=True, text=True, timeout=10)
        return r.stdout.strip() or "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def swap_same(c, pid, tag):
    """gpu-swap --force --device 0 PID: every object rebuilt on the same card,
    the memory copied within it (the device-to-device path of a swap: staged
    memory adopted at the original addresses). Returns the timing, the tool's
    JSON, and 'error' on failure."""
    k = c.kit
    ev = {"mode": "swap"}
    if not k.tool("gpu-swap"):
        ev["error"] = "gpu-swap: not in the kit"
        return ev
    c.need(10, f"{tag}: gpu-swap")
    sw = c.run(f"{tag}-swap", [k.tool("gpu-swap"), "--force", "--device", "0", "--timeout", "30", "--json",
                               str(pid)], k.tool_env(), 120)
    ev["swap_s"] = round(sw.seconds, 3)
    ev["swap_json"] = last_json(sw.lines)
    if not sw.ok:
        ev["error"] = "gpu-swap: " + sw.why()
        return ev
    try:
        rel = ev["swap_json"]["report"]["swap"]["release"]
        ev["bytes"] = rel.get("bytes")
        ev["bytes_device"] = rel.get("bytes_device")
        ev["swap_warnings"] = rel.get("warnings")
    except (KeyError, TypeError):
        pass
    return ev


def freeze_thaw(c, pid, mode, tag):
    """gpu-freeze --release PID (to host memory, or to an image on local
    disk), then gpu-thaw --device 0 PID: a new context and new memory on the
    same card. Mode "swap" is swap_same instead. Returns the timings, the
    tools' JSON, and 'error' on failure."""
    if mode == "swap":
        return swap_same(c, pid, tag)
    k = c.kit
    image = k.scratch / f"image-{tag}" if mode == "image" else None
    if image is not None:
        shutil.rmtree(image, ignore_errors=True)
        shutil.rmtree(str(image) + ".tmp", ignore_errors=True)
    where = ["--image", str(image)] if image is not None else []
    ev = {"mode": mode}
    c.need(10, f"{tag}: gpu-freeze")
    fr = c.run(f"{tag}-freeze", [k.tool("gpu-freeze"), "--release", "--timeout", "30", "--json", *where, str(pid)],
               k.tool_env(), 120)
    ev["freeze_s"] = round(fr.seconds, 3)
    ev["freeze_json"] = last_json(fr.lines)
    if not fr.ok:
        ev["error"] = "gpu-freeze: " + fr.why()
        return ev
    if image is not None:
        ev["image_bytes"] = dir_bytes(image)
        ev["image_fs"] = fs_type(image)
    c.need(10, f"{tag}: gpu-thaw")
    th = c.run(f"{tag}-thaw", [k.tool("gpu-thaw"), "--device", "0", "--json", *where, str(pid)], k.tool_env(), 120)
    ev["thaw_s"] = round(th.seconds, 3)
    ev["thaw_json"] = last_json(th.lines)
    if not th.ok:
        ev["error"] = "gpu-thaw: " + th.why()
    if image is not None and "error" not in ev:
        shutil.rmtree(image, ignore_errors=True)
    return ev


def migrate_during(c, name, cmd, env, points, finish_timeout):
    """Runs cmd and, each time it prints a line matching one of `points`
    (pattern, mode), freezes, releases and thaws it. Returns (Result,
    events). The program must still be running after every thaw."""
    p = c.spawn(name, cmd, env)
    t0 = time.monotonic()
    events = []
    for i, (pattern, mode) in enumerate(points):
        hit = p.wait_line(pattern, min(60, max(0, c.left() - 5)))
        if hit is None:
            events.append({"mode": mode, "error": f"never printed /{pattern}/ "
                           f"({'it exited' if not p.alive() else 'timed out'})"})
            break
        if not p.alive():
            events.append({"mode": mode, "error": "it ended before the freeze"})
            break
        ev = freeze_thaw(c, p.pid, mode, f"{name}-{i + 1}-{mode}")
        ev["at_line"] = hit[0] + 1
        ev["lines_by_thaw"] = len(p.lines)
        events.append(ev)
        if "error" in ev:
            if ev["error"].startswith(("gpu-thaw", "gpu-swap")):
                p.kill()  # possibly released and never thawed: it would wait forever
            break
    rc = p.wait(max(1, min(finish_timeout, c.left())))
    p.kill()
    return Result(p, rc, time.monotonic() - t0, rc is None), events


def record_migration(c, part, ref, res, events, parse=deterministic_lines):
    """One part per freeze/thaw, then one for the output against ref."""
    for i, ev in enumerate(events):
        if ev["mode"] == "swap":
            done = (f"gpu-swap --force {ev.get('swap_s')} s, {ev.get('bytes_device')} of {ev.get('bytes')} bytes "
                    f"device to device")
        else:
            done = f"freeze+release {ev.get('freeze_s')} s, thaw {ev.get('thaw_s')} s"
        detail = ev.get("error") or f"{done} (at output line {ev.get('at_line')})"
        c.part(f"{part}-{i + 1}-{ev['mode']}", "fail" if "error" in ev else "pass", detail,
               **{k: v for k, v in ev.items() if k != "error"})
    if any("error" in ev for ev in events) or not events:
        return False
    if not res.ok:
        return c.part(f"{part}-result", "fail", "after the thaw: " + res.why())
    diff = compare_lines(ref, parse(res.lines))
    return c.part(f"{part}-result", "fail" if diff else "pass",
                  diff or f"{len(ref)} deterministic lines bit-identical to the undisturbed run")


def probe_facts(k, timeout=30):
    """The driver's and the devices' facts from gs-probe-driver, and
    nvidia-smi's, into k.facts (check 1 does this with a log; a run of other
    checks only still wants them for its report and sizes)."""
    try:
        r = subprocess.run([str(k.bin / "gs-probe-driver"), "facts"], env=k.our_env(), capture_output=True,
                           text=True, timeout=timeout)
        objs = [json.loads(ln) for ln in r.stdout.splitlines() if ln.startswith("{")]
        k.facts.setdefault("driver", next((o for o in objs if o.get("part") == "driver"), {}))
        k.facts.setdefault("devices", [o for o in objs if o.get("part") == "device"])
    except (OSError, ValueError, subprocess.TimeoutExpired):
        pass
    smi = shutil.which("nvidia-smi")
    if smi and "smi" not in k.facts:
        try:
            r = subprocess.run([smi, "--query-gpu=" + ",".join(SMI_FIELDS), "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=timeout)
            k.facts["smi"] = parse_smi(r.stdout.splitlines())
        except (OSError, subprocess.TimeoutExpired):
            pass


SMI_FIELDS = ("index", "name", "uuid", "driver_version", "memory.total", "memory.used", "compute_cap",
              "persistence_mode", "pci.bus_id", "clocks.max.sm", "mig.mode.current")


def parse_smi(lines):
    return [dict(zip(SMI_FIELDS, (x.strip() for x in line.split(","))))
            for line in lines if line.count(",") >= len(SMI_FIELDS) - 1]


def torch_facts(c):
    """torch's view of the machine (cached in the kit)."""
    k = c.kit
    if "torch" not in k.facts:
        r = c.run("torch-facts", [python_cmd(), "-c", TORCH_FACTS], k.py_env(), 90)
        facts = {"available": False, "error": r.why()}
        for line in r.lines:
            if line.startswith("TORCHFACTS "):
                try:
                    facts = json.loads(line[len("TORCHFACTS "):])
                except ValueError:
                    pass
        k.facts["torch"] = facts
    return k.facts["torch"]


TORCH_FACTS = r"""
import json
try:
    import torch
except Exception as e:
    print("TORCHFACTS " + json.dumps({"available": False, "error": "import torch: %s" % e}))
    raise SystemExit(0)
d = {"torch": torch.__version__, "cuda": torch.version.cuda, "available": torch.cuda.is_available()}
if d["available"]:
    torch.zeros(1).cuda()
    p = torch.cuda.get_device_properties(0)
    d.update(name=p.name, capability="%d.%d" % (p.major, p.minor), total_mem=p.total_memory,
             sm_count=p.multi_processor_count)
    with open("/proc/self/maps") as f:
        d["cuda_libraries"] = sorted({l.split()[-1] for l in f
                                      if any(n in l for n in ("libcuda.", "libcudart", "libcublas"))})
else:
    d["error"] = "torch.cuda.is_available() is False"
print("TORCHFACTS " + json.dumps(d))
"""


SHIM_LOG_RX = re.compile(r"^gpuswap\[\d+\]: ")


def result_lines(lines):
    """A test program's output without comments and without the shim's own
    log lines (stderr is merged into it)."""
    return [ln for ln in lines if not ln.startswith("#") and not SHIM_LOG_RX.match(ln)]
