"""SageMaker payloads and headers: TargetModel names, Triton's binary+json content type, MME.

Framework-free, shared by the server and any client:

* ``TargetModel`` (``X-Amzn-SageMaker-Target-Model``) names an artifact
  ``<model>_<version>.tar.gz``; the name splits on the *last* underscore and the version is
  numeric, as in the model store. A name without a numeric suffix (``m.tar.gz``, ``m``)
  means the model's default version.
* Triton's SageMaker front end carries binary tensors in one content type,
  ``application/vnd.sagemaker-triton.binary+json;json-header-size=N``: ``N`` is what the v2
  header ``Inference-Header-Content-Length`` says elsewhere. Any other content type is v2 JSON.
* The multi-model endpoint (MME) container contract's bodies: ``POST /models`` takes
  ``{"model_name", "url"}``; models are described as ``{"modelName", "modelUrl"}``. ``GET
  /models`` pages: the platform passes back a page's ``nextPageToken`` as the query parameter
  ``next_page_token``; no token in an answer means no more models. The token is opaque: here,
  the last name of the page (names are listed in sorted order), so a model loaded or
  unloaded between two calls neither repeats nor hides the others.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Final
from urllib.parse import parse_qs

import orjson

from modelyard.errors import InvalidArgument
from modelyard.names import check_model_name, model_name_fault

__all__ = [
    "BINARY_JSON",
    "CUSTOM_ATTRIBUTES_HEADER",
    "TARGET_MODEL_HEADER",
    "InvalidTargetModel",
    "binary_content_type",
    "header_length",
    "model_description",
    "models_page",
    "page_token",
    "parse_list_query",
    "parse_load_request",
    "parse_target_model",
    "target_model",
]

TARGET_MODEL_HEADER: Final = b"x-amzn-sagemaker-target-model"
CUSTOM_ATTRIBUTES_HEADER: Final = b"x-amzn-sagemaker-custom-attributes"  # accepted, not used
BINARY_JSON: Final = "application/vnd.sagemaker-triton.binary+json"
_BINARY_PREFIX: Final = (BINARY_JSON + ";json-header-size=").encode()
_ARCHIVE_SUFFIXES: Final = (".tar.gz", ".tgz")
_VERSION: Final = re.compile(r"[0-9]+")


class InvalidTargetModel(InvalidArgument):
    """A missing or unusable TargetModel: the platform refuses it before any model sees it."""


def parse_target_model(value: bytes | str | None) -> tuple[str, str]:
    """``(model, version)`` from a TargetModel; version ``""`` means the default version.

    ``m_2.tar.gz`` -> ``("m", "2")``; ``my_model.tar.gz`` and ``my_model`` ->
    ``("my_model", "")``. SageMaker allows a relative path (``dir/m_2.tar.gz``); the model is
    named by the artifact's file name.
    """
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    text = (value or "").strip()
    if not text:
        raise InvalidTargetModel(
            "the request has no target model: set TargetModel (header "
            "X-Amzn-SageMaker-Target-Model) to '<model>_<version>.tar.gz' or '<model>'"
        )
    name = text.rsplit("/", 1)[-1]
    for suffix in _ARCHIVE_SUFFIXES:
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    model, sep, version = name.rpartition("_")
    if not (sep and model and _VERSION.fullmatch(version)):
        model, version = name, ""
    fault = model_name_fault(model)
    if fault is not None:
        raise InvalidTargetModel(f"target model '{text}' does not name a model: {fault}")
    return model, str(int(version)) if version else ""


def target_model(model: str, version: str = "") -> str:
    """The TargetModel that names ``model`` (and ``version``): the inverse of the parser."""
    return f"{model}_{version}.tar.gz" if version else f"{model}.tar.gz"


def header_length(content_type: bytes | None, body_size: int) -> int | None:
    """The JSON header's length from Triton's binary+json content type; None for plain JSON.

    Raises InvalidArgument with Triton's texts when the content type names the binary form
    but not where it ends.
    """
    if not content_type:
        return None
    lowered = content_type.lower()
    at = lowered.find(_BINARY_PREFIX)
    if at < 0:
        return None
    text = content_type.decode("latin-1")
    if at != 0:
        raise InvalidArgument(
            f"expect MIME type for binary data starts with '{_BINARY_PREFIX.decode()}', got: {text}"
        )
    raw = content_type[len(_BINARY_PREFIX) :].split(b";", 1)[0].strip()
    if not raw.isdigit():
        raise InvalidArgument(f"Unable to parse inference header size, got: {raw.decode()}")
    length = int(raw)
    if length > body_size:
        raise InvalidArgument(
            f"inference header size should be in range (0, {body_size}), got: {length}"
        )
    return length


def binary_content_type(json_length: int) -> bytes:
    """The response content type for a v2 body whose JSON header is ``json_length`` bytes."""
    return _BINARY_PREFIX + str(json_length).encode()


def parse_load_request(body: bytes) -> tuple[str, str]:
    """``(model_name, url)`` from an MME ``POST /models`` body."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise InvalidArgument(f"failed to parse the load request JSON: {exc}") from None
    if type(doc) is not dict:
        raise InvalidArgument("the load request must be a JSON object")
    name, url = doc.get("model_name"), doc.get("url")
    if type(name) is not str:
        raise InvalidArgument("the load request needs 'model_name', the model's name")
    check_model_name(name)
    if type(url) is not str or not url:
        raise InvalidArgument("the load request needs 'url', the model's local folder")
    return name, url


def model_description(name: str, url: str) -> dict[str, Any]:
    """One model as the MME contract's List and Get Model answers show it."""
    return {"modelName": name, "modelUrl": url}


_TOKEN_PREFIX: Final = b"after:"


def page_token(last_name: str) -> str:
    """The ``nextPageToken`` of a page that ended with ``last_name`` (URL-safe, opaque)."""
    raw = base64.urlsafe_b64encode(_TOKEN_PREFIX + last_name.encode())
    return raw.rstrip(b"=").decode("ascii")


def _token_name(token: str) -> str:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        name = raw[len(_TOKEN_PREFIX) :].decode()
        # re-encoding must give the token back: no stray characters, padding or prefix
        if raw.startswith(_TOKEN_PREFIX) and page_token(name) == token:
            return name
    except (binascii.Error, ValueError):  # not base64, or not UTF-8
        pass
    raise InvalidArgument(
        f"next_page_token '{token}' is not a token this server issued: pass back the "
        "nextPageToken of the previous answer, or no token for the first page"
    )


def parse_list_query(query: bytes | str) -> tuple[str | None, int | None]:
    """``(start after this name, page size)`` from ``GET /models``' query string.

    ``next_page_token`` (the contract's parameter) is a ``nextPageToken`` this server
    issued; ``max_results`` a positive page size (absent: every model in one page, as
    Triton answers). Anything else in the query is ignored; a token or size that does not
    parse is InvalidArgument (400).
    """
    if isinstance(query, bytes):
        query = query.decode("latin-1")
    params = parse_qs(query, keep_blank_values=True)
    after = None
    tokens = params.get("next_page_token")
    if tokens and tokens[-1]:
        after = _token_name(tokens[-1])
    size = None
    sizes = params.get("max_results")
    if sizes:
        raw = sizes[-1].strip()
        if not raw.isdecimal() or int(raw) < 1:
            raise InvalidArgument(f"max_results must be a positive integer, got '{sizes[-1]}'")
        size = int(raw)
    return after, size


def models_page(
    urls: dict[str, str], after: str | None = None, size: int | None = None
) -> dict[str, Any]:
    """The List Models answer: the models named after ``after``, in name order, at most
    ``size`` of them, with ``nextPageToken`` when more follow."""
    names = sorted(n for n in urls if after is None or n > after)
    page = names if size is None else names[:size]
    doc: dict[str, Any] = {"models": [model_description(n, urls[n]) for n in page]}
    if len(page) < len(names):
        doc["nextPageToken"] = page_token(page[-1])
    return doc
