"""Profile the service under the benchmark's load with py-spy, and print where the time goes.

    .venv/bin/pip install py-spy
    .venv/bin/python bench/profile.py                 # every scenario
    .venv/bin/python bench/profile.py export report   # some of them

Scenarios: floor (the floor app's @jwt_required() route), me, export, list and create (the
gunicorn workers under 32 clients), and report (the Celery worker building a 100,000-row report).
py-spy samples every process of the server (--subprocesses, --nonblocking); the raw stacks are
kept in bench/results/profile-<name>.txt and summarised as the share of samples per package
(self time) and per function (inclusive).
"""

import argparse
import collections
import os
import re
import subprocess
import sys
import sysconfig
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

import run  # noqa: E402
from loadgen import run_load  # noqa: E402

SCENARIOS = ("floor", "me", "export", "list", "create", "report")
SITE_PACKAGES = sysconfig.get_paths()["purelib"]
FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]*)(?::\d+)?\)$")


def where(path):
    """Name what a frame's file belongs to: the service, a package, or the standard library.

    py-spy shortens paths to what follows site-packages (or the interpreter's lib folder).
    """
    first = path.split("/", 1)[0]
    if os.path.exists(os.path.join(run.ROOT, path)):
        return "service:" + path
    if os.path.exists(os.path.join(SITE_PACKAGES, first)):
        return first.removesuffix(".py")
    return "stdlib:" + first.removesuffix(".py")


def summarise(raw_path, top=25):
    """Return text: self time per package and inclusive time per function, in % of samples."""
    total = 0
    by_package = collections.Counter()
    inclusive = collections.Counter()
    leaf = collections.Counter()
    with open(raw_path) as raw:
        for line in raw:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            count = int(count)
            frames = []
            for frame in stack.split(";"):
                match = FRAME.match(frame)
                if match:
                    frames.append((match["func"], match["file"]))
            if not frames:
                continue
            total += count
            func, path = frames[-1]
            by_package[where(path)] += count
            leaf[f"{func} ({where(path)})"] += count
            for name in {f"{f} ({os.path.basename(p)})" for f, p in frames}:
                inclusive[name] += count
    lines = [f"{total} samples"]
    lines.append("self time by package:")
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in by_package.most_common(top)]
    lines.append("self time by function:")
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in leaf.most_common(top)]
    lines.append("inclusive time by function:")
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in inclusive.most_common(top * 2)]
    return "\n".join(lines)


def record(pid, seconds, out_path):
    """Start py-spy on `pid` and its children; return the process (stopped by `finish`)."""
    return subprocess.Popen(
        [os.path.join(run.BIN, "py-spy"), "record", "--pid", str(pid), "--subprocesses",
         "--nonblocking", "--rate", "250", "--duration", str(int(seconds)), "--format", "raw",
         "--output", out_path],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def finish(spy):
    _, err = spy.communicate(timeout=120)
    if spy.returncode:
        raise RuntimeError(f"py-spy failed: {err.decode(errors='replace')[-2000:]}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", default=list(SCENARIOS))
    parser.add_argument("--seconds", type=float, default=8)
    options = parser.parse_args()
    bench_options = argparse.Namespace(quick=True, keep=False)
    bench = run.Bench(bench_options)
    bench.size = {**run.QUICK, "users": 160, "memory_rows": (1, 1)}
    results_dir = os.path.join(BENCH, "results")
    os.makedirs(results_dir, exist_ok=True)
    try:
        bench.start()
        bench.create_users()
        bench.seed()
        bench.warm_up()
        token = bench.auth
        users = bench.small_users
        body = {"book_name": "The Bench Book", "author": "A. Writer", "note": "bench"}
        loads = {
            "floor": lambda i: (
                "GET", "/protected", token(bench.tokens[users[i % len(users)]]), None
            ),
            "me": lambda i: ("GET", "/me", token(bench.tokens[users[i % len(users)]]), None),
            "list": lambda i: (
                "GET", "/requests?per_page=20", token(bench.tokens[users[i % len(users)]]), None
            ),
            "create": lambda i: (
                "POST", "/requests", token(bench.tokens[users[i % len(users)]]), body
            ),
        }  # fmt: skip
        for name in options.scenarios:
            out_path = os.path.join(results_dir, f"profile-{name}.txt")
            if name == "report":
                bench.wait_worker_idle()
                spy = record(bench.worker.pid, 600, out_path)
                time.sleep(1)
                seconds = []
                for _ in range(3):
                    seconds.append(bench.build_report(bench.big["report"])[0])
                    bench.wait_worker_idle()
                spy.send_signal(2)  # SIGINT: py-spy writes what it has and exits
                finish(spy)
                detail = "100,000-row report built in " + ", ".join(f"{s:.2f}s" for s in seconds)
            elif name == "export":
                # several rounds, each user exporting once; the API idles while the worker drains
                spy = record(bench.api.pid, 600, out_path)
                time.sleep(1)
                rates = []
                for _ in range(4):
                    bench.pause_worker()
                    result = run_load(bench.api_port, bench.export_request, 32, count=len(users))
                    rates.append(f"{result.rate(202):.0f}/s {dict(result.statuses)}")
                    bench.resume_worker()
                    bench.wait_drained()
                spy.send_signal(2)
                finish(spy)
                detail = "exports " + ", ".join(rates)
            else:
                server, port = (
                    (bench.floor, bench.floor_port)
                    if name == "floor"
                    else (bench.api, bench.api_port)
                )
                spy = record(server.pid, options.seconds + 1, out_path)
                time.sleep(1)
                result = run_load(port, loads[name], 32, duration=options.seconds)
                finish(spy)
                detail = f"{result.rate(200, 201):.0f} req/s, statuses {dict(result.statuses)}"
            print(f"\n=== {name}: {detail}\n{summarise(out_path)}", flush=True)
    finally:
        bench.stop()


if __name__ == "__main__":
    main()
