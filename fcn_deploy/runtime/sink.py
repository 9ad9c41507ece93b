"""The interface every output implements, alone in its module.

:mod:`.sinks` opens outputs by URI and :mod:`.rtsp` serves one of them; both subclass
:class:`Sink`, so it lives here, where neither has to import the other.
"""
from __future__ import annotations

import numpy as np

from .sources import Frame


class Sink:
    """Base class: ``write`` each rendered BGR picture, ``close`` once at the end."""

    description: str = ""

    def write(self, image: np.ndarray, frame: Frame) -> None:
        raise NotImplementedError

    def wants_stop(self) -> bool:
        """True once the user asked this sink to end the run (a closed window)."""
        return False

    def close(self) -> None:
        pass

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
