"""BatchNorm statistics recomputed for the final weights before a fit's last validation."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from petclf import quick_learner, train
from petclf.learn import batchnorm
from petclf.learn.batchnorm import refresh_batchnorm

from ..conftest import TINY


def test_statistics_become_the_plain_average_over_the_batches_and_nothing_else_changes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.BatchNorm2d(3), nn.Conv2d(3, 4, 1)).eval()
    bn = model[0]
    bn.running_mean.fill_(5.0)
    bn.running_var.fill_(9.0)
    weights = {k: v.clone() for k, v in model.state_dict().items() if "running" not in k and "num_batches" not in k}
    batches = [torch.randn(8, 3, 5, 5) * 2 + 1 for _ in range(3)]
    assert refresh_batchnorm(model, iter(batches)) == 3
    # A cumulative average of the per-batch statistics (equal batch sizes: the mean of the means).
    means = torch.stack([b.mean(dim=(0, 2, 3)) for b in batches])
    variances = torch.stack([b.var(dim=(0, 2, 3), unbiased=True) for b in batches])
    assert torch.allclose(bn.running_mean, means.mean(0), atol=1e-5)
    assert torch.allclose(bn.running_var, variances.mean(0), atol=1e-5)
    assert bn.momentum == 0.1 and not model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in weights.items())


def test_a_model_without_batchnorm_is_left_alone():
    model = nn.Sequential(nn.Conv2d(3, 4, 1))
    assert refresh_batchnorm(model, iter([torch.randn(2, 3, 4, 4)])) == 0


def test_train_refreshes_once_per_fit_before_the_last_validation(pets_dir, monkeypatch):
    calls = []
    real = batchnorm.refresh_batchnorm

    def spy(model, batches, **kw):
        calls.append(model.training)
        return real(model, batches, **kw)

    monkeypatch.setattr(batchnorm, "refresh_batchnorm", spy)
    learn = quick_learner(pets_dir, **TINY)
    result = train(learn, epochs=3, lr=1e-2, progress=False, keep_best=False)
    assert calls == [False]  # once, during validation (eval mode)
    # The last epoch's recorded validation is that of the refreshed statistics: validating again agrees.
    assert float(learn.validate()[0]) == pytest.approx(float(result.history.valid_loss.iloc[-1]), rel=1e-5)
