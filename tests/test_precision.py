"""What a device computes in: bf16 support from the CPU flags, features.precision and training.bf16."""

from __future__ import annotations

import pytest
import torch

from hmf import precision


def test_bf16_support_comes_from_the_cpu_flags(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2"})
    assert "no bf16 instructions" in precision.bf16_unsupported(cpu)
    assert precision.resolve_precision("auto", cpu, key="x.precision") == "fp32"
    with pytest.raises(ValueError, match=r"^x\.precision=bf16: this CPU"):
        precision.resolve_precision("bf16", cpu, key="x.precision")
    with precision.autocast_for(cpu, "fp32"):
        assert not torch.is_autocast_enabled("cpu")
    monkeypatch.setattr(precision, "cpu_flags", lambda: {"avx2", "amx_bf16"})
    assert precision.bf16_unsupported(cpu) is None and precision.resolve_precision("auto", cpu) == "bf16"
    with precision.autocast_for(cpu, "bf16"):
        assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16
