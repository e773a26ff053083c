"""MathVista and MathVerse tasks: prompts and scoring as LLaDA-V's lmms-eval evaluation, data from local files.

`data/mathvista_official.json` was recorded by running the official MathVista evaluator of
LLaDA-V's lmms-eval copy (`mathvista_evals.py`: `create_one_query` with shot_type "reason-first",
`extract_answer` with its GPT call disabled, `normalize_extracted_answer`, `safe_equal`) on six
hand-made problems and a set of replies. The fixtures below are small files each test writes.
"""

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from unmask.tasks import loading
from unmask.tasks.mathverse import MathVerseTask, judge, truncate
from unmask.tasks.mathvista import MathVistaTask, build_query, normalize_extraction, official_quick_extract, rule_extract
from unmask.tasks.registry import get_task
from unmask.vision.images import ImageError, load_image

OFFICIAL = json.loads((Path(__file__).parent / "data" / "mathvista_official.json").read_text())


def png(color=(200, 10, 10), size=(6, 4)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "PNG")
    return buf.getvalue()


def vista_row(problem: dict, **extra) -> dict:
    row = {k: v for k, v in problem.items()}
    row.update({"query": "(query)", "metadata": {"split": "testmini"}}, **extra)
    return row


# --- MathVista prompt and scoring against the recorded official evaluator ----------------------

@pytest.mark.parametrize("entry", OFFICIAL, ids=[e["problem"]["pid"] for e in OFFICIAL])
def test_mathvista_query_equals_official(entry):
    assert build_query(entry["problem"], "row") == entry["prompt"]


@pytest.mark.parametrize("entry", OFFICIAL, ids=[e["problem"]["pid"] for e in OFFICIAL])
def test_mathvista_quick_extraction_and_normalization_equal_official(entry):
    p = entry["problem"]
    choices = p["choices"] or []
    for case in entry["cases"]:
        assert official_quick_extract(case["response"], p["question_type"], p["answer_type"], choices) == case["quick_extraction"], case
        normalized = normalize_extraction(case["response"], choices, p["question_type"], p["answer_type"], p["precision"])
        assert normalized == case["normalized"], case
        assert (str(normalized).strip() == p["answer"]) == case["correct"], case


@pytest.mark.parametrize(
    "reply,question_type,answer_type,choices,expected",
    [
        ("The shape has 11 parts and 8 are blue.\nAnswer: B", "multi_choice", "text", ["3/11", "8/11"], "B"),
        ("Reasoning ... Answer: (B) 8/11.", "multi_choice", "text", ["3/11", "8/11"], "B"),
        ("so the answer is 8/11", "multi_choice", "text", ["3/11", "8/11"], "8/11"),
        ("Answer: Z", "multi_choice", "text", ["3/11", "8/11"], "Z"),  # not an option: left for the nearest-choice rule
        ("Counting gives 12 then 14.\nAnswer: 14", "free_form", "integer", [], "14"),
        ("Answer: 1,250 people (about 40%)", "free_form", "integer", [], "1250"),
        ("first 3, then 5, finally 7", "free_form", "integer", [], "7"),  # no marker: the last number
        ("Answer: $1.45$.", "free_form", "float", [], "1.45"),
        ("The answer is **-0.5**", "free_form", "float", [], "-0.5"),
        ("Answer: none", "free_form", "float", [], ""),
        ("The peak is between [2007, 2008]. Answer: [2007, 2008]", "free_form", "list", [], "[2007, 2008]"),
    ],
)
def test_mathvista_rule_extraction(reply, question_type, answer_type, choices, expected):
    assert rule_extract(reply, question_type, answer_type, choices) == expected


def write_vista_jsonl(tmp_path: Path) -> Path:
    (tmp_path / "images").mkdir()
    rows = []
    for i, entry in enumerate(OFFICIAL[:4]):
        (tmp_path / "images" / f"{i}.png").write_bytes(png((i * 40, 0, 0)))
        rows.append(vista_row(entry["problem"], image=f"images/{i}.png"))
    path = tmp_path / "testmini.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_mathvista_loads_jsonl_with_images_beside_and_scores(tmp_path):
    path = write_vista_jsonl(tmp_path)
    task = get_task("mathvista", path=str(path))
    samples = task.load()
    assert [s.id for s in samples] == ["1", "2", "3", "4"]
    first = samples[0]
    assert first.prompt == "<image>\n" + OFFICIAL[0]["prompt"] + " /think"
    assert first.images == (str(tmp_path / "images" / "0.png"),)
    assert load_image(samples[2].images[0]).getpixel((0, 0)) == (80, 0, 0)
    assert task.score(first, "blue is 8 of 11.\nAnswer: B.").correct  # option letter -> choice text "8/11"
    assert task.score(first, "8/11.").correct  # a bare choice after the trailing period is dropped
    assert not task.score(first, "Answer: A").correct
    integer = samples[1]
    assert task.score(integer, "14").extracted == "14" and task.score(integer, "Answer: 14.0").correct
    assert not task.score(integer, "Answer: 15").correct
    money = samples[3]
    assert task.score(money, "1.454").correct  # rounded to the record's precision (2)
    assert task.score(money, "Luca needs $1.45 in total. Answer: 1.45").correct
    assert not task.score(money, "Answer: 1.5").correct


def test_mathvista_parquet_with_embedded_images_and_hub_layout(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = [vista_row(e["problem"], decoded_image={"bytes": png((0, 9 * i, 0)), "path": f"{i}.png"}, image=f"images/{i}.png")
            for i, e in enumerate(OFFICIAL)]
    (tmp_path / "data").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "data" / "testmini-00000-of-00001.parquet")
    samples = get_task("mathvista", path=str(tmp_path)).load()  # the directory: found as data/testmini-*.parquet
    assert len(samples) == len(OFFICIAL)
    image = samples[5].images[0]
    assert isinstance(image, Image.Image) and load_image(image).getpixel((0, 0)) == (0, 45, 0)


def test_mathvista_json_keyed_by_pid(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "a.png").write_bytes(png())
    rows = {"7": vista_row(OFFICIAL[1]["problem"], pid="7", image="images/a.png")}
    (tmp_path / "testmini.json").write_text(json.dumps(rows))
    (sample,) = MathVistaTask(path=str(tmp_path / "testmini.json")).load()
    assert sample.id == "7" and sample.reference == "14"


def test_mathvista_jsonl_with_base64_image_bytes(tmp_path):
    import base64

    encoded = {"bytes": base64.b64encode(png((1, 2, 3))).decode(), "path": None}
    (tmp_path / "testmini.jsonl").write_text(json.dumps(vista_row(OFFICIAL[0]["problem"], decoded_image=encoded)) + "\n")
    (sample,) = MathVistaTask(path=str(tmp_path)).load()
    assert load_image(sample.images[0]).getpixel((0, 0)) == (1, 2, 3)


def test_mathvista_data_errors(tmp_path):
    base = OFFICIAL[1]["problem"]

    def load(rows, name="testmini.jsonl"):
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return MathVistaTask(path=str(path)).load()

    with pytest.raises(ImageError, match="pid 2.*image file 'images/missing.png' not found"):
        load([vista_row(base, image="images/missing.png")])
    with pytest.raises(ImageError, match="not readable"):  # base64 of "not an image"
        load([vista_row(base, image=None, decoded_image={"bytes": "bm90IGFuIGltYWdl", "path": None})])
    with pytest.raises(ImageError, match="not valid base64"):
        load([vista_row(base, image=None, decoded_image={"bytes": "%%%", "path": None})])
    with pytest.raises(ValueError, match="no image"):
        load([vista_row(base, image="")])
    with pytest.raises(ValueError, match="no answer"):
        load([vista_row(base, image="x.png", answer=None)])
    (tmp_path / "x.png").write_bytes(png())
    with pytest.raises(ValueError, match="precision 1 or 2"):
        load([vista_row(OFFICIAL[2]["problem"], image="x.png", precision=3.0)])
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(loading.DatasetUnavailable, match="no testmini.parquet"):
        MathVistaTask(path=str(tmp_path / "empty_dir")).load()
    with pytest.raises(ValueError, match="zero-shot"):
        MathVistaTask(n_shot=2)


# --- MathVerse ---------------------------------------------------------------------------------

VERSE_VERSIONS = ["Text Dominant", "Text Lite", "Text Only", "Vision Intensive", "Vision Dominant", "Vision Only"]


def verse_rows(image_value) -> list[dict]:
    rows = []
    for n, version in enumerate(VERSE_VERSIONS):
        choice = n % 2 == 0
        rows.append({
            "sample_index": str(100 + n), "problem_index": "1", "problem_version": version,
            "question": f"q{n}", "answer": "B" if choice else "22.3",
            "question_type": "multi-choice" if choice else "free-form",
            "query_wo": f"wo {n}: answer the question", "query_cot": f"cot {n}: think then answer",
            "image": "" if version == "Text Only" else image_value(n),
            "metadata": {"split": "testmini"},
        })
    return rows


def test_mathverse_default_is_the_three_vision_versions_with_query_cot(tmp_path):
    path = tmp_path / "testmini.jsonl"
    (tmp_path / "img.png").write_bytes(png())
    path.write_text("".join(json.dumps(r) + "\n" for r in verse_rows(lambda n: "img.png")))
    samples = get_task("mathverse", path=str(path)).load()
    assert [s.meta["problem_version"] for s in samples] == ["vision_intensive", "vision_dominant", "vision_only"]
    assert samples[0].prompt == "<image>\ncot 3: think then answer /think"
    assert samples[0].images == (str(tmp_path / "img.png"),)
    every = MathVerseTask(path=str(path), split="testmini").load()
    assert len(every) == 6 and every[3].prompt == "<image>\nwo 3: answer the question /think"  # testmini prompts query_wo
    text_only = MathVerseTask(path=str(path), split="text_only").load()
    assert [s.prompt for s in text_only] == ["wo 2: answer the question"] and text_only[0].images == ()


def test_mathverse_directory_with_one_parquet_per_version(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    rows = verse_rows(lambda n: {"bytes": png((n, n, n)), "path": None})
    for row in rows:
        name = row["problem_version"].lower().replace(" ", "_")
        pq.write_table(pa.Table.from_pylist([row]), tmp_path / f"{name}-00000-of-00001.parquet")
    samples = MathVerseTask(path=str(tmp_path)).load()
    assert [s.id for s in samples] == ["103", "104", "105"]
    assert load_image(samples[2].images[0]).getpixel((0, 0)) == (5, 5, 5)


def test_mathverse_scoring_rules():
    assert truncate(" ".join(str(i) for i in range(50))).split(" ")[0] == "20"  # the last 30 words
    assert judge("C", "C", "multi-choice") and judge("(C) 2√3", "C", "multi-choice")
    assert judge("option c", "C", "multi-choice") and not judge("B:2√3", "C", "multi-choice")
    assert judge("22.3 meters", "22.3", "free-form") and not judge("22.4", "22.3", "free-form")
    assert judge("\\frac{1}{2}", "0.5", "free-form") and judge("y = 2x+1", "y=2x+1", "free-form")
    assert not judge("", "5", "free-form")


def test_mathverse_score_uses_the_tail_of_the_reply(tmp_path):
    path = tmp_path / "vision_only.jsonl"
    (tmp_path / "img.png").write_bytes(png())
    path.write_text("".join(json.dumps(r) + "\n" for r in verse_rows(lambda n: "img.png")))
    task = MathVerseTask(path=str(path), split="vision_only")
    (free,) = task.load()
    assert task.score(free, "Using the cosine rule the distance is 22.3 m.\nAnswer: 22.3.").correct
    assert not task.score(free, "Answer: 22.3 " + "padding " * 40).correct  # the answer fell outside the last 30 words
    with pytest.raises(ValueError, match="dataset.split='vision'"):
        MathVerseTask(split="vision")
    with pytest.raises(ValueError, match="zero-shot"):
        MathVerseTask(n_shot=1)


def test_hub_sources_per_split(monkeypatch):
    """Without dataset.path the `datasets` cache is read (offline): which repo, config and split."""
    asked = []
    image = {"bytes": png(), "path": "x.png"}  # how `datasets` hands out an image column

    def fake_hub_rows(hub, split):
        asked.append((hub.repo, hub.config, split))
        if hub.repo == "AI4Math/MathVista":
            return [vista_row(OFFICIAL[0]["problem"], decoded_image=image, image="images/1.jpg")]
        return [r for r in verse_rows(lambda n: image) if r["problem_version"].lower().replace(" ", "_") == split or split == "testmini"]

    monkeypatch.setattr(loading, "hub_rows", fake_hub_rows)
    assert len(MathVistaTask().load()) == 1
    assert [s.id for s in MathVerseTask().load()] == ["103", "104", "105"]
    MathVerseTask(split="text_only").load()
    MathVerseTask(split="testmini").load()
    assert asked == [
        ("AI4Math/MathVista", None, "testmini"),
        ("CaraJ/MathVerse-lmmseval", "testmini_version_split", "vision_intensive"),
        ("CaraJ/MathVerse-lmmseval", "testmini_version_split", "vision_dominant"),
        ("CaraJ/MathVerse-lmmseval", "testmini_version_split", "vision_only"),
        ("CaraJ/MathVerse-lmmseval", "testmini_text_only", "text_only"),
        ("CaraJ/MathVerse-lmmseval", "testmini", "testmini"),
    ]
