#!/usr/bin/env python3
"""Runs every test binary of the workspace, each to the end even when another fails.

Reads cargo's `--message-format=json` build output on stdin (the test executables), runs each
one as `cargo test` would (in its package's directory, with CARGO_MANIFEST_DIR and CARGO set),
under a wall-clock limit per binary so that no hung test holds CI, streams its output with
the binary's name in front, and ends with a table: binary, result, tests passed/failed, seconds.
Exits 1 when any binary failed or timed out.

Environment: KENNEL_TEST_TIMEOUT (seconds per binary, default 1200), KENNEL_TEST_THREADS
(passed as --test-threads, default 4), KENNEL_TEST_FILTER (only binaries whose name contains it),
KENNEL_TEST_LOG_DIR (where each binary's full output is kept).
"""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time


def executables(lines):
    seen = set()
    for line in lines:
        try:
            msg = json.loads(line)
        except json.JSONDecodeError:
            continue
        if msg.get("reason") != "compiler-artifact" or not msg.get("profile", {}).get("test"):
            continue
        exe = msg.get("executable")
        if not exe or exe in seen:
            continue
        seen.add(exe)
        target = msg["target"]
        kind = target["kind"][0]
        pkg = msg["package_id"]
        name = target["name"] if kind in ("test", "bench") else f"{target['name']} (unit)"
        yield {
            "name": name,
            "exe": exe,
            "dir": os.path.dirname(msg["manifest_path"]),
            "pkg": pkg,
        }


def run(t, timeout, threads, log_dir):
    env = dict(os.environ)
    env["CARGO_MANIFEST_DIR"] = t["dir"]
    env.setdefault("CARGO", "cargo")
    log_path = os.path.join(log_dir, re.sub(r"[^A-Za-z0-9_.-]+", "_", t["name"]) + ".log")
    start = time.monotonic()
    with open(log_path, "w") as log:
        p = subprocess.Popen(
            [t["exe"], f"--test-threads={threads}", "--show-output"],
            cwd=t["dir"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        timed_out = threading.Event()

        def kill():
            timed_out.set()
            print(f"[{t['name']}] TIMEOUT after {timeout} s: killing it", flush=True)
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

        timer = threading.Timer(timeout, kill)
        timer.start()
        passed = failed = 0
        for raw in p.stdout:
            line = raw.decode("utf-8", "replace")
            log.write(line)
            sys.stdout.write(f"[{t['name']}] {line}")
            m = re.match(r"test result: \w+\. (\d+) passed; (\d+) failed", line)
            if m:
                passed += int(m.group(1))
                failed += int(m.group(2))
        p.wait()
        timer.cancel()
    secs = time.monotonic() - start
    if timed_out.is_set():
        result = "TIMEOUT"
    elif p.returncode == 0:
        result = "ok"
    else:
        result = f"FAILED ({p.returncode})"
    return {**t, "result": result, "passed": passed, "failed": failed, "secs": secs, "log": log_path}


def main():
    timeout = int(os.environ.get("KENNEL_TEST_TIMEOUT", "1200"))
    threads = os.environ.get("KENNEL_TEST_THREADS", "4")
    only = os.environ.get("KENNEL_TEST_FILTER", "")
    log_dir = os.environ.get("KENNEL_TEST_LOG_DIR", "/tmp/kennel-test-logs")
    os.makedirs(log_dir, exist_ok=True)
    tests = sorted((t for t in executables(sys.stdin) if only in t["name"]), key=lambda t: t["name"])
    if not tests:
        print("[test] no test executables in cargo's output", flush=True)
        return 1
    results = []
    for t in tests:
        print(f"[test] === {t['name']} ===", flush=True)
        results.append(run(t, timeout, threads, log_dir))
    width = max(len(r["name"]) for r in results)
    print(f"\n[test] summary ({len(results)} binaries, logs in {log_dir}):", flush=True)
    for r in results:
        print(
            f"[test]   {r['name']:<{width}}  {r['result']:<12} {r['passed']:>4} passed"
            f" {r['failed']:>3} failed  {r['secs']:7.1f} s"
        )
    bad = [r for r in results if r["result"] != "ok"]
    total = sum(r["passed"] for r in results)
    print(f"[test] {total} tests passed; {len(bad)} of {len(results)} binaries not ok"
          + "".join(f"\n[test]   NOT OK: {r['name']} ({r['result']}), see {r['log']}" for r in bad),
          flush=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
