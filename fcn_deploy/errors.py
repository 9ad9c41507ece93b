"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class FcnDeployError(Exception):
    """A user-facing failure: bad input, a missing file, an unusable model or device.

    Library code raises it (or a subclass) with a message that says what is wrong and,
    where possible, what to do; ``fcn-deploy`` prints ``fcn-deploy: error: MESSAGE`` and
    exits with status 1, never a traceback.
    """


class StoppedEarly(FcnDeployError):
    """The user stopped a command (SIGINT, SIGTERM) before it had done all it was asked, and what
    it leaves is partial: one line saying what was done, and ``exit_status`` 128 + the signal's
    number (130, 143), as a shell reports a process a signal ended."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.exit_status = 128 + int(signum)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none): what a
    one-line error quotes from a library that raised a page of text."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
