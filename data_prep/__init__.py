"""Raw datasets (ACDC, PROMISE12, vertebral body, your own) to prepared 2D NIfTI slices.

Command line: ``python -m data_prep --help``.
"""
