"""Case discovery on every supported layout, and `lightwork prepare` through real Ray on a generated
cohort with a corrupt file and a NaN volume, to a local folder and to a real S3 endpoint."""

from __future__ import annotations

import gzip
import os

import nibabel as nib
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lightwork import demo
from lightwork.data import storage
from lightwork.data.cases import load_case
from lightwork.data.discover import discover_cases
from lightwork.data.manifest import FOREGROUND_PERCENTILES, SCHEMA, intensity_mismatch, read_manifest, write_manifest
from lightwork.data.montage import montage
from lightwork.data.recipes import BrainRecipe
from lightwork.demo.noise import write_noise_dataset

# The demo cohort's 32x40x32 volumes at 5 mm -> 16x20x16 at 10 mm: seconds, not minutes.
SMALL = ["--shape", "16,20,16", "--spacing", "5", "--downsample", "2"]


def touch(root, *paths: str) -> None:
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b"")


def summary(cases) -> dict:
    """case id -> (image name, brain mask name, lesion name, label, problem), names relative to the case's folder."""

    def name(uri: str | None) -> str | None:
        return uri.rsplit("/", 1)[-1] if uri else None

    return {c.case_id: (name(c.image), name(c.brain_mask), name(c.lesion), c.image_label, c.problem) for c in cases}


def test_discovery_of_demo_cohort_layouts(tmp_path):
    touch(
        tmp_path,
        "healthy/b-h-0/flair.nii.gz",
        "healthy/b-h-0/brainmask.nii.gz",
        "test/b-t-0/flair.nii.gz",
        "test/b-t-0/brainmask.nii.gz",
        "test/b-t-0/lesion.nii.gz",
        "chest/c-h-0/image.png",
        "chest/c-t-0/image.png",
        "chest/c-t-0/lesion.png",
    )
    assert summary(discover_cases(str(tmp_path))) == {
        "chest_c-h-0": ("image.png", None, None, None, None),
        "chest_c-t-0": ("image.png", None, "lesion.png", None, None),
        "healthy_b-h-0": ("flair.nii.gz", "brainmask.nii.gz", None, 0, None),  # a "healthy" folder: label 0
        "test_b-t-0": ("flair.nii.gz", "brainmask.nii.gz", "lesion.nii.gz", None, None),  # the lesion decides later
    }
    assert list(summary(discover_cases(str(tmp_path / "test")))) == ["b-t-0"]


def test_discovery_of_ixi_brats_mslub_and_kermany_like_layouts(tmp_path):
    touch(
        tmp_path,
        "ixi/IXI1-T1_ds.nii.gz",
        "ixi/IXI2-T1_ds.nii.gz",
        "ixi/parcellation/IXI1-T1_ds_DLMUSE.nii.gz",
        "ixi/demog.csv",
        "brats/p1/Flair_subtrMeanDivStd.nii.gz",
        "brats/p1/T1c_subtrMeanDivStd.nii.gz",
        "brats/p1/brainmask.nii.gz",
        "brats/p1/OTMultiClass.nii.gz",
        "mslub/p7/FLAIR.nii.gz",
        "mslub/p7/T1.nii.gz",
        "mslub/p7/T2.nii.gz",
        "mslub/p7/GOLD_STANDARD.nii.gz",
        "kermany/NORMAL/a.jpeg",
        "kermany/PNEUMONIA/b.jpeg",
    )
    assert summary(discover_cases(str(tmp_path / "ixi"), "T1")) == {
        "IXI1-T1_ds": ("IXI1-T1_ds.nii.gz", "IXI1-T1_ds_DLMUSE.nii.gz", None, None, None),
        "IXI2-T1_ds": ("IXI2-T1_ds.nii.gz", None, None, None, None),
    }
    assert discover_cases(str(tmp_path / "ixi"), "flair") == []
    assert summary(discover_cases(str(tmp_path / "brats"), "t1c")) == {
        "p1": ("T1c_subtrMeanDivStd.nii.gz", "brainmask.nii.gz", "OTMultiClass.nii.gz", None, None)
    }
    assert summary(discover_cases(str(tmp_path / "mslub"), "flair")) == {
        "p7": ("FLAIR.nii.gz", None, "GOLD_STANDARD.nii.gz", None, None)
    }
    unchosen = discover_cases(str(tmp_path / "mslub"))[0]
    assert unchosen.problem == "several images (FLAIR.nii.gz, T1.nii.gz, T2.nii.gz): choose one with --modality"
    assert summary(discover_cases(str(tmp_path / "kermany"), volumes=False)) == {
        "NORMAL_a": ("a.jpeg", None, None, 0, None),
        "PNEUMONIA_b": ("b.jpeg", None, None, 1, None),
    }
    assert summary(discover_cases(str(tmp_path / "kermany" / "PNEUMONIA"), volumes=False)) == {
        "b": ("b.jpeg", None, None, 1, None)
    }


def test_discovery_of_dicom_series_and_flat_folders(tmp_path):
    touch(
        tmp_path,
        "series/s1/001.dcm",
        "series/s1/002.dcm",
        "series/s2/x.DCM",
        "flat/a.npy",
        "flat/b.png",
        "flat/.hidden.png",
        "dup/x/a.nii",
        "dup/x/b.nii",
        "dup/x_a.nii",
    )
    volumes = discover_cases(str(tmp_path / "series"))
    assert [(c.case_id, c.image) for c in volumes] == [
        ("s1", str(tmp_path / "series/s1")),
        ("s2", str(tmp_path / "series/s2")),
    ]
    assert [c.case_id for c in discover_cases(str(tmp_path / "series"), volumes=False)] == [
        "s1_001",
        "s1_002",
        "s2",
    ]  # s2 holds one image: a case folder
    assert [c.case_id for c in discover_cases(str(tmp_path / "flat"))] == ["a", "b"]
    # x/a.nii and x_a.nii both clean to x_a: each gets a stable suffix of its own, x_b keeps its id.
    assert [(c.case_id, c.image.rsplit("dup/", 1)[1]) for c in discover_cases(str(tmp_path / "dup"))] == [
        ("x_a-4b995322", "x/a.nii"),
        ("x_a-8c6f66a2", "x_a.nii"),
        ("x_b", "x/b.nii"),
    ]
    with pytest.raises(ValueError, match="not a folder"):
        discover_cases(str(tmp_path / "absent"))


def test_discovery_follows_symbolic_links_and_skips_a_cycle(tmp_path, caplog):
    touch(
        tmp_path,
        "store/p1/t1.nii.gz",
        "store/p1/brainmask.nii.gz",
        "store/p2/t1.nii.gz",
        "store/flat/IXI9-T1.nii.gz",
        "store/p1/notes.txt",
    )
    cohort = tmp_path / "cohort"
    cohort.mkdir()
    for name in ("p1", "p2", "flat"):
        (cohort / name).symlink_to(tmp_path / "store" / name, target_is_directory=True)
    (tmp_path / "store" / "p2" / "loop").symlink_to(cohort, target_is_directory=True)  # p2/loop -> cohort -> p2 ...
    assert summary(discover_cases(str(cohort), "t1")) == {
        "flat": ("IXI9-T1.nii.gz", None, None, None, None),
        "p1": ("t1.nii.gz", "brainmask.nii.gz", None, None, None),
        "p2": ("t1.nii.gz", None, None, None, None),
    }
    assert f"{cohort}/p2/loop: skipped, a symbolic link to a folder that contains it (a cycle)" in caplog.text


def test_mask_patterns_name_the_brain_mask_and_the_lesion_mask(tmp_path):
    from lightwork.data.discover import MaskPatterns

    touch(
        tmp_path,
        "c1/t1.nii.gz",
        "c1/mask.nii.gz",
        "c1/t1_Prediction_mask.nii.gz",
        "c2/t1.nii.gz",
        "c2/MASK.nii.gz",
        "c2/t1_Prediction_mask.nii.gz",
        "c2/manual_roi.nii.gz",
    )
    clash = discover_cases(str(tmp_path))[0]
    assert clash.problem == (
        "several brain mask files (mask.nii.gz, t1_Prediction_mask.nii.gz): "
        "name the brain mask with --brain-mask-pattern GLOB"
    )
    named = discover_cases(str(tmp_path), masks=MaskPatterns(brain_mask="mask.nii.gz"))
    assert summary(named) == {
        "c1": ("t1.nii.gz", "mask.nii.gz", None, None, None),
        "c2": (
            "c2",
            "MASK.nii.gz",
            None,
            None,
            "several images (manual_roi.nii.gz, t1.nii.gz): choose one with --modality",
        ),
    }
    both = discover_cases(str(tmp_path), masks=MaskPatterns(brain_mask="mask.nii.gz", lesion="*_roi.nii.gz"))
    assert summary(both)["c2"] == ("t1.nii.gz", "MASK.nii.gz", "manual_roi.nii.gz", None, None)


def test_discovery_of_the_real_data_sets(real_data):
    ixi = discover_cases(str(real_data("brain", "healthy_ixi_t1")), "t1")
    assert len(ixi) == 10 and all(c.brain_mask and c.brain_mask.endswith("_DLMUSE.nii.gz") for c in ixi)
    brats = discover_cases(str(real_data("brain", "lesion_brats2015")), "flair")
    assert len(brats) == 5 and all(c.lesion.endswith("OTMultiClass.nii.gz") and c.brain_mask for c in brats)
    mslub = discover_cases(str(real_data("brain", "lesion_mslub")), "flair")
    assert len(mslub) == 3 and all(c.lesion.endswith("GOLD_STANDARD.nii.gz") and c.brain_mask is None for c in mslub)
    kermany = discover_cases(str(real_data("cxr_kermany", "train")), volumes=False)
    assert [sum(c.image_label == label for c in kermany) for label in (0, 1)] == [1341, 300]


def write_bad_cases(root: str) -> None:
    """Two broken cases beside the cohort: a corrupt NIfTI and a volume holding a NaN."""
    mask = demo.case_files(demo.make_brain_case(0, "bad", with_lesions=False))[demo.BRAIN_MASK_FILE]
    storage.write_bytes(storage.join(root, "bad-corrupt", demo.BRAIN_IMAGE_FILE), gzip.compress(b"not a nifti at all"))
    storage.write_bytes(storage.join(root, "bad-corrupt", demo.BRAIN_MASK_FILE), mask)
    volume = np.ones(demo.BRAIN_SHAPE, np.float32)
    volume[3, 4, 5] = np.nan
    storage.write_bytes(storage.join(root, "bad-nan", demo.BRAIN_IMAGE_FILE), demo.nifti_bytes(volume, np.eye(4)))
    storage.write_bytes(storage.join(root, "bad-nan", demo.BRAIN_MASK_FILE), mask)


def check_prepared(dst: str, healthy: int, test: int) -> list[dict]:
    rows = read_manifest(dst)
    ok = [row for row in rows if row["status"] == "ok"]
    failed = {row["case_id"]: row["error"] for row in rows if row["status"] == "failed"}
    assert len(ok) == healthy + test and set(failed) == {"bad-corrupt", "bad-nan"}
    assert "bad-corrupt/flair.nii.gz: not a readable NIfTI" in failed["bad-corrupt"]
    assert "bad-nan/flair.nii.gz: 1 NaN/inf values" in failed["bad-nan"]
    # 5 contiguous folds over the sorted usable cases; failed cases have none.
    assert [row["fold"] for row in ok] == [i * 5 // len(ok) for i in range(len(ok))]
    assert all(row["fold"] is None for row in rows if row["status"] == "failed")
    for row in ok:
        case = load_case(row["array_uri"])
        is_test = row["case_id"].startswith("test_")
        assert row["shape"] == [16, 20, 16] and row["spacing"] == [10.0, 10.0, 10.0]
        assert case.image.shape == (1, 16, 20, 16) and np.isfinite(case.image).all()
        assert row["has_lesion"] == is_test and row["image_label"] == (1 if is_test else 0)
        assert (case.lesion is not None) == is_test
    return rows


def test_prepare_local_cohort_records_failures_and_reruns_only_what_changed(ray_session, tmp_path, capsys):
    from lightwork.distributed.prepare import prepare_dataset
    from lightwork.jobs import prepare

    src, dst = str(tmp_path / "raw"), str(tmp_path / "prepared")
    demo.write_cohort(src, "brain", num_healthy=3, num_test=2, seed=1)
    write_bad_cases(src)
    assert prepare.main([src, dst, "--recipe", "brain", *SMALL, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert (
        "prepared 5, reused 0, failed 2 of 7 cases" in out and "FAILED bad-corrupt:" in out and "FAILED bad-nan:" in out
    )
    first = {row["case_id"]: row for row in check_prepared(dst, healthy=3, test=2)}
    for row in (row for row in first.values() if row["status"] == "ok"):  # z-scored: percentiles around 0
        percentiles = row["foreground_percentiles"]
        assert len(percentiles) == len(FOREGROUND_PERCENTILES) and percentiles == sorted(percentiles)
        assert percentiles[0] < -1.0 and abs(percentiles[3]) < 0.6 and percentiles[-1] > 1.0

    # Same command again: every finished case is reused; the failed ones are tried again.
    recipe = BrainRecipe(shape=(16, 20, 16), spacing_mm=5.0, downsample=2)
    again = prepare_dataset(src, dst, recipe, progress=False)
    assert (again.prepared, again.skipped, [case for case, _ in again.failed]) == (0, 5, ["bad-corrupt", "bad-nan"])
    # One changed source file re-prepares that case only; other options re-prepare everything.
    changed = demo.case_files(demo.make_brain_case(9, "other", with_lesions=False))[demo.BRAIN_IMAGE_FILE]
    storage.write_bytes(storage.join(src, "healthy", "brain-healthy-001", demo.BRAIN_IMAGE_FILE), changed)
    third = prepare_dataset(src, dst, recipe, progress=False)
    assert (third.prepared, third.skipped) == (1, 4)
    rows = {row["case_id"]: row for row in read_manifest(dst)}
    assert rows["healthy_brain-healthy-001"]["checksum"] != first["healthy_brain-healthy-001"]["checksum"]
    assert rows["healthy_brain-healthy-000"]["checksum"] == first["healthy_brain-healthy-000"]["checksum"]
    # The first 3 cases by id (two of them the broken ones) with other options: prepared again.
    other = prepare_dataset(
        src, dst, BrainRecipe(shape=(8, 10, 8), spacing_mm=5.0, downsample=4), limit=3, progress=False
    )
    assert (other.prepared, other.skipped, other.total) == (1, 0, 3)
    assert [row["shape"] for row in read_manifest(dst)] == [None, None, [8, 10, 8]]


def test_prepare_2d_cohort_and_all_failed_exit_status(ray_session, tmp_path, capsys, monkeypatch):
    from lightwork.cli import main as cli
    from lightwork.jobs import prepare

    src, dst = str(tmp_path / "chest"), str(tmp_path / "prepared")
    demo.write_cohort(src, "cxr", num_healthy=2, num_test=1, seed=2)
    monkeypatch.chdir(tmp_path)  # relative paths are stored absolute
    assert prepare.main(["chest", "prepared", "--recipe", "cxr", "--size", "32", "--no-progress"]) == 0
    rows = read_manifest(dst)
    assert rows[0]["source_uri"] == f"{src}/healthy/cxr-healthy-000/image.png"
    assert rows[0]["array_uri"] == f"{dst}/cases/healthy_cxr-healthy-000.npz"
    assert [(r["case_id"], r["shape"], r["image_label"], r["has_lesion"]) for r in rows] == [
        ("healthy_cxr-healthy-000", [32, 32], 0, False),
        ("healthy_cxr-healthy-001", [32, 32], 0, False),
        ("test_cxr-test-000", [32, 32], 1, True),
    ]
    case = load_case(rows[-1]["array_uri"])
    assert case.image.min() == -1.0 and case.image.max() == 1.0 and case.lesion.any()
    assert montage(dst, str(tmp_path / "montage.png"), max_cases=2) == 2  # first and last case
    assert (tmp_path / "montage.png").read_bytes()[:4] == b"\x89PNG"

    broken = tmp_path / "broken"
    (broken / "x").mkdir(parents=True)
    (broken / "x" / "image.png").write_bytes(b"not a png")
    assert prepare.main([str(broken), str(tmp_path / "out"), "--recipe", "cxr", "--no-progress"]) == 1
    assert "FAILED x: " in capsys.readouterr().out
    assert cli(["prepare", str(tmp_path / "empty-dir-absent"), str(tmp_path / "out2"), "--recipe", "cxr"]) == 2
    assert "empty-dir-absent: no such folder or prefix" in capsys.readouterr().err


def test_prepare_from_and_to_a_real_s3_bucket(ray_session, s3_server, capsys):
    from lightwork.jobs import montage as montage_job
    from lightwork.jobs import prepare

    root = f"s3://{s3_server['bucket']}/prepare-test"
    src, dst = f"{root}/raw", f"{root}/prepared"
    demo.write_cohort(src, "brain", num_healthy=3, num_test=2, seed=3)
    write_bad_cases(src)
    assert prepare.main([src, dst, "--recipe", "brain", *SMALL, "--no-progress"]) == 0
    assert "prepared 5, reused 0, failed 2 of 7 cases" in capsys.readouterr().out
    rows = check_prepared(dst, healthy=3, test=2)
    assert all(row["array_uri"].startswith(f"{dst}/cases/") for row in rows if row["status"] == "ok")
    assert prepare.main([src, dst, "--recipe", "brain", *SMALL, "--no-progress"]) == 0
    assert "prepared 0, reused 5, failed 2 of 7 cases" in capsys.readouterr().out
    assert montage_job.main([dst, "--out", f"{root}/montage.png", "--max", "3"]) == 0
    assert storage.read_bytes(f"{root}/montage.png")[:8] == b"\x89PNG\r\n\x1a\n"


def test_cases_per_task_amortises_thousands_and_spreads_few():
    from lightwork.distributed.prepare import cases_per_task

    assert cases_per_task(1641, slots=4) == 51  # Kermany on 2 CPUs at 0.5 CPU per task: 33 tasks
    assert cases_per_task(10, slots=4) == 1 and cases_per_task(3, slots=0.5) == 1


def test_prepared_case_keeps_the_source_geometry(tmp_path):
    from lightwork.data.discover import CaseSource
    from lightwork.data.prepare import prepare_case

    demo.write_cohort_case(str(tmp_path), "test", "c", "brain", seed=4)
    source = CaseSource(
        "c",
        str(tmp_path / "test/c/flair.nii.gz"),
        str(tmp_path / "test/c/brainmask.nii.gz"),
        str(tmp_path / "test/c/lesion.nii.gz"),
    )
    result = prepare_case(
        source, BrainRecipe(shape=(32, 40, 32), spacing_mm=5.0, downsample=1), str(tmp_path / "prepared")
    )
    assert result.row["status"] == "ok", result.row["error"]
    case = load_case(result.row["array_uri"])
    original = nib.load(str(tmp_path / "test/c/lesion.nii.gz"))
    assert case.source_shape == original.shape
    np.testing.assert_allclose(case.source_affine, original.affine)
    # Same grid here (5 mm, 32x40x32 around the brain): the lesion is the original one, shifted at most.
    assert case.lesion.sum() == (np.asanyarray(original.dataobj) != 0).sum()


def test_prepare_checks_its_destination_before_any_case(tmp_path):
    from lightwork.distributed.prepare import prepare_dataset
    from lightwork.errors import UserError

    src = str(tmp_path / "raw")
    demo.write_cohort(src, "brain", num_healthy=1, num_test=0, seed=5)
    (tmp_path / "file").write_text("a regular file")
    recipe = BrainRecipe(shape=(16, 20, 16), spacing_mm=5.0, downsample=2)
    # Raised before discovery and before Ray is needed: no Ray is running in this test.
    with pytest.raises(
        UserError, match=f"^{tmp_path}/file/prepared: cannot be the destination folder, {tmp_path}/file is a file$"
    ):
        prepare_dataset(src, str(tmp_path / "file" / "prepared"), recipe, progress=False)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if not os.access(locked, os.W_OK):  # root may write anywhere
            with pytest.raises(UserError, match=f"^{locked}/prepared: cannot write the prepared cases there"):
                prepare_dataset(src, str(locked / "prepared"), recipe, progress=False)
    finally:
        locked.chmod(0o700)


def write_named_case(root, folder: str, seed: int, **names: str) -> None:
    """A demo brain case in `root/folder` with its files named `names` (role -> file name)."""
    files = demo.case_files(demo.make_brain_case(seed, folder, with_lesions=False))
    for role, name in names.items():
        payload = files[demo.BRAIN_IMAGE_FILE if role == "image" else demo.BRAIN_MASK_FILE]
        storage.write_bytes(storage.join(str(root), folder, name), payload)


def test_prepare_with_clashing_ids_and_a_named_brain_mask(ray_session, tmp_path, capsys):
    from lightwork.jobs import prepare

    src, dst = tmp_path / "raw", str(tmp_path / "prepared")
    write_named_case(src, "café-T1", 1, image="flair.nii.gz", mask="brainmask.nii.gz")
    write_named_case(src, "cafè-T1", 2, image="flair.nii.gz", mask="brainmask.nii.gz")
    write_named_case(src, "p3", 3, image="flair.nii.gz", mask="mask.nii.gz", prediction="flair_Prediction_mask.nii.gz")
    assert prepare.main([str(src), dst, "--recipe", "brain", *SMALL, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "prepared 2, reused 0, failed 1 of 3 cases" in out
    assert (
        "FAILED p3: case p3: several brain mask files (flair_Prediction_mask.nii.gz, mask.nii.gz): "
        "name the brain mask with --brain-mask-pattern GLOB"
    ) in out
    rows = read_manifest(dst)
    ids = [row["case_id"] for row in rows]
    assert [row["status"] for row in rows] == ["ok", "ok", "failed"] and ids[2] == "p3"
    assert ids[0].startswith("caf_-T1-") and ids[1].startswith("caf_-T1-") and ids[0] != ids[1]
    assert {row["source_uri"].rsplit("/", 2)[1] for row in rows[:2]} == {"café-T1", "cafè-T1"}

    assert (
        prepare.main(
            [
                str(src),
                dst,
                "--recipe",
                "brain",
                *SMALL,
                "--no-progress",
                "--brain-mask-pattern",
                "*mask.nii.gz",
                "--lesion-mask-pattern",
                "*_Prediction_mask.nii.gz",
            ]
        )
        == 0
    )
    assert "prepared 1, reused 2, failed 0 of 3 cases" in capsys.readouterr().out
    p3 = read_manifest(dst)[2]
    assert p3["status"] == "ok" and p3["has_lesion"] and p3["image_label"] == 1  # the brain mask as lesion: all brain


def test_intensity_mismatch_names_a_test_set_on_another_scale():
    def rows(percentiles: list[list[float]]) -> list[dict]:
        return [{"status": "ok", "foreground_percentiles": values} for values in percentiles]

    train = rows([[-2.0, -1.6, -0.6, 0.0, 0.6, 1.6, 2.0], [-2.2, -1.7, -0.7, 0.1, 0.7, 1.6, 2.1]])
    same = rows([[-2.1, -1.6, -0.6, 0.05, 0.6, 1.7, 2.2]])
    shifted = rows([[-4.0, -3.1, -0.9, 0.1, 0.8, 1.5, 2.0]])
    assert intensity_mismatch(train, same) is None
    message = intensity_mismatch(train, shifted)
    assert message.startswith("foreground intensity percentiles differ from the training set's by up to -1.90 ")
    assert "(at percentile 1: -4.00 against -2.10; tolerance 0.5)" in message
    assert intensity_mismatch(train, rows([None])) is None  # a manifest older than the column: not checked


def test_a_manifests_case_paths_are_absolute_or_relative_to_its_folder(tmp_path, monkeypatch):
    """A dataset written from a relative folder records absolute case paths (Ray's workers run in other
    directories); a relative path in a manifest written elsewhere is read as relative to its folder."""
    monkeypatch.chdir(tmp_path)
    write_noise_dataset("data", count=5)
    monkeypatch.chdir("/")
    rows = read_manifest(str(tmp_path / "data"))
    assert [row["array_uri"] for row in rows] == [str(tmp_path / "data" / f"case{i:02d}.npz") for i in range(5)]
    assert load_case(rows[0]["array_uri"]).image.shape == (1, 24, 24)

    moved = tmp_path / "moved"
    (moved / "cases").mkdir(parents=True)
    for row in rows:
        os.rename(row["array_uri"], moved / "cases" / os.path.basename(row["array_uri"]))
    by_hand = [{**row, "array_uri": f"cases/{row['case_id']}.npz"} for row in rows]
    table = pa.Table.from_pylist(by_hand, schema=SCHEMA)  # as another tool writes it, paths kept relative
    pq.write_table(table, str(moved / "manifest.parquet"))
    monkeypatch.chdir(tmp_path / "data")
    assert [row["array_uri"] for row in read_manifest("../moved")] == [
        str(moved / "cases" / f"case{i:02d}.npz") for i in range(5)
    ]
    write_manifest(str(moved), by_hand)  # lightwork's own writer: relative to the caller's directory
    assert read_manifest(str(moved))[0]["array_uri"] == str(tmp_path / "data" / "cases" / "case00.npz")
