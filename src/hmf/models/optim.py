"""Optimisers and learning-rate schedules from config dicts.

Optimiser spec: ``{"name": "adam"|"adamw"|"radam"|"sgd", "lr", "weight_decay", "betas"?,
"momentum"?, "lookahead": {"k": 5, "alpha": 0.5} | null}``.
Scheduler spec: ``{"name": "none"|"cosine"|"step"|"multistep", "eta_min"?, "step_size"?,
"milestones"?, "gamma"?}``; schedulers are stepped once per epoch.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch.optim import Optimizer, lr_scheduler

OPTIMIZERS = {
    "adam": torch.optim.Adam,
    "adamw": torch.optim.AdamW,
    "radam": torch.optim.RAdam,
    "sgd": torch.optim.SGD,
}
OPTIMIZER_KEYS = {"name", "lr", "weight_decay", "betas", "momentum", "lookahead"}
SCHEDULER_KEYS = {"name", "eta_min", "step_size", "milestones", "gamma"}


class Lookahead(Optimizer):
    """Lookahead (Zhang et al. 2019) around any optimiser: every ``k`` inner steps the slow
    weights move ``alpha`` of the way to the fast weights, and the fast weights restart there.

    ``param_groups`` is the inner optimiser's, so LR schedulers act on the inner optimiser.
    """

    def __init__(self, optimizer: Optimizer, k: int = 5, alpha: float = 0.5):
        if k < 1 or not 0.0 < alpha <= 1.0:
            raise ValueError(f"lookahead needs k >= 1 and 0 < alpha <= 1, got k={k}, alpha={alpha}")
        self.optimizer, self.k, self.alpha = optimizer, k, alpha
        super().__init__([p for g in optimizer.param_groups for p in g["params"]], dict(optimizer.defaults))
        self.param_groups = optimizer.param_groups
        self.defaults = optimizer.defaults
        self.steps = 0
        # Slow weights are taken at the first step, after the model has moved to its device.
        self.slow: list[torch.Tensor] | None = None

    def _params(self) -> list[torch.Tensor]:
        return [p for g in self.param_groups for p in g["params"]]

    @torch.no_grad()
    def step(self, closure=None):
        if self.slow is None:
            self.slow = [p.detach().clone() for p in self._params()]
        loss = self.optimizer.step(closure)
        self.steps += 1
        if self.steps % self.k == 0:
            for fast, slow in zip(self._params(), self.slow):
                slow.add_(fast - slow, alpha=self.alpha)
                fast.copy_(slow)
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        slow = None if self.slow is None else [s.clone() for s in self.slow]
        return {"inner": self.optimizer.state_dict(), "slow": slow, "steps": self.steps}

    def load_state_dict(self, state_dict: dict) -> None:
        self.optimizer.load_state_dict(state_dict["inner"])
        self.param_groups = self.optimizer.param_groups
        saved = state_dict["slow"]
        params = self._params()
        if saved is not None and len(saved) != len(params):
            raise ValueError(
                f"lookahead state has {len(saved)} slow weights, the optimiser has {len(params)} parameters"
            )
        self.slow = None if saved is None else [s.detach().to(p.device, p.dtype).clone() for s, p in zip(saved, params)]
        self.steps = int(state_dict["steps"])


def build_optimizer(params: Iterable[torch.Tensor], spec: dict) -> Optimizer:
    unknown = set(spec) - OPTIMIZER_KEYS
    if unknown:
        raise ValueError(f"optimizer spec: unknown keys {sorted(unknown)} (allowed: {sorted(OPTIMIZER_KEYS)})")
    name = str(spec.get("name", "adam")).lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer spec: unknown optimizer {name!r}, choose one of {sorted(OPTIMIZERS)}")
    if "lr" not in spec:
        raise ValueError("optimizer spec: 'lr' is required")
    kwargs = {"lr": float(spec["lr"]), "weight_decay": float(spec.get("weight_decay", 0.0))}
    if spec.get("betas") is not None and name != "sgd":
        kwargs["betas"] = tuple(float(b) for b in spec["betas"])
    if name == "sgd":
        kwargs["momentum"] = float(spec.get("momentum", 0.9))
    params = [p for p in params if p.requires_grad]
    if not params:
        raise ValueError("optimizer: no trainable parameters")
    optimizer = OPTIMIZERS[name](params, **kwargs)
    lookahead = spec.get("lookahead")
    if lookahead:
        optimizer = Lookahead(optimizer, k=int(lookahead.get("k", 5)), alpha=float(lookahead.get("alpha", 0.5)))
    return optimizer


def build_scheduler(optimizer: Optimizer, spec: dict | None, epochs: int) -> lr_scheduler.LRScheduler:
    """An epoch-wise LR schedule; ``none`` gives a constant schedule so callers can always step it."""
    spec = spec or {"name": "none"}
    unknown = set(spec) - SCHEDULER_KEYS
    if unknown:
        raise ValueError(f"scheduler spec: unknown keys {sorted(unknown)} (allowed: {sorted(SCHEDULER_KEYS)})")
    name = str(spec.get("name", "none")).lower()
    target = optimizer.optimizer if isinstance(optimizer, Lookahead) else optimizer
    if name == "none":
        return lr_scheduler.ConstantLR(target, factor=1.0, total_iters=0)
    if name == "cosine":
        return lr_scheduler.CosineAnnealingLR(
            target, T_max=max(1, int(epochs)), eta_min=float(spec.get("eta_min", 0.0))
        )
    if name == "step":
        return lr_scheduler.StepLR(target, step_size=int(spec["step_size"]), gamma=float(spec.get("gamma", 0.1)))
    if name == "multistep":
        milestones = [int(m) for m in spec["milestones"]]
        return lr_scheduler.MultiStepLR(target, milestones=milestones, gamma=float(spec.get("gamma", 0.1)))
    raise ValueError(f"scheduler spec: unknown scheduler {name!r}, choose none, cosine, step or multistep")
