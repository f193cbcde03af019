"""Progress for long multi-step work: a tqdm bar over named stages on stderr, shown on a terminal only
(never in pipes, logs or --json output)."""

from tqdm import tqdm


class Stages:
    """A progress bar that advances through a fixed list of named stages."""

    def __init__(self, names: list[str], enabled: bool = True):
        self.names = names
        self.bar = tqdm(total=len(names), disable=None if enabled else True, unit="step",
                        bar_format="{desc:<24} {bar} {n_fmt}/{total_fmt} [{elapsed}]")
        self._i = 0

    def next(self) -> None:
        """Mark the previous stage done and show the next one's name."""
        if self._i:
            self.bar.update(1)
        self.bar.set_description_str(self.names[self._i])
        self._i += 1

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.bar.update(1)
        self.bar.close()


def token_bar(total: int, description: str, initial: int = 0, enabled: bool = True) -> tqdm:
    """A bar over a count of tokens: rate (tokens/s) and ETA, on a terminal only."""
    return tqdm(total=total, initial=initial, desc=description, unit="tok", unit_scale=True,
                disable=None if enabled else True, smoothing=0.1)


def count_bar(total: int, description: str, unit: str, initial: int = 0, enabled: bool = True) -> tqdm:
    """A bar over a count of work items (e.g. luodi tune's configurations): rate and ETA, on a terminal only."""
    return tqdm(total=total, initial=initial, desc=description, unit=unit, disable=None if enabled else True,
                bar_format="{desc:<40.40} {bar} {n_fmt}/{total_fmt} [{elapsed}<{remaining}]")
