"""Reference outputs of the official SAM predictor and MedSAM inference (tests/test_sam_predictor.cpp, test_cli_*).

Everything comes from the official code on random weights: segment_anything's _build_sam / sam_model_registry with
checkpoint=None, every tensor perturbed (plain init leaves biases, rel_pos and pos_embed at zero, which would hide
whole code paths), saved with torch.save (the official zip format). The real images come from the repository's
examples/ (see examples.py): a large one SAM shrinks, a small one it enlarges, a gray one.

Writes under <out>/predictor/:
  models/<name>.pth                          random-weight checkpoints (small always, vit_b always, vit_l / vit_h only
                                             when SQASAM_FULL_MODELS=1)
  images/*.png                               the images examples.py derives (the large and the gray one)
  pillow/index.json + *.npy                  PIL bilinear resizes (torchvision's resize of a PIL image), up and down
  skimage/index.json + *.npy                 MedSAM's skimage.transform.resize(order=3, anti_aliasing=True) as uint8
  cases/index.json, cases/<case>/*.npy       per case: the decoded image, the preprocessed input, the embedding and,
                                             per prompt, masks / logits (original size) / low-res logits / IoU
                                             predictions (MedSAM cases: its 1024x1024 uint8 image and, instead of
                                             logits, its upsampled probabilities); index.json holds the prompts
A stamp (hash of these scripts and the environment flag) skips regeneration when nothing changed.
"""
import argparse
import hashlib
import json
import os
import pathlib
import shutil

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from segment_anything import SamPredictor, sam_model_registry
from segment_anything.build_sam import _build_sam
from segment_anything.utils.amg import calculate_stability_score
from skimage import transform

from examples import load_examples
from perturb import add_noise_

SMALL = dict(encoder_embed_dim=64, encoder_depth=2, encoder_num_heads=2, encoder_global_attn_indexes=[1])


def as_rgb(image):
    return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image


def perturb_(model, seed):
    """Adds noise to every tensor: 20% of its spread where it has one, else a fixed 0.05 (zero biases, rel_pos,
    pos_embed, LayerNorm gains of one) so that no term of the network is a no-op. Then scales the hypernetworks'
    last layers x30: at init the mask logits stay within +-0.3, where every mask would hinge on rounding; x30 gives
    trained-like logits of O(5-10) with masks covering 10-90% of the image."""
    add_noise_(model, seed, fraction=0.2, fallback=0.05)
    with torch.no_grad():
        for mlp in model.mask_decoder.output_hypernetworks_mlps:
            mlp.layers[-1].weight.mul_(30.0)
            mlp.layers[-1].bias.mul_(30.0)


def build_model(name, seed):
    torch.manual_seed(seed)
    if name == "small":
        model = _build_sam(**SMALL, checkpoint=None)
    else:
        model = sam_model_registry[name](checkpoint=None)
    perturb_(model, seed + 1)
    return model.eval()


def prompts_from_gt(gt, kinds):
    """Integer pixel prompts around the ground-truth object: its centre point, its box, a mixed point set."""
    ys, xs = np.nonzero(gt)
    h, w = gt.shape
    box = [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]
    # The foreground pixel closest to the mean: a point on the object even when it is not convex.
    nearest = np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2)
    centre = [int(xs[nearest]), int(ys[nearest])]
    other = [int(xs[len(xs) // 3]), int(ys[len(ys) // 3])]
    background = [w // 10, h - 1 - h // 10]
    table = {
        "point": dict(points=[centre], labels=[1], box=None, multimask=True),
        "box": dict(points=[], labels=[], box=box, multimask=False),
        "point_box": dict(points=[centre], labels=[1], box=box, multimask=True),
        "points": dict(points=[centre, other, background], labels=[1, 1, 0], box=None, multimask=False),
    }
    return [dict(table[kind], name=kind) for kind in kinds]


def save(path, array):
    np.save(path, np.ascontiguousarray(array))


def check_sane(case, prompt, logits):
    """Random weights must still give O(1-10) logits and masks that are neither empty nor full."""
    biggest = float(np.abs(logits).max())
    foreground = float((logits > 0).mean())
    if not 0.5 <= biggest <= 200 or not 0.001 <= foreground <= 0.999:
        raise SystemExit(f"gen_predictor: {case}/{prompt}: degenerate output (max |logit| {biggest:.3g}, "
                         f"foreground {foreground:.4f}); change the perturbation")
    return biggest, foreground


def sam_case(out, name, model, model_file, model_type, image_file, image, gt, kinds):
    case_dir = out / "cases" / name
    case_dir.mkdir(parents=True, exist_ok=True)
    rgb = as_rgb(image)
    predictor = SamPredictor(model)
    # SamPredictor.set_image() step by step, to keep the tensor it feeds the encoder.
    resized = predictor.transform.apply_image(rgb)
    resized_torch = torch.as_tensor(resized).permute(2, 0, 1).contiguous()[None, :, :, :]
    predictor.set_torch_image(resized_torch, rgb.shape[:2])
    model_input = model.preprocess(resized_torch)
    save(case_dir / "image.npy", image)
    save(case_dir / "input.npy", model_input[0].numpy())
    save(case_dir / "embedding.npy", predictor.features[0].numpy())
    prompts = prompts_from_gt(gt, kinds)
    for prompt in prompts:
        points = np.array(prompt["points"], dtype=np.float64).reshape(-1, 2)
        logits, iou, low_res = predictor.predict(
            point_coords=points if len(points) else None,
            point_labels=np.array(prompt["labels"]) if len(points) else None,
            box=np.array(prompt["box"], dtype=np.float64) if prompt["box"] else None,
            multimask_output=prompt["multimask"], return_logits=True)
        prompt["max_abs_logit"], prompt["foreground"] = check_sane(name, prompt["name"], logits)
        prompt["stability_scores"] = calculate_stability_score(
            torch.as_tensor(logits), model.mask_threshold, 1.0).tolist()
        save(case_dir / f"{prompt['name']}_masks.npy", (logits > model.mask_threshold).astype(np.uint8))
        save(case_dir / f"{prompt['name']}_logits.npy", logits.astype(np.float32))
        save(case_dir / f"{prompt['name']}_low_res_logits.npy", low_res.astype(np.float32))
        save(case_dir / f"{prompt['name']}_iou_predictions.npy", iou.astype(np.float32))
    return dict(name=name, processing="sam", model=model_file, model_type=model_type, image_file=image_file,
                height=image.shape[0], width=image.shape[1], prompts=prompts)


def medsam_resize(rgb):
    """MedSAM_Inference.py's image step: cubic-spline resize with Gaussian antialiasing to 1024x1024, as uint8."""
    return transform.resize(rgb, (1024, 1024), order=3, preserve_range=True, anti_aliasing=True).astype(np.uint8)


def medsam_case(out, name, model, model_file, model_type, image_file, image, gt):
    """The official MedSAM inference (github.com/bowang-lab/MedSAM, MedSAM_Inference.py), step by step."""
    case_dir = out / "cases" / name
    case_dir.mkdir(parents=True, exist_ok=True)
    img_3c = as_rgb(image)
    H, W, _ = img_3c.shape
    img_1024 = medsam_resize(img_3c)
    img_1024_norm = (img_1024 - img_1024.min()) / np.clip(img_1024.max() - img_1024.min(), a_min=1e-8, a_max=None)
    img_1024_tensor = torch.tensor(img_1024_norm).float().permute(2, 0, 1).unsqueeze(0)
    with torch.no_grad():
        embedding = model.image_encoder(img_1024_tensor)
    save(case_dir / "image.npy", image)
    save(case_dir / "resized_1024.npy", img_1024)
    save(case_dir / "input.npy", img_1024_tensor[0].numpy())
    save(case_dir / "embedding.npy", embedding[0].numpy())
    prompts = prompts_from_gt(gt, ["box"])
    for prompt in prompts:
        box_np = np.array([prompt["box"]])
        box_1024 = box_np / np.array([W, H, W, H]) * 1024
        box_torch = torch.as_tensor(box_1024, dtype=torch.float)[:, None, :]
        with torch.no_grad():
            sparse, dense = model.prompt_encoder(points=None, boxes=box_torch, masks=None)
            low_res_logits, iou = model.mask_decoder(
                image_embeddings=embedding, image_pe=model.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)
            probabilities = F.interpolate(torch.sigmoid(low_res_logits), size=(H, W), mode="bilinear",
                                          align_corners=False)
        probabilities = probabilities[0].numpy()
        masks = (probabilities > 0.5).astype(np.uint8)
        prompt["max_abs_logit"], prompt["foreground"] = check_sane(name, prompt["name"],
                                                                   low_res_logits[0].numpy())
        # MedSAM has no stability score; ours is SAM's, taken on the log-odds of MedSAM's probability.
        prompt["stability_scores"] = calculate_stability_score(
            torch.logit(torch.as_tensor(probabilities).double()), 0.0, 1.0).tolist()
        save(case_dir / f"{prompt['name']}_masks.npy", masks)
        save(case_dir / f"{prompt['name']}_probabilities.npy", probabilities)
        save(case_dir / f"{prompt['name']}_low_res_logits.npy", low_res_logits[0].numpy())
        save(case_dir / f"{prompt['name']}_iou_predictions.npy", iou[0].numpy())
    return dict(name=name, processing="medsam", model=model_file, model_type=model_type, image_file=image_file,
                height=H, width=W, prompts=prompts)


def pillow_references(out, images):
    """torchvision.transforms.functional.resize of a PIL image = Image.resize(size, BILINEAR) with Pillow's
    antialiasing support when downscaling; sizes up, down, mixed and unchanged."""
    folder = out / "pillow"
    folder.mkdir(parents=True, exist_ok=True)
    index = []
    for key, (w_out, h_out) in [("downscaled", (1024, 576)), ("downscaled", (333, 1000)), ("downscaled", (77, 41)),
                                ("upscaled", (1024, 872)), ("upscaled", (300, 1001)), ("upscaled", (384, 327)),
                                ("gray", (991, 1024))]:
        rgb = as_rgb(images[key][1])
        save(folder / f"{key}_source.npy", rgb)
        resized = np.array(Image.fromarray(rgb).resize((w_out, h_out), Image.BILINEAR))
        save(folder / f"{key}_{w_out}x{h_out}.npy", resized)
        index.append(dict(source=f"{key}_source.npy", output=f"{key}_{w_out}x{h_out}.npy", width=w_out, height=h_out))
    (folder / "index.json").write_text(json.dumps(index, indent=1))


def skimage_references(out, images):
    folder = out / "skimage"
    folder.mkdir(parents=True, exist_ok=True)
    index = []
    for key in images:
        rgb = as_rgb(images[key][1])
        save(folder / f"{key}_source.npy", rgb)
        save(folder / f"{key}_1024.npy", medsam_resize(rgb))
        index.append(dict(source=f"{key}_source.npy", output=f"{key}_1024.npy"))
    # A 1024x1024 input: no antialiasing, the spline alone (it is not an exact identity after the uint8 cast).
    square = np.ascontiguousarray(as_rgb(images["downscaled"][1])[:1024, 300:1324])
    save(folder / "square_source.npy", square)
    save(folder / "square_1024.npy", medsam_resize(square))
    index.append(dict(source="square_source.npy", output="square_1024.npy"))
    (folder / "index.json").write_text(json.dumps(index, indent=1))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--shared", type=pathlib.Path, help="unused: the images come from examples/")
    args = parser.parse_args()
    out = args.out / "predictor"
    full_models = os.environ.get("SQASAM_FULL_MODELS") == "1"
    here = pathlib.Path(__file__)
    scripts = b"".join((here.parent / name).read_bytes() for name in (here.name, "perturb.py", "examples.py"))
    stamp = hashlib.sha256(scripts + bytes([full_models])).hexdigest()
    if (out / "stamp").exists() and (out / "stamp").read_text() == stamp:
        print("gen_predictor: up to date")
        return
    shutil.rmtree(out, ignore_errors=True)
    (out / "models").mkdir(parents=True)
    torch.set_grad_enabled(False)

    images = load_examples(out / "images")
    pillow_references(out, images)
    skimage_references(out, images)

    cases = []
    small = build_model("small", seed=1)
    torch.save(small.state_dict(), out / "models" / "small.pth")
    for key in images:
        cases.append(sam_case(out, f"small_{key}", small, "models/small.pth", "auto", *images[key],
                              kinds=["point", "box", "point_box", "points"]))
    # MedSAM's steps on the small model too (MedSAM itself is a vit_b): the tests run them from the official
    # 1024x1024 uint8 image onward, which needs no full-size encoder.
    for key in ["upscaled", "gray"]:
        cases.append(medsam_case(out, f"medsam_small_{key}", small, "models/small.pth", "auto", *images[key]))
    # One full-size vit_b (the CI budget allows a couple of full encoder runs): SAM on the downscaled image,
    # MedSAM on the upscaled one.
    vit_b = build_model("vit_b", seed=2)
    torch.save(vit_b.state_dict(), out / "models" / "vit_b.pth")
    cases.append(sam_case(out, "vit_b_downscaled", vit_b, "models/vit_b.pth", "vit_b", *images["downscaled"],
                          kinds=["point", "box", "point_box"]))
    cases.append(medsam_case(out, "medsam_upscaled", vit_b, "models/vit_b.pth", "medsam", *images["upscaled"]))
    del vit_b
    if full_models:
        for name, seed in [("vit_l", 3), ("vit_h", 4)]:
            model = build_model(name, seed)
            torch.save(model.state_dict(), out / "models" / f"{name}.pth")
            cases.append(sam_case(out, f"{name}_upscaled", model, f"models/{name}.pth", name, *images["upscaled"],
                                  kinds=["point", "box"]))
            del model

    (out / "cases" / "index.json").write_text(json.dumps(cases, indent=1))
    for case in cases:
        for prompt in case["prompts"]:
            print(f"gen_predictor: {case['name']}/{prompt['name']}: max |logit| {prompt['max_abs_logit']:.3g}, "
                  f"foreground {prompt['foreground']:.3f}")
    (out / "stamp").write_text(stamp)


if __name__ == "__main__":
    main()
