"""The bundled `arith-v` task as an evaluation task: the generated split with its pictures,
the model's chat template, `arith`'s answer scoring.

`dataset.split=blank` gives the same problems with every picture blanked (all background): the
control that shows the answers come from the pictures (a model that reads them falls to at most
the chance level, arith_v.CHANCE).
"""

from __future__ import annotations

from . import arith_v
from .arith_task import ArithTask
from .arith_v_render import blank, render
from .base import Sample

IMAGE_TEXT = "<image>"  # where the picture goes in the prompt (unmask.vision.prompt.IMAGE_TEXT)
SPLITS = ("eval", "blank")


class ArithVTask(ArithTask):
    name = "arith-v"
    default_gen_length = 64
    use_chat_template = True

    def load(self) -> list[Sample]:
        if self.path is not None:
            raise ValueError(f"dataset.path={self.path}: arith-v is generated from its seed and reads no file")
        split = self.split or "eval"
        if split not in SPLITS:
            raise ValueError(f"dataset.split={split!r}: arith-v has the splits {', '.join(SPLITS)}")
        return [self.sample(p, blanked=split == "blank") for p in arith_v.eval_split()]

    @staticmethod
    def sample(problem: dict, blanked: bool = False) -> Sample:
        """One problem as a Sample: the picture (or a blank one) and `<image>` before the question."""
        image = blank() if blanked else render(arith_v.picture(problem))
        return Sample(id=str(problem["id"]), prompt=f"{IMAGE_TEXT}\n{problem['question']}",
                      reference=problem["answer"], meta={"count": problem["count"]}, images=(image,))
