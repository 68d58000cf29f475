# SPDX-License-Identifier: Apache-2.0
"""The kit's reports. A run leaves four files in its output directory, and
only four: whoever carries them back may take only a few files.

    gpu-report.json        everything, for tools
    gpu-report.txt         the same for people, every figure in full
    gpu-results-entry.md   a section ready to paste into docs/gpu-results.md
    gpu-logs.tar.gz        every check's logs, each cut to its head and tail
"""

import io
import json
import platform
import tarfile
from pathlib import Path

FORMAT = "gpuswap-gpu-report/1"
FILES = ("gpu-report.json", "gpu-report.txt", "gpu-results-entry.md", "gpu-logs.tar.gz")
LOG_HEAD, LOG_TAIL = 60, 200
EXCERPT_LINES = 30


def device_summary(facts):
    devices = facts.get("devices") or []
    smi = facts.get("smi") or []
    d = devices[0] if devices else {}
    s = smi[0] if smi else {}
    driver = facts.get("driver") or {}
    cuda = driver.get("cuda_driver_version")
    return {
        "name": d.get("name") or s.get("name") or "unknown device",
        "uuid": d.get("uuid") or s.get("uuid") or "unknown",
        "compute_capability": f"{d['cc_major']}.{d['cc_minor']}" if "cc_major" in d else s.get("compute_cap", "?"),
        "memory_mib": int(d["total_mem"]) >> 20 if d.get("total_mem") else s.get("memory.total", "?"),
        "driver_version": s.get("driver_version") or "unknown",
        "cuda_driver_api": f"{cuda // 1000}.{cuda % 1000 // 10}" if isinstance(cuda, int) and cuda else "?",
        "libcuda": driver.get("libcuda") or "unknown",
        "vmm": d.get("vmm"),
        "count": len(devices) or len(smi),
    }


def excerpt(logdir, names, lines=EXCERPT_LINES):
    """The last lines of a check's logs, for the report itself."""
    out = []
    for name in names:
        try:
            text = (Path(logdir) / name).read_text(errors="replace").splitlines()
        except OSError:
            continue
        out.append(f"== {name}")
        out.extend(ln[:300] for ln in text[-lines:])
    return "\n".join(out[-(lines * 2):])


def build(kit, checks, started, elapsed, budget, finished, logdir):
    for c in checks:
        c.setdefault("log_excerpt", excerpt(logdir, c.get("logs", [])))
    summary = {s: sum(1 for c in checks if c["status"] == s) for s in ("pass", "fail", "skipped")}
    return {
        "format": FORMAT,
        "date": started,
        "finished": finished,
        "host": platform.node(),
        "kernel": platform.release(),
        "kit": {
            "commit": kit.manifest.get("commit", "unknown"),
            "packed": kit.manifest.get("packed", "unknown"),
            "parts": kit.manifest.get("parts", {}),
        },
        "device": device_summary(kit.facts),
        "budget_s": budget,
        "elapsed_s": round(elapsed, 1),
        "summary": summary,
        "checks": checks,
    }


def _lines(value, indent):
    """Every figure, in full, one item per line."""
    pad = " " * indent
    if isinstance(value, dict):
        for k, v in value.items():
            if isinstance(v, (dict, list)) and v:
                yield f"{pad}{k}:"
                yield from _lines(v, indent + 2)
            else:
                yield f"{pad}{k}: {json.dumps(v) if isinstance(v, (dict, list)) else v}"
    elif isinstance(value, list):
        for v in value:
            if isinstance(v, dict):
                yield f"{pad}- " + ", ".join(f"{k}={json.dumps(x) if isinstance(x, (dict, list)) else x}"
                                             for k, x in v.items())
            elif isinstance(v, list):
                yield f"{pad}- " + " ".join(str(x) for x in v)
            else:
                yield f"{pad}- {v}"
    else:
        yield f"{pad}{value}"


def text(data):
    d = data["device"]
    out = [
        "gpuswap real-GPU kit report",
        f"date:    {data['date']}{'' if data['finished'] else '   (run did not finish)'}",
        f"device:  {d['name']} (cc {d['compute_capability']}, {d['memory_mib']} MiB, {d['uuid']}), "
        f"{d['count']} device(s)",
        f"driver:  {d['driver_version']} (CUDA {d['cuda_driver_api']}), libcuda {d['libcuda']}",
        f"host:    {data['host']}, kernel {data['kernel']}",
        f"kit:     {data['kit']['commit']} packed {data['kit']['packed']}",
        f"time:    {data['elapsed_s']} s of a {data['budget_s']} s budget",
        "summary: {pass} pass, {fail} fail, {skipped} skipped".format(**data["summary"]),
        "",
    ]
    for c in data["checks"]:
        out.append(f"[{c['id']}] {c['name']}: {c['status'].upper()} ({c['seconds']} s of {c['allowance_s']} s)"
                   f" - {c['title']}")
        if c["reason"]:
            out.append(f"    reason: {c['reason']}")
        for p in c["parts"]:
            out.append(f"    {p['status']:<8} {p['name']}" + (f": {p['detail']}" if p["detail"] else ""))
        if c["figures"]:
            out.append("    figures:")
            out.extend(_lines(c["figures"], 6))
        if c.get("log_excerpt"):
            out.append("    log excerpt:")
            out.extend("      " + ln for ln in c["log_excerpt"].splitlines())
        out.append("")
    return "\n".join(out) + "\n"


def entry_md(data):
    d = data["device"]
    day = data["date"][:10]
    out = [
        f"## {day}: {d['name']}, driver {d['driver_version']}",
        "",
        f"Kit `{data['kit']['commit']}` (packed {data['kit']['packed']}); run {data['date']}, "
        f"{data['elapsed_s']} s of {data['budget_s']} s{'' if data['finished'] else ', did not finish'}. "
        f"cc {d['compute_capability']}, {d['memory_mib']} MiB, CUDA driver API {d['cuda_driver_api']}, "
        f"libcuda `{d['libcuda']}`, kernel {data['kernel']}.",
        "",
        "| # | check | status | figures |",
        "|---|---|---|---|",
    ]
    for c in data["checks"]:
        fig = c.get("key") or c.get("reason") or ""
        if c["status"] != "pass" and c.get("reason") and c.get("reason") not in fig:
            fig = f"{fig}; {c['reason']}" if fig else c["reason"]
        out.append(f"| {c['id']} | {c['name']} | {c['status']} | {fig.replace('|', '/')[:300]} |")
    out += ["", "What this run showed that DESIGN.md did not expect: (fill in)", ""]
    return "\n".join(out)


def bundle_logs(logdir, dest):
    """One archive of every log, each cut to its head and tail."""
    with tarfile.open(dest, "w:gz") as tar:
        for p in sorted(Path(logdir).glob("*")):
            if not p.is_file():
                continue
            lines = p.read_text(errors="replace").splitlines(keepends=True)
            if len(lines) > LOG_HEAD + LOG_TAIL:
                lines = (lines[:LOG_HEAD] + [f"[... {len(lines) - LOG_HEAD - LOG_TAIL} lines left out ...]\n"]
                         + lines[-LOG_TAIL:])
            blob = "".join(ln[:2000] + ("\n" if len(ln) > 2000 else "") for ln in lines).encode()
            info = tarfile.TarInfo(f"logs/{p.name}")
            info.size = len(blob)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(blob))


def write_all(out, data, logdir, with_logs=True):
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "gpu-report.json.tmp"
    tmp.write_text(json.dumps(data, indent=1, default=str) + "\n")
    tmp.replace(out / "gpu-report.json")
    (out / "gpu-report.txt").write_text(text(data))
    (out / "gpu-results-entry.md").write_text(entry_md(data))
    if with_logs:
        bundle_logs(logdir, out / "gpu-logs.tar.gz")
