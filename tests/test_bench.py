"""The benchmark runs end to end on a tiny checkpoint and reports every measurement."""

from __future__ import annotations

import json

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
    assert len(timed) == 6 and all(row["sam3lite_s"] > 0 and row["reference_s"] > 0 for row in timed)
    errors = [row for row in report["rows"] if "pred_logits" in row]
    assert errors and errors[0]["pred_logits"] < 1e-4  # float32 against the float32 reference
    assert "| image encoder (float32) |" in capsys.readouterr().out
