"""Build .tar.gz artifacts, well-formed or hostile, in memory."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Mapping


def targz(files: Mapping[str, bytes], *, dirs: tuple[str, ...] = ()) -> bytes:
    """A gzip'd tar of regular files (and explicit folder members), in the order given."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name in dirs:
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            info.mode = 0o755
            tar.addfile(info)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def targz_with(member: tarfile.TarInfo, data: bytes = b"") -> bytes:
    """A gzip'd tar with one ordinary file and then ``member`` (a link, a device...)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        ok = tarfile.TarInfo("m/config.pbtxt")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"{}"))
        tar.addfile(member, io.BytesIO(data) if member.isreg() else None)
    return buf.getvalue()


def model_artifact(
    model: str, version: int, payload: bytes = b"weights", *, nested: bool = True
) -> bytes:
    """An artifact in modelyard's layout (``<model>/...``) or SageMaker's (no model folder)."""
    top = f"{model}/" if nested else ""
    return targz(
        {
            f"{top}config.pbtxt": f'name: "{model}"\nbackend: "onnxruntime"\n'.encode(),
            f"{top}labels.txt": f"labels of version {version}\n".encode(),
            f"{top}{version}/model.onnx": payload,
        }
    )
