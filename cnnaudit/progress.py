"""Progress: a tqdm bar on a terminal, plain periodic log lines otherwise (CI logs stay readable)."""

from __future__ import annotations

import sys
import time

# --budget: (time.perf_counter() at the audit's start, seconds); every progress line then says the time left
_BUDGET: tuple[float, float] | None = None


def set_budget(started: float | None, seconds: float | None) -> None:
    global _BUDGET
    _BUDGET = None if started is None or seconds is None else (started, float(seconds))


def time_left() -> str:
    """"41 s of the 120 s budget left" (or "12 s over the 120 s budget"), or "" without a budget."""
    if _BUDGET is None:
        return ""
    left = _BUDGET[1] - (time.perf_counter() - _BUDGET[0])
    return (f"{left:.0f} s of the {_BUDGET[1]:g} s budget left" if left >= 0
            else f"{-left:.0f} s over the {_BUDGET[1]:g} s budget")


class Progress:
    def __init__(self, total: int, desc: str, *, quiet: bool = False, every_s: float = 10.0, stream=None):
        self.total, self.desc, self.quiet, self.every_s = total, desc, quiet, every_s
        self.stream = stream or sys.stderr
        self.done = 0
        self._bar = None
        self._last = time.monotonic()
        if not quiet and self.stream.isatty():
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=desc, unit="img", file=self.stream, leave=False)
            if time_left():
                self._bar.set_postfix_str(time_left())
        elif not quiet:
            self._log()

    def _log(self):
        pct = 100.0 * self.done / self.total if self.total else 100.0
        left = time_left()
        print(f"[cnnaudit] {self.desc}: {self.done}/{self.total} ({pct:.0f}%)" + (f"; {left}" if left else ""),
              file=self.stream, flush=True)

    def update(self, n: int) -> None:
        self.done += n
        if self._bar is not None:
            if time_left():
                self._bar.set_postfix_str(time_left(), refresh=False)
            self._bar.update(n)
        elif not self.quiet and time.monotonic() - self._last >= self.every_s:
            self._last = time.monotonic()
            self._log()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        elif not self.quiet:
            self._log()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def log(message: str, *, quiet: bool = False) -> None:
    if not quiet:
        print(f"[cnnaudit] {message}", file=sys.stderr, flush=True)
