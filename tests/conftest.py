"""Shared fixtures: a tiny real CNN trained on real handwritten digits, and image folders on disk."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnaudit.schema import validate
from cnnaudit.demo import DigitsCNN, digits_images, train_model, write_image_folder

CLASSES = [str(i) for i in range(10)]
# every summary an audit produces in this test suite (Python API and CLI subprocesses alike) is validated
# against the published JSON Schema inside the pipeline (pipeline.py), so a key drifting from it fails here
os.environ["CNNAUDIT_VALIDATE_SUMMARY"] = "1"


@pytest.fixture(scope="session")
def digits():
    """(x, y, meta): all 1,797 digits at 32x32 with the demo's planted ruler and scanner."""
    return digits_images(seed=0)


@pytest.fixture(scope="session")
def eager_model(digits) -> DigitsCNN:
    x, y, _ = digits
    return train_model(x[:1000], y[:1000], epochs=3)


@pytest.fixture(scope="session")
def digits_dir(tmp_path_factory, digits) -> Path:
    """300 held-out digits as DATA/<class>/<image>.png with metadata.csv and classes.txt."""
    x, y, meta = digits
    idx = np.arange(1000, 1300)
    root = tmp_path_factory.mktemp("digits") / "data"
    write_image_folder(root, x[idx], y[idx], meta.iloc[idx].reset_index(drop=True), CLASSES)
    return root


@pytest.fixture(scope="session")
def torchscript_path(tmp_path_factory, eager_model) -> Path:
    path = tmp_path_factory.mktemp("models") / "model.pt"
    torch.jit.save(torch.jit.script(eager_model), str(path))
    return path


def run_cli(*args, cwd=None, env=None) -> subprocess.CompletedProcess:
    """The real CLI in a subprocess, as a user or CI would call it."""
    return subprocess.run([sys.executable, "-m", "cnnaudit", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **(env or {})}, timeout=600)


PLUGIN = Path(__file__).resolve().parents[1] / "examples" / "plugin-check"


@pytest.fixture(scope="session")
def plugin_env(tmp_path_factory) -> dict:
    """examples/plugin-check pip-installed into a folder of its own (its pyproject, its entry point in group
    cnnaudit.checks); the environment under which the CLI finds it."""
    target = tmp_path_factory.mktemp("plugin-site")
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                          str(PLUGIN)], capture_output=True, text=True, timeout=300)
    assert pip.returncode == 0, pip.stderr
    return {"PYTHONPATH": f"{target}{os.pathsep}{PLUGIN.parents[1]}"}


def read_summary(out: Path) -> dict:
    """An audit's summary.json, checked against the published JSON Schema (every test that reads one)."""
    summary = json.loads((Path(out) / "summary.json").read_text())
    validate(summary)
    return summary


def interrupt_at(cmd: list[str], marker: str, env: dict | None = None) -> int:
    """Run `cmd`, send it SIGINT (Ctrl-C) once its stderr shows `marker`, and return its exit code."""
    # A shell without job control starts background jobs with SIGINT ignored, and a child inherits that
    # (Python then never raises KeyboardInterrupt): start the CLI the way a terminal does, SIGINT default.
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    reached = threading.Event()

    def watch():
        for line in proc.stderr:
            if marker in line:
                reached.set()
    threading.Thread(target=watch, daemon=True).start()
    assert reached.wait(300), f"never reached {marker!r}"
    proc.send_signal(signal.SIGINT)
    return proc.wait(60)
