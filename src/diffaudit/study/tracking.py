"""Self-describing run folders, mirrored to MLflow (local file store under the runs folder)."""

import importlib.metadata
import platform
from pathlib import Path

from diffaudit.io import write_json

PACKAGES = ("diffaudit", "torch", "diffusers", "transformers", "opacus", "faiss-cpu", "datasketch", "numpy",
            "scikit-learn", "scipy", "mlflow")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def write_run_record(run: Path, config: dict, hashes: dict) -> None:
    write_json(run / "run.json", {"config": config, "hashes": hashes, "versions": versions()})


def mlflow_uri(run: Path) -> str:
    """SQLite store inside the run folder (MLflow 3 keeps its plain file store read-only)."""
    return f"sqlite:///{(run / 'mlruns' / 'mlflow.db').resolve()}"


def log_to_mlflow(run: Path, experiment: str, name: str, params: dict, metrics: dict, artifacts: list[Path]) -> None:
    """One MLflow run per study arm, so `mlflow ui --backend-store-uri <mlflow_uri>` lists them side by side."""
    import mlflow

    (run / "mlruns").mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(mlflow_uri(run))
    if mlflow.get_experiment_by_name(experiment) is None:
        mlflow.create_experiment(experiment, artifact_location=(run / "mlruns" / "artifacts").resolve().as_uri())
    mlflow.set_experiment(experiment)
    with mlflow.start_run(run_name=name):
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
        for path in artifacts:
            if path.exists():
                mlflow.log_artifact(str(path))
