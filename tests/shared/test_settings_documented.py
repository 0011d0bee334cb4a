"""Every setting documents itself: a description on its field, and docs/configuration.md's
table rendered from those descriptions. A setting no file mentions is one nobody can find."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.settings import Settings
from shared.settings_doc import DOC, END, START, environment_name, main, render_table


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_every_setting_has_a_description(name: str) -> None:
    description = Settings.model_fields[name].description or ""
    assert description.strip(), f"{environment_name(name)} has no description"


def test_configuration_doc_holds_the_generated_table() -> None:
    text = DOC.read_text(encoding="utf-8")
    table = text[text.index(START) + len(START) : text.index(END)].strip()
    assert table == render_table().strip(), "docs/configuration.md is out of date: make docs"


def test_every_setting_is_a_row_of_the_table() -> None:
    for name in Settings.model_fields:
        assert f"| `{environment_name(name)}` |" in render_table()


def test_secrets_are_shown_unset() -> None:
    for name in ("API_KEYS", "WEBHOOK_SECRET", "METRICS_TOKEN", "OPENAI_API_KEY"):
        assert f"| `{name}` | unset |" in render_table()


def test_check_fails_on_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "configuration.md"
    stale.write_text(f"# Configuration\n\n{START}\n| old |\n{END}\n", encoding="utf-8")
    assert main(["--check", "--doc", str(stale)]) == 1
    assert main(["--doc", str(stale)]) == 0
    assert main(["--check", "--doc", str(stale)]) == 0
