"""Feature extraction: the CLAM encoder, weights handling, the registry, output files."""

from __future__ import annotations

import sys

import h5py
import numpy as np
import pytest
import torch

from hmf.config import ConfigError
from hmf.devices import resolve_device
from hmf.features.encoders import RESNET50_IMAGENET_FILE, EncoderError, build_encoder, register_encoder
from hmf.features.extract import extract_features
from hmf.features.io import feature_dim, read_features
from hmf.features.settings import encoder_settings, resolve_features, runtime_settings
from hmf.wsi.patching import read_coords, write_coords
from hmf.wsi.steps import run_patching, run_segmentation


@pytest.fixture(scope="module")
def coords_subset(aperio_slide, tmp_path_factory):
    """A coordinates file with 6 of the real slide's patches (keeps the tests cheap)."""
    work = tmp_path_factory.mktemp("patches")
    cfg = {"preset": "bwh_biopsy"}
    run_segmentation(aperio_slide, "cmu", cfg, work / "c.geojson", work / "m.jpg", work / "s.json")
    run_patching(aperio_slide, "cmu", cfg, work / "c.geojson", work / "all.h5", work / "st.jpg")
    coords, attrs = read_coords(work / "all.h5")
    write_coords(work / "subset.h5", coords[::8][:6], attrs)
    return work / "subset.h5"


def _resnet50_state(seed=3):
    from torchvision.models import resnet50

    torch.manual_seed(seed)
    return resnet50(weights=None).state_dict()


def test_resnet50_trunc_is_layer3_plus_average_pool(tmp_path):
    """Features equal torchvision's ResNet-50 run to layer3 and averaged (independent reference)."""
    from torchvision.models import resnet50

    state = _resnet50_state()
    torch.save(state, tmp_path / "r50.pth")
    encoder = build_encoder(encoder_settings(weights=str(tmp_path / "r50.pth")))
    assert encoder.dim == 1024 and encoder.weights == str(tmp_path / "r50.pth")
    reference = resnet50(weights=None)
    reference.load_state_dict(state)
    reference.eval()
    captured = {}
    reference.layer3.register_forward_hook(lambda m, i, o: captured.setdefault("layer3", o))
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        reference(x)
        expected = captured["layer3"].mean(dim=(2, 3))
        got = encoder.module(x)
    assert got.shape == (2, 1024)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_imagenet_weights_come_from_the_hub_cache_only(tmp_path, monkeypatch):
    old = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path / "hub"))
    try:
        with pytest.raises(EncoderError) as err:
            build_encoder(encoder_settings(weights="imagenet"))
        message = str(err.value)
        assert RESNET50_IMAGENET_FILE in message and str(tmp_path / "hub" / "checkpoints") in message
        assert not (tmp_path / "hub" / "checkpoints" / RESNET50_IMAGENET_FILE).exists()  # nothing fetched
        (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
        torch.save(_resnet50_state(), tmp_path / "hub" / "checkpoints" / RESNET50_IMAGENET_FILE)
        encoder = build_encoder(encoder_settings(weights="imagenet"))
        assert encoder.weights == f"imagenet:{RESNET50_IMAGENET_FILE}"
    finally:
        torch.hub.set_dir(old)


def test_bad_weights_and_unknown_encoders(tmp_path):
    with pytest.raises(EncoderError, match="does not exist"):
        build_encoder(encoder_settings(weights=str(tmp_path / "none.pth")))
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "partial.pth")
    with pytest.raises(EncoderError, match="missing"):
        build_encoder(encoder_settings(weights=str(tmp_path / "partial.pth")))
    with pytest.raises(EncoderError, match="unknown.*resnet50_trunc"):
        build_encoder(encoder_settings(encoder="vgg99"))


def test_random_weights_are_seeded():
    a = build_encoder(encoder_settings(weights="random", seed=1)).module
    b = build_encoder(encoder_settings(weights="random", seed=1)).module
    c = build_encoder(encoder_settings(weights="random", seed=2)).module
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        assert torch.equal(a(x), b(x)) and not torch.equal(a(x), c(x))


def test_split_preprocessing_equals_torchvision_per_image_transform(aperio_slide, coords_subset):
    """uint8 pixels from the reader + per-batch normalisation give the exact float values of
    CLAM's per-image Resize/ToTensor/Normalize, in channels-last memory; the patch is the
    slide's RGB with the alpha dropped."""
    import openslide
    from torchvision import transforms

    from hmf.wsi.slide import open_slide

    encoder = build_encoder(encoder_settings(weights="random"))
    reference = transforms.Compose(
        [
            transforms.Resize(224),
            transforms.ToTensor(),
            transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
        ]
    )
    coords, _ = read_coords(coords_subset)
    slide, raw = open_slide(aperio_slide), openslide.OpenSlide(str(aperio_slide))
    pixels, expected = [], []
    for x, y in coords[:4]:
        image = slide.read_region_image((x, y), 0, (256, 256))
        rgba = np.asarray(raw.read_region((int(x), int(y)), 0, (256, 256)))
        assert np.array_equal(np.asarray(image), rgba[..., :3])
        pixels.append(encoder.pixels(image))
        expected.append(reference(image))
    batch = torch.stack(pixels)
    assert batch.dtype == torch.uint8 and batch.shape == (4, 224, 224, 3)
    normalized = encoder.normalize(batch)
    assert normalized.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(normalized, torch.stack(expected))
    assert torch.equal(encoder.transform(image), expected[-1])
    import pickle

    assert len(pickle.dumps(encoder.pixels)) < 10_000  # reader processes do not receive the network


def test_registry_accepts_a_user_encoder():
    from hmf.features.encoders import Encoder

    register_encoder(
        "tiny_test",
        lambda s: Encoder(
            "tiny_test",
            torch.nn.Sequential(torch.nn.Conv2d(3, 5, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()),
            5,
            "random",
            32,
            (0.5,) * 3,
            (0.5,) * 3,
        ),
    )
    assert build_encoder(encoder_settings(encoder="tiny_test")).dim == 5


def test_timm_encoder_needs_timm(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` fail
    with pytest.raises(EncoderError, match="pip install timm"):
        build_encoder(encoder_settings(encoder="timm:resnet18", checkpoint="x.pth"))


def test_timm_encoder_from_a_local_checkpoint(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=0)
    torch.save({"state_dict": net.state_dict()}, tmp_path / "r18.pth")
    encoder = build_encoder(encoder_settings(encoder="timm:resnet18", checkpoint=str(tmp_path / "r18.pth")))
    assert encoder.dim == 512 and encoder.weights == str(tmp_path / "r18.pth")
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(encoder.module(x), net.eval()(x))


def test_config_validation():
    enc, run = resolve_features({"encoder": "resnet50_trunc", "weights": "random", "device": "cpu"})
    assert enc.weights == "random" and run.device == "cpu" and run.batch_for(torch.device("cpu")) == 2
    with pytest.raises(ConfigError, match="bogus"):
        resolve_features({"bogus": 1})
    with pytest.raises(ConfigError, match="batch_size"):
        resolve_features({"batch_size": 0})
    with pytest.raises(ConfigError, match="cpu_streams"):
        resolve_features({"cpu_streams": 0})
    with pytest.raises(ConfigError, match=r"features\.device"):
        resolve_features({"device": "tpu"})
    with pytest.raises(ConfigError, match="device"):
        resolve_device("tpu", key="features.device")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device"):
            resolve_device("cuda:0", key="features.device")


def test_extraction_outputs_are_finite_complete_and_reproducible(aperio_slide, coords_subset, tmp_path):
    outs = []
    for run, workers in enumerate((1, 0)):  # a reader process, then reads in the CPU streams
        h5, pt = tmp_path / f"h5_{run}" / "cmu.h5", tmp_path / f"pt_{run}" / "cmu.pt"
        stats = extract_features(
            aperio_slide,
            coords_subset,
            h5,
            pt,
            {"weights": "random", "device": "cpu", "num_workers": workers, "batch_size": 4},
            slide_id="cmu",
            stats_json=tmp_path / f"stats_{run}.json",
        )
        outs.append((h5, pt))
        assert stats["n_patches"] == 6 and stats["dim"] == 1024
    (h5a, pta), (h5b, ptb) = outs
    features, coords = read_features(h5a)
    assert features.shape == (6, 1024) and features.dtype == torch.float32 and torch.isfinite(features).all()
    assert np.array_equal(coords, read_coords(coords_subset)[0])
    assert h5a.read_bytes() == h5b.read_bytes()
    assert torch.equal(torch.load(pta, weights_only=True), torch.load(ptb, weights_only=True))
    assert torch.equal(torch.load(pta, weights_only=True), features)
    with h5py.File(h5a) as fh:
        assert fh.attrs["encoder"] == "resnet50_trunc" and fh.attrs["weights"] == "random(seed=0)"
        assert fh.attrs["dim"] == 1024 and fh["coords"].attrs["patch_size"] == 256
    assert feature_dim(h5a) == 1024
    assert not [p for p in h5a.parent.iterdir() if p.name.startswith(".")]


def test_slide_without_patches_gets_empty_feature_files(aperio_slide, coords_subset, tmp_path):
    _, attrs = read_coords(coords_subset)
    write_coords(tmp_path / "empty.h5", np.zeros((0, 2), np.int64), attrs)
    extract_features(
        aperio_slide,
        tmp_path / "empty.h5",
        tmp_path / "f.h5",
        tmp_path / "f.pt",
        {"weights": "random", "device": "cpu"},
    )
    features, coords = read_features(tmp_path / "f.h5")
    assert features.shape == (0, 1024) and coords.shape == (0, 2)
    assert torch.load(tmp_path / "f.pt", weights_only=True).shape == (0, 1024)


def test_extraction_outside_a_job_resolves_its_device_unclaimed(monkeypatch, tmp_path):
    monkeypatch.setenv("HMF_GPU_LOCK_DIR", str(tmp_path / "locks"))
    monkeypatch.setenv("HMF_FAKE_GPUS", "1")  # a simulated card computes on the CPU, unlocked
    assert resolve_device("auto", key="features.device").type == "cpu"
    assert not (tmp_path / "locks").exists()


def test_torchscript_cpu_path_matches_eager(aperio_slide, coords_subset):
    from hmf.features.engine import PatchDataset, encode_patches
    from hmf.wsi.slide import open_slide

    encoder = build_encoder(encoder_settings(weights="random"))
    coords, attrs = read_coords(coords_subset)
    dataset = PatchDataset(open_slide(aperio_slide), coords[:3], 0, int(attrs["patch_size"]), encoder.pixels)
    cpu = torch.device("cpu")
    eager = encode_patches(encoder, dataset, cpu, runtime_settings(batch_size=2, num_workers=0, cpu_optimize="none"))
    frozen = encode_patches(encoder, dataset, cpu, runtime_settings(batch_size=2, num_workers=0, cpu_optimize="jit"))
    again = encode_patches(encoder, dataset, cpu, runtime_settings(batch_size=2, num_workers=0, cpu_optimize="jit"))
    assert frozen.shape == eager.shape == (3, 1024)
    torch.testing.assert_close(frozen, eager, rtol=1e-3, atol=1e-3)
    assert torch.equal(frozen, again)


@pytest.mark.parametrize("source", ["aperio", "png"])
def test_cpu_streams_return_every_batch_in_order(source, aperio_slide, tumour_image, coords_subset):
    """Three streams finishing in any order give the bits of one stream; a PNG (PIL behind
    OpenSlide's ImageSlide, read under a lock) as well as an SVS."""
    from hmf.features.engine import PatchDataset, encode_patches
    from hmf.wsi.slide import open_slide

    encoder = build_encoder(encoder_settings(weights="random"))
    if source == "aperio":
        slide, coords = open_slide(aperio_slide), read_coords(coords_subset)[0]
    else:
        slide, coords = open_slide(tumour_image), np.array([[x, y] for y in (0, 500) for x in (0, 250, 500)])
    dataset = PatchDataset(slide, coords, 0, 256, encoder.pixels)
    cpu, seen = torch.device("cpu"), []
    one = encode_patches(encoder, dataset, cpu, runtime_settings(batch_size=2, cpu_streams=1, cpu_optimize="none"))
    three = encode_patches(
        encoder, dataset, cpu, runtime_settings(batch_size=2, cpu_streams=3, cpu_optimize="none"), on_batch=seen.append
    )
    assert seen == [2, 4, 6]
    assert torch.equal(one, three)
    with torch.inference_mode():  # and each row is its own patch's features
        single = encoder.module(encoder.normalize(dataset[4][None]))
    torch.testing.assert_close(three[4:5], single, rtol=1e-4, atol=1e-4)


def test_region_read_failing_in_a_stream_names_the_slide(aperio_slide, coords_subset, tmp_path):
    from hmf.wsi.slide import SlideError

    data = bytearray(aperio_slide.read_bytes())
    a, b = int(len(data) * 0.2), int(len(data) * 0.6)
    data[a:b] = bytes(b - a)  # wipe the middle tiles, keep the directories
    damaged = tmp_path / "damaged.svs"
    damaged.write_bytes(bytes(data))
    out = tmp_path / "h5_files" / "damaged.h5"
    with pytest.raises(SlideError, match=r"slide damaged: reading .* failed"):
        extract_features(
            damaged,
            coords_subset,
            out,
            tmp_path / "pt_files" / "damaged.pt",
            {"weights": "random", "device": "cpu", "batch_size": 2, "cpu_streams": 2},
            slide_id="damaged",
        )
    assert not out.exists() and not (tmp_path / "pt_files" / "damaged.pt").exists()


def test_every_schema_default_is_accepted():
    """The `features:` section as the workflow hands it over (schema defaults filled in)."""
    from pathlib import Path

    from snakemake.utils import validate

    section: dict = {}
    validate(section, str(Path(__file__).resolve().parents[1] / "config/schema/features.schema.yaml"))
    assert "device" in section and "batch_size" in section
    encoder, runtime = resolve_features(section)
    assert encoder.encoder == "resnet50_trunc" and runtime.device == "auto"


# -- precision ------------------------------------------------------------------------------


def _has_cpu_bf16() -> bool:
    from hmf.precision import bf16_unsupported

    return bf16_unsupported(torch.device("cpu")) is None


def test_precision_setting_is_validated():
    assert resolve_features({})[1].precision == "fp32"  # CLAM-exact by default
    assert resolve_features({"precision": "bf16"})[1].precision == "bf16"
    with pytest.raises(ConfigError, match=r"features\.precision: 'fp16' is not one of"):
        resolve_features({"precision": "fp16"})


def test_bf16_on_a_cpu_without_bf16_is_an_error_and_auto_falls_back(aperio_slide, coords_subset, tmp_path, monkeypatch):
    from hmf import precision

    monkeypatch.setattr(precision, "cpu_flags", lambda: {"fpu", "sse2", "avx2", "avx512f"})
    cpu = torch.device("cpu")
    assert precision.resolve_precision("auto", cpu) == "fp32"
    assert precision.resolve_precision("fp32", cpu) == "fp32"
    with pytest.raises(ConfigError, match=r"features.precision=bf16: this CPU has no bf16 instructions"):
        precision.resolve_precision("bf16", cpu)
    out = tmp_path / "h5_files" / "cmu.h5"
    with pytest.raises(ConfigError, match="features.precision=bf16"):
        extract_features(
            aperio_slide,
            coords_subset,
            out,
            tmp_path / "pt_files" / "cmu.pt",
            {"weights": "random", "device": "cpu", "precision": "bf16"},
            slide_id="cmu",
        )
    assert not out.exists()
    stats = extract_features(
        aperio_slide,
        coords_subset,
        out,
        tmp_path / "pt_files" / "cmu.pt",
        {"weights": "random", "device": "cpu", "precision": "auto"},
        slide_id="cmu",
    )
    assert stats["precision"] == "fp32"
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx512f", "avx512_bf16"})
    assert precision.resolve_precision("auto", cpu) == "bf16"
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"amx_bf16", "amx_tile"})
    assert precision.resolve_precision("bf16", cpu) == "bf16"


@pytest.mark.skipif(not _has_cpu_bf16(), reason="this CPU has no bf16 instructions (avx512_bf16, amx_bf16)")
def test_bf16_features_stay_within_cosine_of_fp32_on_the_real_slide(aperio_slide, tmp_path):
    """bf16 on the real CMU slide, in both CPU paths (eager and TorchScript-frozen), against fp32;
    the precision is recorded in the h5 file and the stats, and a mixed cohort is refused."""
    import json

    from hmf.features.io import FeatureFileError, check_uniform_precision, feature_precision

    cfg = {"preset": "bwh_biopsy"}
    run_segmentation(aperio_slide, "cmu", cfg, tmp_path / "c.geojson", tmp_path / "m.jpg", tmp_path / "s.json")
    run_patching(aperio_slide, "cmu", cfg, tmp_path / "c.geojson", tmp_path / "all.h5", tmp_path / "st.jpg")
    coords, attrs = read_coords(tmp_path / "all.h5")
    write_coords(tmp_path / "p.h5", coords[:24], attrs)
    base = {"weights": "random", "device": "cpu", "cpu_streams": 2}
    feats = {}
    for name, extra in {
        "fp32": {},
        "bf16": {"precision": "bf16"},
        "bf16_jit": {"precision": "bf16", "cpu_optimize": "jit"},
    }.items():
        folder = tmp_path / name
        stats = extract_features(
            aperio_slide,
            tmp_path / "p.h5",
            folder / "h5_files" / "cmu.h5",
            folder / "pt_files" / "cmu.pt",
            {**base, **extra},
            slide_id="cmu",
            stats_json=folder / "stats.json",
        )
        feats[name] = read_features(folder / "h5_files" / "cmu.h5")[0]
        assert feats[name].dtype == torch.float32 and feats[name].shape == (24, 1024)
        expected = "fp32" if name == "fp32" else "bf16"
        assert stats["precision"] == expected == json.loads((folder / "stats.json").read_text())["precision"]
        assert feature_precision(folder / "h5_files" / "cmu.h5") == expected
        assert feature_precision(folder / "pt_files" / "cmu.pt") == expected  # from the h5 beside it
        assert torch.equal(torch.load(folder / "pt_files" / "cmu.pt", weights_only=True), feats[name])
    for name in ("bf16", "bf16_jit"):
        assert not torch.equal(feats[name], feats["fp32"])  # bf16 really ran
        cosine = torch.nn.functional.cosine_similarity(feats[name], feats["fp32"], dim=1)
        assert cosine.min() >= 0.9999, f"{name}: min cosine {cosine.min():.6f}"
    assert check_uniform_precision([tmp_path / "bf16/h5_files/cmu.h5", tmp_path / "bf16_jit/pt_files/cmu.pt"]) == "bf16"
    with pytest.raises(FeatureFileError, match=r"different precisions \(fp32 in .*, bf16 in"):
        check_uniform_precision([tmp_path / "fp32/h5_files/cmu.h5", tmp_path / "bf16/h5_files/cmu.h5"])


def test_precision_of_files_that_do_not_record_it(tmp_path):
    """CLAM's files say nothing: they are not compared; a file that does not exist is an error."""
    from hmf.features.io import FeatureFileError, check_uniform_precision, feature_precision

    for name, precision in (("clam", None), ("a", "bf16"), ("b", "bf16")):
        with h5py.File(tmp_path / f"{name}.h5", "w") as fh:
            fh.create_dataset("features", data=np.zeros((2, 4), np.float32))
            if precision:
                fh.attrs["precision"] = precision
    (tmp_path / "pt_files").mkdir()
    torch.save(torch.zeros(2, 4), tmp_path / "pt_files" / "clam.pt")
    assert feature_precision(tmp_path / "clam.h5") is None
    assert feature_precision(tmp_path / "pt_files" / "clam.pt") is None
    assert check_uniform_precision([tmp_path / "clam.h5"]) is None
    assert check_uniform_precision([tmp_path / "clam.h5", tmp_path / "a.h5", tmp_path / "b.h5"]) == "bf16"
    with pytest.raises(FeatureFileError, match="does not exist"):
        feature_precision(tmp_path / "none.h5")


# -- memory ---------------------------------------------------------------------------------

MEMORY_CHILD = """
import json, resource, sys
import torch
from hmf.features.encoders import Encoder, register_encoder
from hmf.features.extract import extract_features
from hmf.wsi.patching import read_coords, write_coords

DIM, N = 65536, 2048  # 512 MiB of float32 features
register_encoder("wide_test", lambda s: Encoder("wide_test", torch.nn.Sequential(
    torch.nn.Conv2d(3, DIM, 1, bias=False), torch.nn.Flatten()), DIM, "random", 1))
slide, coords_file, out = sys.argv[1:4]
coords, attrs = read_coords(coords_file)
attrs["patch_size"] = 8  # small reads: the test is about the features, not the pixels
write_coords(out + "/p.h5", coords[[i % len(coords) for i in range(N)]], attrs)
write_coords(out + "/warm.h5", coords[:4], attrs)
settings = {"encoder": "wide_test", "device": "cpu", "batch_size": 16}
extract_features(slide, out + "/warm.h5", out + "/w.h5", out + "/w.pt", settings)  # imports, allocator
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
extract_features(slide, out + "/p.h5", out + "/f.h5", out + "/f.pt", settings)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"before": before, "after": after, "features": DIM * N * 4}))
"""


@pytest.mark.skipif(sys.platform != "linux", reason="peak memory from getrusage in kilobytes (Linux)")
def test_extraction_holds_the_features_once(aperio_slide, coords_subset, tmp_path):
    """Peak memory of a slide's extraction grows by one copy of its features, not two: the h5
    and the pt files are written from the matrix the batches went into."""
    import json
    import subprocess
    from pathlib import Path

    env = {
        "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src"),
        "PATH": "/usr/bin:/bin",
        "OMP_NUM_THREADS": "1",
    }
    proc = subprocess.run(
        [sys.executable, "-c", MEMORY_CHILD, str(aperio_slide), str(coords_subset), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    peak = json.loads(proc.stdout.strip().splitlines()[-1])
    grown = peak["after"] - peak["before"]
    # One copy and the streams' batches (a second copy would make it 2x and more).
    assert grown < 1.5 * peak["features"], (
        f"peak grew by {grown / 2**20:.0f} MiB for {peak['features'] / 2**20:.0f} MiB"
    )
    assert read_features(tmp_path / "f.h5")[0].shape == (2048, 65536)


# -- threads of a job -----------------------------------------------------------------------


def test_extraction_threads_follow_the_patch_count(tmp_path):
    from hmf.features.threads import PATCHES_PER_THREAD, extraction_threads, patch_count

    def coords_file(name, n):
        write_coords(tmp_path / f"{name}.h5", np.zeros((n, 2), np.int64), {"patch_size": 256, "patch_level": 0})
        return tmp_path / f"{name}.h5"

    small, large, empty = (
        coords_file("small", PATCHES_PER_THREAD),
        coords_file("large", 4 * PATCHES_PER_THREAD),
        coords_file("e", 0),
    )
    assert patch_count(small) == PATCHES_PER_THREAD and patch_count(tmp_path / "none.h5") is None
    assert extraction_threads(small, 2) == 1 and extraction_threads(empty, 8) == 1
    assert extraction_threads(coords_file("more", PATCHES_PER_THREAD + 1), 2) == 2
    assert extraction_threads(large, 2) == 2 and extraction_threads(large, 16) == 4
    # A job of several slides encodes one after another: its largest slide sets the threads.
    assert extraction_threads([large, large], 16) == 4 and extraction_threads([small, large], 16) == 4
    assert extraction_threads([small] * 32, 2) == 1
    assert extraction_threads([small, tmp_path / "none.h5"], 6) == 6  # graph not built yet: all cores


@pytest.mark.skipif(sys.platform != "linux", reason="runs Snakemake with the local executor")
def test_a_large_slide_uses_every_core_and_small_slides_one_each(aperio_slide, tumour_image, tmp_path):
    """With --cores 2: the real slide (50 patches) encodes in 2 streams even though the sample
    sheet has two slides; the small image (at most 16 patches) in one."""
    from standalone import StandalonePreprocessing

    run = StandalonePreprocessing(
        tmp_path,
        {"cmu": aperio_slide, "small": tumour_image},
        {
            "preprocessing": {"preset": "bwh_biopsy", "patching": {"patch_size": 256, "step_size": 256}},
            "features": {"weights": "random", "device": "cpu", "input_size": 32},
        },
    )
    proc = run.snakemake(run.features("cmu").h5, run.features("small").h5, cores="2", timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    large_log = (tmp_path / "logs/t/extract_features/cmu.log").read_text()
    small_log = (tmp_path / "logs/t/extract_features/small.log").read_text()
    assert (
        read_coords(tmp_path / "results/t/patches/cmu.h5")[0].shape[0]
        > 32
        >= read_coords(tmp_path / "results/t/patches/small.h5")[0].shape[0]
    )
    assert "2 CPU stream(s) of 1 torch thread(s)" in large_log, large_log[-2000:]
    assert "1 CPU stream(s) of 1 torch thread(s)" in small_log, small_log[-2000:]
