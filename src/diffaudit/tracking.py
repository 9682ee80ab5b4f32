"""Self-describing run folders, mirrored to MLflow (local file store under the runs folder)."""

import importlib.metadata
import platform
from pathlib import Path

from diffaudit.io import write_json
from diffaudit.layout import RunLayout

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
    write_json(RunLayout(run).record, {"config": config, "hashes": hashes, "versions": versions()})


def mlflow_uri(run: Path) -> str:
    """SQLite store inside the run folder (MLflow 3 keeps its plain file store read-only)."""
    return f"sqlite:///{RunLayout(run).mlflow.resolve()}"


def log_to_mlflow(run: Path, experiment: str, name: str, params: dict, metrics: dict, artifacts: list[Path]) -> str:
    """One MLflow run per study arm, so `mlflow ui --backend-store-uri <mlflow_uri>` lists them side by side; returns
    its run id (an audit record names it).

    Logged once: a resumed study finds the arm's finished MLflow run and skips it; a run left unfinished by a
    crash mid-logging is deleted and logged again.
    """
    import mlflow

    RunLayout(run).mlflow.parent.mkdir(parents=True, exist_ok=True)
    mlflow.set_tracking_uri(mlflow_uri(run))
    found = mlflow.get_experiment_by_name(experiment)
    exp_id = found.experiment_id if found else mlflow.create_experiment(
        experiment, artifact_location=(RunLayout(run).mlflow.parent / "artifacts").resolve().as_uri())
    client = mlflow.MlflowClient()
    for old in client.search_runs([exp_id], filter_string=f"tags.mlflow.runName = '{name}'"):
        if old.info.status == "FINISHED":
            return old.info.run_id
        client.delete_run(old.info.run_id)
    with mlflow.start_run(experiment_id=exp_id, run_name=name) as logged:
        mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
        mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None})
        for path in artifacts:
            if path.exists():
                mlflow.log_artifact(str(path))
    return logged.info.run_id
