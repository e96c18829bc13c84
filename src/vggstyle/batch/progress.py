"""The batch's progress bar over jobs, with an ETA from the jobs actually run."""

from __future__ import annotations

import sys
from collections import Counter


class JobBar:
    """An on_result callback: counts results, and draws a tqdm bar on stderr unless quiet.

    Skipped jobs shrink the bar's total instead of advancing it, so the rate and the ETA
    count only the jobs that ran. Failures are printed as one line each, quiet or not.
    """

    def __init__(self, total: int, quiet: bool):
        self.counts: Counter = Counter()
        self.bar = None
        if not quiet:
            from tqdm import tqdm
            self.bar = tqdm(total=total, unit="job", dynamic_ncols=True, file=sys.stderr)

    def __call__(self, result) -> None:
        self.counts[result.status] += 1
        if result.status == "failed":
            line = f"failed: {result.job.content.name} x {result.job.style.name}: {result.error}"
            (self.bar.write if self.bar is not None else _stderr)(line)
        if self.bar is None:
            return
        if result.status == "skipped":
            self.bar.total -= 1
        else:
            self.bar.update(1)
        self.bar.set_postfix_str(self._postfix(), refresh=True)

    def _postfix(self) -> str:
        parts = [f"{self.counts[s]} {s}" for s in ("skipped", "failed") if self.counts[s]]
        return ", ".join(parts)

    def summary(self) -> str:
        return ", ".join(f"{self.counts[s]} {s}" for s in ("done", "skipped", "failed"))

    def close(self, clear: bool = False) -> None:
        """clear: take the bar off the screen (before an error line, which then stands alone)."""
        if self.bar is not None:
            self.bar.leave = not clear
            self.bar.close()


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)
