"""`unmask serve` with images: OpenAI image_url parts (base64 data URLs only), the same answer as
unmask.generate, refusals for URLs, paths, bad or oversized images, and batches mixing images."""

from __future__ import annotations

import base64
import io

import pytest

import unmask
from test_multimodal_generate import make_llada_v, random_image
from unmask.serve.answer import final_answer
from unmask.serve.batcher import Job, RequestBatcher

pytest.importorskip("fastapi")
GEN = dict(gen_length=16, block_length=8)
QUESTION = "what is 3 plus 4 ."


@pytest.fixture(scope="module")
def vmodel(tmp_path_factory):
    return unmask.load(make_llada_v(tmp_path_factory.mktemp("serve_v"), seed=3, vocab=50), dtype="float32")


def _png(image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _data_url(image) -> str:
    return "data:image/png;base64," + base64.b64encode(_png(image)).decode()


def _client(model):
    from starlette.testclient import TestClient

    from unmask.config import resolve_config
    from unmask.serve.app import create_app
    from unmask.serve.prepare import ServeSettings

    overrides = [f"model={model.path}", "generation.block_length=8"]
    app = create_app(ServeSettings(model, overrides, resolve_config(overrides)), RequestBatcher(model, workers=1))
    return TestClient(app, raise_server_exceptions=False)


def _chat(parts, **extra) -> dict:
    return {"messages": [{"role": "user", "content": parts}], "max_tokens": 16, **extra}


def _expected(model, images) -> str:
    result = unmask.generate(model, prompts=[QUESTION], images=[images], **GEN)
    return final_answer(model.tokenizer, result.token_ids[0], model.special.stop_ids, 16, []).text


def test_chat_with_base64_image_equals_generate(vmodel):
    one, other = random_image(20, 30, 0), random_image(45, 14, 1)
    with _client(vmodel) as client:
        for image in (one, other):
            parts = [{"type": "image_url", "image_url": {"url": _data_url(image)}}, {"type": "text", "text": QUESTION}]
            r = client.post("/v1/chat/completions", json=_chat(parts))
            assert r.status_code == 200, r.text
            # [image, text] is "<image>\n" + text, the convention generate() applies to a bare question.
            assert r.json()["choices"][0]["message"]["content"] == _expected(vmodel, [image])
            assert r.json()["usage"]["prompt_tokens"] == len(
                unmask.generate(vmodel, prompts=[QUESTION], images=[[image]], **GEN).prompt_ids[0])
    assert _expected(vmodel, [one]) != _expected(vmodel, [other])  # the answer depends on the image


@pytest.mark.parametrize(
    "url, status, says",
    [
        ("https://example.com/cat.png", 400, "never fetched"),
        ("http://127.0.0.1:9/cat.png", 400, "never fetched"),
        ("file:///etc/hostname", 400, "never fetched"),
        ("/tmp/cat.png", 400, "file paths are not read"),
        ("data:text/plain;base64,aGVsbG8=", 400, "not an image"),
        ("data:image/png,rawbytes", 400, "only base64 data URLs"),
        ("data:image/png;base64,@@@@", 400, "not valid base64"),
        ("data:image/png;base64," + base64.b64encode(b"not a png").decode(), 400, "image 0"),
    ],
)
def test_bad_image_urls_are_refused(vmodel, url, status, says):
    with _client(vmodel) as client:
        parts = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": QUESTION}]
        r = client.post("/v1/chat/completions", json=_chat(parts))
        assert r.status_code == status and says in r.json()["error"]["message"], r.text


def test_oversized_image_is_413(vmodel, monkeypatch):
    from unmask.serve import images

    monkeypatch.setattr(images, "MAX_IMAGE_BYTES", 64)
    with _client(vmodel) as client:
        parts = [{"type": "image_url", "image_url": {"url": _data_url(random_image(20, 30, 0))}}]
        r = client.post("/v1/chat/completions", json=_chat(parts))
        assert r.status_code == 413 and r.json()["error"]["code"] == "image_too_large"


def test_image_request_errors(vmodel, llada):
    part = {"type": "image_url", "image_url": {"url": _data_url(random_image(20, 30, 0))}}
    with _client(vmodel) as client:
        r = client.post("/v1/chat/completions", json=_chat([{"type": "text", "text": "<image> and " + QUESTION}]))
        assert r.status_code == 400 and "placeholder" in r.json()["error"]["message"]
        body = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": [part]},
                             {"role": "user", "content": "b"}], "max_tokens": 16}
        r = client.post("/v1/chat/completions", json=body)
        assert r.status_code == 400 and "only user messages" in r.json()["error"]["message"]
    with _client(llada) as client:
        r = client.post("/v1/chat/completions", json=_chat([part, {"type": "text", "text": "a"}]))
        assert r.status_code == 400 and "text-only" in r.json()["error"]["message"]


def test_image_and_text_requests_share_a_batch(vmodel):
    """Requests with images batch with any request of the same settings; each answer equals its
    answer alone (images of different sizes, a text-only request among them)."""
    import threading

    from unmask.image_inputs import encode_text_prompts
    from unmask.vision.processor import process_image

    images = [[random_image(20, 30, 0)], [], [random_image(45, 14, 1)]]
    ids = encode_text_prompts(vmodel, [QUESTION] * 3, images, chat=True)
    processed = [[process_image(im, vmodel.vision.processor) for im in row] for row in images]
    batcher = RequestBatcher(vmodel, max_batch=3, workers=1, batch_wait=0)
    outcomes, done = {}, threading.Event()

    def finish(i):
        def deliver(outcome):
            outcomes[i] = outcome
            if len(outcomes) == 3:
                done.set()
        return deliver

    for i in range(3):
        batcher.submit(Job(input_ids=ids[i], cache=None, options=dict(GEN), key="k", on_done=finish(i),
                           images=processed[i] or None))
    batcher.start()
    try:
        assert done.wait(60)
    finally:
        batcher.close()
    assert [outcomes[i].batch_size for i in range(3)] == [3, 3, 3]
    for i in range(3):
        alone = unmask.generate(vmodel, prompts=[QUESTION], images=[images[i]], **GEN)
        assert outcomes[i].token_ids == alone.token_ids[0]
