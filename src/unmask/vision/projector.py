"""The `mlp2x_gelu` projector: vision features -> LM embedding space (Linear, exact GELU, Linear).

Kept as a Sequential so its parameters are named `0.*` and `2.*`, as in the checkpoint's
`model.mm_projector.{0,2}`.
"""

from __future__ import annotations

from torch import nn

PROJECTOR_TYPE = "mlp2x_gelu"


class MlpProjector(nn.Sequential):
    def __init__(self, vision_hidden: int, lm_hidden: int):
        super().__init__(nn.Linear(vision_hidden, lm_hidden), nn.GELU(), nn.Linear(lm_hidden, lm_hidden))
