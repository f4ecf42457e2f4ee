"""Every user-facing command, given a bad value, ends with one line and exit code 2.

One case per entry point from the corpus of ``pipelines/testkit/command_corpus/`` (the
reliability benchmark runs all of it). The bundles run as real processes; the Python entry
points run in this process through ``runpy`` (the same ``__main__`` a ``python -m`` runs),
which keeps the test quick (a tampered prepared dataset through a bundle run is
tests/data/test_verify.py's). The judging is the corpus's: exit code, a single ``error:`` line
naming the option or file and the problem, no traceback, nothing written or changed, and no
string run as Python.
"""

from __future__ import annotations

import pytest

from pipelines.testkit.command_corpus import CASES, Shared, run_case, run_in_process, run_module

#: entry point -> (a corpus case, whether it needs its own process)
ONE_PER_ENTRY = {
    "train (a value)": ("train_epochs_1.5", True),
    "evaluate": ("evaluate_checkpoint_is_text", True),
    "inference": ("inference_no_checkpoint", True),
    "export": ("export_run_is_not_a_run", False),
    "regimes": ("regimes_unknown_regime", False),
    "reproduce": ("reproduce_experiment_is_not_run", False),
    "demo": ("demo_epochs_zero", False),
    "report": ("report_out_is_a_file", False),
    "benchmarks": ("benchmarks_unknown_name", False),
    "data_prep verify": ("verify_not_a_dataset", False),
    "testkit phantoms": ("phantom_cases_zero", False),
}
BY_NAME = {c.name: c for c in CASES}


def test_the_corpus_is_large_enough_and_covers_every_class():
    assert len(CASES) >= 60
    assert {c.kind for c in CASES} >= {"evaluated", "lost", "outside", "silent", "traceback", "concurrency"}
    assert len({c.name for c in CASES}) == len(CASES)


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    return Shared(tmp_path_factory.mktemp("command_corpus") / "shared")


@pytest.mark.parametrize("entry", list(ONE_PER_ENTRY))
def test_each_entry_point_answers_a_bad_value_with_one_line_and_exit_2(entry, shared, tmp_path):
    name, own_process = ONE_PER_ENTRY[entry]
    outcome = run_case(BY_NAME[name], tmp_path, shared, runner=run_module if own_process else run_in_process)
    assert outcome.code == 2 and outcome.handled, (outcome.message, outcome.problems, outcome.lost)
