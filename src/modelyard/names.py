"""Model names from the network: the one check every front end and the manager apply.

A model name becomes a folder name (files sent with a load request are written to
``<private folder>/<name>/``), a key of the registry and a word in logs. Triton refuses, on
load, a name that is empty or blank and one that could walk a path (``..``, any ``/``), with
the texts used here. modelyard refuses a little more, with the same text, because each is a
path step too: ``.`` (the folder itself: a load of that name once removed ``$TMPDIR``), a
backslash, and NUL or any other control character (which cut or bend a path and a log line).

The HTTP front ends percent-decode the path before routing, so ``a%2Fb`` arrives as ``a/b``
and matches no route (404); ``%2E%2E`` arrives as ``..`` and is refused here (400).
"""

from __future__ import annotations

from modelyard.errors import InvalidArgument

__all__ = ["check_model_name", "model_name_fault"]

_PATH_STEPS = frozenset({".", ".."})


def model_name_fault(name: str) -> str | None:
    """Why ``name`` cannot name a model (Triton's texts), or None when it can."""
    if not name.strip():
        return "Model name cannot be empty. Please enter a valid name to deploy."
    if (
        name.strip() in _PATH_STEPS
        or "/" in name
        or "\\" in name
        or any(ord(c) < 0x20 or ord(c) == 0x7F for c in name)
    ):
        shown = name.encode("unicode_escape").decode("ascii")  # NUL and kin shown, not sent
        return (
            f"invalid model name '{shown}', model name must not contain path traversal characters"
        )
    return None


def check_model_name(name: str) -> str:
    """``name`` itself when it can name a model; else InvalidArgument (400) saying why."""
    fault = model_name_fault(name)
    if fault is not None:
        raise InvalidArgument(fault)
    return name
