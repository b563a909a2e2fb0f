"""Optimiser/scheduler builders, Lookahead, and the registry's default recipes."""

from __future__ import annotations

import copy

import pytest
import torch

from hmf.models import (
    DEFAULTS,
    PATIENT_MODELS,
    SLIDE_MODELS,
    Lookahead,
    build_optimizer,
    build_patient_model,
    build_scheduler,
    build_slide_model,
    training_defaults,
)

RECIPE_KEYS = {"model", "optimizer", "scheduler", "epochs", "patience", "grad_clip", "accumulation", "mixed_precision"}


def test_every_model_has_a_complete_recipe_that_builds():
    for level, names in (("slide", SLIDE_MODELS), ("patient", PATIENT_MODELS)):
        assert set(DEFAULTS[level]) == set(names)
        for name in names:
            recipe = training_defaults(name, level)
            assert set(recipe) == RECIPE_KEYS, name
            if level == "slide":
                model = build_slide_model(name, 64, 3, text_dim=16 if name == "hmf" else None)
            else:
                model = build_patient_model(name, 64, 5)
            optimizer = build_optimizer(model.parameters(), recipe["optimizer"])
            scheduler = build_scheduler(optimizer, recipe["scheduler"], recipe["epochs"])
            optimizer.step()
            scheduler.step()


@pytest.mark.parametrize(
    "name,optim,lr,wd",
    [
        ("acmil", torch.optim.AdamW, 1e-4, 1e-5),
        ("dsmil", torch.optim.Adam, 1e-4, 1e-3),
        ("dtfd_afs", torch.optim.Adam, 1e-4, 1e-4),
        ("abmil", torch.optim.Adam, 1e-4, 1e-5),
        ("hmf", torch.optim.AdamW, 1e-5, 1e-5),
        ("meanpool", torch.optim.Adam, 1e-4, 1e-5),
    ],
)
def test_paper_recipes(name, optim, lr, wd):
    recipe = training_defaults(name)
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))], recipe["optimizer"])
    assert type(opt) is optim
    assert opt.param_groups[0]["lr"] == lr and opt.param_groups[0]["weight_decay"] == wd


def test_recipe_details():
    assert training_defaults("acmil")["epochs"] == 50 and training_defaults("acmil")["scheduler"]["name"] == "cosine"
    assert training_defaults("dsmil")["scheduler"]["name"] == "cosine"
    for variant in ("dtfd_maxs", "dtfd_maxmins", "dtfd_afs"):
        recipe = training_defaults(variant)
        assert recipe["grad_clip"] == 5.0 and recipe["model"]["n_pseudo_bags"] == 4
    hmf = training_defaults("hmf")
    assert hmf["epochs"] == 200 and hmf["accumulation"] == 5
    assert training_defaults("acmil")["model"]["mask_drop"] == 0.6
    assert training_defaults("acmil")["model"]["n_branches"] == 5
    recipe = training_defaults("abmil")
    recipe["optimizer"]["lr"] = 1.0
    assert training_defaults("abmil")["optimizer"]["lr"] == 1e-4  # callers get copies
    with pytest.raises(ValueError, match="unknown patient model"):
        training_defaults("transmil", "patient")


def test_transmil_uses_radam_with_lookahead():
    recipe = training_defaults("transmil")
    opt = build_optimizer([torch.nn.Parameter(torch.zeros(2))], recipe["optimizer"])
    assert isinstance(opt, Lookahead) and isinstance(opt.optimizer, torch.optim.RAdam)
    assert opt.param_groups[0]["lr"] == 2e-4 and opt.param_groups[0]["weight_decay"] == 1e-5


def test_lookahead_interpolates_every_k_steps():
    w = torch.nn.Parameter(torch.tensor([1.0]))
    inner = torch.optim.SGD([w], lr=0.1)
    opt = Lookahead(inner, k=2, alpha=0.5)
    for step in range(2):
        opt.zero_grad()
        (w * 1.0).sum().backward()  # gradient 1: each SGD step subtracts 0.1
        opt.step()
        if step == 0:
            assert torch.allclose(w.detach(), torch.tensor([0.9]))
    # fast reached 0.8, slow moves halfway from 1.0: 0.9, and fast restarts there
    assert torch.allclose(w.detach(), torch.tensor([0.9]))
    assert torch.allclose(opt.slow[0], torch.tensor([0.9]))


def test_lookahead_state_round_trip_and_scheduler():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    spec = {"name": "radam", "lr": 1e-2, "weight_decay": 1e-5, "lookahead": {"k": 3, "alpha": 0.5}}
    opt = build_optimizer(model.parameters(), spec)
    sched = build_scheduler(opt, {"name": "cosine"}, epochs=4)
    for _ in range(4):
        opt.zero_grad()
        model(torch.randn(5, 3)).pow(2).sum().backward()
        opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] < 1e-2  # the schedule acts on the inner optimiser's groups
    state = copy.deepcopy(opt.state_dict())  # as if saved to a checkpoint (state_dict shares tensors)
    clone = torch.nn.Linear(3, 2)
    clone.load_state_dict(model.state_dict())
    opt2 = build_optimizer(clone.parameters(), spec)
    opt2.load_state_dict(state)
    assert opt2.steps == 4 and all(torch.equal(a, b) for a, b in zip(opt.slow, opt2.slow))
    x = torch.randn(5, 3)
    for o, m in ((opt, model), (opt2, clone)):
        o.zero_grad()
        m(x).pow(2).sum().backward()
        o.step()
    assert torch.equal(model.weight, clone.weight)


def test_schedulers():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = build_optimizer([p], {"name": "adam", "lr": 1.0})
    sched = build_scheduler(opt, {"name": "multistep", "milestones": [2], "gamma": 0.2}, epochs=5)
    lrs = []
    for _ in range(3):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs == pytest.approx([1.0, 0.2, 0.2])
    opt = build_optimizer([p], {"name": "adam", "lr": 1.0})
    sched = build_scheduler(opt, None, epochs=5)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == 1.0


def test_bad_specs_are_explained():
    p = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(ValueError, match="unknown optimizer"):
        build_optimizer(p, {"name": "lamb", "lr": 1e-3})
    with pytest.raises(ValueError, match="'lr' is required"):
        build_optimizer(p, {"name": "adam"})
    with pytest.raises(ValueError, match="unknown keys"):
        build_optimizer(p, {"name": "adam", "lr": 1e-3, "decay": 1})
    opt = build_optimizer(p, {"name": "adam", "lr": 1e-3})
    with pytest.raises(ValueError, match="unknown scheduler"):
        build_scheduler(opt, {"name": "plateau"}, 10)


def test_lookahead_follows_the_model_after_a_move():
    """Slow weights are taken at the first step, so building the optimiser before ``model.to``
    (device or dtype) is fine."""
    model = torch.nn.Linear(3, 1)
    opt = build_optimizer(model.parameters(), training_defaults("transmil")["optimizer"])
    model.double()
    for _ in range(6):
        opt.zero_grad()
        model(torch.randn(4, 3, dtype=torch.float64)).sum().backward()
        opt.step()
    assert all(s.dtype == torch.float64 for s in opt.slow)
