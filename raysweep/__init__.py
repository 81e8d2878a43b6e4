"""raysweep: self-supervised pre-training, multi-seed evaluation and significance reports for
medical imaging with limited labels (Haggerty & Chandra), at cluster scale on Ray."""

__version__ = "0.1.0"

import os as _os

# MLflow, which Ray Tune imports for its integrations whenever it is installed, fetches a
# telemetry configuration over the network and writes ~/.config/mlflow/telemetry.json as it is
# imported: by every raysweep command, a refused one too. raysweep uses MLflow only where a
# spec's ``tracking:`` names it, so MLflow's telemetry stays off unless the user turns it on
# (MLFLOW_DISABLE_TELEMETRY=false).
_os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
