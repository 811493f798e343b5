"""cli/_ui.fail prints what it is given as text: paths and model errors often hold brackets."""

from __future__ import annotations

import pytest
import typer

from modelyard.cli._ui import fail


def test_fail_shows_markup_as_text_and_exits_with_the_code(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(typer.Exit) as exited:
        fail("model 'm[bold]x' failed: [red]not style[/red], dims [1, 64]", 3)
    assert exited.value.exit_code == 3
    err = capsys.readouterr().err
    assert "model 'm[bold]x' failed: [red]not style[/red], dims [1, 64]" in err
    assert err.startswith("error:")
