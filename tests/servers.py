"""Real servers the tests run against: a private redis-server, a Celery worker, gunicorn, SMTP."""

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from email import message_from_bytes, policy

import redis
import requests
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.dirname(sys.executable)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout=20.0, what="condition", interval=0.05):
    """Return `condition()` once it is true; TimeoutError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def run_in_root(args, env=None, timeout=120):
    """Run `args` in the repository's root, output captured as text; return the result."""
    return subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def run_python(*args, env=None, timeout=120):
    """Run this interpreter with `args` (`-c CODE`, `-m gunicorn ...`) in the repository's root."""
    return run_in_root([sys.executable, *args], env, timeout)


def run_flask(*args, env=None, timeout=120):
    """Run `flask --app app ARGS` in the repository's root; return the result."""
    return run_in_root([os.path.join(BIN, "flask"), "--app", "app", *args], env, timeout)


def fresh_instance_env(tmp_path, **settings):
    """os.environ with an instance of its own in `tmp_path`: a new SQLite database, a secret."""
    return {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path}/library.db",
        "INSTANCE_PATH": str(tmp_path),
        "JWT_SECRET_KEY": "x" * 40,
        **settings,
    }


class RedisServer:
    """A throwaway redis-server on a free port that can be stopped and started again."""

    def __init__(self, workdir):
        self.port = free_port()
        self.workdir = workdir
        self.process = None
        self.url = f"redis://127.0.0.1:{self.port}"

    def start(self):
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
        )
        wait_for(self.ping, what="redis-server")

    def ping(self):
        try:
            return redis.Redis(port=self.port, socket_connect_timeout=0.2).ping()
        except redis.exceptions.ConnectionError:
            return False

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


class ManagedProcess:
    """A child process with its output in a log file, killed at the end."""

    def __init__(self, args, env, log_path):
        self.args = args
        self.env = env
        self.log_path = log_path
        self.process = None

    def start(self):
        self.log_file = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            self.args,
            cwd=ROOT,
            env=self.env,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def log(self):
        with open(self.log_path, encoding="utf-8", errors="replace") as log_file:
            return log_file.read()

    def kill(self, sig=signal.SIGKILL):
        """Send `sig` to the whole process group (a worker's children too) and reap it."""
        if self.process and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        if getattr(self, "log_file", None):
            self.log_file.close()


def start_worker(env, log_path, concurrency=1, app_name="celery_worker.celery_app", wait=True):
    """Start `celery -A app_name worker`; with `wait`, return once it is consuming."""
    worker = ManagedProcess(
        [
            os.path.join(BIN, "celery"),
            "-A",
            app_name,
            "worker",
            "--loglevel=info",
            f"--concurrency={concurrency}",
            "--without-gossip",
            "--without-mingle",
            "-n",
            f"test-{os.getpid()}-{free_port()}@%h",
        ],
        env,
        log_path,
    ).start()
    if wait:
        wait_until_ready(worker)
    return worker


def wait_until_ready(worker):
    with killed_on_failure(worker):
        wait_for(
            lambda: "ready." in worker.log() or worker.process.poll() is not None,
            timeout=60,
            what="celery worker",
        )
        if worker.process.poll() is not None:
            raise RuntimeError(f"worker died at start:\n{worker.log()}")


@contextlib.contextmanager
def killed_on_failure(managed):
    """Kill a process whose start-up failed, since no fixture will be left to do it."""
    try:
        yield
    except BaseException:
        managed.kill()
        raise


def start_gunicorn(env, log_path, workers=2):
    port = free_port()
    server = ManagedProcess(
        [
            os.path.join(BIN, "gunicorn"),
            "--no-control-socket",
            "--workers",
            str(workers),
            "--bind",
            f"127.0.0.1:{port}",
            "app:create_app()",
        ],
        env,
        log_path,
    ).start()
    server.url = f"http://127.0.0.1:{port}"

    def up():
        if server.process.poll() is not None:
            raise RuntimeError(f"gunicorn died at start:\n{server.log()}")
        try:
            return requests.get(server.url + "/openapi.json", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    with killed_on_failure(server):
        wait_for(up, timeout=60, what="gunicorn")
    return server


class MailSink:
    """An aiosmtpd handler that keeps every message it receives."""

    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"


class _TrackedSMTP(SMTP):
    """aiosmtpd's SMTP protocol, one per connection, that its controller can hang up on."""

    def __init__(self, handler, connections, **kwargs):
        super().__init__(handler, **kwargs)
        self.connections = connections
        self.lost = None
        self.hung_up = False

    def connection_made(self, transport):
        super().connection_made(transport)
        # STARTTLS calls this again, for the TLS layer over the same connection
        if self.lost is None:
            self.lost = self.loop.create_future()
            self.connections.add(self)

    def connection_lost(self, error):
        super().connection_lost(error)
        self.connections.discard(self)
        if not self.lost.done():
            self.lost.set_result(None)

    def hang_up(self):
        if not self.hung_up:
            self.hung_up = True
            self.transport.abort()


class SinkController(Controller):
    """aiosmtpd's Controller whose stop() also closes the connections clients still hold.

    Controller.stop() only stops the loop and cancels its tasks: a connection accepted just
    before (a worker mailing, or killed mid-mail) keeps its socket, and the garbage collector
    closes it later, with a ResourceWarning, during whichever test runs then.
    """

    def __init__(self, handler, **kwargs):
        super().__init__(handler, **kwargs)
        self.connections = set()

    def factory(self):
        return _TrackedSMTP(self.handler, self.connections, **self.SMTP_kwargs)

    async def _hang_up(self):
        self.server.close()
        this = asyncio.current_task()
        # until every connection is gone: a connection still being accepted is a task that
        # ends once it is set up, and the next round hangs up on it too
        while True:
            for smtp in list(self.connections):
                smtp.hang_up()
            pending = [*(asyncio.all_tasks() - {this}), *(s.lost for s in self.connections)]
            if not pending:
                return
            await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)

    def stop(self):
        """Hang up on every client, then stop the loop and its thread; again does nothing."""
        if self._thread is None:
            return
        asyncio.run_coroutine_threadsafe(self._hang_up(), self.loop).result()
        super().stop()


def start_smtp(port=None, **smtp_settings):
    """A SinkController on `port` (a free one by default), started; return it and its sink."""
    sink = MailSink()
    controller = SinkController(
        sink, hostname="127.0.0.1", port=port or free_port(), **smtp_settings
    )
    controller.start()
    return controller, sink


def pool_processes(worker):
    """The pids of a Celery worker's pool processes (its children)."""
    children = subprocess.run(
        ["pgrep", "-P", str(worker.process.pid)], capture_output=True, text=True
    ).stdout.split()
    return [int(pid) for pid in children]


class SlowClients:
    """`count` connections that each send a partial request one byte a second, until stopped.

    A connection the server drops is closed and opened again the next second.
    """

    def __init__(self, port, count):
        self.port = port
        self.sockets = [None] * count
        self.opened = 0
        self.dropped = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def open(self):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=2)
        self.opened += 1
        sock.sendall(b"GET /me HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        return sock

    def run(self):
        while not self.stopping.is_set():
            for index, sock in enumerate(self.sockets):
                try:
                    if sock is None:
                        self.sockets[index] = self.open()
                    else:
                        sock.sendall(b"a")
                except OSError:
                    if sock is not None:
                        sock.close()
                        self.dropped += 1
                    self.sockets[index] = None
            self.stopping.wait(1.0)
        for sock in self.sockets:
            if sock is not None:
                sock.close()

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stopping.set()
        self.thread.join(timeout=30)
