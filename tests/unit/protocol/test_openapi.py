"""The published OpenAPI description and the server's route tables say the same thing.

Each operation names the handler it reaches (``x-modelyard-handler``); a path written from
the description's template must be routed (by the server's own ``match_route``) to exactly
that handler, and every route of every table must be reached by some described operation.
A route added, renamed or removed without its description fails here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import schemathesis

from modelyard.protocol._http import Route, match_route
from modelyard.protocol.openapi import spec, spec_json
from modelyard.server.compose import build_server
from modelyard.settings import ServerSettings

METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
# values for the path parameters: a plain model name and version, a SageMaker endpoint
SAMPLES = {"model": "some_model", "version": "3", "endpoint": "my-endpoint"}


def operations() -> list[tuple[str, str, str, str]]:
    """``(face, METHOD, path template, handler)`` for every operation described."""
    out = []
    for template, item in spec()["paths"].items():
        servers = item.get("servers") or []
        face = (
            "sagemaker" if any("--sagemaker-port" in s["description"] for s in servers) else "main"
        )
        for method in METHODS:
            if method in item:
                out.append((face, method.upper(), template, item[method]["x-modelyard-handler"]))
    return out


def concrete(template: str) -> str:
    return re.sub(r"\{(\w+)\}", lambda m: SAMPLES[m.group(1)], template)


@pytest.fixture(scope="module")
def tables(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Route]]:
    repo = tmp_path_factory.mktemp("repo")
    settings = ServerSettings(model_repository=str(repo), model_cache_dir=repo / "cache")
    return build_server(settings).http.routes()


def test_the_description_is_valid_openapi_3_with_unique_operation_ids() -> None:
    doc = spec()
    assert doc["openapi"].startswith("3.")
    schemathesis.openapi.from_dict(doc).validate()  # against OpenAPI 3.0's own schema
    ids = [doc["paths"][t][m.lower()]["operationId"] for _, m, t, _ in operations()]
    assert len(ids) == len(set(ids))
    assert spec_json().startswith(b"{")


@pytest.mark.parametrize(("face", "method", "template", "handler"), operations())
def test_every_described_operation_reaches_its_handler(
    tables: dict[str, list[Route]], face: str, method: str, template: str, handler: str
) -> None:
    route, params, _ = match_route(tables[face], method, concrete(template))
    assert route is not None, f"{method} {template} is described but not served"
    assert route.handler.__name__ == handler
    expected = {k: SAMPLES[k] for k in re.findall(r"\{(\w+)\}", template)}
    assert {k: v for k, v in params.items() if k in SAMPLES} == expected


def test_every_route_is_described(tables: dict[str, list[Route]]) -> None:
    reached: set[tuple[str, int]] = set()
    for face, method, template, _ in operations():
        route, _, _ = match_route(tables[face], method, concrete(template))
        if route is not None:
            reached.add((face, id(route)))
    missing = [
        f"{face}: {r.method} {r.pattern.pattern} ({r.handler.__name__})"
        for face, table in tables.items()
        for r in table
        if (face, id(r)) not in reached
    ]
    assert not missing, f"routes the OpenAPI description does not describe: {missing}"


def test_the_description_ships_as_package_data() -> None:
    # hatch packages the whole src/modelyard folder; the file must sit beside the module
    import modelyard.protocol.openapi as module

    assert (Path(module.__file__).parent / "openapi.yaml").is_file()


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [v for k, v in node.items() if k == "$ref"] + [
            r for v in node.values() for r in _refs(v)
        ]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_reference_resolves() -> None:
    doc = spec()
    for ref in _refs(doc):
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        assert node, ref
