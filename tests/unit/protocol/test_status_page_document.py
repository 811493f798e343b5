"""The status page as shipped: its files sit in the package, its Content-Security-Policy
admits exactly the inline script and style it carries, and it loads nothing from elsewhere."""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

from modelyard.protocol.status import page
from modelyard.protocol.status.page import page_document


def _sha256(text: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode()


def test_the_page_files_ship_beside_the_module() -> None:
    # hatch packages the whole src/modelyard folder; the files must sit beside page.py
    folder = Path(page.__file__).parent
    for name in ("index.html", "status.js", "status.css"):
        assert (folder / name).is_file(), name


def test_the_policy_admits_exactly_the_inline_script_and_style() -> None:
    body, policy = page_document()
    html = body.decode()
    scripts = re.findall(r"<script>(.*?)</script>", html, re.S)
    styles = re.findall(r"<style>(.*?)</style>", html, re.S)
    assert len(scripts) == 1 and len(styles) == 1
    directives = dict(d.strip().split(" ", 1) for d in policy.decode().split(";"))
    assert directives["default-src"] == "'none'"
    assert directives["script-src"] == f"'{_sha256(scripts[0])}'"
    assert directives["style-src"] == f"'{_sha256(styles[0])}'"
    assert directives["connect-src"] == "'self'"
    assert "/*SCRIPT*/" not in html and "/*STYLE*/" not in html


def test_nothing_is_fetched_from_elsewhere() -> None:
    html = page_document()[0].decode()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    assert "http://" not in html and "https://" not in html
    assert "innerHTML" not in html  # values are written as text, never as markup
