"""FIL backend: real XGBoost, LightGBM and scikit-learn forests trained here, checked against
the library's own predict; Treelite gives the same numbers; config errors are load errors."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xgboost as xgb
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from modelyard.errors import ConfigError, Internal, InvalidArgument
from modelyard.runtimes._fil_engines import open_forest
from modelyard.runtimes.base import RuntimeOptions, factory_for
from modelyard.runtimes.fil import FilFactory, FilRuntime
from tests.factories.trees import CASES, FEATURES, TreeCase, dataset, rows

OPTS = RuntimeOptions()
X = rows(64)


@pytest.fixture(scope="module")
def trained() -> dict[str, Any]:
    return {case.name: case.train() for case in CASES}


def _config(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


def _load(folder: Path, text: str | None = None) -> FilRuntime:
    config = _config(text if text is not None else (folder / "config.pbtxt").read_text())
    runtime = factory_for(config).load(config, folder / "1" / "model.fil", OPTS)
    assert isinstance(runtime, FilRuntime)
    return runtime


def _infer(runtime: FilRuntime, x: np.ndarray[Any, Any] = X) -> np.ndarray[Any, Any]:
    return runtime.infer({"input__0": x}, ["output__0"])["output__0"]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_outputs_match_the_librarys_own_predict(
    case: TreeCase, trained: dict[str, Any], tmp_path: Path
) -> None:
    model = trained[case.name]
    runtime = _load(case.write(tmp_path, model))
    out = _infer(runtime)
    expected = case.expected(model, X)
    assert out.dtype == np.float32
    assert out.shape == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    own = {"xgboost": "xgboost", "lightgbm": "lightgbm", "sklearn": "treelite"}[case.library]
    assert runtime.library.startswith(own)


@pytest.mark.parametrize("case", [c for c in CASES if c.library != "sklearn"], ids=lambda c: c.name)
def test_treelite_predicts_what_the_library_does(
    case: TreeCase, trained: dict[str, Any], tmp_path: Path
) -> None:
    """Treelite is what Triton itself runs, and modelyard's fallback: same numbers."""
    path = case.save(trained[case.name], tmp_path / case.filename)
    own = open_forest(path, case.model_type)
    tl = open_forest(path, case.model_type, library="treelite")
    assert tl.library.startswith("treelite")
    assert (tl.num_features, tl.width) == (own.num_features, own.width)
    np.testing.assert_allclose(tl.predict(X), own.predict(X), rtol=1e-5, atol=1e-6)


def test_multi_softmax_gives_class_ids_or_softmax_probabilities(tmp_path: Path) -> None:
    """XGBoost's predict answers class ids for multi:softmax; FIL's probabilities are Treelite's."""
    x, y = dataset("multiclass")
    params = {"objective": "multi:softmax", "num_class": 3, "max_depth": 3, "nthread": 1}
    booster = xgb.train(params, xgb.DMatrix(x, label=y), 8)
    folder = tmp_path / "softmax"
    (folder / "1").mkdir(parents=True)
    booster.save_model(str(folder / "1" / "xgboost.json"))
    labels = TreeCase("softmax", "xgboost", "multiclass", "xgboost_json")
    np.testing.assert_array_equal(
        _infer(_load(folder, labels.config()))[:, 0], booster.predict(xgb.DMatrix(X))
    )
    proba = TreeCase("softmax", "xgboost", "multiclass", "xgboost_json", predict_proba=True)
    tl = open_forest(folder / "1" / "xgboost.json", "xgboost_json", library="treelite")
    np.testing.assert_allclose(
        _infer(_load(folder, proba.config())), tl.predict(X), rtol=1e-5, atol=1e-6
    )


def test_an_xgboost_model_file_written_by_a_recent_xgboost_is_read_as_ubjson(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    """XGBoost 2.1+ saves UBJSON under any name but .json: model_type xgboost still loads it."""
    case = TreeCase("ubj_named_model", "xgboost", "binary", "xgboost")
    model = trained["xgb_ubj_threshold"]
    folder = case.write(tmp_path, model)
    model.get_booster().save_model(str(tmp_path / "m.ubj"))
    (tmp_path / "m.ubj").replace(folder / "1" / "xgboost.model")
    np.testing.assert_array_equal(_infer(_load(folder)), case.expected(model, X))


def test_default_model_filename_overrides_fils_name(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    case = CASES[0]
    folder = case.write(tmp_path, trained[case.name])
    (folder / "1" / case.filename).rename(folder / "1" / "trees.bin")
    text = case.config() + 'default_model_filename: "trees.bin"\n'
    config = _config(text)
    runtime = FilFactory().load(config, folder / "1" / "trees.bin", OPTS)
    np.testing.assert_array_equal(_infer(runtime), case.expected(trained[case.name], X))


def test_a_missing_file_names_the_model_type_that_would_fit(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    case = next(c for c in CASES if c.model_type == "xgboost_json")
    folder = case.write(tmp_path, trained[case.name])
    text = case.config().replace('"xgboost_json"', '"xgboost"')
    with pytest.raises(ConfigError, match=r"'xgboost.model'.*set model_type to 'xgboost_json'"):
        _load(folder, text)


def test_a_corrupt_model_file_is_a_config_error(tmp_path: Path) -> None:
    case = next(c for c in CASES if c.model_type == "lightgbm")
    folder = tmp_path / case.name
    (folder / "1").mkdir(parents=True)
    (folder / "1" / "model.txt").write_text("not a model\n")
    with pytest.raises(ConfigError, match=r"failed to load .*model\.txt"):
        _load(folder, case.config())


# -- the config, checked at load ---------------------------------------------------------------


@pytest.fixture(scope="module")
def binary_folder(trained: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    case = next(c for c in CASES if c.name == "xgb_ubj_binary_proba")
    return case.write(tmp_path_factory.mktemp("repo"), trained[case.name])


def _text(folder: Path) -> str:
    return (folder / "config.pbtxt").read_text()


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            'key: "output_class"',
            'key: "unrelated"',
            "needs parameter 'output_class'",
        ),
        ('"xgboost_ubj"', '"catboost"', "model_type 'catboost' is not one of FIL's"),
        ('string_value: "true"', 'string_value: "yes"', "must be 'true' or 'false'"),
        ("dims: [ 6 ]", "dims: [ 5 ]", r"reads 6 features per row: use dims \[ 6 \]"),
        (
            "dims: [ 2 ]",
            "dims: [ 3 ]",
            r"gives 2 or 1 value\(s\) per row .* use dims \[ 2 \] or \[ 1 \]",
        ),
        ('"input__0"', '"features"', "takes exactly one input, 'input__0'"),
        ('"output__0"', '"treeshap_output"', "'treeshap_output' .* is not supported"),
        (
            "output [ { name",
            'output [ { name: "extra" data_type: TYPE_FP32 dims: [ 1 ] }, { name',
            "returns one output",
        ),
        ("TYPE_FP32 dims: [ 6 ]", "TYPE_FP64 dims: [ 6 ]", "'input__0' is TYPE_FP64"),
    ],
)
def test_config_mistakes_are_load_errors(
    binary_folder: Path, old: str, new: str, message: str
) -> None:
    text = _text(binary_folder)
    assert old in text
    with pytest.raises(ConfigError, match=message):
        _load(binary_folder, text.replace(old, new, 1))


def test_is_classifier_is_tritons_newer_name_for_output_class(binary_folder: Path) -> None:
    text = _text(binary_folder).replace('"output_class"', '"is_classifier"')
    assert _infer(_load(binary_folder, text)).shape == (len(X), 2)


def test_a_binary_classifier_gives_p_alone_with_dims_1(binary_folder: Path) -> None:
    pair = _infer(_load(binary_folder))
    single = _infer(
        _load(binary_folder, _text(binary_folder).replace("dims: [ 2 ]", "dims: [ 1 ]"))
    )
    np.testing.assert_array_equal(single[:, 0], pair[:, 1])
    np.testing.assert_allclose(pair.sum(axis=1), 1.0, rtol=1e-6)


def test_wrong_feature_count_is_invalid_argument(binary_folder: Path) -> None:
    """Shapes the config lets through (dims [-1]) are checked against the model itself."""
    runtime = _load(binary_folder, _text(binary_folder).replace("dims: [ 6 ]", "dims: [ -1 ]"))
    with pytest.raises(
        InvalidArgument, match=r"expects 6 features per row in 'input__0', got shape \[2, 5\]"
    ):
        _infer(runtime, np.zeros((2, 5), np.float32))


def test_zero_rows_give_zero_rows(binary_folder: Path) -> None:
    assert _infer(_load(binary_folder), np.zeros((0, FEATURES), np.float32)).shape == (0, 2)


def test_an_unbatched_config_runs_the_rows_it_is_given(binary_folder: Path) -> None:
    text = (
        _text(binary_folder)
        .replace("max_batch_size: 256", "max_batch_size: 0")
        .replace("dims: [ 6 ]", "dims: [ -1, 6 ]")
        .replace("dims: [ 2 ]", "dims: [ -1, 2 ]")
    )
    np.testing.assert_array_equal(_infer(_load(binary_folder, text)), _infer(_load(binary_folder)))


# -- auto-complete ----------------------------------------------------------------------------


def _bare(case: TreeCase) -> str:
    """The config with its tensors and batching left out."""
    keep = [
        line
        for line in case.config().splitlines()
        if not line.startswith(("input", "output", "max_batch_size", "dynamic_batching"))
    ]
    return "\n".join(keep)


@pytest.mark.parametrize(
    ("name", "width"),
    [
        ("xgb_ubj_binary_proba", 2),
        ("lgb_multiclass_proba", 3),
        ("lgb_regression", 1),
        ("skl_rf_multiclass", 1),
    ],
)
def test_autocomplete_fills_fils_tensors_from_the_model(
    name: str, width: int, trained: dict[str, Any], tmp_path: Path
) -> None:
    case = next(c for c in CASES if c.name == name)
    folder = case.write(tmp_path, trained[name])
    config = _config(_bare(case))
    FilFactory().autocomplete(config, folder / "1" / "model.fil", RuntimeOptions(16))
    assert config.max_batch_size == 16 and config.HasField("dynamic_batching")
    assert [(t.name, t.data_type, list(t.dims)) for t in config.input] == [
        ("input__0", mc.TYPE_FP32, [FEATURES])
    ]
    assert [(t.name, t.data_type, list(t.dims)) for t in config.output] == [
        ("output__0", mc.TYPE_FP32, [width])
    ]
    runtime = FilFactory().load(config, folder / "1" / "model.fil", OPTS)
    assert _infer(runtime).shape == (len(X), width)


def test_autocomplete_leaves_a_complete_config_unread(tmp_path: Path) -> None:
    """Triton's FIL configs always list both tensors: no model file is opened for them."""
    config = _config(CASES[0].config())
    before = config.SerializeToString()
    FilFactory().autocomplete(config, tmp_path / "1" / "model.fil", OPTS)  # no file there
    assert config.SerializeToString() == before


# -- concurrency ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["xgb_json_proba", "lgb_multiclass_proba", "skl_rf_binary_proba"])
def test_concurrent_infer_calls_on_one_model_agree_with_sequential_ones(
    name: str, trained: dict[str, Any], tmp_path: Path
) -> None:
    case = next(c for c in CASES if c.name == name)
    runtime = _load(case.write(tmp_path, trained[name]))
    batches = [rows(1 + i % 9, seed=i) for i in range(32)]
    expected = [_infer(runtime, b) for b in batches]
    failures: list[str] = []

    def work(offset: int) -> None:
        for _ in range(5):
            for i in range(len(batches)):
                j = (i + offset) % len(batches)
                if not np.array_equal(_infer(runtime, batches[j]), expected[j]):
                    failures.append(f"batch {j} differed")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


def test_unload_then_the_folder_can_go(binary_folder: Path, tmp_path: Path) -> None:
    folder = shutil.copytree(binary_folder, tmp_path / "copy")
    runtime = _load(folder)
    runtime.unload()
    shutil.rmtree(folder)


def test_xgboost_runs_through_its_dense_entry_point(
    trained: dict[str, Any], tmp_path: Path
) -> None:
    """The direct C call answers what inplace_predict does, and its errors are typed."""
    case = next(c for c in CASES if c.name == "xgb_json_proba")
    model = trained[case.name]
    forest = open_forest(case.save(model, tmp_path / case.filename), case.model_type)
    assert getattr(forest, "_dense", None) is not None
    np.testing.assert_array_equal(forest.predict(X), model.get_booster().inplace_predict(X))
    with pytest.raises(Internal, match=r"xgboost prediction failed: .*\(5 vs\. 6\)"):
        forest.predict(np.zeros((2, 5), np.float32))
