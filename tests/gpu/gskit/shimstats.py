# SPDX-License-Identifier: Apache-2.0
"""What the shim saw of a program: read from the JSON the shim writes at exit
when GPUSWAP_STATS_FILE is set (shim/introspect.h: gs_introspect_dump), else
pieced together from its trace log (GPUSWAP_LOG=trace), which records the
cuGetProcAddress look-ups and export tables but not every call."""

import glob
import json
import re
from collections import Counter

# gpuswap[PID]: shim: trace: cuGetProcAddress("cuMemAlloc", 12000, 0) -> cuMemAlloc_v2
LOOKUP_RX = re.compile(r'cuGetProcAddress(?:_v2)?\("([^"]*)", (-?\d+), (0x[0-9a-fA-F]+|\d+)\)')
UUID_RX = re.compile(r"\b([0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12})\b")


def merge_stats(paths):
    """Sums the dumps of every process (GPUSWAP_STATS_FILE with %p gives
    one file per process)."""
    calls = Counter()
    lookups = Counter()
    ptds = Counter()
    unknown = Counter()
    tables = {}
    drivers = set()
    dropped = 0
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        if data.get("driver"):
            drivers.add(data["driver"])
        dropped += int(data.get("dropped") or 0)
        for name, n in (data.get("calls") or {}).items():
            calls[name] += int(n)
        for e in data.get("lookups") or []:
            key = (e.get("name", ""), e.get("version"))
            lookups[key] += int(e.get("count", 0))
            ptds[key] += int(e.get("ptds_count", 0))
        for e in data.get("unknown_entry_points") or []:
            unknown[(e.get("name", ""), e.get("version"), e.get("flags"))] += int(e.get("count", 0))
        for e in data.get("export_tables") or []:
            t = tables.setdefault(str(e.get("uuid", "")).upper(),
                                  {"name": e.get("name"), "hooked": bool(e.get("hooked")), "count": 0})
            t["count"] += int(e.get("count", 0))
    return calls, lookups, ptds, unknown, tables, sorted(drivers), dropped


def from_trace(path, limit_bytes=512 << 20):
    lookups = Counter()
    ptds = Counter()
    unknown = Counter()
    tables = {}
    read = 0
    with open(path, "r", encoding="utf-8", errors="replace") as f:
        for line in f:
            read += len(line)
            if read > limit_bytes:
                break
            m = LOOKUP_RX.search(line)
            if m:
                flags = int(m.group(3), 0)
                key = (m.group(1), int(m.group(2)))
                lookups[key] += 1
                ptds[key] += 1 if flags & 1 else 0  # CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM
                if "no wrapper" in line:
                    unknown[(m.group(1), int(m.group(2)), flags)] += 1
            elif "cuGetExportTable" in line:
                for u in UUID_RX.findall(line):
                    tables.setdefault(u.upper(), {"name": None, "hooked": None, "count": 0})["count"] += 1
    return lookups, ptds, unknown, tables


def summarise(stats_glob, trace_path):
    """Everything, in full, as report figures."""
    files = sorted(glob.glob(stats_glob))
    calls = None
    drivers, dropped = [], 0
    source = "none"
    if files:
        try:
            calls, lookups, ptds, unknown, tables, drivers, dropped = merge_stats(files)
            source = f"GPUSWAP_STATS_FILE ({len(files)} process{'es' if len(files) > 1 else ''})"
        except (OSError, ValueError, TypeError, AttributeError):
            calls = None
    if source == "none":
        try:
            lookups, ptds, unknown, tables = from_trace(trace_path)
        except OSError:
            lookups, ptds, unknown, tables = Counter(), Counter(), Counter(), {}
        if lookups or tables:
            source = "trace log (look-ups and export tables only; no per-call counts)"
    return {
        "source": source,
        "driver_found_by_shim": drivers,
        "calls_total": sum(calls.values()) if calls is not None else None,
        "calls_distinct": len(calls) if calls is not None else None,
        "calls_by_count": [f"{n} x{v}" for n, v in sorted((calls or {}).items(), key=lambda x: (-x[1], x[0]))],
        "proc_address_lookups": sum(lookups.values()),
        "proc_address_distinct_names": len({name for name, _ in lookups}),
        "proc_address_ptds_lookups": sum(ptds.values()),
        "proc_address": [f"{name!r} v{ver} x{n}" + (f" (ptds x{ptds[(name, ver)]})" if ptds[(name, ver)] else "")
                         for (name, ver), n in sorted(lookups.items(), key=lambda x: (x[0][0], x[0][1] or 0))],
        "returned_raw": [f"{name!r} v{ver} flags={fl} x{n}" for (name, ver, fl), n in sorted(unknown.items(),
                                                                                          key=str)],
        "export_tables": [f"{u} {t['name'] or '(unknown)'}{' hooked' if t['hooked'] else ''} x{t['count']}"
                          for u, t in tables.items()],
        "dropped_lookups": dropped,
    }
