#!/usr/bin/env python3
"""Exports an official SAM checkpoint to ONNX the way samexporter does, for the ONNX Runtime and OpenVINO peers.

  export_onnx.py --checkpoint CKPT --model-type vit_b|vit_t --image-size W H --out DIR

Writes into DIR:
- encoder.onnx: the official image_encoder (input: the 1 x 3 x 1024 x 1024 normalised, padded image; output: the
  1 x 256 x 64 x 64 embedding), torch.onnx.export at opset 17 with constant folding, as samexporter's encoder.
- decoder.onnx: the official SamOnnxModel (segment_anything.utils.onnx; mobile_sam's for vit_t): prompt encoder,
  mask decoder and mask postprocessing to the original image size, with a variable number of points (a box is
  two points labelled 2 and 3). Only the multimask outputs (mask tokens 1..3) are upscaled, as SamPredictor.predict
  with multimask_output=True returns them; samexporter's default (return_single_mask=False) upscales all 4.
- decoder_network.onnx: the same without the postprocessing (low-res masks and IoU predictions of tokens 1..3):
  the network alone, as bench/peer_pytorch.py times it.
- encoder.int8.onnx, decoder.int8.onnx, decoder_network.int8.onnx: ONNX Runtime's dynamic quantisation of each
  (onnxruntime.quantization.quantize_dynamic, QUInt8 weights, per tensor: samexporter's --quantize-out), of the
  MatMul and Gemm nodes (the products; TinyViT's exported convolutions take weights computed from its folded
  BatchNorms, which the quantiser refuses).
The postprocessing's sizes are traced for --image-size (the official export does so for the crop), so the decoder
serves images of that size; the bench uses one image. Files already in DIR are kept: delete them to export anew.
"""
import argparse
import importlib
import os
import sys
import warnings

import torch
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peer_pytorch import official_package  # noqa: E402

OPSET = 17  # samexporter's


def multimask_onnx_model(model_type, sam, postprocess, image_size):
    """SamOnnxModel returning mask tokens 1..3 (SamPredictor's multimask output), upscaled or not."""
    base = importlib.import_module(official_package(model_type).__name__ + ".utils.onnx").SamOnnxModel

    class MultimaskOnnxModel(base):
        @torch.no_grad()
        def forward(self, image_embeddings, point_coords, point_labels, mask_input, has_mask_input, orig_im_size):
            sparse = self._embed_points(point_coords, point_labels)
            dense = self._embed_masks(mask_input, has_mask_input)
            masks, scores = self.model.mask_decoder.predict_masks(
                image_embeddings=image_embeddings, image_pe=self.model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense)
            masks, scores = masks[:, 1:, :, :], scores[:, 1:]
            if not postprocess:
                return scores, masks
            return self.mask_postprocessing(masks, orig_im_size), scores, masks

        def mask_postprocessing(self, masks, orig_im_size):
            """The official postprocessing with the sizes traced as constants, as segment_anything's export already
            does for the crop: OpenVINO 2026.4 computes 0 x 0 masks from the Resize whose sizes it would take from
            orig_im_size (ONNX Runtime gets them right; the IoU check in compare.py caught it)."""
            width, height = image_size
            scale = self.img_size / max(width, height)
            masks = F.interpolate(masks, size=(self.img_size, self.img_size), mode="bilinear", align_corners=False)
            masks = masks[..., : int(height * scale + 0.5), : int(width * scale + 0.5)]
            return F.interpolate(masks, size=(height, width), mode="bilinear", align_corners=False)

    return MultimaskOnnxModel(sam, return_single_mask=False)


def export_encoder(sam, path):
    image = torch.randn(1, 3, sam.image_encoder.img_size, sam.image_encoder.img_size)
    torch.onnx.export(sam.image_encoder, image, path, opset_version=OPSET, do_constant_folding=True,
                      input_names=["image"], output_names=["image_embeddings"])


def export_decoder(model_type, sam, path, image_size, postprocess):
    embed_dim = sam.prompt_encoder.embed_dim
    grid = sam.prompt_encoder.image_embedding_size
    mask_size = [4 * x for x in grid]
    inputs = {
        "image_embeddings": torch.randn(1, embed_dim, *grid),
        "point_coords": torch.randint(0, 1024, (1, 3, 2), dtype=torch.float),
        "point_labels": torch.tensor([[1.0, 2.0, 3.0]]),
        "mask_input": torch.zeros(1, 1, *mask_size),
        "has_mask_input": torch.tensor([0.0]),
        "orig_im_size": torch.tensor([image_size[1], image_size[0]], dtype=torch.float),  # H, W
    }
    outputs = ["masks", "iou_predictions", "low_res_masks"] if postprocess else ["iou_predictions", "low_res_masks"]
    torch.onnx.export(multimask_onnx_model(model_type, sam, postprocess, image_size), tuple(inputs.values()), path,
                      opset_version=OPSET, do_constant_folding=True, input_names=list(inputs), output_names=outputs,
                      dynamic_axes={"point_coords": {1: "num_points"}, "point_labels": {1: "num_points"}})


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--model-type", required=True, choices=["vit_b", "vit_l", "vit_h", "vit_t"])
    parser.add_argument("--image-size", type=int, nargs=2, metavar=("W", "H"), required=True)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()

    os.makedirs(args.out, exist_ok=True)
    sam = official_package(args.model_type).sam_model_registry[args.model_type](checkpoint=args.checkpoint).eval()
    path = lambda name: os.path.join(args.out, name)  # noqa: E731
    with warnings.catch_warnings():  # the tracer's warnings about Python scalars
        warnings.simplefilter("ignore")
        if not os.path.isfile(path("encoder.onnx")):  # what an earlier run finished stays
            export_encoder(sam, path("encoder.onnx"))
        for name, postprocess in [("decoder.onnx", True), ("decoder_network.onnx", False)]:
            if not os.path.isfile(path(name)):
                export_decoder(args.model_type, sam, path(name), args.image_size, postprocess)

    quantize(args.out)


def quantize(folder):
    from onnxruntime.quantization import QuantType, quantize_dynamic
    for name in ["encoder", "decoder", "decoder_network"]:
        if os.path.isfile(os.path.join(folder, name + ".int8.onnx")):
            continue
        quantize_dynamic(os.path.join(folder, name + ".onnx"), os.path.join(folder, name + ".int8.onnx"),
                         per_channel=False, reduce_range=False, weight_type=QuantType.QUInt8,
                         op_types_to_quantize=["MatMul", "Gemm"])
    print(f"wrote {folder}: encoder, decoder, decoder_network (.onnx and .int8.onnx)")


if __name__ == "__main__":
    main()
