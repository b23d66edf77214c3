"""Task parameters that depend on the data (docs/method.md section 2), for the layers that choose them.

The deformation tasks' push p is drawn from U(max(0.1 m, MIN_PUSH), min(0.9 m, max_push)) voxels;
max_push is 5 for brain MRI and 10 for chest X-rays. A run derives it from its data's recipe
(`max_push_for`); tasks made without one use the brain value.
"""

from __future__ import annotations

MIN_PUSH = 0.5  # voxels: the smallest push of the sink and source deformations
MAX_PUSH = {"brain": 5.0, "cxr": 10.0}  # voxels: the largest push, per data recipe
DEFAULT_MAX_PUSH = MAX_PUSH["brain"]
RECIPE_OF_DIMS = {3: "brain", 2: "cxr"}  # the recipe whose values data of other recipes take, by spatial dims


def max_push_for(spatial_dims: int, recipe: str = "") -> float:
    """The deformations' largest push for data of `recipe`: `MAX_PUSH[recipe]`; a recipe without its
    own value (or none given) takes that of the recipe with the same spatial dims."""
    return MAX_PUSH.get(recipe, MAX_PUSH[RECIPE_OF_DIMS[spatial_dims]])
