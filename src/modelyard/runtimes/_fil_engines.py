"""The libraries that execute tree models for the FIL backend, each imported only when needed.

A :class:`Forest` is one loaded model file behind one small interface: ``predict(x)`` takes
float32 rows and returns ``(rows, width)`` float32 values with the model's own output
transform applied (probabilities for classifiers, values for regressors), the same numbers
Treelite's GTIL, and so Triton's FIL backend, computes before its class post-processing.

A model runs on its own library when installed (XGBoost, LightGBM), else on Treelite, the
library Triton's FIL backend itself loads every format with. All three predict through C
calls that release the GIL, and their prediction calls are safe to make from several
threads at once on one loaded model.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import logging
import math
import re
from pathlib import Path
from types import ModuleType
from typing import Any, Protocol

import numpy as np

from modelyard.errors import ConfigError, Internal, MissingDependency
from modelyard.types import Array

log = logging.getLogger("modelyard.runtimes.fil")

# Triton FIL's model_type values and the file each loads when default_model_filename is unset
DEFAULT_FILENAMES: dict[str, str] = {
    "xgboost": "xgboost.model",
    "xgboost_json": "xgboost.json",
    "xgboost_ubj": "xgboost.ubj",
    "lightgbm": "model.txt",
    "treelite_checkpoint": "checkpoint.tl",
}

# model_type -> the libraries that can run it, best first, with the extra that installs each
_LIBRARIES: dict[str, tuple[str, ...]] = {
    "xgboost": ("xgboost", "treelite"),
    "xgboost_json": ("xgboost", "treelite"),
    "xgboost_ubj": ("xgboost", "treelite"),
    "lightgbm": ("lightgbm", "treelite"),
    "treelite_checkpoint": ("treelite",),
}


class Forest(Protocol):
    """One loaded tree model. ``predict`` is thread-safe and releases the GIL."""

    library: str  # "xgboost 3.0.5": what executes it, for logs and docs
    num_features: int
    width: int  # values per row that predict returns (1, or the class count)

    def predict(self, x: Array) -> Array: ...


def _import(name: str) -> ModuleType | None:
    """The module, or None when it is not installed (or an import hook refuses it)."""
    try:
        return importlib.import_module(name)
    except ImportError:
        return None
    except Exception as exc:  # installed but broken, e.g. LightGBM without libgomp
        raise Internal(f"{name} is installed but failed to import: {exc}") from exc


def open_forest(
    path: Path,
    model_type: str,
    *,
    nthread: int = -1,
    allow_unknown_field: bool = False,
    library: str | None = None,
) -> Forest:
    """Load ``path`` as ``model_type`` on the first installed library that can run it.

    ``nthread`` is the threads each prediction may use (<= 0: the library's default, every
    core). ``library`` forces one ("xgboost", "lightgbm", "treelite"): tests use it to check
    that every route gives the same predictions. A missing library is a
    :class:`MissingDependency` naming the extra to install, raised here, at load time, never
    at server start.
    """
    candidates = _LIBRARIES[model_type]
    if library is not None:
        if library not in candidates:
            raise ConfigError(f"model_type '{model_type}' cannot run on {library}")
        candidates = (library,)
    if not path.is_file():
        raise ConfigError(f"unable to find model file '{path}'")
    legacy = model_type == "xgboost" and _is_legacy_binary(path)
    for name in candidates:
        module = _import(name)
        if module is None:
            continue
        if name == "xgboost":
            if legacy and not _xgboost_reads_legacy(module):
                log.info("xgboost %s cannot read legacy binary %s", module.__version__, path)
                continue
            return _XGBoostForest(module, path, nthread)
        if name == "lightgbm":
            return _LightGBMForest(module, path, nthread)
        return _TreeliteForest(module, path, model_type, nthread, legacy, allow_unknown_field)
    if legacy and "treelite" in candidates:
        raise MissingDependency(
            "treelite (XGBoost 3.1 and later cannot read the legacy binary format of "
            f"'{path.name}'; treelite can, or re-save the model as xgboost.json)",
            "treelite",
        )
    own = candidates[0]
    alternative = " (or treelite)" if len(candidates) > 1 else ""
    raise MissingDependency(f"{own}{alternative}, needed by model_type '{model_type}',", own)


def _is_legacy_binary(path: Path) -> bool:
    """XGBoost's JSON and UBJSON files open with '{'; the legacy binary format never does.

    XGBoost 2.1+ writes UBJSON to any file name without a .json suffix, so an
    ``xgboost.model`` saved by a recent XGBoost is UBJSON: it is read as what it is.
    """
    with path.open("rb") as f:
        return f.read(1) != b"{"


def _xgboost_reads_legacy(xgb: ModuleType) -> bool:
    """XGBoost removed the legacy binary reader in 3.1."""
    found = re.match(r"(\d+)\.(\d+)", str(getattr(xgb, "__version__", "")))
    return found is not None and (int(found[1]), int(found[2])) < (3, 1)


def _failed(path: Path, kind: str, exc: Exception) -> ConfigError:
    return ConfigError(f"failed to load '{path}' as {kind}: {exc}")


class _XGBoostForest:
    def __init__(self, xgb: ModuleType, path: Path, nthread: int) -> None:
        try:
            booster = xgb.Booster(model_file=str(path))
        except xgb.core.XGBoostError as exc:
            raise _failed(path, "an XGBoost model", exc) from None
        if nthread > 0:
            booster.set_param({"nthread": nthread})
        objective = json.loads(booster.save_config())["learner"]["objective"]["name"]
        # multi:softmax predicts class ids; FIL (Treelite) gives its softmax probabilities
        self._softmax = objective == "multi:softmax"
        self._booster = booster
        self._dense = _DensePredict.bind(xgb, booster, margin=self._softmax)
        self.library = f"xgboost {xgb.__version__}"
        self.num_features = int(booster.num_features())
        self.width = self.predict(np.zeros((1, self.num_features), np.float32)).shape[1]

    def predict(self, x: Array) -> Array:
        if self._dense is not None:
            out = self._dense(x)
        else:
            kind = "margin" if self._softmax else "value"
            out = np.asarray(self._booster.inplace_predict(x, predict_type=kind))
        out = out.reshape(len(x), -1)
        if self._softmax:
            e = np.exp(out - out.max(axis=1, keepdims=True))
            out = e / e.sum(axis=1, keepdims=True)
        return np.asarray(out, dtype=np.float32)


_U64P = ctypes.POINTER(ctypes.c_uint64)
_F32P = ctypes.POINTER(ctypes.c_float)
_PREDICT_FROM_DENSE = ctypes.CFUNCTYPE(
    ctypes.c_int,  # 0, or -1 with XGBGetLastError() set
    ctypes.c_void_p,  # BoosterHandle
    ctypes.c_char_p,  # the rows, as an __array_interface__ JSON document
    ctypes.c_char_p,  # the prediction config, JSON
    ctypes.c_void_p,  # proxy DMatrix (base margin): none
    ctypes.POINTER(_U64P),  # out: shape
    ctypes.POINTER(ctypes.c_uint64),  # out: number of dims
    ctypes.POINTER(_F32P),  # out: values, in a thread-local buffer of the booster
)
_LAST_ERROR = ctypes.CFUNCTYPE(ctypes.c_char_p)


class _DensePredict:
    """XGBoost's documented C entry point for dense rows, ``XGBoosterPredictFromDense``.

    ``Booster.inplace_predict`` ends in the same call (thread-safe and lock-free, per
    XGBoost), after probing its input for pandas, cuDF, Arrow and polars types. Where pandas
    is not installed, the probes are failed imports that cost ~100 µs per call, several times
    the prediction itself (``bench/trees.py``); calling the entry point directly on our own
    contiguous FP32 rows skips them. The GIL is released during the call.
    """

    def __init__(self, lib: Any, handle: Any, margin: bool) -> None:
        self._fn = _PREDICT_FROM_DENSE(("XGBoosterPredictFromDense", lib))
        self._error = _LAST_ERROR(("XGBGetLastError", lib))
        self._handle = handle
        config = {
            "type": 1 if margin else 0,  # 1: raw margins
            "training": False,
            "iteration_begin": 0,
            "iteration_end": 0,  # every tree
            "missing": float("nan"),
            "strict_shape": False,
            "cache_id": 0,
        }
        self._config = json.dumps(config).encode()

    @classmethod
    def bind(cls, xgb: ModuleType, booster: Any, margin: bool) -> _DensePredict | None:
        """The direct call on the library XGBoost loaded, or None to use inplace_predict."""
        lib = getattr(getattr(xgb, "core", None), "_LIB", None)
        handle = getattr(booster, "handle", None)
        if lib is None or handle is None:
            return None
        try:
            return cls(lib, handle, margin)
        except (AttributeError, TypeError):  # a build without the symbol
            return None

    def __call__(self, x: Array) -> Array:
        x = np.ascontiguousarray(x, dtype=np.float32)
        rows = (
            f'{{"data":[{x.ctypes.data},true],"shape":[{x.shape[0]},{x.shape[1]}],'
            '"strides":null,"typestr":"<f4","version":3}'
        ).encode()
        shape, ndim, values = _U64P(), ctypes.c_uint64(), _F32P()
        rc = self._fn(
            self._handle,
            rows,
            self._config,
            None,
            ctypes.byref(shape),
            ctypes.byref(ndim),
            ctypes.byref(values),
        )
        if rc != 0:
            message = self._error() or b"unknown error"
            raise Internal(f"xgboost prediction failed: {message.decode(errors='replace')}")
        dims = [int(shape[i]) for i in range(ndim.value)]
        size = math.prod(dims)
        if size == 0:
            return np.empty(dims, np.float32)
        # the buffer belongs to XGBoost and is reused by this thread's next call: copy it
        return np.ctypeslib.as_array(values, shape=(size,)).copy().reshape(dims)


class _LightGBMForest:
    def __init__(self, lgb: ModuleType, path: Path, nthread: int) -> None:
        try:
            self._booster = lgb.Booster(model_file=str(path))
        except lgb.basic.LightGBMError as exc:
            raise _failed(path, "a LightGBM model", exc) from None
        self._kwargs: dict[str, Any] = {"num_threads": nthread} if nthread > 0 else {}
        self.library = f"lightgbm {lgb.__version__}"
        self.num_features = int(self._booster.num_feature())
        self.width = self.predict(np.zeros((1, self.num_features), np.float32)).shape[1]

    def predict(self, x: Array) -> Array:
        out = self._booster.predict(x, **self._kwargs)
        return np.asarray(out, dtype=np.float32).reshape(len(x), -1)


class _TreeliteForest:
    def __init__(
        self,
        treelite: ModuleType,
        path: Path,
        model_type: str,
        nthread: int,
        legacy: bool,
        allow_unknown_field: bool,
    ) -> None:
        importlib.import_module("treelite.gtil")
        frontend = treelite.frontend
        try:
            if model_type == "treelite_checkpoint":
                model = treelite.Model.deserialize(str(path))
            elif model_type == "lightgbm":
                model = frontend.load_lightgbm_model(str(path))
            elif legacy:
                model = frontend.load_xgboost_model_legacy_binary(str(path))
            else:
                model = frontend.load_xgboost_model(
                    str(path),
                    format_choice="inspect",
                    allow_unknown_field=allow_unknown_field,
                )
        except treelite.TreeliteError as exc:
            raise _failed(path, f"model_type '{model_type}'", exc) from None
        self._gtil = treelite.gtil
        self._model = model
        self._nthread = nthread if nthread > 0 else -1
        self.library = f"treelite {treelite.__version__}"
        self.num_features = int(model.num_feature)
        self.width = self.predict(np.zeros((1, self.num_features), np.float32)).shape[1]

    def predict(self, x: Array) -> Array:
        # GTIL answers (rows, targets, classes) in the model's own float type
        out = self._gtil.predict(self._model, x, nthread=self._nthread)
        return np.asarray(out, dtype=np.float32).reshape(len(x), -1)
