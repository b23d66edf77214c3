"""`lightwork preview` end to end on a real IXI volume, a phantom volume and a 2D picture: the PNG
exists with the documented size and shows something; the drawn samples are the seeded ones."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lightwork.anomalies import make_task
from lightwork.anomalies.seeding import sample_generator
from lightwork.cli import main as cli
from lightwork.demo import case_files, make_case
from lightwork.jobs.preview import main
from lightwork.synthesis.preview import figure_size, focus, load_input, preview_rows, stem_of, task_ids


def _check_png(path, rows, dims):
    picture = np.asarray(Image.open(path).convert("L"), dtype=np.float64)
    width, height = figure_size(rows, dims)
    assert picture.shape == (height, width)
    # Not blank: many grey levels, and both dark and light content.
    assert len(np.unique(picture)) > 50 and picture.std() > 30


def test_preview_of_a_real_ixi_volume_every_task(real_data, tmp_path, capsys):
    folder = real_data("brain", "healthy_ixi_t1")
    volume = sorted(folder.glob("*_ds.nii.gz"))[0]
    mask = folder / "parcellation" / volume.name.replace(".nii.gz", "_DLMUSE.nii.gz")
    out = tmp_path / "ixi.png"
    assert main(["--task", "all", "--input", str(volume), "--mask", str(mask), "--seed", "3", "--out", str(out)]) == 0
    _check_png(out, 5, 3)
    printed = capsys.readouterr().out
    for name in ("intra_blend", "inter_blend", "sink", "source", "intensity"):
        assert f" {name}: label max " in printed
    assert f"{stem_of(str(volume))} (" in printed


def test_preview_of_a_phantom_volume_is_the_seeded_sample(tmp_path):
    case = make_case("brain", 0, "preview-phantom", with_lesions=False)
    for name, payload in case_files(case).items():
        (tmp_path / name).write_bytes(payload)
    image, mask = tmp_path / "flair.nii.gz", tmp_path / "brainmask.nii.gz"
    out = tmp_path / "phantom.png"
    assert (
        main(["--task", "sink", "4", "--input", str(image), "--mask", str(mask), "--seed", "5", "--out", str(out)]) == 0
    )
    _check_png(out, 2, 3)
    data = load_input(str(image), str(mask))
    assert data.name == "flair" and data.image.shape == (1, *case.image.shape)
    np.testing.assert_array_equal(data.foreground, case.foreground)
    inside = data.image[0][data.foreground]
    assert abs(inside.mean()) < 1e-4 and abs(inside.std() - 1) < 1e-4 and not data.image[0][~data.foreground].any()
    rows = preview_rows(data, ["sink"], seed=5)
    expected = make_task("sink", max_push=5.0)(data.image, data.foreground, sample_generator(5, 0, "flair", 2))
    np.testing.assert_array_equal(rows[0].anomalous, expected[0])
    np.testing.assert_array_equal(rows[0].label, expected[1])
    centre = focus(rows[0].label, data.foreground)
    assert rows[0].label[centre] > 0 or rows[0].label[tuple(slice(c - 2, c + 3) for c in centre)].any()


def test_preview_of_a_picture_with_external_sources_and_a_large_volume_downsampled(tmp_path):
    rng = np.random.default_rng(0)
    picture = (np.clip(rng.normal(128, 40, (70, 90)), 0, 255)).astype(np.uint8)
    Image.fromarray(np.stack([picture] * 3, axis=-1)).save(tmp_path / "xray.png")
    np.save(tmp_path / "external.npy", rng.random((50, 60)).astype(np.float32) + 1)
    out = tmp_path / "xray.png.out.png"
    assert (
        main(
            [
                "--task",
                "inter_blend",
                "--input",
                str(tmp_path / "xray.png"),
                "--sources",
                str(tmp_path / "external.npy"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    _check_png(out, 1, 2)
    np.save(tmp_path / "big.npy", rng.random((150, 40, 60)).astype(np.float32) + 1)
    big = load_input(str(tmp_path / "big.npy"))
    assert max(big.image.shape[1:]) == 128 and big.image.shape[1:] == (128, 34, 51)


def test_bad_requests_are_clear_errors(tmp_path, capsys):
    np.save(tmp_path / "image.npy", np.ones((20, 20, 20), np.float32))
    np.save(tmp_path / "mask.npy", np.ones((20, 20, 10), np.float32))
    assert (
        cli(
            [
                "preview",
                "--input",
                str(tmp_path / "image.npy"),
                "--mask",
                str(tmp_path / "mask.npy"),
                "--out",
                str(tmp_path / "x.png"),
            ]
        )
        == 2
    )
    assert "mask shape (20, 20, 10) differs from the image's (20, 20, 20)" in capsys.readouterr().err
    assert cli(["preview", "--input", str(tmp_path / "missing.nii.gz"), "--out", str(tmp_path / "x.png")]) == 2
    assert "missing.nii.gz: no such file" in capsys.readouterr().err
    with pytest.raises(ValueError, match="unknown anomaly task 'warp'; known tasks: 0 intra_blend"):
        task_ids(["warp"])
    assert task_ids(["all", "sink"]) == [0, 1, 2, 3, 4] and task_ids(["3", "intensity"]) == [3, 4]


def test_views_pass_through_the_strongest_anomaly_not_between_anomalies():
    label = np.zeros((30, 30, 30), np.float32)
    label[3:8, 3:8, 3:8] = 0.4
    label[20:25, 18:23, 21:26] = 0.9
    foreground = np.ones(label.shape, bool)
    assert focus(label, foreground) == (22, 20, 23)  # the mean of the two would lie in neither
    assert focus(np.zeros_like(label), foreground) == (14, 14, 14)
