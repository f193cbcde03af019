"""Progress for long multi-step work: a tqdm bar over named stages on stderr, shown on a terminal only
(never in pipes, logs or --json output); optionally a summary line of time and peak memory after the stages
(not with --json)."""

import sys
import time

from tqdm import tqdm

from .process_memory import peak_rss_bytes


class Stages:
    """A progress bar that advances through a fixed list of named stages; with `summary`, when it closes after
    the last one, a line saying how long the work took and its peak memory (the process's peak RSS, and the
    stage that set it: what a user sizes a machine by)."""

    def __init__(self, names: list[str], enabled: bool = True, summary: bool = False):
        self.names = names
        self.summary = enabled and summary
        self.bar = tqdm(total=len(names), disable=None if enabled else True, unit="step",
                        bar_format="{desc:<24} {bar} {n_fmt}/{total_fmt} [{elapsed}]")
        self._i = 0
        self._began = time.perf_counter()
        self._peak, self._peak_stage = peak_rss_bytes(), None

    def next(self) -> None:
        """Mark the previous stage done and show the next one's name."""
        if self._i:
            self._note_peak()
            self.bar.update(1)
        self.bar.set_description_str(self.names[self._i])
        self._i += 1

    def _note_peak(self) -> None:
        peak = peak_rss_bytes()
        if peak > self._peak:
            self._peak, self._peak_stage = peak, self.names[self._i - 1]

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self._note_peak()
            self.bar.update(1)
        self.bar.close()
        if exc_type is None and self.summary:
            where = f", reached in: {self._peak_stage}" if self._peak_stage else ""
            print(f"done in {time.perf_counter() - self._began:.0f} s; peak RSS {self._peak / 1e9:.2f} GB{where}",
                  file=sys.stderr)


def token_bar(total: int, description: str, initial: int = 0, enabled: bool = True) -> tqdm:
    """A bar over a count of tokens: rate (tokens/s) and ETA, on a terminal only."""
    return tqdm(total=total, initial=initial, desc=description, unit="tok", unit_scale=True,
                disable=None if enabled else True, smoothing=0.1)


def count_bar(total: int, description: str, unit: str, initial: int = 0, enabled: bool = True) -> tqdm:
    """A bar over a count of work items (e.g. luodi tune's configurations): rate and ETA, on a terminal only."""
    return tqdm(total=total, initial=initial, desc=description, unit=unit, disable=None if enabled else True,
                bar_format="{desc:<40.40} {bar} {n_fmt}/{total_fmt} [{elapsed}<{remaining}]")
