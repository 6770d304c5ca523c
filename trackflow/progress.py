"""Progress of a long job: a bar on the terminal and a line in the Prefect log at intervals."""

from __future__ import annotations

import sys
import time


class Progress:
    """`done / total` `unit`s with a rate; tqdm on a terminal (stderr), and `logger.info` every `every` seconds."""

    def __init__(self, total: int, label: str, unit: str, logger, every: float):
        from tqdm import tqdm

        self.total, self.label, self.unit, self.logger, self.every = total, label, unit, logger, every
        self.done = 0
        self._start = self._last = time.monotonic()
        # disable=None: a bar only on a terminal, so logs and CI output stay clean.
        self._bar = tqdm(total=total, desc=label, unit=unit, file=sys.stderr, disable=None, dynamic_ncols=True)

    def update(self, n: int) -> None:
        if n <= 0:
            return
        self.done += n
        self._bar.update(n)
        now = time.monotonic()
        if now - self._last >= self.every:
            self._last = now
            self._log(now)

    def _log(self, now: float) -> None:
        rate = self.done / max(now - self._start, 1e-9)
        self.logger.info("%s: %d/%d %ss done (%.1f/s)", self.label, self.done, self.total, self.unit, rate)

    def close(self) -> None:
        self._bar.close()
        self._log(time.monotonic())
