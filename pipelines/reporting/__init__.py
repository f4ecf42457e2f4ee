"""Pieces of :mod:`pipelines.report`: the papers' numbers, the figures, the qualitative overlays.

:mod:`pipelines.report` reads the runs from MLflow and writes the report; these modules do one
thing each so that the demo, the reproduction and a report of hand-made runs share them.
"""
