"""The embedded default dataset: brain-like volumes and chest-X-ray-like images, generated.

No download: `lightwork pipeline` with no data runs on a cohort made here. Every case is a
deterministic function of (cohort seed, case id), on any machine.

Brain volumes (FLAIR-like contrast, RAS axes: x left->right, y posterior->anterior, z
inferior->superior) carry a scalp and skull shell, subarachnoid CSF, a grey-matter cortex whose
boundary with white matter is folded by smoothed noise, sulci, an interhemispheric fissure, lateral
and third ventricles and deep grey nuclei. Between subjects the head size, aspect, pose, outline,
cortical folding, ventricle size, tissue intensities, bias field and noise level vary.

Chest images (posteroanterior X-ray-like, rows top->bottom, columns patient right->left as read)
carry a torso with shoulders, two lungs with diaphragm domes and vascular texture, a mediastinum
with a heart bulge, the spine, clavicles and ribs; size, pose, exposure and noise vary.

Test cases carry lesion-like anomalies made by a mechanism that is none of the five training
tasks (method.md section 2): an irregular blob cut from thresholded smoothed noise under a radial
envelope, a textured hyperintense core replacing the tissue, and a soft halo ("edema") whose
weight decays with distance from the core and is modulated by noise. No blending of patches, no
deformation (no mass effect), no smooth additive ramp over an ellipse or box. The ground-truth
mask is the core plus the halo where its weight exceeds one half.

Every random step is two halves: `draw_*` takes a `numpy.random.Generator` and returns parameters
(noise fields included), `render_*` / `apply_*` are deterministic functions of those parameters.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lightwork.anomalies.seeding import stable_id

# Default grids of the demo cohort: the brain grid is 80x112x80's aspect at 5 mm voxels.
BRAIN_SHAPE = (32, 40, 32)
BRAIN_SPACING_MM = 5.0
# Brain anatomy is rendered on a grid this many times finer per axis, then block-averaged: partial
# volume at tissue borders, thin structures (fissure, sulci) that survive coarse voxels.
SUPERSAMPLING = 2
CHEST_SHAPE = (64, 64)
CHEST_SPACING_MM = 5.5

# Brain tissue labels of the rendered anatomy.
BACKGROUND, SCALP, SKULL, CSF, GREY, WHITE, LESION = range(7)


def case_generator(seed: int, case_id: str) -> np.random.Generator:
    """The generator of one phantom case: a function of the cohort seed and the case id only."""
    return np.random.default_rng(np.random.SeedSequence([int(seed), stable_id(case_id)]))


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_voxels: float | tuple[float, ...]) -> np.ndarray:
    """Gaussian-smoothed white noise rescaled to zero mean and unit std, float32 `shape`."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma_voxels, mode="wrap")
    field -= field.mean()
    return (field / max(float(field.std()), 1e-8)).astype(np.float32)


def world_grid(shape: tuple[int, ...], spacing_mm: float) -> np.ndarray:
    """Voxel-centre coordinates in mm, centred on the grid: float32 [D, *shape]."""
    axes = [(np.arange(n, dtype=np.float32) - (n - 1) / 2) * spacing_mm for n in shape]
    return np.stack(np.meshgrid(*axes, indexing="ij"))


def grid_affine(shape: tuple[int, ...], spacing_mm: float) -> np.ndarray:
    """Voxel index -> world mm (RAS) for a 3D grid centred on the origin: float64 [4, 4]."""
    affine = np.diag([spacing_mm] * 3 + [1.0])
    affine[:3, 3] = [-(n - 1) / 2 * spacing_mm for n in shape]
    return affine


def rotation_3d(angles_rad: np.ndarray) -> np.ndarray:
    """The rotation x-then-y-then-z by the three angles: float64 [3, 3]."""
    a, b, c = angles_rad
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    ry = np.array([[np.cos(b), 0, np.sin(b)], [0, 1, 0], [-np.sin(b), 0, np.cos(b)]])
    rz = np.array([[np.cos(c), -np.sin(c), 0], [np.sin(c), np.cos(c), 0], [0, 0, 1]])
    return rz @ ry @ rx


# ----------------------------------------------------------------------------- brain anatomy


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


def draw_brain_params(rng: np.random.Generator, shape: tuple[int, int, int] = BRAIN_SHAPE,
                      spacing_mm: float = BRAIN_SPACING_MM) -> BrainParams:
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
    boundary = 1.0 - params.cortex_thickness * (1.0 + params.folding_amplitude / params.cortex_thickness * params.folding_field)
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
        ventricles |= ((p[0] - side * 0.12) / (0.09 * size)) ** 2 + (p[1] / 0.45) ** 2 + (arc / (0.1 * size)) ** 2 <= 1.0
    ventricles |= _ellipsoid(p, (0.0, -0.1, -0.08), (0.025 * v, 0.14, 0.1)) <= 1.0  # third ventricle
    tissue[brain & deep] = GREY
    tissue[brain & ventricles] = CSF

    values = params.intensities
    lookup = np.array([0.0, values["scalp"], values["skull"], values["csf"], values["grey"], values["white"], 0.0], np.float32)
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


def block_mean(array: np.ndarray, factor: int, leading: int = 0) -> np.ndarray:
    """Mean over non-overlapping blocks of `factor` voxels per spatial axis (axes after `leading`)."""
    spatial = array.shape[leading:]
    blocked = array.reshape(array.shape[:leading] + sum(((n // factor, factor) for n in spatial), ()))
    return blocked.mean(axis=tuple(leading + 2 * d + 1 for d in range(len(spatial))))


def bias_field(coefficients: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A smooth multiplicative field exp(quadratic polynomial) over normalised coordinates."""
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    grids = np.meshgrid(*axes, indexing="ij")
    terms = [np.ones(shape, np.float32), *grids]
    terms += [grids[i] * grids[j] for i in range(len(shape)) for j in range(i, len(shape))]
    return np.exp(sum(c * t for c, t in zip(coefficients, terms))).astype(np.float32)


def acquire(clean: np.ndarray, support: np.ndarray, bias_coefficients: np.ndarray, noise_sigma: float,
            noise_real: np.ndarray, noise_imag: np.ndarray) -> np.ndarray:
    """Bias field times intensities, then Rician noise (magnitude of a complex Gaussian), inside
    `support` only; zero outside (the background stays exactly zero)."""
    biased = clean * bias_field(bias_coefficients, clean.shape)
    noisy = np.sqrt((biased + noise_sigma * noise_real) ** 2 + (noise_sigma * noise_imag) ** 2)
    return np.where(support, noisy, 0.0).astype(np.float32)


# ----------------------------------------------------------------------------- lesions


@dataclass
class LesionParams:
    """One lesion. Lengths in mm; intensities relative to white matter (or lung for chests).

    `shape_field` and `halo_field` are unit-std smoothed noise on the image grid.
    """

    centre_mm: np.ndarray  # [D] world coordinates
    radius_mm: float
    irregularity: float
    core_intensity: float
    core_texture: float
    halo_width_mm: float
    halo_intensity: float
    shape_field: np.ndarray
    halo_field: np.ndarray
    texture_field: np.ndarray


def draw_lesions(rng: np.random.Generator, eligible: np.ndarray, spacing_mm: float, radius_range_mm: tuple[float, float],
                 core_range: tuple[float, float], halo_range: tuple[float, float], max_lesions: int = 2) -> list[LesionParams]:
    """Draw 1..max_lesions lesions centred on voxels of `eligible` (bool [*S]).

    Raises ValueError when `eligible` is empty (nowhere to put a lesion).
    """
    candidates = np.argwhere(eligible)
    if len(candidates) == 0:
        raise ValueError("no eligible voxels to centre a lesion on")
    shape = eligible.shape
    count = int(rng.integers(1, max_lesions + 1))
    centre_offset = (np.array(shape) - 1) / 2
    lesions = []
    for _ in range(count):
        index = candidates[rng.integers(len(candidates))]
        radius = float(rng.uniform(*radius_range_mm))
        lesions.append(LesionParams(
            centre_mm=(index - centre_offset) * spacing_mm,
            radius_mm=radius,
            irregularity=float(rng.uniform(0.35, 0.6)),
            core_intensity=float(rng.uniform(*core_range)),
            core_texture=float(rng.uniform(0.05, 0.12)),
            halo_width_mm=float(rng.uniform(0.4, 0.8) * radius),
            halo_intensity=float(rng.uniform(*halo_range)),
            shape_field=smooth_noise(rng, shape, max(1.0, 0.35 * radius / spacing_mm)),
            halo_field=smooth_noise(rng, shape, max(1.0, 0.5 * radius / spacing_mm)),
            texture_field=smooth_noise(rng, shape, 0.8),
        ))
    return lesions


def apply_lesions(clean: np.ndarray, allowed: np.ndarray, lesions: list[LesionParams], spacing_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Paint lesions into noise-free intensities (before bias and noise, so they share both).

    Args:
        clean: float32 [*S] noise-free intensities.
        allowed: bool [*S] tissue the lesion may occupy (brain, or lungs).
        lesions: from `draw_lesions`.
        spacing_mm: isotropic voxel size.
    Returns:
        (intensities float32 [*S], lesion mask uint8 [*S]).
    """
    out = clean.astype(np.float32).copy()
    mask = np.zeros(clean.shape, bool)
    world = world_grid(clean.shape, spacing_mm)
    for lesion in lesions:
        distance = np.sqrt(sum((world[d] - lesion.centre_mm[d]) ** 2 for d in range(clean.ndim))) / lesion.radius_mm
        envelope = 1.0 - distance**2
        # Irregular blob: thresholded noise under a radial envelope, with a soft one-voxel-ish rim.
        field = envelope + lesion.irregularity * lesion.shape_field
        core_weight = np.clip((field - 0.25) / 0.2, 0.0, 1.0) * allowed
        core = core_weight > 0.5
        if not core.any():  # a lesion drawn where its blob vanished: keep its centre voxel
            centre = tuple(np.clip(np.round(lesion.centre_mm / spacing_mm + (np.array(clean.shape) - 1) / 2).astype(int), 0, np.array(clean.shape) - 1))
            core[centre] = allowed[centre]
            core_weight = core.astype(np.float32)
        gap_mm = ndimage.distance_transform_edt(~core) * spacing_mm
        halo_weight = np.exp(-((gap_mm / lesion.halo_width_mm) ** 2)) * np.clip(0.75 + 0.35 * lesion.halo_field, 0.0, 1.0)
        halo_weight = np.where(core, 0.0, halo_weight) * allowed
        halo_level = np.maximum(out, lesion.halo_intensity)
        out = out * (1.0 - halo_weight) + halo_level * halo_weight
        core_level = lesion.core_intensity * (1.0 + lesion.core_texture * lesion.texture_field)
        out = out * (1.0 - core_weight) + core_level * core_weight
        mask |= core | (halo_weight > 0.5)
    return out.astype(np.float32), mask.astype(np.uint8)


# ----------------------------------------------------------------------------- brain cases


@dataclass
class PhantomCase:
    """A generated case.

    image: float32 [*S] intensities (>= 0; zero outside the body); foreground: bool [*S] (brain for
    volumes, body for chests); lesion: uint8 [*S] or None for healthy cases; affine: float64
    [4, 4] voxel -> world mm (for 2D the third axis is unused); spacing_mm: voxel size.
    """

    case_id: str
    image: np.ndarray
    foreground: np.ndarray
    lesion: np.ndarray | None
    affine: np.ndarray
    spacing_mm: float


def make_brain_case(seed: int, case_id: str, with_lesions: bool, shape: tuple[int, int, int] = BRAIN_SHAPE,
                    spacing_mm: float = BRAIN_SPACING_MM) -> PhantomCase:
    """One brain volume (head with skull); with lesions when `with_lesions` (deterministic)."""
    rng = case_generator(seed, case_id)
    params = draw_brain_params(rng, shape, spacing_mm)
    anatomy = render_brain_anatomy(params)
    clean, lesion = anatomy.clean, None
    if with_lesions:
        parenchyma = anatomy.brain & np.isin(anatomy.tissue, (GREY, WHITE))
        deep_enough = parenchyma & (np.sqrt((anatomy.brain_coords**2).sum(0)) < 0.75)
        lesions = draw_lesions(rng, deep_enough, spacing_mm, radius_range_mm=(9.0, 20.0), core_range=(1.6, 2.0),
                               halo_range=(1.3, 1.5))
        clean, lesion = apply_lesions(clean, parenchyma, lesions, spacing_mm)
    image = acquire(clean, anatomy.head, params.bias_coefficients, params.noise_sigma, params.noise_real, params.noise_imag)
    return PhantomCase(case_id, image, anatomy.brain, lesion, grid_affine(shape, spacing_mm), spacing_mm)


# ----------------------------------------------------------------------------- chest images


@dataclass
class ChestParams:
    """One chest radiograph's anatomy and exposure. Lengths in mm; attenuation in [0, 1]."""

    shape: tuple[int, int]
    spacing_mm: float
    centre_mm: np.ndarray  # [2] (row, column) offset of the thorax
    angle_rad: float
    torso_half_width_mm: float
    lung_half_width_mm: float
    lung_height_mm: float
    lung_gap_mm: float
    dome_height_mm: float
    heart_radius_mm: float
    rib_spacing_mm: float
    rib_phase: float
    rib_thickness_mm: float
    attenuation: dict[str, float]
    gamma: float
    bias_coefficients: np.ndarray  # [6]
    noise_sigma: float
    outline_field: np.ndarray
    vessel_field: np.ndarray
    noise: np.ndarray


def draw_chest_params(rng: np.random.Generator, shape: tuple[int, int] = CHEST_SHAPE,
                      spacing_mm: float = CHEST_SPACING_MM) -> ChestParams:
    """Draw one adult chest: thorax about 300 mm wide in a ~350 mm field of view."""
    shape = tuple(int(n) for n in shape)
    scale = float(np.clip(rng.normal(1.0, 0.05), 0.88, 1.12))
    lung_half_width = 62.0 * scale * rng.uniform(0.95, 1.05)
    return ChestParams(
        shape=shape,
        spacing_mm=float(spacing_mm),
        centre_mm=rng.normal(0.0, 5.0, 2),
        angle_rad=float(np.deg2rad(rng.normal(0.0, 2.5))),
        torso_half_width_mm=150.0 * scale,
        lung_half_width_mm=lung_half_width,
        lung_height_mm=220.0 * scale * rng.uniform(0.92, 1.08),
        lung_gap_mm=float(rng.uniform(22.0, 32.0)) * scale,
        dome_height_mm=float(rng.uniform(25.0, 45.0)),
        heart_radius_mm=float(rng.uniform(52.0, 66.0)) * scale,
        rib_spacing_mm=float(rng.uniform(22.0, 27.0)) * scale,
        rib_phase=float(rng.uniform(0.0, 1.0)),
        rib_thickness_mm=float(rng.uniform(7.0, 10.0)),
        attenuation={
            "soft": float(rng.uniform(0.5, 0.6)),
            "lung": float(rng.uniform(0.12, 0.22)),
            "mediastinum": float(rng.uniform(0.68, 0.78)),
            "bone": float(rng.uniform(0.12, 0.18)),
        },
        gamma=float(rng.uniform(0.85, 1.15)),
        bias_coefficients=np.concatenate([[0.0], rng.normal(0.0, 0.05, 2), rng.normal(0.0, 0.03, 3)]),
        noise_sigma=float(rng.uniform(0.01, 0.025)),
        outline_field=smooth_noise(rng, shape, 20.0 / spacing_mm),
        vessel_field=smooth_noise(rng, shape, max(0.7, 3.0 / spacing_mm)),
        noise=rng.standard_normal(shape).astype(np.float32),
    )


@dataclass
class ChestAnatomy:
    """clean: float32 [*S] noise-free attenuation in [0, 1]; lungs, body: bool [*S]."""

    clean: np.ndarray
    lungs: np.ndarray
    body: np.ndarray


def render_chest_anatomy(params: ChestParams) -> ChestAnatomy:
    """The chest's structures as an attenuation image (bright = dense), deterministic."""
    world = world_grid(params.shape, params.spacing_mm) - params.centre_mm[:, None, None]
    c, s = np.cos(params.angle_rad), np.sin(params.angle_rad)
    row, col = c * world[0] - s * world[1], s * world[0] + c * world[1]  # row: down, col: patient's left
    wobble = 1.0 + 0.03 * params.outline_field
    a = params.attenuation

    # Torso: a wide body narrowing into the neck above the shoulders.
    shoulder_row = -120.0
    torso_width = np.where(row < shoulder_row, 55.0 + 0.9 * (row - shoulder_row + 60).clip(0, None),
                           params.torso_half_width_mm)
    body = np.abs(col) * wobble <= torso_width
    clean = np.where(body, a["soft"], 0.03).astype(np.float32)

    # Lungs: rounded apex, a diaphragm dome at the base, laterally convex.
    lungs = np.zeros(params.shape, bool)
    top = -125.0
    for side in (-1.0, 1.0):
        offset = side * (params.lung_gap_mm + params.lung_half_width_mm)
        height = params.lung_height_mm * (1.0 if side < 0 else 0.95)
        v = (row - top) / height
        taper = 0.8 + 0.2 * np.clip(v / 0.7, 0.0, 1.0)  # lungs widen from apex to base
        u = (col - offset) / (params.lung_half_width_mm * taper)
        base = top + height - params.dome_height_mm * (1.0 - np.clip(u, -1.0, 1.0) ** 2)
        apex = u**2 + ((v - 0.35) / 0.35) ** 2 <= 1.0  # rounded top third
        lungs |= ((np.abs(u) * wobble <= 1.0) & (row >= top + 0.35 * height) & (row <= base)) | (apex & (v < 0.35))
    vascular = 0.05 * np.clip(params.vessel_field, 0.0, None) * np.exp(-(np.abs(col) / 90.0))  # hilar markings
    clean = np.where(lungs, a["lung"] + vascular, clean)

    # Mediastinum and heart (bulging to the patient's left, i.e. positive columns).
    mediastinum = (np.abs(col) <= params.lung_gap_mm + 8.0) & (row > top - 10)
    heart_centre = (top + 0.75 * params.lung_height_mm, 0.3 * params.heart_radius_mm)
    heart = ((row - heart_centre[0]) / (0.85 * params.heart_radius_mm)) ** 2 + ((col - heart_centre[1]) / params.heart_radius_mm) ** 2 <= 1.0
    below_diaphragm = row > top + params.lung_height_mm
    clean = np.where((mediastinum | heart | below_diaphragm) & body, a["mediastinum"], clean)

    # Bones: spine, clavicles, posterior ribs (arcs that fall laterally), added to what lies under.
    bones = np.zeros(params.shape, np.float32)
    bones += np.clip(1.0 - np.abs(col) / 14.0, 0.0, 1.0)
    for side in (-1.0, 1.0):
        clavicle_row = top - 5.0 + 0.25 * (side * col - 20.0)
        bones += ((np.abs(row - clavicle_row) < 6.0) & (side * col > 15.0) & (side * col < 130.0)) * 1.0
        lateral = np.clip(side * col, 0.0, None)
        rib_row = row - 0.004 * lateral**2 - 0.3 * lateral  # ribs slope downwards laterally
        phase = (rib_row - top) / params.rib_spacing_mm + params.rib_phase
        rib_profile = np.clip(1.0 - np.abs(phase - np.round(phase)) * params.rib_spacing_mm / (params.rib_thickness_mm / 2), 0.0, 1.0)
        bones += rib_profile * ((lateral > 10.0) & (lateral < params.lung_gap_mm + 2.1 * params.lung_half_width_mm) & (row > top - 15) & (row < top + params.lung_height_mm))
    clean = clean + a["bone"] * np.clip(bones, 0.0, 1.0) * body
    clean = ndimage.gaussian_filter(clean, 0.6)
    return ChestAnatomy(clean=np.clip(clean, 0.0, 1.0).astype(np.float32), lungs=lungs, body=body)


def make_chest_case(seed: int, case_id: str, with_lesions: bool, shape: tuple[int, int] = CHEST_SHAPE,
                    spacing_mm: float = CHEST_SPACING_MM) -> PhantomCase:
    """One chest image in [0, 1]; with opacities in the lungs when `with_lesions` (deterministic)."""
    rng = case_generator(seed, case_id)
    params = draw_chest_params(rng, shape, spacing_mm)
    anatomy = render_chest_anatomy(params)
    clean, lesion = anatomy.clean, None
    if with_lesions:
        inner_lungs = ndimage.binary_erosion(anatomy.lungs, iterations=2) if anatomy.lungs.sum() > 50 else anatomy.lungs
        lesions = draw_lesions(rng, inner_lungs, spacing_mm, radius_range_mm=(12.0, 30.0), core_range=(0.55, 0.7),
                               halo_range=(0.38, 0.48))
        clean, lesion = apply_lesions(clean, anatomy.lungs, lesions, spacing_mm)
    exposed = np.clip(clean * bias_field(params.bias_coefficients, clean.shape), 0.0, 1.0) ** params.gamma
    image = np.clip(exposed + params.noise_sigma * params.noise, 0.0, 1.0).astype(np.float32)
    affine = np.diag([spacing_mm, spacing_mm, 1.0, 1.0])
    return PhantomCase(case_id, image, anatomy.body, lesion, affine, spacing_mm)


# ----------------------------------------------------------------------------- files


def nifti_bytes(volume: np.ndarray, affine: np.ndarray) -> bytes:
    """A gzipped NIfTI-1 file of `volume` with `affine` (qform and sform set)."""
    import gzip

    import nibabel as nib

    image = nib.Nifti1Image(volume, affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return gzip.compress(image.to_bytes(), mtime=0)


def png_bytes(image: np.ndarray) -> bytes:
    """An 8-bit greyscale PNG of an image in [0, 1] (clipped)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.round(np.clip(image, 0.0, 1.0) * 255).astype(np.uint8), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


# ----------------------------------------------------------------------------- cohorts

# File names inside each case folder of a written cohort.
BRAIN_IMAGE_FILE = "flair.nii.gz"
BRAIN_MASK_FILE = "brainmask.nii.gz"
LESION_FILE = "lesion.nii.gz"
CHEST_IMAGE_FILE = "image.png"
CHEST_LESION_FILE = "lesion.png"


@dataclass(frozen=True)
class Cohort:
    """Where a written cohort lives: `healthy_uri` and `test_uri` each hold one folder per case."""

    kind: str
    healthy_uri: str
    test_uri: str
    healthy_ids: tuple[str, ...]
    test_ids: tuple[str, ...]


def make_case(kind: str, seed: int, case_id: str, with_lesions: bool, shape: tuple[int, ...] | None = None) -> PhantomCase:
    """A brain (`kind="brain"`) or chest (`kind="cxr"`) case on `shape` (default: the demo grid)."""
    if kind == "brain":
        return make_brain_case(seed, case_id, with_lesions, tuple(shape or BRAIN_SHAPE))
    if kind == "cxr":
        return make_chest_case(seed, case_id, with_lesions, tuple(shape or CHEST_SHAPE))
    raise ValueError(f"unknown phantom kind {kind!r}: choose 'brain' or 'cxr'")


def case_files(case: PhantomCase) -> dict[str, bytes]:
    """The files of one case folder: file name -> bytes (NIfTI for volumes, PNG for images)."""
    if case.image.ndim == 3:
        files = {BRAIN_IMAGE_FILE: nifti_bytes(case.image, case.affine),
                 BRAIN_MASK_FILE: nifti_bytes(case.foreground.astype(np.uint8), case.affine)}
        if case.lesion is not None:
            files[LESION_FILE] = nifti_bytes(case.lesion, case.affine)
        return files
    files = {CHEST_IMAGE_FILE: png_bytes(case.image)}
    if case.lesion is not None:
        files[CHEST_LESION_FILE] = png_bytes(case.lesion.astype(np.float32))
    return files


def cohort_case_files(kind: str, group: str) -> tuple[str, ...]:
    """The file names `case_files` writes for a case of `kind` ("brain"/"cxr") in `group`."""
    names = (BRAIN_IMAGE_FILE, BRAIN_MASK_FILE, LESION_FILE) if kind == "brain" else (CHEST_IMAGE_FILE, CHEST_LESION_FILE)
    return names if group == "test" else names[:-1]


def cohort_case_ids(kind: str, num_healthy: int, num_test: int) -> dict[str, list[str]]:
    """The case ids of a cohort by group: `{"healthy": [...], "test": [...]}`."""
    if num_healthy < 1 or num_test < 0:
        raise ValueError(f"need at least one healthy case and no negative counts, got {num_healthy} and {num_test}")
    return {"healthy": [f"{kind}-healthy-{i:03d}" for i in range(num_healthy)],
            "test": [f"{kind}-test-{i:03d}" for i in range(num_test)]}


def write_cohort_case(dst_uri: str, group: str, case_id: str, kind: str, seed: int,
                      shape: tuple[int, ...] | None = None) -> str:
    """Generate one case of a cohort and write its folder `DST/group/case_id/`; returns that URI.

    Cases of the `test` group carry lesions; `healthy` ones do not. A case is generated from its
    seed alone, so a folder already holding every file of the case is left as it is (re-running
    the pipeline does not regenerate the cohort).
    """
    from lightwork.data import storage

    if group not in ("healthy", "test"):
        raise ValueError(f"unknown cohort group {group!r}: choose 'healthy' or 'test'")
    folder = storage.join(dst_uri, group, case_id)
    if all(storage.exists(storage.join(folder, name)) for name in cohort_case_files(kind, group)):
        return folder
    case = make_case(kind, seed, case_id, with_lesions=group == "test", shape=shape)
    for name, payload in case_files(case).items():
        storage.write_bytes(storage.join(folder, name), payload)
    return folder


def write_cohort(dst_uri: str, kind: str = "brain", num_healthy: int = 20, num_test: int = 6, seed: int = 0,
                 shape: tuple[int, ...] | None = None) -> Cohort:
    """Generate and write a cohort under `dst_uri` (local folder or s3://), one case after another:

        DST/healthy/<kind>-healthy-NNN/{flair.nii.gz, brainmask.nii.gz}      (cxr: image.png)
        DST/test/<kind>-test-NNN/{flair.nii.gz, brainmask.nii.gz, lesion.nii.gz}  (cxr: image.png, lesion.png)

    Healthy and test cases never share a subject (their ids, hence their generators, differ).
    `lightwork.distributed.pipeline.generate_cohort` writes the same files with Ray tasks.
    """
    groups = cohort_case_ids(kind, num_healthy, num_test)
    for group, case_ids in groups.items():
        for case_id in case_ids:
            write_cohort_case(dst_uri, group, case_id, kind, seed, shape)
    return cohort_at(dst_uri, kind, groups)


def cohort_at(dst_uri: str, kind: str, groups: dict[str, list[str]]) -> Cohort:
    """The `Cohort` record of cases written under `dst_uri`."""
    from lightwork.data import storage

    return Cohort(kind, storage.join(dst_uri, "healthy"), storage.join(dst_uri, "test"),
                  tuple(groups["healthy"]), tuple(groups["test"]))
