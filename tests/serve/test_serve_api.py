"""HTTP API (in-process, FastAPI's TestClient) on a tiny checkpoint: same answers as the Predictor, every
error case with its status code and the field it names, and no traceback in any answer."""

from __future__ import annotations

import base64
import io
import json
import threading
import warnings

import numpy as np
import PIL.Image
import pytest
import torch
from fastapi.testclient import TestClient
from pycocotools import mask as mask_utils
from reference import png_header, save_reference, tiny_config_dict

import sam3lite
from sam3lite import Predictor
from sam3lite.processing.rle import rle_to_masks
from sam3lite.serve import ServeSettings, create_app
from sam3lite.serve.cache import FeatureCache
from sam3lite.serve.masks import mask_to_polygons
from sam3lite.serve.schemas import ErrorResponse, SegmentResponse

PROMPTS = ["cat", "yellow school bus", "ear"]
SETTINGS = ServeSettings(
    model_name="tiny",
    max_image_pixels=100_000,
    max_prompts=4,
    max_boxes=3,
    max_prompt_chars=40,
    max_body_bytes=400_000,
    queue_size=1,
)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny")
    save_reference(tiny_config_dict("s0"), directory, seed=11)
    return sam3lite.load(directory)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """(file bytes, path) of a 203x150 random PNG."""
    array = np.random.default_rng(0).integers(0, 256, (150, 203, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("img") / "image.png"
    path.write_bytes(png_bytes(array))
    return path.read_bytes(), path


@pytest.fixture(scope="module")
def client(model):
    with TestClient(create_app(model, SETTINGS)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def predictor(model):
    return Predictor(model)


def post_form(client, data: bytes, **fields):
    form = {k: (json.dumps(v) if isinstance(v, list) else str(v)) for k, v in fields.items()}
    return client.post("/v1/segment", files={"image": ("image.png", data, "image/png")}, data=form)


def post_json(client, data: bytes, **fields):
    return client.post("/v1/segment", json={"image": base64.b64encode(data).decode(), **fields})


def assert_error(response, status: int, field: str | None = None, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = ErrorResponse.model_validate(response.json()).error
    assert body.status == status
    if field is not None:
        assert body.field == field, body
    if code is not None:
        assert body.code == code, body
    assert "Traceback" not in response.text
    return response.json()["error"]


def assert_same_as_predictor(response, expected) -> None:
    assert response.status_code == 200, response.text
    body = SegmentResponse.model_validate(response.json())
    assert [r.prompt for r in body.results] == [e.prompt for e in expected]
    for got, want in zip(body.results, expected, strict=True):
        assert len(got.detections) == len(want) > 0
        scores = np.array([d.score for d in got.detections], dtype=np.float32)
        boxes = np.array([d.box for d in got.detections], dtype=np.float32)
        np.testing.assert_array_equal(scores, want.scores.numpy())
        np.testing.assert_array_equal(boxes, want.boxes.numpy())
        masks = rle_to_masks([d.rle.model_dump() for d in got.detections])
        assert torch.equal(masks, want.masks)


# ---------------------------------------------------------------------------------------------
# Answers equal the predictor's
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("post", [post_form, post_json], ids=["multipart", "json"])
def test_text_prompts_equal_predictor(client, predictor, image, post):
    data, path = image
    predictor.set_image(path)
    expected = predictor.predict(text=PROMPTS, threshold=0.1)
    response = post(client, data, prompts=PROMPTS, threshold=0.1)
    assert_same_as_predictor(response, expected)
    assert response.json()["image"] == {"width": 203, "height": 150, "sha256": response.json()["image"]["sha256"]}


def test_boxes_with_labels_equal_predictor(client, predictor, image):
    data, path = image
    boxes, labels = [[20.0, 30.0, 120.0, 140.0], [5.0, 5.0, 40.0, 50.0]], [1, 0]
    predictor.set_image(path)
    expected = predictor.predict(text=["dog"], boxes=boxes, box_labels=labels, threshold=0.1, mask_threshold=0.4)
    response = post_form(
        client, data, prompts=["dog"], boxes=boxes, box_labels=labels, threshold=0.1, mask_threshold=0.4
    )
    assert_same_as_predictor(response, expected)


def test_boxes_alone_are_one_visual_prompt(client, predictor, image):
    data, path = image
    predictor.set_image(path)
    expected = predictor.predict(boxes=[[20, 30, 120, 140]], threshold=0.1)
    response = post_json(client, data, boxes=[[20, 30, 120, 140]], threshold=0.1)
    assert_same_as_predictor(response, [expected])
    assert response.json()["results"][0]["prompt"] == "visual"


def test_repeated_form_fields_and_data_url(client, image):
    data, _ = image
    repeated = client.post(
        "/v1/segment",
        files={"image": ("image.png", data, "image/png")},
        data={"prompts": ["cat", "ear"], "threshold": "0.1"},
    )
    data_url = "data:image/png;base64," + base64.b64encode(data).decode()
    as_json = client.post("/v1/segment", json={"image": data_url, "prompts": ["cat", "ear"], "threshold": 0.1})
    assert repeated.status_code == as_json.status_code == 200
    assert repeated.json()["results"] == as_json.json()["results"]


def test_png_and_polygon_outputs(client, image):
    data, _ = image
    rle = post_form(client, data, prompts=["cat"], threshold=0.1).json()["results"][0]["detections"]
    png = post_form(client, data, prompts=["cat"], threshold=0.1, output="png").json()["results"][0]["detections"]
    poly = post_form(client, data, prompts=["cat"], threshold=0.1, output="polygons").json()["results"][0]["detections"]
    assert len(rle) == len(png) == len(poly) > 0
    for r, p, q in zip(rle, png, poly, strict=True):
        assert set(p) == {"score", "box", "png"} and set(q) == {"score", "box", "polygons"}
        decoded = np.array(PIL.Image.open(io.BytesIO(base64.b64decode(p["png"]))))
        assert np.array_equal(decoded, rle_to_masks(r["rle"])[0].numpy())
        assert all(len(ring) % 2 == 0 and len(ring) >= 6 for ring in q["polygons"])
        assert p["score"] == q["score"] == r["score"]


@pytest.mark.parametrize(("radius", "min_iou"), [(15, 0.9), (60, 0.97)])
def test_polygons_trace_the_mask(radius, min_iou):
    # Contours run through the centers of the boundary pixels, so about half of each boundary pixel is
    # lost when pycocotools fills them back in: the bigger the region, the smaller the loss.
    size = 4 * radius
    mask = np.zeros((size, size + 20), dtype=bool)
    yy, xx = np.mgrid[:size, : size + 20]
    mask[(yy - size // 2) ** 2 + (xx - size // 2) ** 2 < radius**2] = True  # a disk
    mask[: radius // 2, -radius // 2 :] = True  # and a rectangle in the corner
    polygons = mask_to_polygons(mask)
    assert len(polygons) == 2
    rles = mask_utils.frPyObjects(polygons, *mask.shape)
    traced = mask_utils.decode(mask_utils.merge(rles)).astype(bool)
    assert (traced & mask).sum() / (traced | mask).sum() > min_iou


# ---------------------------------------------------------------------------------------------
# Caches, model info, schema
# ---------------------------------------------------------------------------------------------


def test_second_request_on_an_image_skips_the_encoder(model, image):
    data, _ = image
    with TestClient(create_app(model, SETTINGS)) as fresh:
        first = post_form(fresh, data, prompts=["cat"], threshold=0.1).json()
        again = post_form(fresh, data, prompts=["cat"], threshold=0.1).json()
        new_prompts = post_form(fresh, data, prompts=["dog", "ear"], threshold=0.1).json()
        other = post_form(fresh, png_bytes(np.full((40, 50, 3), 7, np.uint8)), prompts=["cat"]).json()
        assert fresh.get("/healthz").json()["image_cache_entries"] == 2
    assert first["timings"]["image_cache_hit"] is False and first["timings"]["image_encoder_ms"] > 0
    assert again["timings"]["image_cache_hit"] is True and again["timings"]["image_encoder_ms"] == 0
    assert again["results"] == first["results"]
    assert new_prompts["timings"]["image_cache_hit"] is True and new_prompts["timings"]["image_encoder_ms"] == 0
    assert other["timings"]["image_cache_hit"] is False


def test_feature_cache_is_bounded_lru():
    def features(nbytes: int):
        t = torch.zeros(nbytes // 4)
        return sam3lite.modeling.vision.VisionFeatures((t,), (t,), torch.zeros(0))

    cache = FeatureCache(max_bytes=1000, max_entries=3)
    for key in "abc":
        cache.put(key, features(200), (1, 1))
    assert cache.get("a") is not None  # now the most recent
    cache.put("d", features(200), (1, 1))  # entry bound: evicts b, the least recent
    assert cache.get("b") is None and len(cache) == 3
    cache.put("e", features(900), (1, 1))  # byte bound: evicts until it fits
    assert len(cache) == 1 and cache.nbytes == 900
    cache.put("huge", features(4000), (1, 1))  # never fits: not kept
    assert cache.get("huge") is None and cache.get("e") is not None


def test_model_info_health_and_openapi(client):
    info = client.get("/v1/model").json()
    assert info["name"] == "tiny" and info["variant"] == "custom"
    assert (info["device"], info["dtype"], info["image_size"]) == ("cpu", "float32", 112)
    assert info["limits"]["max_prompts"] == 4
    assert client.get("/healthz").json()["status"] == "ok"
    spec = client.get("/openapi.json").json()
    body = spec["paths"]["/v1/segment"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    assert "SegmentResponse" in spec["components"]["schemas"]
    page = client.get("/")
    assert page.status_code == 200 and "sam3lite" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert client.get("/static/app.js").status_code == 200


def test_variant_is_recognized_from_the_config():
    from sam3lite.checkpoints.variants import VARIANTS
    from sam3lite.serve.app import variant_of

    class Stub:
        config = VARIANTS["s1"].config()

    assert variant_of(Stub()) == "s1"


# ---------------------------------------------------------------------------------------------
# Errors: status, code and field
# ---------------------------------------------------------------------------------------------


def test_api_key(model, image):
    data, _ = image
    keyed = create_app(model, ServeSettings(api_key="s3cret"))
    with TestClient(keyed) as c:
        assert_error(c.get("/v1/model"), 401, "authorization", "unauthorized")
        assert_error(c.get("/v1/model", headers={"X-API-Key": "wrong"}), 401)
        assert_error(post_form(c, data, prompts=["cat"]), 401)
        assert c.get("/v1/model", headers={"X-API-Key": "s3cret"}).status_code == 200
        assert c.get("/v1/model", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/healthz").status_code == 200 and c.get("/").status_code == 200


def test_body_too_large(client, image):
    data, _ = image
    big = data + b"\0" * SETTINGS.max_body_bytes
    assert_error(post_form(client, big, prompts=["cat"]), 413, "body", "body_too_large")

    def chunks():  # no Content-Length: counted while it streams
        for _ in range(10):
            yield b"x" * 50_000

    response = client.post("/v1/segment", content=chunks(), headers={"content-type": "application/json"})
    assert_error(response, 413, "body", "body_too_large")


def test_image_with_too_many_pixels(client):
    data = png_bytes(np.zeros((300, 400, 3), np.uint8))  # 120,000 > 100,000 pixels
    error = assert_error(post_form(client, data, prompts=["cat"]), 413, "image", "image_too_large")
    assert "400x300" in error["message"]


def test_huge_png_headers_get_their_size_in_the_413(client):
    """A header beyond PIL's own bomb limit (20000²) and one that PIL would warn about (12000²)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning must not reach the log
        bomb = assert_error(post_form(client, png_header(20000, 20000), prompts=["cat"]), 413, "image")
        big = assert_error(post_form(client, png_header(12000, 12000), prompts=["cat"]), 413, "image")
    assert bomb["message"] == "image: the image has 400,000,000 pixels; this server accepts at most 100,000"
    assert big["message"] == "image: the image is 12000x12000 = 144,000,000 pixels; this server accepts at most 100,000"


def _truncated_png() -> bytes:
    data = png_bytes(np.random.default_rng(1).integers(0, 256, (80, 90, 3), dtype=np.uint8))
    return data[: len(data) // 2]


BAD_FIELDS = [
    ({"prompts": ["a", "b", "c", "d", "e"]}, "prompts"),
    ({"prompts": ["cat", " "]}, "prompts[1]"),
    ({"prompts": ["x" * 41]}, "prompts[0]"),
    ({"prompts": []}, "prompts"),
    ({"prompts": ["cat"], "boxes": [[1, 1, 5, 5]] * 4}, "boxes"),
    ({"prompts": ["cat"], "boxes": [[50, 10, 20, 40]]}, "boxes[0]"),
    ({"prompts": ["cat"], "boxes": [[1, 2, 3]]}, "boxes[0]"),
    ({"prompts": ["cat"], "boxes": [[1, 2, 30, 40]], "box_labels": [1, 0]}, "box_labels"),
    ({"prompts": ["cat"], "box_labels": [1]}, "box_labels"),
    ({"prompts": ["cat"], "boxes": [[1, 2, 30, 40]], "box_labels": [2]}, "box_labels[0]"),
    ({"prompts": ["cat"], "boxes": [[300, 200, 400, 260]]}, "boxes[0]"),  # outside this 203x150 image
    ({"prompts": ["cat"], "threshold": 2}, "threshold"),
    ({"prompts": ["cat"], "mask_threshold": -0.5}, "mask_threshold"),
    ({"prompts": ["cat"], "output": "jpeg"}, "output"),
    ({"prompt": ["cat"]}, "prompt"),
]


@pytest.mark.parametrize("post", [post_form, post_json], ids=["multipart", "json"])
@pytest.mark.parametrize(("fields", "field"), BAD_FIELDS, ids=[f for _, f in BAD_FIELDS])
def test_bad_fields_are_422_naming_the_field(client, image, post, fields, field):
    assert_error(post(client, image[0], **fields), 422, field, "invalid_field")


def test_form_and_json_specific_field_errors(client, image):
    data, _ = image
    # JSON is typed: one string is not a list (in a form, one 'prompts' field is one prompt).
    assert_error(post_json(client, data, prompts="cat"), 422, "prompts")
    response = client.post("/v1/segment", files={"image": ("i.png", data)}, data={"prompts": "cat", "threshold": "abc"})
    assert_error(response, 422, "threshold")
    response = client.post("/v1/segment", files={"image": ("i.png", data)}, data={"prompts": "cat", "boxes": "[[1, 2"})
    assert_error(response, 422, "boxes")
    response = client.post("/v1/segment", files={"image": (None, "not a file")}, data={"prompts": "cat"})
    assert_error(response, 422, "image")
    response = client.post("/v1/segment", files={"other": ("i.png", data)}, data={"prompts": "cat"})
    assert_error(response, 422, "image")


BAD_IMAGES = {
    "random bytes": b"\x89PNG not really" + bytes(range(256)),
    "truncated png": _truncated_png(),
    "empty": b"",
}


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_corrupt_images_are_422(client, name):
    response = post_form(client, BAD_IMAGES[name], prompts=["cat"])
    error = assert_error(response, 422, "image", "invalid_field")
    assert "BytesIO" not in error["message"]


@pytest.mark.parametrize(
    ("value", "fragment"),
    [("https://example.com/cat.jpg", "URLs are not fetched"), ("not base64!", "base64"), ("", "empty")],
)
def test_bad_json_image_field(client, value, fragment):
    response = client.post("/v1/segment", json={"image": value, "prompts": ["cat"]})
    assert fragment in assert_error(response, 422, "image")["message"]


def test_malformed_bodies(client):
    assert_error(client.post("/v1/segment", content=b"{oops", headers={"content-type": "application/json"}), 400)
    response = client.post("/v1/segment", content=b"--x\r\n", headers={"content-type": "multipart/form-data"})
    assert_error(response, 400, "body")
    assert_error(client.post("/v1/segment", content=b"hi", headers={"content-type": "text/plain"}), 415)
    assert_error(client.get("/v1/nothing"), 404)
    assert_error(client.get("/v1/segment"), 405)


class BlockingPredictor(Predictor):
    """Holds the model worker inside predict() until released."""

    def __init__(self, model) -> None:
        super().__init__(model)
        self.entered, self.release = threading.Event(), threading.Event()

    def predict(self, *args, **kwargs):
        self.entered.set()
        assert self.release.wait(30)
        return super().predict(*args, **kwargs)


def test_full_queue_is_503_with_retry_after(model, image):
    data, _ = image
    predictor = BlockingPredictor(model)
    with TestClient(create_app(predictor, ServeSettings(queue_size=1))) as c:
        results: dict[str, object] = {}
        threads = [
            threading.Thread(target=lambda i=i: results.__setitem__(i, post_form(c, data, prompts=["cat"])))
            for i in range(2)
        ]
        threads[0].start()
        assert predictor.entered.wait(30)  # the first runs, blocked
        threads[1].start()  # the second waits in the queue
        for _ in range(200):
            if c.get("/healthz").json()["queue_waiting"] == 1:
                break
            threading.Event().wait(0.05)
        busy = post_form(c, data, prompts=["cat"])
        predictor.release.set()
        for t in threads:
            t.join(30)
    assert_error(busy, 503, code="queue_full")
    assert int(busy.headers["retry-after"]) >= 1
    assert [results[i].status_code for i in range(2)] == [200, 200]


class FailingPredictor(Predictor):
    def predict(self, *args, **kwargs):
        raise RuntimeError("secret internal detail")


def test_internal_errors_leak_nothing(model, image):
    with TestClient(create_app(FailingPredictor(model)), raise_server_exceptions=False) as c:
        response = post_form(c, image[0], prompts=["cat"])
    error = assert_error(response, 500, code="internal")
    assert "secret" not in response.text and "RuntimeError" not in error["message"]


# ---------------------------------------------------------------------------------------------
# Image decoding matches sam3lite.load_image
# ---------------------------------------------------------------------------------------------


def test_exif_rotation_and_alpha_decode_like_load_image(client, predictor, tmp_path):
    rgba = np.random.default_rng(3).integers(0, 256, (70, 110, 4), dtype=np.uint8)
    png = tmp_path / "alpha.png"
    png.write_bytes(png_bytes(rgba))
    jpeg = tmp_path / "rotated.jpg"
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    PIL.Image.fromarray(rgba[..., :3]).save(jpeg, format="JPEG", exif=exif)
    for path in (png, jpeg):
        predictor.set_image(path)
        expected = predictor.predict(text=["cat"], threshold=0.1)
        response = post_form(client, path.read_bytes(), prompts=["cat"], threshold=0.1)
        assert_same_as_predictor(response, expected)
    assert response.json()["image"]["width"] == 70  # the JPEG, turned upright


def test_cli_reports_bad_settings_and_missing_extra(monkeypatch, capsys):
    from sam3lite.cli import main
    from sam3lite.cli import serve as serve_cli

    assert main(["serve", "--model", "s0", "--max-prompts", "0"]) == 2
    assert "max-prompts must be >= 1" in capsys.readouterr().err
    monkeypatch.setattr(serve_cli, "SERVE_PACKAGES", {"not-installed": ("sam3lite_no_such_module",)})
    assert main(["serve", "--model", "s0"]) == 2
    assert "not-installed: pip install 'sam3lite[serve]'" in capsys.readouterr().err
