"""The bundled demo repository: reproducible from its builder, and the README's code runs."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from modelyard.testing import running_server

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "examples" / "demo_repository"


def test_demo_repository_matches_its_builder(tmp_path: Path) -> None:
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        from build_demo import build
    finally:
        sys.path.remove(str(ROOT / "examples"))
    build(tmp_path)
    built = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(DEMO) for p in DEMO.rglob("*") if p.is_file())
    assert built == committed
    for rel in built:
        assert (tmp_path / rel).read_bytes() == (DEMO / rel).read_bytes(), rel


def test_readme_client_example_runs_against_the_demo() -> None:
    readme = (ROOT / "README.md").read_text()
    block = re.findall(r"```python\n(.*?)```", readme, re.S)[0]
    with running_server(DEMO) as server:
        code = block.replace("127.0.0.1:8000", server.url).replace("print(", "_ = (")
        namespace: dict[str, object] = {}
        exec(compile(code, "README.md", "exec"), namespace)
        out = namespace["result"].as_numpy("OUTPUT0")  # type: ignore[attr-defined]
        assert out.tolist() == [[float(i + 1) for i in range(16)]]
