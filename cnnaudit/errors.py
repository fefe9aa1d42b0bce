"""User-facing errors.

An `AuditError` is bad input or usage: the CLI prints its one-sentence message and exits 2, never a
traceback. Anything else that escapes is a bug in cnnaudit and is allowed to show its traceback.
"""

EXIT_PASS = 0
EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2


class AuditError(Exception):
    """Bad input or usage, explained in one sentence that names the file/column/flag and the fix."""
