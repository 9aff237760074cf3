"""Fixtures of the operator end-to-end test: the API emulator, a kubeconfig, kubectl, the operator.

Nothing is skipped: a missing tool or binary fails the test with what to run.
"""

from __future__ import annotations

import asyncio
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).parent))
import k8s_emulator  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "presencenamespaces.rollcall.dev.yaml"
NAMESPACE = "apps"
CONFIGMAP = "rollcall-namespaces"
WAIT = float(os.environ.get("E2E_WAIT_SECONDS", "20"))
# `make e2e-operator`: the same tests against the cluster of the current kubeconfig.
REAL_CLUSTER = os.environ.get("ROLLCALL_E2E_CLUSTER") == "1"


def wait_for(what: str, check: Callable[[], Any], timeout: float = WAIT, on_fail: Callable[[], str] = lambda: ""):
    """Polls `check` every 50 ms until it returns a truthy value; fails after `timeout` seconds
    saying what was awaited and the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = check()
        except Exception as e:  # noqa: BLE001 - the last failure is reported below
            last = e
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}; last seen: {last!r}\n{on_fail()}")
        time.sleep(0.05)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class EmulatorThread:
    """The emulator on its own asyncio loop in a daemon thread, on a free loopback port."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self._run, name="k8s-emulator", daemon=True)
        self.emulator: k8s_emulator.RealisticEmulator | None = None
        self.port = 0

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)

        async def start() -> None:
            self.emulator, self.server = await k8s_emulator.serve()
            self.port = self.server.port
            self.ready.set()

        self.loop.run_until_complete(start())
        self.loop.run_forever()

    def start(self) -> "EmulatorThread":
        self.thread.start()
        if not self.ready.wait(10):
            pytest.fail("the Kubernetes API emulator did not start within 10 s")
        return self

    def call(self, fn: Callable[[], Any]) -> Any:
        """Runs `fn` on the emulator's loop (its state is not thread-safe) and returns its result."""
        async def run() -> Any:
            return fn()
        return asyncio.run_coroutine_threadsafe(run(), self.loop).result(5)

    def stop(self) -> None:
        async def close() -> None:
            await self.server.__aexit__(None, None, None)
            await self.emulator.__aexit__(None, None, None)
        asyncio.run_coroutine_threadsafe(close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


class Kubectl:
    def __init__(self, binary: str, kubeconfig: pathlib.Path) -> None:
        self.binary, self.kubeconfig = binary, kubeconfig

    def run(self, *args: str, input: str | None = None, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        cmd = [self.binary, "--kubeconfig", str(self.kubeconfig),
               "--cache-dir", str(self.kubeconfig.parent / "cache"), "--namespace", NAMESPACE, *args]
        done = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            pytest.fail(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stderr}{done.stdout}")
        return done

    def json(self, *args: str) -> Any:
        return json.loads(self.run(*args, "-o", "json").stdout)

    def apply(self, manifest: str) -> None:
        self.run("apply", "-f", "-", input=manifest)

    def get(self, kind: str, name: str) -> dict | None:
        done = self.run("get", kind, name, "-o", "json", check=False)
        if done.returncode != 0:
            if "NotFound" in done.stderr or "not found" in done.stderr:
                return None
            pytest.fail(f"kubectl get {kind} {name}: {done.stderr}")
        return json.loads(done.stdout)


class Operator:
    """A `rollcall operator` process with its log in a file."""

    def __init__(self, binary: pathlib.Path, kubeconfig: pathlib.Path, log: pathlib.Path, name: str) -> None:
        self.metrics_port = free_port()
        self.log_path = log
        self.name = name
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "POD_NAMESPACE": NAMESPACE, "POD_NAME": name,
               "RUST_LOG": os.environ.get("RUST_LOG", "info,kube_lease_manager=warn"), "NO_COLOR": "1"}
        self.log_file = open(log, "w")
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [str(binary), "operator", "--watch-namespace", NAMESPACE, "--configmap-name", CONFIGMAP,
             "--metrics-port", str(self.metrics_port)],
            env=env, stdout=self.log_file, stderr=subprocess.STDOUT)

    def log(self) -> str:
        self.log_file.flush()
        return self.log_path.read_text()

    def http(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def terminate(self, timeout: float = 15) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            pytest.fail(f"operator {self.name} did not exit within {timeout} s of SIGTERM:\n{self.log()[-3000:]}")
        finally:
            self.log_file.close()


def find_tool(name: str) -> str:
    path = shutil.which(name, path=f"{ROOT / '.tools' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}")
    if path is None:
        pytest.fail(f"{name} not found: run scripts/install-operator-tools.sh (make test-operator does)")
    return path


@pytest.fixture(scope="session")
def rollcall_bin() -> pathlib.Path:
    binary = pathlib.Path(os.environ.get("ROLLCALL_BIN", ROOT / "target" / "debug" / "rollcall"))
    if not binary.is_file():
        pytest.fail(f"{binary} is missing: build it with `cargo build -p rollcall`")
    return binary


@pytest.fixture(scope="session")
def emulator():
    if REAL_CLUSTER:
        yield None
        return
    thread = EmulatorThread().start()
    yield thread
    thread.stop()


@pytest.fixture(scope="session")
def kubeconfig(emulator, tmp_path_factory) -> pathlib.Path:
    path = tmp_path_factory.mktemp("kube") / "config"
    if REAL_CLUSTER:
        source = pathlib.Path(os.environ.get("KUBECONFIG", pathlib.Path.home() / ".kube" / "config"))
        if not source.is_file():
            pytest.fail(f"ROLLCALL_E2E_CLUSTER=1 but no kubeconfig at {source}")
        shutil.copy(source, path)
        return path
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": f"http://127.0.0.1:{emulator.port}"}}],
        "users": [{"name": "e2e", "user": {"token": "e2e"}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "e2e", "namespace": NAMESPACE}}],
    }))
    return path


@pytest.fixture(scope="session")
def kubectl(kubeconfig) -> Kubectl:
    return Kubectl(find_tool("kubectl"), kubeconfig)


@pytest.fixture(scope="session")
def crd(kubectl) -> None:
    if REAL_CLUSTER:
        namespace = json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}})
        kubectl.run("apply", "-f", "-", input=namespace)
    kubectl.run("apply", "-f", str(CRD_FILE))
    kubectl.run("wait", "--for=condition=Established", "--timeout=10s", "crd/presencenamespaces.rollcall.dev")


@pytest.fixture(scope="session")
def operator(crd, rollcall_bin, kubeconfig, kubectl, tmp_path_factory):
    op = Operator(rollcall_bin, kubeconfig, tmp_path_factory.mktemp("operator") / "operator.log", "operator-0")
    tail = lambda: f"operator log:\n{op.log()[-4000:]}"
    wait_for("the operator's /ready", lambda: op.http("/ready")[0] == 200, on_fail=tail)
    lease = wait_for("the operator to hold the leader Lease",
                     lambda: (l := kubectl.get("lease", "rollcall-operator")) and
                     l.get("spec", {}).get("holderIdentity") == op.name and l, on_fail=tail)
    op.became_leader_after = time.monotonic() - op.started
    op.lease = lease
    yield op
    code = op.terminate()
    assert code == 0, f"operator exited {code} on SIGTERM\n{tail()}"
