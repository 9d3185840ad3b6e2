"""The web page's video mode on the real server: ``sam3lite serve --model SAM3_VIDEO`` (a tiny checkpoint with a
tracker) in its own process, driven by headless Chromium: pick a short WebM, type a phrase, set thresholds in
the tracking settings, Track; the video's frames then show exactly the masks ``POST /v1/track`` answered
(checked pixel by pixel on two frames), labelled with the object ids and phrase; a request the API refuses
shows the API's own message."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from reference import moving_shapes, save_video_reference, spread_detector_queries, tiny_video_config_dict

from sam3lite.processing.rle import rle_to_masks

FRAMES, HEIGHT, WIDTH, FPS = 8, 96, 128, 10
MASK_ALPHA = round(255 * 0.45)  # the page paints masks at this opacity (app.js MASK_ALPHA)
THRESHOLDS = {"score_threshold_detection": 0.3, "new_det_thresh": 0.35, "hotstart_delay": 2}
PHRASE = "square"


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> tuple[Path, Path]:
    """(a tiny ``sam3_video`` checkpoint whose detector finds objects at THRESHOLDS, an 8-frame WebM)."""
    root = tmp_path_factory.mktemp("track_page")
    save_video_reference(tiny_video_config_dict("s0"), root / "model", seed=1, adjust=spread_detector_queries)
    clip = root / "clip.webm"  # VP8: every Chromium plays it (H.264 depends on the build)
    with av.open(str(clip), "w") as container:
        stream = container.add_stream("libvpx", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        for image in moving_shapes(FRAMES, HEIGHT, WIDTH):
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return root / "model", clip


@pytest.fixture(scope="module")
def server(serve_process, files):
    model, _ = files
    return serve_process("--model", str(model), "--device", "cpu", "--dtype", "float32")


def _post(server, clip: Path, settings: dict) -> httpx.Response:
    files = {"video": (clip.name, clip.read_bytes(), "video/webm")}
    data = {"prompts": PHRASE, "settings": json.dumps(settings)}
    with httpx.Client(timeout=120) as http:
        return http.post(f"{server.url}/v1/track", files=files, data=data)


def test_web_page_tracks_a_video(chromium, server, files, tmp_path):
    from playwright.sync_api import sync_playwright

    _, clip = files
    shot = tmp_path / "serve_track_page.png"
    expected = _post(server, clip, THRESHOLDS)  # what the page must show (tracking is deterministic)
    assert expected.status_code == 200, expected.text
    frames = expected.json()["frames"]
    busiest = max(range(FRAMES), key=lambda f: (len(frames[f]["objects"]), f))
    assert frames[busiest]["objects"], "the tiny model found nothing: the test would prove nothing"
    refused = _post(server, clip, {"new_det_thres": 0.5})  # a misspelt threshold
    assert refused.status_code == 422, refused.text

    with sync_playwright() as p:
        browser = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), **chromium, viewport={"width": 1200, "height": 760}
        )
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda err: errors.append(str(err)))
            page.goto(server.url + "/", timeout=30_000)
            page.locator("#model-info", has_text="tracker").wait_for(timeout=30_000)
            page.check("#mode-video")
            assert page.inner_text("#submit") == "Track" and page.is_disabled("#submit")
            assert page.locator("#image-input").is_hidden() and page.locator("#threshold").is_hidden()
            page.set_input_files("#video-input", str(clip))
            page.wait_for_selector("body[data-state=ready]", timeout=15_000)
            assert page.inner_text("#frame-info") == "not tracked yet"

            # Refused: the API's message in the page's status line, nothing drawn.
            page.fill("#prompts", PHRASE)
            page.click("#track-settings-summary")
            page.fill("#track-settings", json.dumps({"new_det_thres": 0.5}))
            page.click("#submit")
            page.wait_for_selector("body[data-state=error]", timeout=60_000)
            assert page.inner_text("#status") == refused.json()["error"]["message"]
            assert "error" in page.get_attribute("#status", "class")
            assert _canvas(page)["mask"] == 0

            page.fill("#track-settings", json.dumps(THRESHOLDS))
            page.click("#submit")
            page.wait_for_selector("body[data-state=done]", timeout=120_000)
            ids = sorted({o["id"] for f in frames for o in f["objects"]})
            assert page.inner_text("#status").startswith(f"{len(ids)} object")
            items = page.locator("#tracks li").all_inner_texts()
            assert [t.split()[:2] for t in items] == [[f"#{i}", PHRASE] for i in ids]

            shown = {}
            for frame in (busiest, 0):
                _show(page, frame)
                canvas = _canvas(page)
                objects = frames[frame]["objects"]
                want = f"frame {frame}: " + ", ".join(f"#{o['id']} {PHRASE}" for o in objects)
                assert page.get_attribute("#video-overlay", "aria-label") == (
                    want if objects else f"{want}no tracked objects"
                )
                n = len(objects)
                assert (
                    page.inner_text("#frame-info")
                    == f"frame {frame + 1} / {FRAMES} · {n} object{'' if n == 1 else 's'}"
                )
                union = (
                    rle_to_masks([o["rle"] for o in objects]).any(0).numpy()
                    if objects
                    else np.zeros((HEIGHT, WIDTH), bool)
                )
                alpha = np.array(canvas["alpha"], np.uint8).reshape(HEIGHT, WIDTH)
                # Mask pixels exactly where the answer's masks are, except under the opaque label tags.
                assert not (alpha == MASK_ALPHA)[~union].any()
                assert ((alpha == MASK_ALPHA) | (alpha == 255))[union].all()
                assert set(np.unique(alpha)) <= {0, MASK_ALPHA, 255}
                assert (alpha == MASK_ALPHA).sum() > 0 if objects else (alpha == 0).all()
                shown[frame] = canvas["where"]
            assert busiest == 0 or shown[busiest] != shown[0]

            # Playing moves the overlay along with the video, to its last frame.
            page.click("#play")
            page.wait_for_function("() => document.getElementById('video').ended", timeout=30_000)
            page.wait_for_selector(f"body[data-frame='{FRAMES - 1}']", timeout=5_000)
            page.screenshot(path=str(shot))
            assert not errors, errors
        finally:
            browser.close()
    assert shot.stat().st_size > 5_000
    keep = os.environ.get("SAM3LITE_TEST_ARTIFACTS")
    if keep:  # CI or a developer who wants the picture: copy it out of pytest's temporary folder
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, Path(keep) / shot.name)


def _show(page, frame: int) -> None:
    """Pick a frame with the page's slider and wait until the canvas shows it (and the video has seeked)."""
    page.locator("#frame-slider").evaluate(f"s => {{ s.value = '{frame}'; s.dispatchEvent(new Event('input')); }}")
    page.wait_for_selector(f"body[data-frame='{frame}']", timeout=10_000)
    page.wait_for_function("() => !document.getElementById('video').seeking", timeout=10_000)
    assert page.get_attribute("body", "data-frame") == str(frame)


def _canvas(page) -> dict:
    """The overlay's alpha channel (row-major) and a checksum of where its mask pixels are."""
    return page.evaluate(
        f"""() => {{
            const c = document.getElementById('video-overlay');
            const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
            const alpha = [];
            let mask = 0, where = 0;
            for (let i = 3; i < d.length; i += 4) {{
                alpha.push(d[i]);
                if (d[i] === {MASK_ALPHA}) {{ mask++; where = (where + i * 2654435761) % 4294967291; }}
            }}
            return {{alpha, mask, where}};
        }}"""
    )
