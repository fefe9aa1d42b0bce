"""Checkpoints for `--resume`: each finished check's result is saved under OUT/.cnnaudit-checkpoints and
reused when the model (sha256), the data (table, file sizes and modification times), the configuration,
the check's options and the checks before it are all unchanged; anything different is recomputed.

Checkpoints are pickles that cnnaudit itself wrote into the output folder; only resume from output
folders you trust, as with any pickle.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
from dataclasses import asdict, is_dataclass
from pathlib import Path

from . import __version__
from .io import atomic_write

FOLDER = ".cnnaudit-checkpoints"


def data_fingerprint(dataset, sample_ids) -> str:
    h = hashlib.sha256()
    h.update(dataset.table.to_csv(index=False).encode())
    for sid in sample_ids:
        path = dataset.abspath(dataset.path_of(sid))
        try:
            st = os.stat(path)
            h.update(f"{sid}:{st.st_size}:{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{sid}:missing\n".encode())
    return h.hexdigest()


def _options(opts) -> object:
    if isinstance(opts, (list, tuple)):
        return [_options(o) for o in opts]
    return asdict(opts) if is_dataclass(opts) else opts


class Checkpoints:
    def __init__(self, out_dir, *, model_sha256: str, data: str, config: dict):
        self.folder = Path(out_dir) / FOLDER
        self.base = hashlib.sha256(json.dumps({"version": __version__, "model": model_sha256, "data": data,
                                               "config": config}, sort_keys=True, default=str).encode()).hexdigest()

    def key(self, name: str, options, previous: str) -> str:
        payload = json.dumps({"base": self.base, "check": name, "options": _options(options), "previous": previous},
                             sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()

    def _path(self, name: str, key: str) -> Path:
        return self.folder / f"{name}-{key[:24]}.pkl"

    def load(self, name: str, key: str):
        path = self._path(name, key)
        if not path.exists():
            return None
        with open(path, "rb") as f:
            return pickle.load(f)

    def save(self, name: str, key: str, payload) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob(f"{name}-*.pkl"):  # one checkpoint per check: the newest
            old.unlink()
        atomic_write(self._path(name, key), lambda f: pickle.dump(payload, f), mode="wb")
