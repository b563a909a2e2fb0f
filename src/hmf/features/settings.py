"""The ``features:`` config section as typed settings: which network computes the features
(:class:`EncoderSettings`) and how it runs (:class:`RuntimeSettings`).

Both are built with :mod:`hmf.settings` from the section as the schema
(``config/schema/features.schema.yaml``) fills and checks it: the schema holds every default
and range, these classes none. The section's job-layout keys (:data:`WORKFLOW_KEYS`) are read
by the rules, not by the extraction.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from hmf.settings import build, section

if TYPE_CHECKING:
    import torch

# Patches per batch on the CPU, per stream and precision: fp32 is fastest at 2 (fits a core's
# L2 cache better than 4 or 8); bf16 kernels want larger batches.
CPU_BATCH = {"fp32": 2, "bf16": 8}
CUDA_BATCH = 128
# Keys of the `features:` section that the workflow reads (job layout), not the extraction.
WORKFLOW_KEYS = ("slides_per_job", "precomputed_dir")


@dataclasses.dataclass(frozen=True)
class EncoderSettings:
    """The ``features:`` keys that decide which network computes the features."""

    encoder: str  # resnet50_trunc | timm:<arch> | a registered name
    weights: str  # imagenet | random | path of a state dict
    checkpoint: str | None  # path of a state dict; takes precedence over weights
    allow_download: bool
    seed: int  # for weights: random
    input_size: int | None  # None: the encoder's own (224 for resnet50_trunc)
    mean: tuple[float, ...] | None
    std: tuple[float, ...] | None
    model_kwargs: Mapping[str, Any]  # timm.create_model keyword arguments

    @property
    def weights_source(self) -> str:
        return self.checkpoint if self.checkpoint else self.weights


@dataclasses.dataclass(frozen=True)
class RuntimeSettings:
    """The ``features:`` keys that decide where and how the encoder runs (not what it computes,
    except ``precision``)."""

    device: str  # auto | cpu | cuda | cuda:<i>
    batch_size: int | str  # auto: CPU_BATCH per CPU stream, CUDA_BATCH on CUDA
    num_workers: int | str  # reader processes; auto: none on CPU (streams read), up to 8 on CUDA
    num_threads: int  # torch CPU threads; 0: the job's threads / all cores
    cpu_streams: int | str  # CPU: concurrent batches; auto: one per thread
    cpu_optimize: str  # auto | jit | none: TorchScript-freeze the model on CPU
    precision: str  # fp32 | bf16 | auto
    progress_interval_s: float

    def batch_for(self, device: torch.device, precision: str = "fp32") -> int:
        if self.batch_size != "auto":
            return int(self.batch_size)
        return CUDA_BATCH if device.type == "cuda" else CPU_BATCH[precision]


def _keys(cls) -> set[str]:
    return {f.name for f in dataclasses.fields(cls)}


def resolve_features(given: Mapping[str, Any] | None) -> tuple[EncoderSettings, RuntimeSettings]:
    """The ``features:`` section (whole, in part, or None) filled and checked by the schema, as
    the encoder's and the runtime's settings. Raises ConfigError naming a bad or unknown key."""
    filled = section("features", given)
    encoder_keys, runtime_keys = _keys(EncoderSettings), _keys(RuntimeSettings)
    return (
        build(EncoderSettings, {k: v for k, v in filled.items() if k in encoder_keys}, "features"),
        build(RuntimeSettings, {k: v for k, v in filled.items() if k in runtime_keys}, "features"),
    )


def encoder_settings(**given: Any) -> EncoderSettings:
    """:class:`EncoderSettings` of ``features:`` keys given as arguments, the rest the schema's defaults."""
    return resolve_features(given)[0]


def runtime_settings(**given: Any) -> RuntimeSettings:
    """:class:`RuntimeSettings` of ``features:`` keys given as arguments, the rest the schema's defaults."""
    return resolve_features(given)[1]
