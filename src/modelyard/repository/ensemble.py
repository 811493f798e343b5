"""Triton ensembles (``platform: "ensemble"``): the step graph and its checks, in Triton's words.

An ensemble's ``ensemble_scheduling.step`` list names composing models; each step's
``input_map`` maps the composing model's input names (keys) to ensemble tensor names
(values), and ``output_map`` its output names to ensemble tensor names. Triton checks an
ensemble twice, and so does modelyard:

1. :func:`ensemble_scheduling_fault`, with the config alone (Triton's
   ``ValidateEnsembleSchedulingConfig`` in ``model_config_utils.cc``): steps present, maps
   filled, every ensemble input consumed, every output produced, each tensor produced once,
   no cycle, no tensor left unused. It runs inside :func:`validate_config`.
2. :func:`composing_fault`, once the composing models are loaded (Triton's
   ``ValidateEnsembleConfig`` in ``ensemble_utils.cc``): the maps name real inputs and
   outputs, data types and shapes agree, batch sizes fit, and no step mixes the outputs of
   different decoupled models. An ensemble over a decoupled model is itself decoupled
   (:func:`is_decoupled_over`).

:func:`composing_models` lists the (model, version) pairs a loader must load first and keep
loaded while the ensemble serves; the ``*_reason`` functions are Triton's texts for the
composing models it could not load. Messages were recorded from Triton 2.51
(``tests/integration/fixtures/triton_ensemble.json``), typos included.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from tritonclient.grpc import model_config_pb2 as mc

from modelyard.repository._common import ENSEMBLE_PLATFORM

__all__ = [
    "EnsembleStep",
    "composing_fault",
    "composing_models",
    "ensemble_scheduling_fault",
    "ensemble_steps",
    "failed_model_reason",
    "is_decoupled_over",
    "missing_models_reason",
    "missing_version_reason",
]

LATEST = -1  # a step's model_version: the newest version the composing model serves


@dataclass(frozen=True, slots=True)
class EnsembleStep:
    """One step: which model runs, and how its tensors map onto the ensemble's.

    ``inputs`` and ``outputs`` are ``(model tensor, ensemble tensor)`` pairs, sorted by the
    model's tensor name (protobuf maps have no order; Triton's follows its hash map, so where
    the order shows in a message, ours is at least stable); ``version`` is ``""`` for the
    newest version (``model_version: -1``).
    """

    index: int
    model: str
    version: str
    inputs: tuple[tuple[str, str], ...]
    outputs: tuple[tuple[str, str], ...]


def ensemble_steps(config: mc.ModelConfig) -> list[EnsembleStep]:
    """The steps of an ensemble config (which :func:`ensemble_scheduling_fault` accepted)."""
    return [
        EnsembleStep(
            index=i,
            model=step.model_name,
            version="" if step.model_version == LATEST else str(step.model_version),
            inputs=tuple(sorted(step.input_map.items())),
            outputs=tuple(sorted(step.output_map.items())),
        )
        for i, step in enumerate(config.ensemble_scheduling.step)
    ]


def composing_models(config: mc.ModelConfig) -> list[tuple[str, str]]:
    """The (model name, version) pairs an ensemble runs, once each, in step order.

    The version is ``""`` for the newest (``model_version: -1``), else the pinned number. A
    config that is not an ensemble composes nothing. Nested ensembles are not expanded: load
    each pair, and an ensemble among them names its own.
    """
    if not config.HasField("ensemble_scheduling"):
        return []
    pairs: dict[tuple[str, str], None] = {}
    for step in ensemble_steps(config):
        pairs.setdefault((step.model, step.version))
    return list(pairs)


# -- 1. the config alone: Triton's ValidateEnsembleSchedulingConfig --------------------------


@dataclass(eq=False)
class _Node:
    """An ensemble tensor in the data-flow graph (Triton's ``EnsembleTensor``)."""

    name: str
    is_output: bool
    ready: bool = False
    prev: list[_Node] = field(default_factory=list)
    next: list[_Node] = field(default_factory=list)


def ensemble_scheduling_fault(config: mc.ModelConfig) -> str | None:
    """Triton's ``ValidateEnsembleSchedulingConfig``, for a config with ``ensemble_scheduling``.

    One addition: a step's ``model_version`` below -1 can never be loaded, so it is refused
    here with the text Triton gives when it later finds no such version.
    """
    name = config.name
    if config.platform != ENSEMBLE_PLATFORM:
        return (
            f"ensemble scheduling cannot be set for model '{name}' whose platform is not "
            f"{ENSEMBLE_PLATFORM}"
        )
    if config.instance_group:
        return f"instance group should not be specified for ensemble '{name}'"
    if config.HasField("optimization"):
        return f"optimization should not be specified for ensemble '{name}'"
    if config.model_warmup:
        return f"model_warmup can not be specified for ensemble '{name}'"
    if not config.ensemble_scheduling.step:
        return f"must specify 'step' for ensemble '{name}'"
    graph: dict[str, _Node] = {}
    fault = _build_graph(config, graph)
    if fault is not None:
        return fault
    fault = _data_flow_fault(config, graph)
    if fault is not None:
        return fault
    for step in config.ensemble_scheduling.step:
        if step.model_version < LATEST:
            return missing_version_reason(name, step.model_name, step.model_version)
    return None


def _build_graph(config: mc.ModelConfig, graph: dict[str, _Node]) -> str | None:
    """Triton's ``BuildEnsembleGraph``: one node per ensemble tensor, edges through steps."""
    name = config.name
    for index, step in enumerate(config.ensemble_scheduling.step):
        where = f"in step {index} of ensemble '{name}'"
        if not step.model_name:
            return f"must specify 'model_name' {where}"
        if not step.input_map:
            return f"must specify 'input_map' {where}"
        if not step.output_map:
            return f"must specify 'output_map' {where}"
        produced: list[_Node] = []
        for _, tensor in sorted(step.output_map.items()):
            node = graph.get(tensor)
            if node is None:
                node = graph[tensor] = _Node(tensor, is_output=True)
            elif node.is_output:
                return (
                    f"ensemble tensor '{tensor}' can appear in an output map only once for "
                    f"ensemble '{name}' step {index}"
                )
            else:
                node.is_output = True
            produced.append(node)
        # input_map is a protobuf map: a model input cannot be mapped twice within a step
        for _, tensor in sorted(step.input_map.items()):
            node = graph.get(tensor)
            if node is None:
                node = graph[tensor] = _Node(tensor, is_output=False)
            for out in produced:
                out.prev.append(node)
                node.next.append(out)
    return None


def _data_flow_fault(config: mc.ModelConfig, graph: dict[str, _Node]) -> str | None:
    """From the ensemble inputs, mark what becomes computable; report what does not."""
    name = config.name
    queue: deque[_Node] = deque()
    for model_input in config.input:
        node = graph.get(model_input.name)
        if node is None:
            # Triton's text lacks the quote before "for"; kept word for word
            return f"ensemble input '{model_input.name}' for ensemble {name}' is not used"
        node.ready = True
        queue.append(node)
    while queue:
        for nxt in queue.popleft().next:
            if not nxt.ready and all(p.ready for p in nxt.prev):
                nxt.ready = True
                queue.append(nxt)
    outputs: set[str] = set()
    for model_output in config.output:
        node = graph.get(model_output.name)
        if node is None:
            return f"ensemble output '{model_output.name}' for ensemble {name}' is not used"
        if not node.ready:
            return _not_written(name, node)
        outputs.add(node.name)
    for tensor, node in graph.items():
        if tensor not in outputs and (not node.ready or not node.next):
            return f"ensemble tensor '{tensor}' is unused in ensemble '{name}'"
    return None


def _not_written(ensemble: str, output: _Node) -> str:
    """Triton follows the first not-ready predecessor back to where the chain breaks."""
    message = f"output '{output.name}' for ensemble '{ensemble}' is not written"
    last, prev, seen = output, output.prev, set()
    while prev:
        nodes, prev = prev, []
        for node in nodes:
            if not node.ready and node.name not in seen:
                seen.add(node.name)
                last, prev = node, node.prev
                break
    if last is not output:
        message += f": at least one of its depending tensors, '{last.name}', is not connected"
    return message


# -- 2. with the composing models: Triton's ValidateEnsembleConfig ---------------------------


@dataclass(eq=False)
class _Tensor:
    """An ensemble tensor as a composing model (or the ensemble) declares it."""

    model: str
    datatype: int
    dims: tuple[int, ...]
    full_dims: tuple[int, ...]
    decoupled: bool = False
    label: int = 0
    visited: bool = False
    prev: list[_Tensor] = field(default_factory=list)
    next: list[_Tensor] = field(default_factory=list)
    sibling: _Tensor | None = None


def _tensor(model: str, batching: bool, datatype: int, dims: Iterable[int]) -> _Tensor:
    dims = tuple(dims)
    return _Tensor(model, datatype, dims, (-1, *dims) if batching else dims)


def _io_dims(io: mc.ModelInput | mc.ModelOutput) -> Sequence[int]:
    return tuple(io.reshape.shape if io.HasField("reshape") else io.dims)


def _dims_match(a: Sequence[int], b: Sequence[int]) -> bool:
    """Triton's ``CompareDimsWithWildcard``."""
    return len(a) == len(b) and all(x == y or x == -1 or y == -1 for x, y in zip(a, b, strict=True))


def _dims_text(dims: Sequence[int]) -> str:
    return "[" + ",".join(str(d) for d in dims) + "]"


def _consistency_fault(lhs: _Tensor, rhs: _Tensor, prefix: str) -> str | None:
    if lhs.datatype != rhs.datatype:
        return (
            f"{prefix}inconsistent data type: {mc.DataType.Name(lhs.datatype)} is inferred "
            f"from model {lhs.model} while {mc.DataType.Name(rhs.datatype)} is inferred from "
            f"model {rhs.model}"
        )
    if not _dims_match(lhs.dims, rhs.dims) and not _dims_match(lhs.full_dims, rhs.full_dims):
        return (
            f"{prefix}inconsistent shape: {_dims_text(lhs.full_dims)} is inferred from model "
            f"{lhs.model} while {_dims_text(rhs.full_dims)} is inferred from model {rhs.model}"
        )
    return None


def composing_fault(
    config: mc.ModelConfig, composing: Mapping[tuple[str, str], mc.ModelConfig]
) -> str | None:
    """Triton's ``ValidateEnsembleConfig``: the ensemble against its composing models' configs.

    ``composing`` maps every :func:`composing_models` pair to that model's completed config
    (as loaded). Returns Triton's reason for the first fault, or None.
    """
    return _check_composing(config, composing)[0]


def is_decoupled_over(
    config: mc.ModelConfig, composing: Mapping[tuple[str, str], mc.ModelConfig]
) -> bool:
    """Whether the ensemble is decoupled: some step's model is (Triton sets the ensemble's
    ``model_transaction_policy.decoupled`` to this at load)."""
    return _check_composing(config, composing)[1]


def _check_composing(
    config: mc.ModelConfig, composing: Mapping[tuple[str, str], mc.ModelConfig]
) -> tuple[str | None, bool]:
    name = config.name
    batching = config.max_batch_size > 0
    tensors: dict[str, _Tensor] = {}
    for model_input in config.input:
        tensors[model_input.name] = _tensor(
            name, batching, model_input.data_type, _io_dims(model_input)
        )
    sink = _Tensor(name, mc.TYPE_INVALID, (), ())
    for model_output in config.output:
        node = tensors.setdefault(
            model_output.name,
            _tensor(name, batching, model_output.data_type, _io_dims(model_output)),
        )
        sink.prev.append(node)
        node.next.append(sink)
    for step in ensemble_steps(config):
        model = composing[(step.model, step.version)]
        if model.max_batch_size != 0 and model.max_batch_size < config.max_batch_size:
            return (
                f"ensemble {name} allows maximum batch size {config.max_batch_size}, but it "
                f"contains model {step.model} which only allows maximum batch size to be "
                f"{model.max_batch_size}"
            ), False
        fault = _mapping_fault(name, step, model, tensors)
        if fault is not None:
            return fault, False
    return _decoupled_flow(config, tensors)


def _mapping_fault(
    ensemble: str, step: EnsembleStep, model: mc.ModelConfig, tensors: dict[str, _Tensor]
) -> str | None:
    """Triton's ``ValidateTensorMapping`` for one step."""
    batching = model.max_batch_size > 0
    input_names = {i.name for i in model.input}
    for key, tensor in step.inputs:
        if key not in input_names:
            return (
                f"in ensemble {ensemble}, ensemble tensor {tensor} is mapping to non-existing "
                f"input {key} in model {step.model}"
            )
    for model_input in model.input:
        mapped = [tensor for key, tensor in step.inputs if key == model_input.name]
        for tensor in mapped:
            node = _tensor(step.model, batching, model_input.data_type, model_input.dims)
            known = tensors.get(tensor)
            if known is None:
                tensors[tensor] = node
                continue
            fault = _consistency_fault(
                known, node, f"in ensemble {ensemble}, ensemble tensor {tensor}: "
            )
            if fault is not None:
                return fault
        if not mapped and not model_input.optional:
            return (
                f"in ensemble {ensemble}, input {model_input.name} in model {step.model} is "
                "not mapped to any ensemble tensors"
            )
    outputs = {o.name: o for o in model.output}
    for key, tensor in step.outputs:
        if key not in outputs:
            return (
                f"in ensemble {ensemble}, ensemble tensor {tensor} is mapped from non-existing "
                f"output {key} in model {step.model}"
            )
    sibling = _Tensor(step.model, mc.TYPE_INVALID, (), ())
    for key, tensor in step.outputs:
        out = outputs[key]
        node = _tensor(step.model, batching, out.data_type, out.dims)
        known = tensors.get(tensor)
        if known is None:
            known = tensors[tensor] = node
        else:
            fault = _consistency_fault(
                known, node, f"in ensemble {ensemble}, ensemble tensor {tensor}: "
            )
            if fault is not None:
                return fault
        known.sibling = sibling
    decoupled = model.model_transaction_policy.decoupled
    for _, tensor in step.outputs:
        node = tensors[tensor]
        node.decoupled = decoupled
        for _, source in step.inputs:
            prev = tensors[source]
            node.prev.append(prev)
            prev.next.append(node)
    return None


def _decoupled_flow(config: mc.ModelConfig, tensors: dict[str, _Tensor]) -> tuple[str | None, bool]:
    """Label each tensor with the decoupled step it descends from; a step may not mix labels."""
    label = 0
    queue: deque[_Tensor] = deque()
    for model_input in config.input:
        node = tensors[model_input.name]
        node.visited = True
        queue.append(node)
    while queue:
        for nxt in queue.popleft().next:
            if nxt.visited or not all(p.visited for p in nxt.prev):
                continue
            first = nxt.prev[0].label
            if any(p.label != first for p in nxt.prev):
                return (
                    f"in ensemble {config.name}, step of model '{nxt.model}' receives inputs "
                    "originated from different decoupled models"
                ), False
            if nxt.sibling is not None and nxt.sibling.visited:
                nxt.label = nxt.sibling.label
            else:
                if nxt.decoupled:
                    label += 1
                    nxt.label = label
                else:
                    nxt.label = first
                if nxt.sibling is not None:
                    nxt.sibling.label, nxt.sibling.visited = nxt.label, True
            nxt.visited = True
            queue.append(nxt)
    return None, label != 0


# -- Triton's texts for composing models that could not be loaded ---------------------------


def missing_models_reason(ensemble: str, models: Sequence[str]) -> str:
    """Composing models the repository does not have."""
    return f"ensemble {ensemble} contains models that are not available or ambiguous: " + ", ".join(
        models
    )


def missing_version_reason(ensemble: str, model: str, version: int | str) -> str:
    """A pinned version the composing model does not serve."""
    return f"ensemble '{ensemble}' depends on '{model}' whose required version {version} is not loaded."


def failed_model_reason(ensemble: str, model: str, error: str) -> str:
    """A composing model that failed to load; ``error`` is why (Triton's load error)."""
    return (
        f"ensemble '{ensemble}' depends on '{model}' which has no loaded version. Model "
        f"'{model}' loading failed with error: {error}"
    )
