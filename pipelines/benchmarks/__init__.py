"""Benchmarks: every figure is a ratio against a baseline measured in the same run.

``python -m pipelines.benchmarks --list`` names them; ``python -m pipelines.benchmarks NAME ...``
runs some, no name runs all. Each benchmark is a module here with a ``main(argv) -> int`` and a
one-line docstring.
"""
