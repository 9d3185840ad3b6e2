"""Click to segment on the real server: ``sam3lite serve --model DETECTOR --tracker SAM3_VIDEO`` in its own
process, answered over HTTP like the Predictor, and its web page driven by headless Chromium: click on
the image, see the object's mask, refine it with negative clicks (right click, shift+click) that send
only the session and the new click, start a second object with a box, still run text prompts."""

from __future__ import annotations

import io
import json
import os
import shutil
from pathlib import Path

import httpx
import numpy as np
import PIL.Image
import pytest
from reference import save_video_reference, tiny_video_config_dict

import sam3lite
from sam3lite import Predictor
from sam3lite.processing.rle import rle_to_masks

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
MASK_ALPHA = round(255 * 0.45)  # the page paints masks at this opacity (app.js MASK_ALPHA)
# Before the page's own script: keep the form fields of every /v1/segment_object request (a file as
# "(file)"), which the DevTools protocol does not report for bodies holding a file.
RECORD_OBJECT_REQUESTS = """
window.sentObjectForms = [];
const originalFetch = window.fetch;
window.fetch = (url, options) => {
  if (String(url).includes("segment_object")) {
    const fields = {};
    for (const [name, value] of options.body.entries()) fields[name] = typeof value === "string" ? value : "(file)";
    window.sentObjectForms.push(fields);
  }
  return originalFetch(url, options);
};
"""


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> tuple[Path, Path]:
    """(a detector-only checkpoint, a ``sam3_video`` checkpoint whose tracker fits it)."""
    video = tmp_path_factory.mktemp("sam3_video")
    save_video_reference(tiny_video_config_dict("s0"), video, seed=0)
    detector = tmp_path_factory.mktemp("detector")
    sam3lite.load(video, tracker=False).save_pretrained(detector)
    return detector, video


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> Path:
    array = np.random.default_rng(3).integers(0, 256, (360, 480, 3), dtype=np.uint8)
    path = tmp_path_factory.mktemp("images") / "upload.png"
    buffer = io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, format="PNG")
    path.write_bytes(buffer.getvalue())
    return path


@pytest.fixture(scope="module")
def server(serve_process, checkpoints):
    detector, video = checkpoints
    return serve_process("--model", str(detector), "--tracker", str(video), "--device", "cpu", "--dtype", "float32")


def test_tracker_option_serves_clicks_like_the_predictor(server, checkpoints, image):
    detector, video = checkpoints
    predictor = Predictor(sam3lite.load(detector, tracker=video))
    predictor.set_image(image)
    expected = predictor.predict_object(points=[[100, 80], [300, 200]], point_labels=[1, 0])
    with httpx.Client(timeout=60) as http:
        assert http.get(f"{server.url}/v1/model").json()["tracker"] is True
        objects = json.dumps([{"points": [[100, 80, 1], [300, 200, 0]]}])
        files = {"image": ("i.png", image.read_bytes(), "image/png")}
        response = http.post(f"{server.url}/v1/segment_object", files=files, data={"objects": objects})
    assert response.status_code == 200, response.text
    [answer] = response.json()["objects"]
    masks = rle_to_masks([m["rle"] for m in answer["masks"]])
    assert (masks != expected.masks).float().mean() < 1e-3  # pixels right at the threshold may flip
    scores = [m["iou_score"] for m in answer["masks"]]
    np.testing.assert_allclose(scores, expected.iou_scores.numpy(), rtol=1e-4, atol=1e-5)
    assert answer["object_score_logit"] == pytest.approx(expected.object_score_logit, rel=1e-4, abs=1e-5)


def test_web_page_click_to_segment(chromium, server, image, tmp_path):
    from playwright.sync_api import sync_playwright

    shot = tmp_path / "serve_clicks.png"
    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh profile per run
            executable_path=chromium,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1200, "height": 760},
        )
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.add_init_script(RECORD_OBJECT_REQUESTS)
            page.goto(server.url + "/", timeout=30_000)
            page.locator("#model-info", has_text="tracker").wait_for(timeout=30_000)
            page.set_input_files("#image-input", str(image))
            page.wait_for_selector("body[data-state=ready]", timeout=15_000)
            page.check("#mode-click")
            assert page.get_attribute("body", "data-mode") == "click"
            area = page.locator("#overlay").bounding_box()
            x0, y0 = area["x"], area["y"]
            assert area["width"] == 480  # shown unscaled: page pixels are image pixels

            page.mouse.click(x0 + 100, y0 + 80)  # a positive click
            first = _wait_for_answer(page, 1)
            assert first["count"] > 0, page.inner_text("#status")
            assert page.locator("#objects li").count() == 1 and "1 click" in page.inner_text("#objects li")

            page.mouse.click(x0 + 300, y0 + 200, button="right")  # a negative click refines the object
            second = _wait_for_answer(page, 2)
            assert second != first and second["count"] > 0

            page.keyboard.down("Shift")  # shift+click: negative too
            page.mouse.click(x0 + 60, y0 + 300)
            page.keyboard.up("Shift")
            third = _wait_for_answer(page, 3)
            assert third != second
            assert "3 clicks" in page.inner_text("#objects li")
            page.screenshot(path=str(shot))

            # The first request sent the image; the refinements only the session and the new click.
            sent = page.evaluate("window.sentObjectForms")
            assert "image" in sent[0] and "session" not in sent[0]
            assert all("image" not in s and "session" in s for s in sent[1:])
            assert _near(json.loads(sent[1]["objects"]), [{"object_id": 1, "points": [[300, 200, 0]]}])
            assert _near(json.loads(sent[2]["objects"]), [{"object_id": 1, "points": [[60, 300, 0]]}])
            assert [s["multimask"] for s in sent] == ["true", "false", "false"]

            page.click("#new-object")  # a second object, from a box dragged around it
            page.mouse.move(x0 + 250, y0 + 40)
            page.mouse.down()
            page.mouse.move(x0 + 420, y0 + 160, steps=5)
            page.mouse.up()
            both = _wait_for_answer(page, 4)
            assert both["count"] > 0
            assert page.locator("#objects li").count() == 2
            assert "+ box" in page.locator("#objects li").nth(1).inner_text()
            fourth = page.evaluate("window.sentObjectForms")[3]
            assert _near(json.loads(fourth["objects"]), [{"points": [], "box": [250, 40, 420, 160]}])

            page.locator("#objects li input").first.uncheck()  # hide the first object
            assert _mask_pixels(page)["count"] < both["count"]

            # Text prompts still work, on the image features the clicks already computed.
            page.check("#mode-find")
            page.fill("#prompts", "cat")
            page.locator("#threshold").evaluate("t => { t.value = '0'; t.dispatchEvent(new Event('input')); }")
            page.click("#submit")
            page.locator("#status", has_text="cached").wait_for(timeout=60_000)
            assert page.locator("#results li").count() == 1
            assert not errors, errors
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    keep = os.environ.get("SAM3LITE_TEST_ARTIFACTS")
    if keep:  # CI or a developer who wants the picture: copy it out of pytest's temporary folder
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)


def _wait_for_answer(page, n: int) -> dict[str, int]:
    """Wait for the page's n-th click answer; the mask pixels it then shows."""
    page.wait_for_selector(f"body[data-answered='{n}']", timeout=60_000)
    assert page.get_attribute("body", "data-state") == "done", page.inner_text("#status")
    return _mask_pixels(page)


def _mask_pixels(page) -> dict[str, int]:
    """Overlay pixels painted at the masks' opacity: their count and a checksum of where they are."""
    return page.evaluate(
        f"""() => {{
            const c = document.getElementById('overlay');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            let count = 0, where = 0;
            for (let i = 3; i < d.length; i += 4) {{
                if (d[i] === {MASK_ALPHA}) {{ count++; where = (where + i * 2654435761) % 4294967291; }}
            }}
            return {{count, where}};
        }}"""
    )


def _near(got, want) -> bool:
    """Equal JSON, numbers within half a pixel (the page maps screen pixels to image pixels)."""
    if isinstance(want, dict):
        return isinstance(got, dict) and got.keys() == want.keys() and all(_near(got[k], want[k]) for k in want)
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(_near, got, want))
    return abs(got - want) <= 0.5
