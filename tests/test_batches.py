"""Job batches of the per-slide steps (preprocessing.slides_per_job, features.slides_per_job):
kept once made, so a changed batch size plans nothing on a finished run; only slides that no
job did are cut anew."""

from __future__ import annotations

import os

import pytest

from hmf.batches import (
    BatchManifestError,
    batch_id,
    manifest_path,
    plan_batches,
    read_manifest,
    read_manifests,
    read_singles,
    single_marker,
    write_manifest,
    write_single_marker,
)

SLIDES = [f"s{i}" for i in range(7)]


def test_new_slides_are_cut_in_sheet_order():
    assert plan_batches(SLIDES, 3, []) == [["s0", "s1", "s2"], ["s3", "s4", "s5"]]  # s6: a one-slide job
    # one slide per job: no batch, every slide goes to the one-slide rule
    assert plan_batches(SLIDES, 1, []) == []


def test_manifests_keep_their_batches_whatever_the_size():
    made = plan_batches(SLIDES, 3, [])
    for size in (1, 2, 3, 16):
        assert plan_batches(SLIDES, size, made, {"s6"}) == made


def test_only_slides_that_no_job_extracted_join_new_batches():
    manifests = [["s0", "s1", "s2"]]
    assert plan_batches(SLIDES, 2, manifests, {"s3"}) == [["s0", "s1", "s2"], ["s4", "s5"]]  # s3: one-slide


def test_a_finished_batch_leaves_the_other_cuts_in_place():
    # a cluster job reads the workflow while other batches finish: it must find its own batch
    planned = plan_batches(SLIDES, 2, [])
    for done in planned:
        assert plan_batches(SLIDES, 2, [done]) == [done] + [b for b in planned if b != done]


def test_a_newer_manifest_wins_and_absent_slides_drop_out():
    newest_first = [["s2", "s3"], ["s0", "s1", "s2"], ["gone", "s4"]]
    planned = plan_batches(SLIDES, 1, newest_first)
    # s2 stays in the newer batch; the older batch loses it (and so runs again); `gone` left the
    # sheet, so s4 is left alone to the one-slide rule
    assert planned == [["s2", "s3"], ["s0", "s1"]]


def test_manifest_round_trip_and_order(tmp_path):
    first, second = ["a", "b"], ["c"]
    write_manifest(manifest_path(tmp_path, first), first)
    path = manifest_path(tmp_path, second)
    write_manifest(path, second)
    os.utime(manifest_path(tmp_path, first), ns=(1, 1))  # the older one
    assert read_manifests(tmp_path) == [second, first]
    assert os.path.basename(path) == f"{batch_id(second)}.json"
    assert batch_id(["a", "b"]) != batch_id(["b", "a"])
    assert read_manifests(tmp_path / "nowhere") == [] and read_singles(tmp_path / "nowhere") == set()
    write_single_marker(single_marker(tmp_path, "s9"))
    assert read_singles(tmp_path) == {"s9"} and read_manifests(tmp_path) == [second, first]


def test_a_bad_manifest_is_named(tmp_path):
    bad = tmp_path / "batches" / "x.json"
    bad.parent.mkdir()
    bad.write_text('{"slides": [1, 2]}')
    with pytest.raises(BatchManifestError, match="x.json.*not a batch manifest"):
        read_manifest(bad)
    bad.write_text("{")
    with pytest.raises(BatchManifestError, match="x.json"):
        read_manifests(bad.parent)


@pytest.mark.workflow
def test_a_segmentation_batch_runs_and_stays_when_slides_per_job_changes(aperio_slide, tmp_path):
    """Two real slides segmented and patched by one job (preprocessing.slides_per_job: 2): their
    per-slide files and the batch's manifest; then one job per slide plans nothing."""
    import shutil

    from standalone import StandalonePreprocessing

    slides = {"a": aperio_slide, "b": tmp_path / "b.svs"}
    shutil.copy(aperio_slide, slides["b"])
    targets = [f"results/t/patches/{s}.h5" for s in slides]

    def run(size, *args):
        config = {"preprocessing": {"preset": "bwh_biopsy", "slides_per_job": size}, "features": {"device": "cpu"}}
        return StandalonePreprocessing(tmp_path / "wf", slides, config).snakemake(*targets, args=args, timeout=600)

    plan = run(2, "-n")
    out = plan.stdout + plan.stderr
    assert plan.returncode == 0, out[-3000:]
    block = out.split("rule segment_and_patch_batch_", 1)[1].split("\n\n", 1)[0]
    assert "mem_mb=<TBD>" in block, block  # a dry run opens no slide
    done = run(2)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    folder = tmp_path / "wf/results/t/patches"
    assert read_manifests(folder / "batches") == [["a", "b"]]
    for slide in slides:
        assert (folder / f"{slide}.h5").stat().st_size > 0
        assert (tmp_path / f"wf/results/t/contours/{slide}.geojson").exists()
    for size in (1, 3):
        again = run(size, "-n")
        assert "Nothing to be done" in again.stdout + again.stderr, size
