"""Atomic file output: a reader (or a crashed run) never sees half a report, nor half an audit."""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable

from .errors import AuditError


def _write_file(path: Path, write: Callable[[Any], None], mode: str = "w") -> None:
    """`write(fileobj)` into `path`, flushed to disk, with the permissions a plain open() would give."""
    with open(path, mode, **({} if "b" in mode else {"encoding": "utf-8", "newline": ""})) as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.chmod(path, 0o666 & ~_umask())  # mkstemp creates 0600; outputs are meant to be shared


def atomic_write(path: str | Path, write: Callable[[Any], None], mode: str = "w") -> Path:
    """Call `write(fileobj)` on a temp file beside `path`, fsync it, then rename it over `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        _write_file(Path(tmp), write, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda f: f.write(text))


def json_text(obj: Any) -> str:
    """summary.json's layout: indented, keys in their order, NaN refused (not valid JSON for CI readers)."""
    return json.dumps(obj, indent=2, sort_keys=False, allow_nan=False) + "\n"


def write_json(path: str | Path, obj: Any) -> Path:
    return write_text(path, json_text(obj))


@contextmanager
def _sigint_held():
    """SIGINT arriving during the block is held back and raised as KeyboardInterrupt after it (only the
    main thread may set handlers; elsewhere the block runs as it is)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught = []
    previous = signal.signal(signal.SIGINT, lambda *_: caught.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt


def _clear_abandoned(out: Path) -> None:
    """Staging folders left by a process that no longer runs (killed while writing) are removed."""
    for folder in out.glob(STAGING_PREFIX + "*"):
        pid = folder.name[len(STAGING_PREFIX):].split("-")[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists, owned by someone else
        return True
    return True


STAGING_PREFIX = ".cnnaudit-staging-"
# a test waits here (seconds) between staging and committing, to interrupt a write for real
STAGE_DELAY_ENV = "CNNAUDIT_TEST_STAGE_DELAY"
COMMITTED: list[Path] = []  # OUT folders this process has written a complete set into


class OutputSet:
    """An audit's files, written together or not at all: each is written into a staging folder in OUT
    (files outside OUT, like --model-card, into a temp file beside their target), and only `commit()`
    renames them into place, with SIGINT held back for those few renames. Until then OUT keeps the
    previous audit whole; an interrupt or a crash while writing (`discard`, or a later run clearing the
    staging folder of a process that is gone) leaves it so. summary.json, the file CI reads, is renamed
    last. Renames within one file system are atomic each (os.replace); the set is as close to atomic as
    a folder of separate files allows without asking users to follow a symlink."""

    def __init__(self, out_dir: str | Path):
        self.out = Path(out_dir)
        self.out.mkdir(parents=True, exist_ok=True)
        _clear_abandoned(self.out)
        self._staging: Path | None = None  # made on the first file inside OUT (`gate` may write only outside)
        self.staged: list[tuple[Path, Path]] = []  # (temp file, final path)
        self.stale: list[Path] = []

    @property
    def staging(self) -> Path:
        if self._staging is None:
            self._staging = Path(tempfile.mkdtemp(prefix=f"{STAGING_PREFIX}{os.getpid()}-", dir=self.out))
        return self._staging

    def add(self, path: str | Path, write: Callable[[Any], None], mode: str = "w") -> Path:
        """Stage `write(fileobj)` for `path` (relative to OUT, or absolute). Returns the final path."""
        path = Path(path)
        return self._stage(path if path.is_absolute() else self.out / path, write, mode)

    def add_user_path(self, path: str | Path, write: Callable[[Any], None], mode: str = "w") -> Path:
        """Like `add` for a path as the user typed it (--model-card, --junit: relative to the working folder):
        staged in OUT's staging folder when it lies inside OUT, else in a temp file beside it."""
        return self._stage(Path(path).absolute(), write, mode)

    def _stage(self, final: Path, write, mode) -> Path:
        if final.is_dir():
            raise AuditError(f"{str(final)!r} is a folder; the audit's {final.name} cannot be written there "
                             "(remove or rename the folder).")
        root = self.out.resolve()
        target = final.parent.resolve() / final.name
        if any(target == done for _, done in self.staged):  # the second would replace the first on commit
            raise AuditError(f"Two outputs of this run would both be written to {str(final)!r}; give each of "
                             "--model-card, --junit and --markdown a path of its own.")
        if target.is_relative_to(root):
            tmp = self.staging / target.relative_to(root)
            tmp.parent.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=target.parent)
            os.close(fd)
            tmp = Path(name)
        try:
            _write_file(tmp, write, mode)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self.staged.append((tmp, target))
        return final

    def add_text(self, path: str | Path, text: str) -> Path:
        return self.add(path, lambda f: f.write(text))

    def add_json(self, path: str | Path, obj: Any) -> Path:
        return self.add_text(path, json_text(obj))

    def remove(self, path: str | Path) -> None:
        """A file of an earlier audit that this one does not have (a stale errors.log): deleted on commit."""
        self.stale.append(self.out / path)

    def commit(self) -> None:
        delay = os.environ.get(STAGE_DELAY_ENV)
        if delay:
            from .progress import log
            log("outputs staged", quiet=False)
            time.sleep(float(delay))
        last = [item for item in self.staged if item[1].name == "summary.json"]
        for _, final in self.staged:  # folders first, so that no rename below fails half-way for want of one
            final.parent.mkdir(parents=True, exist_ok=True)
        with _sigint_held():
            for tmp, final in [item for item in self.staged if item not in last] + last:
                os.replace(tmp, final)
            for path in self.stale:
                path.unlink(missing_ok=True)
            COMMITTED.append(self.out)  # an interrupt from here on comes after this audit was written
        self.discard()

    def discard(self) -> None:
        """Remove whatever is still staged (all of it, when commit never ran)."""
        for tmp, _ in self.staged:
            tmp.unlink(missing_ok=True)
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)

    def __enter__(self) -> "OutputSet":
        return self

    def __exit__(self, *exc) -> None:
        self.discard()
