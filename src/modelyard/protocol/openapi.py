"""The OpenAPI description of the HTTP API, shipped beside this module (``openapi.yaml``).

Users ask for a machine-readable description (client generators, API gateways, schemathesis),
and the fuzz suite tests the server against it. It is written as YAML because anchors keep
the versioned routes (``/versions/{version}``) from repeating their unversioned twins; the
server answers it as JSON, converted once, on the first request.
"""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import orjson
import yaml

SPEC_FILE = "openapi.yaml"


@functools.cache
def spec() -> dict[str, Any]:
    """The description as a dict (anchors resolved); read from the package data once."""
    text = resources.files(__package__).joinpath(SPEC_FILE).read_text(encoding="utf-8")
    doc: dict[str, Any] = yaml.safe_load(text)
    return doc


@functools.cache
def spec_json() -> bytes:
    """The description as the JSON body ``GET /v2/openapi.json`` answers."""
    return orjson.dumps(spec())
