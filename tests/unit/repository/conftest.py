"""A tiny builder for model folders, and the fixtures recorded from a real Triton 2.51."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest

FIXTURES = Path(__file__).parent / "fixtures"

MakeModel = Callable[..., Path]


def load_fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    root.mkdir()
    return root


@pytest.fixture
def make_model(repo: Path) -> MakeModel:
    """``make_model(name, config_text_or_None, versions=("1",), filename="model.py")``."""

    def make(
        name: str,
        config: str | None,
        versions: Iterable[str] = ("1",),
        filename: str | None = "model.py",
    ) -> Path:
        model_dir = repo / name
        model_dir.mkdir()
        if config is not None:
            (model_dir / "config.pbtxt").write_text(config)
        for version in versions:
            (model_dir / version).mkdir()
            if filename:
                (model_dir / version / filename).write_text("")
        return model_dir

    return make
