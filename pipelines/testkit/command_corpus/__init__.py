"""Bad inputs for every command after data preparation: the bundles, the pipelines, export, verify.

Each case sets up one mistake a user can make and says what the command must do (one ``error:``
line and exit code 2, nothing written, changed or run); the machinery is
:mod:`~pipelines.testkit.command_corpus.corpus`, the cases are grouped by the command they drive
in the other modules, imported below in the corpus's order.

``python -m pipelines.benchmarks reliability`` runs every case; ``tests/test_commands_reliability.py``
runs one per entry point.
"""

from pipelines.testkit.command_corpus.corpus import (
    CASES,
    Case,
    Command,
    Outcome,
    Shared,
    case,
    run_case,
    run_corpus,
    run_in_process,
    run_module,
)
from pipelines.testkit.command_corpus import training_cases, checkpoint_cases, pipeline_cases  # noqa: F401  (registers the cases, in order)

__all__ = ["CASES", "Case", "Command", "Outcome", "Shared", "case", "run_case", "run_corpus", "run_in_process", "run_module"]
