"""Python environments for tests, built without a network or conda.

* :func:`write_wheel`: a pure-Python wheel written directly with ``zipfile`` (METADATA, WHEEL,
  RECORD with sha256), installable with ``--no-index --find-links``.
* :func:`conda_pack_archive`: a ``.tar.gz`` laid out as conda-pack lays one out: a real
  interpreter copied from this Python's base installation (binary, ``libpython``, the standard
  library less tests/GUI/installers), numpy copied from the running environment,
  ``conda-meta/``, ``bin/activate``, internal links (``bin/python -> python3.11``), and a
  ``bin/conda-unpack`` whose ``_prefix_records`` name files that hold conda's placeholder
  prefixes, in text and in binary (NUL-padded) form.
* :func:`venv_pack_archive`: a venv as venv-pack packs one: ``pyvenv.cfg`` naming a ``home``,
  ``bin/python`` an absolute link to that home's interpreter, ``lib64 -> lib``, site-packages.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from collections.abc import Mapping
from pathlib import Path

import numpy

# conda-pack's placeholder for text files, and one like conda-build's (long, for binaries)
TEXT_PLACEHOLDER = "/opt/anaconda1anaconda2anaconda3"
BINARY_PLACEHOLDER = "/home/conda/feedstock_root/build_artifacts/python_1700000000000/_h_env_" + (
    "placehold_" * 14
)
VERSION = f"{sys.version_info[0]}.{sys.version_info[1]}"

_STDLIB_SKIP = {
    "site-packages",
    "test",
    "tests",
    "idlelib",
    "tkinter",
    "turtledemo",
    "ensurepip",
    "lib2to3",
    "__pycache__",
    "pydoc_data",
}


def write_wheel(folder: Path, name: str, version: str) -> Path:
    """``<name>-<version>-py3-none-any.whl`` whose package knows its ``__version__``."""
    dist = f"{name}-{version}.dist-info"
    files = {
        f"{name}/__init__.py": f'__version__ = "{version}"\n',
        f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n",
        f"{dist}/WHEEL": (
            "Wheel-Version: 1.0\nGenerator: modelyard-tests\nRoot-Is-Purelib: true\n"
            "Tag: py3-none-any\n"
        ),
    }
    record = []
    for path, text in files.items():
        data = text.encode()
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append(f"{dist}/RECORD,,")
    files[f"{dist}/RECORD"] = "\n".join(record) + "\n"
    folder.mkdir(parents=True, exist_ok=True)
    wheel = folder / f"{name}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for path, text in files.items():
            zf.writestr(path, text)
    return wheel


def pack_folder(root: Path, dest: Path, *, arcroot: str = "", compresslevel: int = 1) -> Path:
    """Tar ``root``'s content (links kept as links), as conda-pack and venv-pack do."""
    with tarfile.open(dest, "w:gz", compresslevel=compresslevel) as tar:
        for current, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(dirs) + sorted(files):
                path = Path(current) / name
                rel = path.relative_to(root).as_posix()
                tar.add(path, arcname=f"{arcroot}/{rel}" if arcroot else rel, recursive=False)
    return dest


def _copy_numpy(site_packages: Path) -> None:
    package = Path(numpy.__file__).parent
    ignore = shutil.ignore_patterns("tests", "__pycache__", "*.pyi")
    shutil.copytree(package, site_packages / "numpy", ignore=ignore, symlinks=True)
    libs = package.with_name("numpy.libs")
    if libs.is_dir():
        shutil.copytree(libs, site_packages / "numpy.libs", symlinks=True)


def base_version(base: Path) -> str:
    """The ``X.Y`` of a Python installation, from its ``lib/pythonX.Y`` folder."""
    found = sorted(p.name[len("python") :] for p in base.joinpath("lib").glob("python3.*"))
    return found[0]


def conda_layout(root: Path, *, base: Path | None = None, with_numpy: bool = True) -> Path:
    """A conda environment folder at ``root``, as conda-pack packs it (module docstring).

    ``base`` is the Python installation to copy (this one's by default); numpy, copied from
    the running environment, only fits this Python's version.
    """
    base = base or Path(sys.base_prefix)
    version = base_version(base)
    bin_dir, lib = root / "bin", root / "lib"
    bin_dir.mkdir(parents=True)
    lib.mkdir()
    shutil.copy2(base / "bin" / f"python{version}", bin_dir / f"python{version}")
    for name in ("python", "python3"):
        (bin_dir / name).symlink_to(f"python{version}")
    for shared in sorted(base.joinpath("lib").glob(f"libpython{version}*.so*")):
        if shared.is_symlink():
            (lib / shared.name).symlink_to(os.readlink(shared))
        else:
            shutil.copy2(shared, lib / shared.name)
            _strip(lib / shared.name)
    stdlib = lib / f"python{version}"
    shutil.copytree(
        base / "lib" / f"python{version}",
        stdlib,
        ignore=lambda folder, names: [
            n for n in names if n in _STDLIB_SKIP or n.startswith("config-")
        ],
        symlinks=True,
    )
    (stdlib / "site-packages").mkdir()
    if with_numpy:
        _copy_numpy(stdlib / "site-packages")
    meta = root / "conda-meta"
    meta.mkdir()
    full = f"{version}.0"
    (meta / f"python-{full}-h_modelyard_0.json").write_text(
        json.dumps({"name": "python", "version": full, "files": [f"bin/python{version}"]})
    )
    (meta / "history").write_text("==> 2024-01-01 00:00:00 <==\n+defaults::python-" + full + "\n")
    (bin_dir / "activate").write_text(
        '#!/bin/sh\n_CONDA_PACK_PREFIX="$(cd "$(dirname "$0")/.." && pwd)"\n'
        'export PATH="$_CONDA_PACK_PREFIX/bin:$PATH"\nexport CONDA_PREFIX="$_CONDA_PACK_PREFIX"\n'
    )
    # files conda-pack leaves for conda-unpack to fix: text, binary, and a script in bin/
    (root / "etc").mkdir()
    (root / "etc" / "probe.txt").write_text(f"prefix={TEXT_PLACEHOLDER}\n")
    (lib / "probe.bin").write_bytes(
        b"\x7fELF head\x00" + BINARY_PLACEHOLDER.encode() + b"/lib/x.so\x00tail\x00"
    )
    script = bin_dir / "probe-tool"
    script.write_text(f"#!/bin/sh\n# installed in {TEXT_PLACEHOLDER} and {TEXT_PLACEHOLDER}\n")
    script.chmod(0o755)
    records = [
        ("etc/probe.txt", TEXT_PLACEHOLDER, "text"),
        ("lib/probe.bin", BINARY_PLACEHOLDER, "binary"),
        ("bin/probe-tool", TEXT_PLACEHOLDER, "text"),
    ]
    write_conda_unpack(root, records)
    return root


def write_conda_unpack(root: Path, records: list[tuple[str, str, str]]) -> None:
    """``bin/conda-unpack`` in conda-pack's shape: prefix code, records, a main block."""
    body = ",\n".join(repr(r) for r in records)
    text = (
        "#!/usr/bin/env python\n"
        "def update_prefix(path, new_prefix, placeholder, mode='text'):\n"
        "    raise SystemExit('modelyard must not run this script')\n\n"
        f"_prefix_records = [\n{body}\n]\n\n"
        "if __name__ == '__main__':\n"
        "    import os\n"
        "    new_prefix = os.path.abspath(os.path.dirname(os.path.dirname(__file__)))\n"
        "    for path, placeholder, mode in _prefix_records:\n"
        "        update_prefix(os.path.join(new_prefix, path), new_prefix, placeholder, mode)\n"
    )
    path = root / "bin" / "conda-unpack"
    path.write_text(text)
    path.chmod(0o755)


def conda_pack_archive(dest: Path, work: Path, **layout: object) -> Path:
    root = conda_layout(work / "conda-env", **layout)  # type: ignore[arg-type]
    return pack_folder(root, dest)


def venv_layout(
    root: Path,
    *,
    home: Path | None = None,
    version: str | None = None,
    with_numpy: bool = True,
    packages: Mapping[str, str] | None = None,
) -> Path:
    """A virtualenv at ``root`` made for ``home`` (this Python's base ``bin/`` by default)."""
    home = home or Path(sys.base_prefix) / "bin"
    full = version or ".".join(str(v) for v in sys.version_info[:3])
    minor = ".".join(full.split(".")[:2])
    (root / "bin").mkdir(parents=True)
    site = root / "lib" / f"python{minor}" / "site-packages"
    site.mkdir(parents=True)
    (root / "lib64").symlink_to("lib")
    (root / "pyvenv.cfg").write_text(
        f"home = {home}\ninclude-system-site-packages = false\nversion = {full}\n"
    )
    (root / "bin" / "python").symlink_to(home / f"python{minor}")
    (root / "bin" / "python3").symlink_to("python")
    (root / "bin" / f"python{minor}").symlink_to("python")
    (root / "bin" / "activate").write_text('VIRTUAL_ENV="$(pwd)"\nexport VIRTUAL_ENV\n')
    if with_numpy:
        _copy_numpy(site)
    for name, text in (packages or {}).items():
        (site / name).mkdir()
        (site / name / "__init__.py").write_text(text)
    return root


def venv_pack_archive(dest: Path, work: Path, **layout: object) -> Path:
    root = venv_layout(work / "venv-env", **layout)  # type: ignore[arg-type]
    return pack_folder(root, dest)


def tar_with(members: list[tuple[tarfile.TarInfo, bytes | None]]) -> bytes:
    """A gzip'd tar of the given members in order (hostile ones included)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def member(name: str, kind: bytes = tarfile.REGTYPE, **attrs: object) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    for key, value in attrs.items():
        setattr(info, key, value)
    return info


def _strip(path: Path) -> None:
    """Shrink a copied shared library (debug symbols) when binutils is there; tests stay fast."""
    if shutil.which("strip"):
        subprocess.run(["strip", "--strip-unneeded", str(path)], check=False, capture_output=True)
