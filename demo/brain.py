"""Brain-like FLAIR volumes: head, skull, CSF, folded cortex, white matter, ventricles and deep grey
nuclei (see the package docstring), then bias field and Rician noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lightwork.demo.case import PhantomCase, case_generator
from lightwork.demo.fields import bias_field, block_mean, grid_affine, rotation_3d, smooth_noise, world_grid
from lightwork.demo.lesions import apply_lesions, draw_lesions

# Default grid of the demo brain volumes: 80x112x80's aspect at 5 mm voxels.
BRAIN_SHAPE = (32, 40, 32)
BRAIN_SPACING_MM = 5.0
# Brain anatomy is rendered on a grid this many times finer per axis, then block-averaged: partial
# volume at tissue borders, thin structures (fissure, sulci) that survive coarse voxels.
SUPERSAMPLING = 2

# Brain tissue labels of the rendered anatomy.
BACKGROUND, SCALP, SKULL, CSF, GREY, WHITE, LESION = range(7)


@dataclass
class BrainParams:
    """One subject's anatomy and acquisition. Lengths in mm, intensities relative to white matter.

    The `*_field` arrays are unit-std smoothed noise (float32): outline, folding and sulcus fields on
    the supersampled grid (`shape` x SUPERSAMPLING), texture and noise on the image grid.
    """

    shape: tuple[int, int, int]
    spacing_mm: float
    head_radii_mm: np.ndarray  # [3] semi-axes of the head ellipsoid
    head_centre_mm: np.ndarray  # [3]
    rotation: np.ndarray  # [3, 3]
    outline_amplitude: float  # relative bumpiness of the head and brain outline
    scalp_fraction: float  # shell thicknesses as fractions of the head radius
    skull_fraction: float
    csf_fraction: float
    cortex_thickness: float  # fraction of the brain radius
    folding_amplitude: float
    sulcus_width: float
    ventricle_scale: float
    ventricle_asymmetry: float
    intensities: dict[str, float]
    bias_coefficients: np.ndarray  # [10] quadratic polynomial in normalised coordinates
    noise_sigma: float
    outline_field: np.ndarray
    folding_field: np.ndarray
    sulcus_field: np.ndarray
    texture_field: np.ndarray
    noise_real: np.ndarray
    noise_imag: np.ndarray


def draw_brain_params(
    rng: np.random.Generator, shape: tuple[int, int, int] = BRAIN_SHAPE, spacing_mm: float = BRAIN_SPACING_MM
) -> BrainParams:
    """Draw one subject: head size about 150x190x150 mm, scaled by N(1, 0.04) per subject."""
    shape = tuple(int(n) for n in shape)
    fine_shape = tuple(n * SUPERSAMPLING for n in shape)
    fine_spacing = spacing_mm / SUPERSAMPLING
    folding = max(1.0, 5.0 / fine_spacing)  # cortical folding scale: ~5 mm, never below one voxel
    scale = float(np.clip(rng.normal(1.0, 0.04), 0.9, 1.1))
    radii = np.array([73.0, 93.0, 72.0]) * scale * rng.normal(1.0, 0.025, 3)
    fov = np.array(shape) * spacing_mm / 2
    radii = np.minimum(radii, 0.97 * fov)  # the head stays inside the field of view
    return BrainParams(
        shape=shape,
        spacing_mm=float(spacing_mm),
        head_radii_mm=radii,
        head_centre_mm=rng.normal(0.0, 2.5, 3) * np.minimum(1.0, (fov - radii) / 5.0),
        rotation=rotation_3d(np.deg2rad(rng.normal(0.0, 3.0, 3))),
        outline_amplitude=float(rng.uniform(0.015, 0.035)),
        scalp_fraction=float(rng.uniform(0.05, 0.08)),
        skull_fraction=float(rng.uniform(0.05, 0.08)),
        csf_fraction=float(rng.uniform(0.03, 0.05)),
        cortex_thickness=float(rng.uniform(0.12, 0.16)),
        folding_amplitude=float(rng.uniform(0.05, 0.08)),
        sulcus_width=float(rng.uniform(0.15, 0.25)),
        ventricle_scale=float(rng.uniform(0.8, 1.4)),
        ventricle_asymmetry=float(rng.normal(0.0, 0.08)),
        intensities={
            "white": 1.0,
            "grey": float(rng.uniform(1.3, 1.45)),
            "csf": float(rng.uniform(0.15, 0.3)),
            "deep_grey": float(rng.uniform(1.15, 1.3)),
            "skull": float(rng.uniform(0.05, 0.15)),
            "scalp": float(rng.uniform(0.8, 1.1)),
        },
        bias_coefficients=np.concatenate([[0.0], rng.normal(0.0, 0.06, 3), rng.normal(0.0, 0.04, 6)]),
        noise_sigma=float(rng.uniform(0.015, 0.04)),
        outline_field=smooth_noise(rng, fine_shape, 25.0 / fine_spacing),
        folding_field=smooth_noise(rng, fine_shape, folding),
        sulcus_field=smooth_noise(rng, fine_shape, folding),
        texture_field=smooth_noise(rng, shape, 1.0),
        noise_real=rng.standard_normal(shape).astype(np.float32),
        noise_imag=rng.standard_normal(shape).astype(np.float32),
    )


def _ellipsoid(points: np.ndarray, centre: tuple[float, ...], radii: tuple[float, ...]) -> np.ndarray:
    """Normalised ellipsoidal radius of `points` [3, *S] (< 1 inside)."""
    return np.sqrt(sum(((points[d] - centre[d]) / radii[d]) ** 2 for d in range(3)))


@dataclass
class BrainAnatomy:
    """A rendered subject before acquisition effects.

    tissue: uint8 [*S] tissue label (BACKGROUND .. WHITE); clean: float32 [*S] noise-free
    intensities; brain: bool [*S] brain mask (grey, white, deep grey, ventricles, sulci); head:
    bool [*S]; brain_coords: float32 [3, *S] coordinates normalised to the brain's radii.
    """

    tissue: np.ndarray
    clean: np.ndarray
    brain: np.ndarray
    head: np.ndarray
    brain_coords: np.ndarray


def render_brain_anatomy(params: BrainParams) -> BrainAnatomy:
    """The subject's tissues and noise-free intensities on its grid (deterministic).

    Tissues are decided on the supersampled grid; `clean` is their block mean on the image grid,
    `tissue` the label at each block's first sub-voxel, the masks hold where most sub-voxels do.
    """
    fine_shape = tuple(n * SUPERSAMPLING for n in params.shape)
    world = world_grid(fine_shape, params.spacing_mm / SUPERSAMPLING)
    local = np.einsum("ij,j...->i...", params.rotation.T, world - params.head_centre_mm[:, None, None, None])
    normalised = local / params.head_radii_mm[:, None, None, None]
    rho = np.sqrt((normalised**2).sum(0)) * (1.0 + params.outline_amplitude * params.outline_field)
    skull_in = 1.0 - params.scalp_fraction
    csf_in = skull_in - params.skull_fraction
    brain_radius = csf_in - params.csf_fraction
    p = normalised / brain_radius  # brain-normalised coordinates
    rb = rho / brain_radius

    tissue = np.full(fine_shape, BACKGROUND, np.uint8)
    tissue[rho <= 1.0] = SCALP
    tissue[rho <= skull_in] = SKULL
    tissue[rho <= csf_in] = CSF
    brain = rb <= 1.0
    # Flatten the brain's base a little: the temporal lobes and cerebellum sit above the skull base.
    brain &= p[2] > -0.85 + 0.25 * p[1] ** 2
    tissue[brain] = WHITE
    boundary = 1.0 - params.cortex_thickness * (
        1.0 + params.folding_amplitude / params.cortex_thickness * params.folding_field
    )
    tissue[brain & (rb > boundary)] = GREY
    # Sulci: thin sheets along the noise field's zero crossings, cutting into the cortex from outside.
    sulci = brain & (rb > boundary - 0.04) & (np.abs(params.sulcus_field) < params.sulcus_width)
    fissure = brain & (np.abs(p[0]) < 0.03) & (p[2] > 0.05 - 0.4 * p[1])
    tissue[sulci | fissure] = CSF

    deep = np.zeros(fine_shape, bool)
    for side in (-1.0, 1.0):
        deep |= _ellipsoid(p, (side * 0.14, -0.12, -0.05), (0.11, 0.17, 0.12)) <= 1.0  # thalamus
        deep |= _ellipsoid(p, (side * 0.3, 0.12, 0.0), (0.07, 0.17, 0.13)) <= 1.0  # putamen
    ventricles = np.zeros(fine_shape, bool)
    v = params.ventricle_scale
    for side in (-1.0, 1.0):
        size = v * (1.0 + side * params.ventricle_asymmetry)
        # Lateral ventricle: an arc over the thalamus (centre rises towards the middle of its length).
        arc = p[2] - 0.12 + 0.35 * p[1] ** 2
        ventricles |= ((p[0] - side * 0.12) / (0.09 * size)) ** 2 + (p[1] / 0.45) ** 2 + (
            arc / (0.1 * size)
        ) ** 2 <= 1.0
    ventricles |= _ellipsoid(p, (0.0, -0.1, -0.08), (0.025 * v, 0.14, 0.1)) <= 1.0  # third ventricle
    tissue[brain & deep] = GREY
    tissue[brain & ventricles] = CSF

    values = params.intensities
    lookup = np.array(
        [0.0, values["scalp"], values["skull"], values["csf"], values["grey"], values["white"], 0.0], np.float32
    )
    fine_clean = lookup[tissue]
    fine_clean[brain & deep & ~ventricles] = values["deep_grey"]
    clean = block_mean(fine_clean, SUPERSAMPLING) * (1.0 + 0.03 * params.texture_field)  # with microtexture
    step = (slice(None, None, SUPERSAMPLING),) * 3
    return BrainAnatomy(
        tissue=tissue[step],
        clean=clean.astype(np.float32),
        brain=block_mean(brain.astype(np.float32), SUPERSAMPLING) >= 0.5,
        head=block_mean((rho <= 1.0).astype(np.float32), SUPERSAMPLING) > 0.0,
        brain_coords=block_mean(p, SUPERSAMPLING, leading=1).astype(np.float32),
    )


def acquire(
    clean: np.ndarray,
    support: np.ndarray,
    bias_coefficients: np.ndarray,
    noise_sigma: float,
    noise_real: np.ndarray,
    noise_imag: np.ndarray,
) -> np.ndarray:
    """Bias field times intensities, then Rician noise (magnitude of a complex Gaussian), inside
    `support` only; zero outside (the background stays exactly zero)."""
    biased = clean * bias_field(bias_coefficients, clean.shape)
    noisy = np.sqrt((biased + noise_sigma * noise_real) ** 2 + (noise_sigma * noise_imag) ** 2)
    return np.where(support, noisy, 0.0).astype(np.float32)


def make_brain_case(
    seed: int,
    case_id: str,
    with_lesions: bool,
    shape: tuple[int, int, int] = BRAIN_SHAPE,
    spacing_mm: float = BRAIN_SPACING_MM,
) -> PhantomCase:
    """One brain volume (head with skull); with lesions when `with_lesions` (deterministic)."""
    rng = case_generator(seed, case_id)
    params = draw_brain_params(rng, shape, spacing_mm)
    anatomy = render_brain_anatomy(params)
    clean, lesion = anatomy.clean, None
    if with_lesions:
        parenchyma = anatomy.brain & np.isin(anatomy.tissue, (GREY, WHITE))
        deep_enough = parenchyma & (np.sqrt((anatomy.brain_coords**2).sum(0)) < 0.75)
        lesions = draw_lesions(
            rng, deep_enough, spacing_mm, radius_range_mm=(9.0, 20.0), core_range=(1.6, 2.0), halo_range=(1.3, 1.5)
        )
        clean, lesion = apply_lesions(clean, parenchyma, lesions, spacing_mm)
    image = acquire(
        clean, anatomy.head, params.bias_coefficients, params.noise_sigma, params.noise_real, params.noise_imag
    )
    return PhantomCase(case_id, image, anatomy.brain, lesion, grid_affine(shape, spacing_mm), spacing_mm)
