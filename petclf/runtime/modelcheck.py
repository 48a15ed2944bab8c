"""Checks of a model directory from someone else, before anything is built from it.

Long on purpose: every field of petclf.json is checked in this one place, so a reader can see all that a
stranger's file can set and what bounds it.

``petclf.json`` decides how large a network ``load_model`` builds and how images are fed to
it, so every field it uses is checked here first: types, ranges and agreement between fields
(``len(classes) == arch.n_out``). The weights file's header (names, shapes, dtypes; no tensor
data) is then compared with the network that ``petclf.json`` describes, built on the meta
device so that nothing is allocated. Each problem is one line naming the file and the field.

It imports only the standard library, torch, safetensors and ``petclf.core``, so prediction
uses it without fastai.
"""
from __future__ import annotations

import json
import math
import re
import reprlib
import struct
from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError, safe_open

from petclf.core.defaults import (ARCH_SOURCES, AUGMENTS, LAYOUTS, MAX_CLASS_NAME_CHARS, MAX_CLASSES, MAX_SIZE,
                                  MIN_SIZE, MIN_UNKNOWN_ACCEPT, MULTI_LABEL, SINGLE_LABEL, TASKS)
from petclf.core.errors import ModelFileError, UsageError
from petclf.core.safe_text import one_line
from petclf.runtime.ood import OOD_KINDS
from petclf.runtime.temperature import MAX_TEMPERATURE, MIN_TEMPERATURE

__all__ = ["FORMAT", "FORMAT_VERSION", "MAX_META_BYTES", "MAX_JSON_DEPTH", "MAX_CLASSES", "MAX_CLASS_NAME_CHARS",
           "MAX_PRESIZE", "PRESIZE_FACTOR", "MIN_STD", "MAX_ABS_STAT",
           "MAX_WEIGHTS_HEADER_BYTES", "MAX_TEXT_CHARS",
           "CURVE_LOW", "CURVE_POINTS", "MAX_OOD_SCORE",
           "parse_meta", "validate_meta", "read_meta_file", "check_weights_header", "check_header_length"]

FORMAT = "petclf-model"
FORMAT_VERSION = 1

#: petclf.json of a 100,000-class model is about 3 MB; anything far larger is not ours.
MAX_META_BYTES = 16 * 1024 * 1024
#: petclf writes at most 3 levels (summary values); deeper input only serves to exhaust the stack.
MAX_JSON_DEPTH = 32
# MAX_CLASSES and MAX_CLASS_NAME_CHARS live in core.defaults: the table reader refuses the same limits before
# training, so that no run ends in a model these checks would refuse.
#: petclf trains with presize = 1.5 × size; a presize far above that only costs memory per image.
PRESIZE_FACTOR = 3
MAX_PRESIZE = 4096
#: Inputs are 0..1 floats; statistics outside these bounds overflow fp16 or turn scores into NaN.
MIN_STD = 1e-6
MAX_ABS_STAT = 1e3
#: A safetensors header lists names, dtypes and offsets: a few hundred kB for the largest timm models.
MAX_WEIGHTS_HEADER_BYTES = 16 * 1024 * 1024
MAX_TEXT_CHARS = 1000
#: The "unknown" thresholds stored per acceptance: 0.50, 0.505, …, 1.00 (``petclf.runtime.trust``).
CURVE_LOW, CURVE_POINTS = MIN_UNKNOWN_ACCEPT, 101
#: OOD scores petclf computes are logits-sized or distances; one beyond this is a damaged or hostile file.
MAX_OOD_SCORE = 1e12


_DAMAGED = "the model directory is damaged or was not written by petclf"
# Characters that would break the one-line-per-image output of `petclf predict`, or drive a terminal.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_MISSING = object()
_JSON_TYPES = {list: "list", str: "string", int: "number", float: "number", bool: "boolean", type(None): "null"}
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16"}
_KIND_NAMES = {"float": "a floating-point dtype", "int": "an integer dtype", "bool": "a bool dtype",
               "complex": "a complex dtype"}
_INT_DTYPES = {"I64", "I32", "I16", "I8", "U64", "U32", "U16", "U8"}

_short = reprlib.Repr()
_short.maxstring, _short.maxother, _short.maxlist, _short.maxdict, _short.maxlevel = 60, 60, 6, 4, 2


def _show(value: object) -> str:
    """A short one-line rendering of a (possibly huge) JSON value for an error message."""
    return _short.repr(value)


def _field_error(path: Path, name: str, expected: str, value: object = _MISSING) -> ModelFileError:
    problem = "is missing" if value is _MISSING else f"must be {expected} (found {_show(value)})"
    return ModelFileError(f"{path}: field {name!r} {problem}; {_DAMAGED}.")


def _get(meta: dict, key: str, path: Path, prefix: str = "") -> object:
    if key not in meta:
        raise _field_error(path, prefix + key, "")
    return meta[key]


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int_in(value: object, low: int, high: int) -> bool:
    return _is_int(value) and low <= value <= high


def _text(value: object, *, limit: int = MAX_TEXT_CHARS) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit and not _CONTROL.search(value)


def _depth_exceeds(value: object, limit: int) -> bool:
    """Whether ``value`` nests lists/dicts deeper than ``limit``; iterative, so deep input cannot overflow the stack."""
    stack = [(value, 1)] if isinstance(value, (list, dict)) else []
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item)
                     if isinstance(child, (list, dict)))
    return False


def parse_meta(data: bytes, *, path: Path) -> object:
    """Decode the bytes of a ``petclf.json`` into a JSON value, refusing what is not plain, shallow JSON.

    Example: ``parse_meta(b'{"format": "petclf-model"}', path=Path("m/petclf.json"))`` → ``{'format': 'petclf-model'}``.
    """
    if len(data) > MAX_META_BYTES:
        raise ModelFileError(f"{path} is larger than {MAX_META_BYTES // 2**20} MB; {_DAMAGED}.")
    try:
        value = json.loads(data.decode("utf-8"))
    except RecursionError:
        raise ModelFileError(f"{path} nests lists or objects too deeply to read; {_DAMAGED}.") from None
    except UnicodeDecodeError as err:
        raise ModelFileError(f"{path} is not UTF-8 text ({one_line(err)}); {_DAMAGED}.") from None
    except ValueError as err:  # JSONDecodeError, and integers longer than Python converts
        raise ModelFileError(f"{path} is not valid JSON ({one_line(err)}); {_DAMAGED}.") from None
    if _depth_exceeds(value, MAX_JSON_DEPTH):
        raise ModelFileError(f"{path} nests lists or objects more than {MAX_JSON_DEPTH} levels deep; {_DAMAGED}.")
    return value


def _check_header(meta: object, path: Path) -> dict:
    if not isinstance(meta, dict):
        raise ModelFileError(f"{path} holds a JSON {_JSON_TYPES.get(type(meta), 'value')}, not an object, so it is "
                             f"not a petclf model description; {_DAMAGED}.")
    if _get(meta, "format", path) != FORMAT:
        raise _field_error(path, "format", repr(FORMAT), meta["format"])
    version = _get(meta, "format_version", path)
    if _is_int(version) and version > FORMAT_VERSION:
        # Not damage: the reader is older than the writer, and the fix is on this side.
        raise UsageError(f"{path.parent} was written by a newer petclf (format {version}); "
                         "upgrade petclf to load it.")
    if not _int_in(version, 1, FORMAT_VERSION):
        known = f"an integer from 1 to {FORMAT_VERSION}" if FORMAT_VERSION > 1 else "the integer 1"
        raise _field_error(path, "format_version", known, version)
    return meta


def _check_arch(meta: dict, path: Path) -> None:
    arch = _get(meta, "arch", path)
    if not isinstance(arch, dict):
        raise _field_error(path, "arch", "an object", arch)
    name = _get(arch, "name", path, "arch.")
    if not _text(name, limit=200):
        raise _field_error(path, "arch.name", "a model name (text of 1 to 200 characters)", name)
    source = _get(arch, "source", path, "arch.")
    if source not in ARCH_SOURCES:
        raise _field_error(path, "arch.source", "one of " + ", ".join(map(repr, ARCH_SOURCES)), source)
    n_out = _get(arch, "n_out", path, "arch.")
    if not _int_in(n_out, 2, MAX_CLASSES):
        raise _field_error(path, "arch.n_out", f"an integer from 2 to {MAX_CLASSES}", n_out)


def _check_classes(meta: dict, path: Path) -> None:
    classes = _get(meta, "classes", path)
    n_out = meta["arch"]["n_out"]
    if not isinstance(classes, list):
        raise _field_error(path, "classes", "a list of class names", classes)
    if len(classes) > MAX_CLASSES:
        raise _field_error(path, "classes", f"a list of at most {MAX_CLASSES} class names", classes)
    for index, name in enumerate(classes):
        # Control characters are allowed: they come from folder names, and every output escapes them.
        if not (isinstance(name, str) and 0 < len(name) <= MAX_CLASS_NAME_CHARS):
            raise _field_error(path, f"classes[{index}]", f"a class name (text of 1 to {MAX_CLASS_NAME_CHARS} "
                               "characters)", name)
    if len(classes) != n_out:
        raise ModelFileError(f"{path}: field 'classes' has {len(classes)} names but field 'arch.n_out' says the "
                             f"head has {n_out} outputs; {_DAMAGED}.")
    if len(set(classes)) != len(classes):
        seen: set[str] = set()
        duplicate = next(c for c in classes if c in seen or seen.add(c))
        raise ModelFileError(f"{path}: field 'classes' names {_show(duplicate)} more than once; {_DAMAGED}.")


def _check_stats(pre: dict, key: str, path: Path, *, low: float, expected: str) -> None:
    values = _get(pre, key, path, "preprocessing.")
    if not (isinstance(values, list) and len(values) == 3
            and all(_is_number(v) and math.isfinite(v) and low <= v <= MAX_ABS_STAT for v in values)):
        raise _field_error(path, f"preprocessing.{key}", expected, values)


def _check_preprocessing(meta: dict, path: Path) -> None:
    pre = _get(meta, "preprocessing", path)
    if not isinstance(pre, dict):
        raise _field_error(path, "preprocessing", "an object", pre)
    size = _get(pre, "size", path, "preprocessing.")
    if not _int_in(size, MIN_SIZE, MAX_SIZE):
        raise _field_error(path, "preprocessing.size", f"an integer from {MIN_SIZE} to {MAX_SIZE}", size)
    presize = _get(pre, "presize", path, "preprocessing.")
    high = min(PRESIZE_FACTOR * size, MAX_PRESIZE)
    if not _int_in(presize, size, high):
        raise _field_error(path, "preprocessing.presize",
                           f"an integer from size ({size}) to {high} ({PRESIZE_FACTOR} × size, at most {MAX_PRESIZE})",
                           presize)
    augment = _get(pre, "augment", path, "preprocessing.")
    if augment not in AUGMENTS:
        raise _field_error(path, "preprocessing.augment", "one of " + ", ".join(map(repr, AUGMENTS)), augment)
    _check_stats(pre, "mean", path, low=-MAX_ABS_STAT,
                 expected=f"3 finite numbers from {-MAX_ABS_STAT:g} to {MAX_ABS_STAT:g}")
    _check_stats(pre, "std", path, low=MIN_STD,
                 expected=f"3 positive finite numbers from {MIN_STD:g} to {MAX_ABS_STAT:g}")


def _check_data(meta: dict, path: Path) -> None:
    if "data" not in meta:
        return
    data = meta["data"]
    if not isinstance(data, dict):
        raise _field_error(path, "data", "an object", data)
    if "layout" in data and data["layout"] is not None and data["layout"] not in LAYOUTS:
        raise _field_error(path, "data.layout", "null or one of " + ", ".join(map(repr, LAYOUTS)), data["layout"])
    if "label_pat" in data and data["label_pat"] is not None:
        pattern = data["label_pat"]
        if not isinstance(pattern, str) or len(pattern) > MAX_TEXT_CHARS:
            raise _field_error(path, "data.label_pat", f"null or a regular expression of at most {MAX_TEXT_CHARS} "
                               "characters", pattern)
        try:
            re.compile(pattern)
        except (re.error, RecursionError, OverflowError, ValueError):
            raise _field_error(path, "data.label_pat", "a valid regular expression", pattern) from None
    if "valid_pct" in data:
        value = data["valid_pct"]
        if not (_is_number(value) and 0.0 <= value < 1.0):
            raise _field_error(path, "data.valid_pct", "a number in [0, 1)", value)
    if "seed" in data and not _int_in(data["seed"], 0, 2**64 - 1):
        raise _field_error(path, "data.seed", "an integer from 0 to 2**64 - 1", data["seed"])
    for key in ("fn_col", "label_col", "valid_col"):
        if data.get(key) is not None and not _text(data[key]):
            raise _field_error(path, f"data.{key}", f"null or a column name of at most {MAX_TEXT_CHARS} characters",
                               data[key])
    if data.get("label_delim") is not None and not (_text(data["label_delim"], limit=8) and data["label_delim"]):
        raise _field_error(path, "data.label_delim", "null or a delimiter of 1 to 8 characters", data["label_delim"])


def _check_task(meta: dict, path: Path) -> None:
    """``task`` (absent: single-label, as every model before multi-label) and a multi-label model's thresholds."""
    task = meta.get("task", SINGLE_LABEL)
    if task not in TASKS:
        raise _field_error(path, "task", "one of " + ", ".join(map(repr, TASKS)), task)
    thresholds = meta.get("thresholds", _MISSING)
    n = len(meta["classes"])
    if thresholds is _MISSING or (thresholds is None and task != MULTI_LABEL):
        return  # multi-label: the default threshold applies; single-label models have none
    # Checked whatever the task: the prediction code takes the field as it is, and text passed for a list
    # there (a single-label model was judged by the length of "garbage").
    if not (isinstance(thresholds, list) and len(thresholds) == n
            and all(_is_number(t) and 0.0 <= t <= 1.0 for t in thresholds)):
        expected = "a list" if task == MULTI_LABEL else "null or a list"
        raise _field_error(path, "thresholds", f"{expected} of {n} numbers from 0 to 1, one per class", thresholds)


def _check_optional(meta: dict, path: Path) -> None:
    if "summary" in meta and not isinstance(meta["summary"], dict):
        raise _field_error(path, "summary", "an object", meta["summary"])
    if "versions" in meta and not isinstance(meta["versions"], dict):
        raise _field_error(path, "versions", "an object", meta["versions"])
    # Exactly a JSON boolean: read by truthiness, "no", {} or [1] would decide whether predictions use TTA.
    if "tta" in meta and not isinstance(meta["tta"], bool):
        raise _field_error(path, "tta", "true or false", meta["tta"])
    if "precision" in meta and meta["precision"] is not None and not _text(meta["precision"], limit=32):
        raise _field_error(path, "precision", "null or a precision name such as 'fp32'", meta["precision"])


def _finite(value: object, bound: float = MAX_OOD_SCORE) -> bool:
    return _is_number(value) and math.isfinite(value) and abs(value) <= bound


def _check_trust(meta: dict, path: Path) -> None:
    """``temperature`` (absent: 1, as every model before calibration) and the ``unknown`` detector."""
    if "temperature" in meta:
        value = meta["temperature"]
        if not (_finite(value) and MIN_TEMPERATURE <= value <= MAX_TEMPERATURE):
            raise _field_error(path, "temperature", f"a number from {MIN_TEMPERATURE:g} to {MAX_TEMPERATURE:g}",
                               value)
    if meta.get("unknown") is None:
        return
    if meta.get("task", SINGLE_LABEL) != SINGLE_LABEL:
        raise _field_error(path, "unknown", "null for a multi-label model", meta["unknown"])
    unknown = meta["unknown"]
    if not isinstance(unknown, dict):
        raise _field_error(path, "unknown", "null or an object", unknown)
    kind = _get(unknown, "kind", path, "unknown.")
    if kind not in OOD_KINDS:
        raise _field_error(path, "unknown.kind", "one of " + ", ".join(map(repr, OOD_KINDS)), kind)
    if not _finite(_get(unknown, "threshold", path, "unknown.")):
        raise _field_error(path, "unknown.threshold", f"a finite number of at most {MAX_OOD_SCORE:g} in size",
                           unknown["threshold"])
    accept = _get(unknown, "accept", path, "unknown.")
    if not (_is_number(accept) and CURVE_LOW <= accept <= 1.0):
        raise _field_error(path, "unknown.accept", f"a number from {CURVE_LOW} to 1", accept)
    curve = _get(unknown, "curve", path, "unknown.")
    if not (isinstance(curve, list) and len(curve) == CURVE_POINTS and all(_finite(v) for v in curve)
            and all(a <= b for a, b in zip(curve, curve[1:]))):
        raise _field_error(path, "unknown.curve", f"a list of {CURVE_POINTS} finite non-decreasing numbers", curve)


def validate_meta(meta: object, *, path: Path) -> dict:
    """Check every field of a parsed ``petclf.json`` that petclf uses, and return it unchanged.

    Unknown extra keys are allowed, so that files from later petclf versions of the same
    format still load. Raises ``ModelFileError`` naming the file and the first bad field,
    or ``UsageError`` for a file written by a newer format.

    Example: ``validate_meta(json.loads(text), path=Path("m/petclf.json"))["arch"]["n_out"]`` → ``37``.
    """
    path = Path(path)
    meta = _check_header(meta, path)
    _check_arch(meta, path)
    _check_classes(meta, path)
    _check_preprocessing(meta, path)
    _check_data(meta, path)
    _check_task(meta, path)
    _check_optional(meta, path)
    _check_trust(meta, path)
    return meta


def read_meta_file(path: Path) -> dict:
    """Read, parse and check one ``petclf.json``, reading at most ``MAX_META_BYTES`` + 1 bytes.

    Example: ``read_meta_file(Path("runs/pets/model/petclf.json"))["classes"][:2]`` → ``['Abyssinian', 'Bengal']``.
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_META_BYTES + 1)
    except OSError as err:
        raise ModelFileError(f"cannot read {path} ({one_line(err)}).") from None
    return validate_meta(parse_meta(data, path=path), path=path)


def _header_length(path: Path) -> None:
    """Refuse an oversized safetensors header before safetensors parses it (it allows 100 MB)."""
    try:
        with open(path, "rb") as f:
            prefix = f.read(8)
    except FileNotFoundError:
        raise ModelFileError(f"{path} is missing; the model directory is incomplete.") from None
    except OSError as err:
        raise ModelFileError(f"cannot read {path} ({one_line(err)}).") from None
    if len(prefix) < 8:
        raise ModelFileError(f"{path} is too short to be a safetensors file ({len(prefix)} bytes); "
                             "the model directory is damaged.")
    (length,) = struct.unpack("<Q", prefix)
    if length > MAX_WEIGHTS_HEADER_BYTES:
        raise ModelFileError(f"{path} declares a {length}-byte header, more than a weights file needs "
                             f"({MAX_WEIGHTS_HEADER_BYTES // 2**20} MB at most); the model directory is damaged.")


def check_header_length(path: Path) -> None:
    """Refuse a safetensors file whose header is larger than a weights file needs, before safetensors parses it.

    Example: ``check_header_length(Path("m/ood.safetensors"))``.
    """
    _header_length(Path(path))


def _kind(dtype: torch.dtype) -> str:
    if dtype == torch.bool:
        return "bool"
    if dtype.is_floating_point:
        return "float"
    return "complex" if dtype.is_complex else "int"


def _fits(kind: str, stored: str) -> bool:
    # load_state_dict converts between dtypes of one kind (bf16 weights into an fp32 network), not across kinds.
    return {"float": stored in _FLOAT_DTYPES, "int": stored in _INT_DTYPES, "bool": stored == "BOOL"}.get(kind, False)


def _examples(items: list[str]) -> str:
    return ", ".join(items[:3]) + (", …" if len(items) > 3 else "")


def check_weights_header(path: Path, expected: Mapping[str, torch.Tensor], *, arch: str = "the network",
                         n_out: int | None = None) -> None:
    """Compare the tensor names, shapes and dtypes in a safetensors header with ``expected``; reads no tensor data.

    ``expected`` is a state dict; meta-device tensors suffice, since only shapes and dtypes
    are compared. ``n_out``, when given, lets the message say that the classifier head differs.

    Example::

        with torch.device("meta"):
            layout = build_network("resnet18", "torchvision", 37).state_dict()
        check_weights_header(Path("m/model.safetensors"), layout, arch="resnet18", n_out=37)
    """
    path = Path(path)
    _header_length(path)
    found: dict[str, tuple[tuple[int, ...], str]] = {}
    try:
        with safe_open(str(path), framework="pt") as f:
            keys = f.keys()
            # Far more tensors than the network has: refused without a slice object per name.
            if len(keys) <= 2 * len(expected) + 100:
                for key in keys:
                    tensor = f.get_slice(key)
                    found[key] = (tuple(tensor.get_shape()), tensor.get_dtype())
    except FileNotFoundError:
        raise ModelFileError(f"{path} is missing; the model directory is incomplete.") from None
    except (SafetensorError, OSError, ValueError, RuntimeError, TypeError) as err:
        raise ModelFileError(f"cannot read {path} ({one_line(err)}); the model directory is damaged.") from None
    if len(keys) > len(found):
        raise ModelFileError(f"{path} holds {len(keys)} tensors, {arch} has {len(expected)}; the model "
                             "directory is damaged or its two files do not belong together.")
    missing = [_show(k) for k in expected if k not in found]
    unexpected = [_show(k) for k in found if k not in expected]
    mismatched, head = [], ""
    last_layer = set(list(expected)[-2:])  # the classifier's weight and bias, where n_out shows
    for key, tensor in expected.items():
        if key not in found:
            continue
        shape, dtype = found[key]
        want = tuple(tensor.shape)
        if shape != want:
            mismatched.append(f"{_show(key)} {list(shape)} in the file, {list(want)} expected")
            if n_out is not None and key in last_layer and want[:1] == (n_out,) and shape[:1] != (n_out,) and not head:
                head = (f"the classifier head in the file has {shape[0] if shape else 0} outputs but "
                        f"petclf.json says arch.n_out={n_out}")
        elif not _fits(_kind(tensor.dtype), dtype):
            mismatched.append(f"{_show(key)} {_show(dtype)} in the file, {_KIND_NAMES[_kind(tensor.dtype)]} expected")
    if missing or unexpected or mismatched:
        parts = [head] if head else []
        parts += [f"{len(items)} {what} (e.g. {_examples(items)})" for what, items in
                  (("missing keys", missing), ("unexpected keys", unexpected),
                   ("tensors of another shape or type", mismatched)) if items]
        raise ModelFileError(one_line(
            f"{path} does not hold the weights of {arch} as petclf.json describes it: {'; '.join(parts)}; "
            "the model directory is damaged or its two files do not belong together.", limit=1000))
