"""The test kit: what the tests, the demo and the benchmarks generate to run without real data or real mistakes.

- :mod:`~pipelines.testkit.phantoms`: synthetic raw datasets in the exact ACDC, PROMISE12 and
  vertebral-body layouts (``python -m pipelines.testkit.phantoms acdc --out RAW``);
- :mod:`~pipelines.testkit.bad_inputs`: broken raw datasets, each with what ``python -m data_prep``
  must answer;
- :mod:`~pipelines.testkit.command_corpus`: bad command lines for every command after data
  preparation (bundles, pipelines, export, verify);
- :mod:`~pipelines.testkit.interrupted`: data preparation killed at random moments, then rerun.

It sits beside the converter, not inside it: the kit uses ``data_prep`` (it runs it, and writes
through its atomic folders and worker pools), while ``data_prep`` imports nothing of the kit.
"""
