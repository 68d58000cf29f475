#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Runs a program under the shim and proves the shim was really in the path.

A preload that the dynamic loader cannot honour is only a warning, after
which a program runs straight on the simulator and passes for the wrong
reason. So every run gets GPUSWAP_STATS_FILE, and afterwards at least one
statistics file must exist, name the simulator as the driver the shim
loaded, and count driver calls.

  shimsim_harness.py suite EXE [ARGS...]
      EXE (a Criterion suite of tests/sim, built in that directory) with
      the environment as given (LD_PRELOAD etc. set by meson). Every test
      process Criterion forks writes its own statistics file.

  shimsim_harness.py compare COMPARE_RUNS ENV_A ENV_B PROGRAM [ARGS...]
      compare-runs.sh, with the statistics file added to ENV_B (the run
      under the shim). The harness's own environment must not preload the
      shim: run A is the one without it.
"""
import glob
import json
import os
import subprocess
import sys
import tempfile


def fail(msg):
    print("shimsim_harness: " + msg, file=sys.stderr)
    sys.exit(1)


def check_stats(stats_dir, expect_driver):
    files = sorted(glob.glob(os.path.join(stats_dir, "stats-*.json")))
    if not files:
        fail("no GPUSWAP_STATS_FILE was written: the shim was not loaded "
             "(check LD_PRELOAD)")
    calls = 0
    for path in files:
        with open(path) as f:
            try:
                stats = json.load(f)
            except ValueError as e:
                fail("%s is not JSON: %s" % (path, e))
        driver = stats.get("driver")
        if driver is not None and os.path.realpath(driver) != os.path.realpath(expect_driver):
            fail("%s: the shim loaded %s, not %s" % (path, driver, expect_driver))
        calls += sum(stats.get("calls", {}).values())
    if calls == 0:
        fail("the shim was loaded but counted no driver call")
    print("shim statistics: %d processes, %d driver calls through the shim"
          % (len(files), calls))


def main():
    if len(sys.argv) < 3:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    mode = sys.argv[1]
    driver = os.environ.get("GPUSWAP_REAL_LIBCUDA")
    with tempfile.TemporaryDirectory(prefix="shimsim-") as stats_dir:
        stats_file = os.path.join(stats_dir, "stats-%p.json")
        if mode == "suite":
            exe = sys.argv[2]
            if not os.access(exe, os.X_OK):
                fail("%s is not built (it is a tests/sim target: run ninja first)" % exe)
            if not driver or "LD_PRELOAD" not in os.environ:
                fail("LD_PRELOAD and GPUSWAP_REAL_LIBCUDA must be set (run through meson)")
            env = dict(os.environ, GPUSWAP_STATS_FILE=stats_file)
            rc = subprocess.call([exe] + sys.argv[3:], env=env)
            if rc != 0:
                fail("%s exited with %d" % (os.path.basename(exe), rc))
        elif mode == "compare":
            if len(sys.argv) < 6:
                fail("compare needs COMPARE_RUNS ENV_A ENV_B PROGRAM")
            compare, env_a, env_b = sys.argv[2:5]
            if "LD_PRELOAD" in os.environ:
                fail("LD_PRELOAD is set for both runs: nothing would be compared")
            driver = next((w.split("=", 1)[1] for w in env_b.split()
                           if w.startswith("GPUSWAP_REAL_LIBCUDA=")), None)
            if not driver:
                fail("ENV_B must set GPUSWAP_REAL_LIBCUDA")
            env_b = (env_b if env_b != "-" else "") + " GPUSWAP_STATS_FILE=" + stats_file
            rc = subprocess.call([compare, env_a, env_b] + sys.argv[5:])
            if rc != 0:
                fail("the runs with and without the shim differ (see above)")
        else:
            fail("unknown mode " + mode)
        check_stats(stats_dir, driver)


if __name__ == "__main__":
    main()
