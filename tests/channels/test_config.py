"""The config file: parsing, validation, env references, and the README's example."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bananagate.config import ChannelConfig, ConfigError, parse_config
from tests.conftest import REPO


def _readme_toml() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Channels") : readme.index("## Keys")]
    (block,) = re.findall(r"```toml\n(.*?)```", section, flags=re.S)
    return block


def test_the_readme_example_parses() -> None:
    env = {
        "GEMINI_API_KEY": "AIza-from-env-1",
        "COMETAPI_KEY": "sk-comet-env",
        "OPENAI_API_KEY": "sk-oai-env",
    }
    config = parse_config(_readme_toml(), environ=env)
    assert [c.name for c in config.channels] == ["google", "comet", "openai"]
    google = config.channels[0]
    assert google.key_values() == ["AIza-from-env-1"] and google.resolved_auth == "goog"
    assert config.channels[1].resolved_auth == "raw"
    assert config.effective_aliases()["gemini-2.5-flash-image-preview"] == "gemini-2.5-flash-image"


def test_the_readme_cli_commands_exist() -> None:
    from click.testing import CliRunner

    from bananagate.cli import cli

    for command in ("add", "list", "remove", "test"):
        assert CliRunner().invoke(cli, ["channels", command, "--help"]).exit_code == 0


def test_defaults_per_kind() -> None:
    config = parse_config(
        '[[channels]]\nname = "g"\nkind = "gemini"\nkey = "AIza-1"\n'
        '[[channels]]\nname = "e"\nkind = "emulator"\n'
    )
    google, emulator = config.channels
    assert google.resolved_base_url == "https://generativelanguage.googleapis.com"
    assert google.read_timeout == 300 and google.connect_timeout == 10
    assert google.served_models() == emulator.served_models() and len(google.served_models()) == 4
    assert google.upstream_model("gemini-3-pro-image", "gemini-3-pro-image-preview") == "gemini-3-pro-image"


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[[channels]]\nname = "x"\nkind = "gemini"\n', "at least one non-empty key"),
        ('[[channels]]\nname = "x"\nkind = "gemini"\nkey = "AIza\\nsecret"\n', "control or non-ASCII"),
        ('[[channels]]\nname = "x"\nkind = "gemini"\nkey = "AIzä"\n', "control or non-ASCII"),
        ('[[channels]]\nname = "x"\nkind = "nope"\nkey = "k"\n', "channels.0.kind"),
        ('[[channels]]\nname = "x y"\nkind = "gemini"\nkey = "k"\n', "channels.0.name"),
        ('[[channels]]\nname = "x"\nkind = "gemini"\nkey = "k"\ncolour = "red"\n', "Extra inputs"),
        ('[[channels]]\nname = "x"\nkind = "emulator"\nkey = "k"\n', "no base_url and no keys"),
        ('[[channels]]\nname = "x"\nkind = "gemini"\nkey = "k"\nsizes = ["1x1"]\n', "only applies to openai"),
        ('[[channels]]\nname = "x"\nkind = "gemini"\nkey = "k"\n' * 2, "used twice"),
        ('[aliases]\n"a" = "not-a-model"\n', "catalog models"),
        ("[routing]\nattempts_per_channel = 0\n", "routing.attempts_per_channel"),
        ("not toml = = 1", "invalid TOML"),
        (
            '[[channels]]\nname = "x"\nkind = "gemini"\nkey = "${NOT_SET_ANYWHERE}"\n',
            "NOT_SET_ANYWHERE is not set",
        ),
    ],
)
def test_invalid_files_are_explained_without_values(toml: str, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(toml, environ={})
    assert message in str(raised.value)
    assert "sk-" not in str(raised.value)


def test_error_messages_never_quote_keys() -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config('[[channels]]\nname = "x"\nkind = "gemini"\nkeys = ["sk-visible-secret"]\nweight = 0\n')
    assert "weight" in str(raised.value) and "sk-visible-secret" not in str(raised.value)
    assert "sk-visible" not in repr(ChannelConfig(name="x", kind="gemini", keys=["sk-visible-secret"]))


def test_settings_find_the_file_in_the_data_dir(tmp_path: Path) -> None:
    from bananagate.settings import Settings

    assert Settings(data_dir=tmp_path).resolved_config_path() is None
    (tmp_path / "bananagate.toml").write_text("")
    assert Settings(data_dir=tmp_path).resolved_config_path() == tmp_path / "bananagate.toml"
    other = tmp_path / "elsewhere.toml"
    assert Settings(data_dir=tmp_path, config_path=other).resolved_config_path() == other
