"""Loading a packaged asrflow model by directory or MLflow URI (``models:/name/1``,
``models:/name@alias``, ``runs:/<run id>/model``): :func:`load_transcriber` returns the
ready :class:`~asrflow.serve.model.AsrflowModel`, or raises :class:`ModelLoadError`."""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow

from asrflow.serve.model import AsrflowModel
from asrflow.serve.package import _quiet_mlflow

_MODEL_URI_SCHEMES = ("models:/", "runs:/", "file:/", "s3://", "gs://", "wasbs://", "abfss://", "dbfs:/",
                      "mlflow-artifacts:/", "http://", "https://", "hdfs://", "sftp://", "ftp://")


class ModelLoadError(RuntimeError):
    """The model path or URI does not lead to a loadable asrflow model; the message says which."""


def is_model_uri(model: str) -> bool:
    """Whether ``model`` is an MLflow URI (``models:/``, ``runs:/``, ``file:/`` ...) rather than a path."""
    return model.startswith(_MODEL_URI_SCHEMES)


def _needs_download_dir(uri: str) -> bool:
    """Whether loading ``uri`` copies the model out of its store (then into a directory of
    ours that is removed with the model, not into a temporary directory nobody removes).
    Models in a local artifact store are read in place."""
    from mlflow.store.artifact.local_artifact_repo import LocalArtifactRepository
    from mlflow.store.artifact.models_artifact_repo import ModelsArtifactRepository

    if uri.startswith("file:"):
        return False
    if uri.startswith("models:/"):
        return not isinstance(ModelsArtifactRepository(uri).repo, LocalArtifactRepository)
    return True


def load_transcriber(model: str | Path) -> AsrflowModel:
    """The loaded :class:`AsrflowModel` of a package directory or an MLflow model URI.

    A URI is resolved through the current MLflow tracking/registry URI (``runs:/`` to the
    run's artifact location first, so a model in a local store is read in place). Raises
    :class:`ModelLoadError` naming ``model`` when it does not exist or is not an asrflow model.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

    model = str(model)
    download: tempfile.TemporaryDirectory | None = None
    try:
        if not is_model_uri(model):
            p = Path(model)
            if not p.exists():
                raise ModelLoadError(f"model directory {model} does not exist")
            if not (p / "MLmodel").is_file():
                raise ModelLoadError(f"{model} is not an MLflow model directory (no MLmodel file): pass a "
                                     "directory written by asrflow.serve.package.package_model or an MLflow model URI")
            source = str(p.absolute())
        elif RunsArtifactRepository.is_runs_uri(model):
            source = RunsArtifactRepository.get_underlying_uri(model)
        else:
            source = model
        if is_model_uri(source) and _needs_download_dir(source):
            download = tempfile.TemporaryDirectory(prefix="asrflow-model-")
        with _quiet_mlflow():
            loaded = mlflow.pyfunc.load_model(source, dst_path=download.name if download else None)
        impl = loaded.unwrap_python_model()
    except ModelLoadError:
        raise
    except MlflowException as e:
        raise ModelLoadError(f"cannot load model {model}: {e.message}") from e
    except Exception as e:  # a damaged package: unpickling, checkpoint or LM loading failed
        raise ModelLoadError(f"cannot load model {model}: {type(e).__name__}: {e}") from e
    if not isinstance(impl, AsrflowModel):
        raise ModelLoadError(f"{model} is a {type(impl).__name__} model, not an asrflow recognizer")
    impl._download_dir = download  # the downloaded copy lives as long as the model
    return impl
