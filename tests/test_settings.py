"""Settings: declared once, documented in the README, flags over variables over defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from facetrace.errors import ConfigError
from facetrace.settings import SETTINGS, Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_setting_is_documented_in_the_readme() -> None:
    text = README.read_text()
    missing = [s.env for s in SETTINGS if f"`{s.env}`" not in text]
    assert missing == [], f"settings missing from the README: {missing}"


def test_precedence_and_types(tmp_path: Path) -> None:
    env = {
        "FACETRACE_DATA": str(tmp_path),
        "FACETRACE_UPSAMPLE": "2",
        "FACETRACE_PROBE_ROTATIONS": "0",
    }
    s = Settings.load(env=env)
    assert s.data_dir == tmp_path and s.upsample == 2 and s.probe_rotations is False
    assert Settings.load(env=env, upsample=0).upsample == 0
    assert s.db_url == f"sqlite:///{tmp_path / 'facetrace.db'}"


@pytest.mark.parametrize(
    "env",
    [
        {"FACETRACE_UPSAMPLE": "x"},
        {"FACETRACE_INDEX": "annoy"},
        {"FACETRACE_WORKERS": "0"},
        {"FACETRACE_PROBE_ROTATIONS": "maybe"},
        {"FACETRACE_MAX_PIXELS": "-1"},
    ],
)
def test_bad_values_are_config_errors(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError):
        Settings.load(env=env)


def test_data_directory_settings_sit_between_variables_and_defaults(tmp_path: Path) -> None:
    from facetrace.settings import save_data_settings

    save_data_settings(tmp_path, index_backend="exact")
    assert Settings.load(env={"FACETRACE_DATA": str(tmp_path)}).index_backend == "exact"
    env = {"FACETRACE_DATA": str(tmp_path), "FACETRACE_INDEX": "usearch"}
    assert Settings.load(env=env).index_backend == "usearch"
    assert Settings.load(env=env, index_backend="ivf").index_backend == "ivf"
    assert Settings.load(env={}, data_dir=tmp_path / "other").index_backend != "exact"
    (tmp_path / "settings.json").write_text('{"colour": "red"}')
    with pytest.raises(ConfigError, match="colour"):
        Settings.load(env={}, data_dir=tmp_path)
    (tmp_path / "settings.json").write_text("{")
    with pytest.raises(ConfigError, match="settings.json"):
        Settings.load(env={}, data_dir=tmp_path)


def test_milvus_needs_a_uri(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="FACETRACE_MILVUS_URI"):
        Settings.load(env={"FACETRACE_INDEX": "milvus"}, data_dir=tmp_path)
    s = Settings.load(env={"FACETRACE_INDEX": "milvus", "FACETRACE_MILVUS_URI": "x.db"})
    assert s.milvus_uri == "x.db"


def test_index_options_are_parsed_for_their_backend(tmp_path: Path) -> None:
    env = {"FACETRACE_INDEX_OPTIONS": " k_factor=20 , nprobe=96 "}
    s = Settings.load(env=env, data_dir=tmp_path)
    assert s.index_backend == "scann" and s.index_option_values == {"k_factor": 20, "nprobe": 96}
    pq_env = {"FACETRACE_INDEX": "ivf-pq", "FACETRACE_INDEX_OPTIONS": "refine=fp16,nprobe=96"}
    pq = Settings.load(env=pq_env, data_dir=tmp_path)
    assert pq.index_option_values == {"refine": "fp16", "nprobe": 96}
    ivf_env = {"FACETRACE_INDEX": "ivf", "FACETRACE_INDEX_OPTIONS": "codec=sq8"}
    ivf = Settings.load(env=ivf_env, data_dir=tmp_path)
    assert ivf.index_option_values == {"codec": "sq8"}
    assert Settings.load(env={}, data_dir=tmp_path).index_option_values == {}


@pytest.mark.parametrize(
    ("backend", "text", "says"),
    [
        ("ivf-pq", "refine=fp8", "refine must be one of"),
        ("ivf-pq", "nprobe=0", "nprobe must be positive"),
        ("ivf-pq", "nprobe=lots", "not a whole number"),
        ("ivf-pq", "m=3", "m must be even"),
        ("ivf-pq", "codec=sq8", "has no option 'codec'"),
        ("ivf-pq", "nprobe=8,nprobe=9", "given twice"),
        ("ivf-pq", "nprobe", "not key=value"),
        ("ivf", "refine=fp16", "has no option 'refine'"),
        ("scann", "nprobe=0", "nprobe must be positive"),
        ("scann", "refine=fp16", "has no option 'refine'"),
        ("scann", "k_factor=0", "scann k_factor must be positive"),
        ("scann", "rerank=0", "scann rerank must be a positive number"),
        ("exact", "nprobe=8", "(it has: none)"),
        ("usearch", "dtype=f64", "dtype must be one of"),
    ],
)
def test_bad_index_options_are_refused_when_read(
    tmp_path: Path, backend: str, text: str, says: str
) -> None:
    env = {"FACETRACE_INDEX": backend, "FACETRACE_INDEX_OPTIONS": text}
    with pytest.raises(ConfigError, match=re.escape(says)):
        Settings.load(env=env, data_dir=tmp_path)
