"""The served model, for MLflow's models-from-code: MLflow runs this file to build it.

The model's files (weights, preprocessor, class names) are its artifacts; see trackflow/classifier.py.
"""

import mlflow.pyfunc
from mlflow.models import set_model

from trackflow.classifier import FittedClassifier


class TabularClassifier(mlflow.pyfunc.PythonModel):
    """The pyfunc face of a FittedClassifier: a DataFrame of named columns in, labels and probabilities out."""

    def load_context(self, context) -> None:
        self.fitted = FittedClassifier.load(context.artifacts)

    # model_input and the result are DataFrames; they carry no type hints because MLflow
    # would validate by the hints (which it reads as Any) instead of by the logged signature.
    def predict(self, context, model_input, params=None):
        return self.fitted.predict(model_input)


set_model(TabularClassifier())
