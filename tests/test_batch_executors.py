"""The local executor's cache of loaded pipelines: LRU eviction by count and by memory,
with an injected loader so no real model is built."""

from __future__ import annotations

from types import SimpleNamespace

from sdgen.batch.executors import LocalExecutor

GIB = 1 << 30


class _Loader:
    def __init__(self):
        self.loads = []

    def __call__(self, model, **options):
        self.loads.append(model)
        device = SimpleNamespace(
            runtime="tensorflow", device="CPU", xla=False, mixed_precision=False
        )
        return SimpleNamespace(model=model, device=device)


def _executor(free=None, max_pipelines=2, messages=None):
    loader = _Loader()
    executor = LocalExecutor(
        loader=loader,
        max_pipelines=max_pipelines,
        available=lambda: free() if callable(free) else free,
        estimate=lambda model: 4 * GIB,
        say=None if messages is None else messages.append,
    )
    return executor, loader


def test_at_most_max_pipelines_are_kept_least_recently_used_first_out():
    messages = []
    executor, loader = _executor(free=100 * GIB, messages=messages)
    assert executor.pipeline("a").model == "a"
    executor.pipeline("b")
    executor.pipeline("a")  # a is now the most recently used
    executor.pipeline("c")  # b goes
    assert list(executor.pipelines) == ["a", "c"]
    executor.pipeline("a")
    assert loader.loads == ["a", "b", "c"]  # a was never loaded twice
    executor.pipeline("b")  # c goes
    assert list(executor.pipelines) == ["a", "b"]
    assert loader.loads == ["a", "b", "c", "b"]
    assert "unloading b: at most 2 models are kept" in messages


def test_models_are_evicted_while_memory_is_short():
    messages = []
    free = {"bytes": 100 * GIB}  # read afresh before each eviction
    executor, _ = _executor(free=lambda: free["bytes"], max_pipelines=5, messages=messages)
    for model in "abc":
        executor.pipeline(model)
    assert list(executor.pipelines) == ["a", "b", "c"]
    free["bytes"] = 3 * GIB  # less than the 4 GiB a new model is estimated to need
    executor.pipeline("d")  # every older model goes, as evicting frees nothing here
    assert list(executor.pipelines) == ["d"]
    assert any(m.startswith("unloading a: 3072 MiB of memory are available") for m in messages)
    free["bytes"] = 100 * GIB
    executor.pipeline("a")
    assert list(executor.pipelines) == ["d", "a"]


def test_eviction_stops_once_there_is_room():
    free = {"bytes": 100 * GIB}
    executor, _ = _executor(free=lambda: free["bytes"], max_pipelines=5)
    for model in "abc":
        executor.pipeline(model)

    def freed_by_evicting():  # each eviction gives 2 GiB back
        return (3 - len(executor.pipelines)) * 2 * GIB + 1 * GIB

    executor.available = freed_by_evicting
    executor.pipeline("d")  # 1 GiB free: evict a (3), then b (5 >= 4): c stays
    assert list(executor.pipelines) == ["c", "d"]


def test_unknown_memory_evicts_only_by_count():
    executor, _ = _executor(free=None, max_pipelines=3)
    for model in "abcd":
        executor.pipeline(model)
    assert list(executor.pipelines) == ["b", "c", "d"]
