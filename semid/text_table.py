"""Plain-text tables that fit a terminal: when the columns do not fit on one line they are split into
blocks, each repeating the row labels, so no line is wider than ``WIDTH`` characters (the full figures stay
in the JSON the tables are printed from)."""
from __future__ import annotations

from typing import Sequence

WIDTH = 100


def column_blocks(label_width: int, widths: Sequence[int], limit: int = WIDTH) -> list[list[int]]:
    """Column indices grouped left to right so that ``label_width`` plus the widths of a group's columns
    stays within ``limit``; a column too wide for any group stands alone."""
    blocks: list[list[int]] = []
    used = limit
    for i, w in enumerate(widths):
        if used + w > limit:
            blocks.append([])
            used = label_width
        blocks[-1].append(i)
        used += w
    return blocks
