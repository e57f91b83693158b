"""Settings: one typed object, built once at start-up from flags and ``FACETRACE_*``
variables, then passed down. Nothing in facetrace reads the environment elsewhere.

A data directory can also carry its own choices in ``<data>/settings.json`` (written by
``facetrace reindex --to``, so that every later command uses the index the data was moved
to). Precedence: flags, then variables, then that file, then defaults.

Every setting is declared once in ``SETTINGS`` with its variable and help text; the README
documents each of them and a test fails when one is missing there.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import platformdirs

from facetrace.errors import ConfigError
from facetrace.index import BACKENDS
from facetrace.index.options import parse_options

DETECTORS = ("hog", "cnn")
EMBEDDERS = ("onnx", "dlib")
INDEX_BACKENDS = BACKENDS
DATA_SETTINGS_FILE = "settings.json"


@dataclass(frozen=True)
class Setting:
    """Declaration of one setting: field name, environment variable, help text."""

    name: str
    env: str
    help: str


SETTINGS: tuple[Setting, ...] = (
    Setting("data_dir", "FACETRACE_DATA", "Data directory (SQLite database and index files)."),
    Setting(
        "database_url",
        "FACETRACE_DATABASE_URL",
        "SQLAlchemy URL of the database; default sqlite:///<data_dir>/facetrace.db.",
    ),
    Setting(
        "index_backend",
        "FACETRACE_INDEX",
        "Vector index backend: scann (ScaNN's 4-bit anisotropic codes re-ranked exactly; "
        "exact below 20,000 faces), ivf-pq, ivf, usearch, exact, milvus.",
    ),
    Setting(
        "index_options",
        "FACETRACE_INDEX_OPTIONS",
        "Options of the index backend, key=value,...; applied when an index is built "
        "(facetrace reindex rebuilds the others). scann: nprobe, nlist, k_factor, spill; "
        "ivf-pq: "
        "refine=fp16 (half the memory), nprobe, nlist, k_factor, m; ivf: codec=fp16|sq8, "
        "nprobe, nlist; usearch: dtype, connectivity, expansion_add, expansion_search.",
    ),
    Setting(
        "milvus_uri",
        "FACETRACE_MILVUS_URI",
        "Milvus server (http://host:19530) or Milvus Lite file (.db), for FACETRACE_INDEX=milvus.",
    ),
    Setting("detector", "FACETRACE_DETECTOR", "Face detector: hog (fast) or cnn (dlib MMOD)."),
    Setting(
        "upsample", "FACETRACE_UPSAMPLE", "Times the detector upsamples (finds smaller faces)."
    ),
    Setting(
        "ingest_upsample",
        "FACETRACE_INGEST_UPSAMPLE",
        "Ingest only: auto (upsample a photo only when no face is found without) or 0-4.",
    ),
    Setting(
        "detect_max_side",
        "FACETRACE_DETECT_MAX_SIDE",
        "Images with a longer side are downscaled to this for detection only.",
    ),
    Setting("max_pixels", "FACETRACE_MAX_PIXELS", "Refuse images with more decoded pixels."),
    Setting("max_file_bytes", "FACETRACE_MAX_FILE_BYTES", "Refuse image files larger than this."),
    Setting(
        "max_archive_bytes",
        "FACETRACE_MAX_ARCHIVE_BYTES",
        "Refuse archives whose members add up to more than this, uncompressed.",
    ),
    Setting(
        "probe_rotations",
        "FACETRACE_PROBE_ROTATIONS",
        "Also look for faces turned 90/180/270 degrees in probe photos (1 or 0).",
    ),
    Setting("workers", "FACETRACE_WORKERS", "Worker processes for ingest (default: all cores)."),
    Setting(
        "embedder",
        "FACETRACE_EMBEDDER",
        "Runs dlib's ResNet: onnx (onnxruntime, same vectors, faster) or dlib (dlib itself).",
    ),
    Setting(
        "flip",
        "FACETRACE_FLIP",
        "Mirror test-time augmentation of embeddings (1 or 0); a different model id.",
    ),
    Setting(
        "target_fpir",
        "FACETRACE_TARGET_FPIR",
        "Open-set search: the false positive identification rate the threshold aims at.",
    ),
)


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("facetrace", appauthor=False))


@dataclass(frozen=True)
class Settings:
    """Everything configurable, with defaults that suit a single examiner's machine."""

    data_dir: Path
    database_url: str | None = None
    index_backend: str = "scann"
    index_options: str = ""
    milvus_uri: str | None = None
    detector: str = "hog"
    upsample: int = 1
    ingest_upsample: str = "auto"
    detect_max_side: int = 1600
    max_pixels: int = 100_000_000
    max_file_bytes: int = 200 * 1024 * 1024
    max_archive_bytes: int = 20 * 1024**3
    probe_rotations: bool = True
    workers: int = max(1, os.cpu_count() or 1)
    embedder: str = "onnx"
    flip: bool = True
    target_fpir: float = 0.01

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise ConfigError(
                f"detector must be one of {', '.join(DETECTORS)}, not {self.detector!r}"
            )
        if self.embedder not in EMBEDDERS:
            raise ConfigError(
                f"embedder must be one of {', '.join(EMBEDDERS)}, not {self.embedder!r}"
            )
        if self.index_backend not in INDEX_BACKENDS:
            raise ConfigError(
                f"index backend must be one of {', '.join(INDEX_BACKENDS)}, "
                f"not {self.index_backend!r}"
            )
        if not 0 <= self.upsample <= 4:
            raise ConfigError("upsample must be between 0 and 4")
        if self.ingest_upsample not in ("auto", "0", "1", "2", "3", "4"):
            raise ConfigError(
                f"ingest upsample must be auto or 0 to 4, not {self.ingest_upsample!r}"
            )
        for name in ("detect_max_side", "max_pixels", "max_file_bytes", "max_archive_bytes"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive")
        parse_options(self.index_backend, self.index_options)
        if self.index_backend == "milvus" and not self.milvus_uri:
            raise ConfigError("the milvus index backend needs FACETRACE_MILVUS_URI")
        if self.workers < 1:
            raise ConfigError("workers must be at least 1")
        if not 0 < self.target_fpir < 1:
            raise ConfigError("target FPIR must be between 0 and 1")

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'facetrace.db'}"

    @property
    def index_option_values(self) -> dict[str, Any]:
        """``index_options`` as keyword arguments of the backend (checked already)."""
        return parse_options(self.index_backend, self.index_options, check=False)

    @property
    def index_dir(self) -> Path:
        return self.data_dir / "index"

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None, **flags: Any) -> Settings:
        """Build settings: flags win over ``FACETRACE_*`` variables, which win over defaults."""
        env = os.environ if env is None else env
        types = {f.name: f.type for f in fields(cls)}
        from_env: dict[str, Any] = {}
        for s in SETTINGS:
            raw = env.get(s.env)
            if raw is not None and raw != "":
                from_env[s.name] = _convert(s, str(types[s.name]), raw)
        from_flags = {k: v for k, v in flags.items() if v is not None}
        data_dir = Path(
            from_flags.get("data_dir") or from_env.get("data_dir") or _default_data_dir()
        ).expanduser()
        values = {**read_data_settings(data_dir), **from_env, **from_flags, "data_dir": data_dir}
        return cls(**values)


def _convert(setting: Setting, type_name: str, raw: str) -> Any:
    try:
        if type_name == "int":
            return int(raw)
        if type_name == "float":
            return float(raw)
        if type_name == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
    except ValueError:
        raise ConfigError(f"{setting.env}={raw!r} is not a valid {type_name}") from None
    return raw


def read_data_settings(data_dir: Path) -> dict[str, Any]:
    """The choices saved in ``<data>/settings.json`` (empty when there is none)."""
    path = Path(data_dir) / DATA_SETTINGS_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable settings file ({exc})") from None
    known = {s.name for s in SETTINGS} - {"data_dir"}
    if not isinstance(raw, dict) or not set(raw) <= known:
        raise ConfigError(f"{path}: unknown settings {sorted(set(raw) - known)}")
    return raw


def save_data_settings(data_dir: Path, **values: Any) -> None:
    """Merge ``values`` into ``<data>/settings.json`` (atomically)."""
    path = Path(data_dir) / DATA_SETTINGS_FILE
    merged = {**read_data_settings(data_dir), **values}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(merged, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def parse_index_target(text: str) -> tuple[str, str | None]:
    """``reindex --to`` argument: a backend name, or where Milvus is.

    ``milvus://host:port`` (or ``http(s)://host:port``) is a Milvus server; a path ending
    in ``.db`` is a Milvus Lite file. Returns ``(backend, milvus_uri)``.
    """
    if text in INDEX_BACKENDS and text != "milvus":
        return text, None
    if text.startswith("milvus://"):
        return "milvus", "http://" + text.removeprefix("milvus://")
    if text.startswith(("http://", "https://")):
        return "milvus", text
    if text.endswith(".db"):
        return "milvus", str(Path(text).expanduser().resolve())
    raise ConfigError(
        f"cannot move the index to {text!r}: give usearch, ivf, ivf-pq, exact, "
        "milvus://host:port or a Milvus Lite file ending in .db"
    )
