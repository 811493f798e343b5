"""The one exception tree of modelyard.

Every layer raises these; only ``protocol/errors.py`` turns them into a wire format
(KServe v2 ``{"error": ...}``, SageMaker, gRPC status). Each class carries the HTTP
status it maps to, so the mapping lives on the type and cannot drift per route::

    ModelyardError (500)
    ├── InvalidArgument (400)        bad request: shape, dtype, JSON, missing input
    │   └── PayloadTooLarge (400)    body over --http-max-input-size (Triton answers 400)
    ├── NotFound (404)
    │   ├── ModelNotFound (404)      unknown model, Triton's wording
    │   └── VersionNotFound (404)    unknown version of a known model
    ├── AlreadyExists (409)          registering a model name that is taken
    ├── Unavailable (503)            known model that is not ready (loading, failed, draining)
    │   ├── MemoryBusy (503)         a load that fits the budget waited --load-wait-timeout for
    │   │                            busy models to free memory; retry (SageMaker: 429)
    │   └── InsufficientMemory (503) a load that cannot fit even after evicting every evictable
    │       │                        model (platform-registered ones hold it; SageMaker: 507)
    │       └── ModelTooLarge (400)  a model bigger than the whole budget: retrying cannot help
    ├── ConfigError (400)            a config.pbtxt that Triton would reject; names file:line
    │   └── EnvironmentUnusable (400) a Python model's environment that cannot run its worker
    ├── MissingDependency (500)      an optional extra is not installed; message has the pip command
    ├── Unsupported (501)            a protocol feature modelyard does not implement (e.g. br bodies)
    └── Internal (500)               a runtime failed while executing

Messages are complete sentences a user can act on; the wire layer never rewrites them.
"""

from __future__ import annotations

from http import HTTPStatus


class ModelyardError(Exception):
    """Base of every error modelyard raises on purpose."""

    status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgument(ModelyardError):
    status = HTTPStatus.BAD_REQUEST


class PayloadTooLarge(InvalidArgument):
    """Triton answers an oversize body with 400 and an explanatory message, not 413."""


class NotFound(ModelyardError):
    status = HTTPStatus.NOT_FOUND


class ModelNotFound(NotFound):
    def __init__(self, name: str, message: str | None = None) -> None:
        super().__init__(message or f"Request for unknown model: '{name}' is not found")
        self.name = name


class VersionNotFound(NotFound):
    def __init__(self, name: str, version: str | int) -> None:
        super().__init__(f"Request for unknown model: '{name}' version {version} is not found")
        self.name = name
        self.version = version


class AlreadyExists(ModelyardError):
    status = HTTPStatus.CONFLICT


class Unavailable(ModelyardError):
    status = HTTPStatus.SERVICE_UNAVAILABLE


class MemoryBusy(Unavailable):
    """A model that fits waited ``--load-wait-timeout`` for models serving requests to go idle.

    Not ``InsufficientMemory``: memory will free as requests finish, so the container face
    answers 503 (not 507, which tells SageMaker to unload models) and the runtime face 429.
    """


class InsufficientMemory(Unavailable):
    """The budget cannot take a model even after evicting every model that may be evicted;
    SageMaker's container face answers 507 so the platform unloads models itself."""


class ModelTooLarge(InsufficientMemory):
    """A model that cannot fit even alone; ``needed`` is the size that showed it, when known
    (the server books it, so the next request is refused with the same figures)."""

    status = HTTPStatus.BAD_REQUEST

    def __init__(self, message: str, needed: int | None = None) -> None:
        super().__init__(message)
        self.needed = needed


class ConfigError(ModelyardError):
    """A model configuration Triton would refuse; the message names the file (and line)."""

    status = HTTPStatus.BAD_REQUEST


class EnvironmentUnusable(ConfigError):
    """A Python model's environment (EXECUTION_ENV_PATH, embedded, requirements.txt) that
    cannot run its worker: missing interpreter, wrong Python, no numpy, build switched off."""


class MissingDependency(ModelyardError):
    def __init__(self, package: str, extra: str) -> None:
        super().__init__(
            f"{package} is not installed; install it with: pip install 'modelyard[{extra}]'"
        )


class Unsupported(ModelyardError):
    status = HTTPStatus.NOT_IMPLEMENTED


class DecoupledModel(Unsupported):
    """A single-response path (HTTP /infer, SageMaker, BLS without ``decoupled=True``)
    reached a decoupled model; ``model`` names it so each caller can say it its own way."""

    def __init__(self, message: str, model: str = "") -> None:
        super().__init__(message)
        self.model = model


class Internal(ModelyardError):
    status = HTTPStatus.INTERNAL_SERVER_ERROR
