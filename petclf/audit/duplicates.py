"""Copies among the images: exact (same bytes) and near (re-encoded, resized, slightly cropped), grouped.

A pair is a near copy when its perceptual hashes are close (pHash and dHash, Hamming distance), its
grey thumbnails correlate, and, after the best of a few small zooms and shifts (a crop), its
32×32 grey images differ by little more than re-encoding noise; with embeddings, they must also
point the same way (cosine). Hashes and correlation alone join different scans of the same digit
(their thumbnails correlate up to 0.996); the aligned residual keeps them apart (copies ≤ 0.05 of
the image's spread, other scans ≥ 0.09 on benchmarks/audit.py). Pairs are joined into groups (connected
components); a group is ``leakage`` when it spans train and valid/test, ``conflicting`` when its members carry
different labels.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from petclf.audit.fingerprints import Fingerprints

__all__ = ["NearCopySettings", "find_duplicates", "near_pairs", "popcount"]


@dataclass(frozen=True)
class NearCopySettings:
    """Thresholds of a near copy (tuned on benchmarks/audit.py: digit scans, JPEG re-encoding, 2 px crops)."""

    phash_bits: int = 12  # pHash Hamming distance of a candidate pair (of 64 bits); raise to catch heavier edits
    dhash_bits: int = 16  # dHash distance of a candidate pair
    min_pixel_corr: float = 0.95  # grey-thumbnail correlation of a candidate pair
    max_residual: float = 0.065  # aligned RMS difference over the image's grey spread; higher finds heavier edits
    min_cosine: float = 0.8  # embedding cosine that confirms a pair, when there are embeddings


#: Set bits of each byte value, for NumPy 1.x (np.bitwise_count is NumPy 2's).
_BITS_IN_BYTE = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1).sum(axis=1).astype(np.uint8)


def popcount(x: np.ndarray) -> np.ndarray:
    """Set bits of each element of an unsigned integer array (the Hamming distance of an XOR), as uint8.

    NumPy 1.x has no ``np.bitwise_count``; petclf supports it because torch 2.1 and 2.2 (within our floor) are built
    against NumPy 1, so a NumPy 2 floor would quietly raise torch's.

    Example: ``popcount(np.array([0b1011], dtype=np.uint64))`` → ``array([3], dtype=uint8)``.
    """
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    return _popcount_by_bytes(x)


def _popcount_by_bytes(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x)
    return _BITS_IN_BYTE[x.view(np.uint8)].reshape(*x.shape, x.itemsize).sum(axis=-1, dtype=np.uint8)


def _hamming_pairs(a: np.ndarray, b: np.ndarray, limit_a: int, limit_b: int, block: int = 512) -> np.ndarray:
    """Index pairs (i < j) whose hash distances are within both limits, computed in blocks of rows."""
    n, found = len(a), []
    for start in range(0, n, block):
        stop = min(n, start + block)
        da = popcount(a[start:stop, None] ^ a[None, :])
        db = popcount(b[start:stop, None] ^ b[None, :])
        i, j = np.nonzero((da <= limit_a) & (db <= limit_b))
        i = i + start
        keep = i < j
        found.append(np.stack([i[keep], j[keep]], axis=1))
    return np.concatenate(found) if found else np.zeros((0, 2), int)


def _affines(zooms, shifts) -> torch.Tensor:
    return torch.tensor([[[z, 0.0, dx], [0.0, z, dy]] for z in zooms for dx in shifts for dy in shifts],
                        dtype=torch.float32)


def _best_rms(a: torch.Tensor, b: torch.Tensor, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For pairs (n, 1, S, S) and affines (n, t, 2, 3): the smallest RMS difference of ``a`` and ``b`` warped by
    each affine, and its index."""
    n, t, side = len(a), theta.shape[1], a.shape[-1]
    m = side // 8  # compare the centre: a crop leaves nothing to compare at the edges
    grid = F.affine_grid(theta.reshape(n * t, 2, 3), [n * t, 1, side, side], align_corners=False)
    warped = F.grid_sample(b.repeat_interleave(t, 0), grid, align_corners=False, padding_mode="border")
    diff = (warped.view(n, t, side, side) - a)[:, :, m:side - m, m:side - m]
    rms = diff.pow(2).mean((2, 3)).sqrt()
    return rms.min(1)


def aligned_residual(small: np.ndarray, i: np.ndarray, j: np.ndarray, *, chunk: int = 64) -> np.ndarray:
    """RMS grey difference of images ``i`` and ``j`` after the best small zoom/shift of ``j`` (coarse, then fine),
    over the grey spread of ``i``: about 0.03 for a re-encoded, cropped copy, 0.1 and more for another scan."""
    side = small.shape[-1]
    step = 2.0 / side  # one pixel in affine_grid's [-1, 1] coordinates
    coarse = _affines(np.linspace(0.9, 1.1, 5), np.arange(-2, 3) * step)
    fine = _affines(np.linspace(-0.025, 0.025, 3), np.array([-0.5, 0.0, 0.5]) * step)
    # ``fine`` holds offsets (zoom deltas, sub-pixel shifts) added to each pair's coarse winner.
    out = np.zeros(len(i))
    with torch.no_grad():
        for start in range(0, len(i), chunk):
            a = torch.from_numpy(small[i[start:start + chunk]]).float()[:, None]
            b = torch.from_numpy(small[j[start:start + chunk]]).float()[:, None]
            _, best = _best_rms(a, b, coarse.expand(len(a), -1, -1, -1))
            refined = coarse[best][:, None] + fine[None]  # (n, 9·3, 2, 3) around each pair's coarse winner
            refined[:, :, 1, 1] = refined[:, :, 0, 0]
            rms, _ = _best_rms(a, b, refined)
            spread = a.flatten(1).std(1).clamp_min(8.0)  # near-blank images: compare in grey levels
            out[start:start + chunk] = (rms / spread).numpy()
    return out


def near_pairs(prints: Fingerprints, features: np.ndarray | None = None,
               settings: NearCopySettings = NearCopySettings()) -> pd.DataFrame:
    """Confirmed near-copy pairs: ``i``, ``j``, ``phash`` distance, thumbnail correlation ``corr``, aligned
    ``residual``, embedding ``cosine`` (NaN without embeddings)."""
    pairs = _hamming_pairs(prints.phash, prints.dhash, settings.phash_bits, settings.dhash_bits)
    pairs = pairs[prints.readable[pairs[:, 0]] & prints.readable[pairs[:, 1]]] if len(pairs) else pairs
    i, j = (pairs[:, 0], pairs[:, 1]) if len(pairs) else (np.zeros(0, int), np.zeros(0, int))
    corr = np.einsum("nd,nd->n", prints.thumbs[i], prints.thumbs[j])
    keep = corr >= settings.min_pixel_corr
    i, j, corr = i[keep], j[keep], corr[keep]
    residual = aligned_residual(prints.small, i, j)
    keep = residual <= settings.max_residual
    cosine = np.full(len(i), np.nan)
    if features is not None and len(i):
        unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
        cosine = np.einsum("nd,nd->n", unit[i], unit[j])
        keep &= cosine >= settings.min_cosine
    dist = popcount(prints.phash[i] ^ prints.phash[j]).astype(int)
    return pd.DataFrame({"i": i[keep], "j": j[keep], "phash": dist[keep], "corr": corr[keep],
                         "residual": residual[keep], "cosine": cosine[keep]})


def _groups(n: int, edges: list[tuple[int, int]]) -> np.ndarray:
    """Each of ``n`` images' group label: the connected components of the copy pairs."""
    if not n:
        return np.zeros(0, dtype=int)
    i, j = np.array(edges, dtype=int).reshape(-1, 2).T
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def find_duplicates(frame: pd.DataFrame, digests: list[str], prints: Fingerprints, features: np.ndarray | None = None,
                    settings: NearCopySettings = NearCopySettings()) -> pd.DataFrame:
    """One row per image that has a copy: ``row`` (in ``frame``), ``path``, ``label``, ``split``, ``group``,
    ``kind`` ('exact' when all of the group are the same bytes, else 'near'), ``leakage``, ``conflicting``,
    ``score`` (1 − the smallest aligned residual to another member; 1.0 for an exact copy).

    Example: ``find_duplicates(dataset.frame, digests, fingerprint_files(list(dataset.frame.path)))``.
    """
    n = len(frame)
    score = np.zeros(n)
    edges: list[tuple[int, int]] = []
    by_digest: dict[str, int] = {}
    for k, digest in enumerate(digests):
        if not digest:
            continue
        if digest in by_digest:
            edges.append((by_digest[digest], k))
            score[[k, by_digest[digest]]] = 1.0
        else:
            by_digest[digest] = k
    near = near_pairs(prints, features, settings)
    for a, b, r in zip(near.i, near.j, near.residual):
        edges.append((int(a), int(b)))
        similarity = 1.0 - float(r)  # 1.0 for the same bytes, about 0.97 for a re-encoded crop
        score[a], score[b] = max(score[a], similarity), max(score[b], similarity)
    roots = _groups(n, edges)
    sizes = pd.Series(roots).value_counts()
    members = np.nonzero(sizes.reindex(roots).to_numpy() > 1)[0] if n else np.zeros(0, int)
    columns = ["row", "path", "label", "split", "group", "kind", "leakage", "conflicting", "score"]
    if not len(members):
        return pd.DataFrame(columns=columns)
    out = pd.DataFrame({"row": members, "path": frame.path.to_numpy()[members], "label": frame.label.to_numpy()[members],
                        "split": frame.split.to_numpy()[members], "root": roots[members],
                        "digest": np.asarray(digests, dtype=object)[members], "score": score[members]})
    groups = out.groupby("root")
    out["kind"] = groups.digest.transform(lambda d: "exact" if d.nunique() == 1 else "near")
    out["leakage"] = groups.split.transform(lambda s: (s == "train").any() and (s != "train").any()).astype(bool)
    out["conflicting"] = groups.label.transform(lambda s: s.nunique() > 1).astype(bool)
    # Groups numbered 1, 2, … with the most telling first: leakage, conflicting, then the largest.
    order = (out.groupby("root").agg(leak=("leakage", "first"), conf=("conflicting", "first"), n=("row", "size"),
                                     first=("row", "min"))
             .sort_values(["leak", "conf", "n", "first"], ascending=[False, False, False, True]))
    number = {root: k + 1 for k, root in enumerate(order.index)}
    out["group"] = out.root.map(number)
    return out.sort_values(["group", "row"])[columns].reset_index(drop=True)
