"""Split by group, never by image: held-out groups first, then held-in groups, the rest train. Seeded.

Following the paper, a held-in group's target is a test sample while its references also serve as training
data (the EasyRef export includes them); its ``split`` column still says ``held_in``, so no group is in two splits.
"""

from __future__ import annotations

import random

from mrbench.curation.config import SplitConfig
from mrbench.log import get_logger
from mrbench.records import SPLITS

__all__ = ["SPLITS", "split_groups"]
log = get_logger(__name__)


def split_groups(group_ids: list[str], config: SplitConfig, seed: int) -> dict[str, str]:
    """Map each group id to ``held_out``, ``held_in`` or ``train``."""
    order = sorted(group_ids)
    random.Random(seed).shuffle(order)
    n_out = min(config.held_out_groups, len(order))
    n_in = min(config.held_in_groups, len(order) - n_out)
    if n_out < config.held_out_groups or n_in < config.held_in_groups:
        log.warning(
            "only %d groups: held-out %d/%d, held-in %d/%d, train %d",
            len(order), n_out, config.held_out_groups, n_in, config.held_in_groups, len(order) - n_out - n_in,
        )
    out = {}
    for i, gid in enumerate(order):
        out[gid] = "held_out" if i < n_out else "held_in" if i < n_out + n_in else "train"
    return out
