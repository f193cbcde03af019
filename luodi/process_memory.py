"""This process's memory: its peak resident set (what a user sizes a machine by), and handing freed heap back
to the system between an export's steps so that one step's garbage does not count against the next."""

import ctypes
import ctypes.util
import gc
import sys


def peak_rss_bytes() -> int:
    """This process's peak resident set so far (Linux and macOS; 0 where the platform does not say)."""
    try:
        import resource
    except ImportError:  # Windows
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def release_freed_memory() -> None:
    """Free Python's unreachable cycles, then return the C heap's free pages to the system (glibc's malloc_trim;
    nothing more elsewhere). ONNX Runtime, OpenVINO and protobuf free gigabytes at the end of a step, some of it
    held by reference cycles, that would otherwise count against the next step."""
    gc.collect()
    name = ctypes.util.find_library("c") if sys.platform.startswith("linux") else None
    if name:
        libc = ctypes.CDLL(name)
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)
