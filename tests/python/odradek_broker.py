"""The `odradek serve` process the Python black-box tests run against (shared by every test module).

The broker binary comes from $ODRADEK_BIN (default target/release/odradek). A module starts one
broker on a free loopback port with a temporary data directory and stops it (SIGTERM, exit code 0
expected) when the module is done. Every wait is bounded.
"""

import os
import signal
import socket
import subprocess
import tempfile
import time

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN = os.environ.get("ODRADEK_BIN", os.path.join(REPO, "target", "release", "odradek"))
START_TIMEOUT_S = 30
STOP_TIMEOUT_S = 30


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """One `odradek serve` process with `--override`s; stdout/stderr go to broker.log in its temp dir."""

    def __init__(self, overrides=None):
        if not os.access(BIN, os.X_OK):
            pytest.fail(f"broker binary {BIN} missing: build it with `cargo build --release` or set ODRADEK_BIN")
        self.tmp = tempfile.TemporaryDirectory(prefix="odradek-py-")
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_path = os.path.join(self.tmp.name, "broker.log")
        self.log = open(self.log_path, "ab")
        cmd = [BIN, "serve", "--listen", self.bootstrap, "--data-dir", os.path.join(self.tmp.name, "data")]
        for key, value in (overrides or {}).items():
            cmd += ["--override", f"{key}={value}"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT)
        self._wait_accepting()

    def log_tail(self, lines=60):
        try:
            with open(self.log_path, "rb") as f:
                text = f.read().decode("utf-8", "replace")
        except OSError as e:
            return f"<cannot read {self.log_path}: {e}>"
        return "\n".join(text.splitlines()[-lines:])

    def fail(self, msg):
        pytest.fail(f"{msg}\n----- broker log tail ({self.log_path}) -----\n{self.log_tail()}\n-----")

    def _wait_accepting(self):
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                self.fail(f"broker exited during start-up with code {self.proc.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.proc.kill()
                self.proc.wait(timeout=10)
                self.fail(f"broker did not accept TCP on {self.bootstrap} within {START_TIMEOUT_S} s")
            time.sleep(0.1)

    def stop(self):
        """SIGTERM by PID, bounded wait; returns the exit code (None if it had to be killed)."""
        code = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        else:
            code = self.proc.returncode
        self.log.close()
        return code


def running_broker(overrides=None):
    """Generator for a module-scoped fixture: a broker, stopped (exit code 0 expected) at the end."""
    b = Broker(overrides)
    try:
        yield b
    finally:
        code = b.stop()
        tail = b.log_tail()
        b.tmp.cleanup()
        assert code == 0, f"broker exit code after SIGTERM: {code}\n----- broker log tail -----\n{tail}"


def admin(broker):
    return AdminClient({"bootstrap.servers": broker.bootstrap, "socket.timeout.ms": 10000})


def create_topic(broker, name, partitions):
    # Keep the client referenced until its futures resolve: a collected AdminClient cancels them.
    client = admin(broker)
    futures = client.create_topics(
        [NewTopic(name, num_partitions=partitions, replication_factor=1)], operation_timeout=10, request_timeout=15
    )
    try:
        futures[name].result(timeout=30)
    except KafkaException as e:
        broker.fail(f"create_topics({name}) failed: {e}")
