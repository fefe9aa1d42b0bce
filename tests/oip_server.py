"""A real MLServer (Open Inference Protocol v2 over REST) serving tiny torch CNNs, for tests/test_endpoint.py
and benchmarks/bench_query.py.

`start_mlserver(root, models)` writes a model repository into `root` (settings.json, one folder per model
with its model-settings.json and weights, and the custom runtime `oip_runtime.TorchRuntime`), starts
`mlserver start root` on 127.0.0.1 in a process group of its own, and waits until /v2/health/ready says yes.
The runtime's behaviour is set per model in `Model.extra`:

- layout "nchw" | "nhwc": the input layout the model takes;
- fail_first K: the first K requests carrying a given batch (same bytes) raise, so MLServer answers 500;
  a retried batch succeeds at its K+1-th try whatever the order or concurrency of the requests;
- sentinel v: a batch that holds the value v anywhere always raises (500): a permanent failure;
- sleep s: each request waits s seconds (asyncio.sleep: the server keeps answering other requests).

A request whose shape does not fit the model is refused with MLServer's `InferenceError` (HTTP 400 and
{"error": message}), as a runtime that checks its input does; any other exception in a runtime is an HTTP
500 with the text body "Internal Server Error" (Starlette's default handler).
"""

from __future__ import annotations

import inspect
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn


class TinyCNN(nn.Module):
    """Conv(3x3) -> ReLU -> Linear: a digits-size classifier, NCHW in, `classes` logits out."""

    def __init__(self, channels: int = 1, size: int = 8, classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(channels, 8, 3, padding=1)
        self.fc = nn.Linear(8 * size * size, classes)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


RUNTIME = '''
import asyncio
import hashlib
from collections import Counter

import numpy as np
import torch
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.errors import InferenceError
from mlserver.types import InferenceResponse
from mlserver.utils import get_model_uri

from tinycnn import TinyCNN

torch.set_num_threads(1)


class TorchRuntime(MLModel):
    async def load(self) -> bool:
        extra = self.settings.parameters.extra or {}
        self.layout = extra.get("layout", "nchw")
        self.channels, self.size = extra.get("channels", 1), extra.get("size", 8)
        self.fail_first, self.sentinel = extra.get("fail_first", 0), extra.get("sentinel")
        self.sleep = extra.get("sleep", 0)
        self.failures = Counter()
        self.model = TinyCNN(self.channels, self.size).eval()
        self.model.load_state_dict(torch.load(await get_model_uri(self.settings), weights_only=True))
        return True

    async def predict(self, payload):
        inp = payload.inputs[0]
        c, s = self.channels, self.size
        expected = (c, s, s) if self.layout == "nchw" else (s, s, c)
        x = np.asarray(inp.data.root, dtype=np.float32)
        if x.size != int(np.prod(inp.shape)) or len(inp.shape) != 4 or tuple(inp.shape[1:]) != expected:
            raise InferenceError(f"input {inp.name!r} has shape {inp.shape} ({x.size} values); "
                                 f"this model takes [-1, {', '.join(map(str, expected))}]")
        x = x.reshape(inp.shape)
        if self.sleep:
            await asyncio.sleep(self.sleep)
        if self.sentinel is not None and np.any(x == self.sentinel):
            raise RuntimeError("this batch holds the sentinel value: it always fails")
        key = hashlib.sha1(x.tobytes()).hexdigest()
        if self.failures[key] < self.fail_first:
            self.failures[key] += 1
            raise RuntimeError(f"transient failure {self.failures[key]} of {self.fail_first}")
        if self.layout == "nhwc":
            x = x.transpose(0, 3, 1, 2)
        with torch.no_grad():
            out = self.model(torch.from_numpy(np.ascontiguousarray(x))).numpy()
        return InferenceResponse(model_name=self.name, model_version=self.version,
                                 outputs=[NumpyCodec.encode_output("logits", out)])
'''


@dataclass
class Model:
    """One served model: its name, the TinyCNN weights it runs, and the runtime's options (see above)."""

    name: str
    state_dict: dict
    channels: int = 1
    size: int = 8
    layout: str = "nchw"
    dynamic: bool = False  # metadata says [-1, -1, -1, -1]: the client cannot check the shape itself
    version: str | None = None
    extra: dict = field(default_factory=dict)

    def settings(self) -> dict:
        c, s = self.channels, self.size
        shape = [-1, -1, -1, -1] if self.dynamic else [-1, c, s, s] if self.layout == "nchw" else [-1, s, s, c]
        params = {"uri": "./weights.pt", "extra": {"layout": self.layout, "channels": c, "size": s, **self.extra}}
        if self.version:
            params["version"] = self.version
        return {"name": self.name, "implementation": "oip_runtime.TorchRuntime", "platform": "torch",
                "inputs": [{"name": "pixels", "datatype": "FP32", "shape": shape}],
                "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}],
                "parameters": params}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """A running `mlserver start`: `url(name)` is a model's OIP base URL; `stop()` ends its process group."""

    def __init__(self, root: Path, proc: subprocess.Popen, port: int, log: Path, startup_s: float):
        self.root, self.proc, self.port, self.log, self.startup_s = root, proc, port, log, startup_s

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def url(self, name: str, version: str | None = None) -> str:
        return f"{self.base}/v2/models/{name}" + (f"/versions/{version}" if version else "")

    def log_text(self, tail: int = 20000) -> str:
        return self.log.read_text(errors="replace")[-tail:] if self.log.exists() else "(no log)"

    def stop(self) -> None:
        if self.proc.poll() is None:
            for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
                try:
                    os.killpg(self.proc.pid, sig)
                    self.proc.wait(wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
                except ProcessLookupError:
                    break


def write_repository(root: Path, models: list[Model], ports: tuple[int, int, int]) -> None:
    http, grpc, metrics = ports
    root.mkdir(parents=True, exist_ok=True)
    # parallel_workers 0: inference runs in the server process itself (no worker pool to spawn: faster
    # startup, and the runtime's per-batch failure counter lives in one process)
    settings = {"debug": False, "host": "127.0.0.1", "http_port": http, "grpc_port": grpc,
                "metrics_port": metrics, "parallel_workers": 0, "load_models_at_startup": True}
    (root / "settings.json").write_text(json.dumps(settings))
    (root / "oip_runtime.py").write_text(RUNTIME)
    (root / "tinycnn.py").write_text("import torch\nfrom torch import nn\n\n\n" + inspect.getsource(TinyCNN))
    for m in models:
        folder = root / m.name
        folder.mkdir(exist_ok=True)
        torch.save(m.state_dict, folder / "weights.pt")
        (folder / "model-settings.json").write_text(json.dumps(m.settings()))


def start_mlserver(root: Path, models: list[Model], timeout: float = 90.0) -> Server:
    """`mlserver start root` serving `models`, ready to answer; RuntimeError with the server's log if it
    does not get ready within `timeout` seconds (one more try on fresh ports if it exits early: another
    process may have taken a port between `free_port` and the server's bind)."""
    exe = Path(sys.executable).with_name("mlserver")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "mlserver.cli.main"]
    for attempt in range(2):
        ports = (free_port(), free_port(), free_port())
        write_repository(root, models, ports)
        log = root / "mlserver.log"
        start = time.perf_counter()
        with open(log, "wb") as out:
            proc = subprocess.Popen([*cmd, "start", str(root)], cwd=root, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        server = Server(root, proc, ports[0], log, 0.0)
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via an http_proxy
        while time.perf_counter() - start < timeout and proc.poll() is None:
            try:
                with direct.open(f"{server.base}/v2/health/ready", timeout=2) as resp:
                    if resp.status == 200:
                        server.startup_s = time.perf_counter() - start
                        return server
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.1)
        exited_early = proc.poll() is not None
        server.stop()
        if not exited_early:
            break
    raise RuntimeError(f"MLServer did not get ready in {timeout:.0f} s (exit code {proc.returncode}); "
                       f"its log:\n{server.log_text()}")
