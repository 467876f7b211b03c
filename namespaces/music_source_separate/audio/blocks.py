"""Fixed-size blocks cut from parts of any size, pushed as they come: what an encoder that takes a
fixed number of samples per call (an AAC frame, one of LAME's one-second calls) is given, so that the
same samples make the same calls however they were cut before."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


class Blocks:
    """Blocks of `size` samples of the parts pushed, joined end to end: only a block that spans two parts
    is copied, so silence around the samples costs no copy of them."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._pending: list[np.ndarray] = []
        self._held = 0

    def push(self, part: np.ndarray) -> Iterator[np.ndarray]:
        """The whole blocks `part` completes; what is left over is held (a copy: `part` may change after)."""
        at = 0
        while at < part.shape[1]:
            take = min(self.size - self._held, part.shape[1] - at)
            if take == self.size:
                yield part[:, at:at + take]
            else:
                self._pending.append(part[:, at:at + take])
                self._held += take
                if self._held == self.size:
                    yield self._joined()
            at += take
        if self._pending:
            self._pending = [self._joined(keep=True)]

    def rest(self) -> Iterator[np.ndarray]:
        """The samples held, a last shorter block (none when none are)."""
        if self._held:
            yield self._joined()

    def _joined(self, keep: bool = False) -> np.ndarray:
        joined = np.concatenate(self._pending, axis=1)
        if not keep:
            self._pending, self._held = [], 0
        return joined
