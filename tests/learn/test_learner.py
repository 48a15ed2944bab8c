from __future__ import annotations

import math

import pytest
import torch
import torchvision

from petclf import quick_learner, train
from petclf.learn import run_settings
from petclf.core.errors import UsageError

from ..conftest import TINY


def test_quick_learner_on_pets_layout(pets_dir):
    learn = quick_learner(pets_dir, **TINY)
    spec = run_settings(learn)
    assert spec.classes == ("Egyptian_Mau", "american_pit_bull_terrier", "pug")
    assert spec.layout == "pets" and spec.device == "cpu"
    xb, yb = learn.dls.one_batch()
    assert xb.shape == (8, 3, 32, 32)
    assert [m.__name__ for m in learn.metrics.attrgot("func")] == ["error_rate", "accuracy"]


def test_from_scratch_trains_all_layers_and_records_history(pets_dir):
    learn = quick_learner(pets_dir, **TINY)
    result = train(learn, epochs=2, freeze_epochs=1, lr=1e-2, progress=False)
    assert list(result.history.phase) == ["unfrozen", "unfrozen"]  # no frozen phase for a random body
    assert list(result.history.columns) == ["epoch", "phase", "train_loss", "valid_loss", "error_rate",
                                            "accuracy", "seconds"]
    assert all(math.isfinite(v) for v in result.history.valid_loss)
    # The restored weights are the best epoch's: validating again gives its error rate.
    assert float(learn.validate()[1]) == pytest.approx(result.history.error_rate.min(), abs=1e-6)


def test_pretrained_body_is_fine_tuned_frozen_first(pets_dir, tmp_path):
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    options = {**TINY, "pretrained": True}
    learn = quick_learner(pets_dir, weights=tmp_path / "r18.pth", **options)
    assert not next(learn.model[0].parameters()).requires_grad
    result = train(learn, epochs=1, freeze_epochs=1, lr=1e-3, progress=False)
    assert list(result.history.phase) == ["frozen", "unfrozen"]
    # Epochs are numbered across both phases; the kept epoch is the unfrozen one.
    assert list(result.history.epoch) == [1, 2] and result.best_epoch == 2


def test_discriminative_learning_rates_reach_each_layer_group(pets_dir):
    learn = quick_learner(pets_dir, **TINY)
    learn.unfreeze()
    with learn.no_bar(), learn.no_logging():
        learn.fit_one_cycle(1, slice(1e-6, 1e-4))
    lrs = [h["lr"] for h in learn.opt.hypers]
    assert len(lrs) == 3
    assert lrs[0] < lrs[1] < lrs[2]
    assert lrs[2] / lrs[0] == pytest.approx(100, rel=1e-3)


def test_lr_find_returns_a_positive_suggestion(pets_dir):
    from petclf import find_lr

    learn = quick_learner(pets_dir, **TINY)
    lr = find_lr(learn, progress=False)
    assert 1e-7 < lr < 10
    assert len(learn.recorder.lrs) > 5


def test_bf16_precision_on_cpu_adds_autocast(pets_dir):
    learn = quick_learner(pets_dir, precision="bf16", **TINY)
    assert run_settings(learn).precision == "bf16"
    preds, _ = learn.get_preds(ds_idx=1)
    assert preds.dtype == torch.float32  # losses and metrics stay fp32


@pytest.mark.parametrize("bad", [{"size": 0}, {"bs": -1}])
def test_bad_sizes_are_refused_before_work(pets_dir, bad):
    with pytest.raises(UsageError, match="positive integer"):
        quick_learner(pets_dir, **{**TINY, **bad})


def test_cached_and_decoded_pipelines_give_the_same_batches(pets_dir):
    cached = quick_learner(pets_dir, cache=True, **TINY)
    decoded = quick_learner(pets_dir, cache=False, **TINY)
    (xc, yc), (xd, yd) = cached.dls.valid.one_batch(), decoded.dls.valid.one_batch()
    assert torch.equal(yc, yd)
    assert torch.allclose(xc, xd, atol=1e-5)
    # fastai idioms that take file paths keep working on a cached learner.
    label, _, probs = cached.predict(pets_dir / "pug_1.jpg")
    assert label in cached.dls.vocab and len(probs) == 3


def test_frozen_epochs_on_cached_features_train_only_the_head(pets_dir, tmp_path):
    from petclf.learn.features import cache_features, train_head

    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    learn = quick_learner(pets_dir, weights=tmp_path / "r18.pth", precision="fp32", **{**TINY, "pretrained": True})
    body_before = {k: v.clone() for k, v in learn.model[0].state_dict().items()}
    head_before = {k: v.clone() for k, v in learn.model[1].state_dict().items()}
    features = cache_features(learn, mirror=True)
    assert len(features.x_train) == 2 * len(learn.dls.train_ds)  # each training image and its mirror image
    head_learn = train_head(learn, features, 2, 1e-2, show_bar=False)
    assert all(torch.equal(v, learn.model[0].state_dict()[k]) for k, v in body_before.items())
    assert not all(torch.equal(v, learn.model[1].state_dict()[k]) for k, v in head_before.items())
    # The head trained on cached features scores the same as the whole network on images.
    with head_learn.no_bar(), learn.no_bar():
        assert float(head_learn.validate()[0]) == pytest.approx(float(learn.validate()[0]), rel=1e-4)


def test_fine_tune_without_feature_cache_uses_fastai_frozen_fit(pets_dir, tmp_path):
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    learn = quick_learner(pets_dir, weights=tmp_path / "r18.pth", **{**TINY, "pretrained": True})
    result = train(learn, epochs=1, freeze_epochs=1, lr=1e-3, progress=False, feature_cache=False)
    assert list(result.history.phase) == ["frozen", "unfrozen"]


def test_callbacks_given_to_train_see_every_epoch_of_every_phase(pets_dir, tmp_path):
    from fastai.callback.core import Callback

    class Record(Callback):
        def __init__(self):
            self.epochs = []

        def after_epoch(self):
            self.epochs.append(type(self.learn.model).__name__ + ":" + str(len(self.learn.model)))

    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "r18.pth")
    learn = quick_learner(pets_dir, weights=tmp_path / "r18.pth", **{**TINY, "pretrained": True})
    record = Record()
    train(learn, epochs=2, freeze_epochs=1, lr=1e-3, patience=0, progress=False, cbs=[record])
    assert len(record.epochs) == 3  # one frozen epoch (on the head-only learner), two unfrozen
    assert record.epochs[0] != record.epochs[1] == record.epochs[2] == "Sequential:2"


def test_quick_learner_defaults_are_train_options_defaults():
    """One source of truth: every setting quick_learner shares with TrainOptions takes its value from there."""
    import inspect
    from dataclasses import fields

    from petclf import TrainOptions
    from petclf.core.options import UNSET, resolve_options

    params = inspect.signature(quick_learner).parameters
    shared = {name for name, p in params.items() if p.default is UNSET}
    assert shared >= {"arch", "size", "bs", "valid_pct", "seed", "layout", "cache", "label_delim", "balance"}
    resolved = resolve_options(None, "quick_learner", **{name: UNSET for name in shared})
    assert resolved == TrainOptions()  # nothing given: TrainOptions' defaults
    assert {"cache" if f.name == "image_cache" else f.name for f in fields(TrainOptions)} >= shared


def test_options_and_keywords_give_the_same_learner_and_keywords_win(pets_dir):
    from petclf import TrainOptions

    by_keywords = run_settings(quick_learner(pets_dir, **TINY, seed=3, valid_pct=0.3))
    by_options = run_settings(quick_learner(pets_dir, options=TrainOptions(**TINY, seed=3, valid_pct=0.3)))
    assert by_options == by_keywords
    mixed = run_settings(quick_learner(pets_dir, options=TrainOptions(**{**TINY, "size": 64}, seed=3), size=32,
                                   valid_pct=0.3))
    assert mixed == by_keywords  # size=32 given beside options won over its 64


def test_train_reads_its_settings_from_options(pets_dir):
    from petclf import TrainOptions

    learn = quick_learner(pets_dir, **TINY)
    result = train(learn, options=TrainOptions(epochs=2, lr=3e-3, patience=0), epochs=1, progress=False)
    assert (result.lr, len(result.history)) == (3e-3, 1)  # lr from options, epochs=1 given beside them


def test_settings_that_are_no_option_are_refused_by_name(tmp_path):
    from petclf import TrainOptions, train_folder

    with pytest.raises(UsageError, match=r"train_folder got unknown settings archh"):
        train_folder(tmp_path, out=tmp_path / "o", archh="resnet18")
    with pytest.raises(UsageError, match=r"options must be a TrainOptions"):
        train_folder(tmp_path, out=tmp_path / "o", options={"arch": "resnet18"})
    assert TrainOptions().arch == "resnet34"
