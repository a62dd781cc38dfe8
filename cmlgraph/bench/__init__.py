"""``cmlgraph bench``: meta-training throughput, time per meta-iteration and peak memory per domain, against
reference implementations kept here (issue 5).

Public API:
    - :func:`run_bench`: run the quick or full benchmark, print the tables, write the JSON document.
    - :func:`build_cases` / :func:`build_ratios`: what is measured and compared.
    - :func:`reference_task_loss`, :func:`reference_workload`: the reference implementations (a) and (b).
"""

from cmlgraph.bench.api import DEFAULTS, check_device, run_bench
from cmlgraph.bench.cases import GRAPHS, Case, Ratio, build_cases, build_ratios
from cmlgraph.bench.reference import PlainGCN, ReferenceModel, reference_task_loss, reference_workload

__all__ = [
    "DEFAULTS",
    "GRAPHS",
    "Case",
    "PlainGCN",
    "Ratio",
    "ReferenceModel",
    "build_cases",
    "build_ratios",
    "check_device",
    "reference_task_loss",
    "reference_workload",
    "run_bench",
]
