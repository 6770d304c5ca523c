"""The served model, for MLflow's models-from-code: MLflow runs this file to build it.

The model's files (weights, preprocessor, class names) are its artifacts; see trackflow/classifier.py.
"""

import mlflow.pyfunc
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import set_model

from trackflow.classifier import FittedClassifier, UnscorableInputError


class TabularClassifier(mlflow.pyfunc.PythonModel):
    """The pyfunc face of a FittedClassifier: a DataFrame of named columns in, labels and probabilities out."""

    def load_context(self, context) -> None:
        self.fitted = FittedClassifier.load(context.artifacts)

    # A DataFrame hint is one MLflow infers no schema from: it validates by the logged signature
    # (named, typed columns), as without hints, and stops asking for hints on every load.
    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        try:
            return self.fitted.predict(model_input)
        except UnscorableInputError as exc:  # the scoring server answers this one with a 400
            raise MlflowException.invalid_parameter_value(str(exc)) from None


set_model(TabularClassifier())
