"""Audit parts that stand alone: copy groups and out-of-fold heads, on arrays (no images, no training)."""
from __future__ import annotations

import numpy as np

from petclf.audit.duplicates import _groups
from petclf.audit.oof import probabilities_from_features


def test_copy_pairs_join_into_groups_through_chains():
    roots = _groups(7, [(0, 3), (3, 5), (1, 6), (5, 0)])
    same = {frozenset(np.nonzero(roots == r)[0].tolist()) for r in set(roots.tolist())}
    assert same == {frozenset({0, 3, 5}), frozenset({1, 6}), frozenset({2}), frozenset({4})}
    assert _groups(0, []).shape == (0,) and len(set(_groups(3, []).tolist())) == 3


def test_out_of_fold_heads_never_see_their_fold_and_keep_absent_classes_at_zero():
    rng = np.random.default_rng(0)
    codes = np.array([0] * 12 + [2] * 12 + [3])  # class 1 has no image; class 3 one, in fold 0 only
    features = rng.normal(size=(len(codes), 4)) + codes[:, None] * 3.0
    fold = np.arange(len(codes)) % 3
    fold[-1] = 0
    probs = probabilities_from_features(features, codes, 4, fold, seed=0)
    assert probs.shape == (25, 4)
    assert np.allclose(probs.sum(axis=1), 1.0)
    assert (probs[:, 1] == 0).all()
    assert probs[-1, 3] == 0  # its fold's head never saw class 3
    assert (probs[:12].argmax(axis=1) == 0).mean() > 0.8 and (probs[12:24].argmax(axis=1) == 2).mean() > 0.8


def test_popcount_without_numpy_2_counts_as_bitwise_count_does(monkeypatch):
    import petclf.audit.duplicates as duplicates  # noqa: PLC0415

    rng = np.random.default_rng(0)
    x = rng.integers(0, 2**63, size=(5, 7), dtype=np.uint64) ^ rng.integers(0, 2, size=(5, 7), dtype=np.uint64) << 63
    x[0, 0], x[0, 1] = 0, np.iinfo(np.uint64).max
    expected = np.array([[bin(int(v)).count("1") for v in row] for row in x])
    assert (duplicates.popcount(x) == expected).all()
    monkeypatch.delattr(np, "bitwise_count", raising=False)  # as on NumPy 1.x
    assert (duplicates.popcount(x) == expected).all() and duplicates.popcount(x).dtype == np.uint8
    assert (duplicates.popcount(x[:, ::2]) == expected[:, ::2]).all()  # a strided view
