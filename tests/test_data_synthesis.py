"""Samples from prepared cases without Ray: task choice, reproducibility, sources, stand-in pool, cache."""

import numpy as np
import pytest

from lightwork.data.cases import PreparedCase, save_case
from lightwork.demo import smooth_noise
from lightwork.errors import UserError
from lightwork.synthesis.samples import VALIDATION_EPOCH, CaseCache, Synthesiser, standin_sources


@pytest.fixture
def image_set(tmp_path):
    """Four smooth 2D cases (20x24, foreground all but a border) as (case_id, uri)."""
    rng = np.random.default_rng(3)
    foreground = np.zeros((20, 24), bool)
    foreground[2:-2, 2:-2] = True
    cases = []
    for index in range(4):
        uri = str(tmp_path / f"c{index}.npz")
        save_case(uri, PreparedCase(f"c{index}", (smooth_noise(rng, (20, 24), 1.5) * 0.2 + 1.0)[None], foreground))
        cases.append((f"c{index}", uri))
    return cases


def test_task_choice_is_uniform_over_the_allowed_tasks(image_set):
    synthesiser = Synthesiser(4, (0, 2, 3), image_set)
    picks = [synthesiser.pick_task(f"case{i}", epoch) for i in range(100) for epoch in range(6)]
    counts = {task: picks.count(task) for task in (0, 2, 3)}
    assert set(picks) == {0, 2, 3} and all(150 <= n <= 250 for n in counts.values()), counts
    again = Synthesiser(4, (0, 2, 3), image_set)
    assert [again.pick_task(f"case{i}", epoch) for i in range(100) for epoch in range(6)] == picks


def test_samples_depend_only_on_seed_epoch_and_case(image_set):
    case_id, uri = image_set[1]
    first = [Synthesiser(9, (0, 1, 4), image_set).sample(case_id, uri, epoch) for epoch in range(6)]
    # a fresh process state (empty cache, other samples drawn before) gives the same bytes
    other = Synthesiser(9, (0, 1, 4), image_set)
    for other_id, other_uri in image_set:
        other.sample(other_id, other_uri, 3)
    for epoch, sample in enumerate(first):
        again = other.sample(case_id, uri, epoch)
        assert (again.key, again.task) == (f"{case_id}@{epoch}", sample.task)
        np.testing.assert_array_equal(again.image, sample.image)
        np.testing.assert_array_equal(again.label, sample.label)
    assert {s.task for s in first} <= {0, 1, 4}
    assert len({s.image.tobytes() for s in first}) == 6  # every epoch differs
    for sample in first:
        assert sample.image.dtype == np.float32 and sample.image.shape == (1, 20, 24)
        assert sample.label.dtype == np.float32 and sample.label.shape == (20, 24)
    validation = other.validation_sample(case_id, uri, 1)
    assert validation.epoch == VALIDATION_EPOCH + 1
    np.testing.assert_array_equal(validation.image, other.sample(case_id, uri, VALIDATION_EPOCH + 1).image)
    np.testing.assert_array_equal(validation.healthy, other.cache.get(uri).image)


def test_intra_blend_reads_another_case_of_the_image_set(image_set):
    pair = image_set[:2]
    synthesiser = Synthesiser(0, (0,), pair)
    sample = synthesiser.sample(*pair[0], 0)
    assert sample.task == 0 and pair[1][1] in synthesiser.cache  # the source was the other case


def test_standin_pool_is_textured_reproducible_and_seeded():
    pool = standin_sources(5, (20, 24, 16), count=3)
    assert len(pool) == 3
    for image in pool:
        assert image.shape == (1, 20, 24, 16) and image.dtype == np.float32
        assert image.min() == 0 and image.max() == 1 and image.std() > 0.05
    assert all(np.array_equal(a, b) for a, b in zip(pool, standin_sources(5, (20, 24, 16), count=3)))
    assert not np.array_equal(pool[0], standin_sources(6, (20, 24, 16), count=1)[0])
    assert standin_sources(5, (30, 30), count=1)[0].shape == (1, 30, 30)


def test_case_cache_keeps_the_most_recent_and_names_bad_files(image_set, tmp_path):
    cache = CaseCache(capacity=2)
    for _, uri in image_set[:3]:
        cache.get(uri)
    assert image_set[0][1] not in cache and image_set[1][1] in cache and image_set[2][1] in cache
    truncated = tmp_path / "bad.npz"
    truncated.write_bytes((tmp_path / "c0.npz").read_bytes()[:200])
    with pytest.raises(UserError, match="bad.npz: not a readable prepared case"):
        cache.get(str(truncated))
    with pytest.raises(UserError, match="missing.npz: prepared case not found"):
        cache.get(str(tmp_path / "missing.npz"))


def test_bad_arguments_are_clear_errors(image_set):
    with pytest.raises(ValueError, match="subset of 0-4"):
        Synthesiser(0, (5,), image_set)
    with pytest.raises(ValueError, match="image set is empty"):
        Synthesiser(0, (4,), [])


def _label_mass(synthesiser, refs, draws: int) -> float:
    """Mean label over `draws` samples of the synthesiser's one task, case i at epoch i // len(refs)."""
    masses = []
    for index in range(draws):
        case_id, uri = refs[index % len(refs)]
        masses.append(float(synthesiser.sample(case_id, uri, index // len(refs)).label.mean()))
    return float(np.mean(masses))


@pytest.fixture
def brain_like_set(tmp_path):
    """Six 2D cases like z-scored brain slices (32x32, a disc of foreground, textured, 0 outside)."""
    rng = np.random.default_rng(11)
    grid = np.indices((32, 32))
    disc = ((grid[0] - 15.5) ** 2 + (grid[1] - 15.5) ** 2) <= 14**2
    cases = []
    for index in range(6):
        image = smooth_noise(rng, (32, 32), 1.0)
        image = np.where(disc, (image - image[disc].mean()) / image[disc].std(), 0.0).astype(np.float32)
        uri = str(tmp_path / f"b{index}.npz")
        save_case(uri, PreparedCase(f"b{index}", image[None], disc))
        cases.append((f"b{index}", uri))
    return cases


def test_inter_blend_is_about_as_visible_as_intra_blend_with_stand_ins_and_an_external_set(brain_like_set, tmp_path):
    """Over 200 draws the label mass of task 1 is within a factor of 2 of task 0's, from the stand-in
    pool and from an external set on another scale and rank (smooth 3D volumes in [0, 0.05], sliced)."""
    rng = np.random.default_rng(12)
    external = []
    for index in range(3):
        uri = str(tmp_path / f"external{index}.npz")
        volume = smooth_noise(rng, (40, 40, 12), 3.0)
        volume = 0.05 * (volume - volume.min()) / (volume.max() - volume.min())
        save_case(uri, PreparedCase(f"x{index}", volume[None].astype(np.float32), np.ones((40, 40, 12), bool)))
        external.append(uri)
    intra = _label_mass(Synthesiser(0, (0,), brain_like_set), brain_like_set, 200)
    standins = _label_mass(Synthesiser(0, (1,), brain_like_set), brain_like_set, 200)
    outside = _label_mass(Synthesiser(0, (1,), brain_like_set, external), brain_like_set, 200)
    assert intra > 0.01
    assert 0.5 <= standins / intra <= 2.0, (standins, intra)
    assert 0.5 <= outside / intra <= 2.0, (outside, intra)
