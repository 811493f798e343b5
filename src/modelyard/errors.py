"""The one exception tree of modelyard.

Every layer raises these; only ``protocol/errors.py`` turns them into a wire format
(KServe v2 ``{"error": ...}``, SageMaker, gRPC status). Each class carries the HTTP
status it maps to, so the mapping lives on the type and cannot drift per route::

    ModelyardError (500)
    ├── InvalidArgument (400)        bad request: shape, dtype, JSON, missing input
    │   ├── PayloadTooLarge (400)    body over --http-max-input-size (Triton answers 400)
    │   ├── UriTooLong (414)         request target over --http-max-url-size
    │   ├── HeadersTooLarge (431)    request line + headers over --http-max-header-size
    │   └── RequestTimeout (408)     headers not complete within --http-header-timeout
    ├── Unauthenticated (401)        no bearer token, or one the server does not know (--auth-token-file)
    ├── PermissionDenied (403)       a restricted API without its header, a token without the role,
    │                                or a feature switched off (load with files)
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
    ├── InvalidSetting (500)         start-up: a setting the server cannot start with (token file)
    ├── PortUnavailable (500)        start-up: a port that cannot be bound (in use, no permission)
    └── Internal (500)               a runtime failed while executing

Messages are complete sentences a user can act on; the wire layer never rewrites them.
"""

from __future__ import annotations

from http import HTTPStatus


class ModelyardError(Exception):
    """Base of every error modelyard raises on purpose."""

    status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR
    # raised by a model's own code (a Python model's TritonError), not by the server: some
    # answers depend on who failed (the generate extension answers a model's error with 400)
    from_model: bool = False
    # the scheduler already counted this failure in the model's statistics (an ensemble
    # step's error re-raised by the ensemble must not be counted twice)
    stats_recorded: bool = False

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidArgument(ModelyardError):
    status = HTTPStatus.BAD_REQUEST


class PayloadTooLarge(InvalidArgument):
    """Triton answers an oversize body with 400 and an explanatory message, not 413."""


class Unauthenticated(ModelyardError):
    """No usable credentials: the answer carries ``WWW-Authenticate: Bearer`` (RFC 6750).

    ``invalid_token`` is true when a token was sent but is not one the server knows, so the
    challenge can say ``error="invalid_token"``; false when none was sent.
    """

    status = HTTPStatus.UNAUTHORIZED

    def __init__(self, message: str, invalid_token: bool = False) -> None:
        super().__init__(message)
        self.invalid_token = invalid_token


class PermissionDenied(ModelyardError):
    """The caller is known (or no one is asked to be) but may not do this."""

    status = HTTPStatus.FORBIDDEN


class UriTooLong(InvalidArgument):
    """The request target is longer than ``--http-max-url-size``: refused while it arrives."""

    status = HTTPStatus.REQUEST_URI_TOO_LONG


class HeadersTooLarge(InvalidArgument):
    """The request line and headers pass ``--http-max-header-size``: refused while they
    arrive, so one client cannot make the server buffer (and re-copy) megabytes of them."""

    status = HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE


class RequestTimeout(InvalidArgument):
    """A request's headers did not arrive within ``--http-header-timeout`` (slowloris)."""

    status = HTTPStatus.REQUEST_TIMEOUT


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


class InvalidSetting(ModelyardError):
    """A server setting it refuses to start with (a malformed ``--auth-token-file``, ...).

    Raised while the application is built, before anything listens, and reported as one
    ``cannot start:`` line; never answered to a client.
    """


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


class PortUnavailable(ModelyardError):
    """A listening port the server cannot bind: one line naming it and the flag that moves it
    (``modelyard serve`` prints ``cannot start: ...`` and exits 1, no traceback)."""

    def __init__(self, address: str, port: int, flag: str, reason: str) -> None:
        super().__init__(
            f"cannot listen on {address}:{port}: {reason.lower()}; choose another port with {flag}"
        )
        self.port = port
