"""Replays requests recorded from NVIDIA Triton 2.51's Python backend and expects Triton's answers.

The recording (fixtures/triton_python.json, made by fixtures/record_triton_python.py) ran Triton
on the committed repository python_models/ (Triton-style ``model.py`` models: add/sub, strings,
optional inputs, BLS, async, decoupled, custom metrics, auto-complete, errors, ``initialize``
args, logging); the same folder, copied, is served here by modelyard in ``none`` mode (Triton's
default: every model loaded at start).

* ``independent`` cases stand alone: one server for all of them, any order.
* ``stateful`` cases (statistics, custom metric values) were recorded first, in order, on a
  fresh Triton: they are replayed the same way on a fresh modelyard, in one test.

Compared per case: status, content encoding, body (JSON parsed; binary-tensor responses as their
JSON header plus the tensor bytes; server-sent events verbatim) and, for binary tensors and
server-sent events, the content type. Volatile
fields are normalised on both sides: durations (``ns``) and ``last_inference`` in statistics,
and the repository's absolute path (it shows in ``initialize`` args and Python tracebacks).
Cases where modelyard answers differently on purpose go in DIFFERENT with the reason.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from modelyard.testing import RunningServer, running_server

HERE = Path(__file__).parent
FIXTURE = HERE / "fixtures" / "triton_python.json"
MODELS = HERE / "python_models"
RECORDING: dict[str, Any] = json.loads(FIXTURE.read_text())
CASES: dict[str, dict[str, Any]] = {
    c["name"]: c for c in RECORDING["cases"] if c["group"] == "independent"
}
STATEFUL: list[dict[str, Any]] = [c for c in RECORDING["cases"] if c["group"] == "stateful"]

# case name -> why modelyard answers differently on purpose
_ORDER = (
    "Triton checks inputs in its hash map's order and reports the other input of the "
    "pair; modelyard checks them in the request's order (same text otherwise)"
)
_JSON = "malformed JSON is a 400 with the parser's reason, as for /infer (docs/api.md)"
DIFFERENT: dict[str, str] = {
    "add_sub_batched_no_batch_dim": _ORDER,
    "add_sub_batched_wrong_inner_dim": _ORDER,
    "add_sub_wrong_shape_extra_batch_dim": _ORDER,
    "add_sub_unknown_input": (
        "Triton 2.51's message for an unknown extra input is garbled ('missing required "
        "input(s) ]'); modelyard names the unknown input"
    ),
    "add_sub_unknown_input_instead_of_input1": (
        "modelyard prefixes every validation message with the request id, as Triton does "
        "for all the others"
    ),
    "optional_inputs_optional_only": (
        "Triton skips the required-input check when a model has an optional input and the "
        "model then crashes (500); modelyard refuses the request (400, names the input)"
    ),
    "generate_not_json": _JSON,
    "generate_stream_not_json": _JSON,
    "generate_wrong_type": (
        "a value of the wrong type is a 400 naming the input, not Triton's 500 'Unable to "
        "parse data'"
    ),
    "generate_stream_wrong_type": "as generate_wrong_type",
}

REPOSITORY = "<REPOSITORY>"
VOLATILE_KEYS = {"ns", "last_inference"}


def encode_json(obj: Any) -> bytes:
    """As the recorder encoded JSON request bodies."""
    return json.dumps(obj, separators=(",", ":")).encode()


def normalise(obj: Any, repository: str) -> Any:
    """Durations and timestamps to 0; the repository's absolute path to a placeholder."""
    if isinstance(obj, dict):
        return {k: 0 if k in VOLATILE_KEYS else normalise(v, repository) for k, v in obj.items()}
    if isinstance(obj, list):
        return [normalise(v, repository) for v in obj]
    if isinstance(obj, str):
        return obj.replace(repository, REPOSITORY)
    return obj


def _family(line: str) -> str | None:
    m = re.match(r"# (?:HELP|TYPE) (\S+)", line) or re.match(r"([a-zA-Z_:][\w:]*)", line)
    return m.group(1) if m else None


def media_type(case: dict[str, Any], content_type: str | None) -> str | None:
    """The content type, where clients rely on it: binary tensors and server-sent events.

    Triton labels JSON bodies ``application/json`` or ``text/plain`` (errors from a model, the
    ``/ready`` answers) for no reason a client could use; those are not compared."""
    if case["response"]["body_kind"] == "binary_tensors" or (
        case["response"]["headers"].get("content-type", "").startswith("text/event-stream")
    ):
        return content_type
    return None


def expected_answer(case: dict[str, Any]) -> dict[str, Any]:
    expected = case["response"]
    if case["request"].get("server") == "metrics":
        return {"status": expected["status"], "lines": expected["lines"]}
    return {
        "status": expected["status"],
        "content_type": media_type(case, expected["headers"].get("content-type")),
        "content_encoding": expected["headers"].get("content-encoding"),
        "body": normalise(expected["body"], RECORDING["repository"]),
    }


def modelyard_answer(server: RunningServer, case: dict[str, Any], repo: Path) -> dict[str, Any]:
    req, expected = case["request"], case["response"]
    if req.get("server") == "metrics":
        r = httpx.get(f"http://{server.host}:{server.metrics_port}/metrics", timeout=30)
        lines = [line for line in r.text.splitlines() if _family(line) in case["families"]]
        return {"status": r.status_code, "lines": lines}
    content: bytes | None = None
    if req["body_kind"] == "json":
        content = encode_json(req["body"])
    elif req["body_kind"] == "base64":
        content = base64.b64decode(req["body"])
    r = httpx.request(
        req["method"],
        server.base_url + req["path"],
        content=content,
        headers=req["headers"],
        timeout=60,
    )
    body: Any
    kind = expected["body_kind"]
    if kind == "binary_tensors" and "inference-header-content-length" in r.headers:
        n = int(r.headers["inference-header-content-length"])
        body = {
            "header": json.loads(r.content[:n]),
            "data_base64": base64.b64encode(r.content[n:]).decode(),
        }
    elif kind == "json":
        try:
            body = r.json()
        except ValueError:
            body = r.text
    elif kind == "base64":
        body = base64.b64encode(r.content).decode()
    else:
        body = r.text
    return {
        "status": r.status_code,
        "content_type": media_type(case, r.headers.get("content-type")),
        "content_encoding": r.headers.get("content-encoding"),
        "body": normalise(body, str(repo)),
    }


def copy_repository(tmp: Path) -> Path:
    repo = tmp / "python_models"
    shutil.copytree(MODELS, repo, ignore=shutil.ignore_patterns("__pycache__"))
    return repo


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return copy_repository(tmp_path_factory.mktemp("python_parity"))


@pytest.fixture(scope="module")
def server(repository: Path) -> Iterator[RunningServer]:
    # the recording is of Triton's default mode, which is modelyard's "none"
    with running_server(repository, ["--model-control-mode=none"], timeout=180) as s:
        yield s


def test_recording_covers_every_model() -> None:
    on_disk = sorted(d.name for d in MODELS.iterdir() if (d / "1" / "model.py").exists())
    assert on_disk == RECORDING["models"]
    assert set(DIFFERENT) <= {c["name"] for c in RECORDING["cases"]}


def test_stateful_sequence_like_triton(tmp_path: Path) -> None:
    """Statistics and custom metrics after a known sequence of requests on a fresh server."""
    repo = copy_repository(tmp_path)
    mismatches = []
    with running_server(repo, ["--model-control-mode=none"], timeout=180) as fresh:
        for case in STATEFUL:
            got = modelyard_answer(fresh, case, repo)
            if case["name"] not in DIFFERENT and got != expected_answer(case):
                mismatches.append((case["name"], got, expected_answer(case)))
    assert not mismatches, "\n".join(
        f"{n}:\n  got      {g}\n  expected {e}" for n, g, e in mismatches
    )


@pytest.mark.parametrize("name", sorted(set(CASES) - set(DIFFERENT)))
def test_same_answer_as_triton(server: RunningServer, repository: Path, name: str) -> None:
    case = CASES[name]
    assert modelyard_answer(server, case, repository) == expected_answer(case)
