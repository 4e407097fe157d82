"""The fully connected CRF that DeepLab v1 / v2 apply to their outputs, in plain PyTorch.

Kraehenbuehl and Koltun. "Efficient Inference in Fully Connected CRFs with Gaussian Edge
Potentials", NIPS 2011. Mean-field inference with a Potts model over two Gaussian kernels: an
appearance kernel on position and colour (w1, theta_alpha, theta_beta) and a smoothness kernel on
position (w2, theta_gamma). Each message is a Gaussian filter of the current marginals: the 5-D
appearance filter with the permutohedral lattice (Adams, Baek, Davis, Eurographics 2010) in O(N)
rather than O(N^2), the 2-D smoothness filter exactly, as a separable convolution. Both are
normalised symmetrically, as the authors' densecrf 2.2 does:

    Q <- softmax(log P + sum_k w_k * D_k^-1/2 K_k D_k^-1/2 Q),   D_k = diag(K_k 1)

Defaults are DeepLab-LargeFOV's CRF on PASCAL VOC (Chen et al. 2015): w1 = 4, theta_alpha = 121,
theta_beta = 5, w2 = 3, theta_gamma = 3, 10 iterations.
"""

from __future__ import annotations

import math

import torch

_KEY_BITS = 12  # per lattice coordinate in the packed hash key; +-2048 covers any image


class PermutohedralLattice:
    """Gaussian filtering of values at N points with d-dimensional (pre-scaled) features.

    Built once per image, then ``filter`` costs one splat, d + 1 blurs and one slice.
    """

    def __init__(self, features: torch.Tensor):
        n, d = features.shape
        device = features.device
        self.d = d
        features = features.double()
        # Elevate onto the hyperplane H_d, scaled so that the lattice blur is a unit Gaussian.
        scale = (
            math.sqrt(2.0 / 3.0)
            * (d + 1)
            / torch.sqrt(
                torch.arange(1, d + 1, dtype=torch.float64, device=device)
                * torch.arange(2, d + 2, dtype=torch.float64, device=device)
            )
        )
        scaled = features * scale
        elevated = torch.zeros(n, d + 1, dtype=torch.float64, device=device)
        suffix = torch.flip(torch.cumsum(torch.flip(scaled, [1]), 1), [1])  # sum_{k >= j} scaled_k
        elevated[:, 0] = suffix[:, 0]
        elevated[:, 1:] = (
            torch.cat([suffix[:, 1:], scaled.new_zeros(n, 1)], 1)
            - torch.arange(1, d + 1, dtype=torch.float64, device=device) * scaled
        )
        # The closest remainder-0 lattice point, and the simplex the point lies in.
        rounded = torch.round(elevated / (d + 1))
        rem0 = rounded * (d + 1)
        total = rounded.sum(1, keepdim=True).long()
        residual = elevated - rem0
        order = torch.argsort(-residual, dim=1, stable=True)
        rank = torch.empty_like(order)
        rank.scatter_(1, order, torch.arange(d + 1, device=device).expand(n, -1))
        rank = rank + total
        low, high = rank < 0, rank > d
        rank = torch.where(low, rank + d + 1, torch.where(high, rank - d - 1, rank))
        rem0 = torch.where(low, rem0 + d + 1, torch.where(high, rem0 - d - 1, rem0))
        # Barycentric weights of the d + 1 vertices.
        v = (elevated - rem0) / (d + 1)
        barycentric = torch.zeros(n, d + 2, dtype=torch.float64, device=device)
        barycentric.scatter_add_(1, d - rank, v)
        barycentric.scatter_add_(1, d - rank + 1, -v)
        barycentric[:, 0] += 1.0 + barycentric[:, d + 1]
        self.weights = barycentric[:, : d + 1].float()
        # Vertex keys: rem0 plus the canonical simplex offset of each remainder.
        remainder = torch.arange(d + 1, device=device)
        canonical = torch.where(
            rank[:, None, :] <= d - remainder[None, :, None],
            remainder[None, :, None],
            remainder[None, :, None] - (d + 1),
        )
        keys = (rem0.long()[:, None, :] + canonical)[..., :d]
        packed = self._pack(keys.reshape(-1, d))
        self.vertices, self.index = torch.unique(packed, return_inverse=True)
        self.index = self.index.view(n, d + 1)
        lattice_keys = self._unpack(self.vertices)
        # Neighbours along each of the d + 1 lattice axes (-1 where absent).
        self.neighbours = []
        for axis in range(d + 1):
            step = torch.full((d,), 1, dtype=torch.long, device=device)
            if axis < d:
                step[axis] = -d
            self.neighbours.append((self._find(lattice_keys - step), self._find(lattice_keys + step)))
        self.alpha = 1.0 / (1.0 + 2.0 ** (-d))

    @staticmethod
    def _pack(keys: torch.Tensor) -> torch.Tensor:
        offset = 1 << (_KEY_BITS - 1)
        packed = torch.zeros(keys.shape[0], dtype=torch.long, device=keys.device)
        for column in range(keys.shape[1]):
            packed = (packed << _KEY_BITS) | (keys[:, column] + offset)
        return packed

    def _unpack(self, packed: torch.Tensor) -> torch.Tensor:
        offset, mask = 1 << (_KEY_BITS - 1), (1 << _KEY_BITS) - 1
        columns = [((packed >> (_KEY_BITS * (self.d - 1 - c))) & mask) - offset for c in range(self.d)]
        return torch.stack(columns, 1)

    def _find(self, keys: torch.Tensor) -> torch.Tensor:
        packed = self._pack(keys)
        position = torch.searchsorted(self.vertices, packed).clamp(max=len(self.vertices) - 1)
        return torch.where(self.vertices[position] == packed, position, torch.full_like(position, -1))

    def filter(self, values: torch.Tensor) -> torch.Tensor:
        """[N, C] -> [N, C]: sum_j exp(-|f_i - f_j|^2 / 2) values_j, approximately."""
        channels = values.shape[1]
        lattice = values.new_zeros(len(self.vertices) + 1, channels)  # last row: absent neighbours
        lattice.index_add_(
            0, self.index.reshape(-1), (self.weights[..., None] * values[:, None, :]).reshape(-1, channels)
        )
        for before, after in self.neighbours:
            lattice = torch.cat([lattice[:-1] + 0.5 * (lattice[before] + lattice[after]), lattice[-1:]])
        return (self.weights[..., None] * lattice[self.index]).sum(1) * self.alpha


def _symmetric(filter_fn, ones: torch.Tensor):
    """``q -> D^-1/2 K D^-1/2 q`` for the filter ``K``, with ``D = K 1``."""
    norm = filter_fn(ones).clamp(min=1e-20).rsqrt()
    return lambda q: filter_fn(q * norm) * norm


def gaussian_blur(values: torch.Tensor, sigma: float) -> torch.Tensor:
    """[C, H, W] convolved with exp(-d^2 / (2 sigma^2)) (unnormalised, zero outside the image)."""
    radius = max(1, math.ceil(3 * sigma))
    taps = torch.exp(
        -0.5 * (torch.arange(-radius, radius + 1, device=values.device, dtype=values.dtype) / sigma) ** 2
    )
    x = values[:, None]
    x = torch.nn.functional.conv2d(x, taps.view(1, 1, -1, 1), padding=(radius, 0))
    return torch.nn.functional.conv2d(x, taps.view(1, 1, 1, -1), padding=(0, radius))[:, 0]


def dense_crf(
    probs: torch.Tensor,
    image: torch.Tensor,
    iterations: int = 10,
    w1: float = 4.0,
    theta_alpha: float = 121.0,
    theta_beta: float = 5.0,
    w2: float = 3.0,
    theta_gamma: float = 3.0,
) -> torch.Tensor:
    """Refined marginals ``[K, H, W]`` from probabilities ``[K, H, W]`` and the RGB ``image``
    [3, H, W] (0-255)."""
    classes, height, width = probs.shape
    ys, xs = torch.meshgrid(
        torch.arange(height, device=probs.device, dtype=torch.float32),
        torch.arange(width, device=probs.device, dtype=torch.float32),
        indexing="ij",
    )
    position = torch.stack([xs, ys], -1).reshape(-1, 2)
    colour = image.float().reshape(image.shape[0], -1).t()
    lattice = PermutohedralLattice(torch.cat([position / theta_alpha, colour / theta_beta], 1))
    appearance = _symmetric(lattice.filter, position.new_ones(height * width, 1))
    smoothness = _symmetric(lambda q: gaussian_blur(q, theta_gamma), position.new_ones(1, height, width))
    unary = probs.float().clamp(min=1e-8).log()
    q = unary.softmax(0)
    for _ in range(iterations):
        message = appearance(q.reshape(classes, -1).t()).t().reshape(classes, height, width)
        q = (unary + w1 * message + w2 * smoothness(q)).softmax(0)
    return q
