"""RQ-VAE tokenizer of the Two-Stage (TIGER) baseline: trained on frozen item embeddings, then frozen.

An MLP encoder maps each item's text embedding to a small latent; a residual quantizer (L levels x K
codes) picks at each level the codeword nearest to what the previous levels left; an MLP decoder
reconstructs the text embedding from the sum of the chosen codewords. The quantizer is not
differentiable, so the encoder gets its gradient through the straight-through estimator, and the
codebooks and encoder are pulled together by the usual VQ-VAE codebook and commitment terms:

    loss = ||x - dec(z_q)||^2 + sum_l ||sg[r_l] - e_l||^2 + beta * sum_l ||r_l - sg[e_l]||^2

Codebooks start from residual k-means over the untrained encoder's latents. Items whose L codes
coincide are told apart by one extra code (`disambiguate`), so every item gets a unique SID.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn


def mlp(sizes: Sequence[int]) -> nn.Sequential:
    """Linear layers with ReLU between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(fan_in, fan_out))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


@torch.no_grad()
def kmeans(points: Tensor, k: int, iterations: int, generator: torch.Generator) -> Tensor:
    """Lloyd's k-means [k, d]; starts from k distinct random points (repeated with jitter when n < k).

    An emptied cluster is re-seeded with the point farthest from its centroid, so all k stay in use.
    """
    n = len(points)
    if n == 0:
        raise ValueError("k-means needs at least one point")
    order = torch.randperm(n, generator=generator)
    starts = order[torch.arange(k) % n]
    centroids = points[starts].clone()
    if n < k:  # spare codes: jittered copies, so distances still break ties deterministically
        noise = torch.randn(centroids.shape, generator=generator).to(points.device)
        centroids[n:] += 1e-3 * noise[n:] * points.norm(dim=1).mean()
    for _ in range(iterations):
        distances = torch.cdist(points, centroids)
        assign = distances.argmin(dim=1)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centroids).index_add_(0, assign, points)
        filled = counts > 0
        centroids[filled] = sums[filled] / counts[filled, None]
        empty = torch.nonzero(~filled).squeeze(1)
        if empty.numel() and n >= k:
            error = distances.gather(1, assign[:, None]).squeeze(1)
            centroids[empty] = points[error.topk(empty.numel()).indices]
    return centroids


class RQVAE(nn.Module):
    def __init__(self, input_dim: int, hidden_dims: Sequence[int] = (256, 128), latent_dim: int = 32,
                 levels: int = 3, codebook_size: int = 256) -> None:
        super().__init__()
        self.levels, self.codebook_size, self.latent_dim = levels, codebook_size, latent_dim
        self.encoder = mlp([input_dim, *hidden_dims, latent_dim])
        self.decoder = mlp([latent_dim, *reversed(hidden_dims), input_dim])
        self.codebooks = nn.Parameter(torch.zeros(levels, codebook_size, latent_dim))

    def quantize(self, z: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Residual nearest-codeword chain -> codes [n, L], sum of codewords, codebook and commitment losses."""
        residual, total = z, torch.zeros_like(z)
        codes, codebook_loss, commitment_loss = [], z.new_zeros(()), z.new_zeros(())
        for level in range(self.levels):
            codebook = self.codebooks[level]
            code = torch.cdist(residual.detach(), codebook.detach()).argmin(dim=1)
            chosen = codebook[code]
            codebook_loss = codebook_loss + (residual.detach() - chosen).pow(2).sum(-1).mean()
            commitment_loss = commitment_loss + (residual - chosen.detach()).pow(2).sum(-1).mean()
            residual = residual - chosen.detach()
            total = total + chosen
            codes.append(code)
        return torch.stack(codes, dim=1), total, codebook_loss, commitment_loss

    def losses(self, x: Tensor, beta: float) -> dict[str, Tensor]:
        z = self.encoder(x)
        _, quantized, codebook_loss, commitment_loss = self.quantize(z)
        # Straight-through: the decoder sees the codewords, the encoder gets the decoder's gradient as is.
        z_q = z + (quantized - z).detach()
        reconstruction = (self.decoder(z_q) - x).pow(2).sum(-1).mean()
        total = reconstruction + codebook_loss + beta * commitment_loss
        return {"loss": total, "reconstruction": reconstruction, "codebook": codebook_loss,
                "commitment": commitment_loss}

    @torch.no_grad()
    def encode(self, x: Tensor, batch_size: int = 8192) -> Tensor:
        """Item embeddings [n, input_dim] -> codes [n, L] (long)."""
        if len(x) == 0:
            return torch.zeros(0, self.levels, dtype=torch.long, device=x.device)
        return torch.cat([self.quantize(self.encoder(chunk))[0] for chunk in x.split(batch_size)])

    @torch.no_grad()
    def kmeans_init(self, x: Tensor, iterations: int, generator: torch.Generator) -> None:
        """Residual k-means over the current latents of all items: level l clusters what levels < l left."""
        residual = torch.cat([self.encoder(chunk) for chunk in x.split(8192)])
        for level in range(self.levels):
            centroids = kmeans(residual, self.codebook_size, iterations, generator)
            self.codebooks[level].copy_(centroids)
            residual = residual - centroids[torch.cdist(residual, centroids).argmin(dim=1)]


def disambiguate(codes: Tensor) -> Tensor:
    """[n, L] codes -> [n, L + 1]: items sharing L codes get 0, 1, 2, ... (by item index) in the last slot."""
    n = len(codes)
    if n == 0:
        return torch.zeros(0, codes.shape[1] + 1, dtype=torch.long)
    codes = codes.long().cpu()
    _, group = torch.unique(codes, dim=0, return_inverse=True)
    order = torch.sort(group, stable=True).indices  # item indices ascending inside each group
    sorted_group = group[order]
    first = torch.ones(n, dtype=torch.bool)
    first[1:] = sorted_group[1:] != sorted_group[:-1]
    starts = torch.cummax(torch.where(first, torch.arange(n), 0), dim=0).values
    extra = torch.empty(n, dtype=torch.long)
    extra[order] = torch.arange(n) - starts
    return torch.cat([codes, extra[:, None]], dim=1)


def train_rqvae(embeddings: Tensor, *, latent_dim: int, hidden_dims: Sequence[int], levels: int, codebook_size: int,
                epochs: int, batch_size: int, lr: float, beta: float, kmeans_iterations: int, seed: int,
                device: torch.device, log: Callable[[str], None] | None = None) -> tuple[RQVAE, list[dict]]:
    """Train an RQ-VAE on `embeddings` [n_items, d]; returns the model (eval mode) and per-epoch losses."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = RQVAE(embeddings.shape[1], hidden_dims, latent_dim, levels, codebook_size).to(device)
    x = embeddings.to(device)
    model.kmeans_init(x, kmeans_iterations, generator)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    history = []
    for epoch in range(epochs):
        started = time.perf_counter()
        model.train()
        sums: dict[str, float] = {}
        order = torch.randperm(len(x), generator=generator).to(device)
        steps = 0
        for rows in order.split(batch_size):
            terms = model.losses(x[rows], beta)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            terms = {name: value.detach() for name, value in terms.items()}
            optimizer.step()
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value.item()
            steps += 1
        record = {"epoch": epoch, **{name: value / max(steps, 1) for name, value in sums.items()},
                  "seconds": time.perf_counter() - started}
        if epoch == epochs - 1 or epoch % 10 == 0:
            model.eval()
            codes = model.encode(x).cpu()
            record["unique_share"] = len(torch.unique(codes, dim=0)) / max(len(codes), 1)
            record["level_usage"] = [len(torch.unique(codes[:, level])) / codebook_size for level in range(levels)]
            if log:
                log(f"rq epoch {epoch + 1}/{epochs}: recon {record['reconstruction']:.4f} "
                    f"codebook {record['codebook']:.4f} unique {record['unique_share']:.3f} "
                    f"usage {np.round(record['level_usage'], 3).tolist()}")
        history.append(record)
    model.eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model, history
