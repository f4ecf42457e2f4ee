"""The tracking package's logger, and how it quotes an error in a warning: its first line."""

from __future__ import annotations

import logging


logger = logging.getLogger("wss_monai.tracking")


def first_line(err: BaseException | str) -> str:
    text = str(err).strip()
    return text.splitlines()[0][:300] if text else type(err).__name__
