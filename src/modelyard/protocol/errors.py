"""modelyard errors -> (HTTP status, body), for every protocol, in one place."""

from __future__ import annotations

import logging

import orjson

from modelyard.errors import ModelyardError

log = logging.getLogger("modelyard.protocol")


def v2_error(exc: BaseException, model: str | None = None) -> tuple[int, bytes]:
    """KServe v2 error body ``{"error": "..."}`` with the status the error type carries.

    Anything that is not a modelyard error is a bug or a runtime crash: a 500, logged with
    its traceback and the model it concerned.
    """
    if isinstance(exc, ModelyardError):
        status, message = int(exc.status), exc.message
        if status >= 500:
            log.error("model %s: %s", model or "-", message)
        else:
            log.info("model %s: %s", model or "-", message)
    else:
        status, message = 500, f"internal error: {type(exc).__name__}: {exc}"
        log.exception("unexpected error serving model %s", model or "-", exc_info=exc)
    return status, orjson.dumps({"error": message})
