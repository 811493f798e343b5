"""modelyard errors -> (HTTP status, body), for every protocol, in one place."""

from __future__ import annotations

import logging

import grpc
import orjson

from modelyard.errors import (
    AlreadyExists,
    ConfigError,
    InsufficientMemory,
    InvalidArgument,
    ModelTooLarge,
    ModelyardError,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    Unavailable,
    Unsupported,
)
from modelyard.wire.sagemaker import InvalidTargetModel

log = logging.getLogger("modelyard.protocol")


def _status_and_message(exc: BaseException, model: str | None) -> tuple[int, str]:
    """The status an error carries and its message, logged once: 5xx as errors, 4xx at debug.

    A refused request is the client's business (it gets the message): one INFO line per bad
    request would let any client flood the log. Failed loads are logged by the manager.

    Anything that is not a modelyard error is a bug or a runtime crash: a 500, logged with
    its traceback and the model it concerned.
    """
    if isinstance(exc, ModelyardError):
        status, message = int(exc.status), exc.message
        if status >= 500:
            log.error("model %s: %s", model or "-", message)
        else:
            log.debug("model %s: %s", model or "-", message)
    else:
        status, message = 500, f"internal error: {type(exc).__name__}: {exc}"
        log.exception("unexpected error serving model %s", model or "-", exc_info=exc)
    return status, message


def v2_error(exc: BaseException, model: str | None = None) -> tuple[int, bytes]:
    """KServe v2 error body ``{"error": "..."}`` with the status the error type carries."""
    status, message = _status_and_message(exc, model)
    return status, orjson.dumps({"error": message})


def challenge(exc: BaseException) -> list[tuple[bytes, bytes]]:
    """The headers an error answer carries besides its body: a 401 says how to authenticate
    (RFC 6750's ``WWW-Authenticate: Bearer``, with ``error="invalid_token"`` when the token
    sent is not known), whichever protocol the body is in."""
    if isinstance(exc, Unauthenticated):
        value = b'Bearer realm="modelyard"'
        if exc.invalid_token:
            value += b', error="invalid_token"'
        return [(b"www-authenticate", value)]
    return []


# -- SageMaker -----------------------------------------------------------------------------
# The runtime API (InvokeEndpoint, what boto3's ``sagemaker-runtime`` client calls) is
# rest-json: the error's name travels in ``x-amzn-ErrorType`` as ``Name:<namespace>``, and
# botocore keeps the part before the colon to pick ``client.exceptions.<Name>``. Statuses
# are the ones the service model declares for each error (botocore's sagemaker-runtime
# service-2.json).
_AWS_NAMESPACE = b":http://internal.amazon.com/coral/com.amazon.sagemaker/"
VALIDATION_ERROR = "ValidationError"  # 400: the platform refuses the request
MODEL_ERROR = "ModelError"  # 424: the model (container) answered 4xx/5xx
MODEL_NOT_READY = "ModelNotReadyException"  # 429: the target model is still loading
INTERNAL_FAILURE = "InternalFailure"  # 500: the platform itself failed
# access control (modelyard's; AWS's own names for a caller it does not know / may not act)
UNRECOGNIZED_CLIENT = "UnrecognizedClientException"  # 401: no or unknown bearer token
ACCESS_DENIED = "AccessDeniedException"  # 403: restricted API, token without the role
_STATUS = {
    VALIDATION_ERROR: 400,
    MODEL_ERROR: 424,
    MODEL_NOT_READY: 429,
    INTERNAL_FAILURE: 500,
    UNRECOGNIZED_CLIENT: 401,
    ACCESS_DENIED: 403,
}


def sagemaker_error(
    exc: BaseException, model: str | None = None
) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
    """An InvokeEndpoint error: ``(status, JSON body, headers)`` in SageMaker's form.

    * no or unusable TargetModel, or a target model the store does not hold: 400
      ``ValidationError`` (SageMaker's platform refuses what it cannot download);
    * still loading after ``--load-wait-timeout``, or no memory free now: 429
      ``ModelNotReadyException`` (the load goes on; retry);
    * anything else modelyard refuses (bad input, a broken model, a model bigger than the
      whole memory budget, a runtime failure): 424 ``ModelError`` with the container's view
      in ``OriginalStatusCode`` / ``OriginalMessage`` (507 for a model too large to load,
      the MME container contract's status for lack of memory);
    * no or an unknown bearer token: 401 ``UnrecognizedClientException``; a restricted API
      without its header or a token without the role: 403 ``AccessDeniedException``;
    * anything unexpected: 500 ``InternalFailure``.
    """
    status, message = _status_and_message(exc, model)
    if isinstance(exc, Unauthenticated):
        name = UNRECOGNIZED_CLIENT
        return _STATUS[name], orjson.dumps({"message": message}), _error_type(name) + challenge(exc)
    if isinstance(exc, PermissionDenied):
        name = ACCESS_DENIED
    elif isinstance(exc, InvalidTargetModel | NotFound):
        name = VALIDATION_ERROR
    elif isinstance(exc, Unavailable) and not isinstance(exc, ModelTooLarge):
        name = MODEL_NOT_READY
    elif isinstance(exc, ModelyardError):
        name = MODEL_ERROR
        original = 507 if isinstance(exc, ModelTooLarge) else status
        kind = "client" if original < 500 else "server"
        body = {
            "message": f'Received {kind} error ({original}) from model with message "{message}".',
            "OriginalStatusCode": original,
            "OriginalMessage": message,
        }
        return _STATUS[name], orjson.dumps(body), _error_type(name)
    else:
        name = INTERNAL_FAILURE
    return _STATUS[name], orjson.dumps({"message": message}), _error_type(name)


def _error_type(name: str) -> list[tuple[bytes, bytes]]:
    return [(b"x-amzn-ErrorType", name.encode() + _AWS_NAMESPACE)]


def sagemaker_container_error(exc: BaseException, model: str | None = None) -> tuple[int, bytes]:
    """An error on SageMaker's container face (``/ping``, ``/invocations``, ``/models``).

    Triton's body ``{"error": ...}``; the status the error carries (409 for a name already
    loaded, 404 for one that is not), except that a model that cannot be loaded for lack
    of memory is 507, so SageMaker unloads other models and tries again.
    """
    status, body = v2_error(exc, model)
    if isinstance(exc, InsufficientMemory):
        status = 507
    return status, body


# -- gRPC ----------------------------------------------------------------------------------
# Triton's TritonCodeToGrpcCode (its error codes and gRPC's share their names); a model too
# large for the whole memory budget is RESOURCE_EXHAUSTED, which clients do not retry
_GRPC_CODES: tuple[tuple[type[ModelyardError], grpc.StatusCode], ...] = (
    (ModelTooLarge, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (InvalidArgument, grpc.StatusCode.INVALID_ARGUMENT),
    (ConfigError, grpc.StatusCode.INVALID_ARGUMENT),
    (Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (NotFound, grpc.StatusCode.NOT_FOUND),
    (AlreadyExists, grpc.StatusCode.ALREADY_EXISTS),
    (Unavailable, grpc.StatusCode.UNAVAILABLE),
    (Unsupported, grpc.StatusCode.UNIMPLEMENTED),
)


def grpc_error(exc: BaseException, model: str | None = None) -> tuple[grpc.StatusCode, str]:
    """The gRPC status of an error and its message (the message is the one HTTP sends).

    Triton's codes: a bad request INVALID_ARGUMENT, an unknown model or version NOT_FOUND,
    a model not ready (loading, failed, draining) UNAVAILABLE, a feature not served
    UNIMPLEMENTED, anything else INTERNAL; modelyard's own refusals add UNAUTHENTICATED
    (no or unknown bearer token) and PERMISSION_DENIED (a token without the role, loading
    files switched off).
    """
    _, message = _status_and_message(exc, model)
    if isinstance(exc, ModelyardError):
        for kind, code in _GRPC_CODES:
            if isinstance(exc, kind):
                return code, message
    return grpc.StatusCode.INTERNAL, message
