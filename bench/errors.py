"""User-facing errors: the CLI prints these as one line and exits non-zero."""


class BenchError(Exception):
    """A problem with the user's input (unknown name, bad suite file, corrupt results...)."""


class SkipTrial(Exception):
    """Raised inside a rank when a trial cannot run here; the row is recorded as `skipped`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
