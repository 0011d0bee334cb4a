"""Every setting is in the README's Configuration table: a setting no file mentions is
one nobody can find."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import AliasChoices

from shared.settings import Settings

README = Path(__file__).resolve().parents[2] / "README.md"


def environment_name(name: str) -> str:
    alias = Settings.model_fields[name].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return str(alias) if alias is not None else name.upper()


def test_every_setting_is_in_the_configuration_table() -> None:
    text = README.read_text()
    table = text[text.index("## Configuration") : text.index("## The model registry")]
    documented = set(re.findall(r"`([A-Z][A-Z0-9_]+)`", table))
    missing = sorted(environment_name(n) for n in Settings.model_fields)
    missing = [name for name in missing if name not in documented]
    assert missing == [], f"settings missing from README's Configuration table: {missing}"
