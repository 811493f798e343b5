"""``DataPlane``: the server's one answer to each KServe v2 question, whatever the transport.

Front ends (``protocol/v2.py`` and ``protocol/sagemaker.py`` over HTTP, gRPC) translate
their transport to a call here and the result (or the exception, from ``modelyard.errors``)
back; every rule lives here once: readiness and the drain, metadata, statistics and their
texts, the control-mode check and the load refusals, and the request path's one ordering
rule.

The request path. ``infer``/``open_stream``/``stream`` take the model's name and version
and a ``decode`` callable that turns the transport's body into an :class:`InferRequest`,
given the model's signature. They find the runner first (loading the model in on-demand
mode), so an unknown model is reported before a malformed body, as Triton does; then call
``decode`` synchronously; then run the request, with no ``await`` between finding the runner
and the runner counting the request in flight: a model found loaded and idle may be
evicted at any ``await``, and an in-flight request is what keeps it (``manager.runner_for``).
That rule is kept here, and only here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelyard.dataplane._load_rules import check_model_control, refuse_code_from_request
from modelyard.dataplane.metadata import (
    ModelMetadata,
    ServerMetadata,
    model_metadata,
    server_metadata,
)
from modelyard.errors import InvalidArgument
from modelyard.manager.manager import ModelManager
from modelyard.names import check_model_name
from modelyard.scheduling.signature import Signature
from modelyard.scheduling.stats import ModelStats
from modelyard.types import InferRequest, InferResponse

# turns a transport's request into an InferRequest, given the model's signature; called
# once, synchronously, after the runner is found (it raises InvalidArgument on a bad body)
Decode = Callable[[Signature], InferRequest]


@dataclass(frozen=True, slots=True, kw_only=True)
class DataPlaneOptions:
    """What the data plane is told (defaults live in ``ServerSettings`` alone)."""

    control_mode: str  # --model-control-mode: which modes serve the repository API
    strict_readiness: bool  # --strict-readiness: ready only when every model is READY
    # --allow-model-load-files: the load API's file: parameters (and an absolute
    # EXECUTION_ENV_PATH in a config override) run code sent over the network
    allow_load_files: bool


class DataPlane:
    """The v2 API over one :class:`ModelManager`, shared by every front end."""

    def __init__(self, manager: ModelManager, options: DataPlaneOptions) -> None:
        self.manager = manager
        self.options = options
        self.draining = False

    # -- health ----------------------------------------------------------------------------
    def begin_drain(self) -> None:
        """Readiness turns false at once (every front end's); requests in flight carry on."""
        self.draining = True

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Taking traffic: not draining and, with ``--strict-readiness``, every model READY."""
        if self.draining:
            return False
        if self.options.strict_readiness:
            return all(row.get("state") == "READY" for row in self.manager.index())
        return True

    async def model_ready(self, name: str, version: str = "") -> bool:
        """Loaded, or (on-demand) loadable with a valid config: a request would be served."""
        return await self.manager.is_ready(name, version)

    # -- metadata --------------------------------------------------------------------------
    def server_metadata(self) -> ServerMetadata:
        return server_metadata()

    async def model_metadata(self, name: str, version: str = "") -> ModelMetadata:
        """Triton's model metadata; on-demand, read from the config without loading."""
        config = await self.manager.config_for(name, version)
        versions = [version] if version else self.manager.served_versions(name)
        return model_metadata(config, versions)

    async def model_config(self, name: str, version: str = "") -> Any:
        """The completed ``model_config_pb2.ModelConfig`` message (front ends encode it)."""
        return await self.manager.config_for(name, version)

    def model_statistics(self, name: str | None = None, version: str = "") -> list[ModelStats]:
        """Per-version statistics (every model's when ``name`` is None); InvalidArgument
        with Triton's texts for a model, or a version of it, that has none."""
        records = self.manager.stats_records(name)
        if version:
            records = [r for r in records if r.version == version]
        if name is not None and not records:
            known = self.manager.models.get(name)
            raise InvalidArgument(
                f"requested model version is not available for model '{name}'"
                if version and known is not None and known.default is not None
                else f"requested model '{name}' is not available"
            )
        return [r.stats for r in records]

    # -- the repository extension ----------------------------------------------------------
    def repository_index(self, ready_only: bool = False) -> list[dict[str, str]]:
        """Rows of ``name``, ``version``, ``state`` and (when not ready) ``reason``."""
        return self.manager.index(ready_only)

    def check_model_control(self) -> None:
        """Unavailable unless the control mode serves load/unload (``explicit``,
        ``on-demand``). ``load`` and ``unload`` check it themselves; a front end calls it
        first when it must answer it before reading the request's body (as HTTP does)."""
        check_model_control(self.options.control_mode)

    def check_load(self, name: str, config: str | None, with_files: bool) -> None:
        """The checks ``load`` makes before anything is decoded or written: the control
        mode, then (without ``--allow-model-load-files``) PermissionDenied for ``file:``
        parameters or an absolute ``EXECUTION_ENV_PATH``. For front ends that must refuse
        before decoding the files (HTTP's base64); ``load`` repeats it."""
        check_model_control(self.options.control_mode)
        if not self.options.allow_load_files:
            refuse_code_from_request(name, with_files, config)

    async def load(
        self, name: str, config: str | None = None, files: Mapping[str, bytes] | None = None
    ) -> None:
        """Load (or reload) a model: ``config`` is a JSON ModelConfig replacing
        config.pbtxt, ``files`` (path -> contents, Triton's ``file:`` parameters without the
        prefix) replace the model's files. Raises when the load is refused or fails."""
        self.check_load(name, config, bool(files))
        check_model_name(name)
        await self.manager.load(name, config, dict(files) if files else None)

    async def unload(self, name: str) -> None:
        check_model_control(self.options.control_mode)
        await self.manager.unload(name)

    # -- models a platform registers (SageMaker's MME API) ---------------------------------
    async def register(self, name: str, folder: Path, companions: Sequence[Path] = ()) -> None:
        """Serve the model in ``folder`` under ``name`` (its companions: an ensemble's steps)."""
        await self.manager.register(name, folder, companions)

    async def deregister(self, name: str) -> None:
        await self.manager.deregister(name)

    def is_registered(self, name: str) -> bool:
        record = self.manager.models.get(name)
        return record is not None and record.registered

    def repository_models(self) -> list[str]:
        """The models the repository holds (not the registered ones), by name."""
        return [
            n for n, r in self.manager.models.items() if r.source is not None and not r.registered
        ]

    # -- inference -------------------------------------------------------------------------
    async def infer(
        self, name: str, version: str, decode: Decode
    ) -> tuple[InferRequest, InferResponse]:
        """One request, one response: ``(the request decode made, the response)``."""
        runner = await self.manager.runner_for(name, version)
        request = decode(runner.signature)
        return request, await runner.infer(request)

    async def open_stream(
        self, name: str, version: str, decode: Decode
    ) -> tuple[InferRequest, AsyncIterator[InferResponse]]:
        """A decoupled model's responses (a plain model's one), for a front end that answers
        errors found before the first response (unknown model, bad body, validation) apart
        from the model's own (HTTP's generate extension). Those first errors are raised
        here; the model's come from the iterator.

        The caller must start iterating before it awaits anything else (the request
        counts as in flight from its first ``anext``), and close the iterator when it
        stops early. :meth:`stream` does both.
        """
        runner = await self.manager.runner_for(name, version)
        request = decode(runner.signature)
        return request, runner.stream(request)  # validates now; runs at the first anext

    async def stream(self, name: str, version: str, decode: Decode) -> AsyncIterator[InferResponse]:
        """:meth:`open_stream` as one iterator: every error is raised from it."""
        _, responses = await self.open_stream(name, version, decode)
        try:
            async for response in responses:
                yield response
        finally:
            aclose = getattr(responses, "aclose", None)
            if aclose is not None:
                await aclose()
