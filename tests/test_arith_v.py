"""The bundled visual task `arith-v` and model `tiny-v`: a fixed split, pictures that carry the
answer's quantity, arith's scoring, the shipped model reading the pictures."""

from __future__ import annotations

import random
import re
from collections import Counter

import pytest
import torch

from unmask.tasks import arith_v
from unmask.tasks.arith_v_render import GRID, CELL, blank, random_spec, render
from unmask.tasks.arith_v_task import ArithVTask
from unmask.tasks.registry import get_task

EQUATION = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")
OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


def _pixels(image) -> torch.Tensor:
    return torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(image.height, image.width, 3)


def test_eval_split_is_fixed_balanced_and_distinct():
    a, b = arith_v.eval_split(), arith_v.eval_split()
    assert a == b and len(a) == arith_v.EVAL_SIZE >= 200
    assert [p["id"] for p in a[:3]] == ["eval-000", "eval-001", "eval-002"]
    counts = Counter(p["count"] for p in a)
    assert set(counts) == set(arith_v.COUNTS) and len(set(counts.values())) == 1  # a constant guess scores CHANCE
    assert len({arith_v.problem_key(p["question"], p["count"]) for p in a}) == len(a)
    assert arith_v.eval_split(seed=1) != a
    samples = get_task("arith-v").load()
    again = ArithVTask().load()
    assert [s.prompt for s in samples] == [s.prompt for s in again]
    assert all(x.images[0].tobytes() == y.images[0].tobytes() for x, y in zip(samples, again))


def test_questions_hide_the_count_and_answers_recompute():
    rng = random.Random(0)
    for _ in range(500):
        p = arith_v.make_problem(rng)
        k = p["count"]
        assert "picture" in p["question"] or p["question"].endswith("are there now?")
        *lines, final = p["answer"].split("\n")
        given = {int(x) for x in re.findall(r"\d+", p["question"])}
        known, result = set(given) | {k}, None
        for line in lines:
            (a, op, b, r), = EQUATION.findall(line)
            a, b, r = int(a), int(b), int(r)
            assert OPS[op](a, b) == r and 0 < r <= arith_v.MAX_VALUE, line
            assert a in known and b in known, (line, p["question"])
            known.add(r)
            result = r
        if lines:
            assert k in {int(x) for x in re.findall(r"\d+", lines[0])}  # the first line uses the picture's k
        assert final == f"#### {k if result is None else result}"


def test_training_stream_skips_the_eval_split_and_resumes():
    keys = arith_v.eval_keys()
    assert not any(arith_v.problem_key(p["question"], p["count"]) in keys
                   for p in (next(arith_v.ProblemStream(3)) for _ in range(200)))
    first = next(arith_v.ProblemStream(0, exclude=set()))
    stream = arith_v.ProblemStream(0, exclude={arith_v.problem_key(first["question"], first["count"])})
    assert next(stream) != first  # an excluded problem is skipped
    saved = stream.state()
    after = [next(stream) for _ in range(5)]
    other = arith_v.ProblemStream(0, exclude=set())
    other.load_state(saved)
    assert [next(other) for _ in range(5)] == after and other.count == 6


def test_pictures_show_the_count():
    rng = random.Random(1)
    for k in (2, 5, 9):
        spec = random_spec(rng, k, "square")
        pixels = _pixels(render(spec))
        assert pixels.shape == (GRID * CELL, GRID * CELL, 3)
        cells = pixels.view(GRID, CELL, GRID, CELL, 3).permute(0, 2, 1, 3, 4).reshape(GRID * GRID, -1)
        drawn = [i for i in range(GRID * GRID) if (cells[i] != 255).any()]
        assert drawn == list(spec.cells) and len(drawn) == k
    one, two = random_spec(random.Random(5), 3, "circle"), random_spec(random.Random(5), 4, "circle")
    assert render(one).tobytes() != render(two).tobytes()
    assert render(one).tobytes() == render(random_spec(random.Random(5), 3, "circle")).tobytes()
    assert (_pixels(blank()) == 255).all()
    with pytest.raises(ValueError, match="count"):
        random_spec(rng, GRID * GRID + 1, "square")


def test_samples_carry_their_picture_and_the_blank_split_does_not():
    task, blanked = ArithVTask(), ArithVTask(split="blank")
    s, b = task.load()[0], blanked.load()[0]
    assert s.prompt.startswith("<image>\n") and len(s.images) == 1 and s.meta["count"] == arith_v.COUNTS[0]
    assert b.prompt == s.prompt and b.reference == s.reference
    assert b.images[0].tobytes() == blank().tobytes() != s.images[0].tobytes()
    with pytest.raises(ValueError, match="dataset.split"):
        ArithVTask(split="train").load()
    with pytest.raises(ValueError, match="dataset.path"):
        ArithVTask(path="x.jsonl").load()


def test_scoring_uses_the_answer_line():
    task = ArithVTask()
    sample = task.load()[1]
    gold = sample.reference.rsplit("#### ", 1)[1]
    assert task.score(sample, f"some work\n#### {gold}").correct
    assert not task.score(sample, f"#### {int(gold) + 1}").correct
    assert task.score(sample, f"the answer is {gold}").correct  # no #### line: the last number
    assert task.score(sample, "").extracted is None


def test_model_tiny_v_evaluates_arith_v_by_default():
    from unmask.config import require_model_path, resolve_config

    cfg = resolve_config(["model=tiny-v"])
    assert cfg.dataset["name"] == "arith-v" and cfg.model["family"] == "llada-v"
    assert require_model_path(cfg) == "tiny-v" and cfg.generation["gen_length"] == ArithVTask.default_gen_length
    assert resolve_config(["model=tiny-v", "dataset.name=arith"]).dataset["name"] == "arith"
    assert resolve_config([]).dataset["name"] == "arith"


# -- training (unmask train family=llada-v) ------------------------------------------------

SMALL = dict(
    vision_hidden=16, vision_intermediate=32, vision_layers=1, vision_heads=2, batch_size=2, response_length=48,
    warmup_steps=1, threads=1, progress=False, save_every=0,
)


def _small(out, **kw):
    from unmask.train_vision import VisionTrainConfig

    return VisionTrainConfig(out=str(out), **{**SMALL, **kw})


def test_vision_training_writes_a_llada_v_checkpoint_that_loads(tmp_path):
    import json

    import unmask
    from unmask.train_vision import Collator, train
    from unmask.vision.processor import ImageProcessorConfig

    summary = train(_small(tmp_path / "run", max_steps=3))
    assert summary["steps"] == 3 and not summary["resumed"]
    raw = json.loads((tmp_path / "run" / "config.json").read_text())
    assert raw["architectures"] == ["LlavaLLaDAModelLM"] and raw["image_aspect_ratio"] == "anyres_max_1"
    loaded = unmask.load(tmp_path / "run")
    assert loaded.cfg.family == "llada-v" and loaded.vision is not None
    assert loaded.vision.processor == ImageProcessorConfig.from_checkpoint(tmp_path / "run")
    assert loaded.chat_template.startswith("<|startoftext|><|start_header_id|>user")  # no LLaDA-V system prompt
    problems = arith_v.eval_split()[:2]
    with torch.no_grad():
        trained = Collator(loaded.tokenizer, loaded.special, loaded.chat_template, summary["vision"], summary["lm"], 48)
        reloaded = Collator(loaded.tokenizer, loaded.special, loaded.chat_template, loaded.vision, loaded.module, 48)
        a, b = trained(problems, full=True), reloaded(problems, full=True)
        assert torch.equal(a.ids, b.ids)
        torch.testing.assert_close(b.embeds, a.embeds, rtol=0, atol=1e-6)
        logits_a = summary["lm"](None, attention_mask=a.attention, inputs_embeds=torch.cat([a.embeds, summary["lm"].embed(a.ids[:, a.embeds.shape[1]:])], 1))
        logits_b = loaded.module(None, attention_mask=b.attention, inputs_embeds=torch.cat([b.embeds, loaded.module.embed(b.ids[:, b.embeds.shape[1]:])], 1))
    torch.testing.assert_close(logits_b, logits_a, rtol=0, atol=1e-5)


def test_vision_training_resumes_where_an_interrupted_run_stopped(tmp_path, monkeypatch):
    from unmask import train_vision

    straight = train_vision.train(_small(tmp_path / "a", max_steps=4))
    real_step, calls = train_vision.train_step, {"n": 0}

    def interrupt_after_two(run):
        calls["n"] += 1
        if calls["n"] > 2:
            raise KeyboardInterrupt
        return real_step(run)

    monkeypatch.setattr(train_vision, "train_step", interrupt_after_two)
    cut = train_vision.train(_small(tmp_path / "b", max_steps=4))
    assert cut["interrupted"] and cut["steps"] == 2
    monkeypatch.setattr(train_vision, "train_step", real_step)
    resumed = train_vision.train(_small(tmp_path / "b", max_steps=4))
    assert resumed["resumed"] and resumed["steps"] == 4 and resumed["steps_this_run"] == 2
    for part in ("lm", "vision"):
        for (name, p), q in zip(straight[part].named_parameters(), resumed[part].parameters()):
            torch.testing.assert_close(q, p, rtol=0, atol=1e-6, msg=name)
    with pytest.raises(ValueError, match="vision_hidden"):
        train_vision.train(_small(tmp_path / "b", max_steps=5, vision_hidden=32))


def test_unmask_train_family_llada_v_command_line(tmp_path):
    from unmask.train import main

    with pytest.raises(SystemExit, match="bad argument 'n_layers=2'"):
        main(["family=llada-v", "n_layers=2"])
    with pytest.raises(ValueError, match="family='dream'"):
        main(["family=dream", f"out={tmp_path}", "max_steps=1"])


# -- the shipped tiny-v -------------------------------------------------------------------


def _decode(model, sample, gen_length: int = 64, block: int = 32) -> str:
    """A plain LLaDA decode written out here (independent of unmask's engine): every step
    commits the most confident masked position of the current block, greedily."""
    from unmask.train_vision import prompt_ids
    from unmask.vision.processor import process_image
    from unmask.vision.prompt import splice_images

    lm, special = model.module, model.special
    ids = prompt_ids(model.tokenizer, model.chat_template, sample.prompt)
    features = model.vision.encode([process_image(image, model.vision.processor) for image in sample.images])
    prompt = splice_images(ids, features, lm.embed, special.pad).embeds
    canvas = torch.full((gen_length,), special.mask)
    with torch.no_grad():
        for start in range(0, gen_length, block):
            for _ in range(block):
                logits = lm(None, inputs_embeds=torch.cat([prompt, lm.embed(canvas)])[None])[0, prompt.shape[0]:]
                conf, token = logits.float().softmax(-1).max(-1)
                open_ = canvas == special.mask
                open_[:start] = open_[start + block:] = False
                pos = int(torch.where(open_, conf, -1.0).argmax())
                canvas[pos] = token[pos]
    out = canvas.tolist()
    stops = [i for i, t in enumerate(out) if t in special.stop_ids]
    return model.tokenizer.decode(out[: stops[0]] if stops else out)


def test_shipped_tiny_v_reads_the_pictures():
    import unmask

    model = unmask.load("tiny-v")
    assert model.cfg.family == "llada-v" and model.vision is not None
    task, blanked = ArithVTask(), ArithVTask(split="blank")
    n = 8
    with_pictures = [task.score(s, _decode(model, s)).correct for s in task.load()[:n]]
    without = [blanked.score(s, _decode(model, s)).correct for s in blanked.load()[:n]]
    assert sum(with_pictures) >= n - 1, with_pictures
    assert sum(without) <= 2 and sum(without) < sum(with_pictures), without
