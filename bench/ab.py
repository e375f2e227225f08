"""Before and after in one run: the service at another commit beside this checkout.

    .venv/bin/python bench/ab.py --base main              # throughput and export, 5 rounds
    .venv/bin/python bench/ab.py --base HEAD~1 --rounds 9 list create

Starts the floor app, the service as of `--base` (a `git archive` of it, "A") and the service
in this checkout ("B"), all under gunicorn.conf.py, on one SQLite database and one private
redis-server (the schema must be the same at both commits). Each round measures the floor's
`@jwt_required()` route, then every case on A and on B back to back (which one goes first
alternates), so each ratio compares figures taken seconds apart, whatever else the machine
does. Prints per case the median and range over rounds of each side's share of the floor, and
of B/A. Export: `GET /export-report` p50 and p99 over `GET /me` of the same side and round,
with the worker paused while the API is timed, as in bench/run.py. Each of --users (default
1,000 with the export case, else 160) exports once per side and round, so the p99 is the 10th
slowest export of the round, not the 2nd slowest of 160.
"""

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

BENCH = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, BENCH)

import run  # noqa: E402
from loadgen import percentile, run_load  # noqa: E402

CASES = ("me", "list", "create", "export")


def export_tree(rev, into):
    """Write the files of `rev` into the folder `into`."""
    archive = subprocess.run(
        ["git", "-C", run.ROOT, "archive", "--format=tar", rev],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return subprocess.run(
        ["git", "-C", run.ROOT, "rev-parse", "--short", rev],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


class AB(run.Bench):
    def __init__(self, options, base_dir):
        super().__init__(options)
        self.base_dir = base_dir

    def start(self):
        super().start()  # redis, B (this checkout), floor, worker
        self.base_port = run.free_port()
        self.base = run.Managed(
            "api-base",
            [os.path.join(run.BIN, "gunicorn"), "--config", "gunicorn.conf.py",
             "app:create_app()"],
            {**self.env, "BIND": f"127.0.0.1:{self.base_port}"},
            os.path.join(self.tmp, "api-base.log"),
            cwd=self.base_dir,
        )  # fmt: skip
        run.wait_for(lambda: self.http_ok(self.base, self.base_port, "/health"), 90, "the base API")

    def warm(self, port):
        auth = self.auth(self.tokens[0])
        run_load(port, lambda i: ("GET", "/me", auth, None), 32, count=200)
        run_load(port, lambda i: ("GET", "/requests", auth, None), 32, count=200)

    def exports(self, port, users):
        """(/me p50, p99, export p50, p99) in ms for `users` exporting once each."""

        def me(i):
            return "GET", "/me", self.auth(self.tokens[users[i % len(users)]]), None

        def export(i):
            return "GET", "/export-report", self.auth(self.tokens[users[i]]), None

        self.pause_worker()
        got_me = run_load(port, me, 32, count=len(users))
        got_export = run_load(port, export, 32, count=len(users))
        self.check(got_export, 202, len(users), "GET /export-report")
        self.resume_worker()
        self.wait_drained()
        me_ms, export_ms = got_me.of(200), got_export.of(202)
        return [
            1000 * percentile(values, fraction)
            for values in (me_ms, export_ms)
            for fraction in (0.50, 0.99)
        ]


def show(label, values, unit="", digits=0):
    if not values:
        return f"{label}: -"
    med = statistics.median(values)
    return (
        f"{label}: {med:.{digits}f}{unit} ({min(values):.{digits}f}-{max(values):.{digits}f}{unit})"
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", help=f"some of {', '.join(CASES)} (default: all)")
    parser.add_argument("--base", required=True, help="the commit to compare with (A)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--users", type=int, help="default: 1000 with export, else 160")
    options = parser.parse_args()
    options.cases = options.cases or list(CASES)
    if set(options.cases) - set(CASES):
        parser.error(f"cases are {', '.join(CASES)}")
    if options.users is None:
        options.users = 1000 if "export" in options.cases else 160
    base_dir = tempfile.mkdtemp(prefix="library-ab-base-")
    base_rev = export_tree(options.base, base_dir)
    bench = AB(argparse.Namespace(quick=True, keep=False), base_dir)
    bench.size = {**run.QUICK, "users": options.users, "memory_rows": (1, 1), "report_rows": 1}
    began = time.monotonic()
    load = [os.getloadavg()[0]]
    try:
        bench.start()
        bench.create_users()
        bench.seed()
        sides = {"A": bench.base_port, "B": bench.api_port}
        for port in sides.values():
            bench.warm(port)
        users = bench.small_users
        body = {"book_name": "The Bench Book", "author": "A. Writer", "note": "bench"}

        def token(i):
            return bench.auth(bench.tokens[users[i % len(users)]])

        loads = {
            "floor": lambda i: ("GET", "/protected", token(i), None),
            "me": lambda i: ("GET", "/me", token(i), None),
            "list": lambda i: ("GET", "/requests?per_page=20", token(i), None),
            "create": lambda i: ("POST", "/requests", token(i), body),
        }
        ok = {"floor": 200, "me": 200, "list": 200, "create": 201}
        share = {(case, side): [] for case in options.cases for side in sides}
        gain = {case: [] for case in options.cases}
        cpu = {(case, side): [] for case in options.cases for side in sides}
        hz = os.sysconf("SC_CLK_TCK")
        for round_no in range(options.rounds):
            order = ["A", "B"] if round_no % 2 == 0 else ["B", "A"]
            floor = run_load(bench.floor_port, loads["floor"], 32, duration=options.seconds)
            floor_rate = floor.rate(200)
            line = [f"floor {floor_rate:.0f}/s"]
            for case in options.cases:
                got = {}
                for side in order:
                    port = sides[side]
                    server = bench.base if side == "A" else bench.api
                    workers = server.children()
                    before = sum(run.process_jiffies(pid) for pid in workers)
                    if case == "export":
                        got[side] = bench.exports(port, users)
                        continue
                    result = run_load(port, loads[case], 32, duration=options.seconds)
                    answered = sum(result.statuses.values())
                    spent = sum(run.process_jiffies(pid) for pid in workers) - before
                    cpu[case, side].append(1000 * spent / hz / max(answered, 1))
                    others = {s: n for s, n in result.statuses.items() if s != ok[case]}
                    if others or result.errors:
                        print(f"  {case} {side}: also {others} {dict(result.errors)}")
                    got[side] = result.rate(ok[case])
                if case == "export":
                    for side in sides:
                        me50, me99, ex50, ex99 = got[side]
                        share[case, side].append(ex99 / me99)
                        line.append(
                            f"export {side} p50 {ex50 / me50:.2f}x p99 {ex99 / me99:.2f}x "
                            f"(me p99 {me99:.0f} ms)"
                        )
                    gain[case].append(share["export", "B"][-1] / share["export", "A"][-1])
                    continue
                for side in sides:
                    share[case, side].append(100 * got[side] / floor_rate)
                gain[case].append(got["B"] / got["A"])
                line.append(
                    f"{case} A {got['A']:.0f}/s B {got['B']:.0f}/s ({got['B'] / got['A']:.2f})"
                )
            load.append(os.getloadavg()[0])
            print(f"[{time.monotonic() - began:5.0f}s] round {round_no + 1}: " + "; ".join(line),
                  flush=True)  # fmt: skip
        print(f"\nA = {base_rev} ({options.base}), B = this checkout; {options.rounds} rounds, "
              f"{options.seconds:.0f} s per case, 32 clients, {options.users} users; load average "
              f"{min(load):.1f}-{max(load):.1f} on {os.cpu_count()} CPUs")  # fmt: skip
        for case in options.cases:
            if case == "export":
                print(show("export p99 / me p99, A", share[case, "A"], "x", 2))
                print(show("export p99 / me p99, B", share[case, "B"], "x", 2))
                print(show("  B/A", gain[case], "", 2))
                continue
            print(show(f"{case} A, % of floor", share[case, "A"], "%"))
            print(show(f"{case} B, % of floor", share[case, "B"], "%"))
            print(show("  B/A req/s", gain[case], "", 2))
            print(show("  CPU ms/request A", cpu[case, "A"], "", 2))
            print(show("  CPU ms/request B", cpu[case, "B"], "", 2))
    finally:
        bench.stop()
        subprocess.run(["rm", "-rf", base_dir], check=False)


if __name__ == "__main__":
    main()
