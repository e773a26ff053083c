"""`unmask bench` on the bundled model: files, columns, the speedup definition, plots and errors."""

from __future__ import annotations

import csv
import json

import pytest
import torch

import unmask
from unmask import bench, plots
from unmask.generate import StepTrace

RUN = ["methods=baseline,dual", "dataset.limit=2", "generation.gen_length=32", "threads=1"]


@pytest.fixture(autouse=True, scope="module")
def _restore_threads():
    """`threads=` sets torch's process-wide thread count; put it back for the other test files."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def bench_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    code = bench.main([*RUN, f"output_dir={out}"])
    assert code == 0
    return out, json.loads((out / "results.json").read_text())


def test_bench_writes_table_csv_json_and_plots(bench_run, capsys):
    out, payload = bench_run
    for name in ("results.csv", "results.json", "pareto.png", "speedup_vs_length.png", "trace.png"):
        assert (out / name).stat().st_size > 0, name
    for name in ("pareto.png", "speedup_vs_length.png", "trace.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with (out / "results.csv").open() as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert tuple(reader.fieldnames) == bench.CSV_COLUMNS
    assert [r["method"] for r in rows] == ["baseline", "dual"]
    assert [r["cache"] for r in rows] == ["null", "prefix-dual"]
    assert all(r["samples"] == "2" and r["gen_length"] == "32" for r in rows)
    assert "full canvas decoded (stop_until_eos=false" in payload["header"]
    assert payload["trace_methods"] == ["dual", "baseline"]  # cache methods first
    # Both methods saw the same samples, interleaved.
    recs = payload["records"]["32"]
    assert [r["id"] for r in recs["baseline"]] == [r["id"] for r in recs["dual"]]
    assert len(recs["baseline"]) == 2
    # Methods got their own decoding: the dual rows carry the cache and threshold, baseline none.
    assert payload["configs"]["dual"]["cache"]["use_dual"] is True
    assert payload["configs"]["dual"]["generation"]["threshold"] == 0.9
    assert payload["configs"]["baseline"]["cache"] is None
    assert payload["configs"]["baseline"]["generation"]["threshold"] is None


def test_speedup_is_baseline_seconds_over_method_seconds_from_records(bench_run):
    out, payload = bench_run

    def seconds(records):  # one wall time per generate call (batch), as recorded
        per_batch = {}
        for r in records:
            per_batch.setdefault(r["batch"], r["batch_seconds"])
        return sum(per_batch.values())

    recs = payload["records"]["32"]
    expected = seconds(recs["baseline"]) / seconds(recs["dual"])
    rows = {r["method"]: r for r in payload["methods"]}
    assert rows["dual"]["speedup"] == pytest.approx(expected, rel=1e-12)
    assert rows["baseline"]["speedup"] == pytest.approx(1.0)
    with (out / "results.csv").open() as f:
        csv_rows = {r["method"]: r for r in csv.DictReader(f)}
    assert float(csv_rows["dual"]["speedup"]) == pytest.approx(expected, rel=1e-9)
    # Tokens/s is answer tokens over the same seconds.
    tokens = sum(r["tokens"] for r in recs["dual"])
    assert rows["dual"]["tokens_per_second"] == pytest.approx(tokens / seconds(recs["dual"]))
    assert payload["speedup_vs_length"]["dual"]["32"] == pytest.approx(expected)


def test_table_is_printed_with_every_column(tmp_path, capsys):
    code = bench.main(["methods=baseline,parallel", "dataset.limit=1", "generation.gen_length=32", "trace=false",
                       "threads=1", f"output_dir={tmp_path}"])
    assert code == 0
    printed = capsys.readouterr().out
    for column in ("acc %", "tok/s", "speedup", "latency s", "NFE", "tok/fwd", "refresh", "peak MB"):
        assert column in printed
    assert "parallel" in printed and "baseline" in printed
    assert not (tmp_path / "trace.png").exists()


def test_one_row_per_method_and_batch_size_with_batch_size_and_vs_batch1_columns(tmp_path, capsys):
    code = bench.main(["methods=baseline,dual", "dataset.limit=3", "generation.gen_length=32", "trace=false",
                       "threads=1", "batch_size=2,1", f"output_dir={tmp_path}"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "batch_size=1,2" in printed and "vs bs1" in printed and "at the same batch size" in printed
    with (tmp_path / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["batch_size"]) for r in rows] == [("baseline", "1"), ("dual", "1"), ("baseline", "2"), ("dual", "2")]
    payload = json.loads((tmp_path / "results.json").read_text())
    assert payload["batch_sizes"] == [1, 2]
    by_bs = payload["records_by_batch_size"]
    assert payload["records"] == by_bs["1"]  # records: the smallest batch size's, as with one batch size
    for bs in ("1", "2"):  # every method at every batch size, on the same samples
        recs = by_bs[bs]["32"]
        assert [r["id"] for r in recs["dual"]] == [r["id"] for r in recs["baseline"]] == [r["id"] for r in by_bs["1"]["32"]["baseline"]]
    assert [r["batch_size"] for r in by_bs["2"]["32"]["dual"]] == [2, 2, 1]  # 3 samples in batches of 2
    assert [r["batch_size"] for r in by_bs["1"]["32"]["dual"]] == [1, 1, 1]

    def seconds(records):
        return sum({r["batch"]: r["batch_seconds"] for r in records}.values())

    table = {(r["method"], r["batch_size"]): r for r in payload["methods"]}
    for bs in (1, 2):  # speedup against the baseline at the same batch size
        recs = by_bs[str(bs)]["32"]
        expected = seconds(recs["baseline"]) / seconds(recs["dual"])
        assert table["dual", bs]["speedup"] == pytest.approx(expected, rel=1e-12)
    for method in ("baseline", "dual"):
        ratio = table[method, 2]["tokens_per_second"] / table[method, 1]["tokens_per_second"]
        assert table[method, 2]["vs_batch1"] == pytest.approx(ratio)
        assert table[method, 1]["vs_batch1"] == pytest.approx(1.0)
        assert float(next(r for r in rows if (r["method"], r["batch_size"]) == (method, "2"))["vs_batch1"]) == pytest.approx(ratio)


def test_a_single_batch_size_runs_as_before(tmp_path, capsys):
    code = bench.main(["methods=baseline,dual", "dataset.limit=3", "generation.gen_length=32", "trace=false",
                       "threads=1", "batch_size=2", f"output_dir={tmp_path}"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "batch_size=2 " in printed and "vs bs" not in printed
    with (tmp_path / "results.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["method"], r["batch_size"], r["vs_batch1"]) for r in rows] == [("baseline", "2", ""), ("dual", "2", "")]
    payload = json.loads((tmp_path / "results.json").read_text())
    assert "records_by_batch_size" not in payload
    assert payload["configs"]["dual"]["batch_size"] == 2
    assert [r["batch_size"] for r in payload["records"]["32"]["baseline"]] == [2, 2, 1]


def test_batch_sizes_take_turns_on_the_batches_each_would_get_alone(monkeypatch):
    """Rounds of lcm(batch sizes) samples: every batch size decodes each round before the next one."""
    from types import SimpleNamespace

    from unmask import evaluation

    calls = []

    def fake_run_samples(model, task, chunk, cache, generation, batch_size, warmup):
        calls.append((batch_size, cache, [s.id for s in chunk], warmup))
        return [{"id": s.id} for s in chunk]

    monkeypatch.setattr(evaluation, "run_samples", fake_run_samples)
    samples = [SimpleNamespace(id=i) for i in range(6)]
    cfgs = {"a": SimpleNamespace(cache="A", generation={}), "b": SimpleNamespace(cache="B", generation={})}
    model = SimpleNamespace(device=SimpleNamespace(type="cpu"))
    records = bench.run_interleaved(model, None, samples, cfgs, [1, 2, 4])
    for bs in (1, 2, 4):
        alone = [list(range(6))[i : i + bs] for i in range(0, 6, bs)]
        for cache in ("A", "B"):
            mine = [c for c in calls if c[:2] == (bs, cache)]
            assert [c[2] for c in mine] == alone
            assert [c[3] for c in mine] == [True] + [False] * (len(alone) - 1)  # one warm-up per pair
        assert [r["id"] for r in records[bs]["a"]] == list(range(6))
    order = [(c[0], c[2]) for c in calls if c[1] == "A"]
    assert order.index((1, [4])) > order.index((4, [0, 1, 2, 3]))  # batch size 1 waits for the others' round
    assert [c[1] for c in calls[:2]] == ["A", "B"]  # methods take turns per batch


def test_method_defaults_merge_with_user_overrides():
    merged = bench.method_overrides("dual", ["generation.threshold=0.8", "dataset.limit=3"])
    assert "generation.threshold=0.8" in merged and "generation.threshold=0.9" not in merged
    assert "cache.use_dual=true" in merged and "dataset.limit=3" in merged


def test_variant_settings_win_over_paper_defaults_and_user_overrides():
    merged = bench.method_overrides(
        "d2cache/generation.block_length=32/generation.sigma=0", ["generation.block_length=64", "dataset.limit=3"]
    )
    assert "cache=d2cache" in merged and "dataset.limit=3" in merged
    assert "generation.block_length=32" in merged and "generation.block_length=64" not in merged
    cfgs = bench.resolve_methods(["dllm", "dllm/cache.kr=2", "d2cache", "d2cache/generation.block_length=32"], [])
    assert cfgs["dllm"].cache["kr"] == 7 and cfgs["dllm/cache.kr=2"].cache["kr"] == 2  # arith's paper value vs the variant
    assert cfgs["d2cache"].generation["block_length"] is None  # d2Cache's own default: no blocks
    assert cfgs["d2cache/generation.block_length=32"].generation["block_length"] == 32


def test_a_recompute_everything_variant_decodes_like_the_baseline_side_by_side(tmp_path):
    """kp=1 makes every dLLM-Cache step a full refresh; the variant's rows must then equal the baseline's."""
    variant = "dllm/cache.kp=1/cache.kr=1"
    code = bench.main([f"methods=baseline,dllm,{variant}", "dataset.limit=2", "generation.gen_length=32",
                       "trace=false", "threads=1", f"output_dir={tmp_path}"])
    assert code == 0
    payload = json.loads((tmp_path / "results.json").read_text())
    recs = payload["records"]["32"]
    assert [r["raw_output"] for r in recs[variant]] == [r["raw_output"] for r in recs["baseline"]]
    assert [r["method"] for r in payload["methods"]] == ["baseline", "dllm", variant]
    assert payload["configs"][variant]["cache"]["kp"] == 1 and payload["configs"]["dllm"]["cache"]["kp"] == 50


@pytest.mark.parametrize(
    "args, message",
    [
        (["methods=baseline,nope"], "unknown method 'nope'"),
        (["methods=baseline,baseline"], "twice"),
        (["methods=baseline,dllm/kr=2"], "'kr=2' is not a cache.KEY=VALUE"),
        (["methods=baseline,dllm/model.dtype=bfloat16"], "not a cache.KEY=VALUE or generation.KEY=VALUE"),
        (["methods=baseline,baseline/cache.kr=2"], "needs a cache method first"),
        (["methods=dllm,dllm/cache.nope=1"], "unknown key 'cache.nope'"),
        (["cache=prefix"], "sets each method's cache itself"),
        (["lengths=32,x"], "lengths='32,x' is not a valid list of int"),
        (["batch_size=1,0"], "batch_size=0 must be >= 1"),
        (["batch_size=1,four"], "batch_size='1,four' is not a valid list of int"),
        (["batch_size="], "batch_size= lists no batch size"),
        (["methods=baseline,dual", "trace_methods=elastic"], "not among methods"),
        (["generation.gen_length=33"], "multiple of generation.block_length"),
    ],
)
def test_bad_input_fails_before_running(args, message, tmp_path, capsys):
    assert bench.main([*args, f"output_dir={tmp_path / 'out'}"]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_decode_trace_plot_from_synthetic_traces(tmp_path):
    steps = [StepTrace(committed=[[i]], layer_rows=[40 if i == 0 else 8] * 2, refreshed=[float(i == 0)] * 2) for i in range(8)]
    path = plots.decode_trace({"a": steps, "b": steps[:4]}, gen_length=8, canvas_rows=40, path=tmp_path / "t.png")
    assert path.stat().st_size > 0
    series = {"dual": {256: 12.0, 512: 20.0}, "prefix": {256: 8.0, 512: None}}
    assert plots.speedup_vs_length(series, tmp_path / "s.png").stat().st_size > 0
    rows = [{"method": "baseline", "accuracy": 0.5, "tokens_per_second": 10.0}, {"method": "dual", "accuracy": 0.49, "tokens_per_second": 150.0}]
    assert plots.pareto(rows, tmp_path / "p.png").stat().st_size > 0


# -- engine speed changes keep results --------------------------------------------------------------


def test_stacked_projections_match_separate_ones_and_follow_weight_updates():
    """Inference runs q/k/v and gate/up as one matmul each; it must equal the separate projections
    (the training path) and be rebuilt when a weight changes in place."""
    model = unmask.load("tiny")
    layer = model.module.layers[1]
    x = torch.randn(1, 7, model.cfg.hidden_size, generator=torch.Generator().manual_seed(0))
    positions = torch.arange(3, 10).unsqueeze(0)
    cos, sin = model.module.rotary.lookup(positions)

    def plain():
        with torch.enable_grad():
            for p in layer.parameters():
                p.requires_grad_(True)
            try:
                normed = layer.attn_norm(x)
                out = (layer.query(normed, cos, sin), layer.key(normed, cos, sin), layer.value(normed), layer.ffn(x))
                return tuple(t.detach() for t in out)
            finally:
                for p in layer.parameters():
                    p.requires_grad_(False)

    def stacked():
        with torch.inference_mode():
            normed = layer.attn_norm(x)
            return (*layer.qkv(normed, cos, sin), layer.ffn(x))

    for a, b in zip(plain(), stacked()):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        layer.k_proj.weight.mul_(-2.0)
        layer.up_proj.weight.add_(0.5)
    for a, b in zip(plain(), stacked()):  # the stacked copies saw the in-place updates
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)


def test_rotary_matches_rotate_half_definition():
    """apply_rotary with the signed sin table equals x*cos + rotate_half(x)*sin (the LLaMA/NeoX rule)."""
    from unmask.models.layers import RotaryTable, apply_rotary

    table = RotaryTable(head_dim=8, theta=10000.0, max_position=32)
    positions = torch.tensor([[0, 5, 31]])
    x = torch.randn(1, 2, 3, 8, dtype=torch.float64).float()
    inv = 1.0 / (10000.0 ** (torch.arange(0, 8, 2, dtype=torch.float64) / 8))
    ang = positions[0, :, None].double() * inv
    ang = torch.cat([ang, ang], -1)
    rotate_half = torch.cat([-x[..., 4:], x[..., :4]], -1).double()
    expected = x.double() * ang.cos() + rotate_half * ang.sin()
    cos, sin = table.lookup(positions)
    torch.testing.assert_close(apply_rotary(x, cos, sin).double(), expected, rtol=1e-5, atol=1e-6)


def test_stacked_projections_share_the_parameters_storage():
    """Stacking re-points q/k/v and gate/up to slices of one tensor: no second copy of the weights."""
    model = unmask.load("tiny")
    before = sum(p.numel() for p in model.module.parameters())
    unmask.generate(model, prompts=["Mia has 3 apples."], gen_length=32)
    layer = model.module.layers[0]
    weight, _ = layer._stacks["qkv"][1:]
    assert layer.q_proj.weight.data_ptr() == weight.data_ptr()
    assert layer.v_proj.weight.data_ptr() == weight[-layer.v_proj.weight.shape[0]:].data_ptr()
    assert layer.gate_proj.weight.data_ptr() == layer._stacks["gate_up"][1].data_ptr()
    assert sum(p.numel() for p in model.module.parameters()) == before
    assert not any(p.is_inference() for p in model.module.parameters())
