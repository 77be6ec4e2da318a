"""What every peer script shares with `sqasam bench` (src/cli/bench.cpp): the prompts, the clock, the peak RSS,
the saved masks. Imports no runtime, so a peer's peak RSS stays its own."""
import resource
import time

import numpy as np


def bench_prompts(count, width, height):
    """Prompt i of count: a foreground point spread along the image's diagonal band, with a box a quarter of the
    image wide and high around it, clipped to the image. Mirrors bench_prompts() in src/cli/bench.cpp."""
    prompts = []
    for i in range(count):
        fraction = (i + 1) / (count + 1)
        cx, cy = fraction * width, (0.25 + 0.5 * fraction) * height
        box = [max(0.0, cx - width / 8), max(0.0, cy - height / 8),
               min(width - 1.0, cx + width / 8), min(height - 1.0, cy + height / 8)]
        prompts.append(((cx, cy), box))
    return prompts


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # ru_maxrss is KiB on Linux


def elapsed_ms(start):
    return (time.perf_counter() - start) * 1000.0


def save_masks(path, masks):
    """Boolean masks (prompts x masks x H x W) as packed bits, for bench/compare.py's IoU check."""
    stacked = np.stack(masks).astype(bool)
    np.savez(path, bits=np.packbits(stacked), shape=np.array(stacked.shape))


def load_masks(path):
    with np.load(path) as saved:
        shape = tuple(saved["shape"])
        return np.unpackbits(saved["bits"], count=int(np.prod(shape))).reshape(shape).astype(bool)
