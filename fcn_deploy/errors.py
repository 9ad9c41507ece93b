"""The one exception type the CLI turns into a one-line message and a non-zero exit."""


class FcnDeployError(Exception):
    """A user-facing failure: bad input, a missing file, an unusable model or device.

    Library code raises it (or a subclass) with a message that says what is wrong and,
    where possible, what to do; ``fcn-deploy`` prints ``fcn-deploy: error: MESSAGE`` and
    exits with status 1, never a traceback.
    """


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (its type name when it has none): what a
    one-line error quotes from a library that raised a page of text."""
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
