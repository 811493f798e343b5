"""Text-format parsing whose errors name ``file:line:col``.

protobuf's ``ParseError`` prefixes its message with ``"3:1 : "``; Triton only says "failed to
read text proto from <path>" and leaves the position in its log. We put both in one message,
``"<path>:3:1: Message type ... has no field named ..."``, which editors can jump to.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TypeVar

from google.protobuf import text_format
from google.protobuf.message import Message

from modelyard.repository._common import ModelConfigError

M = TypeVar("M", bound=Message)

_POSITION_PREFIX = re.compile(r"^\d+:\d+ : ")


def parse_text(text: str, message: M, *, source: Path) -> M:
    """Parse ``text`` into ``message`` (which is returned); errors name ``source:line:col``."""
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:
        detail = _POSITION_PREFIX.sub("", str(exc), count=1)
        raise ModelConfigError(detail, source, line=exc.GetLine(), column=exc.GetColumn()) from None
    return message


def parse_file(path: Path, message: M) -> M:
    """Read and parse a text-format file; unreadable or non-UTF-8 files are config errors too."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelConfigError(
            f"file is not valid UTF-8 (byte {exc.start}): {exc.reason}", path
        ) from None
    except OSError as exc:
        raise ModelConfigError(f"failed to read text proto: {exc.strerror}", path) from None
    return parse_text(text, message, source=path)
