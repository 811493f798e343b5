"""The running worker, reachable from ``triton_python_backend_utils`` without an import cycle."""

from __future__ import annotations

import logging
import sys
from typing import Any

_worker: Any | None = None
_decoupled = False
_model_dir = ""


def install(worker: Any, decoupled: bool, model_dir: str = "") -> None:
    global _worker, _decoupled, _model_dir
    _worker = worker
    _decoupled = decoupled
    _model_dir = model_dir


def model_dir() -> str:
    return _model_dir


def worker() -> Any:
    if _worker is None:
        raise RuntimeError(
            "triton_python_backend_utils needs a running model worker: this call only works "
            "inside a model served by modelyard (or Triton)"
        )
    return _worker


def decoupled() -> bool:
    return _decoupled


def log(level: int, message: str) -> None:
    frame = sys._getframe(2)
    where = f"{frame.f_code.co_filename.rsplit('/', 1)[-1]}:{frame.f_lineno}"
    if _worker is None:
        logging.getLogger("triton_python_backend_utils").log(
            (logging.INFO, logging.WARNING, logging.ERROR, logging.DEBUG)[level % 4], message
        )
        return
    _worker.log(level, message, where)
