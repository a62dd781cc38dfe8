"""The CML paper's published numbers, read from the one data file ``published.yaml`` beside this module.

Why a data file: every number quoted from the paper lives in one place with its source, so a table of ours can
be set beside it without a number typed twice. The file is read with ``yaml.safe_load`` and its shape is checked
here, so a bad edit fails at load time with the entry named.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import yaml

from cmlgraph.errors import ConfigError

PUBLISHED = Path(__file__).resolve().parent / "published.yaml"


def _check(data: Any, path: Path) -> dict[str, Any]:
    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ConfigError(f"{path}: {what}; fix the file (it must hold the paper's numbers and their source)")

    need(isinstance(data, dict), "expected a mapping at the top")
    for block in ("paper", "table3", "sinusoid", "images"):
        need(isinstance(data.get(block), dict), f"block {block!r} is missing")
        need(block == "paper" or bool(data[block].get("source")), f"block {block!r} has no 'source'")
    table = data["table3"]
    columns, rows = table.get("columns"), table.get("rows")
    need(isinstance(columns, list) and len(columns) > 0, "table3.columns must be a non-empty list")
    for c in columns:
        need(isinstance(c, dict) and {"graph", "ways", "shots"} <= set(c), f"table3 column {c!r} needs graph, "
             f"ways and shots")
    need(isinstance(rows, list) and len(rows) > 0, "table3.rows must be a non-empty list")
    for r in rows:
        need(isinstance(r, dict) and {"algo", "cml", "values", "source"} <= set(r), f"table3 row {r!r} needs "
             f"algo, cml, values and source")
        need(len(r["values"]) == len(columns), f"table3 row {r.get('label', r['algo'])!r} has "
             f"{len(r['values'])} values for {len(columns)} columns")
    return data


@functools.lru_cache(maxsize=4)
def _load(path: str) -> dict[str, Any]:
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the published numbers {p} ({exc.__class__.__name__}); reinstall "
                          f"cmlgraph (the file ships with the package)") from None
    return _check(data, p)


def load_published(path: str | Path | None = None) -> dict[str, Any]:
    """The published numbers: blocks ``paper``, ``table3``, ``sinusoid`` and ``images`` (see the file).

    Args:
        path: Another file of the same shape (tests); default: the packaged ``published.yaml``.

    Raises:
        ConfigError: The file is unreadable or lacks a block, a source, or a value per Table 3 column.
    """
    return _load(str(path or PUBLISHED))


def table3_value(algo: str, cml: bool, graph: str, ways: int, shots: int,
                 published: dict[str, Any] | None = None) -> float | None:
    """The Table 3 accuracy (%) of ``algo`` (with or without CML) in a column, or ``None`` if not published."""
    table = (published or load_published())["table3"]
    for i, col in enumerate(table["columns"]):
        if (col["graph"], int(col["ways"]), int(col["shots"])) == (graph, int(ways), int(shots)):
            for row in table["rows"]:
                if row["algo"] == algo and bool(row["cml"]) == bool(cml):
                    return float(row["values"][i])
    return None


__all__ = ["PUBLISHED", "load_published", "table3_value"]
