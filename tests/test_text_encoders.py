"""Text encoders: a tiny T5 through the flan_t5_small code path, the real MiniLM, the bank file."""

from __future__ import annotations

import string

import pytest
import torch

from hmf.tasks import TASKS
from hmf.text.bank import load_bank
from hmf.text.embeddings import encode_prompts, load_text_bank, prompt_class_index
from hmf.text.encoders import build_text_encoder, mean_pool
from hmf.text.prompts import labelset_classes, make_prompts
from hmf.text.settings import text_settings

WORDS = "the a of in lymph node tumour cells cluster isolated carcinoma glands sheets with no".split()


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory):
    """A randomly initialised 2-layer T5 encoder and a Unigram tokenizer, saved like a hub folder."""
    from transformers import T5Config, T5EncoderModel, T5Tokenizer

    folder = tmp_path_factory.mktemp("tiny_t5")
    vocab = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), ("▁", -3.0)]
    vocab += [("▁" + w, -2.0) for w in WORDS]
    vocab += [(c, -5.0) for c in string.ascii_letters + string.digits + string.punctuation]
    tokenizer = T5Tokenizer(vocab=vocab, extra_ids=0)
    tokenizer.save_pretrained(folder)
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=24,
        d_kv=8,
        d_ff=48,
        num_layers=2,
        num_heads=3,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
    )
    T5EncoderModel(config).save_pretrained(folder)
    return folder


def t5_config(folder):
    return text_settings({"encoders": {"flan_t5_small": {"path_or_id": str(folder)}}, "device": "cpu", "batch_size": 4})


def test_tiny_t5_loads_through_the_flan_t5_path(tiny_t5):
    encoder = build_text_encoder("flan_t5_small", t5_config(tiny_t5))
    assert encoder.dim == 24 and not encoder.model.training
    assert all(not p.requires_grad for p in encoder.model.parameters())
    texts = ["isolated tumour cells", "sheets of carcinoma cells with glands in the lymph node", "no tumour"]
    emb = encoder.encode(texts)
    assert emb.shape == (3, 24) and emb.dtype == torch.float32
    # the pooled vector is the mean of the token states of the unpadded sentence
    batch = encoder.tokenizer([texts[0]], return_tensors="pt")
    with torch.no_grad():
        hidden = encoder.model(**batch).last_hidden_state[0]
    torch.testing.assert_close(emb[0], hidden.mean(dim=0), atol=1e-5, rtol=1e-5)


def test_padding_does_not_change_an_embedding(tiny_t5):
    encoder = build_text_encoder("flan_t5_small", t5_config(tiny_t5))
    short = "isolated tumour cells"
    alone = encoder.encode([short])[0]
    padded_batch = encoder.tokenizer(
        [short, "a lymph node with sheets of carcinoma cells and glands " * 3], padding=True, return_tensors="pt"
    )
    assert (padded_batch["attention_mask"][0] == 0).sum() > 10  # the short one really is padded
    with_long = encoder.encode([short, "a lymph node with sheets of carcinoma cells and glands " * 3])[0]
    torch.testing.assert_close(alone, with_long, atol=1e-5, rtol=1e-5)
    # a plain mean over every position (padding included) would differ
    with torch.no_grad():
        hidden = encoder.model(**padded_batch).last_hidden_state[0]
    assert not torch.allclose(hidden.mean(dim=0), alone, atol=1e-3)


def test_mean_pool_ignores_masked_positions():
    hidden = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    torch.testing.assert_close(mean_pool(hidden, mask), torch.tensor([[2.0, 3.0]]))


def test_missing_t5_weights_say_what_to_download(tmp_path):
    empty = tmp_path / "flan-t5-small"
    empty.mkdir()
    with pytest.raises(FileNotFoundError) as err:
        build_text_encoder("flan_t5_small", t5_config(empty))
    message = str(err.value)
    for word in (
        "google/flan-t5-small",
        "config.json",
        "spiece.model",
        "model.safetensors",
        str(empty),
        "text.encoders.flan_t5_small.path_or_id",
    ):
        assert word in message
    with pytest.raises(FileNotFoundError, match="hf download google/flan-t5-small"):
        build_text_encoder("flan_t5_small", text_settings({}))  # hub id, offline, not cached


def test_unknown_encoder_is_named():
    with pytest.raises(ValueError, match="'clip'.*configured"):
        build_text_encoder("clip", text_settings({}))


def test_text_bank_file_contract(tiny_t5, tmp_path):
    classes = labelset_classes(TASKS["camelyon17"], "camelyon17_patient")
    prompts = tmp_path / "prompts" / "camelyon17_patient.json"
    make_prompts(prompts, "camelyon17_patient", classes, text_settings({}))
    out = tmp_path / "text" / "camelyon17_patient" / "flan_t5_small.pt"
    encode_prompts(prompts, out, "flan_t5_small", t5_config(tiny_t5))
    bank = load_text_bank(out)
    descriptions = load_bank("camelyon17_patient", classes)
    expected = [t for c in classes for t in descriptions[c]]
    assert bank["prompts"] == expected
    assert bank["classes"] == [c for c in classes for _ in descriptions[c]]
    assert bank["class_names"] == list(classes)
    assert bank["embeddings"].dtype == torch.float32 and bank["embeddings"].shape == (len(expected), 24)
    assert bank["encoder"] == "flan_t5_small" and bank["dim"] == 24
    index = prompt_class_index(bank)
    assert index.tolist() == [classes.index(c) for c in bank["classes"]]
    assert sorted(p.name for p in out.parent.iterdir()) == ["flan_t5_small.pt"]


@pytest.fixture(scope="module")
def minilm():
    return build_text_encoder("minilm", text_settings({"device": "cpu"}))


def test_minilm_is_offline_and_384d(minilm):
    emb = minilm.encode(["isolated tumour cells in a lymph node"])
    assert emb.shape == (1, 384) and minilm.dim == 384
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(1), atol=1e-4, rtol=0)


LABELSETS = sorted({ls: task for task in TASKS.values() for ls in task.labelsets.values()}.items())


@pytest.mark.parametrize("labelset, task", LABELSETS, ids=[ls for ls, _ in LABELSETS])
def test_minilm_places_descriptions_of_a_class_together(minilm, labelset, task):
    classes = labelset_classes(task, labelset)
    bank = load_bank(labelset, classes)
    texts = [t for c in classes for t in bank[c]]
    owner = torch.tensor([i for i, c in enumerate(classes) for _ in bank[c]])
    emb = torch.nn.functional.normalize(minilm.encode(texts), dim=1)
    sim = emb @ emb.T
    for i, name in enumerate(classes):
        mine = owner == i
        intra = sim[mine][:, mine][~torch.eye(int(mine.sum()), dtype=torch.bool)].mean()
        inter = sim[mine][:, ~mine].mean()
        assert intra > inter, f"{labelset} {name}: intra-class cosine {intra:.3f} <= inter-class {inter:.3f}"
