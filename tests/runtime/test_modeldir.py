from __future__ import annotations

import copy
import json
import random
import reprlib
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from petclf import Predictor, load_model, quick_learner, save_model, train
from petclf.runtime import modeldir as artifact
from petclf.runtime import modelcheck
from petclf.cli import main
from petclf.core.errors import ModelFileError, PetclfError, UsageError
from petclf.data.images import read_rgb
from petclf.runtime.modelcheck import validate_meta

from ..conftest import TINY


@pytest.fixture(scope="module")
def trained(pets_dir, tmp_path_factory):
    learn = quick_learner(pets_dir, precision="fp32", **TINY)
    train(learn, epochs=1, lr=1e-2, progress=False)
    model_dir = save_model(learn, tmp_path_factory.mktemp("model") / "m", summary={"note": "test"})
    return learn, model_dir


def test_model_dir_holds_safetensors_and_json(trained):
    _, model_dir = trained
    meta = json.loads((model_dir / "petclf.json").read_text())
    assert meta["format_version"] == 1 and meta["arch"]["name"] == "resnet18"
    assert meta["classes"] == ["Egyptian_Mau", "american_pit_bull_terrier", "pug"]
    assert meta["preprocessing"]["size"] == 32 and "torch" in meta["versions"]
    assert meta["summary"] == {"note": "test"}
    assert (model_dir / "model.safetensors").read_bytes()[:8] != b"\x80\x04\x95"  # not a pickle


def _assert_predictor_matches_validation(learn, model_dir) -> None:
    """The Predictor's logits for the validation files equal the learner's own validation logits."""
    learn.model.eval()
    with learn.no_bar():
        logits, _ = learn.get_preds(ds_idx=1, act=lambda x: x)
    files = list(learn.dls.valid.items.path)
    ours = Predictor(model_dir, device="cpu", precision="fp32").logits(files)
    assert torch.allclose(ours, logits.as_subclass(torch.Tensor), atol=1e-4)


def test_predictor_logits_match_get_preds(trained):
    _assert_predictor_matches_validation(*trained)


@pytest.fixture(scope="module")
def photos_dir(tmp_path_factory):
    """800×600 JPEGs with detail at every scale: large enough (≥ 2 × a 48 px presize) to be read reduced."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(5)
    for k, label in enumerate(("cat", "dog", "fox")):
        for i in range(4):
            pixels = rng.integers(0, 255, (600, 800, 3), dtype=np.uint8)
            pixels[..., k] = 220
            Image.fromarray(pixels).save(root / f"{label}_{i}.jpg", quality=90)
    return root


def test_large_jpeg_is_read_at_the_smallest_scale_that_keeps_the_presize(photos_dir):
    path = photos_dir / "cat_0.jpg"
    assert read_rgb(path).size == (800, 600)
    assert read_rgb(path, min_side=48).size == (100, 75)  # 1/8: the shorter side stays ≥ 48
    assert read_rgb(path, min_side=200).size == (400, 300)  # 1/2: 1/4 would give 150 < 200
    assert read_rgb(path, min_side=400).size == (800, 600)  # under 2 ×: decoded whole


@pytest.mark.parametrize("cache", [True, False], ids=["image-cache", "no-image-cache"])
def test_predictor_reads_large_photos_as_training_does(photos_dir, tmp_path, cache):
    learn = quick_learner(photos_dir, precision="fp32", cache=cache, **{**TINY, "bs": 4})
    _assert_predictor_matches_validation(learn, save_model(learn, tmp_path / "m"))


def test_round_trip_gives_identical_predictions(trained, pets_dir):
    learn, model_dir = trained
    files = sorted(pets_dir.glob("*.jpg"))[:6]
    first = Predictor(model_dir, device="cpu", precision="fp32").predict_batch(files, bs=4)
    second = Predictor(model_dir, device="cpu", precision="fp32").predict_batch(files, bs=6)
    assert [t[0][0] for t in first] == [t[0][0] for t in second]
    assert np.allclose([[p for _, p in t] for t in first], [[p for _, p in t] for t in second], atol=1e-6)
    learn.model.eval()
    with learn.no_bar():
        probs, _ = learn.get_preds(dl=learn.dls.test_dl(files))
    assert [learn.dls.vocab[i] for i in probs.argmax(1)] == [t[0][0] for t in first]
    assert all(len(top) == 3 and abs(sum(p for _, p in top) - 1) < 1e-5 for top in first)


def test_loads_in_a_fresh_process_without_network(trained, pets_dir):
    _, model_dir = trained
    code = ("import sys, socket\n"
            "def refuse(*a, **k): raise OSError('network disabled in this test')\n"
            "socket.socket.connect = refuse\n"
            "from petclf import Predictor\n"
            f"print(Predictor({str(model_dir)!r}).predict({str(pets_dir / 'pug_1.jpg')!r}, topk=1)[0][0])\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() in {"Egyptian_Mau", "american_pit_bull_terrier", "pug"}


def test_prediction_imports_no_fastai(trained, pets_dir):
    """A deployment loads and predicts with torch, torchvision, safetensors, PIL and numpy alone."""
    _, model_dir = trained
    code = ("import sys\nfrom petclf import Predictor\n"
            f"Predictor({str(model_dir)!r}).predict({str(pets_dir / 'pug_1.jpg')!r})\n"
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'fastai', 'fastcore', 'sklearn', 'matplotlib', "
            "'pandas', 'timm', 'scipy'}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "[]"


def test_not_a_model_dir_is_explained(tmp_path):
    with pytest.raises(UsageError, match="not a petclf model directory"):
        load_model(tmp_path)


# --- model directories from strangers: petclf.json and the weights header are checked before anything is built


@pytest.fixture
def model_copy(trained, tmp_path):
    """A model directory whose petclf.json may be rewritten (the weights are a link to the trained model's)."""
    _, model_dir = trained
    target = tmp_path / "model"
    target.mkdir()
    (target / "model.safetensors").symlink_to(model_dir / "model.safetensors")
    meta = json.loads((model_dir / "petclf.json").read_text())
    (target / "petclf.json").write_text(json.dumps(meta))
    return target, meta


def _write_meta(directory: Path, meta: object) -> None:
    (directory / "petclf.json").write_text(json.dumps(meta))


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def test_saved_meta_passes_validation_and_leaves_out_the_data_path(trained):
    _, model_dir = trained
    meta = json.loads((model_dir / "petclf.json").read_text())
    assert "path" not in meta["data"]
    assert set(meta["data"]) == {"layout", "label_pat", "valid_pct", "seed"}
    assert validate_meta(meta, path=model_dir / "petclf.json") is meta


def test_old_meta_with_a_data_path_and_unknown_keys_still_loads(model_copy):
    directory, meta = model_copy
    meta["data"]["path"] = "/home/someone/pets/images"
    meta["written_by_a_later_petclf"] = {"anything": [1, 2]}
    _write_meta(directory, meta)
    loaded = load_model(directory)
    assert loaded.classes == tuple(meta["classes"]) and loaded.pipeline.size == 32


def test_huge_n_out_is_refused_before_anything_is_built(model_copy):
    directory, meta = model_copy
    meta["arch"]["n_out"] = 1_500_000
    _write_meta(directory, meta)
    start, peak = time.perf_counter(), _peak_rss_bytes()
    with pytest.raises(ModelFileError, match=r"field 'arch\.n_out' must be an integer from 2 to 100000"):
        load_model(directory)
    assert time.perf_counter() - start < 5
    assert _peak_rss_bytes() - peak < 200 * 2**20


def test_head_wider_than_the_weights_is_refused_from_the_header_on_the_meta_device(model_copy, monkeypatch):
    directory, meta = model_copy
    meta["arch"]["n_out"] = 100_000
    meta["classes"] = [f"class {i}" for i in range(100_000)]
    _write_meta(directory, meta)
    devices = []
    real_build = artifact.build_network

    def recording_build(*args, **kwargs):
        devices.append(torch.empty(0).device.type)
        return real_build(*args, **kwargs)

    monkeypatch.setattr(artifact, "build_network", recording_build)
    with pytest.raises(ModelFileError, match="classifier head in the file has 3 outputs but petclf.json says "
                                             r"arch\.n_out=100000") as err:
        load_model(directory)
    assert devices == ["meta"]  # the 200 MB head was never allocated
    assert "\n" not in str(err.value) and "model.safetensors" in str(err.value)


def test_classes_must_match_the_width_of_the_head(model_copy):
    directory, meta = model_copy
    meta["classes"] = meta["classes"][:2]
    _write_meta(directory, meta)
    with pytest.raises(ModelFileError, match=r"field 'classes' has 2 names but field 'arch\.n_out' says the head "
                                             "has 3 outputs"):
        load_model(directory)


@pytest.mark.parametrize("classes, field", [
    (["pug", "pug", "cat"], "'classes' names 'pug' more than once"),
    (["pug", "", "cat"], r"field 'classes\[1\]' must be a class name"),
    (["pug", 7, "dog"], r"field 'classes\[1\]' must be a class name"),
    ({"pug": 0}, "field 'classes' must be a list"),
], ids=["duplicate", "empty", "number", "object"])
def test_class_names_are_unique_non_empty_text(model_copy, classes, field):
    directory, meta = model_copy
    meta["classes"] = classes
    _write_meta(directory, meta)
    with pytest.raises(ModelFileError, match=field):
        load_model(directory)


@pytest.mark.parametrize("fields, message", [
    ({"task": "regression"}, "field 'task' must be one of 'single_label', 'multi_label'"),
    ({"task": "multi_label", "thresholds": [0.5]}, "field 'thresholds' must be a list of 3 numbers"),
    ({"task": "multi_label", "thresholds": [0.5, "0.5", 0.5]}, "field 'thresholds' must be a list of 3 numbers"),
    ({"task": "multi_label", "thresholds": [0.5, 2.0, 0.5]}, "field 'thresholds' must be a list of 3 numbers"),
    ({"data": {"label_delim": "x" * 50}}, "field 'data.label_delim' must be null or a delimiter"),
    ({"data": {"fn_col": 3}}, "field 'data.fn_col' must be null or a column name"),
], ids=["task", "short-thresholds", "text-threshold", "threshold-above-1", "long-delimiter", "numeric-column"])
def test_task_thresholds_and_table_columns_are_checked(model_copy, fields, message):
    directory, meta = model_copy
    meta.update(fields)
    _write_meta(directory, meta)
    with pytest.raises(ModelFileError, match=message):
        load_model(directory)


def test_a_multi_label_model_without_thresholds_predicts_at_one_half(model_copy, pets_dir):
    directory, meta = model_copy
    meta["task"] = "multi_label"
    _write_meta(directory, meta)
    predictor = Predictor(directory, device="cpu", precision="fp32")
    assert predictor.multi_label and predictor.thresholds == (0.5, 0.5, 0.5)
    files = sorted(pets_dir.glob("*.jpg"))[:3]
    probs = predictor.probabilities(predictor.logits(files))
    assert [{c for c, _ in top} for top in predictor.predict_batch(files)] == \
        [{c for c, p in zip(predictor.classes, row.tolist()) if p >= 0.5} for row in probs]


@pytest.mark.parametrize("size", [10**9, 1e9, 4, "32", True], ids=["int-1e9", "float-1e9", "4", "text", "bool"])
def test_image_size_is_bounded(model_copy, size):
    directory, meta = model_copy
    meta["preprocessing"]["size"] = size
    _write_meta(directory, meta)
    with pytest.raises(ModelFileError, match=r"field 'preprocessing\.size' must be an integer from 8 to 2048"):
        load_model(directory)


@pytest.mark.parametrize("presize", [31, 97, 10**6, 48.0], ids=["below-size", "above-3x", "huge", "float"])
def test_presize_is_between_size_and_three_times_size(model_copy, presize):
    directory, meta = model_copy
    meta["preprocessing"]["presize"] = presize
    _write_meta(directory, meta)
    with pytest.raises(ModelFileError, match=r"field 'preprocessing\.presize' must be an integer from size \(32\) to 96"):
        load_model(directory)


def test_zero_std_is_refused_naming_the_field(model_copy):
    directory, meta = model_copy
    meta["preprocessing"]["std"] = [0, 1, 1]
    _write_meta(directory, meta)
    with pytest.raises(ModelFileError) as err:
        load_model(directory)
    assert str(err.value) == (f"{directory / 'petclf.json'}: field 'preprocessing.std' must be 3 positive finite "
                              "numbers from 1e-06 to 1000 (found [0, 1, 1]); the model directory is damaged or was "
                              "not written by petclf.")


@pytest.mark.parametrize("text", ['[NaN, 0.4, 0.4]', '["NaN", 0.4, 0.4]', '[Infinity, 0.4, 0.4]', '[0.4, 0.4]',
                                  '[0.4, 0.4, true]'], ids=["json-nan", "text-nan", "infinity", "two", "bool"])
def test_non_finite_mean_is_refused(model_copy, text):
    directory, meta = model_copy
    meta["preprocessing"]["mean"] = "__mean__"
    (directory / "petclf.json").write_text(json.dumps(meta).replace('"__mean__"', text))
    with pytest.raises(ModelFileError, match=r"field 'preprocessing\.mean' must be 3 finite numbers"):
        load_model(directory)


@pytest.mark.parametrize("version", ["abc", 1.5, None, True, 0, -1], ids=str)
def test_format_version_must_be_a_known_integer(model_copy, version):
    directory, meta = model_copy
    meta["format_version"] = version
    _write_meta(directory, meta)
    with pytest.raises(ModelFileError, match="field 'format_version' must be the integer 1"):
        load_model(directory)


def test_newer_format_version_asks_for_an_upgrade(model_copy):
    directory, meta = model_copy
    meta["format_version"] = 2
    meta["arch"] = "described differently in format 2"
    _write_meta(directory, meta)
    with pytest.raises(UsageError, match="written by a newer petclf .format 2.; upgrade petclf"):
        load_model(directory)


_FIELD_CASES = [  # field, new value (None: removed), message
    ("arch", None, "field 'arch' is missing"),
    ("arch.n_out", None, r"field 'arch\.n_out' is missing"),
    ("preprocessing", None, "field 'preprocessing' is missing"),
    ("arch.source", "pypi", r"field 'arch\.source' must be one of 'torchvision', 'timm', 'registered', 'custom' \(found 'pypi'\)"),
    ("arch.name", 18, r"field 'arch\.name' must be a model name"),
    ("preprocessing.augment", "mixup", r"field 'preprocessing\.augment' must be one of"),
    ("data", [], "field 'data' must be an object"),
    ("data.layout", "flat", r"field 'data\.layout' must be null or one of"),
    ("data.label_pat", "(unclosed", r"field 'data\.label_pat' must be a valid regular expression"),
    ("data.valid_pct", 1.0, r"field 'data\.valid_pct' must be a number in \[0, 1\)"),
    ("data.seed", -1, r"field 'data\.seed' must be an integer from 0"),
    ("summary", "fine", "field 'summary' must be an object"),
    ("precision", 16, "field 'precision' must be null or a precision name"),
]


@pytest.mark.parametrize("field, value, message", _FIELD_CASES, ids=[case[0] for case in _FIELD_CASES])
def test_each_field_is_named_when_wrong(model_copy, field, value, message):
    directory, meta = model_copy
    *parents, last = field.split(".")
    holder = meta
    for key in parents:
        holder = holder[key]
    if value is None:
        del holder[last]
    else:
        holder[last] = value
    _write_meta(directory, meta)
    with pytest.raises(ModelFileError, match=message) as err:
        load_model(directory)
    assert str(err.value).startswith(f"{directory / 'petclf.json'}: ") and "\n" not in str(err.value)


def test_json_list_is_not_a_model_description(model_copy):
    directory, meta = model_copy
    _write_meta(directory, [meta])
    with pytest.raises(ModelFileError, match="holds a JSON list, not an object"):
        load_model(directory)


def test_deep_nesting_is_refused_without_recursion_error(model_copy):
    directory, meta = model_copy
    meta["summary"] = "__deep__"
    (directory / "petclf.json").write_text(json.dumps(meta).replace('"__deep__"', "[" * 100_000 + "]" * 100_000))
    with pytest.raises(ModelFileError, match="nests lists or objects too deeply"):
        load_model(directory)
    meta["summary"] = "__deep__"
    (directory / "petclf.json").write_text(json.dumps(meta).replace('"__deep__"', "[" * 100 + "]" * 100))
    with pytest.raises(ModelFileError, match="more than 32 levels deep"):
        load_model(directory)


def test_oversized_meta_is_refused_before_it_is_parsed(model_copy):
    directory, meta = model_copy
    meta["padding"] = "x" * (17 * 2**20)
    _write_meta(directory, meta)
    with pytest.raises(ModelFileError, match="larger than 16 MB"):
        load_model(directory)


@pytest.mark.parametrize("keep", [0, 5, 1000, 0.5], ids=["empty", "5-bytes", "header-cut", "half"])
def test_truncated_weights_are_a_model_file_error(model_copy, keep):
    directory, _ = model_copy
    weights = directory / "model.safetensors"
    data = weights.read_bytes()
    weights.unlink()  # the link's target is the shared trained model
    weights.write_bytes(data[:int(len(data) * keep) if isinstance(keep, float) else keep])
    with pytest.raises(ModelFileError, match="model.safetensors") as err:
        load_model(directory)
    assert "\n" not in str(err.value)


def test_weights_of_another_network_are_named_by_key(model_copy, tmp_path):
    directory, _ = model_copy
    weights = directory / "model.safetensors"
    state = load_file(str(weights))
    state["extra.weight"] = torch.zeros(2)
    del state["0.0.weight"]
    state["0.1.num_batches_tracked"] = torch.zeros(1, dtype=torch.float32).reshape(())
    weights.unlink()
    save_file(state, str(weights))
    with pytest.raises(ModelFileError, match=r"1 missing keys \(e\.g\. '0\.0\.weight'\); 1 unexpected keys "
                                             r"\(e\.g\. 'extra\.weight'\); 1 tensors of another shape or type "
                                             r"\(e\.g\. '0\.1\.num_batches_tracked' 'F32' in the file, an integer dtype expected\)"):
        load_model(directory)


def test_missing_weights_file_is_a_model_file_error(model_copy):
    directory, _ = model_copy
    (directory / "model.safetensors").unlink()
    with pytest.raises(ModelFileError, match="model.safetensors is missing"):
        load_model(directory)


def test_predict_command_reports_a_damaged_model_in_one_line(model_copy, pets_dir, capsys):
    directory, meta = model_copy
    del meta["preprocessing"]
    _write_meta(directory, meta)
    assert main(["predict", str(directory), str(pets_dir / "pug_1.jpg")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("petclf: error: ") and "\n" not in err
    assert "field 'preprocessing' is missing" in err


def _locations(value: object, prefix: tuple = ()) -> list[tuple]:
    """Paths (tuples of keys and indices) to every value in a JSON tree, the root included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += _locations(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value[:4]):
            found += _locations(child, prefix + (index,))
    return found


def _set(tree: object, where: tuple, value: object) -> object:
    if not where:
        return value
    holder = tree
    for key in where[:-1]:
        holder = holder[key]
    holder[where[-1]] = value
    return tree


def _classes_variant(rng: random.Random, meta: dict) -> None:
    n = rng.choice([0, 1, 2, 4, 1000, 100_000, 1_500_000])
    meta["classes"] = rng.choice([[f"c{i}" for i in range(n)], ["pug"] * n, list(range(n)), [""] * n])
    if rng.random() < 0.7:  # a consistent n_out as well, so that the weights header has to catch it
        meta["arch"]["n_out"] = n


_JUNK = [None, True, False, 0, -1, 1, 3, 1.5, 1e9, 1e30, -1e30, 10**30, float("nan"), float("inf"), "NaN", "",
         "abc", "x" * 5000, [], {}, [1, 2, 3], [0, 1, 1], ["a", "a"], {"a": 1}, [None, None, None]]
_BIG_NUMBERS = [10**9, 1e9, 1e30, -1, 0, 2**64, -(2**63), 1.5, float("nan"), float("-inf"), "NaN", "1e9"]


def _mutate(rng: random.Random, meta: dict) -> tuple[object, str]:
    """One random damage to a parsed petclf.json: the new tree and what was done."""
    where = rng.choice(_locations(meta))
    kind = rng.choice(["drop", "drop", "retype", "retype", "number", "deep", "classes", "add"])
    if kind == "drop" and where:
        holder = meta
        for key in where[:-1]:
            holder = holder[key]
        del holder[where[-1]]
        return meta, f"drop {where}"
    if kind == "number":
        numeric = [w for w in _locations(meta) if w and isinstance(_get(meta, w), (int, float))]
        where, value = rng.choice(numeric), rng.choice(_BIG_NUMBERS)
        return _set(meta, where, value), f"set {where} to {value!r}"
    if kind == "deep":
        depth = rng.choice([33, 1000, 100_000])
        return _set(meta, where, f"__deep{depth}__"), f"nest {where} {depth} deep"
    if kind == "classes":
        _classes_variant(rng, meta)
        return meta, f"classes {reprlib.repr(meta['classes'])}, n_out {meta['arch'].get('n_out')!r}"
    if kind == "add":
        dicts = [w for w in _locations(meta) if isinstance(_get(meta, w), dict)]
        where = rng.choice(dicts)
        _get(meta, where)["unknown"] = rng.choice(_JUNK)
        return meta, f"add a key under {where}"
    value = rng.choice(_JUNK)
    return _set(meta, where, value), f"set {where} to {reprlib.repr(value)}"


def _get(tree: object, where: tuple) -> object:
    for key in where:
        tree = tree[key]
    return tree


def _render(rng: random.Random, meta: object) -> bytes:
    text = json.dumps(meta)
    for depth in (33, 1000, 100_000):
        text = text.replace(f'"__deep{depth}__"', "[" * depth + "]" * depth)
    data = text.encode()
    roll = rng.random()
    if roll < 0.05:
        data = data[:rng.randrange(len(data))]
    elif roll < 0.1:
        at = rng.randrange(len(data))
        data = data[:at] + rng.choice([b"\xff", b"\x00", b"{", b"]", b"\xc3"]) + data[at + 1:]
    return data


def test_random_damage_to_meta_loads_or_raises_a_petclf_error(model_copy):
    directory, original = model_copy
    rng = random.Random(20240611)
    outcomes = {"loaded": 0, "refused": 0}
    start, peak = time.perf_counter(), _peak_rss_bytes()
    for _ in range(200):
        meta, done = copy.deepcopy(original), []
        for _ in range(rng.choice([1, 1, 2, 3])):
            if not isinstance(meta, dict):
                break
            meta, what = _mutate(rng, meta)
            done.append(what)
        (directory / "petclf.json").write_bytes(_render(rng, meta))
        try:
            loaded = load_model(directory)
        except PetclfError as err:
            assert "\n" not in str(err), (done, str(err))
            outcomes["refused"] += 1
        except BaseException as err:  # noqa: BLE001 - any other error is the bug this test looks for
            pytest.fail(f"{'; '.join(done)} → {type(err).__name__}: {str(err)[:300]}")
        else:
            assert len(loaded.classes) == loaded.meta["arch"]["n_out"] == 3, done
            outcomes["loaded"] += 1
    seconds, grown = time.perf_counter() - start, _peak_rss_bytes() - peak
    assert outcomes["refused"] > 100 and outcomes["loaded"] > 5, outcomes
    assert seconds < 60, f"200 damaged files took {seconds:.1f} s"
    assert grown < 2**30, f"peak memory grew by {grown / 2**20:.0f} MB"


def test_custom_architectures_are_checked_against_the_header_too(pets_dir, tmp_path):
    import torchvision  # noqa: PLC0415

    def body():
        return torchvision.models.resnet18(weights=None)

    learn = quick_learner(pets_dir, precision="fp32", **{**TINY, "arch": body})
    model_dir = save_model(learn, tmp_path / "m")
    loaded = load_model(model_dir, arch=body)
    assert loaded.meta["arch"]["source"] == "custom" and len(loaded.classes) == 3
    module = load_model(model_dir, arch=learn.model).model  # a module is used whole, as in training
    assert module is learn.model
    with pytest.raises(ModelFileError, match="does not hold the weights of custom"):
        load_model(model_dir, arch=lambda: torchvision.models.resnet34(weights=None))


def test_weights_header_checks_on_their_own(tmp_path):
    expected = {"w": torch.empty(4, 2, device="meta"), "b": torch.empty(4, device="meta")}
    good = tmp_path / "good.safetensors"
    save_file({"w": torch.zeros(4, 2, dtype=torch.bfloat16), "b": torch.zeros(4)}, str(good))
    modelcheck.check_weights_header(good, expected, arch="tiny", n_out=4)  # bf16 into fp32 loads
    narrow = tmp_path / "narrow.safetensors"
    save_file({"w": torch.zeros(3, 2), "b": torch.zeros(3)}, str(narrow))
    with pytest.raises(ModelFileError, match="classifier head in the file has 3 outputs but petclf.json says "
                                             r"arch\.n_out=4; 2 tensors of another shape"):
        modelcheck.check_weights_header(narrow, expected, arch="tiny", n_out=4)
    crowded = tmp_path / "crowded.safetensors"
    save_file({f"t{i}": torch.zeros(1) for i in range(500)}, str(crowded))
    with pytest.raises(ModelFileError, match="holds 500 tensors, tiny has 2"):
        modelcheck.check_weights_header(crowded, expected, arch="tiny")
    boastful = tmp_path / "boastful.safetensors"
    boastful.write_bytes((2**40).to_bytes(8, "little") + b"{}")
    with pytest.raises(ModelFileError, match="declares a 1099511627776-byte header"):
        modelcheck.check_weights_header(boastful, expected, arch="tiny")


# --- issue #21 item 13: fields that decide how a model predicts are type-checked, not read by truthiness


@pytest.mark.parametrize("value", ["no", "false", {}, [1], 1, 0, None], ids=["no", "false-text", "object", "list",
                                                                           "one", "zero", "null"])
def test_tta_must_be_true_or_false(model_copy, value):
    """``"tta": "no"`` used to switch TTA on (any non-empty value is truthy)."""
    directory, meta = model_copy
    meta["tta"] = value
    _write_meta(directory, meta)
    with pytest.raises(ModelFileError, match=r"petclf\.json: field 'tta' must be true or false \(found ") as err:
        Predictor(directory, device="cpu")
    assert str(err.value).startswith(str(directory / "petclf.json"))


def test_tta_true_and_false_load_as_written(model_copy):
    directory, meta = model_copy
    for value in (True, False):
        meta["tta"] = value
        _write_meta(directory, meta)
        assert Predictor(directory, device="cpu").tta is value
    del meta["tta"]  # models from before --tta
    _write_meta(directory, meta)
    assert Predictor(directory, device="cpu").tta is False


@pytest.mark.parametrize("value", ["garbage", "abc", {"a": 0.5}, [0.5, 0.5, "x"], 0.5],
                         ids=["text", "text-of-class-count", "object", "text-item", "number"])
def test_a_single_label_models_thresholds_are_type_checked_too(model_copy, value):
    """A single-label model's ``"thresholds": "garbage"`` was judged by the string's length."""
    directory, meta = model_copy
    assert meta.get("task", "single_label") == "single_label"
    meta["thresholds"] = value
    _write_meta(directory, meta)
    with pytest.raises(ModelFileError, match=r"petclf\.json: field 'thresholds' must be null or a list of 3 numbers"):
        Predictor(directory, device="cpu")


def test_versions_must_be_an_object(model_copy):
    directory, meta = model_copy
    meta["versions"] = "torch 2"
    _write_meta(directory, meta)
    with pytest.raises(ModelFileError, match=r"field 'versions' must be an object"):
        load_model(directory)
