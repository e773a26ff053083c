"""`unmask bench mode=engine` on a tiny random checkpoint: both tables, the files, the FLOP count, errors."""

from __future__ import annotations

import csv
import json

import pytest
from conftest import make_checkpoint

import unmask
from unmask import bench
from unmask.engine_bench import full_forward
from unmask.profiling import arith_prompt_ids, count_flops

LAYERS, HIDDEN, FFN, VOCAB = 2, 32, 64, 64
FAST = ["mode=engine", "model.dtype=float32", "generation.gen_length=32", "repeat=1", "runs=1"]  # no threads=: process-wide


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return make_checkpoint(tmp_path_factory.mktemp("engine") / "m", layers=LAYERS, hidden=HIDDEN, ffn=FFN, vocab=VOCAB)


def test_engine_mode_prints_both_ratios_and_writes_them(ckpt, tmp_path, capsys):
    out = tmp_path / "out"
    assert bench.main([*FAST, f"model.path={ckpt}", f"output_dir={out}"]) == 0
    printed = capsys.readouterr().out
    assert "full forward vs matrix-multiply throughput" in printed
    assert "cached DualCache step vs its matrix-multiply time" in printed
    payload = json.loads((out / "engine.json").read_text())
    (fwd,), (step,) = payload["forward"], payload["steps"]
    assert fwd["dtype"] == step["dtype"] == "float32"
    assert fwd["ratio"] > 0 and step["ratio"] > 0 and step["cached_steps"] > 0
    # The table rows carry the same numbers as the files.
    assert f"{fwd['forward_ms']:.3f}" in printed and f"{step['cached_step_ms']:.3f}" in printed
    for name, row in (("forward.csv", fwd), ("step.csv", step)):
        with (out / name).open() as f:
            (written,) = list(csv.DictReader(f))
        assert written["dtype"] == "float32" and float(written["ratio"]) == row["ratio"]
    assert payload["command"].startswith("unmask bench mode=engine")


def test_full_forward_flops_match_the_layer_shapes(ckpt):
    """2*M*N*K over the projections, the FFN, attention's two products and one block of logits.

    The last layer needs keys and values for every row but its output only for the 32 block rows
    that give logits: only those get queries (in float32 on CPU, where that gives the same bits) and
    run its attention, output projection and FFN."""
    model = unmask.load(str(ckpt), dtype="float32")
    prompts = arith_prompt_ids(model)
    run, t = full_forward(model, prompts, gen_length=32, block_length=32)

    def layer(out_rows: int) -> int:
        qkv = 2 * 2 * t * HIDDEN * HIDDEN + 2 * out_rows * HIDDEN * HIDDEN
        return qkv + 2 * out_rows * HIDDEN * HIDDEN + 3 * 2 * out_rows * HIDDEN * FFN + 2 * 2 * out_rows * t * HIDDEN

    assert count_flops(run) == (LAYERS - 1) * layer(t) + layer(32) + 2 * 32 * HIDDEN * VOCAB


@pytest.mark.parametrize(
    "args, message",
    [
        (["mode=bogus"], "mode='bogus'; valid choices: ['methods', 'engine', 'serve']"),
        (["mode=engine", "methods=baseline"], "methods= belongs to mode=methods, not mode=engine"),
        (["repeat=2"], "repeat= belongs to mode=engine, not mode=methods"),
        (["mode=engine", "generation.threshold=0.5"], "'generation.threshold=0.5' is not a mode=engine setting"),
        (["mode=engine", "runs=0"], "runs=0 must be >= 1"),
        (["mode=engine", "batch_size=1,4"], "batch_size= takes one value in mode=engine"),
    ],
)
def test_bad_engine_input_fails_before_running(args, message, tmp_path, capsys):
    assert bench.main([*args, f"output_dir={tmp_path / 'out'}"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
