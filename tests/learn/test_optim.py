from __future__ import annotations

import copy

import torch
import torchvision
from fastai.optimizer import Adam
from torch import nn

from petclf import quick_learner
from petclf.learn.optim import fused_adam, load_opt_state, opt_state

from ..conftest import TINY


def _steps(model: nn.Module, opt, n: int = 5) -> None:
    torch.manual_seed(1)
    for _ in range(n):
        x = torch.randn(4, 6)
        model(x).pow(2).mean().backward()
        opt.step()
        opt.zero_grad()


def test_fused_adam_takes_the_same_steps_as_fastai_adam():
    torch.manual_seed(0)
    start = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 2))
    ours, theirs = copy.deepcopy(start), copy.deepcopy(start)
    _steps(ours, fused_adam(list(ours.parameters()), lr=1e-2))
    _steps(theirs, Adam(list(theirs.parameters()), lr=1e-2))  # fastai: eps 1e-5, betas .9/.99, true wd .01
    for a, b, s in zip(ours.parameters(), theirs.parameters(), start.parameters()):
        assert not torch.equal(a, s)  # the steps moved the weights
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_frozen_body_keeps_its_weights_but_trains_batchnorm(pets_dir, tmp_path):
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    learn = quick_learner(pets_dir, **{**TINY, "pretrained": True}, weights=tmp_path / "r18.pth")
    conv, bn = learn.model[0][0].weight, learn.model[0][1].weight
    conv_before, bn_before = conv.detach().clone(), bn.detach().clone()
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(1, 1e-2)
    assert torch.equal(conv, conv_before)
    assert not torch.equal(bn, bn_before)  # fastai's train_bn: BatchNorm learns in the frozen phase


def test_optimizer_state_round_trips_through_plain_values():
    model = nn.Linear(3, 2)
    opt = fused_adam([list(model.parameters())], lr=1e-3)
    model(torch.randn(2, 3)).sum().backward()
    opt.step()
    saved = opt_state(opt)
    restored = fused_adam([list(model.parameters())], lr=1e-3)
    as_checkpointed = {**saved, "param_groups": [{**g, "betas": list(g["betas"])} for g in saved["param_groups"]]}
    assert load_opt_state(restored, as_checkpointed)
    assert restored.hypers == opt.hypers
    for p in model.parameters():
        torch.testing.assert_close(restored.opt.state[p]["exp_avg"], opt.opt.state[p]["exp_avg"])


def test_state_of_another_optimizer_kind_is_refused_not_misloaded():
    model = nn.Linear(3, 2)
    fastai_opt = Adam(list(model.parameters()), lr=1e-3)
    model(torch.randn(2, 3)).sum().backward()
    fastai_opt.step()
    ours = fused_adam([list(model.parameters())], lr=1e-3)
    assert not load_opt_state(ours, opt_state(fastai_opt))  # e.g. a checkpoint from an older petclf
    assert len(ours.opt.state) == 0
