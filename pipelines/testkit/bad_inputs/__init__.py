"""Deliberately broken raw datasets, generated for the tests and the reliability report.

Each case writes one tiny raw dataset with one defect (a truncated file, a label on another grid,
a name that points outside ``--out``...) or one legal oddity (an all-background label, a
symbolic-link loop beside the data) and says what ``python -m data_prep`` must do with it: exit
code 2 with one line ``error: <file>: <problem>`` naming the file, or (legal input) exit 0 with a
correct result. :func:`run_case` runs one case through the real command line in a subprocess and
:func:`judge` lists what went wrong, also checking that there is no traceback, that nothing is
left under or beside ``--out`` (no ``.<out>.partial-*`` folder) and that no input file was
changed or removed (data lost).

The machinery is :mod:`~pipelines.testkit.bad_inputs.corpus`, the raw datasets the cases break
:mod:`~pipelines.testkit.bad_inputs.raw_data`; the cases are grouped by kind of defect in the
other modules, imported below in the corpus's order (it is the order of the reports).

``tests/data_prep/test_reliability.py`` runs every case; ``python -m pipelines.benchmarks
reliability`` prints the summary. Add a case by writing a builder decorated with :func:`case`
in the module of its kind.
"""

from pipelines.testkit.bad_inputs.corpus import (
    CASES,
    PACKAGE_ROOT,
    BadInput,
    Outcome,
    Setup,
    Skip,
    case,
    case_named,
    compare_snapshots,
    judge,
    lost_files,
    make_removable,
    run_case,
    run_cli,
    snapshot,
)
from pipelines.testkit.bad_inputs.raw_data import markups_text, save_plain_nifti
from pipelines.testkit.bad_inputs import broken_files, layout_and_outputs, annotations, silent_results  # noqa: F401  (registers the cases, in order)

__all__ = ["CASES", "PACKAGE_ROOT", "BadInput", "Outcome", "Setup", "Skip", "case", "case_named", "compare_snapshots", "judge",
           "lost_files", "make_removable", "markups_text", "run_case", "run_cli", "save_plain_nifti", "snapshot"]
