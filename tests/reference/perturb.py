"""Random weights in which every tensor matters: shared by the reference generators."""
import torch


def add_noise_(model, seed, fraction, fallback):
    """Adds Gaussian noise to every tensor of model's state dict: `fraction` of the tensor's spread where it has one,
    else `fallback` (zero biases, rel_pos, pos_embed, LayerNorm gains of one), so that no term of the network is a
    no-op. Deterministic for a seed."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in model.state_dict().values():
            spread = tensor.float().std().item() if tensor.numel() > 1 else 0.0
            scale = fraction * spread if spread > 0 else fallback
            tensor.add_(scale * torch.randn(tensor.shape, generator=generator))
