"""Options of an index backend, as an operator writes them: ``refine=fp16,nprobe=768``.

``FACETRACE_INDEX_OPTIONS`` (or ``facetrace reindex --options``) tunes the backend a data
directory uses: how broad a search is, how many lists, how the stored vectors are kept.
They apply when an index is built; ``facetrace reindex`` rebuilds the existing ones with
them. Each backend accepts only the options listed in ``OPTIONS``; a value the backend
refuses (``refine=fp8``, ``nprobe=0``) is refused here, when the settings are read, not
at the first search.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from facetrace.errors import ConfigError

OPTIONS: dict[str, dict[str, Callable[[str], Any]]] = {
    "ivf-pq": {"nlist": int, "nprobe": int, "k_factor": int, "refine": str, "m": int},
    "scann": {"nlist": int, "nprobe": int, "k_factor": int, "rerank": int, "spill": int},
    "ivf": {"nlist": int, "nprobe": int, "codec": str},
    "usearch": {
        "dtype": str,
        "connectivity": int,
        "expansion_add": int,
        "expansion_search": int,
    },
    "exact": {},
    "milvus": {},
}


def parse_options(backend: str, text: str, *, check: bool = True) -> dict[str, Any]:
    """The options in ``text`` (``key=value`` pairs, comma-separated) for ``backend``.

    ``check`` also builds an empty index with them, so that the backend's own checks
    refuse a bad value now.
    """
    text = text.strip()
    if not text:
        return {}
    allowed = OPTIONS.get(backend, {})
    options: dict[str, Any] = {}
    for part in text.split(","):
        key, sep, value = (s.strip() for s in part.partition("="))
        if not sep or not key or not value:
            raise ConfigError(f"index option {part.strip()!r} is not key=value")
        if key not in allowed:
            known = ", ".join(allowed) or "none"
            raise ConfigError(f"the {backend} index has no option {key!r} (it has: {known})")
        if key in options:
            raise ConfigError(f"index option {key!r} is given twice")
        try:
            options[key] = allowed[key](value)
        except ValueError:
            raise ConfigError(f"index option {key}={value!r} is not a whole number") from None
    if check:
        from facetrace.index import create_index

        try:
            create_index(backend, 128, **options)
        except (ConfigError, ValueError, RuntimeError, TypeError) as exc:
            raise ConfigError(f"index options {text!r}: {exc}") from None
    return options
