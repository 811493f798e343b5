"""Real tree models, trained here on a few hundred seeded rows, laid out as Triton FIL models.

A :class:`TreeCase` is one FIL model: which library trains it, the task, how it is saved
(``model_type``) and the config parameters. ``train`` fits it and ``write`` puts the file
and a ``config.pbtxt`` into a repository; ``expected`` is what the library's own scikit-learn
style ``predict`` / ``predict_proba`` answer for the same rows, as Triton's FIL backend
returns them (FP32, one class id per row, or per-class probabilities).

Shared by the unit tests, the integration tests and ``bench/trees.py``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

FEATURES = 6
CLASSES = 3
FILENAMES = {
    "xgboost": "xgboost.model",
    "xgboost_json": "xgboost.json",
    "xgboost_ubj": "xgboost.ubj",
    "lightgbm": "model.txt",
    "treelite_checkpoint": "checkpoint.tl",
}


def dataset(task: str, rows: int = 300, features: int = FEATURES, seed: int = 0) -> Any:
    """Seeded FP32 rows and labels: binary, multiclass (``CLASSES``) or regression targets."""
    rng = np.random.default_rng(seed)
    x = rng.random((rows, features), dtype=np.float32)
    score = x[:, 0] + 0.5 * x[:, 1] - 0.25 * x[:, 2] + 0.1 * rng.standard_normal(rows)
    if task == "binary":
        y: Any = (score > np.median(score)).astype(np.int64)
    elif task == "multiclass":
        y = np.digitize(score, np.quantile(score, [1 / 3, 2 / 3])).astype(np.int64)
    else:
        y = (3 * score).astype(np.float32)
    return x, y


def rows(n: int = 64, features: int = FEATURES, seed: int = 1) -> Any:
    """Fresh FP32 rows to predict, with a few missing values (NaN), as real traffic has."""
    x = np.random.default_rng(seed).random((n, features), dtype=np.float32)
    x[::7, 1] = np.nan
    return x


@dataclass(frozen=True)
class TreeCase:
    name: str
    library: str  # "xgboost", "lightgbm", "sklearn"
    task: str  # "binary", "multiclass", "regression"
    model_type: str
    predict_proba: bool = False
    threshold: float | None = None
    proba_dims: int | None = None  # dims of output__0 for a binary predict_proba: 1 or 2
    trees: int = 10
    depth: int = 3
    features: int = FEATURES
    max_batch_size: int = 256
    train_rows: int = 300
    cpu_nthread: int | None = None

    @property
    def classifier(self) -> bool:
        return self.task != "regression"

    @property
    def filename(self) -> str:
        return FILENAMES[self.model_type]

    def train(self, seed: int = 0) -> Any:
        """The fitted scikit-learn style estimator."""
        x, y = dataset(self.task, rows=self.train_rows, features=self.features, seed=seed)
        kwargs: dict[str, Any] = {"n_estimators": self.trees, "max_depth": self.depth}
        if self.library == "xgboost":
            import xgboost as xgb

            kwargs["n_jobs"] = 1
            cls = xgb.XGBClassifier if self.classifier else xgb.XGBRegressor
        elif self.library == "lightgbm":
            import lightgbm as lgb

            kwargs.update(verbose=-1, min_child_samples=5, n_jobs=1)
            cls = lgb.LGBMClassifier if self.classifier else lgb.LGBMRegressor
        else:
            from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor

            kwargs["random_state"] = seed
            cls = RandomForestClassifier if self.classifier else RandomForestRegressor
        return cls(**kwargs).fit(x, y)

    def save(self, model: Any, path: Path) -> Path:
        """The model file, in this case's format, at ``path``."""
        path.parent.mkdir(parents=True, exist_ok=True)
        if self.library == "xgboost":
            booster = model.get_booster()
            if self.model_type == "xgboost":  # XGBoost < 3.1 writes the legacy binary format
                legacy = path.with_suffix(".deprecated")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    booster.save_model(str(legacy))
                legacy.replace(path)
            else:
                booster.save_model(str(path))
        elif self.library == "lightgbm":
            model.booster_.save_model(str(path))
        else:
            import treelite.sklearn

            treelite.sklearn.import_model(model).serialize(str(path))
        return path

    def config(self, name: str | None = None) -> str:
        """The config.pbtxt Triton's FIL backend takes for this model."""
        width = 1
        if self.predict_proba:
            width = CLASSES if self.task == "multiclass" else (self.proba_dims or 2)
        params = {
            "model_type": self.model_type,
            "output_class": str(self.classifier).lower(),
            "predict_proba": str(self.predict_proba).lower(),
        }
        if self.threshold is not None:
            params["threshold"] = str(self.threshold)
        if self.cpu_nthread is not None:
            params["cpu_nthread"] = str(self.cpu_nthread)
        body = ",\n".join(
            f'  {{ key: "{k}" value: {{ string_value: "{v}" }} }}' for k, v in params.items()
        )
        return f"""name: "{name or self.name}"
backend: "fil"
max_batch_size: {self.max_batch_size}
input [ {{ name: "input__0" data_type: TYPE_FP32 dims: [ {self.features} ] }} ]
output [ {{ name: "output__0" data_type: TYPE_FP32 dims: [ {width} ] }} ]
instance_group [ {{ kind: KIND_AUTO }} ]
parameters [
{body}
]
dynamic_batching {{ }}
"""

    def write(self, repo: Path, model: Any, name: str | None = None, version: int = 1) -> Path:
        """``repo/<name>/config.pbtxt`` and ``repo/<name>/<version>/<FIL's file name>``."""
        folder = repo / (name or self.name)
        self.save(model, folder / str(version) / self.filename)
        (folder / "config.pbtxt").write_text(self.config(name))
        return folder

    def expected(self, model: Any, x: Any) -> Any:
        """What Triton's FIL backend answers for ``x``, from the library's own predict."""
        if not self.classifier:
            return np.asarray(model.predict(x), dtype=np.float32).reshape(-1, 1)
        if self.predict_proba:
            proba = np.asarray(model.predict_proba(x), dtype=np.float32)
            return proba[:, 1:] if self.proba_dims == 1 else proba
        if self.threshold is not None:
            p = np.asarray(model.predict_proba(x))[:, 1]
            return (p > self.threshold).astype(np.float32).reshape(-1, 1)
        return np.asarray(model.predict(x), dtype=np.float32).reshape(-1, 1)


# one case per model_type and output mode: every FIL combination, each on a real model
CASES = [
    TreeCase("xgb_legacy_binary", "xgboost", "binary", "xgboost"),
    TreeCase("xgb_json_multiclass", "xgboost", "multiclass", "xgboost_json"),
    TreeCase("xgb_json_proba", "xgboost", "multiclass", "xgboost_json", predict_proba=True),
    TreeCase("xgb_ubj_binary_proba", "xgboost", "binary", "xgboost_ubj", predict_proba=True),
    TreeCase("xgb_ubj_threshold", "xgboost", "binary", "xgboost_ubj", threshold=0.3),
    TreeCase("xgb_json_regression", "xgboost", "regression", "xgboost_json"),
    TreeCase("lgb_binary", "lightgbm", "binary", "lightgbm"),
    TreeCase(
        "lgb_binary_proba1", "lightgbm", "binary", "lightgbm", predict_proba=True, proba_dims=1
    ),
    TreeCase("lgb_multiclass_proba", "lightgbm", "multiclass", "lightgbm", predict_proba=True),
    TreeCase("lgb_regression", "lightgbm", "regression", "lightgbm"),
    TreeCase("skl_rf_multiclass", "sklearn", "multiclass", "treelite_checkpoint"),
    TreeCase("skl_rf_binary_proba", "sklearn", "binary", "treelite_checkpoint", predict_proba=True),
    TreeCase("skl_rf_regression", "sklearn", "regression", "treelite_checkpoint"),
]
