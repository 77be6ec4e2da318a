#!/usr/bin/env python3
"""Checkpoint files for tests/test_sam_checkpoint.cpp, written by torch.save and the official safetensors writer.

Under <out>/checkpoints/:
  small_sam.pth            torch.save of a small-config SAM state dict (official segment_anything modules)
  small_sam.json           that model's hyper-parameters, read off the constructed modules
  small_sam/<key>.npy      every tensor of it, as float32
  views.pth, views/        non-contiguous, offset, shared-storage, 0-d and empty tensors, and their contiguous copies
  dtypes.pth, dtypes/      float16, bfloat16, float64, int64, bool tensors and their float32 conversions
  views_protocol4.pth      views.pth again with pickle protocol 4 (FRAME, MEMOIZE, STACK_GLOBAL opcodes)
  wrapped.pth              {'model': views state dict, 'optimizer': ..., 'epoch': ...} as training scripts save
  mixed.safetensors        the dtypes tensors, written by the official safetensors library
  hostile_reduce.pth       a torch-like zip whose data.pkl calls os.system('echo pwned > pwned_marker') when
                           unpickled (the marker file would prove it ran)
  hostile_stack_global.pth the same through builtins.eval and protocol 4's STACK_GLOBAL
  truncated.pth            the first half of small_sam.pth
  short_storage.pth        views.pth with one storage entry cut short inside an intact zip
  byteorder_{little,big}.pth  views.pth with the byteorder entry newer torch writes; 'big' has swapped storages
  legacy.pth               torch.save with _use_new_zipfile_serialization=False (the pre-1.6 format)
  whole_module.pth         torch.save of a module object rather than its state dict
  shapes_vit_{b,l,h}.json  tensor shapes and hyper-parameters of the official builds (weights never initialised)
"""
import argparse
import contextlib
import json
import os
import pickle
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from segment_anything import sam_model_registry
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

SMALL_CONFIG = dict(image_size=64, patch_size=8, embed_dim=32, depth=4, num_heads=2, window_size=3,
                    global_attn_indexes=[1, 3], prompt_embed_dim=32, decoder_mlp_dim=64, decoder_num_heads=8)


def build_small_sam(seed=0):
    """A SAM with the official modules and a small configuration, random weights (rel_pos too, which start at 0)."""
    c = SMALL_CONFIG
    torch.manual_seed(seed)
    grid = c["image_size"] // c["patch_size"]
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=c["depth"], embed_dim=c["embed_dim"], img_size=c["image_size"], mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=c["num_heads"],
            patch_size=c["patch_size"], qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=c["global_attn_indexes"], window_size=c["window_size"],
            out_chans=c["prompt_embed_dim"]),
        prompt_encoder=PromptEncoder(
            embed_dim=c["prompt_embed_dim"], image_embedding_size=(grid, grid),
            input_image_size=(c["image_size"], c["image_size"]), mask_in_chans=16),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=2, embedding_dim=c["prompt_embed_dim"],
                                          mlp_dim=c["decoder_mlp_dim"], num_heads=c["decoder_num_heads"]),
            transformer_dim=c["prompt_embed_dim"], iou_head_depth=3, iou_head_hidden_dim=256),
    )
    with torch.no_grad():
        for name, parameter in sam.named_parameters():
            if "rel_pos" in name or "pos_embed" in name:
                parameter.normal_(0, 0.5)
    return sam


def hyper_params_of(sam):
    """The hyper-parameters as the constructed modules hold them (not as we would read them off the shapes)."""
    encoder, decoder = sam.image_encoder, sam.mask_decoder
    blocks = encoder.blocks
    return {
        "image_size": encoder.img_size,
        "patch_size": encoder.patch_embed.proj.kernel_size[0],
        "encoder_embed_dim": encoder.patch_embed.proj.out_channels,
        "encoder_depth": len(blocks),
        "encoder_num_heads": blocks[0].attn.num_heads,
        "window_size": next(b.window_size for b in blocks if b.window_size > 0),
        "global_attn_indexes": [i for i, b in enumerate(blocks) if b.window_size == 0],
        "mlp_ratio": blocks[0].mlp.lin1.out_features // blocks[0].mlp.lin1.in_features,
        "prompt_embed_dim": sam.prompt_encoder.embed_dim,
        "decoder_depth": len(decoder.transformer.layers),
        "decoder_num_heads": decoder.transformer.layers[0].self_attn.num_heads,
        "decoder_mlp_dim": decoder.transformer.layers[0].mlp.lin1.out_features,
        "num_multimask_outputs": decoder.num_multimask_outputs,
    }


def save_expected(folder, tensors):
    """Each tensor as the float32 .npy the C++ loader must reproduce bit for bit."""
    folder.mkdir(parents=True, exist_ok=True)
    for key, value in tensors.items():
        np.save(folder / f"{key}.npy", value.detach().to(torch.float32).contiguous().numpy())


def view_tensors():
    torch.manual_seed(1)
    base = torch.randn(6, 10)
    shared = torch.randn(12)
    return {
        "transposed": torch.randn(5, 7).t(),
        "sliced": base[2:5, 3:9],                       # storage offset and a row stride of 10
        "strided": torch.randn(20)[1::3],
        "permuted": torch.randn(2, 3, 4).permute(2, 0, 1),
        "shared_head": shared[:4],                      # two views of one storage
        "shared_tail": shared[6:].view(2, 3),
        "scalar": torch.tensor(3.25),
        "empty": torch.zeros(0, 3),
        "column": base[:, 7],
    }


def stepped_optimizer_state():
    """What a training checkpoint saves beside the model: AdamW state (tensors keyed by int) and param groups."""
    layer = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(layer.parameters(), lr=1e-4)
    layer(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    return optimizer.state_dict()


def dtype_tensors():
    torch.manual_seed(2)
    values = torch.randn(4, 5) * 100
    return {
        "half": values.half(),
        "half_subnormal": torch.tensor([6e-8, -3e-6, 1e-5, 65504.0, float("inf"), -0.0]).half(),
        "bfloat16": values.bfloat16(),
        "double": values.double() / 3,
        "int64": torch.arange(-3, 9).view(3, 4),
        "bool": torch.tensor([True, False, True]),
        "half_transposed": values.half().t(),
    }


def write_torch_like_zip(path, pickle_bytes):
    """A zip laid out as torch.save lays it out, around an arbitrary pickle."""
    folder = path.stem
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as archive:
        archive.writestr(f"{folder}/data.pkl", pickle_bytes)
        archive.writestr(f"{folder}/version", "3\n")


class SystemCall:
    """Unpickling this runs os.system(command): the classic hostile checkpoint."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class EvalCall:
    """Unpickling this evaluates Python source."""

    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (eval, (f"__import__('os').system({self.command!r})",))


@contextlib.contextmanager
def uninitialised_weights():
    """Builds full-size models without touching their memory: the init functions become no-ops."""
    names = ["uniform_", "normal_", "kaiming_uniform_", "trunc_normal_", "zeros_", "ones_"]
    saved = {name: getattr(torch.nn.init, name) for name in names}
    saved_randn = torch.randn
    for name in names:
        setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
    torch.randn = lambda *size, **kwargs: torch.empty(*size, **kwargs)
    try:
        yield
    finally:
        for name, function in saved.items():
            setattr(torch.nn.init, name, function)
        torch.randn = saved_randn


def rewrite_archive(source_path, target_path, transform):
    """Copies a torch.save archive under a new top folder, passing each entry's bytes through transform."""
    with zipfile.ZipFile(source_path) as source, zipfile.ZipFile(target_path, "w", zipfile.ZIP_STORED) as target:
        old, new = source_path.stem + "/", target_path.stem + "/"
        for entry in source.namelist():
            target.writestr(new + entry[len(old):], transform(entry[len(old):], source.read(entry)))
        return new


def write_byteorder_variants(out, views_path):
    """views.pth holds only float32 storages, so a big-endian copy swaps every 4 bytes."""
    for order in ["little", "big"]:
        target = out / f"byteorder_{order}.pth"
        swap = order == "big"
        folder = rewrite_archive(views_path, target, lambda name, data: (
            np.frombuffer(data, "<f4").astype(">f4").tobytes() if swap and name.startswith("data/") else data))
        with zipfile.ZipFile(target, "a", zipfile.ZIP_STORED) as archive:
            archive.writestr(folder + "byteorder", order)


def write_official_shapes(out):
    for model_type in ["vit_b", "vit_l", "vit_h"]:
        with uninitialised_weights():
            sam = sam_model_registry[model_type]()
        record = {"hyper_params": hyper_params_of(sam),
                  "shapes": {key: list(value.shape) for key, value in sam.state_dict().items()}}
        (out / f"shapes_{model_type}.json").write_text(json.dumps(record, indent=1))
        del sam


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--shared", type=Path, help="unused: these files are all synthetic")
    args = parser.parse_args()
    out = args.out / "checkpoints"
    out.mkdir(parents=True, exist_ok=True)

    sam = build_small_sam()
    state = sam.state_dict()
    torch.save(state, out / "small_sam.pth")
    save_expected(out / "small_sam", state)
    (out / "small_sam.json").write_text(json.dumps(hyper_params_of(sam), indent=1))

    views = view_tensors()
    torch.save(views, out / "views.pth")
    torch.save(views, out / "views_protocol4.pth", pickle_protocol=4)
    save_expected(out / "views", views)
    torch.save({"model": views, "optimizer": stepped_optimizer_state(), "epoch": 7, "flags": [True, False, None],
                "note": "wrapped"}, out / "wrapped.pth")

    dtypes = dtype_tensors()
    torch.save(dtypes, out / "dtypes.pth")
    save_expected(out / "dtypes", dtypes)
    save_file({key: value.contiguous() for key, value in dtypes.items()}, str(out / "mixed.safetensors"))

    marker = out / "pwned_marker"
    marker.unlink(missing_ok=True)
    command = f"echo pwned > '{marker}'"
    write_torch_like_zip(out / "hostile_reduce.pth", pickle.dumps({"weight": SystemCall(command)}, protocol=2))
    write_torch_like_zip(out / "hostile_stack_global.pth",
                         pickle.dumps({"weight": EvalCall(command)}, protocol=4))

    whole = (out / "small_sam.pth").read_bytes()
    (out / "truncated.pth").write_bytes(whole[: len(whole) // 2])
    rewrite_archive(out / "views.pth", out / "short_storage.pth",
                    lambda name, data: data[: len(data) // 2] if name == "data/0" else data)
    write_byteorder_variants(out, out / "views.pth")
    torch.save(views, out / "legacy.pth", _use_new_zipfile_serialization=False)
    torch.save(torch.nn.Linear(2, 2), out / "whole_module.pth")

    write_official_shapes(out)


if __name__ == "__main__":
    main()
