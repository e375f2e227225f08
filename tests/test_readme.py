"""The README, followed as a newcomer would, in every order, against `./run.sh`.

The curl walkthrough's bash blocks run as they are written, in one bash, and each command's
output must match the `#>` lines under it (`...` stands for anything). `seed-demo` must print
what the README shows, and the Postman collection must pass with newman, whichever of the
three ran first, on one running service per order.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
BASE_LINE = "BASE=http://127.0.0.1:5000"
MARKER = "@@readme-step"
START_TIMEOUT = 180
SETTING = re.compile(
    r"(DATABASE_URL|TEST_DATABASE_URL|REDIS_URL|APP_ENV|AUTO_MIGRATE|INSTANCE_PATH|BIND|"
    r"WEB_CONCURRENCY|TRUSTED_PROXIES|LOAN_DAYS|PUBLIC_BASE_URL|(JWT|MAIL|RATELIMIT|REPORT|"
    r"CELERY|FLASK|SWEEP|MAX|POSTMAN|LIBRARIAN)_\w+|\w+_RATE_LIMIT)"
)


def section(title):
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def fenced_blocks(text, language):
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.S | re.M)


def walkthrough_steps():
    """Split the walkthrough into steps: (commands, expected output lines)."""
    steps = []
    for block in fenced_blocks(section("A walk through with curl"), "bash"):
        commands, expected = [], []
        for line in block.splitlines():
            if line.startswith("#>"):
                expected.append(line[2:].strip())
                continue
            if expected:
                steps.append(("\n".join(commands), expected))
                commands, expected = [], []
            commands.append(line)
        steps.append(("\n".join(commands), expected))
    return steps


def matches(expected, actual):
    pattern = ".*".join(re.escape(part) for part in expected.split("..."))
    return re.fullmatch(pattern, actual) is not None


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Service:
    """`./run.sh` on free ports with its own Redis, database and instance folder."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "service.log"
        # a newcomer's shell: none of the service settings the test suite exports
        self.env = {key: value for key, value in os.environ.items() if not SETTING.fullmatch(key)}
        self.env.update(
            {
                "BIND": f"127.0.0.1:{self.port}",
                "REDIS_URL": f"redis://127.0.0.1:{free_port()}",
                "INSTANCE_PATH": str(workdir / "instance"),
                "DATABASE_URL": f"sqlite:///{workdir}/library.db",
                "PYTHONPATH": str(ROOT),
            }
        )
        self.process = None

    def start(self):
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [str(ROOT / "run.sh")],
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"./run.sh stopped:\n{self.log()}"
            if self.healthy() and "ready." in self.log():
                return
            time.sleep(0.5)
        raise AssertionError(f"./run.sh was not up in {START_TIMEOUT} s:\n{self.log()}")

    def healthy(self):
        try:
            return requests.get(f"{self.base}/health", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    def log(self):
        return self.log_path.read_text(errors="replace")

    def stop(self):
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def run(self, args, cwd=ROOT, **kwargs):
        return subprocess.run(
            args, cwd=cwd, env=self.env, capture_output=True, text=True, timeout=600, **kwargs
        )


@pytest.fixture
def service(tmp_path):
    for tool in ("curl", "jq", "npm"):
        assert shutil.which(tool), f"{tool} is needed (scripts/bootstrap.sh installs it)"
    running = Service(tmp_path)
    try:
        running.start()
        yield running
    finally:
        running.stop()


def run_walkthrough(service, tmp_path):
    """Run the walkthrough's blocks verbatim in one bash; compare each step's output."""
    steps = walkthrough_steps()
    script = []
    for index, (commands, _) in enumerate(steps):
        assert commands.count(BASE_LINE) <= 1
        script.append(f"printf '\\n{MARKER} {index}\\n'")
        # the one change: BASE points at this test's service
        script.append(commands.replace(BASE_LINE, f"BASE={service.base}"))
    assert any(BASE_LINE in commands for commands, _ in steps), "the walkthrough sets BASE"
    # the reader's project folder, without writing the downloads into the real one
    folder = tmp_path / "reader"
    folder.mkdir()
    (folder / ".venv").symlink_to(ROOT / ".venv")
    result = service.run(["bash", "-c", "\n".join(script)], cwd=folder)
    outputs = re.split(rf"^{MARKER} (\d+)\n", "\n" + result.stdout, flags=re.M)[1:]
    printed = {int(index): text for index, text in zip(outputs[::2], outputs[1::2], strict=True)}
    for index, (commands, expected) in enumerate(steps):
        actual = [line for line in printed.get(index, "").splitlines() if line]
        report = f"README step:\n{commands}\nprinted:\n{actual}\nstderr:\n{result.stderr[-2000:]}"
        assert len(actual) == len(expected), report
        for want, got in zip(expected, actual, strict=True):
            assert matches(want, got), f"expected {want!r}, got {got!r}\n{report}"


def seed_output_in_readme():
    """The output of a first seed-demo as the README shows it, and the second run's line."""
    blocks = fenced_blocks(section("Quick start"), "text")
    first = next(block for block in blocks if block.startswith("Demo data is ready"))
    reused = re.search(r"`(Reused from an earlier seed-demo[^`]*)`", section("Quick start"))
    return first.splitlines(), reused.group(1)


def run_seed(service, first_time):
    result = service.run([str(ROOT / ".venv/bin/flask"), "--app", "app", "seed-demo"])
    assert result.returncode == 0, result.stdout + result.stderr
    shown, reused = seed_output_in_readme()
    lines = result.stdout.splitlines()
    if first_time:
        assert lines == shown, result.stdout
    else:
        assert lines == [*shown[:-1], reused], result.stdout


ORDERS = {
    "walkthrough-seed-postman": ["walkthrough", "seed", "postman"],
    "seed-walkthrough-postman": ["seed", "walkthrough", "postman"],
    # Postman first, as its README section says: seed-demo, then the collection
    "postman-walkthrough-seed": ["seed", "postman", "walkthrough", "seed again"],
}


@pytest.mark.parametrize("order", list(ORDERS))
def test_readme_paths_work_in_any_order(service, tmp_path, order):
    service.env["POSTMAN_BASE_URL"] = service.base
    for step in ORDERS[order]:
        if step == "walkthrough":
            run_walkthrough(service, tmp_path)
        elif step.startswith("seed"):
            run_seed(service, first_time=step == "seed")
        else:
            result = service.run([str(ROOT / "scripts/postman.sh")])
            assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


def test_step_matching_tells_a_changed_output_apart():
    assert matches('{"id":...,"status":"pending"}', '{"id":7,"status":"pending"}')
    assert not matches('{"id":...,"status":"pending"}', '{"id":7,"status":"approved"}')
    assert not matches("Librarian head-librarian created.", "head-librarian is now a librarian.")


def test_walkthrough_has_expected_output_under_its_commands():
    steps = walkthrough_steps()
    assert sum(len(expected) for _, expected in steps) >= 15
    assert any("create-admin" in commands for commands, _ in steps)
    # ids are picked by owner and title, never by position in a list
    assert not re.search(r"\.items\[-?\d+\]", section("A walk through with curl"))


def test_readme_names_the_postman_environment_as_it_is_called():
    import json

    environment = json.loads((ROOT / "docs/postman/local.postman_environment.json").read_text())
    assert f'"{environment["name"]}" environment' in section("Postman")
