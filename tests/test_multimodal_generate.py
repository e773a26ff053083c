"""Prompts whose rows come from embeddings (LLaDA-V image features): the engine path, every cache
policy on such canvases, images through unmask.generate, and LLaDA-V's generation rules."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import unmask
from conftest import LLADA_SPECIALS, write_tokenizer
from unmask.caches import resolve_cache
from unmask.engine.loop import DenoisingLoop
from unmask.generate import result_of
from unmask.models.checkpoint import save_llada_v_checkpoint
from unmask.models.model import DiffusionLM
from unmask.models.model_config import ModelConfig
from unmask.options import GenerationOptions
from unmask.vision.encoder import VisionEncoder
from unmask.vision.processor import ImageProcessorConfig
from unmask.vision.tower import SiglipConfig

PROMPTS = [[5, 6, 7, 8, 9], [10, 11], [12, 13, 14]]
GREEDY = dict(gen_length=16, block_length=8, logits_eos_inf=True, confidence_eos_eot_inf=True)

# Every policy at its own default settings (partial recomputation included), with decoding that suits it.
POLICIES = [
    (None, {}),
    ({"name": "prefix"}, {}),
    ({"name": "prefix", "use_dual": True}, {}),
    ({"name": "dllm", "kp": 4, "kr": 2}, {}),
    ({"name": "d2cache"}, {"block_length": 8}),
    ({"name": "elastic"}, {"block_length": 16}),
]


def make_llada_v(path: Path, seed: int = 0, vocab: int = 64) -> Path:
    """A tiny random LLaDA-V checkpoint in the hub layout (14-pixel tiles, anyres up to 2x2 tiles);
    `vocab=50` is exactly the test tokenizer's, so every id decodes to text."""
    tile = 14
    tower = SiglipConfig(hidden_size=16, intermediate_size=32, num_layers=2, num_heads=2, image_size=tile, patch_size=7)
    processor = ImageProcessorConfig(
        tile_size=tile, image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5),
        grid_pinpoints=tuple((tile * r, tile * c) for r in (1, 2) for c in (1, 2)), max_tiles=4,
    )
    lm_cfg = ModelConfig(
        family="llada-v", hidden_size=32, num_layers=2, num_heads=4, num_kv_heads=4, intermediate_size=64,
        vocab_size=vocab, rope_theta=500000.0, rms_norm_eps=1e-5, max_position=512, qkv_bias=False, shift_logits=False,
    )
    torch.manual_seed(seed)
    lm, vision = DiffusionLM(lm_cfg), VisionEncoder(tower, lm_cfg.hidden_size, processor)
    with torch.no_grad():
        for p in [*lm.parameters(), *vision.parameters()]:
            p.normal_(0, 0.3)
    path.mkdir(parents=True, exist_ok=True)
    ids = write_tokenizer(path, LLADA_SPECIALS)
    save_llada_v_checkpoint(lm, vision, path, {"eos_token_id": ids["<|endoftext|>"], "image_grid_pinpoints": "(1x1),...,(2x2)"})
    return path


def random_image(height: int, width: int, seed: int):
    from PIL import Image

    g = torch.Generator().manual_seed(seed)
    return Image.fromarray(torch.randint(0, 256, (height, width, 3), generator=g, dtype=torch.uint8).numpy())


@pytest.fixture(scope="module")
def llada_v(tmp_path_factory):
    return unmask.load(make_llada_v(tmp_path_factory.mktemp("llada_v")), dtype="float32")


def _run(model, prompt_ids, cache, options, prompt_embeds=None):
    policy_cls, settings = resolve_cache(cache)
    options = {**policy_cls.default_options(settings, model.cfg.family), **GREEDY, **options}
    opts = GenerationOptions.build(model.cfg.family, **options)
    with torch.inference_mode():
        loop = DenoisingLoop(model, opts, policy_cls, settings, prompt_ids, False, prompt_embeds=prompt_embeds)
        loop.run()
        return result_of(loop, prompt_ids)


@pytest.mark.parametrize("cache, options", POLICIES)
def test_rows_from_token_embeddings_give_the_text_tokens(llada, cache, options):
    """Canvas ids are the pad id (as at image rows) and the rows' input is the real tokens' embedding:
    every policy must decode exactly what it decodes from the real ids (an engine that ignored the
    embeddings would decode from pad ids instead)."""
    pad = llada.special.pad
    text = _run(llada, PROMPTS, cache, options)
    filled = [[ids[0]] + [pad] * (len(ids) - 1) for ids in PROMPTS]  # first token stays an id row
    with torch.inference_mode():
        embeds = [
            (llada.module.embed(torch.tensor(ids)), torch.tensor([False] + [True] * (len(ids) - 1)))
            for ids in PROMPTS
        ]
    spliced = _run(llada, filled, cache, options, prompt_embeds=embeds)
    assert spliced.token_ids == text.token_ids
    ignored = _run(llada, filled, cache, options)
    assert ignored.token_ids != text.token_ids  # the check above can fail: pad rows decode differently


# -- LLaDA-V's official generation rules ------------------------------------------------------------

LLADA_V_RULES = dict(
    suppress_tokens=["<|endoftext|>", "<|startoftext|>", "<|start_header_id|>", "<|end_header_id|>"],
    stop_until_eos=True, commit_before_stop=True, confidence_dtype="float64",
)


def _forward_embeds(module, h):
    """A plain full forward from input embeddings [1, T, d] (no engine)."""
    cos, sin = module.rotary.lookup(torch.arange(h.shape[1]).expand(1, -1))
    for layer in module.layers:
        h, _ = layer(h, cos, sin, key_mask=None)
    return module.head(h)


def official_llada_v(module, prompt_embeds, gen_length, block_length, steps, mask_id, forbidden, stop_ids):
    """LLaDA-V's generate_with_embeds (batch 1, temperature 0, low_confidence), written from its
    description: masks found by their embedding, the four specials -inf at masked positions, float64
    confidence of the float32 logits, and once an EoT is committed, commits only before it and the
    answer ends there. One deviation: the [MASK] logit is -inf (unmask's rule for every method)."""
    n_prompt, total = prompt_embeds.shape[0], prompt_embeds.shape[0] + gen_length
    mask_embed = module.embed.weight[mask_id]
    x_emb = mask_embed.repeat(total, 1)
    x_emb[:n_prompt] = prompt_embeds
    x = torch.full((total,), mask_id)
    blocks = gen_length // block_length
    per_block = steps // blocks
    stop, found = total, False
    for b in range(blocks):
        start, end = n_prompt + b * block_length, n_prompt + (b + 1) * block_length
        if found and stop <= start:
            break
        n = int((x_emb[start:end] == mask_embed).all(-1).sum())
        counts = [n // per_block + (1 if i < n % per_block else 0) for i in range(per_block)]
        for i in range(per_block):
            masked = (x_emb == mask_embed).all(-1)
            if (found and not masked[n_prompt:stop].any()) or not masked[start:end].any():
                break
            logits = _forward_embeds(module, x_emb[None])[0].float()
            logits[:, mask_id] = float("-inf")
            for t in forbidden:
                logits[:, t] = torch.where(masked, float("-inf"), logits[:, t])
            x0 = logits.argmax(-1)
            p = torch.softmax(logits.double(), -1).gather(-1, x0[:, None])[:, 0]
            p[(stop if found else end):] = float("-inf")
            conf = torch.where(masked, p, torch.tensor(float("-inf"), dtype=torch.float64))
            pick = torch.zeros(total, dtype=torch.bool)
            pick[torch.topk(conf, counts[i]).indices] = True
            x_emb[pick] = torch.where(masked[:, None], module.embed(x0), x_emb)[pick]
            x[pick] = torch.where(masked, x0, x)[pick]
            for s, token in enumerate(x[n_prompt:].tolist()):
                if token in stop_ids:
                    stop, found = min(stop, n_prompt + s) if found else n_prompt + s, True
                    break
    return x[n_prompt:stop].tolist()


@pytest.fixture(scope="module")
def eot_prone(llada_dir):
    """The random LLaDA with its EoT row scaled (set per test), so answers end mid-canvas."""
    model = unmask.load(llada_dir, dtype="float32")
    return model, model.module.lm_head.weight[model.special.eot].clone()


@pytest.mark.parametrize(
    "scale, prompt, steps, block_length",
    [(1.5, [17, 28, 24, 10, 16, 16], 16, 16), (2.0, [13, 42], 16, 8), (2.0, [25, 12, 52], 16, 8)],
)
def test_llada_v_rules_match_the_official_generate(eot_prone, scale, prompt, steps, block_length):
    model, eot_row = eot_prone
    sp = model.special
    with torch.no_grad():
        model.module.lm_head.weight[sp.eot] = eot_row * scale
    try:
        opts = dict(gen_length=16, block_length=block_length, steps=steps, **LLADA_V_RULES)
        forbidden = [model.tokenizer.token_to_id(n) for n in LLADA_V_RULES["suppress_tokens"]]
        with torch.no_grad():
            ref = official_llada_v(model.module, model.module.embed(torch.tensor(prompt)), 16, block_length, steps,
                                   sp.mask, forbidden, sp.stop_ids)
        answer = lambda r: r.token_ids[0][: r.answer_tokens[0]]  # noqa: E731
        assert answer(unmask.generate(model, input_ids=[prompt], **opts)) == ref
        # Each rule changes the answer somewhere among these cases (so each is really checked).
        free = answer(unmask.generate(model, input_ids=[prompt], **{**opts, "commit_before_stop": False}))
        open_vocab = answer(unmask.generate(model, input_ids=[prompt], **{**opts, "suppress_tokens": []}))
        assert free != ref or open_vocab != ref
    finally:
        with torch.no_grad():
            model.module.lm_head.weight[sp.eot] = eot_row


def test_commit_before_stop_changes_answers(eot_prone):
    """Without the rule the first case above decodes past the EoT first and ends differently."""
    model, eot_row = eot_prone
    with torch.no_grad():
        model.module.lm_head.weight[model.special.eot] = eot_row * 1.5
    try:
        opts = dict(gen_length=16, block_length=16, steps=16, **LLADA_V_RULES)
        prompt = [[17, 28, 24, 10, 16, 16]]
        on = unmask.generate(model, input_ids=prompt, **opts)
        off = unmask.generate(model, input_ids=prompt, **{**opts, "commit_before_stop": False})
        assert on.token_ids[0][: on.answer_tokens[0]] != off.token_ids[0][: off.answer_tokens[0]]
    finally:
        with torch.no_grad():
            model.module.lm_head.weight[model.special.eot] = eot_row


def test_suppress_tokens_by_name(llada):
    opts = dict(gen_length=16, block_length=8)
    with pytest.raises(ValueError, match="not a token"):
        unmask.generate(llada, input_ids=[[5, 6]], suppress_tokens=["<|nope|>"], **opts)
    out = unmask.generate(llada, input_ids=PROMPTS, suppress_tokens=["<|endoftext|>", "<|eot_id|>"], **opts)
    banned = {llada.special.eos, llada.special.eot}
    assert not banned & {t for row in out.token_ids for t in row}


def test_llada_v_option_defaults():
    text = GenerationOptions.build("llada")
    assert (text.stop_until_eos, text.commit_before_stop, text.suppress_tokens) == (False, False, None)
    v = GenerationOptions.build("llada-v")
    assert (v.stop_until_eos, v.commit_before_stop, v.confidence_dtype) == (True, True, "float64")
    assert GenerationOptions.build("llada-v", stop_until_eos=False).commit_before_stop is False
    with pytest.raises(ValueError, match="commit_before_stop"):
        GenerationOptions.build("llada", commit_before_stop=True)


# -- images through unmask.generate (a tiny random LLaDA-V) ----------------------------------------

V_OPTS = dict(gen_length=16, block_length=8)
QUESTIONS = ["a b c", "what is 3 plus 4 .", "x"]


def _images():
    return [[random_image(20, 30, 0)], [random_image(45, 14, 1)], [random_image(9, 9, 2), random_image(30, 30, 3)]]


@pytest.mark.parametrize(
    "cache, options",
    [
        ({"name": "prefix"}, {"steps": 2}),  # one step per block: every step is a refresh step
        ({"name": "prefix", "use_dual": True}, {"steps": 2}),
        ({"name": "dllm", "kp": 1, "kr": 1}, {}),
        ({"name": "d2cache", "current_k": 16, "rollout_p": 1.0}, {"block_length": 8, "sigma": 0.0}),
        ({"name": "elastic", "gamma": 1.0, "window": 16, "exact_gamma1": True, "suppress_mask": True}, {"block_length": 16}),
    ],
)
def test_recompute_everything_matches_baseline_on_image_prompts(llada_v, cache, options):
    opts = {**V_OPTS, **options}
    base_opts = {**opts, "threshold": 0.9} if cache["name"] == "elastic" else opts
    base = unmask.generate(llada_v, prompts=QUESTIONS, images=_images(), **base_opts)
    other = unmask.generate(llada_v, prompts=QUESTIONS, images=_images(), cache=cache, **opts)
    assert base.token_ids == other.token_ids


@pytest.mark.parametrize("cache", [None, "prefix", {"name": "prefix", "use_dual": True}, "dllm", "d2cache", "elastic"])
def test_batch_with_images_of_different_sizes_equals_each_alone(llada_v, cache):
    together = unmask.generate(llada_v, prompts=QUESTIONS, images=_images(), cache=cache, **V_OPTS)
    for i, (question, images) in enumerate(zip(QUESTIONS, _images())):
        alone = unmask.generate(llada_v, prompts=[question], images=[images], cache=cache, **V_OPTS)
        assert alone.token_ids[0] == together.token_ids[i], (cache, i)


def test_mixed_batch_text_prompt_unaffected_by_image_neighbours(llada_v):
    mixed = unmask.generate(llada_v, prompts=QUESTIONS[:2], images=[[random_image(20, 30, 0)], []], **V_OPTS)
    alone = unmask.generate(llada_v, prompts=[QUESTIONS[1]], **V_OPTS)
    assert mixed.token_ids[1] == alone.token_ids[0]


def test_input_ids_with_placeholders_equal_image_text(llada_v):
    tok = llada_v.tokenizer
    head, tail = llada_v.chat_template.split("{content}")
    ids = tok.encode(head) + [-200] + tok.encode("\n" + QUESTIONS[0] + tail)
    image = [[random_image(20, 30, 0)]]
    by_ids = unmask.generate(llada_v, input_ids=[ids], images=image, **V_OPTS)
    by_text = unmask.generate(llada_v, prompts=["<image>\n" + QUESTIONS[0]], images=image, **V_OPTS)
    implicit = unmask.generate(llada_v, prompts=[QUESTIONS[0]], images=image, **V_OPTS)  # "<image>\n" added
    assert by_ids.token_ids == by_text.token_ids == implicit.token_ids
    assert by_ids.prompt_ids == by_text.prompt_ids


def test_image_prompt_matches_the_official_generate(llada_v):
    """unmask.generate(images=) at the llada-v defaults equals LLaDA-V's generate over the spliced
    prompt embeddings (vision.prompt.splice_images, no engine), with answers that end at an EoT."""
    from unmask.vision.processor import process_image
    from unmask.vision.prompt import splice_images

    sp, module = llada_v.special, llada_v.module
    eot_row = module.lm_head.weight[sp.eot].clone()
    forbidden = [llada_v.tokenizer.token_to_id(n) for n in LLADA_V_RULES["suppress_tokens"]]
    head, tail = llada_v.chat_template.split("{content}")
    stopped = restricted = 0
    try:
        with torch.no_grad():  # EoT as likely as a token this random model often picks: answers end mid-canvas
            module.lm_head.weight[sp.eot] = module.lm_head.weight[51] * 1.05
        for seed, (h, w) in enumerate([(20, 30), (45, 14), (9, 9), (28, 28)]):
            image = random_image(h, w, seed)
            ids = llada_v.tokenizer.encode(head) + [-200] + llada_v.tokenizer.encode("\n" + QUESTIONS[seed % 3] + tail)
            with torch.no_grad():
                feats = llada_v.vision.encode([process_image(image, llada_v.vision.processor)])
                embeds = splice_images(ids, feats, module.embed, fill_id=sp.pad).embeds
                ref = official_llada_v(module, embeds, 16, 8, 16, sp.mask, forbidden, sp.stop_ids)
            out = unmask.generate(llada_v, input_ids=[ids], images=[[image]], **V_OPTS)
            assert out.token_ids[0][: out.answer_tokens[0]] == ref
            free = unmask.generate(llada_v, input_ids=[ids], images=[[image]], commit_before_stop=False, **V_OPTS)
            stopped += out.answer_tokens[0] < 16
            restricted += free.token_ids[0][: free.answer_tokens[0]] != ref
    finally:
        with torch.no_grad():
            module.lm_head.weight[sp.eot] = eot_row
    assert stopped and restricted  # the EoT stop rule was exercised, and without it some answer differs


def test_image_errors(llada, llada_v, tmp_path):
    from unmask.vision.images import ImageError

    image = random_image(20, 30, 0)
    with pytest.raises(ValueError, match="text-only"):
        unmask.generate(llada, prompts=["a"], images=[[image]], **V_OPTS)
    with pytest.raises(ValueError, match="text-only"):
        unmask.generate(llada, input_ids=[[5, -200, 6]], **V_OPTS)
    with pytest.raises(ValueError, match="2 image placeholder"):
        unmask.generate(llada_v, prompts=["<image> a <image>"], images=[[image]], **V_OPTS)
    with pytest.raises(ValueError, match="1 image placeholder.*0 image"):
        unmask.generate(llada_v, input_ids=[[5, -200, 6]], **V_OPTS)
    with pytest.raises(ValueError, match="one list of images per prompt"):
        unmask.generate(llada_v, prompts=["a"], images=[image], **V_OPTS)
    with pytest.raises(ValueError, match="2 entries for 1 prompts"):
        unmask.generate(llada_v, prompts=["a"], images=[[image], [image]], **V_OPTS)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(ImageError, match="image 0 of prompt 0"):
        unmask.generate(llada_v, prompts=["a"], images=[[str(bad)]], **V_OPTS)
    with pytest.raises(ImageError, match="does not exist"):
        unmask.generate(llada_v, prompts=["a"], images=[[str(tmp_path / "missing.png")]], **V_OPTS)


def test_cli_generate_with_image(llada_v, llada_dir, tmp_path, capsys):
    from unmask.cli import main

    picture = tmp_path / "picture.png"
    random_image(20, 30, 0).save(picture)
    flags = ["generation.gen_length=16", "generation.block_length=8"]
    assert main(["generate", QUESTIONS[0], "--model", llada_v.path, f"image={picture}", *flags]) == 0
    out, err = capsys.readouterr()
    # The command line resolves the same defaults as the library (stop at EoT for llada-v).
    expected = unmask.generate(llada_v, prompts=[QUESTIONS[0]], images=[[str(picture)]], **V_OPTS)
    assert out.rstrip("\n") == expected.texts[0] and "tokens/s" in err
    assert main(["generate", "a", "--model", str(llada_dir), f"image={picture}", *flags]) == 2
    assert "text-only" in capsys.readouterr().err
    assert main(["generate", "a", "--model", llada_v.path, f"image={tmp_path / 'none.png'}", *flags]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_eval_runner_passes_sample_images(llada_v):
    """Samples that carry images (Sample.images) are decoded with them, batched or not."""
    from unmask.evaluation import run_samples
    from unmask.tasks.base import Sample, Score, Task

    class Echo(Task):
        name = "echo"

        def score(self, sample, output):
            return Score(output, False)

    images = _images()
    samples = [Sample(id=str(i), prompt=q, reference=None, images=tuple(im)) for i, (q, im) in enumerate(zip(QUESTIONS, images))]
    expected = unmask.generate(llada_v, prompts=QUESTIONS, images=images, **V_OPTS).texts
    for batch_size in (1, 3):
        records = run_samples(llada_v, Echo(), samples, generation=dict(V_OPTS), batch_size=batch_size, warmup=False)
        assert [r["raw_output"] for r in records] == expected
    blank = unmask.generate(llada_v, prompts=QUESTIONS, **V_OPTS).texts
    assert blank != expected  # the images change the answers, so the check above can fail


def _bundled_tiny_v():
    from importlib import resources

    if not (resources.files("unmask") / "assets" / "tiny-v" / "config.json").is_file():
        pytest.skip("the bundled tiny-v model is not in this tree")
    return unmask.load("tiny-v", dtype="float32")


@pytest.mark.parametrize(
    "cache, options",
    [
        ({"name": "prefix"}, {"steps": 2}),
        ({"name": "prefix", "use_dual": True}, {"steps": 2}),
        ({"name": "dllm", "kp": 1, "kr": 1}, {}),
        ({"name": "d2cache", "current_k": 16, "rollout_p": 1.0}, {"block_length": 8, "sigma": 0.0}),
        ({"name": "elastic", "gamma": 1.0, "window": 16, "exact_gamma1": True, "suppress_mask": True}, {"block_length": 16}),
    ],
)
def test_tiny_v_recompute_everything_matches_baseline(cache, options):
    """The shipped tiny-v on its own example picture and a rendered one: each method's exact setting
    decodes the baseline's tokens (and the example's answer is its dot count)."""
    from importlib import resources

    model = _bundled_tiny_v()
    example = str(resources.files("unmask") / "assets" / "tiny-v" / "example.png")
    prompts, images = ["How many apples are there now?"] * 2, [[example], [random_image(40, 25, 7)]]
    opts = {**V_OPTS, **options}
    base_opts = {**opts, "threshold": 0.9} if cache["name"] == "elastic" else opts
    base = unmask.generate(model, prompts=prompts, images=images, **base_opts)
    other = unmask.generate(model, prompts=prompts, images=images, cache=cache, **opts)
    assert base.token_ids == other.token_ids
    assert base.texts[0].strip() == "#### 5"  # the example picture shows five dots
