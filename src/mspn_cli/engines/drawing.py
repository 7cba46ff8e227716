"""How an annotated image is drawn from an outcome: one function, so the driver and Ray actors draw the same pixels."""

from __future__ import annotations

from typing import Callable, Optional

import numpy as np

from mspn_cli.io.tasks import ImageOutcome

__all__ = ["annotation_drawer"]


def annotation_drawer(kpt_thr: float, radius: Optional[float] = None,
                      thickness: Optional[float] = None) -> Callable[[ImageOutcome], np.ndarray]:
    def draw(outcome: ImageOutcome) -> np.ndarray:
        return outcome.result.plot(outcome.image, kpt_thr=kpt_thr, radius=radius, thickness=thickness)

    return draw
