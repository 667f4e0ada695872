"""The code MLflow stores with every chorus model (models from code) and runs when
``mlflow.pyfunc.load_model`` loads one: the pyfunc class; its scorer comes from the model's
``scorer`` artifact (JSON, safetensors, skops), never from a pickle."""

from mlflow.models import set_model

from chorus.serving import ChorusPyfunc

set_model(ChorusPyfunc())
