"""Accuracy of a finished image run with the whole query set in one batch vs one query at a time.

Usage: ``python scripts/transduction_check.py RUN_DIR [TASKS]``: prints a JSON object (``in_batch``,
``one_at_a_time``, ``changed`` of ``predictions``, ``max_abs_logit_diff``) over the run's saved test tasks (the
first TASKS of them when given). With ``model.norm: batch`` (the paper's) the two accuracies differ: the model is
transductive; with ``instance``, ``group`` or ``support`` they are equal. See docs/images-norm.md.
"""

from __future__ import annotations

import json
import sys

from cmlgraph.train.transduction import run_transduction_report

if __name__ == "__main__":
    if len(sys.argv) not in (2, 3):
        sys.exit(__doc__)
    report = run_transduction_report(sys.argv[1], int(sys.argv[2]) if len(sys.argv) == 3 else None)
    print(json.dumps(report, indent=1))
