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
        import torch

        features = self.preprocessor.transform(frame[self.columns])
        self.network.eval()
        with torch.no_grad():
            x = torch.tensor(np.asarray(features, dtype=np.float32))
            return torch.cat([torch.softmax(self.network(x[i : i + 65_536]), dim=1)
                              for i in range(0, max(len(x), 1), 65_536)]).numpy()[: len(x)]

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
