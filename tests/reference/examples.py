"""The real images the reference generators use, all from the repository's examples/ (PolypGen, CC BY 4.0), so that
the references need no data beside the project. Three shapes of input, each with its ground-truth mask:

  downscaled  1920x1080 RGB: 24_endocv2021_positive_801 enlarged x5 (PIL bicubic) plus fixed noise, so that
              shrinking it to SAM's 1024 exercises Pillow's antialiasing filter on fine detail
  upscaled    384x327 RGB: 176OLCV1_100H0846 as it is (JPEG), enlarged by SAM's preprocessing
  gray        384x288 gray: C3_EndoCV2021_00245 converted to one channel (PIL "L"), a gray PNG

The derived images are written as PNG under <folder>/ (a build folder), never into the repository.
"""
import pathlib

import numpy as np
from PIL import Image

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"
SOURCES = {"downscaled": "24_endocv2021_positive_801", "upscaled": "176OLCV1_100H0846", "gray": "C3_EndoCV2021_00245"}


def _ground_truth(base, size=None):
    gt = Image.open(EXAMPLES / "gt" / f"{base}.png").convert("L")
    if size is not None:
        gt = gt.resize(size, Image.NEAREST)
    return np.array(gt) > 127


def load_examples(folder):
    """{key: (image file, decoded pixels as the official code gets them (uint8; gray stays 2-D), ground-truth mask)}"""
    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    images = {}

    base = SOURCES["downscaled"]
    source = Image.open(EXAMPLES / "images" / f"{base}.jpg").convert("RGB")
    large = np.array(source.resize((1920, 1080), Image.BICUBIC)).astype(np.int16)
    large += np.random.default_rng(11).integers(-12, 13, size=large.shape, dtype=np.int16)
    path = folder / "downscaled.png"
    Image.fromarray(np.clip(large, 0, 255).astype(np.uint8)).save(path)
    images["downscaled"] = (path, _ground_truth(base, (1920, 1080)))

    base = SOURCES["upscaled"]
    images["upscaled"] = (EXAMPLES / "images" / f"{base}.jpg", _ground_truth(base))

    base = SOURCES["gray"]
    path = folder / "gray.png"
    Image.open(EXAMPLES / "images" / f"{base}.jpg").convert("L").save(path)
    images["gray"] = (path, _ground_truth(base))

    return {key: (str(path.resolve()), np.array(Image.open(path)), gt) for key, (path, gt) in images.items()}
