"""Reference outputs of the official SAM network blocks (tests/test_sam_modules.cpp).

A small Sam (64-wide, 3-block image encoder with one global block, full-size 1024 input so the 64x64 token grid,
its 70x70 window padding and the 14x14 windows are real; the official 256-wide decoder) is built with the official
segment_anything classes, every tensor perturbed so that no term is a no-op (plain init leaves biases, rel_pos and
pos_embed at zero and LayerNorm at 1/0), and saved with torch.save (the zip format of official checkpoints).
Inputs and outputs of single blocks and of the whole network go to <out>/modules/ as float32 .npy:

  sam_small.pth, config.json                 the checkpoint and its hyper-parameters
  attn_window_{in,out}                       block 0's attention on its 25 windows (B*25, 14, 14, D)
  attn_global_{in,out}                       block 1's attention on the full grid (1, 64, 64, D)
  block_window_{in,out}, block_global_{in,out}  blocks 0 and 1 on a (1, 64, 64, D) grid
  neck_{in,out}                              (1, 64, 64, D) -> (1, 256, 64, 64)
  encoder_{in,out}                           (1, 3, 1024, 1024) -> (1, 256, 64, 64)
  dense_pe, dense_embedding                  get_dense_pe() and the no-mask dense embedding, (1, 256, 64, 64)
  prompt_<name>_{coords,labels,box}          prompts in the 1024 input frame (box only where the prompt has one)
  prompt_<name>_sparse                       PromptEncoder's sparse embedding (1, n, 256)
  transformer_{src,pos,tokens,queries,keys}  TwoWayTransformer on the point_box prompt's tokens
  upscaling_{in,out}                         output_upscaling, (1, 256, 64, 64) -> (1, 32, 256, 256)
  decoder_<name>_<multi|single>_{masks,iou}  MaskDecoder on encoder_out (the reference embedding)
A stamp (hash of this script and the library versions) skips regeneration when nothing changed.
"""
import argparse
import hashlib
import json
import pathlib

import numpy as np
import segment_anything
import torch

from perturb import add_noise_
from segment_anything.modeling.image_encoder import window_partition
from segment_anything.build_sam import _build_sam

CONFIG = dict(encoder_embed_dim=64, encoder_depth=3, encoder_num_heads=4, encoder_global_attn_indexes=[1])
# Prompts in the 1024 input frame: a positive and a negative point, a box alone, a point with a box.
PROMPTS = {
    "points": dict(coords=[[400.0, 300.0], [650.0, 720.0]], labels=[1, 0], box=None),
    "box": dict(coords=[], labels=[], box=[210.0, 160.0, 700.0, 655.0]),
    "point_box": dict(coords=[[455.0, 402.0]], labels=[1], box=[210.0, 160.0, 700.0, 655.0]),
}


def perturb_(model, seed):
    """25% of each tensor's spread, 0.1 where it has none (see perturb.add_noise_)."""
    add_noise_(model, seed, fraction=0.25, fallback=0.1)


def save(folder, name, tensor):
    array = tensor.detach().numpy() if isinstance(tensor, torch.Tensor) else np.asarray(tensor)
    np.save(folder / f"{name}.npy", np.ascontiguousarray(array, dtype=np.float32))


def stamp_of():
    here = pathlib.Path(__file__)
    digest = hashlib.sha256(here.read_bytes() + (here.parent / "perturb.py").read_bytes())
    digest.update(f"{torch.__version__} {np.__version__} {segment_anything.__file__}".encode())
    return digest.hexdigest()


def prompt_tensors(prompt):
    points = None
    if prompt["coords"]:
        points = (torch.tensor([prompt["coords"]], dtype=torch.float32), torch.tensor([prompt["labels"]], dtype=torch.int))
    box = torch.tensor([prompt["box"]], dtype=torch.float32) if prompt["box"] else None
    return points, box


@torch.no_grad()
def generate(folder):
    torch.manual_seed(0)
    sam = _build_sam(**CONFIG, checkpoint=None)
    perturb_(sam, 1)
    sam.eval()
    torch.save(sam.state_dict(), folder / "sam_small.pth")
    encoder = sam.image_encoder
    config = dict(CONFIG, image_size=1024, patch_size=16, window_size=14, prompt_embed_dim=256,
                  decoder_depth=2, decoder_num_heads=8, decoder_mlp_dim=2048, num_multimask_outputs=3)
    (folder / "config.json").write_text(json.dumps(config, indent=1))

    generator = torch.Generator().manual_seed(2)
    dim = CONFIG["encoder_embed_dim"]
    grid = torch.randn((1, 64, 64, dim), generator=generator)

    windows, _ = window_partition(encoder.blocks[0].norm1(grid), 14)
    save(folder, "attn_window_in", windows)
    save(folder, "attn_window_out", encoder.blocks[0].attn(windows))
    global_in = encoder.blocks[1].norm1(grid)
    save(folder, "attn_global_in", global_in)
    save(folder, "attn_global_out", encoder.blocks[1].attn(global_in))
    save(folder, "block_window_in", grid)
    save(folder, "block_window_out", encoder.blocks[0](grid))
    save(folder, "block_global_in", grid)
    save(folder, "block_global_out", encoder.blocks[1](grid))
    save(folder, "neck_in", grid)
    save(folder, "neck_out", encoder.neck(grid.permute(0, 3, 1, 2)))

    image = torch.randn((1, 3, 1024, 1024), generator=generator)
    embedding = encoder(image)
    save(folder, "encoder_in", image)
    save(folder, "encoder_out", embedding)

    prompt_encoder = sam.prompt_encoder
    dense_pe = prompt_encoder.get_dense_pe()
    save(folder, "dense_pe", dense_pe)
    save(folder, "dense_embedding", prompt_encoder(points=None, boxes=None, masks=None)[1])
    for name, prompt in PROMPTS.items():
        points, box = prompt_tensors(prompt)
        sparse, dense = prompt_encoder(points=points, boxes=box, masks=None)
        save(folder, f"prompt_{name}_coords", np.array(prompt["coords"], dtype=np.float32).reshape(-1, 2))
        save(folder, f"prompt_{name}_labels", np.array(prompt["labels"], dtype=np.float32))
        if box is not None:
            save(folder, f"prompt_{name}_box", box[0])
        save(folder, f"prompt_{name}_sparse", sparse)
        for multimask in (True, False):
            masks, iou = sam.mask_decoder(image_embeddings=embedding, image_pe=dense_pe,
                                          sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                          multimask_output=multimask)
            tag = f"decoder_{name}_{'multi' if multimask else 'single'}"
            save(folder, f"{tag}_masks", masks)
            save(folder, f"{tag}_iou", iou)
            if not 0.1 <= float(masks.abs().max()) <= 200:
                raise SystemExit(f"gen_modules: {tag}: degenerate logits; change the perturbation")

    decoder = sam.mask_decoder
    points, box = prompt_tensors(PROMPTS["point_box"])
    sparse, dense = prompt_encoder(points=points, boxes=box, masks=None)
    tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0).unsqueeze(0)
    tokens = torch.cat([tokens, sparse], dim=1)
    src = embedding + dense
    queries, keys = decoder.transformer(src, dense_pe, tokens)
    for name, tensor in dict(src=src, pos=dense_pe, tokens=tokens, queries=queries, keys=keys).items():
        save(folder, f"transformer_{name}", tensor)
    upscaling_in = keys.transpose(1, 2).reshape(1, 256, 64, 64)
    save(folder, "upscaling_in", upscaling_in)
    save(folder, "upscaling_out", decoder.output_upscaling(upscaling_in))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--shared", type=pathlib.Path, help="unused: these references need no real data")
    args = parser.parse_args()
    folder = args.out / "modules"
    folder.mkdir(parents=True, exist_ok=True)
    stamp_file, stamp = folder / "stamp", stamp_of()
    if stamp_file.exists() and stamp_file.read_text() == stamp:
        return
    torch.set_num_threads(2)
    generate(folder)
    stamp_file.write_text(stamp)


if __name__ == "__main__":
    main()
