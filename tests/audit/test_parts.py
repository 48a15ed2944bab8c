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


def _two_cluster_class(seed: int = 0):
    """Class 0 in two clusters (around e0 and e1), class 1 around e2, and 4 foreign embeddings between the
    clusters of class 0 (around e0 + e1 + e5), which its centroid lies near."""
    rng = np.random.default_rng(seed)
    centres = np.repeat(np.eye(8)[[0, 1, 2]], 40, axis=0)
    foreign = np.repeat((np.eye(8)[0] + np.eye(8)[1] + 0.7 * np.eye(8)[5])[None], 4, axis=0)
    features = np.r_[centres, foreign] * 5 + rng.normal(scale=0.3, size=(124, 8))
    codes = np.r_[[0] * 80, [1] * 40, [0] * 4]
    return features, codes, np.r_[np.zeros(120, bool), np.ones(4, bool)]


def test_knn_distances_find_foreign_images_a_class_centroid_hides():
    from petclf.audit.oof import centroid_distances, knn_distances  # noqa: PLC0415

    features, codes, foreign = _two_cluster_class()
    knn = knn_distances(features, k=5)
    assert set(np.argsort(-knn)[:4]) == set(np.nonzero(foreign)[0])
    centroid = centroid_distances(features, codes, 2)
    assert not set(np.argsort(-centroid)[:4]) & set(np.nonzero(foreign)[0])  # why the audit moved to knn


def test_knn_distances_leave_each_image_out_of_its_own_neighbours():
    from petclf.audit.oof import knn_distances  # noqa: PLC0415

    features, _, _ = _two_cluster_class()
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    cos = 1 - unit @ unit.T
    np.fill_diagonal(cos, np.inf)
    expected = np.sort(cos, axis=1)[:, :3].mean(1)
    np.testing.assert_allclose(knn_distances(features, k=3, chunk=7), expected, atol=1e-5)
    bank = features[:60]
    np.testing.assert_allclose(knn_distances(features[60:], bank=bank, k=3),
                               np.sort(1 - unit[60:] @ unit[:60].T, axis=1)[:, :3].mean(1), atol=1e-5)
