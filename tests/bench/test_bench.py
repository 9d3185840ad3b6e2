"""The benchmark runs end to end on a tiny checkpoint and reports every measurement."""

from __future__ import annotations

import json

import torch
from reference import save_reference, tiny_config_dict

from sam3lite.cli import main


def test_bench_on_tiny_checkpoint(tmp_path, capsys):
    save_reference(tiny_config_dict("s0"), tmp_path / "ckpt")
    code = main(
        [
            "bench",
            "--checkpoint",
            str(tmp_path / "ckpt"),
            "--repeats",
            "1",
            "--batch",
            "2",
            "--prompts",
            "3",
            "--json",
            str(tmp_path / "report.json"),
        ]
    )
    assert code == 0
    report = json.loads((tmp_path / "report.json").read_text())
    timed = [row for row in report["rows"] if "speedup" in row]
    assert len(timed) == 7 and all(row["sam3lite_s"] > 0 and row["reference_s"] > 0 for row in timed)
    assert timed[-1]["name"] == "load to first result (float32)"
    # CPU peak memory is the resident-set growth during each measurement: present and sane.
    assert all(row["sam3lite_peak_mib"] is not None and row["sam3lite_peak_mib"] >= 0 for row in timed)
    errors = [row for row in report["rows"] if "pred_logits" in row]
    assert errors and errors[0]["pred_logits"] < 1e-4  # float32 against the float32 reference
    assert "| image encoder (float32) |" in capsys.readouterr().out


def test_peak_memory_sees_a_cpu_allocation():
    from sam3lite.bench import PeakMemory

    with PeakMemory(torch.device("cpu")) as peak:
        block = torch.ones(64, 2**20 // 4 * 4)  # 256 MiB, touched
        block.sum()
    del block
    assert peak.mib is not None and 200 < peak.mib < 400


def test_bench_int8_against_the_float32_reference(tmp_path, capsys):
    save_reference(tiny_config_dict("s0"), tmp_path / "ckpt")
    args = ["bench", "--checkpoint", str(tmp_path / "ckpt"), "--repeats", "1", "--batch", "1", "--prompts", "2"]
    assert main([*args, "--quantize", "int8", "--skip", "load", "--json", str(tmp_path / "r.json")]) == 0
    rows = json.loads((tmp_path / "r.json").read_text())["rows"]
    int8 = {row["name"]: row for row in rows if "int8" in row["name"]}
    f32 = {row["name"]: row for row in rows if row["name"].endswith("(float32)")}
    encoder = int8["image encoder (float32 + int8 image encoder)"]
    # The reference is timed once and its numbers reused for the int8 rows.
    assert encoder["reference_s"] == f32["image encoder (float32)"]["reference_s"]
    errors = int8["rel. error vs float32 reference (float32 + int8 image encoder)"]
    assert 0 < errors["pred_boxes"] < 5e-2
    capsys.readouterr()
    assert main([*args, "--quantize", "int8", "--device", "cuda"]) == 2
    assert "--quantize int8 runs on the CPU only" in capsys.readouterr().err


def test_point_prompt_bench_on_a_tiny_tracker():
    """The --tracker rows on tiny weights: both sides answer the same click (the bench checks it too)."""
    from reference import tiny_video_config_dict

    from sam3lite.bench.tracker import format_tracker_markdown, run_tracker

    report = run_tracker(repeats=1, video_config=tiny_video_config_dict("s0"))
    names = [row["name"] for row in report["rows"]]
    assert names[0].startswith("encode an image") and names[1].startswith("one click") and len(names) == 3
    assert all(row["sam3lite_s"] > 0 and row["reference_s"] > 0 for row in report["rows"])
    assert report["errors"]["low_res_logits"] < 1e-4 and report["errors"]["iou_scores"] < 1e-4
    assert report["errors"]["mask pixels that differ"] < 1e-3
    assert "one click costs" in format_tracker_markdown(report)


def test_video_bench_on_the_tiny_config():
    from sam3lite.bench.video import format_video_markdown, run_video, tiny_video_config

    report = run_video(objects=(1, 2), num_frames=4, tiny_config=tiny_video_config())
    assert [row["objects"] for row in report["rows"]] == [1, 2]
    for row in report["rows"]:
        assert row["reference"]["fps"] > 0 and row["sam3lite"]["fps"] > 0 and row["speedup"] > 0
    assert "| 2 |" in format_video_markdown(report)


def test_text_video_bench_on_the_tiny_config():
    from sam3lite.bench.video import tiny_video_config
    from sam3lite.bench.video_text import format_video_text_markdown, run_video_text

    report = run_video_text(objects=2, num_frames=3, tiny_config=tiny_video_config(), repeats=2)
    row = report["rows"][0]
    assert row["sam3lite"]["objects"] == 2 and len(row["sam3lite"]["fps_runs"]) == 2
    assert row["reference"]["fps"] > 0 and row["speedup"] > 0
    assert "medians of 2 interleaved runs" in format_video_text_markdown(report)
