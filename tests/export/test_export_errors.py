"""Exports that cannot work fail with one clear line, before any work."""

from __future__ import annotations

import sys

import pytest
from export_helpers import run_cli
from reference import save_reference, tiny_config_dict

import sam3lite
from sam3lite.export import ExportError, to_onnx


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ckpt")
    save_reference(tiny_config_dict("s0"), directory)
    return directory


def test_refuses_int8_quantized_and_folded_models(checkpoint, tmp_path):
    quantized = sam3lite.load(checkpoint).quantize_image_encoder()
    with pytest.raises(ExportError, match="int8-quantized in PyTorch.*--quantize int8"):
        to_onnx(quantized, tmp_path / "a")
    folded = sam3lite.load(checkpoint).reparameterize()
    with pytest.raises(ExportError, match="RepMixer branches are folded"):
        to_onnx(folded, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"opset": 12}, "opset 12 is not supported; use 17..23"),
        ({"dtype": "bfloat16"}, "dtype must be one of float32, float16"),
        ({"quantize": "int4"}, "quantize must be None or 'int8'"),
        ({"quantize": "int8", "dtype": "float16"}, "quantizes a float32 export"),
    ],
)
def test_refuses_bad_options(checkpoint, tmp_path, kwargs, message):
    with pytest.raises(ExportError, match=message):
        to_onnx(sam3lite.load(checkpoint), tmp_path / "out", **kwargs)


def test_never_writes_into_a_non_empty_folder(checkpoint, tmp_path):
    (tmp_path / "mine.txt").write_text("keep")
    with pytest.raises(ExportError, match="not an empty folder"):
        to_onnx(sam3lite.load(checkpoint), tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["mine.txt"]


def test_missing_onnx_package_says_what_to_install(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ExportError, match=r"pip install sam3lite\[onnx\]"):
        to_onnx(sam3lite.load(checkpoint), tmp_path / "out")


def test_cli_errors_are_one_line(checkpoint, tmp_path):
    bad_opset = run_cli("export", "onnx", "--model", str(checkpoint), "--out", str(tmp_path / "x"), "--opset", "9")
    assert bad_opset.returncode == 2 and bad_opset.stderr.strip().count("\n") == 0
    assert "--opset 9 is not supported" in bad_opset.stderr
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "a").write_text("x")
    not_empty = run_cli("export", "onnx", "--model", str(checkpoint), "--out", str(tmp_path / "full"))
    assert not_empty.returncode == 2 and "not an empty folder" in not_empty.stderr
