"""The composition root: settings -> manager -> data plane -> front ends.

Everything the server needs is built here, at start-up, and passed down; nothing is created
at import time and there are no globals, so several servers can live in one process
(tests). :class:`Server` owns the models (``start``/``stop``) and the one
:class:`~modelyard.dataplane.DataPlane` every front end serves; :meth:`Server.front_ends`
is where a front end is chosen from the settings (the one place a new one plugs in).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from modelyard.dataplane import DataPlane, DataPlaneOptions
from modelyard.manager.manager import ManagerOptions, ModelManager
from modelyard.metrics import CustomMetrics, VersionSample, build_registry, render
from modelyard.protocol._access import build_policy, describe_address, exposure, is_loopback
from modelyard.protocol.app import ModelyardApp
from modelyard.protocol.status.board import StatusBoard
from modelyard.protocol.status.page import StatusRoutes
from modelyard.runtimes import children
from modelyard.runtimes.base import RuntimeOptions
from modelyard.runtimes.python.environments import EnvironmentOptions
from modelyard.scheduling.stats import LATENCY_BOUNDS_NS
from modelyard.server.lifecycle import FrontEnd
from modelyard.settings import ServerSettings

log = logging.getLogger("modelyard.server")


class Server:
    """One server: its models, its data plane and the HTTP application over it."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        # who may call what (docs/security.md); a malformed token file stops the start here
        self.access, self.access_warnings = build_policy(
            settings.http_restricted_api, settings.auth_token_file
        )
        self.custom_metrics = CustomMetrics()
        self.manager = ModelManager(manager_options(settings, self.custom_metrics))
        self.plane = DataPlane(
            self.manager,
            DataPlaneOptions(
                control_mode=settings.model_control_mode,
                strict_readiness=settings.strict_readiness,
                allow_load_files=settings.allow_model_load_files,
            ),
        )
        self.metrics = build_registry(
            self._metrics_snapshot, self.manager.counters, self.custom_metrics
        )
        # GET / and GET /v2/status (--http-status-page), read from the same counters
        self.status = (
            StatusRoutes(StatusBoard(self.manager, settings.model_control_mode))
            if settings.status_page
            else None
        )
        self.http = ModelyardApp(
            settings, self.plane, self.access, self.render_metrics, self, self.status
        )

    def front_ends(self, http_server: str = "modelyard") -> list[FrontEnd]:
        """The front ends ``settings`` ask for, in start order: HTTP last, so that once its
        port answers, every other port already does (scripts wait for the HTTP port).

        A new front end (gRPC) is built here from the settings, over ``self.plane``, and
        put before HTTP; ``lifecycle.serve`` starts, drains and stops it with the rest.
        """
        ends: list[FrontEnd] = []
        grpc = self.settings.grpc
        if grpc.enabled:
            from modelyard.protocol.grpc import GrpcFrontEnd

            address = grpc.address or self.settings.http_address
            ends.append(GrpcFrontEnd(self.plane, grpc, address, self.access.tokens))
        if http_server == "uvicorn":
            from modelyard.protocol._uvicorn import uvicorn_front_ends

            ends.extend(uvicorn_front_ends(self.http))
        else:
            from modelyard.protocol._server import HttpFrontEnd

            s = self.settings
            listeners = []
            if s.allow_metrics and s.metrics_port:
                listeners.append((s.http_address, s.metrics_port, self.http.handle_metrics))
            if s.allow_sagemaker:
                listeners.append((s.http_address, s.sagemaker_port, self.http.handle_sagemaker))
            ends.append(HttpFrontEnd(self.http, listeners=listeners))
        return ends

    # -- the models ------------------------------------------------------------------------
    async def start(self) -> None:
        """Load the models; raises when ``--exit-on-error`` says a failed load is fatal."""
        self.log_exposure()
        await self.manager.start()
        if self.status is not None:
            self.status.board.start()
        failed = [r for r in self.manager.index() if r.get("state") != "READY"]
        if failed and self.settings.exit_on_error:
            raise RuntimeError(f"models failed to load (--exit-on-error): {failed}")

    def begin_drain(self) -> None:
        """Readiness turns false on every front end at once; requests in flight carry on."""
        self.plane.begin_drain()

    async def stop(self) -> None:
        """Unload every model; then no child process outlives the server, whatever was
        still running (a worker hung in initialize or execute, an environment build): the
        last step runs even when the exit timeout cancels the unloads."""
        try:
            if self.status is not None:
                await self.status.board.stop()
            await self.manager.shutdown()
        finally:
            left = children.live_pids()
            if left:
                log.warning(
                    "killing %d child process(es) still running at exit: %s", len(left), left
                )
                children.kill_all()

    # -- metrics ---------------------------------------------------------------------------
    def render_metrics(self) -> tuple[bytes, str]:
        """Prometheus text: Triton's nv_inference_* families plus the model store's."""
        return render(self.metrics, self.custom_metrics)

    def _metrics_snapshot(self) -> list[VersionSample]:
        samples = []
        for name in sorted(self.manager.models):
            record = self.manager.models[name]
            for vrec in self.manager.stats_records(name):
                runner = vrec.runner
                samples.append(
                    VersionSample(
                        vrec.stats,
                        pending=runner.inflight if runner is not None else 0,
                        load_seconds=record.usage.load_seconds if runner is not None else None,
                        latency_bounds_ns=LATENCY_BOUNDS_NS,
                    )
                )
        return samples

    # -- what an operator is told ----------------------------------------------------------
    def log_exposure(self) -> None:
        """Say at start-up where the server listens and who may use what there: the one
        place an operator sees that the repository API is open to the network."""
        s = self.settings
        ports = [f"HTTP on {describe_address(s.http_address, s.http_port)}"]
        if s.allow_metrics and s.metrics_port:
            ports.append(f"metrics on {describe_address(s.http_address, s.metrics_port)}")
        if s.allow_sagemaker:
            ports.append(f"SageMaker on {describe_address(s.http_address, s.sagemaker_port)}")
        if s.grpc.enabled:
            grpc_address = s.grpc.address or s.http_address
            ports.append(f"gRPC on {describe_address(grpc_address, s.grpc.port)}")
        # load/unload: the v2 repository API in these modes, SageMaker's /models when it is on
        repository_api = s.model_control_mode in ("explicit", "on-demand") or s.allow_sagemaker
        summary, open_management = exposure(
            self.access, repository_api=repository_api, load_files=s.allow_model_load_files
        )
        log.info("access: %s: %s", ", ".join(ports), summary)
        for warning in self.access_warnings:
            log.warning("%s", warning)
        # on loopback too when files are allowed: every local user could run code as us
        http_warned = open_management and (
            s.allow_model_load_files or not is_loopback(s.http_address)
        )
        if http_warned:
            log.warning(
                "the model-repository API (load/unload%s) is open to anyone who can reach "
                "%s:%d%s: restrict it (--http-restricted-api model-repository:<header>=<value> "
                "or --auth-token-file), bind --http-address 127.0.0.1, or use "
                "--model-control-mode none (docs/security.md)",
                ", with uploaded files: code execution" if s.allow_model_load_files else "",
                s.http_address,
                s.http_port,
                " (and over gRPC)" if self._grpc_repository_open(repository_api) else "",
            )
        elif self._grpc_repository_open(repository_api):
            self._log_grpc_exposure()

    def _grpc_repository_open(self, repository_api: bool) -> bool:
        """gRPC's repository RPCs are served and neither a token nor its own restriction
        (``--grpc-restricted-protocol``, separate from HTTP's, as in Triton) closes them."""
        s = self.settings
        restricted = {group for group, _, _ in s.grpc.restricted_protocol}
        return (
            s.grpc.enabled
            and repository_api
            and not self.access.tokens
            and "model-repository" not in restricted
        )

    def _log_grpc_exposure(self) -> None:
        """HTTP's repository API is closed (or local), gRPC's is not: say so."""
        s = self.settings
        grpc_address = s.grpc.address or s.http_address
        if s.allow_model_load_files or not is_loopback(grpc_address) or self.access.enabled:
            log.warning(
                "the gRPC model-repository RPCs (load/unload) are open to anyone who can reach "
                "%s:%d: restrict them (--grpc-restricted-protocol "
                "model-repository:<key>=<value> or --auth-token-file), or --allow-grpc=false "
                "(docs/security.md)",
                grpc_address,
                s.grpc.port,
            )


def build_server(settings: ServerSettings) -> Server:
    return Server(settings)


def manager_options(settings: ServerSettings, custom_metrics: CustomMetrics) -> ManagerOptions:
    """The manager's options, every field from ``settings`` (the one set of defaults)."""
    return ManagerOptions(
        repository=settings.model_repository,
        autocomplete=settings.autocomplete,
        control_mode=settings.model_control_mode,
        startup_models=settings.load_models,
        runtime=RuntimeOptions(
            default_max_batch_size=settings.default_max_batch_size,
            custom_metrics=custom_metrics,
            python_execute_timeout=settings.python_execute_timeout,
            python_start_timeout=settings.model_load_timeout,
            python_envs=_environment_options(settings),
        ),
        inline_threshold_ns=int(settings.inline_threshold_us * 1000),
        load_wait_timeout=settings.load_wait_timeout,
        repository_poll_secs=settings.repository_poll_secs,
        memory_budget=settings.memory_budget,
        eviction_policy=settings.eviction_policy,
        cache_dir=settings.model_cache_dir,
        cache_max_bytes=settings.model_cache_size,
        gpu_limits=dict(settings.gpu_limits),
    )


def _environment_options(settings: ServerSettings) -> EnvironmentOptions:
    """Where Python models' environments come from (``--python-env-*``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return EnvironmentOptions(
        cache_dir=(settings.python_env_dir or Path(base) / "modelyard" / "envs").resolve(),
        build=settings.python_env_build,
        index_url=settings.python_env_index_url,
        # a local folder is taken from where the server started, not from the model's folder
        find_links=tuple(
            link if "://" in link else str(Path(link).resolve())
            for link in settings.python_env_find_links
        ),
        no_index=settings.python_env_no_index,
    )
