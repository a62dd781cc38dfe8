"""The paper's experiments as data: each cell is one base method beside the same method with CML, in one setting.

Why data: ``cmlgraph reproduce`` selects, trains and reports cells without knowing what is in them, and the list
follows ``published.yaml`` (Table 3's columns and rows, the sinusoid's K values), so a setting is named once.

A Table 3 cell is built from ``configs/paper/table3-<algo>.yaml`` with the overrides ``data.graph``,
``data.shots``, ``data.ways``, ``algo.cml`` and ``train.seed``; a sinusoid cell from ``configs/paper/sinusoid.yaml``
with ``data.shots``, ``algo.cml`` and ``train.seed``.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cmlgraph.errors import ConfigError
from cmlgraph.paper.published import load_published, table3_value

#: The folder of the paper's configs (in the repository, beside ``cmlgraph/``).
PAPER_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "paper"

#: Base algorithm of Table 3 → its config file under ``configs/paper/``.
TABLE3_CONFIGS: dict[str, str] = {"gmeta": "table3-gmeta.yaml", "ammgnn": "table3-ammgnn.yaml"}

#: Runs (seeds) per cell when ``--runs`` is not given: the paper's 5 for Table 3, 3 for the sinusoid.
DEFAULT_RUNS: dict[str, int] = {"table3": 5, "sinusoid": 3}


@dataclass(frozen=True)
class PaperCell:
    """One comparison of the paper: ``algo`` without and with CML in one setting.

    Attributes:
        experiment: ``table3`` or ``sinusoid``.
        config: File name under the paper's config folder.
        dataset: Graph dataset name (``cmlgraph datasets list``) or ``sinusoid``.
        algo: Base algorithm (``gmeta``, ``ammgnn``, ``maml``).
        ways: N of N-way (``None`` for regression).
        shots: K support examples per class (regression: support points).
        paper_base: Published number of the base method (accuracy in %), ``None`` if none is published.
        paper_cml: Published number with CML, ``None`` if none is published.
    """

    experiment: str
    config: str
    dataset: str
    algo: str
    ways: int | None
    shots: int
    paper_base: float | None = None
    paper_cml: float | None = None

    @property
    def id(self) -> str:
        """A readable unique id, e.g. ``table3/citeseer/gmeta/2way-1shot`` or ``sinusoid/maml/k5``."""
        if self.experiment == "sinusoid":
            return f"sinusoid/{self.algo}/k{self.shots}"
        return f"{self.experiment}/{self.dataset}/{self.algo}/{self.ways}way-{self.shots}shot"

    @property
    def slug(self) -> str:
        """The id as a run-folder prefix."""
        return self.id.replace("/", "-")

    @property
    def setting(self) -> str:
        """The setting in words (a table cell)."""
        if self.experiment == "sinusoid":
            return f"sinusoid, K = {self.shots}"
        return f"{self.dataset}, {self.ways}-way {self.shots}-shot"

    @property
    def tags(self) -> frozenset[str]:
        """Words that ``--only`` matches: experiment, dataset, algorithm, ``2way`` and ``1shot`` (sinusoid: ``k5``)."""
        if self.ways is None:
            return frozenset({self.experiment, self.dataset, self.algo, f"k{self.shots}"})
        return frozenset({self.experiment, self.dataset, self.algo, f"{self.shots}shot", f"{self.ways}way"})

    def overrides(self, cml: bool, seed: int) -> dict[str, dict[str, Any]]:
        """The overrides of the cell's config for one arm and seed."""
        data: dict[str, Any] = {"shots": self.shots}
        if self.experiment != "sinusoid":
            data.update(graph=self.dataset, ways=self.ways)
        return {"data": data, "algo": {"cml": cml}, "train": {"seed": seed}}


def paper_cells(published: dict[str, Any] | None = None) -> list[PaperCell]:
    """Every cell of the paper that cmlgraph can run: Table 3 (per base method and column), then the sinusoid."""
    pub = published or load_published()
    cells = []
    for algo, config in TABLE3_CONFIGS.items():
        for col in pub["table3"]["columns"]:
            g, w, k = col["graph"], int(col["ways"]), int(col["shots"])
            cells.append(PaperCell("table3", config, g, algo, w, k, table3_value(algo, False, g, w, k, pub),
                                   table3_value(algo, True, g, w, k, pub)))
    for k in pub["sinusoid"]["shots"]:
        cells.append(PaperCell("sinusoid", "sinusoid.yaml", "sinusoid", "maml", None, int(k)))
    return cells


def select_cells(cells: Sequence[PaperCell], only: str | None) -> list[PaperCell]:
    """The cells ``only`` selects: comma-separated selectors, each a tag, ``tag+tag`` (all of them) or a glob
    on the id (``table3/citeseer/*``). ``None`` selects every cell.

    Raises:
        ConfigError: A selector matches no cell (the message lists the valid tags).
    """
    if only is None:
        return list(cells)
    selectors = [s.strip().lower() for s in only.split(",") if s.strip()]  # tags and ids are lower case
    if not selectors:
        raise ConfigError(f"--only {only!r} is empty; give comma-separated selectors such as sinusoid,citeseer")

    def hit(selector: str, cell: PaperCell) -> bool:
        if any(ch in selector for ch in "*?[/"):
            return fnmatch.fnmatchcase(cell.id, selector)
        return all(part in cell.tags for part in selector.split("+"))

    for s in selectors:
        if not any(hit(s, c) for c in cells):
            tags = sorted(set().union(*(c.tags for c in cells)))
            raise ConfigError(f"--only {s!r} matches no experiment; use tags ({', '.join(tags)}), tag+tag, or a "
                              f"glob on the ids (e.g. {cells[0].id})")
    return [c for c in cells if any(hit(s, c) for s in selectors)]


__all__ = ["DEFAULT_RUNS", "PAPER_CONFIGS", "TABLE3_CONFIGS", "PaperCell", "paper_cells", "select_cells"]
