"""Chest-X-ray-like images: torso, lungs with vascular texture, mediastinum and heart, spine,
clavicles and ribs (see the package docstring), then exposure, bias and noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lightwork.demo.case import PhantomCase, case_generator
from lightwork.demo.fields import bias_field, smooth_noise, world_grid
from lightwork.demo.lesions import apply_lesions, draw_lesions

CHEST_SHAPE = (64, 64)
CHEST_SPACING_MM = 5.5


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


def draw_chest_params(
    rng: np.random.Generator, shape: tuple[int, int] = CHEST_SHAPE, spacing_mm: float = CHEST_SPACING_MM
) -> ChestParams:
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
    torso_width = np.where(
        row < shoulder_row, 55.0 + 0.9 * (row - shoulder_row + 60).clip(0, None), params.torso_half_width_mm
    )
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
    heart = ((row - heart_centre[0]) / (0.85 * params.heart_radius_mm)) ** 2 + (
        (col - heart_centre[1]) / params.heart_radius_mm
    ) ** 2 <= 1.0
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
        rib_profile = np.clip(
            1.0 - np.abs(phase - np.round(phase)) * params.rib_spacing_mm / (params.rib_thickness_mm / 2), 0.0, 1.0
        )
        bones += rib_profile * (
            (lateral > 10.0)
            & (lateral < params.lung_gap_mm + 2.1 * params.lung_half_width_mm)
            & (row > top - 15)
            & (row < top + params.lung_height_mm)
        )
    clean = clean + a["bone"] * np.clip(bones, 0.0, 1.0) * body
    clean = ndimage.gaussian_filter(clean, 0.6)
    return ChestAnatomy(clean=np.clip(clean, 0.0, 1.0).astype(np.float32), lungs=lungs, body=body)


def make_chest_case(
    seed: int,
    case_id: str,
    with_lesions: bool,
    shape: tuple[int, int] = CHEST_SHAPE,
    spacing_mm: float = CHEST_SPACING_MM,
) -> PhantomCase:
    """One chest image in [0, 1]; with opacities in the lungs when `with_lesions` (deterministic)."""
    rng = case_generator(seed, case_id)
    params = draw_chest_params(rng, shape, spacing_mm)
    anatomy = render_chest_anatomy(params)
    clean, lesion = anatomy.clean, None
    if with_lesions:
        inner_lungs = ndimage.binary_erosion(anatomy.lungs, iterations=2) if anatomy.lungs.sum() > 50 else anatomy.lungs
        lesions = draw_lesions(
            rng, inner_lungs, spacing_mm, radius_range_mm=(12.0, 30.0), core_range=(0.55, 0.7), halo_range=(0.38, 0.48)
        )
        clean, lesion = apply_lesions(clean, anatomy.lungs, lesions, spacing_mm)
    exposed = np.clip(clean * bias_field(params.bias_coefficients, clean.shape), 0.0, 1.0) ** params.gamma
    image = np.clip(exposed + params.noise_sigma * params.noise, 0.0, 1.0).astype(np.float32)
    affine = np.diag([spacing_mm, spacing_mm, 1.0, 1.0])
    return PhantomCase(case_id, image, anatomy.body, lesion, affine, spacing_mm)
