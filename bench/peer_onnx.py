#!/usr/bin/env python3
"""Times SAM exported to ONNX (bench/export_onnx.py) on ONNX Runtime or OpenVINO the way `sqasam bench` times our
engine: what a CPU user who wants SAM fast picks instead of PyTorch.

  peer_onnx.py --runtime onnxruntime|openvino --onnx-dir DIR [--checkpoint CKPT] --image IMG [--prompts N] [--repeat R] [--threads T]
               [--model-type vit_b] [--precision fp32|int8 (onnxruntime) | default|f32 (openvino)]
               [--masks-out MASKS.npz]

Each runtime in its documented best CPU configuration on T threads:
- ONNX Runtime: CPUExecutionProvider, all graph optimisations (ORT_ENABLE_ALL), intra-op threads T, one inter-op
  thread, sequential execution. fp32 runs encoder.onnx / decoder.onnx, int8 their dynamically quantised copies
  (samexporter's --quantize-out; MLAS has no bf16 kernels on x86, so int8 is its reduced precision).
- OpenVINO: the ONNX files read directly, compiled for CPU with PERFORMANCE_HINT=LATENCY and
  INFERENCE_NUM_THREADS=T; `default` leaves INFERENCE_PRECISION_HINT at the device's default (bf16 on CPUs with
  AVX512-BF16 or AMX), `f32` sets it to f32. The JSON's precision is what the compiled model reports.

Same image, prompts (bench_prompts in bench/peer_pytorch.py), repeats and medians as the other peers. The encoder
time includes the official preprocessing (longest side to 1024 with Pillow's bilinear resize, pixel mean / std, zero
padding), as SamPredictor.set_image does; a prompt's time includes the coordinate transform, the decoder with its
upscaling of the 3 masks to the image size, and thresholding, as SamPredictor.predict. The network alone runs
decoder_network (no upscaling) on prompts already in the input frame. The exported decoder takes one prompt per
call, so there is no batched figure. torch is not imported, so the peak RSS is the runtime's own.
--masks-out saves the last pass's masks (packed bits) for bench/compare.py's IoU check against the official code.
"""
import argparse
import json
import os
import re
import sys
import time

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_common import bench_prompts, elapsed_ms, save_masks, timing_result  # noqa: E402

INPUT_SIZE = 1024  # SAM's (and MobileSAM's) encoder input
PIXEL_MEAN = np.array([123.675, 116.28, 103.53], dtype=np.float32)
PIXEL_STD = np.array([58.395, 57.12, 57.375], dtype=np.float32)


def resized_shape(height, width):
    """ResizeLongestSide.get_preprocess_shape."""
    scale = INPUT_SIZE / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def preprocess(image):
    """SamPredictor.set_image's input: ResizeLongestSide.apply_image (Pillow bilinear), Sam.preprocess."""
    new_h, new_w = resized_shape(*image.shape[:2])
    resized = np.asarray(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR), dtype=np.float32)
    padded = np.zeros((1, 3, INPUT_SIZE, INPUT_SIZE), dtype=np.float32)
    padded[0, :, :new_h, :new_w] = ((resized - PIXEL_MEAN) / PIXEL_STD).transpose(2, 0, 1)
    return padded


def frame_points(prompt, height, width):
    """A point and a box as the exported decoder takes them: the point (label 1) and the box's corners (labels 2
    and 3), in the 1024 input frame (ResizeLongestSide.apply_coords)."""
    (x, y), box = prompt
    new_h, new_w = resized_shape(height, width)
    xy = np.array([[x, y], box[:2], box[2:]], dtype=np.float32) * np.array([new_w / width, new_h / height],
                                                                        dtype=np.float32)
    return xy[None], np.array([[1, 2, 3]], dtype=np.float32)


class OnnxRuntimeSession:
    name = "onnxruntime"

    def __init__(self, path, threads):
        import onnxruntime as ort
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.inputs = {i.name for i in self.session.get_inputs()}

    def __call__(self, inputs):  # the exporter drops inputs a graph does not use (decoder_network's image size)
        return self.session.run(None, {name: value for name, value in inputs.items() if name in self.inputs})


class OpenVinoModel:
    name = "openvino"

    def __init__(self, path, threads, precision_hint):
        import openvino as ov
        config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_NUM_THREADS": threads}
        if precision_hint:
            config["INFERENCE_PRECISION_HINT"] = precision_hint
        self.compiled = ov.Core().compile_model(path, "CPU", config)
        self.request = self.compiled.create_infer_request()
        self.inputs = {i.get_any_name() for i in self.compiled.inputs}

    def __call__(self, inputs):
        results = self.request.infer({name: value for name, value in inputs.items() if name in self.inputs})
        return [results[output] for output in self.compiled.outputs]

    def precision(self):
        return self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()  # bf16, f32, ...

    def kernels(self):
        """The implementations OpenVINO chose for its products, from the runtime graph: {primitive type: count}."""
        counts = {}
        for op in self.compiled.get_runtime_model().get_ops():
            info = {key: value.astype(str) for key, value in op.get_rt_info().items()
                    if key in ("layerType", "primitiveType")}
            if info["layerType"] in ("FullyConnected", "MatMul", "Convolution", "Deconvolution"):
                kind = f"{info['layerType']}: {info['primitiveType']}"
                counts[kind] = counts.get(kind, 0) + 1
        return counts


def cpu_flags():
    with open("/proc/cpuinfo") as cpuinfo:
        flags = next(line for line in cpuinfo if line.startswith("flags")).split(":", 1)[1].split()
    return sorted(f for f in flags if re.match(r"avx512|amx|avx2$|avx_vnni", f))


def onnxruntime_isa(precision):
    """MLAS picks its kernels from CPUID (onnxruntime/core/mlas/lib/platform.cpp); the library exports no symbol
    that tells which ran, so this names the branch taken for this CPU's flags."""
    flags = set(cpu_flags())
    if precision == "int8":
        if "amx_int8" in flags:
            return "AMX (MLAS u8s8 AMX kernels)"
        return "AVX512-VNNI (MLAS u8x8 AVX512VNNI kernels)" if "avx512_vnni" in flags else "AVX2/AVX-512 core"
    return "AVX-512F (MLAS sgemm Avx512F kernel)" if "avx512f" in flags else "AVX2/FMA3 (MLAS sgemm)"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runtime", required=True, choices=["onnxruntime", "openvino"])
    parser.add_argument("--onnx-dir", required=True)
    parser.add_argument("--checkpoint", help="the checkpoint the ONNX files were exported from (recorded only)")
    parser.add_argument("--image", required=True)
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--model-type", default="vit_b")
    parser.add_argument("--precision", help="onnxruntime: fp32 (default) or int8; openvino: default or f32")
    parser.add_argument("--masks-out")
    args = parser.parse_args()
    if args.prompts < 1 or args.repeat < 1:
        parser.error("--prompts and --repeat must be at least 1")

    valid = {"onnxruntime": ["fp32", "int8"], "openvino": ["default", "f32"]}[args.runtime]
    precision = args.precision or valid[0]
    if precision not in valid:
        parser.error(f"--precision for {args.runtime}: one of {valid}")
    suffix = ".int8.onnx" if precision == "int8" else ".onnx"
    paths = {name: os.path.join(args.onnx_dir, name + suffix) for name in ["encoder", "decoder", "decoder_network"]}
    for path in paths.values():
        if not os.path.isfile(path):
            raise SystemExit(f"peer_onnx.py: {path} missing (bench/export_onnx.py writes it)")

    image = np.array(Image.open(args.image).convert("RGB"))
    height, width = image.shape[:2]
    prompts = bench_prompts(args.prompts, width, height)

    start = time.perf_counter()
    if args.runtime == "onnxruntime":
        import onnxruntime
        version = onnxruntime.__version__
        models = {name: OnnxRuntimeSession(path, args.threads) for name, path in paths.items()}
    else:
        import openvino
        version = openvino.__version__
        hint = None if precision == "default" else precision
        models = {name: OpenVinoModel(path, args.threads, hint) for name, path in paths.items()}
    load_ms = elapsed_ms(start)

    no_mask = {"mask_input": np.zeros((1, 1, 4 * 64, 4 * 64), dtype=np.float32),
               "has_mask_input": np.zeros(1, dtype=np.float32),
               "orig_im_size": np.array([height, width], dtype=np.float32)}
    network_inputs = [frame_points(prompt, height, width) for prompt in prompts]
    encoder_ms, decoder_ms, network_ms = [], [], []
    masks = []
    for run in range(args.repeat + 1):
        warm_up = run == 0
        start = time.perf_counter()
        embedding = models["encoder"]({"image": preprocess(image)})[0]
        if not warm_up:
            encoder_ms.append(elapsed_ms(start))
        masks = []
        for prompt in prompts:
            start = time.perf_counter()
            coords, labels = frame_points(prompt, height, width)
            logits = models["decoder"]({"image_embeddings": embedding, "point_coords": coords,
                                        "point_labels": labels, **no_mask})[0]
            masks.append(logits[0] > 0.0)
            if not warm_up:
                decoder_ms.append(elapsed_ms(start))
        for coords, labels in network_inputs:
            start = time.perf_counter()
            models["decoder_network"]({"image_embeddings": embedding, "point_coords": coords, "point_labels": labels,
                                       **no_mask})
            if not warm_up:
                network_ms.append(elapsed_ms(start))
    if args.masks_out:
        save_masks(args.masks_out, masks)

    if args.runtime == "openvino":
        used_precision, isa = models["encoder"].precision(), models["encoder"].kernels()
    else:
        used_precision, isa = precision, onnxruntime_isa(precision)
    result = {
        "implementation": args.runtime,
        "package": f"{args.runtime} {version}",
        "checkpoint": args.checkpoint,
        "onnx_dir": args.onnx_dir,
        **timing_result(args, width, height, load_ms, encoder_ms, decoder_ms, None, network_ms),
        "threads": args.threads,
        "precision": used_precision,
        "isa": isa,
        "cpu_flags": cpu_flags(),
    }
    print(f"{args.runtime} peer ({version}, {args.model_type}, {used_precision}): encoder {result['encoder_ms']} ms, "
          f"decoder {result['decoder_ms_per_prompt']} ms/prompt (network alone "
          f"{result['decoder_network_ms_per_prompt']}), peak RSS {result['peak_rss_mb']} MB, {args.threads} threads",
          file=sys.stderr)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
