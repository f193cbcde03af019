"""The contract between an export and whatever runs it: the manifest's typed form and the runtimes it names
(manifest.py, schema.py, runtimes.py), the graph's names and step window (graph.py), the KV layouts (kv.py) and
the decode loop's shape limits (shapes.py).

Pure Python (no numpy, no torch), so the runtime a device installs reads it as the exporter writes it.
"""

from .kv import KV_LAYOUTS, KVLayout
from .manifest import BACKENDS, FORMAT, FORMAT_VERSION, Manifest, member_name_problem
from .runtimes import REQUIREMENT_NAMES, RUNTIMES, Runtime

__all__ = ["Manifest", "member_name_problem", "FORMAT", "FORMAT_VERSION", "BACKENDS", "KV_LAYOUTS", "KVLayout", "RUNTIMES",
           "REQUIREMENT_NAMES", "Runtime"]
