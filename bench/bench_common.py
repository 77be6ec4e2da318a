"""What every peer script shares with `sqasam bench` (src/cli/bench.cpp): the prompts, the clock, the peak RSS,
the saved masks. Imports no runtime, so a peer's peak RSS stays its own."""
import resource
import statistics
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


def timing_result(args, width, height, load_ms, encoder_ms, decoder_ms, batched_ms, network_ms):
    """The keys every program's JSON line shares (sqasam bench writes the same): medians of the per-call times
    (batched_ms None where a program has no batched call) and the peak RSS."""
    median = lambda values: statistics.median(values) if values else None  # noqa: E731
    return {
        "model_type": args.model_type,
        "image": args.image,
        "image_size": [width, height],
        "prompts": args.prompts,
        "repeat": args.repeat,
        "load_ms": round(load_ms, 1),
        "encoder_ms": round(median(encoder_ms), 2),
        "decoder_ms_per_prompt": round(median(decoder_ms), 3),
        "decoder_ms_per_prompt_batched": round(median(batched_ms), 3) if batched_ms else None,
        "decoder_network_ms_per_prompt": round(median(network_ms), 3),
        "encoder_ms_all": [round(t, 2) for t in encoder_ms],
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
