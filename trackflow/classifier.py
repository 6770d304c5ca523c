"""The model users get: a fitted preprocessor and the network trained on its output, as one object.

Named columns in; out, a DataFrame with the predicted `label` (the class names of the
training data) and one `proba_<class>` column per class, summing to 1. MLflow serves it
as a pyfunc model built from code (trackflow/served_model.py), and its files load
without unpickling anything: the network's weights are safetensors, the fitted
scikit-learn preprocessor is saved with skops, which loads only the types it is told to trust.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from trackflow.model import MLPClassifier

WEIGHTS, PREPROCESSOR, META = "weights.safetensors", "preprocessor.skops", "meta.json"
# What a fitted preprocessor of ours holds beyond scikit-learn's own types (skops asks for them by name).
_TRUSTED = ["numpy.dtype", "trackflow.classifier.as_text"]
PROBA = "proba_"


class UnscorableInputError(ValueError):
    """A row the model cannot give finite probabilities for; the message names the row and the column."""


def as_text(X):
    """Categories as strings (bools and mixed types compare consistently), missing values kept missing.

    Part of the fitted preprocessor (a FunctionTransformer step), so it lives here, with
    what loads the model, rather than with the training code.
    """
    frame = pd.DataFrame(X).astype(object)
    return frame.apply(lambda col: col.map(lambda v: np.nan if pd.isna(v) else str(v))).to_numpy(dtype=object)


@dataclass
class FittedClassifier:
    """A fitted preprocessor, the network trained on its output, the class names and the input columns."""

    preprocessor: object  # sklearn ColumnTransformer, fitted
    network: MLPClassifier
    classes: list
    columns: list[str]

    def predict_proba(self, frame: pd.DataFrame) -> np.ndarray:
        """Class probabilities, finite and summing to 1 per row; UnscorableInputError names a row they cannot be."""
        import torch

        X = frame[self.columns]
        numbers = X.select_dtypes("number")
        infinite = np.isinf(numbers.to_numpy(dtype=np.float64, na_value=np.nan))
        if infinite.any():
            i = int(np.flatnonzero(infinite.any(axis=1))[0])
            raise self._unscorable(X, i, numbers.columns[int(np.argmax(infinite[i]))],
                                   "is not a finite number (a number too large to read becomes inf)",
                                   int(infinite.any(axis=1).sum()))
        with np.errstate(over="ignore"):  # a value past float32's range becomes inf here, and is refused below
            features = np.asarray(self.preprocessor.transform(X), dtype=np.float32)
        self.network.eval()
        with torch.no_grad():
            x = torch.from_numpy(features)
            proba = torch.cat([torch.softmax(self.network(x[i : i + 65_536]), dim=1)
                               for i in range(0, max(len(x), 1), 65_536)]).numpy()[: len(x)]
        bad = np.flatnonzero(~(np.isfinite(features).all(axis=1) & np.isfinite(proba).all(axis=1)))
        if len(bad):
            # A huge number (1e308) scales to a value float32 cannot hold, or to one that overflows the
            # network's arithmetic: either way its encoded feature is the row's largest in magnitude.
            i = int(bad[0])
            column = self._input_column(int(np.argmax(np.nan_to_num(np.abs(features[i]), nan=np.inf))))
            raise self._unscorable(X, i, column, "is too far outside the training data's range for the model "
                                   "(its probabilities would not be finite)", len(bad))
        return proba

    @staticmethod
    def _unscorable(X: pd.DataFrame, row: int, column, why: str, n_rows: int) -> "UnscorableInputError":
        value = X[column].iloc[row]
        more = f" ({n_rows} rows in all)" if n_rows > 1 else ""
        return UnscorableInputError(f"row {row} (counting from 0), column {column!r}: "
                                    f"{value.item() if hasattr(value, 'item') else value!r} {why}{more}; "
                                    "check that value")

    def _input_column(self, j: int) -> str:
        """The input column that encoded feature `j` comes from (the fitted ColumnTransformer's bookkeeping)."""
        pre = self.preprocessor
        for name, transformer, cols in pre.transformers_:
            s = pre.output_indices_[name]
            if s.start <= j < s.stop:
                cols = list(cols)
                if len(cols) == s.stop - s.start:  # one feature per column
                    return cols[j - s.start]
                feature = str(transformer.get_feature_names_out(cols)[j - s.start])  # one-hot: "<column>_<value>"
                return max((c for c in cols if feature.startswith(f"{c}_")), key=len, default=cols[0])
        raise IndexError(f"encoded feature {j} comes from no column")

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        proba = self.predict_proba(frame)
        out = pd.DataFrame({"label": [self.classes[i] for i in proba.argmax(1)]})
        for j, name in enumerate(self.classes):
            out[f"{PROBA}{name}"] = proba[:, j].astype(np.float64)
        return out

    def save(self, folder: Path) -> dict[str, str]:
        """Write the three files into `folder`; return them as MLflow pyfunc artifacts."""
        import skops.io
        from safetensors.torch import save_file

        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.network.state_dict().items()}, str(folder / WEIGHTS))
        skops.io.dump(self.preprocessor, folder / PREPROCESSOR)
        (folder / META).write_text(json.dumps({"network": self.network.spec(), "classes": self.classes,
                                               "columns": self.columns}, ensure_ascii=False))
        return {"weights": str(folder / WEIGHTS), "preprocessor": str(folder / PREPROCESSOR), "meta": str(folder / META)}

    @classmethod
    def load(cls, artifacts: dict[str, str]) -> "FittedClassifier":
        import skops.io
        from safetensors.torch import load_file

        meta = json.loads(Path(artifacts["meta"]).read_text())
        network = MLPClassifier(**meta["network"])
        network.load_state_dict(load_file(artifacts["weights"]))
        untrusted = set(skops.io.get_untrusted_types(file=artifacts["preprocessor"])) - set(_TRUSTED)
        if untrusted:
            raise ValueError(f"the preprocessor file holds types it should not: {sorted(untrusted)}")
        pre = skops.io.load(artifacts["preprocessor"], trusted=_TRUSTED)
        return cls(pre, network.eval(), meta["classes"], meta["columns"])
