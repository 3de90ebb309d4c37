from pathlib import Path

import pytest

from aggregator.config import (
    Settings,
    default_toml,
    load_settings,
    parse_duration,
    settings_from_dict,
)
from aggregator.errors import ConfigError

SAMPLE = Path(__file__).resolve().parents[1] / "config" / "aggregator.toml"


def test_sample_lists_every_setting_with_its_default():
    assert SAMPLE.read_text() == default_toml() + "\n" or SAMPLE.read_text() == default_toml()
    assert load_settings(SAMPLE) == Settings()


def test_no_file_means_defaults(monkeypatch):
    monkeypatch.delenv("AGGREGATOR_CONFIG", raising=False)
    assert load_settings(None) == Settings()


def test_values_are_read_and_ints_become_floats(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[fetch]\nconnect_timeout = 3\nconcurrency = 4\n")
    s = load_settings(p)
    assert s.fetch.connect_timeout == 3.0 and isinstance(s.fetch.connect_timeout, float)
    assert s.fetch.concurrency == 4


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"fetsh": {}}, "unknown section [fetsh]"),
        ({"fetch": {"timeout": 1}}, "unknown key fetch.timeout"),
        ({"fetch": {"concurrency": "8"}}, "fetch.concurrency must be int"),
        ({"fetch": {"concurrency": True}}, "fetch.concurrency must be int"),
        ({"fetch": {"concurrency": 0}}, "fetch.concurrency = 0 is out of range"),
        ({"fetch": {"max_body_bytes": 10}}, "out of range"),
        ({"fetch": 3}, "must be a table"),
    ],
)
def test_bad_settings_name_the_key(data, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        settings_from_dict(data, "c.toml")


def test_bad_toml_and_missing_file(tmp_path):
    p = tmp_path / "c.toml"
    p.write_text("[fetch\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(p)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90), ("30m", 1800), ("24h", 86400), ("7d", 604800), ("2w", 1209600), ("1.5h", 5400)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "-1h", "24 hours", "yesterday"])
def test_parse_duration_rejects(text):
    with pytest.raises(ConfigError):
        parse_duration(text)
