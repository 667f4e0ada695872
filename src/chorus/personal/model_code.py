"""The code MLflow stores with the personalised mood model (models from code)."""

from mlflow.models import set_model

from chorus.personal.serving import PersonalPyfunc

set_model(PersonalPyfunc())
