"""SageMaker over HTTP, both faces: route tables plus translation onto the data plane.

* **Client face** (the main HTTP port, always on): ``POST /endpoints/{endpoint}/invocations``,
  what boto3's ``sagemaker-runtime`` ``invoke_endpoint`` sends (with ``endpoint_url``). The
  ``TargetModel`` header picks the model and version; errors come back in the runtime API's
  form (``x-amzn-ErrorType``), so boto3 raises ``ModelNotReadyException``, ``ModelError``,
  ``ValidationError``. The endpoint name is not checked: the server is the endpoint.
* **Container face** (``--allow-sagemaker=true``, ``--sagemaker-port``): what SageMaker's
  platform calls on a multi-model container, as Triton's SageMaker server answers it:
  ``/ping``, ``/invocations`` and the MME contract's ``/models`` API. ``/invocations`` serves
  the model ``SAGEMAKER_TRITON_DEFAULT_MODEL_NAME`` names, as Triton's does (SageMaker's
  variables are read once, at start, by ``cli/_sagemaker_env.py`` and passed in here).
  ``POST /models`` reads folders under the model roots only (``--sagemaker-model-root``).

Bodies are KServe v2 JSON, or v2 with binary tensors under Triton's content type
``application/vnd.sagemaker-triton.binary+json;json-header-size=N`` (``wire/sagemaker.py``).
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import orjson

from modelyard.dataplane import DataPlane
from modelyard.errors import AlreadyExists, InvalidArgument, ModelNotFound
from modelyard.protocol._http import JSON, HttpRequest, HttpResponse, Route, decoded_body, dispatch
from modelyard.protocol.errors import sagemaker_container_error, sagemaker_error
from modelyard.scheduling.signature import Signature
from modelyard.settings import DEFAULT_SAGEMAKER_MODEL_ROOT
from modelyard.types import InferRequest
from modelyard.wire.sagemaker import (
    TARGET_MODEL_HEADER,
    binary_content_type,
    header_length,
    model_description,
    models_page,
    parse_list_query,
    parse_load_request,
    parse_target_model,
)
from modelyard.wire.v2 import decode_infer_request, encode_infer_response

Handler = Callable[["SageMakerRoutes", HttpRequest, dict[str, str]], Awaitable[HttpResponse]]

INVOCATIONS = re.compile(r"/endpoints/(?P<endpoint>[^/]+)/invocations")
_LIST = re.compile(r"/models/?")
_ENSEMBLE = re.compile(rb'platform\s*:\s*"ensemble"')
_SYSTEM_FOLDERS = ("/dev", "/proc", "/sys")


class SageMakerRoutes:
    """``invoke_endpoint`` serves the client face; ``handle`` the container face."""

    def __init__(
        self,
        plane: DataPlane,
        max_input_size: int,
        default_model: str | None = None,
        model_roots: Sequence[str | Path] = (DEFAULT_SAGEMAKER_MODEL_ROOT,),
        ping_mode: str = "ready",
    ) -> None:
        self.plane = plane
        self.max_input_size = max_input_size
        # --sagemaker-model-root: POST /models loads only folders under one of these
        self.model_roots = tuple(Path(r) for r in model_roots)
        # SAGEMAKER_TRITON_PING_MODE: "live" (multi-model endpoints) answers /ping while the
        # process runs; "ready" only while it takes traffic (not during the drain)
        self.ping_mode = ping_mode
        # SAGEMAKER_TRITON_DEFAULT_MODEL_NAME: the model /invocations serves
        self.default_model = default_model or None
        self.urls: dict[str, str] = {}  # models loaded through POST /models -> their url
        self._loading: set[str] = set()
        _M = r"/models/(?P<model>[^/]+)"
        self.table: list[Route] = [
            Route("POST", re.compile(_M + "/invoke"), SageMakerRoutes.invoke_model),
            Route("POST", re.compile(r"/invocations"), SageMakerRoutes.invocations),
            Route("GET", re.compile(r"/ping"), SageMakerRoutes.ping),
            Route("GET", _LIST, SageMakerRoutes.list_models),
            Route("POST", _LIST, SageMakerRoutes.load_model),
            Route("GET", re.compile(_M), SageMakerRoutes.get_model),
            Route("DELETE", re.compile(_M), SageMakerRoutes.unload_model),
        ]

    # -- client face -----------------------------------------------------------------------
    async def invoke_endpoint(self, request: HttpRequest) -> HttpResponse:
        """``POST /endpoints/{endpoint}/invocations`` with a TargetModel."""
        if INVOCATIONS.fullmatch(request.path) is None:
            return HttpResponse(404, b'{"message":"Not Found"}')
        if request.method != "POST":
            return HttpResponse(405, b'{"message":"Method Not Allowed"}')
        model = None
        try:
            model, version = parse_target_model(request.headers.get(TARGET_MODEL_HEADER))
            return await self._infer(request, model, version)
        except Exception as exc:
            status, body, headers = sagemaker_error(exc, model)
            return HttpResponse(status, body, JSON, headers)

    # -- container face --------------------------------------------------------------------
    async def handle(self, request: HttpRequest, query: bytes | None = None) -> HttpResponse:
        """Route one container-face request; errors in Triton's ``{"error": ...}`` form.

        ``query`` is the request's query string, where the front end passes it: only List
        Models reads one (``next_page_token``, ``max_results``). Without it, List Models
        answers every model in one page.
        """
        if query and request.method in ("GET", "HEAD") and _LIST.fullmatch(request.path):
            try:
                after, size = parse_list_query(query)
            except Exception as exc:
                return HttpResponse(*sagemaker_container_error(exc))
            return self._list(after, size)
        return await dispatch(self, self.table, request, sagemaker_container_error)

    async def ping(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        ready = self.ping_mode == "live" or not self.plane.draining
        return HttpResponse(200 if ready else 400, b"")

    async def invocations(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        """The single-model form, on a model of the repository (:meth:`invocations_target`)."""
        model, version = self.invocations_target(request.headers.get(TARGET_MODEL_HEADER))
        return await self._infer(request, model, version)

    def invocations_target(self, target_model: bytes | None) -> tuple[str, str]:
        """``(model, version)`` that ``/invocations`` serves.

        1. ``SAGEMAKER_TRITON_DEFAULT_MODEL_NAME``, its default version: what Triton's
           SageMaker server does (it then ignores the TargetModel header, and so do we);
        2. else the TargetModel header (``<model>_<version>.tar.gz``; modelyard's own);
        3. else the repository's only model: what Triton's SageMaker entry point does when
           the variable is unset and the repository holds one model folder.
        """
        if self.default_model is not None:
            return self.default_model, ""
        if target_model and target_model.strip():
            return parse_target_model(target_model)
        names = self.plane.repository_models()
        if len(names) == 1:
            return names[0], ""
        raise InvalidArgument(
            "/invocations does not know which model to serve: set "
            "SAGEMAKER_TRITON_DEFAULT_MODEL_NAME, send X-Amzn-SageMaker-Target-Model, or "
            f"serve a repository with one model (this one has {len(names)})"
        )

    async def load_model(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        name, url = parse_load_request(decoded_body(request, self.max_input_size))
        if name in self.urls or name in self._loading:
            raise AlreadyExists(f"model '{name}' is already loaded")
        self._loading.add(name)
        try:
            folder, companions = await asyncio.to_thread(model_folder, url, self.model_roots)
            await self.plane.register(name, folder, companions)
        finally:
            self._loading.discard(name)
        self.urls[name] = url
        return HttpResponse(200, b"")

    async def list_models(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        """Every model loaded through this API, in one page (so no ``nextPageToken``)."""
        return self._list(None, None)

    def _list(self, after: str | None, size: int | None) -> HttpResponse:
        """A page of the models loaded through this API, in name order (``models_page``)."""
        urls = {n: u for n, u in self.urls.items() if self._has(n)}
        return HttpResponse(200, orjson.dumps(models_page(urls, after, size)))

    async def get_model(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        name = self._known(p["model"])
        return HttpResponse(200, orjson.dumps(model_description(name, self.urls[name])))

    async def unload_model(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        name = self._known(p["model"])
        try:
            await self.plane.deregister(name)
        finally:
            self.urls.pop(name, None)
        return HttpResponse(200, b"")

    async def invoke_model(self, request: HttpRequest, p: dict[str, str]) -> HttpResponse:
        name = self._known(p["model"])
        return await self._infer(request, name, "")

    # -- shared ----------------------------------------------------------------------------
    def _has(self, name: str) -> bool:
        return name in self.urls and self.plane.is_registered(name)

    def _known(self, name: str) -> str:
        if not self._has(name):
            raise ModelNotFound(name, f"model '{name}' is not loaded")
        return name

    async def _infer(self, request: HttpRequest, model: str, version: str) -> HttpResponse:
        """The model is found (loaded on demand) before the body is decoded, as in v2."""

        def decode(_: Signature) -> InferRequest:
            body = decoded_body(request, self.max_input_size)
            length = header_length(request.headers.get(b"content-type"), len(body))
            return decode_infer_request(body, length, model, version)

        infer_request, response = await self.plane.infer(model, version, decode)
        out, json_len = encode_infer_response(
            response, infer_request.outputs, infer_request.binary_data_output
        )
        return HttpResponse(200, out, JSON if json_len is None else binary_content_type(json_len))


def model_folder(url: str, roots: Sequence[Path]) -> tuple[Path, list[Path]]:
    """The model folder a load request's ``url`` names, and the model folders beside it
    (blocking: reads the disk).

    As Triton's SageMaker server reads ``/opt/ml/models/<hash>/model``: the folder itself
    when it is a model folder (``config.pbtxt``, or only version folders); otherwise the one
    model folder inside it, or, when it holds several, the ensemble among them, the entry
    point, whose steps are the others. Folder names do not matter: the model is served
    under the request's ``model_name``.

    Only folders under one of ``roots`` (``--sagemaker-model-root``) are read, checked
    after links and ``..`` are resolved; errors name the url as sent and nothing found on
    disk, so a request cannot learn what a folder holds.
    """
    path = _under_roots(url, roots)
    if (path / "config.pbtxt").is_file():
        return path, []
    try:
        models = sorted(
            c for c in path.iterdir() if c.is_dir() and not c.name.isdigit() and c.name[0] != "."
        )
    except OSError:
        raise InvalidArgument(f"model url '{url}' cannot be read") from None
    if not models:
        return path, []
    if len(models) == 1:
        return models[0], []
    ensembles = [m for m in models if _is_ensemble(m)]
    if len(ensembles) == 1:
        return ensembles[0], [m for m in models if m != ensembles[0]]
    if not ensembles:
        raise InvalidArgument(
            f"model url '{url}' holds {len(models)} models and none is an ensemble: a "
            "folder with several models is served through the ensemble that combines them"
        )
    raise InvalidArgument(
        f"model url '{url}' holds {len(ensembles)} ensembles; put one entry point per model"
    )


def _under_roots(url: str, roots: Sequence[Path]) -> Path:
    """``url`` resolved (links, ``..``), when it is a folder under one of ``roots``."""
    refused = InvalidArgument(
        f"model url '{url}' is not a folder under the model root"
        f" ({', '.join(str(r) for r in roots) or 'none configured'}; "
        "--sagemaker-model-root)"
    )
    if "\0" in url or not os.path.isabs(url):
        raise refused
    path = Path(os.path.realpath(url))
    if any(str(path) == f or str(path).startswith(f + "/") for f in _SYSTEM_FOLDERS):
        raise refused
    for root in roots:
        real_root = Path(os.path.realpath(root))
        if path != real_root and path.is_relative_to(real_root):
            break
    else:
        raise refused
    if not path.is_dir():
        raise InvalidArgument(f"model url '{url}' is not a folder")
    return path


def _is_ensemble(folder: Path) -> bool:
    try:
        return _ENSEMBLE.search((folder / "config.pbtxt").read_bytes()) is not None
    except OSError:
        return False
