"""User-facing errors.

An `AuditError` is bad input or usage: the CLI prints its one-sentence message and exits 2, never a
traceback. Any other exception is a failure of the audit itself: inside a check it costs that check
only (its section and summary["errors"] say why; the traceback goes to OUT/errors.log), elsewhere the
run stops; either way the exit code is 3, never 1, so CI can tell a crashed audit from a failed gate.
"""

EXIT_PASS = 0
EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_INCOMPLETE = 3
EXIT_INTERRUPTED = 130

EXIT_CODES_HELP = ("exit codes: 0 pass; 1 gate failed (a 'fail' rule of --policy); 2 bad input or usage; "
                   "3 audit incomplete (a check failed: the other checks' outputs are written, errors.log has the "
                   "traceback; also any unexpected error, traceback in OUT/crash.log); 130 interrupted (nothing of "
                   "this run is written: OUT keeps the previous audit whole)")


class AuditError(Exception):
    """Bad input or usage, explained in one sentence that names the file/column/flag and the fix."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's message in one line for a one-sentence report: its first line, cut at `limit`
    characters, or the exception's type name when it has no message."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__
