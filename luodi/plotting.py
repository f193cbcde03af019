"""PNG plots for `luodi bench --plot` and `luodi tune`: matplotlib on its Agg backend (no display needed), each
figure written atomically, so a failed or interrupted write never leaves a half PNG."""

import io
from pathlib import Path

from .errors import LuodiError
from .fileio import write_bytes_atomic


def pyplot():
    """matplotlib.pyplot on the Agg backend, or a one-line error naming the extra that installs it."""
    try:
        import matplotlib
    except ImportError:
        raise LuodiError("plots need matplotlib: pip install 'luodi[export]'") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path) -> Path:
    """Render `fig` as a PNG into `path` (through a temporary sibling and a rename) and close it."""
    plt = pyplot()
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    finally:
        plt.close(fig)
    write_bytes_atomic(Path(path), buffer.getvalue())
    return Path(path)

