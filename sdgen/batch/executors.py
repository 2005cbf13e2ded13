"""Where images are made: in this process, or spread over Ray actors.

An executor turns a job (one prompt's config and its model) into ``GeneratedImage``s; the
runner in :mod:`sdgen.batch.run` saves them. Both executors load each model once and keep
it while memory allows: at most ``MAX_PIPELINES`` loaded models, the least recently used
evicted first (see ``LocalExecutor``).
"""

from __future__ import annotations

import functools
import gc
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..config import AUTO_BATCH
from ..errors import SdgenError

#: At most this many loaded models are kept by one executor (one process or Ray actor).
MAX_PIPELINES = 2
#: What a loaded model with published weights is assumed to hold in memory (SD 1.x/2.x
#: in float32: a 3.4 GB U-Net, text encoder, decoder and working memory), and one whose
#: weights are generated (tiny).
LARGE_MODEL_BYTES = 6 << 30
SMALL_MODEL_BYTES = 512 << 20


def available_memory() -> int | None:
    """``MemAvailable`` of ``/proc/meminfo`` in bytes, or None where there is none."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def memory_estimate(model: str) -> int:
    """Bytes a loaded ``model`` is assumed to need (see ``LARGE_MODEL_BYTES``)."""
    from ..catalog import get_model_spec

    return SMALL_MODEL_BYTES if get_model_spec(model).generated else LARGE_MODEL_BYTES


@dataclass(frozen=True)
class LoadOptions:
    """How models are loaded (see ``load_pipeline``)."""

    weights_dir: Path | None = None
    offline: bool = False
    xla: bool | None = None
    mixed_precision: bool | None = None
    runtime: str = "tensorflow"
    #: where prompts find textual-inversion embeddings [``$SDGEN_HOME/embeddings``]
    embeddings_dir: Path | None = None
    #: where ``--lora NAME`` and ``<lora:NAME>`` find LoRAs [``$SDGEN_HOME/loras``]
    lora_dir: Path | None = None


def prepare_weights(options: LoadOptions, model: str, download_progress=None, say=None) -> None:
    """Find (or download, or convert: see :mod:`sdgen.provision`) every weights file of
    ``model`` before its first image, so a model whose files are missing fails once with
    one message naming them all (``WeightsError``), not once per job. Loading the
    networks waits for that image. ``say`` hears of a conversion."""
    from ..catalog import get_model_spec
    from ..provision import provide_weights

    spec = get_model_spec(model)
    provide_weights(spec, options.weights_dir, options.offline, download_progress, say)


def _describe(pipeline) -> str:
    device = pipeline.device
    if device.runtime == "openvino":
        converted = pipeline.backend.converted
        made = f", converted {', '.join(converted)}" if converted else ""
        return f"{device.device} (openvino, float32{made})"
    return (
        f"{device.device} (xla {'on' if device.xla else 'off'}, "
        f"mixed precision {'on' if device.mixed_precision else 'off'})"
    )


@dataclass
class LocalExecutor:
    """Generates in this process. ``say(message)`` hears when a model loads or is
    evicted, and ``download_progress`` is passed to ``load_pipeline``.

    Loaded pipelines are kept by model, in least recently used order. Before another
    model is loaded, the least recently used ones are evicted while ``max_pipelines``
    are loaded [MAX_PIPELINES], or while ``available()`` bytes (``MemAvailable``) are
    fewer than ``estimate(model)`` says the new one needs. ``loader`` builds a pipeline
    [``sdgen.pipeline.load_pipeline``]; tests inject all three.
    """

    options: LoadOptions = field(default_factory=LoadOptions)
    say: Callable[[str], None] | None = None
    download_progress: Callable | None = None
    pipelines: OrderedDict = field(default_factory=OrderedDict)
    load_seconds: dict = field(default_factory=dict)
    max_pipelines: int = MAX_PIPELINES
    loader: Callable | None = None
    available: Callable[[], int | None] = available_memory
    estimate: Callable[[str], int] = memory_estimate
    #: why a model could not be loaded, so its later jobs fail at once, not load again
    load_failures: dict = field(default_factory=dict)
    #: the notes already said this run (``Pipeline.notes``: each is said once)
    said: set = field(default_factory=set)

    def prepare(self, model: str) -> None:
        """Raise ``SdgenError`` now if ``model``'s weights are missing (see
        ``prepare_weights``); a model already loaded needs nothing."""
        if model not in self.pipelines:
            prepare_weights(self.options, model, self.download_progress, self.say)

    def pipeline(self, model: str, width: int | None = None, height: int | None = None):
        """The loaded pipeline of ``model``, loading it (at ``width`` x ``height`` first)
        if needed, after making room for it."""
        if model in self.pipelines:
            self.pipelines.move_to_end(model)
            return self.pipelines[model]
        self._make_room(model)
        if self.say is not None:
            self.say(f"loading {model} ...")
        began = time.perf_counter()
        self.pipelines[model] = self._load(model, width, height)
        self.load_seconds[model] = time.perf_counter() - began
        if self.say is not None:
            self.say(
                f"loaded {model} in {self.load_seconds[model]:.1f} s on "
                f"{_describe(self.pipelines[model])}"
            )
        return self.pipelines[model]

    def _load(self, model, width, height):
        loader = self.loader
        if loader is None:
            from .. import pipeline

            loader = pipeline.load_pipeline  # looked up now, so it can be replaced
        return loader(
            model,
            weights_dir=self.options.weights_dir,
            offline=self.options.offline,
            width=width,
            height=height,
            xla=self.options.xla,
            mixed_precision=self.options.mixed_precision,
            download_progress=self.download_progress,
            runtime=self.options.runtime,
            embeddings_dir=self.options.embeddings_dir,
            lora_dir=self.options.lora_dir,
        )

    def _make_room(self, model: str) -> None:
        """Evict least recently used pipelines before ``model`` is loaded."""
        loaded = len(self.pipelines)
        while self.pipelines and len(self.pipelines) >= max(1, self.max_pipelines):
            self._evict_oldest(f"at most {self.max_pipelines} models are kept")
        while self.pipelines:
            free = self.available()
            if free is None or free >= self.estimate(model):
                break
            self._evict_oldest(f"{free >> 20} MiB of memory are available")
            gc.collect()  # give the evicted networks' memory back before measuring again
        if len(self.pipelines) < loaded:
            gc.collect()

    def _evict_oldest(self, why: str) -> None:
        old, _ = self.pipelines.popitem(last=False)
        if self.say is not None:
            self.say(f"unloading {old}: {why}")

    def run(self, work, callback=None) -> Iterator:
        """Generate each ``(job, ks)`` in turn; a failure ends only its own job.
        ``callback(job, k, step, steps, latents)`` hears every denoising step."""
        from .work import JobFailure

        for job, ks in work:
            remaining = set(ks)
            on_step = None if callback is None else functools.partial(callback, job)
            if job.model in self.load_failures:
                yield job, JobFailure(sorted(remaining), self.load_failures[job.model])
                continue
            try:
                pipeline = self._pipeline_for(job)
                self._say_notes(pipeline, job.config)
                for image in pipeline.generate_iter(job.config, on_step, only=ks):
                    remaining.discard(image.index)
                    yield job, image
            except SdgenError as error:
                yield job, JobFailure(sorted(remaining), str(error))
            except Exception as error:
                if isinstance(error.__context__, KeyboardInterrupt):
                    # a Ctrl-C inside TensorFlow's C code can surface as another error
                    raise KeyboardInterrupt from error
                yield (
                    job,
                    JobFailure(sorted(remaining), f"unexpected {type(error).__name__}: {error}"),
                )

    def _say_notes(self, pipeline, config) -> None:
        """Say what the pipeline reports it does with ``config`` (``Pipeline.notes``:
        resizes, the steps run), each note once a run."""
        notes = getattr(pipeline, "notes", None)
        if self.say is None or not callable(notes):
            return
        for note in notes(config):
            if note not in self.said:
                self.said.add(note)
                self.say(note)

    def _pipeline_for(self, job):
        """The pipeline of ``job``'s model; a load that fails is remembered."""
        try:
            return self.pipeline(job.model, job.config.width, job.config.height)
        except SdgenError as error:
            self.load_failures[job.model] = str(error)
            raise

    def close(self) -> None:
        pass


class _RayWorker:
    """A Ray actor holding loaded pipelines (one per model), made by ``RayExecutor``."""

    def __init__(self, options: LoadOptions):
        import os

        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        self.executor = LocalExecutor(options)

    def generate(self, job, ks):
        """Pixels of images ``ks`` of ``job``, or a failure message."""
        results = []
        for _, result in self.executor.run([(job, ks)]):
            results.append(result)
        return results, dict(self.executor.load_seconds)


@dataclass
class RayExecutor:
    """Spreads batches over Ray actors, each holding loaded pipelines; the driver (the
    caller of ``run``) writes every file and manifest line, so resuming works the same.

    address: "local" starts a Ray instance in this process; anything else is given to
    ``ray.init(address=...)`` ("auto", "HOST:PORT" or "ray://HOST:10001").
    workers: actors to start [one per GPU of the cluster, else one per 2 CPUs].
    """

    options: LoadOptions = field(default_factory=LoadOptions)
    address: str = "local"
    workers: int | None = None
    load_seconds: dict = field(default_factory=dict)

    def __post_init__(self):
        try:
            import ray
        except ImportError as error:
            raise SdgenError("--ray needs Ray: pip install 'sdgen[ray]'") from error
        self._ray = ray
        if self.address == "local":
            ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        else:
            _check_reachable(self.address)
            try:
                ray.init(address=self.address, log_to_driver=False, configure_logging=False)
            except Exception as error:
                raise SdgenError(f"cannot connect to Ray at {self.address}: {error}") from error
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        cpus = int(resources.get("CPU", 1))
        count = self.workers or (gpus if gpus else max(1, cpus // 2))
        per_actor = {"num_gpus": 1} if gpus else {"num_cpus": max(1, cpus // count)}
        worker = ray.remote(_RayWorker)
        self.actors = [worker.options(**per_actor).remote(self.options) for _ in range(count)]

    def prepare(self, model: str) -> None:
        """For a local Ray instance, whose actors share this machine's caches, find or
        download ``model``'s weights here first (see ``prepare_weights``); a cluster's
        machines have caches of their own."""
        if self.address == "local":
            prepare_weights(self.options, model)

    def run(self, work, callback=None) -> Iterator:
        """Hand batches to idle actors and yield images as they come back."""
        from ray.util import ActorPool

        from .work import JobFailure

        tasks = []
        for job, ks in work:
            size = job.config.batch_size
            if size == AUTO_BATCH:  # spread over the actors; each picks its own batches
                size = max(1, math.ceil(len(ks) / len(self.actors)))
            tasks += [(job, ks[i : i + size]) for i in range(0, len(ks), size)]
        pool = ActorPool(self.actors)

        def submit(actor, task):
            return actor.generate.remote(*task)

        for (job, ks), outcome in zip(tasks, _ordered_results(pool, submit, tasks), strict=True):
            if isinstance(outcome, Exception):
                message = str(getattr(outcome, "cause", None) or outcome).splitlines()[-1]
                yield job, JobFailure(list(ks), message)
                continue
            results, load_seconds = outcome
            self.load_seconds.update(load_seconds)
            for result in results:
                yield job, result

    def close(self) -> None:
        self._ray.shutdown()


def _ordered_results(pool, submit, items):
    """Results of ``pool.map`` in submission order, with a task's exception in place of
    its result instead of ending the whole map."""
    for item in items:
        pool.submit(submit, item)
    while pool.has_next():
        try:
            yield pool.get_next()
        except Exception as error:
            yield error


def _check_reachable(address: str) -> None:
    """Fail fast, with a clear message, when a HOST:PORT Ray address does not answer
    (``ray.init`` itself retries for a minute or more)."""
    import socket

    if address == "auto":
        return
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise SdgenError(f"Ray address {address!r} is not HOST:PORT, ray://HOST:PORT or auto")
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            pass
    except OSError as error:
        raise SdgenError(f"cannot reach Ray at {address}: {error.strerror or error}") from error


__all__ = ["LoadOptions", "LocalExecutor", "RayExecutor"]
