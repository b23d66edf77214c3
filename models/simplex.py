"""The noise of the diffusion methods: multi-octave 2D simplex noise, or Gaussian, [B, C, H, W] float32.

Simplex noise (Wyatt et al., "AnoDDPM", CVPRW 2022) is a sum of octaves of 2D simplex (gradient)
noise. The first octave's lattice is `wavelength` pixels wide, each next one half as wide with
`persistence` times the amplitude. The parameters are AnoDDPM's (its `generate_simplex_noise`:
octave=6, persistence=0.8, frequency=64, where pixel coordinates are divided by the "frequency"),
which Behrendt et al.'s pDDPM and cDDPM use unchanged, as 2D noise, on 96x96 slices:

| parameter | value | where |
|---|---|---|
| octaves | 6 | `OCTAVES` |
| persistence (amplitude ratio of successive octaves) | 0.8 | `PERSISTENCE` |
| lattice width of the first octave (pixels) | 64, halved each octave (64, 32, ..., 2) | `WAVELENGTH` |

Departures: each plane (image and channel) gets its own draw, where the reference code gives the
whole batch one field; and each plane is standardised to zero mean and unit variance, so that it
can stand where the DDPM's unit Gaussian stands (the reference leaves the raw sum, of smaller
variance).

Each draw is two halves: `draw_simplex` takes the random choices from a `torch.Generator` (a
lattice permutation per plane, which also picks the gradients, and a lattice offset per plane and
octave) and `render_simplex` turns them into the field, deterministically. `noise` does both, or
draws Gaussian noise, through one signature.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

OCTAVES = 6
PERSISTENCE = 0.8
WAVELENGTH = 64.0

NoiseKind = Literal["simplex", "gaussian"]
NOISE_KINDS: tuple[str, ...] = ("simplex", "gaussian")

LATTICE = 256  # the permutation's period, in lattice cells
SKEW = 0.5 * (math.sqrt(3.0) - 1.0)  # input space -> the skewed (square) lattice
UNSKEW = (3.0 - math.sqrt(3.0)) / 6.0  # the skewed lattice -> input space
# 8 unit gradients, 45 degrees apart; the permutation picks one per lattice vertex.
_ANGLES = [math.pi / 8 + k * math.pi / 4 for k in range(8)]
GRADIENTS = torch.tensor([[math.cos(a), math.sin(a)] for a in _ANGLES], dtype=torch.float32)


@dataclass(frozen=True)
class SimplexDraw:
    """The random half of N simplex planes: `permutation` int64 [N, 256] (a permutation of 0..255
    per plane) and `offsets` float32 [N, octaves, 2] (lattice cells, in [0, 256), y then x)."""

    permutation: torch.Tensor
    offsets: torch.Tensor


def draw_simplex(planes: int, generator: torch.Generator, octaves: int = OCTAVES) -> SimplexDraw:
    """The random choices of `planes` independent simplex planes, from `generator` (on the CPU)."""
    permutation = torch.argsort(torch.rand(planes, LATTICE, generator=generator), dim=1)
    offsets = torch.rand(planes, octaves, 2, generator=generator) * LATTICE
    return SimplexDraw(permutation, offsets)


def _lattice_noise(y: torch.Tensor, x: torch.Tensor, permutation: torch.Tensor) -> torch.Tensor:
    """One octave of 2D simplex noise at points (y, x) in lattice units: [N, P] float32, each
    plane n with its own `permutation[n]` (int64 [N, 256]); values within about [-1, 1]."""
    skew = (x + y) * SKEW
    cell_x, cell_y = torch.floor(x + skew), torch.floor(y + skew)
    unskew = (cell_x + cell_y) * UNSKEW
    dx0, dy0 = x - (cell_x - unskew), y - (cell_y - unskew)
    # The triangle of the skewed cell that holds the point: its middle corner is (1, 0) or (0, 1).
    step_x = (dx0 > dy0).to(x.dtype)
    step_y = 1.0 - step_x
    corners = (
        (0.0, 0.0, dx0, dy0),
        (step_x, step_y, dx0 - step_x + UNSKEW, dy0 - step_y + UNSKEW),
        (1.0, 1.0, dx0 - 1.0 + 2.0 * UNSKEW, dy0 - 1.0 + 2.0 * UNSKEW),
    )
    base_x, base_y = cell_x.long(), cell_y.long()
    gradients = GRADIENTS.to(x.device)
    total = torch.zeros_like(x)
    for corner_x, corner_y, dx, dy in corners:
        vertex_x = (base_x + torch.as_tensor(corner_x).long()) % LATTICE
        vertex_y = (base_y + torch.as_tensor(corner_y).long()) % LATTICE
        hashed = torch.gather(permutation, 1, (vertex_x + torch.gather(permutation, 1, vertex_y)) % LATTICE)
        gradient = gradients[hashed % len(gradients)]  # [N, P, 2]
        falloff = (0.5 - dx * dx - dy * dy).clamp(min=0.0)
        total = total + falloff**4 * (gradient[..., 0] * dx + gradient[..., 1] * dy)
    return 70.0 * total


def render_simplex(
    draw: SimplexDraw,
    size: tuple[int, int],
    wavelength: float = WAVELENGTH,
    persistence: float = PERSISTENCE,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The N planes of `draw` over an (H, W) pixel grid: float32 [N, H, W], each plane standardised to
    zero mean and unit variance. Octave k has lattice cells wavelength / 2^k pixels wide and
    amplitude persistence^k; the number of octaves is the draw's."""
    height, width = size
    permutation, offsets = draw.permutation.to(device), draw.offsets.to(device)
    planes, octaves = offsets.shape[:2]
    rows = torch.arange(height, dtype=torch.float32, device=device).repeat_interleave(width)
    columns = torch.arange(width, dtype=torch.float32, device=device).repeat(height)
    field = torch.zeros(planes, height * width, device=device)
    for octave in range(octaves):
        cell = wavelength / 2**octave
        y = rows / cell + offsets[:, octave, 0:1]
        x = columns / cell + offsets[:, octave, 1:2]
        field = field + persistence**octave * _lattice_noise(y, x, permutation)
    field = field - field.mean(dim=1, keepdim=True)
    field = field / field.std(dim=1, unbiased=False, keepdim=True).clamp(min=1e-12)
    return field.reshape(planes, height, width)


def noise(
    shape: tuple[int, ...],
    kind: NoiseKind,
    generator: torch.Generator,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Noise of `shape` [B, C, H, W] (float32, on `device`) drawn from `generator` (on the CPU):
    "simplex" (AnoDDPM's parameters, each plane standardised) or "gaussian" (unit normal)."""
    if kind == "gaussian":
        return torch.randn(shape, generator=generator).to(device)
    if kind != "simplex":
        raise ValueError(f"noise kind must be one of {', '.join(NOISE_KINDS)}, got {kind!r}")
    batch, channels, height, width = shape
    draw = draw_simplex(batch * channels, generator)
    return render_simplex(draw, (height, width), device=device).reshape(shape)
