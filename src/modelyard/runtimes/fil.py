"""Tree models from Triton FIL repositories (``backend: "fil"``): XGBoost, LightGBM, Treelite.

Triton's FIL backend reads one model file per version and answers what its config asks for.
This runtime reads the same ``config.pbtxt`` and returns the same tensors, computed by the
model's own library (or Treelite, see ``_fil_engines.py``):

* ``model_type``: ``xgboost`` (the default; legacy binary, or what XGBoost 2.1+ writes to
  that name), ``xgboost_json``, ``xgboost_ubj``, ``lightgbm`` or ``treelite_checkpoint``;
  each has its default file name (``xgboost.model``, ``xgboost.json``, ``xgboost.ubj``,
  ``model.txt``, ``checkpoint.tl``) unless ``default_model_filename`` names another.
* ``output_class`` (``is_classifier`` since Triton 25.09; one is required): for classifiers
  without ``predict_proba``, ``output__0`` holds one class id per row as FP32: a binary
  model's probability compared with ``threshold`` (``p > threshold``, default 0.5), a
  multi-class model's arg-max.
* ``predict_proba``: the class probabilities instead; a binary model gives ``[1 - p, p]``
  when ``output__0`` has dims ``[2]``, and ``p`` alone when it has dims ``[1]``.
* Regressors (``output_class: false``) return the model's prediction.
* ``cpu_nthread``: threads per prediction. Unset, modelyard uses 1 where Triton uses every
  core: a server runs many requests and models at once, and on batches of up to ~100 rows a
  team of OpenMP threads saves nothing while its spinning threads take the cores the HTTP
  front end needs (``bench/trees.py``: 1.5x the requests per second at 16 connections).
  ``-1`` (Triton's default) gives the library its default, all cores, which halves the time
  of batches of thousands of rows on two cores.

The tensors are FIL's: ``input__0`` FP32 ``[features]``, ``output__0`` FP32. GPU-only and
tuning parameters (``algo``, ``storage_type``, ``layout``, ``threads_per_tree``,
``chunk_size``, ``blocks_per_sm``, ``transfer_threshold``,
``use_experimental_optimizations``) change no output and are ignored; models run on the CPU
whatever their instance group's kind.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.errors import ConfigError, InvalidArgument
from modelyard.runtimes._fil_engines import DEFAULT_FILENAMES, Forest, open_forest
from modelyard.runtimes.base import RuntimeOptions
from modelyard.types import Array

log = logging.getLogger("modelyard.runtimes.fil")

INPUT = "input__0"
OUTPUT = "output__0"
_SHAP_OUTPUT = "treeshap_output"
_TRUE = ("true", "1")
_FALSE = ("false", "0")


@dataclass(frozen=True, slots=True)
class FilParams:
    """The FIL parameters of one config, parsed and checked."""

    model_type: str = "xgboost"
    classifier: bool = False
    predict_proba: bool = False
    threshold: float = 0.5
    nthread: int = 1  # threads per prediction; <= 0: the library's default (all cores)
    allow_unknown_field: bool = False

    @classmethod
    def from_config(cls, config: Any) -> FilParams:
        name = config.name
        model_type = _param(config, "model_type") or "xgboost"
        if model_type not in DEFAULT_FILENAMES:
            raise ConfigError(
                f"model '{name}': model_type '{model_type}' is not one of FIL's: "
                + ", ".join(DEFAULT_FILENAMES)
            )
        classifier = _bool(config, "is_classifier")
        legacy = _bool(config, "output_class")  # Triton before 25.09; wins, as in Triton
        classifier = legacy if legacy is not None else classifier
        if classifier is None:
            raise ConfigError(
                f"model '{name}': the FIL backend needs parameter 'output_class' "
                "('true' for a classifier, 'false' for a regressor)"
            )
        threshold = _param(config, "threshold")
        nthread = _param(config, "cpu_nthread")
        try:
            return cls(
                model_type=model_type,
                classifier=classifier,
                predict_proba=bool(_bool(config, "predict_proba")),
                threshold=float(threshold) if threshold else 0.5,
                nthread=int(nthread) if nthread else 1,
                allow_unknown_field=bool(_bool(config, "xgboost_allow_unknown_field")),
            )
        except ValueError as exc:
            raise ConfigError(f"model '{name}': bad FIL parameter: {exc}") from None

    def output_width(self, width: int, declared: Sequence[int]) -> int:
        """Values per row in ``output__0``: what FIL writes for a model of ``width``."""
        if self.classifier and not self.predict_proba:
            return 1
        if self.classifier and width == 1 and list(declared) == [2]:
            return 2  # a binary model's [1 - p, p]
        return width


def _param(config: Any, key: str) -> str | None:
    if key in config.parameters:
        return str(config.parameters[key].string_value).strip()
    return None


def _bool(config: Any, key: str) -> bool | None:
    value = _param(config, key)
    if value is None or value == "":
        return None
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ConfigError(f"model '{config.name}': parameter '{key}' must be 'true' or 'false'")


def model_path(config: Any, model_file: Path, params: FilParams) -> Path:
    """FIL's file for the model type, unless ``default_model_filename`` names one."""
    if config.default_model_filename:
        return model_file
    return model_file.parent / DEFAULT_FILENAMES[params.model_type]


def _open(config: Any, model_file: Path, params: FilParams) -> Forest:
    path = model_path(config, model_file, params)
    if not path.is_file() and path.parent.is_dir():
        present = sorted(p.name for p in path.parent.iterdir())
        hint = "".join(
            f"; found '{f}': set model_type to '{t}'"
            for t, f in DEFAULT_FILENAMES.items()
            if f in present and t != params.model_type
        )
        raise ConfigError(
            f"unable to find '{path.name}' for model '{config.name}' (model_type "
            f"'{params.model_type}') in {path.parent}{hint}"
        )
    return open_forest(
        path,
        params.model_type,
        nthread=params.nthread,
        allow_unknown_field=params.allow_unknown_field,
    )


def postprocess(values: Array, params: FilParams, out_width: int) -> Array:
    """FIL's class encoding of ``(rows, width)`` probabilities or values, as FP32."""
    if params.classifier and not params.predict_proba:
        if values.shape[1] == 1:
            return (values > np.float32(params.threshold)).astype(np.float32)
        ids: Array = np.argmax(values, axis=1).astype(np.float32)
        return ids.reshape(-1, 1)
    if out_width == 2 and values.shape[1] == 1:
        return np.concatenate([np.float32(1) - values, values], axis=1)
    return values


class FilRuntime:
    """A loaded tree model; ``infer`` keeps no state between calls, so it is thread-safe."""

    def __init__(self, forest: Forest, params: FilParams, config: Any) -> None:
        self._forest = forest
        self._params = params
        self._name = str(config.name)
        output = next(t for t in config.output if t.name == OUTPUT)
        tail = list(output.dims)[0 if config.max_batch_size > 0 else 1 :]
        self._out_width = params.output_width(forest.width, tail)
        self._out_tail = tail or [self._out_width]
        self.library = forest.library

    def infer(self, inputs: Mapping[str, Array], outputs: Sequence[str]) -> dict[str, Array]:
        x = inputs[INPUT]
        features = self._forest.num_features
        if x.ndim != 2 or x.shape[1] != features:
            raise InvalidArgument(
                f"model '{self._name}' expects {features} features per row in '{INPUT}', "
                f"got shape {list(x.shape)}"
            )
        x = np.ascontiguousarray(x, dtype=np.float32)
        if len(x) == 0:
            values = np.empty((0, self._forest.width), np.float32)
        else:
            values = self._forest.predict(x)
        out = postprocess(values, self._params, self._out_width)
        return {OUTPUT: out.reshape(len(x), *self._out_tail)}

    def unload(self) -> None:
        self._forest = None  # type: ignore[assignment]


class FilFactory:
    backend = "fil"

    def autocomplete(self, config: Any, model_file: Path, options: RuntimeOptions) -> None:
        """Fills ``input__0``/``output__0`` from the model file when the config leaves them out.

        Triton's FIL backend completes nothing (its configs always list both tensors), so a
        complete config is left as written and the model file is not even opened.
        """
        from tritonclient.grpc import model_config_pb2 as mc

        params = FilParams.from_config(config)
        ins = {t.name: t for t in config.input}
        outs = {t.name: t for t in config.output}
        if INPUT in ins and ins[INPUT].dims and OUTPUT in outs and outs[OUTPUT].dims:
            return
        forest = _open(config, model_file, params)
        if config.max_batch_size == 0 and not (INPUT in ins and ins[INPUT].dims):
            config.max_batch_size = options.default_max_batch_size
            if not config.HasField("dynamic_batching") and not config.HasField("sequence_batching"):
                config.dynamic_batching.SetInParent()
        unbatched = [-1] if config.max_batch_size == 0 else []
        if INPUT not in ins:
            ins[INPUT] = config.input.add(name=INPUT, data_type=mc.TYPE_FP32)
        if not ins[INPUT].dims:
            ins[INPUT].dims.extend([*unbatched, forest.num_features])
        if OUTPUT not in outs:
            outs[OUTPUT] = config.output.add(name=OUTPUT, data_type=mc.TYPE_FP32)
        if not outs[OUTPUT].dims:
            # a binary classifier's probabilities as [1 - p, p], as FIL's own examples do
            pair = params.classifier and params.predict_proba and forest.width == 1
            width = 2 if pair else params.output_width(forest.width, [])
            outs[OUTPUT].dims.extend([*unbatched, width])

    def load(self, config: Any, model_file: Path, options: RuntimeOptions) -> FilRuntime:
        params = FilParams.from_config(config)
        _check_tensors(config)
        forest = _open(config, model_file, params)
        _check_shapes(config, params, forest)
        log.info("model '%s' (%s) runs on %s", config.name, params.model_type, forest.library)
        return FilRuntime(forest, params, config)


def _check_tensors(config: Any) -> None:
    """FIL's fixed tensor names and FP32, before any model file is read."""
    from tritonclient.grpc import model_config_pb2 as mc

    name = config.name
    inputs = [t.name for t in config.input]
    outputs = [t.name for t in config.output]
    if inputs != [INPUT]:
        raise ConfigError(
            f"model '{name}': the FIL backend takes exactly one input, '{INPUT}'; "
            f"the config declares {inputs}"
        )
    if _SHAP_OUTPUT in outputs:
        raise ConfigError(
            f"model '{name}': output '{_SHAP_OUTPUT}' (FIL's SHAP values) is not supported "
            "by modelyard yet; remove it from the config"
        )
    if outputs != [OUTPUT]:
        raise ConfigError(
            f"model '{name}': the FIL backend returns one output, '{OUTPUT}'; "
            f"the config declares {outputs}"
        )
    for t in (*config.input, *config.output):
        if t.data_type != mc.TYPE_FP32:
            raise ConfigError(
                f"model '{name}': FIL tensors are TYPE_FP32, but '{t.name}' is "
                f"{mc.DataType.Name(t.data_type)}"
            )


def _check_shapes(config: Any, params: FilParams, forest: Forest) -> None:
    """The config's dims against the model: a mismatch is a load error, not wrong answers."""
    name = config.name
    skip = 0 if config.max_batch_size > 0 else 1
    in_dims = list(config.input[0].dims)[skip:]
    out_dims = list(config.output[0].dims)[skip:]
    if len(in_dims) != 1 or in_dims[0] not in (-1, forest.num_features):
        raise ConfigError(
            f"model '{name}': '{INPUT}' has dims {in_dims} but the model ({forest.library}) "
            f"reads {forest.num_features} features per row: use dims [ {forest.num_features} ]"
        )
    width = params.output_width(forest.width, out_dims)
    allowed = [width]
    if params.classifier and params.predict_proba and forest.width == 1:
        allowed = [2, 1]  # a binary model's [1 - p, p], or p alone
    if -1 not in out_dims and math.prod(out_dims) not in allowed:
        what = (
            "one class id per row"
            if params.classifier and not params.predict_proba
            else " or ".join(str(w) for w in allowed) + " value(s) per row"
        )
        raise ConfigError(
            f"model '{name}': '{OUTPUT}' has dims {out_dims} but the model gives {what} "
            f"(output_class {str(params.classifier).lower()}, predict_proba "
            f"{str(params.predict_proba).lower()}): use dims "
            + " or ".join(f"[ {w} ]" for w in allowed)
        )
