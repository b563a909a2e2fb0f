"""Feature extraction: the CLAM encoder, weights handling, the registry, output files."""

from __future__ import annotations

import sys

import h5py
import numpy as np
import pytest
import torch

from hmf.features.encoders import (RESNET50_IMAGENET_FILE, EncoderError, EncoderSettings, build_encoder,
                                   register_encoder)
from hmf.features.extract import FeaturesConfigError, extract_features, resolve_device, resolve_features
from hmf.features.io import feature_dim, read_features
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
    encoder = build_encoder(EncoderSettings(weights=str(tmp_path / "r50.pth")))
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
            build_encoder(EncoderSettings(weights="imagenet"))
        message = str(err.value)
        assert RESNET50_IMAGENET_FILE in message and str(tmp_path / "hub" / "checkpoints") in message
        assert not (tmp_path / "hub" / "checkpoints" / RESNET50_IMAGENET_FILE).exists()  # nothing fetched
        (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
        torch.save(_resnet50_state(), tmp_path / "hub" / "checkpoints" / RESNET50_IMAGENET_FILE)
        encoder = build_encoder(EncoderSettings(weights="imagenet"))
        assert encoder.weights == f"imagenet:{RESNET50_IMAGENET_FILE}"
    finally:
        torch.hub.set_dir(old)


def test_bad_weights_and_unknown_encoders(tmp_path):
    with pytest.raises(EncoderError, match="does not exist"):
        build_encoder(EncoderSettings(weights=str(tmp_path / "none.pth")))
    torch.save({"conv1.weight": torch.zeros(1)}, tmp_path / "partial.pth")
    with pytest.raises(EncoderError, match="missing"):
        build_encoder(EncoderSettings(weights=str(tmp_path / "partial.pth")))
    with pytest.raises(EncoderError, match="unknown.*resnet50_trunc"):
        build_encoder(EncoderSettings(encoder="vgg99"))


def test_random_weights_are_seeded():
    a = build_encoder(EncoderSettings(weights="random", seed=1)).module
    b = build_encoder(EncoderSettings(weights="random", seed=1)).module
    c = build_encoder(EncoderSettings(weights="random", seed=2)).module
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

    encoder = build_encoder(EncoderSettings(weights="random"))
    reference = transforms.Compose([transforms.Resize(224), transforms.ToTensor(),
                                    transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
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

    register_encoder("tiny_test", lambda s: Encoder("tiny_test", torch.nn.Sequential(
        torch.nn.Conv2d(3, 5, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()),
        5, "random", 32, (0.5,) * 3, (0.5,) * 3))
    assert build_encoder(EncoderSettings(encoder="tiny_test")).dim == 5


def test_timm_encoder_needs_timm(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # makes `import timm` fail
    with pytest.raises(EncoderError, match="pip install timm"):
        build_encoder(EncoderSettings(encoder="timm:resnet18", checkpoint="x.pth"))


def test_timm_encoder_from_a_local_checkpoint(tmp_path):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=0)
    torch.save({"state_dict": net.state_dict()}, tmp_path / "r18.pth")
    encoder = build_encoder(EncoderSettings(encoder="timm:resnet18", checkpoint=str(tmp_path / "r18.pth")))
    assert encoder.dim == 512 and encoder.weights == str(tmp_path / "r18.pth")
    x = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(encoder.module(x), net.eval()(x))


def test_config_validation():
    enc, run = resolve_features({"encoder": "resnet50_trunc", "weights": "random", "device": "cpu"})
    assert enc.weights == "random" and run.device == "cpu" and run.batch_for(torch.device("cpu")) == 2
    with pytest.raises(FeaturesConfigError, match="bogus"):
        resolve_features({"bogus": 1})
    with pytest.raises(FeaturesConfigError, match="batch_size"):
        resolve_features({"batch_size": 0})
    with pytest.raises(FeaturesConfigError, match="cpu_streams"):
        resolve_features({"cpu_streams": 0})
    with pytest.raises(FeaturesConfigError, match="device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(FeaturesConfigError, match="no CUDA device"):
            resolve_device("cuda:0")


def test_extraction_outputs_are_finite_complete_and_reproducible(aperio_slide, coords_subset, tmp_path):
    outs = []
    for run, workers in enumerate((1, 0)):  # a reader process, then reads in the CPU streams
        h5, pt = tmp_path / f"h5_{run}" / "cmu.h5", tmp_path / f"pt_{run}" / "cmu.pt"
        stats = extract_features(aperio_slide, coords_subset, h5, pt,
                                 {"weights": "random", "device": "cpu", "num_workers": workers, "batch_size": 4},
                                 slide_id="cmu", stats_json=tmp_path / f"stats_{run}.json")
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
    extract_features(aperio_slide, tmp_path / "empty.h5", tmp_path / "f.h5", tmp_path / "f.pt",
                     {"weights": "random", "device": "cpu"})
    features, coords = read_features(tmp_path / "f.h5")
    assert features.shape == (0, 1024) and coords.shape == (0, 2)
    assert torch.load(tmp_path / "f.pt", weights_only=True).shape == (0, 1024)


def test_device_claims(monkeypatch, tmp_path):
    from hmf.features.extract import claimed_device

    monkeypatch.setenv("HMF_GPU_LOCK_DIR", str(tmp_path / "locks"))
    with claimed_device("cpu") as device:
        assert device.type == "cpu"
    monkeypatch.setenv("HMF_FAKE_GPUS", "1")  # a simulated card is locked, the work stays on the CPU
    with claimed_device("auto") as device:
        assert device.type == "cpu"
        assert (tmp_path / "locks" / "gpu0.lock").exists()
    monkeypatch.setenv("HMF_FAKE_GPUS", "0")
    if not torch.cuda.is_available():
        with pytest.raises(FeaturesConfigError, match="features.device=cuda"):
            with claimed_device("cuda"):
                pass


def test_torchscript_cpu_path_matches_eager(aperio_slide, coords_subset):
    from hmf.features.extract import PatchDataset, RuntimeSettings, encode_patches
    from hmf.wsi.slide import open_slide

    encoder = build_encoder(EncoderSettings(weights="random"))
    coords, attrs = read_coords(coords_subset)
    dataset = PatchDataset(open_slide(aperio_slide), coords[:3], 0, int(attrs["patch_size"]), encoder.pixels)
    cpu = torch.device("cpu")
    eager = encode_patches(encoder, dataset, cpu, RuntimeSettings(batch_size=2, num_workers=0, cpu_optimize="none"))
    frozen = encode_patches(encoder, dataset, cpu, RuntimeSettings(batch_size=2, num_workers=0, cpu_optimize="jit"))
    again = encode_patches(encoder, dataset, cpu, RuntimeSettings(batch_size=2, num_workers=0, cpu_optimize="jit"))
    assert frozen.shape == eager.shape == (3, 1024)
    torch.testing.assert_close(frozen, eager, rtol=1e-3, atol=1e-3)
    assert torch.equal(frozen, again)


@pytest.mark.parametrize("source", ["aperio", "png"])
def test_cpu_streams_return_every_batch_in_order(source, aperio_slide, tumour_image, coords_subset):
    """Three streams finishing in any order give the bits of one stream; a PNG (PIL behind
    OpenSlide's ImageSlide, read under a lock) as well as an SVS."""
    from hmf.features.extract import PatchDataset, RuntimeSettings, encode_patches
    from hmf.wsi.slide import open_slide

    encoder = build_encoder(EncoderSettings(weights="random"))
    if source == "aperio":
        slide, coords = open_slide(aperio_slide), read_coords(coords_subset)[0]
    else:
        slide, coords = open_slide(tumour_image), np.array([[x, y] for y in (0, 500) for x in (0, 250, 500)])
    dataset = PatchDataset(slide, coords, 0, 256, encoder.pixels)
    cpu, seen = torch.device("cpu"), []
    one = encode_patches(encoder, dataset, cpu, RuntimeSettings(batch_size=2, cpu_streams=1, cpu_optimize="none"))
    three = encode_patches(encoder, dataset, cpu, RuntimeSettings(batch_size=2, cpu_streams=3, cpu_optimize="none"),
                           on_batch=seen.append)
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
        extract_features(damaged, coords_subset, out, tmp_path / "pt_files" / "damaged.pt",
                         {"weights": "random", "device": "cpu", "batch_size": 2, "cpu_streams": 2},
                         slide_id="damaged")
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
