"""Pieces of :mod:`pipelines.report`: the papers' numbers, the figures, the qualitative overlays.

:mod:`pipelines.report` writes the report of runs read from MLflow (:mod:`pipelines.store`); these
modules do one thing each so that the demo, the reproduction and a report of hand-made runs share
them. They take their row order from :mod:`pipelines.reporting.results`, never from the report.
"""
