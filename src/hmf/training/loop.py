"""The training loop shared by slide and patient models.

One bag per step, gradient accumulation, optional gradient clipping, bf16 autocast on CUDA,
early stopping on a validation metric with the best weights kept, and a resume state written
atomically after every epoch: a job killed mid-training continues from its last finished
epoch and ends with the same weights as an uninterrupted run (model, optimiser, scheduler
and random-number states are all restored).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from hmf.atomic import atomic_path, write_csv
from hmf.evaluation.metrics import metric, scores
from hmf.precision import training_autocast
from hmf.training.hparams import FitConfig, HyperParameters

log = logging.getLogger(__name__)


@dataclass
class Item:
    """One bag: the keyword inputs of the model's forward (or a function that reads them when
    the step needs them, so only one bag is in memory at a time) and the class index for the loss."""

    key: str
    label: int
    inputs: dict[str, Any] | Callable[[], dict[str, Any]]

    def load(self) -> dict[str, Any]:
        return self.inputs() if callable(self.inputs) else self.inputs


@dataclass
class FitResult:
    best_state: dict[str, torch.Tensor]
    best_epoch: int
    best_score: float
    rows: list[dict[str, float]] = field(default_factory=list)


def fingerprint(*parts: Any) -> str:
    """A stable hash of everything that defines a run, so a stale resume state is never used."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def file_stamp(path: str | Path) -> tuple[str, int, int]:
    """Name, size and modification time of a (possibly large) input file, for a fingerprint."""
    stat = Path(path).stat()
    return (Path(path).name, stat.st_size, stat.st_mtime_ns)


def file_digest(path: str | Path) -> str:
    """sha256 of a small input file's contents, for a fingerprint."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def seed_everything(seed: int) -> None:
    """Seed torch and numpy. The CPU kernels used here are deterministic, so two runs with the
    same seed give the same weights; on CUDA, attention and scatter kernels may not be."""
    torch.manual_seed(seed)
    np.random.seed(seed % (2**32))


def _to_device(inputs: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}


def _subsample(inputs: dict[str, Any], max_patches: int | None, generator: torch.Generator) -> dict[str, Any]:
    """A random subset of a large training bag's patches (features and coords together)."""
    feats = inputs.get("features")
    if max_patches is None or feats is None or feats.shape[0] <= max_patches:
        return inputs
    keep = torch.randperm(feats.shape[0], generator=generator)[:max_patches].sort().values
    out = dict(inputs, features=feats[keep])
    if out.get("coords") is not None:
        out["coords"] = out["coords"][keep]
    return out


@torch.inference_mode()
def predict(
    model: torch.nn.Module,
    items: list[Item],
    device: torch.device,
    bf16: bool = True,
    keys: tuple[str, ...] = ("logits",),
) -> dict[str, np.ndarray]:
    """Class probabilities (and any other requested outputs) for ``items``, in eval mode.

    Only the inputs reach the model: labels stay in the items and are never passed on.
    """
    model.eval()
    out: dict[str, list[np.ndarray]] = {"probs": [], **{k: [] for k in keys}}
    for item in items:
        with training_autocast(device, bf16):
            result = model(**_to_device(item.load(), device))
        logits = result["logits"].float()
        out["probs"].append(torch.softmax(logits, dim=-1).cpu().numpy())
        for key in keys:
            out[key].append(result[key].float().cpu().numpy())
    return {k: np.stack(v) if v else np.zeros((0,)) for k, v in out.items()}


def validation_scores(model, items: list[Item], context: dict, device: torch.device, bf16: bool) -> dict[str, float]:
    """Loss and every metric of :func:`hmf.evaluation.metrics.scores` on the validation bags
    (used only to select the checkpoint); NaN where a metric is undefined. Kappa is computed
    for every task, since ``training.monitor`` may name it."""
    if not items:
        return {}
    model.eval()
    losses, probs = [], []
    with torch.no_grad():
        for item in items:
            with training_autocast(device, bf16):
                result = model(**_to_device(item.load(), device))
                loss = model.loss(result, torch.tensor(item.label, device=device), context)
            losses.append(float(loss))
            probs.append(torch.softmax(result["logits"].float(), -1).cpu().numpy())
    y_true = np.array([item.label for item in items])
    probs = np.stack(probs)
    values = scores(y_true, probs.argmax(1), probs, probs.shape[-1], ordinal=True)
    return {"loss": float(np.mean(losses)), **{k: float(v[0]) for k, v in values.items()}}


def selection_score(val: dict[str, float], monitor: str) -> float:
    """The value of a validation epoch for ``training.monitor`` (larger is better): the metric,
    negated where lower is better; the loss negated. An undefined metric (kappa when truth and
    prediction are one identical class) counts as 0, its chance level."""
    if monitor == "loss":
        return -val["loss"]
    value = val[monitor]
    value = value if math.isfinite(value) else 0.0
    return value if metric(monitor).higher_is_better else -value


def fit(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    train_items: list[Item],
    val_items: list[Item],
    context: dict[str, Any],
    cfg: FitConfig,
    device: torch.device,
    state_path: str | Path,
    run_id: str,
    progress_file=None,
    on_epoch: Callable[[list[dict]], None] | None = None,
) -> FitResult:
    """Train ``model`` and return the weights of its best validation epoch."""
    state_path = Path(state_path)
    model.to(device)
    context = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in context.items()}
    shuffle = torch.Generator().manual_seed(cfg.seed)
    start_epoch, rows, bad_epochs = 0, [], 0
    best_state, best_score, best_epoch = copy.deepcopy(model.state_dict()), -math.inf, -1

    if state_path.exists():
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        if state.get("run_id") == run_id:
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            if scheduler is not None and state.get("scheduler") is not None:
                scheduler.load_state_dict(state["scheduler"])
            torch.set_rng_state(state["torch_rng"])
            shuffle.set_state(state["shuffle_rng"])
            start_epoch, rows, bad_epochs = state["epoch"] + 1, state["rows"], state["bad_epochs"]
            best_state, best_score, best_epoch = state["best_state"], state["best_score"], state["best_epoch"]
            log.info("resuming from %s after epoch %d", state_path, state["epoch"])
        else:
            log.info("ignoring %s: it belongs to a different run", state_path)

    bar = tqdm(
        range(start_epoch, cfg.epochs),
        initial=start_epoch,
        total=cfg.epochs,
        desc="epochs",
        file=progress_file,
        mininterval=5,
        disable=progress_file is None,
    )
    for epoch in bar:
        if bad_epochs >= cfg.patience and epoch >= cfg.min_epochs:
            break
        started = time.perf_counter()
        model.train()
        order = torch.randperm(len(train_items), generator=shuffle).tolist()
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for step, index in enumerate(order, start=1):
            item = train_items[index]
            inputs = _to_device(_subsample(item.load(), cfg.max_patches, shuffle), device)
            with training_autocast(device, cfg.bf16):
                result = model(**inputs)
                loss = model.loss(result, torch.tensor(item.label, device=device), context)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite training loss on bag {item.key} at epoch {epoch}")
            (loss / cfg.accumulation).backward()
            total += loss.item()
            if step % cfg.accumulation == 0 or step == len(order):
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        if scheduler is not None:
            scheduler.step()
        val = validation_scores(model, val_items, context, device, cfg.bf16)
        row = {
            "epoch": epoch,
            "train_loss": total / max(len(order), 1),
            "lr": optimizer.param_groups[0]["lr"],
            **{f"val_{k}": v for k, v in val.items()},
        }
        if val:
            score = selection_score(val, cfg.monitor)
        else:  # no validation patients: keep the last epoch
            score = float(epoch)
        if score > best_score:
            best_score, best_epoch, bad_epochs = score, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            bad_epochs += 1
        row["seconds"] = time.perf_counter() - started
        rows.append(row)
        bar.set_postfix(loss=f"{row['train_loss']:.4f}", val=f"{score:.4f}")
        log.info("epoch %d: %s", epoch, ", ".join(f"{k}={v:.4g}" for k, v in row.items() if k != "epoch"))
        with atomic_path(state_path) as tmp:
            torch.save(
                {
                    "run_id": run_id,
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": None if scheduler is None else scheduler.state_dict(),
                    "torch_rng": torch.get_rng_state(),
                    "shuffle_rng": shuffle.get_state(),
                    "rows": rows,
                    "bad_epochs": bad_epochs,
                    "best_state": best_state,
                    "best_score": best_score,
                    "best_epoch": best_epoch,
                },
                tmp,
            )
        if on_epoch is not None:
            on_epoch(rows)
    bar.close()
    return FitResult(best_state=best_state, best_epoch=best_epoch, best_score=best_score, rows=rows)


def resume_state_path(checkpoint: str | Path) -> Path:
    """The resume state of the run that writes ``checkpoint``: beside it, deleted once it is written."""
    return Path(checkpoint).with_name("resume_state.pt")


def fit_model(
    model: torch.nn.Module,
    hp: HyperParameters,
    train_items: list[Item],
    val_items: list[Item],
    context: dict[str, Any],
    device: str | torch.device,
    run_id: str,
    checkpoint: str | Path,
    train_log: str | Path,
    progress_file=None,
) -> FitResult:
    """:func:`fit` with the recipe's optimiser and scheduler, resuming from the state beside
    ``checkpoint``, the train log written after every epoch; ``model`` ends with its best weights."""
    from hmf.models.optim import build_optimizer, build_scheduler

    optimizer = build_optimizer(model.parameters(), hp.optimizer)
    scheduler = build_scheduler(optimizer, hp.scheduler, hp.fit.epochs)
    result = fit(
        model,
        optimizer,
        scheduler,
        train_items,
        val_items,
        context,
        hp.fit,
        torch.device(device),
        resume_state_path(checkpoint),
        run_id,
        progress_file=progress_file,
        on_epoch=lambda rows: write_csv(train_log, pd.DataFrame(rows)),
    )
    write_csv(train_log, pd.DataFrame(result.rows))
    model.load_state_dict(result.best_state)
    return result
