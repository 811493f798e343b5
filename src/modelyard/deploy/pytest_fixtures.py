"""pytest plugin that ``modelyard test`` loads into the pytest files of a model's tests.

    def test_batch_of_eight(modelyard_artifact, modelyard_server):
        server = modelyard_server(modelyard_artifact.repository)  # a server of its own, or
        client = tritonclient.http.InferenceServerClient(modelyard_artifact.url)  # the shared one

``modelyard_artifact`` describes what is under test: the artifact, its model and version,
its sha256, the store folder holding exactly it (``repository``) and the URL
(``host:port``) of the server ``modelyard test`` started on that store. Outside
``modelyard test`` the tests that use it are skipped.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = ["ArtifactUnderTest", "modelyard_artifact"]


@dataclass(frozen=True, slots=True)
class ArtifactUnderTest:
    url: str  # host:port of the running server (tritonclient's form)
    repository: Path  # a store folder holding exactly the artifact(s) under test
    artifact: Path
    model: str
    version: str
    sha256: str
    # headers the server needs on each request (restricted APIs, a bearer token passed with
    # --server-arg), for the test's client: tritonclient's ``headers=``
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def base_url(self) -> str:
        return f"http://{self.url}"


@pytest.fixture
def modelyard_artifact() -> ArtifactUnderTest:
    env = os.environ
    if "MODELYARD_TEST_URL" not in env:
        pytest.skip("needs `modelyard test`, which serves the artifact under test")
    return ArtifactUnderTest(
        url=env["MODELYARD_TEST_URL"],
        repository=Path(env["MODELYARD_TEST_REPOSITORY"]),
        artifact=Path(env["MODELYARD_TEST_ARTIFACT"]),
        model=env["MODELYARD_TEST_MODEL"],
        version=env.get("MODELYARD_TEST_VERSION", ""),
        sha256=env.get("MODELYARD_TEST_SHA256", ""),
        headers=json.loads(env.get("MODELYARD_TEST_HEADERS") or "{}"),
    )
