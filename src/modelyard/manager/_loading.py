"""Blocking steps of a load, run on worker threads: config completion and runtime creation."""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelyard.datatypes import numpy_dtype
from modelyard.errors import ConfigError, InvalidArgument
from modelyard.names import check_model_name
from modelyard.repository import (
    ModelEntry,
    load_config,
    model_file_path,
    normalize_config,
    validate_config,
)
from modelyard.runtimes.base import KNOWN_BACKENDS, factory_for
from modelyard.scheduling.runner import ModelRunner
from modelyard.scheduling.stats import ModelStats
from modelyard.types import Array

if TYPE_CHECKING:
    from modelyard.manager.manager import ManagerOptions

log = logging.getLogger("modelyard.manager")


def prepare_config(
    entry: ModelEntry, options: ManagerOptions, override_json: str | None = None
) -> Any:
    """Read, auto-complete (unless disabled), normalise and validate a model's config.

    ``override_json`` is the config a repository-extension load request carried (Triton's
    ``parameters.config``, the JSON form of ModelConfig); it replaces config.pbtxt. Auto-complete
    reads the newest version's model file, as Triton does.
    """
    from google.protobuf import json_format
    from tritonclient.grpc import model_config_pb2 as mc

    if override_json is not None:
        try:
            config = json_format.Parse(override_json, mc.ModelConfig())
        except json_format.ParseError as exc:
            raise InvalidArgument(
                f"failed to load '{entry.name}', failed to parse the 'config' parameter: {exc}"
            ) from None
    elif entry.config_path is not None:
        config = load_config(entry.config_path)
    elif options.autocomplete:
        config = mc.ModelConfig()
    else:
        raise ConfigError(
            f"failed to load model '{entry.name}': no config.pbtxt in {entry.path} and "
            "auto-complete is disabled (--disable-auto-complete-config)"
        )
    # Triton's order: backend fields from the files, the backend's auto-complete, defaults
    normalize_config(config, model_dir=entry.path)
    if options.autocomplete and entry.versions:
        model_file = model_file_path(entry.path, max(entry.versions), config)
        factory_for(config).autocomplete(config, model_file, options.runtime)
        normalize_config(config, model_dir=entry.path)
    if entry.mapped:  # Triton's model mapping: the served name, whatever the config says
        config.name = entry.name
    aliases = dict(entry.aliases)
    for step in config.ensemble_scheduling.step if aliases else ():
        step.model_name = aliases.get(step.model_name, step.model_name)
    validate_config(
        config,
        folder_name=entry.name,
        config_path=entry.config_path,
        known_backends=KNOWN_BACKENDS,
        versions=entry.versions,
    )
    return config


def runner_for_version(
    entry: ModelEntry,
    config: Any,
    version: int,
    options: ManagerOptions,
    stats: ModelStats | None = None,
) -> ModelRunner:
    factory = factory_for(config)
    runtime = factory.load(config, model_file_path(entry.path, version, config), options.runtime)
    runner = ModelRunner(
        config,
        str(version),
        runtime,
        model_dir=entry.path,
        inline_ns=options.inline_threshold_ns,
        stats=stats,
    )
    _warm_up(runner)
    return runner


def _warm_up(runner: ModelRunner) -> None:
    """Two executions on zeros at the model's largest batch (unknown dims 1) before traffic.

    onnxruntime allocates its arena on the first run and the buffers its memory pattern
    plans on the second, and keeps both at the largest batch seen: so the load's memory
    measurement sees what the model will hold once traffic batches, and the first requests
    are spared the cost. A model that refuses its largest batch is tried at batch 1; one
    that cannot run on zeros at all is simply left cold.
    """
    sig = runner.signature
    largest = max(int(runner.config.max_batch_size), 1)
    for batch in dict.fromkeys((largest, 1)):
        feed: dict[str, Array] = {}
        for spec in sig.inputs.values():
            shape = [batch] * sig.batched + [1 if d == -1 else d for d in spec.reshape or spec.dims]
            if spec.datatype == "BYTES":
                feed[spec.name] = np.full(shape, b"", dtype=object)
            else:
                feed[spec.name] = np.zeros(shape, dtype=numpy_dtype(spec.datatype))
        try:
            for _ in range(2):
                runner.runtime.infer(feed, list(sig.outputs))
            return
        except Exception as exc:  # data-dependent models may refuse zeros: that is fine
            log.debug("warm-up of '%s' at batch %d skipped: %s", runner.name, batch, exc)


# per-model overhead beyond its files: session structures, thread pools, Python objects
_MODEL_OVERHEAD = 8 * 2**20


def estimate_bytes(entry: ModelEntry) -> int:
    """A first model's predicted size, before any measurement: twice its files plus overhead.

    Weights are copied into the runtime and the first run allocates working memory about as
    large again for small models; the measurement after the load replaces this guess.
    """
    total = 0
    for path in entry.path.rglob("*"):
        with contextlib.suppress(OSError):
            if path.is_file():
                total += path.stat().st_size
    return 2 * total + _MODEL_OVERHEAD


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)
_MMAP_THRESHOLD = 128 * 2**10  # glibc's initial threshold, held fixed


def return_freed_memory() -> None:
    """Make glibc give large freed blocks back to the OS at once (called once, at start).

    glibc serves blocks of 128 KiB and more with their own mmap and unmaps them on free,
    but raises that threshold to the size of each such block freed (up to 32 MiB): after
    the first model is unloaded, the next models' weights and arenas come from the heap,
    and what an unload frees there mostly stays resident. The server's memory then creeps
    above what the loaded models hold, which a budget cannot allow. Fixing the threshold
    (as ``MALLOC_MMAP_THRESHOLD_`` would) keeps large blocks unmapped on free; the cost
    is an mmap per large allocation, nothing on the request path of a loaded model.
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL("libc.so.6")
            libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
            libc.mallopt(_M_TRIM_THRESHOLD, 2 * _MMAP_THRESHOLD)


def trim_heap() -> None:
    """Hand freed heap back to the OS after an unload (glibc keeps it otherwise)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)


OVERRIDE_PREFIX = "modelyard-override-"


def write_override(name: str, files: dict[str, bytes]) -> Path:
    """Write a load request's files into a fresh ``<private folder>/<name>/`` model folder.

    ``name`` has passed :func:`~modelyard.names.check_model_name`. Paths are relative to the
    model folder, as in Triton: a leading ``/`` (``file:/1/model.py``) still means the model
    folder, not the host's root. A path that leaves the model folder once normalised
    (``../x``, ``/../x``) or names the folder itself is refused with Triton's text, and the
    private folder is removed again: nothing of a refused request stays on disk.
    """
    check_model_name(name)
    private = Path(tempfile.mkdtemp(prefix=OVERRIDE_PREFIX))
    root = private / name
    try:
        root.mkdir()
        for rel, data in files.items():
            target = _override_target(root, rel)
            if target.parent.exists() and not target.parent.is_dir():
                raise InvalidArgument(
                    f"Invalid file parameter 'file:{rel}', directory has been created as a file"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_dir():
                raise InvalidArgument(
                    f"Invalid file parameter 'file:{rel}', a directory has that path"
                )
            target.write_bytes(data)
    except BaseException:
        shutil.rmtree(private, ignore_errors=True)
        raise
    return root


def _override_target(root: Path, rel: str) -> Path:
    """Where ``file:<rel>`` goes under ``root``; InvalidArgument when it leaves ``root``.

    Normalised without touching the disk (the folder is fresh: it holds no links), then
    checked again with links resolved, as Triton checks ``weakly_canonical`` against the
    model folder.
    """
    text = rel.lstrip("/")
    if "\0" in rel or not text:
        raise InvalidArgument(f"Invalid file parameter 'file:{rel}': not a file path")
    normal = os.path.normpath(text)
    target = root / normal
    if normal in (".", "..") or normal.startswith("../") or os.path.isabs(normal):
        escapes = True
    else:
        escapes = not target.resolve().is_relative_to(root.resolve())
    if escapes:
        raise InvalidArgument(
            f"Invalid file parameter 'file:{rel}' with normalized path '{normal}' must stay "
            "within model directory."
        )
    return target


def remove_override(folder: Path | None) -> None:
    """Delete the private folder :func:`write_override` made, and only such a folder.

    The folder removed is ``folder``'s parent, which the server created with mkdtemp; a
    path of any other shape is left alone (it was not made here), so no model name or
    path can turn this into removing something the server did not create.
    """
    if folder is None:
        return
    private = folder.parent
    made_here = (
        private.name.startswith(OVERRIDE_PREFIX)
        and private.parent == Path(tempfile.gettempdir())
        and folder.name not in ("", ".", "..")
        and not private.is_symlink()
    )
    if made_here:
        shutil.rmtree(private, ignore_errors=True)
    else:
        log.error("not removing '%s': not a folder this server created", folder)


def gpu_device_of(entry: ModelEntry) -> int | None:
    """The GPU a model will run on, from its config.pbtxt as written: the first KIND_GPU
    instance group's first device (device 0 when it names none); None for a CPU model.

    Read before the load, so the GPU's budget can admit the model first; a config that does
    not parse here fails properly in the load itself.
    """
    if entry.config_path is None:
        return None
    from tritonclient.grpc import model_config_pb2 as mc

    try:
        config = load_config(entry.config_path)
    except ConfigError:
        return None
    for group in config.instance_group:
        if group.kind == mc.ModelInstanceGroup.KIND_GPU:
            return int(group.gpus[0]) if group.gpus else 0
    return None
