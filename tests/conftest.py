"""Shared fixtures: exports of every tiny family (seconds each) and of SmolLM2-135M (a few minutes, once).

Models and conversions are cached in $LUODI_CACHE (default ~/.cache/luodi); export folders go to a
temporary folder per test session, so every run exports afresh.

`make test` runs the suite on two pytest-xdist workers (`-n 2 --dist loadgroup`). Before they start, the
controller builds every tiny model into the cache, so no two workers build one entry at once; the tests of
one real model share a worker (`xdist_group`), which exports it once and converts it into the cache alone.
"""

import pytest

from luodi.loaders.registry import model_configs

REAL_MODEL_MARKS = ("smollm2", "gemma3")
TINY = [name for name, entry in model_configs().items() if entry["source"]["kind"] == "tiny"]  # configs/models


def pytest_sessionstart(session):
    """On the xdist controller (or a plain run), build the tiny models before any test or worker reads them."""
    if hasattr(session.config, "workerinput"):
        return
    from luodi.loaders import resolve

    for name in TINY:
        resolve(name)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the marks into each test's id
def pytest_collection_modifyitems(items):
    """Keep each real model's tests on one xdist worker: one export per target, one conversion into the cache."""
    for item in items:
        for mark in REAL_MODEL_MARKS:
            if item.get_closest_marker(mark):
                item.add_marker(pytest.mark.xdist_group(mark))


def pytest_collection_finish(session):
    """Refuse to run real-model tests on workers that would not share them (pytest 9.2 drops xdist's group from
    the test ids: pytest-xdist#1386), rather than let two workers convert one model into the cache at once."""
    if not getattr(session.config.option, "loadgroup", False):  # set on an xdist worker under --dist loadgroup
        return
    loose = [item.nodeid for item in session.items
             if any(item.get_closest_marker(m) for m in REAL_MODEL_MARKS) and "@" not in item.nodeid]
    if loose:
        raise pytest.UsageError(f"pytest-xdist did not group {loose[0]} (and {len(loose) - 1} more) with its real "
                                "model's tests: use pytest<9.2 (pyproject.toml pins it)")


@pytest.fixture(scope="session")
def export_dir(tmp_path_factory):
    """Export a named model for a target (default ort) once per session; returns the export folder."""
    from luodi.exporters import export_model

    done = {}

    def get(name: str, target: str = "ort"):
        if (name, target) not in done:
            out = tmp_path_factory.mktemp("exports") / f"{name}-{target}"
            done[name, target] = export_model(name, target=target, out=out, progress=False)
        return done[name, target]

    return get


@pytest.fixture(scope="session")
def reference():
    """The transformers model and tokenizer of a named model (cached per session)."""
    from luodi.loaders import resolve
    from luodi.loaders.hf_folder import load_reference, load_reference_tokenizer

    done = {}

    def get(name: str):
        if name not in done:
            source = resolve(name)
            done[name] = (load_reference(source.hf_dir), load_reference_tokenizer(source.hf_dir))
        return done[name]

    return get


@pytest.fixture(scope="session")
def quantized(tmp_path_factory):
    """tiny-qwen2 exported at a precision with optional quantization settings (cached per session)."""
    from luodi.exporters import export_model

    done = {}

    def get(precision, **settings):
        key = (precision, tuple(sorted(settings.items())))
        if key not in done:
            out = tmp_path_factory.mktemp("quantized") / f"{precision}-{len(done)}"
            done[key] = export_model("tiny-qwen2", precision=precision, out=out, progress=False,
                                     quantization=settings or None)
        return done[key]

    return get


@pytest.fixture(params=TINY)
def tiny(request):
    """Each tiny family's name in turn."""
    return request.param
