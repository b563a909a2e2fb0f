"""Version stamps: the feature h5 files, the checkpoints and the slide embeddings files record the
package version, the checkout's commit and the digest of the settings that made them, and stay
byte-reproducible (no time in the stamp)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import torch

from hmf import provenance
from hmf.provenance import KEYS, read_commit, settings_digest, stamp

SHA = "0123456789abcdef0123456789abcdef01234567"
OTHER = "89abcdef0123456789abcdef0123456789abcdef"


def test_the_commit_is_read_from_the_git_files(tmp_path):
    assert read_commit(tmp_path) is None  # no repository: no commit, no error
    git = tmp_path / ".git"
    (git / "refs" / "heads").mkdir(parents=True)
    (git / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "packed-refs").write_text(f"# pack-refs with: peeled\n{OTHER} refs/heads/main\n")
    assert read_commit(tmp_path) == OTHER  # packed
    (git / "refs" / "heads" / "main").write_text(SHA + "\n")
    assert read_commit(tmp_path) == SHA  # loose ref first
    (git / "HEAD").write_text(OTHER + "\n")
    assert read_commit(tmp_path) == OTHER  # detached
    worktree = tmp_path / "wt"
    (git / "worktrees" / "wt").mkdir(parents=True)
    (git / "worktrees" / "wt" / "HEAD").write_text("ref: refs/heads/main\n")
    (git / "worktrees" / "wt" / "commondir").write_text("../..\n")
    worktree.mkdir()
    (worktree / ".git").write_text(f"gitdir: {git / 'worktrees' / 'wt'}\n")
    assert read_commit(worktree) == SHA  # the branch lives in the common folder
    (git / "HEAD").write_text("garbage")
    assert read_commit(tmp_path) is None


def test_this_checkout_is_stamped_with_its_head():
    head = read_commit(provenance.CHECKOUT)
    assert provenance.checkout_commit() == (head or "")
    assert stamp()["hmf_version"] == provenance.package_version() != ""


def test_the_digest_covers_the_settings_and_nothing_else():
    a = {"encoder": SimpleNamespace(x=1), "precision": "fp32", "mean": (0.5, 0.4)}
    b = {"mean": [0.5, 0.4], "precision": "fp32", "encoder": SimpleNamespace(x=1)}
    assert settings_digest(a) == settings_digest(b)  # key order and tuple/list do not matter
    assert settings_digest(a) != settings_digest({**a, "precision": "bf16"})
    assert stamp(a) == stamp(b) and tuple(stamp(a)) == KEYS
    assert stamp()["settings_sha256"] == ""


def test_feature_h5_files_carry_the_stamp(tmp_path):
    from hmf.features.io import feature_paths, write_feature_files

    encoder = SimpleNamespace(name="enc", weights="random(seed=0)", dim=4, input_size=32)
    settings = {"encoder": {"encoder": "enc"}, "precision": "fp32"}
    h5, pt, _ = feature_paths(tmp_path, "s1")
    feats = torch.zeros(3, 4)
    write_feature_files(h5, pt, feats, np.zeros((3, 2)), {}, encoder, {"precision": "fp32"}, settings=settings)
    with h5py.File(h5) as fh:
        assert {k: fh.attrs[k] for k in KEYS} == stamp(settings)


def _slide_checkpoint(params):
    from hmf.training.checkpoints import SlideCheckpoint

    return SlideCheckpoint(
        model="meanpool",
        state_dict={"w": torch.ones(2)},
        in_dim=4,
        n_classes=2,
        classes=("a", "b"),
        text_dim=None,
        params=params,
        best_epoch=1,
        feature_mean=None,
        feature_std=None,
        best_score=0.5,
    )


def test_checkpoints_carry_the_stamp_and_stay_byte_reproducible(tmp_path):
    from hmf.training.checkpoints import SlideCheckpoint, read_checkpoint, write_checkpoint

    params = {"model": {}, "optimizer": {"lr": 1e-3}, "scheduler": {}, "fit": {"epochs": 2}}
    for name in ("a.pt", "b.pt"):
        write_checkpoint(tmp_path / name, _slide_checkpoint(params))
    saved = torch.load(tmp_path / "a.pt", weights_only=True)
    assert saved["provenance"] == stamp(params)
    assert read_checkpoint(tmp_path / "a.pt", SlideCheckpoint).best_epoch == 1
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b.pt").read_bytes()


def test_embeddings_files_carry_the_stamp(tmp_path):
    from hmf.training.slide_embeddings import read_slide_embeddings, write_slide_embeddings

    path = Path(tmp_path / "embeddings.pt")
    settings = {"fit": {"seed": 3}}
    write_slide_embeddings(path, ["s1"], torch.zeros(1, 3), torch.full((1, 2), 0.5), ["a", "b"], "m", settings=settings)
    assert torch.load(path, weights_only=True)["provenance"] == stamp(settings)
    assert read_slide_embeddings(path).slide_ids == ["s1"]
