"""The SageMaker container's entry point: what ``docker run <image> serve`` runs.

SageMaker starts a bring-your-own inference container as ``docker run <image> serve`` and
configures it through its environment (``deploy/sagemaker/Dockerfile`` makes this module the
image's ``ENTRYPOINT``, so ``serve`` arrives here as the one argument). This module turns that
into a ``modelyard serve`` command line the way Triton's SageMaker entry point
(``docker/sagemaker/serve`` in Triton's image) turns it into ``tritonserver`` flags, and runs
it in this process (PID 1 in the container, so SIGTERM reaches the server's drain directly).

* ``SAGEMAKER_MULTI_MODEL=true`` (a multi-model endpoint): an empty repository, explicit model
  control, and ``POST /models`` reading folders under ``/opt/ml/models`` (where the platform
  unpacks each model); the platform loads and unloads every model.
* Otherwise (a single-model endpoint): the repository is ``/opt/ml/model``, and the model to
  load is ``SAGEMAKER_TRITON_DEFAULT_MODEL_NAME`` or the repository's only model folder,
  refused as Triton refuses it (a ``config.pbtxt`` at the top, no model, several models).
* The other variables (``SAGEMAKER_BIND_TO_PORT``, ``SAGEMAKER_SAFE_PORT_RANGE``, ping mode,
  metrics, log level) are read by ``modelyard serve --allow-sagemaker=true`` itself
  (``cli/_sagemaker_env.py``). What this module adds: the other listeners' ports. Triton
  turns its HTTP and metrics ports off in the container; modelyard's HTTP port cannot be
  turned off, so with a safe port range it takes the range's first port that is not the
  container face's, and metrics stay off unless ``SAGEMAKER_TRITON_ALLOW_METRICS`` asks for
  them (then on the next free port of the range, or ``SAGEMAKER_TRITON_METRICS_PORT``).
* Arguments after ``serve`` are passed on to ``modelyard serve`` after the ones above, so
  they win (``docker run <image> serve --log-verbose 1``); SageMaker passes none.
* ``MODELYARD_SAGEMAKER_OPT_ML`` moves ``/opt/ml`` (tests run the entry point on a
  temporary tree; the platform never sets it).
"""

from __future__ import annotations

import itertools
import os
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from modelyard.cli._sagemaker_env import SageMakerEnvError, parse_port_range

__all__ = ["container_arguments", "main"]

OPT_ML = "/opt/ml"  # SageMaker's fixed prefix: /opt/ml/model, /opt/ml/models
DEFAULT_BIND_PORT = 8080  # SageMaker's, when SAGEMAKER_BIND_TO_PORT is not set
_TRUE = {"1", "true", "on", "yes"}


def _single_model(repository: Path, environ: Mapping[str, str]) -> str:
    """The model a single-model endpoint loads, by Triton's serve script's rules."""
    if (repository / "config.pbtxt").is_file():
        raise SageMakerEnvError(
            f"{repository} holds config.pbtxt: the model archive must contain the model's "
            "folder (model/config.pbtxt), not its files"
        )
    named = (environ.get("SAGEMAKER_TRITON_DEFAULT_MODEL_NAME") or "").strip()
    if named:
        if not (repository / named).is_dir():
            raise SageMakerEnvError(
                f"SAGEMAKER_TRITON_DEFAULT_MODEL_NAME names '{named}', which is not a folder "
                f"of {repository}"
            )
        return named
    folders = (
        sorted(p.name for p in repository.iterdir() if p.is_dir()) if repository.is_dir() else []
    )
    if len(folders) == 1:
        return folders[0]
    if not folders:
        raise SageMakerEnvError(f"no model folder in {repository}")
    raise SageMakerEnvError(
        f"{repository} holds several model folders ({', '.join(folders)}): set "
        "SAGEMAKER_TRITON_DEFAULT_MODEL_NAME to the one /invocations serves"
    )


def _ports(environ: Mapping[str, str]) -> list[str]:
    """``--http-port`` / ``--metrics-port`` / ``--allow-metrics`` for the container."""
    args: list[str] = []
    metrics = (environ.get("SAGEMAKER_TRITON_ALLOW_METRICS") or "").strip().lower()
    if not metrics:  # Triton's entry point: --allow-metrics=false; else serve reads the variable
        args.append("--allow-metrics=false")
    raw_range = (environ.get("SAGEMAKER_SAFE_PORT_RANGE") or "").strip()
    if not raw_range:
        return args
    low, high = parse_port_range(raw_range, "SAGEMAKER_SAFE_PORT_RANGE")
    bind = (environ.get("SAGEMAKER_BIND_TO_PORT") or "").strip()
    taken = {int(bind) if bind.isdigit() else DEFAULT_BIND_PORT}
    metrics_port = (environ.get("SAGEMAKER_TRITON_METRICS_PORT") or "").strip()
    if metrics_port.isdigit():
        taken.add(int(metrics_port))
    free = (port for port in range(low, high + 1) if port not in taken)
    needed = 2 if metrics in _TRUE and not metrics_port else 1
    chosen = list(itertools.islice(free, needed))
    if len(chosen) < needed:
        raise SageMakerEnvError(
            f"SAGEMAKER_SAFE_PORT_RANGE '{raw_range}' leaves no port for the HTTP listener"
            + (" and the metrics listener" if needed == 2 else "")
        )
    args += ["--http-port", str(chosen[0])]
    if needed == 2:
        args += ["--metrics-port", str(chosen[1])]
    return args


def container_arguments(
    argv: Sequence[str], environ: Mapping[str, str], empty_repository: Path
) -> list[str]:
    """The ``modelyard serve`` arguments for ``docker run <image> <argv...>``.

    ``empty_repository`` is the folder a multi-model endpoint serves as its repository (it
    stays empty: the platform's models come in through ``POST /models``). Raises
    SageMakerEnvError for an argv or an environment the container cannot serve with.
    """
    if argv and argv[0] != "serve":
        raise SageMakerEnvError(
            f"this image serves models; SageMaker runs it as 'serve', got '{argv[0]}'"
        )
    extra = list(argv[1:])
    opt_ml = Path(environ.get("MODELYARD_SAGEMAKER_OPT_ML") or OPT_ML)
    multi = (environ.get("SAGEMAKER_MULTI_MODEL") or "").strip().lower() in _TRUE
    args = ["--allow-sagemaker=true", "--model-control-mode", "explicit"]
    if multi:
        args += ["--model-repository", str(empty_repository)]
        args += ["--sagemaker-model-root", str(opt_ml / "models")]
    else:
        repository = opt_ml / "model"
        args += ["--model-repository", str(repository)]
        args += ["--load-model", _single_model(repository, environ)]
    return [*args, *_ports(environ), *extra]


def main(argv: Sequence[str] | None = None) -> None:
    """Run ``modelyard serve`` as the container; exits with the server's status."""
    from modelyard.cli.main import app

    argv = list(sys.argv[1:] if argv is None else argv)
    empty = Path(tempfile.mkdtemp(prefix="modelyard-sagemaker-"))  # Triton's /tmp/sagemaker
    try:
        args = container_arguments(argv, os.environ, empty)
    except SageMakerEnvError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print("modelyard serve " + " ".join(args), file=sys.stderr, flush=True)
    app(["serve", *args], prog_name="modelyard")


if __name__ == "__main__":
    main()
