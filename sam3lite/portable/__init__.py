"""Torch-free building blocks shared by the PyTorch path and the ONNX runtime.

Only numpy, Pillow, ``tokenizers`` and pycocotools are imported here, never torch (or anything of
sam3lite that imports it): ``sam3lite.onnx`` runs on these alone.

- ``tokenizer``: CLIP BPE to numpy ids; ``images``: decoding, RGB conversion, resize, normalization;
- ``boxes``: checking and normalizing box prompts; ``postprocess``: scores, boxes and masks;
- ``rle``: COCO RLE; ``results``: ``PromptResult``; ``manifest``: the ONNX export's manifest.
"""
