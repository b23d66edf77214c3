"""The embedded default dataset (the demo cohort): brain-like volumes and chest-X-ray-like images, generated.

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
tasks (docs/method.md section 2): an irregular blob cut from thresholded smoothed noise under a radial
envelope, a textured hyperintense core replacing the tissue, and a soft halo ("edema") whose
weight decays with distance from the core and is modulated by noise. No blending of patches, no
deformation (no mass effect), no smooth additive ramp over an ellipse or box. The ground-truth
mask is the core plus the halo where its weight exceeds one half.

Every random step is two halves: `draw_*` takes a `numpy.random.Generator` and returns parameters
(noise fields included), `render_*` / `apply_*` are deterministic functions of those parameters.

Modules, by what they render: `brain` (anatomy and acquisition of the volumes), `chest` (the
X-ray-like images), `lesions` (the test cases' anomalies), `fields` (grids, smoothed noise, bias
fields they share), `case` (a case and its generator), `cohort` (files and cohorts of cases).
The names below are the package's interface.
"""

from lightwork.demo.brain import BRAIN_SHAPE, BRAIN_SPACING_MM, make_brain_case
from lightwork.demo.case import PhantomCase, case_generator
from lightwork.demo.chest import CHEST_SHAPE, CHEST_SPACING_MM, make_chest_case
from lightwork.demo.cohort import (
    BRAIN_IMAGE_FILE,
    BRAIN_MASK_FILE,
    CHEST_IMAGE_FILE,
    CHEST_LESION_FILE,
    LESION_FILE,
    Cohort,
    case_files,
    cohort_at,
    cohort_case_files,
    cohort_case_ids,
    make_case,
    nifti_bytes,
    png_bytes,
    write_cohort,
    write_cohort_case,
)
from lightwork.demo.fields import smooth_noise

__all__ = [
    "BRAIN_IMAGE_FILE",
    "BRAIN_MASK_FILE",
    "BRAIN_SHAPE",
    "BRAIN_SPACING_MM",
    "CHEST_IMAGE_FILE",
    "CHEST_LESION_FILE",
    "CHEST_SHAPE",
    "CHEST_SPACING_MM",
    "LESION_FILE",
    "Cohort",
    "PhantomCase",
    "case_files",
    "case_generator",
    "cohort_at",
    "cohort_case_files",
    "cohort_case_ids",
    "make_brain_case",
    "make_case",
    "make_chest_case",
    "nifti_bytes",
    "png_bytes",
    "smooth_noise",
    "write_cohort",
    "write_cohort_case",
]
