"""One tiny checkpoint exported to ONNX once per test session, through the command line as a user would."""

from __future__ import annotations

import pytest
from export_helpers import run_cli
from reference import save_reference, tiny_config_dict

import sam3lite


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory):
    """(checkpoint dir, export dir, the checkpoint loaded in PyTorch float32)."""
    root = tmp_path_factory.mktemp("onnx")
    checkpoint = root / "ckpt"
    save_reference(tiny_config_dict("s0"), checkpoint, seed=11)
    out = root / "export"
    result = run_cli("export", "onnx", "--model", str(checkpoint), "--out", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "done in" in result.stdout and result.stderr.strip() == "", result.stderr
    return checkpoint, out, sam3lite.load(checkpoint)
