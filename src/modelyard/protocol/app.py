"""Composition root: settings -> manager -> routes -> one ASGI application.

Everything the server needs is built here, at start-up, and passed down; nothing is created
at import time and there are no globals, so several apps can live in one process (tests).
"""

from __future__ import annotations

import logging

import orjson

from modelyard.manager.manager import ManagerOptions, ModelManager
from modelyard.protocol._asgi import Receive, Scope, Send, respond
from modelyard.protocol.v2 import V2Routes
from modelyard.runtimes.base import RuntimeOptions
from modelyard.settings import ServerSettings

log = logging.getLogger("modelyard.server")


class ModelyardApp:
    """The ASGI application: lifespan loads and unloads models; HTTP goes to the route tables."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.manager = ModelManager(
            ManagerOptions(
                repository=settings.model_repository,
                autocomplete=settings.autocomplete,
                control_mode=settings.model_control_mode,
                startup_models=settings.load_models,
                runtime=RuntimeOptions(default_max_batch_size=settings.default_max_batch_size),
                inline_threshold_ns=int(settings.inline_threshold_us * 1000),
            )
        )
        self.v2 = V2Routes(self.manager, settings.max_input_size, settings.model_control_mode)
        self.v2.strict_readiness = settings.strict_readiness

    def begin_drain(self) -> None:
        """Readiness turns false at once; requests already in flight carry on."""
        self.v2.draining = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            if not await self.v2.dispatch(scope, receive, send):
                await respond(send, 404, orjson.dumps({"error": "Not Found"}))
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.manager.start()
                    failed = [r for r in self.manager.index() if r.get("state") != "READY"]
                    if failed and self.settings.exit_on_error:
                        raise RuntimeError(f"models failed to load (--exit-on-error): {failed}")
                except Exception as exc:  # a broken repository must still say why
                    log.exception("start-up failed")
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.manager.shutdown()
                await send({"type": "lifespan.shutdown.complete"})
                return


def build_app(settings: ServerSettings) -> ModelyardApp:
    return ModelyardApp(settings)
