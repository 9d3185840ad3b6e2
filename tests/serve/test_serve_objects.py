"""``POST /v1/segment_object`` in process (FastAPI's TestClient) on a tiny checkpoint with SAM3's tracker:
answers equal ``Predictor.predict_object``'s, refinement through a session equals feeding the last
low-res logits back by hand, clicks reuse the image encoding, and every error names its field."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import PIL.Image
import pytest
import torch
from fastapi.testclient import TestClient
from reference import save_reference, save_video_reference, tiny_config_dict, tiny_video_config_dict

import sam3lite
from sam3lite import Predictor
from sam3lite.processing.rle import rle_to_masks
from sam3lite.serve import ServeSettings, create_app
from sam3lite.serve.schemas import ErrorResponse, ObjectResponse
from sam3lite.serve.sessions import ObjectState, SessionStore

SETTINGS = ServeSettings(model_name="tiny", max_image_pixels=100_000, max_objects=4, max_points=4, queue_size=1)
IMAGE = np.random.default_rng(0).integers(0, 256, (150, 203, 3), dtype=np.uint8)


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    directory = tmp_path_factory.mktemp("tiny_video")
    save_video_reference(tiny_video_config_dict("s0"), directory, seed=0)
    return sam3lite.load(directory)


@pytest.fixture(scope="module")
def image(tmp_path_factory):
    """(file bytes, path) of a 203x150 random PNG."""
    path = tmp_path_factory.mktemp("img") / "image.png"
    path.write_bytes(png_bytes(IMAGE))
    return path.read_bytes(), path


@pytest.fixture(scope="module")
def client(model):
    with TestClient(create_app(model, SETTINGS)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def predictor(model, image):
    predictor = Predictor(model)
    predictor.set_image(image[1])
    return predictor


def post_form(client, data: bytes | None, **fields):
    form = {k: (json.dumps(v) if isinstance(v, (list, dict)) else str(v)) for k, v in fields.items()}
    files = None if data is None else {"image": ("image.png", data, "image/png")}
    if files is None:  # a multipart body without a file: send the fields as parts
        files = {k: (None, v) for k, v in form.items()}
        form = None
    return client.post("/v1/segment_object", files=files, data=form)


def post_json(client, data: bytes | None, **fields):
    body = fields if data is None else {"image": base64.b64encode(data).decode(), **fields}
    return client.post("/v1/segment_object", json=body)


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


def assert_same_object(answer: dict, expected, rtol: float = 0.0) -> None:
    """One object of a response against a Predictor ``ObjectResult``."""
    masks = rle_to_masks([m["rle"] for m in answer["masks"]])
    scores = np.array([m["iou_score"] for m in answer["masks"]], dtype=np.float32)
    if rtol == 0:
        assert torch.equal(masks, expected.masks)
        np.testing.assert_array_equal(scores, expected.iou_scores.numpy())
    else:  # a different batch: float rounding may flip pixels right at the threshold
        assert (masks != expected.masks).float().mean() < 1e-3
        np.testing.assert_allclose(scores, expected.iou_scores.numpy(), rtol=rtol, atol=1e-6)
    assert answer["best"] == expected.best
    assert answer["object_score_logit"] == pytest.approx(expected.object_score_logit, rel=max(rtol, 1e-7))
    assert answer["object_score"] == pytest.approx(1 / (1 + np.exp(-expected.object_score_logit)))
    assert masks.any(), "degenerate test: the mask is empty"


# ---------------------------------------------------------------------------------------------
# Answers equal the predictor's
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("post", [post_form, post_json], ids=["multipart", "json"])
def test_clicks_equal_predictor(client, predictor, image, post):
    response = post(client, image[0], objects=[{"points": [[50, 60, 1], [120.5, 90, 0]]}])
    assert response.status_code == 200, response.text
    body = ObjectResponse.model_validate(response.json()).model_dump()
    expected = predictor.predict_object(points=[[50, 60], [120.5, 90]], point_labels=[1, 0])
    [answer] = response.json()["objects"]
    assert_same_object(answer, expected)
    assert len(answer["masks"]) == 3  # multimask by default
    assert answer["object_id"] == 1 and answer["points"] == [[50, 60, 1], [120.5, 90, 0]] and answer["box"] is None
    assert body["image"]["width"] == 203 and body["image"]["height"] == 150 and body["session"]


def test_boxes_and_several_objects(client, predictor, image):
    objects = [
        {"points": [[50, 60]]},  # [x, y]: a positive click
        {"box": [10, 20, 120, 140]},
        {"points": [[150, 40, 1]], "box": [100, 5, 200, 100]},
        {"points": [[30, 130, 1]]},  # batched with the first object (same prompt kinds)
    ]
    response = post_json(client, image[0], objects=objects, multimask=False, output="rle")
    assert response.status_code == 200, response.text
    answers = response.json()["objects"]
    assert [a["object_id"] for a in answers] == [1, 2, 3, 4]
    expected = [
        predictor.predict_object(points=[[50, 60]], point_labels=[1], multimask_output=False),
        predictor.predict_object(box=[10, 20, 120, 140], multimask_output=False),
        predictor.predict_object(points=[[150, 40]], point_labels=[1], box=[100, 5, 200, 100], multimask_output=False),
        predictor.predict_object(points=[[30, 130]], point_labels=[1], multimask_output=False),
    ]
    for answer, want in zip(answers, expected, strict=True):
        assert len(answer["masks"]) == 1
        assert_same_object(answer, want, rtol=1e-5)
    assert answers[1]["box"] == [10, 20, 120, 140] and answers[1]["points"] == []


def test_png_and_polygon_outputs(client, image):
    objects = [{"points": [[50, 60, 1]]}]
    rle = post_form(client, image[0], objects=objects).json()["objects"][0]["masks"]
    png = post_form(client, image[0], objects=objects, output="png").json()["objects"][0]["masks"]
    poly = post_form(client, image[0], objects=objects, output="polygons").json()["objects"][0]["masks"]
    for r, p, q in zip(rle, png, poly, strict=True):
        assert set(p) == {"iou_score", "png"} and set(q) == {"iou_score", "polygons"}
        decoded = np.array(PIL.Image.open(io.BytesIO(base64.b64decode(p["png"]))))
        assert np.array_equal(decoded, rle_to_masks(r["rle"])[0].numpy())
        assert p["iou_score"] == q["iou_score"] == r["iou_score"]


# ---------------------------------------------------------------------------------------------
# Refinement through a session
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("post", [post_form, post_json], ids=["multipart", "json"])
def test_refinement_reuses_the_last_logits_kept_by_the_server(client, predictor, image, post):
    first = post(client, image[0], objects=[{"points": [[60, 70, 1]]}]).json()
    session = first["session"]
    # The next click carries only the session, the object id and the new click: no image, no logits.
    second = post(client, None, session=session, objects=[{"object_id": 1, "points": [[140, 100, 0]]}], multimask=False)
    assert second.status_code == 200, second.text
    second = second.json()
    assert second["session"] == session and second["timings"]["image_cache_hit"] is True
    [answer] = second["objects"]
    assert answer["object_id"] == 1 and answer["points"] == [[60, 70, 1], [140, 100, 0]]

    click = predictor.predict_object(points=[[60, 70]], point_labels=[1])
    refined = predictor.predict_object(
        points=[[60, 70], [140, 100]],
        point_labels=[1, 0],
        mask_input=click.low_res_logits[click.best],
        multimask_output=False,
    )
    assert_same_object(answer, refined)

    # A third click, refining from the second answer; the image may come along too.
    third = post(
        client, image[0], session=session, objects=[{"object_id": 1, "points": [[20, 20, 0]]}], multimask=False
    )
    again = predictor.predict_object(
        points=[[60, 70], [140, 100], [20, 20]],
        point_labels=[1, 0, 0],
        mask_input=refined.low_res_logits[0],
        multimask_output=False,
    )
    assert_same_object(third.json()["objects"][0], again)
    # A new object in the same session gets the next id; the first one is left as it was.
    fourth = post(client, None, session=session, objects=[{"box": [5, 5, 100, 100]}]).json()
    assert fourth["objects"][0]["object_id"] == 2


def test_refinement_from_a_chosen_candidate(client, predictor, image):
    first = post_json(client, image[0], objects=[{"points": [[60, 70, 1]]}]).json()
    click = predictor.predict_object(points=[[60, 70]], point_labels=[1])
    pick = (click.best + 1) % 3
    second = post_json(
        client, None, session=first["session"], objects=[{"object_id": 1, "points": [[90, 40, 1]], "mask_index": pick}]
    )
    refined = predictor.predict_object(
        points=[[60, 70], [90, 40]], point_labels=[1, 1], mask_input=click.low_res_logits[pick]
    )
    assert_same_object(second.json()["objects"][0], refined)


def test_clicks_and_text_on_one_image_cost_one_encoding(model, image, monkeypatch):
    """The image encoder runs once per image, the tracker's neck once per run of requests on it."""
    calls = {"vit": 0, "tracker_neck": 0}

    def counting(name, method):
        def wrapped(*args, **kwargs):
            calls[name] += 1
            return method(*args, **kwargs)

        return wrapped

    monkeypatch.setattr(model, "get_vision_features", counting("vit", model.get_vision_features))
    monkeypatch.setattr(model, "get_tracker_features", counting("tracker_neck", model.get_tracker_features))
    other = png_bytes(np.full((40, 50, 3), 7, np.uint8))
    with TestClient(create_app(model, SETTINGS)) as fresh:
        text = fresh.post("/v1/segment", files={"image": ("i.png", image[0])}, data={"prompts": "cat"}).json()
        first = post_form(fresh, image[0], objects=[{"points": [[50, 60, 1]]}]).json()
        session = first["session"]
        for x in (70, 90, 110):
            click = post_json(fresh, None, session=session, objects=[{"object_id": 1, "points": [[x, 40, 0]]}]).json()
            assert click["timings"]["image_cache_hit"] is True and click["timings"]["image_encoder_ms"] == 0
        box = post_form(fresh, image[0], session=session, objects=[{"box": [0, 0, 90, 90]}]).json()
        assert calls == {"vit": 1, "tracker_neck": 1}
        post_form(fresh, other, objects=[{"points": [[10, 10, 1]]}])  # another image...
        back = post_json(fresh, None, session=session, objects=[{"object_id": 2, "points": [[60, 60]]}]).json()
        health = fresh.get("/healthz").json()
    assert text["timings"]["image_cache_hit"] is False
    assert first["timings"]["image_cache_hit"] is True and box["timings"]["image_cache_hit"] is True
    assert back["timings"]["image_cache_hit"] is True and back["objects"][0]["object_id"] == 2
    assert calls == {"vit": 2, "tracker_neck": 3}  # ... and back: its features came from the cache
    assert health["sessions"] == 2 and health["image_cache_entries"] == 2


# ---------------------------------------------------------------------------------------------
# Errors: status, code and field
# ---------------------------------------------------------------------------------------------


def test_model_without_tracker_says_how_to_start_one(tmp_path, image):
    save_reference(tiny_config_dict("s0"), tmp_path, seed=11)
    with TestClient(create_app(sam3lite.load(tmp_path), ServeSettings(model_name="s0"))) as c:
        error = assert_error(post_form(c, image[0], objects=[{"points": [[5, 5]]}]), 400, code="no_tracker")
        assert c.get("/v1/model").json()["tracker"] is False
    assert "sam3lite serve --model s0 --tracker sam3" in error["message"]


BAD_OBJECTS = [
    ({"objects": []}, "objects"),
    ({"objects": [{"points": [[1, 1]]}] * 5}, "objects"),
    ({"objects": [{}]}, "objects[0]"),
    ({"objects": [{"points": [[1, 1]] * 5}]}, "objects[0].points"),
    ({"objects": [{"points": [[10, 10, 2]]}]}, "objects[0].points[0]"),
    ({"objects": [{"points": [[10, 10, 0.5]]}]}, "objects[0].points[0]"),
    ({"objects": [{"points": [[10]]}]}, "objects[0].points[0]"),
    ({"objects": [{"points": [[10, 10, 1, 1]]}]}, "objects[0].points[0]"),
    ({"objects": [{"points": [[10, 10], [250, 10]]}]}, "objects[0].points[1]"),  # outside this 203x150 image
    ({"objects": [{"points": [[10, -1]]}]}, "objects[0].points[0]"),
    ({"objects": [{"points": [[1, 1]]}, {"box": [50, 10, 20, 40]}]}, "objects[1].box"),
    ({"objects": [{"box": [1, 2, 3]}]}, "objects[0].box"),
    ({"objects": [{"box": [210, 160, 300, 200]}]}, "objects[0].box"),
    ({"objects": [{"object_id": 1, "points": [[1, 1]]}]}, "objects[0].object_id"),
    ({"objects": [{"object_id": 0, "points": [[1, 1]]}]}, "objects[0].object_id"),
    ({"objects": [{"mask_index": 1, "points": [[1, 1]]}]}, "objects[0].mask_index"),
    ({"objects": [{"points": [[1, 1]], "label": 1}]}, "objects[0].label"),
    ({"objects": [{"points": [[1, 1]]}], "multimask": "maybe"}, "multimask"),
    ({"objects": [{"points": [[1, 1]]}], "output": "jpeg"}, "output"),
    ({"objects": [{"points": [[1, 1]]}], "prompts": ["cat"]}, "prompts"),
]


@pytest.mark.parametrize("post", [post_form, post_json], ids=["multipart", "json"])
@pytest.mark.parametrize(("fields", "field"), BAD_OBJECTS, ids=[f"{i}:{f}" for i, (_, f) in enumerate(BAD_OBJECTS)])
def test_bad_fields_are_422_naming_the_field(client, image, post, fields, field):
    assert_error(post(client, image[0], **fields), 422, field, "invalid_field")


def test_session_errors(client, image):
    objects = [{"points": [[50, 60, 1]]}]
    assert_error(post_json(client, None, objects=objects), 422, "image", "invalid_field")
    error = assert_error(post_json(client, None, session="nope", objects=objects), 404, "session", "unknown_session")
    assert "send the image without a session" in error["message"]
    assert_error(post_form(client, image[0], session="nope", objects=objects), 404, "session", "unknown_session")

    session = post_json(client, image[0], objects=objects, multimask=False).json()["session"]
    refine = [{"object_id": 7, "points": [[1, 1]]}]
    assert_error(
        post_json(client, None, session=session, objects=refine), 404, "objects[0].object_id", "unknown_object"
    )
    too_far = [{"object_id": 1, "mask_index": 1, "points": [[1, 1]]}]  # the answer had one mask
    assert_error(post_json(client, None, session=session, objects=too_far), 422, "objects[0].mask_index")
    twice = [{"object_id": 1, "points": [[1, 1]]}] * 2
    assert_error(post_json(client, None, session=session, objects=twice), 422, "objects[1].object_id")
    nothing_new = [{"object_id": 1}]
    assert_error(post_json(client, None, session=session, objects=nothing_new), 422, "objects[0]")
    # max_points counts the object's earlier clicks: 1 + 3 is fine, one more is not.
    three = [{"object_id": 1, "points": [[1, 1], [2, 2], [3, 3]]}]
    assert post_json(client, None, session=session, objects=three).status_code == 200
    one_more = [{"object_id": 1, "points": [[4, 4]]}]
    assert_error(post_json(client, None, session=session, objects=one_more), 422, "objects[0].points")
    other = png_bytes(np.zeros((30, 40, 3), np.uint8))
    error = assert_error(post_form(client, other, session=session, objects=objects), 422, "session")
    assert "another image" in error["message"]


def test_session_whose_image_left_the_cache_asks_for_the_image(model, image):
    with TestClient(create_app(model, ServeSettings(image_cache_bytes=0))) as c:
        first = post_json(c, image[0], objects=[{"points": [[50, 60, 1]]}]).json()
        refine = [{"object_id": 1, "points": [[80, 90, 0]]}]
        error = assert_error(post_json(c, None, session=first["session"], objects=refine), 409, "image")
        assert error["code"] == "image_not_cached" and "send the image again" in error["message"]
        resent = post_json(c, image[0], session=first["session"], objects=refine)  # the way out
        assert resent.status_code == 200 and resent.json()["objects"][0]["points"] == [[50, 60, 1], [80, 90, 0]]


def test_openapi_describes_the_object_endpoint(client):
    spec = client.get("/openapi.json").json()
    post = spec["paths"]["/v1/segment_object"]["post"]
    body = post["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    assert "$defs" not in json.dumps(body)  # nested models inlined: OpenAPI would not resolve them
    item = body["application/json"]["schema"]["properties"]["objects"]["items"]
    assert set(item["properties"]) == {"object_id", "points", "box", "mask_index"}
    assert {"400", "404", "409", "422"} <= set(post["responses"])
    assert "ObjectResponse" in spec["components"]["schemas"]
    assert client.get("/v1/model").json()["tracker"] is True


# ---------------------------------------------------------------------------------------------
# The session store's bounds
# ---------------------------------------------------------------------------------------------


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def state(nbytes: int) -> ObjectState:
    return ObjectState(np.zeros((0, 3), np.float32), None, torch.zeros(nbytes // 4), best=0)


def test_session_store_bounds_bytes_count_and_age():
    clock = Clock()
    store = SessionStore(max_bytes=1000, max_sessions=2, ttl_s=60, clock=clock)
    a = store.new_session("key-a", (10, 10))
    assert store.session(a.id) is None  # not stored before its first answer
    store.save(a, {a.new_object_id(): state(400), a.new_object_id(): state(400)})
    assert store.session(a.id) is a and store.nbytes == 800 and store.object(a.id, 2) is not None
    store.save(a, {a.new_object_id(): state(400)})  # byte bound: the least recently used object goes
    assert store.object(a.id, 1) is None and store.object(a.id, 3) is not None and store.nbytes == 800
    store.save(a, {4: state(4000)})  # never fits: not kept, the others stay
    assert store.object(a.id, 4) is None and store.object_count == 2

    b, c = store.new_session("key-b", (10, 10)), store.new_session("key-c", (10, 10))
    store.save(b, {1: state(100)})
    clock.now = 10
    store.session(a.id)  # a is now more recent than b
    store.save(c, {1: state(100)})  # count bound: b, the least recently used session, goes with its objects
    assert store.session(b.id) is None and store.object(b.id, 1) is None
    assert store.session(a.id) is a and len(store) == 2

    clock.now = 50
    assert store.session(a.id) is a
    clock.now = 75  # c was last used at 10: expired; a at 50: kept
    assert store.session(c.id) is None and store.object(c.id, 1) is None and len(store) == 1
    clock.now = 200
    assert len(store) == 0 and store.object_count == 0 and store.nbytes == 0


def test_cli_tracker_option_and_session_settings(capsys):
    from sam3lite.cli import main
    from sam3lite.cli.serve import _tracker

    assert _tracker(None) is None and _tracker("none") is False and _tracker("sam3") == "sam3"
    assert main(["serve", "--model", "s0", "--session-ttl", "0"]) == 2
    assert "session-ttl must be > 0" in capsys.readouterr().err
