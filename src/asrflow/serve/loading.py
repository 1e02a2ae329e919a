"""Loading a packaged asrflow model by directory or MLflow URI (``models:/name/1``,
``models:/name@alias``, ``runs:/<run id>/model``), or an ONNX export's directory
(:mod:`asrflow.serve.export`): :func:`load_transcriber` returns the ready
:class:`~asrflow.serve.model.AsrflowModel`, or raises :class:`ModelLoadError`."""

from __future__ import annotations

import tempfile
from pathlib import Path

import yaml

from asrflow.serve.model import AsrflowModel, _load_pyfunc
from asrflow.serve.package import _quiet_mlflow
from asrflow.serve.settings import LOADER_MODULE

#: File name endings of Python pickles (MLflow's own and the usual ones).
PICKLE_SUFFIXES = (".pkl", ".pickle", ".cloudpickle", ".joblib")

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


def check_package(root: Path, model: str) -> Path:
    """The data directory of the asrflow package at ``root``, after checking that loading
    it runs nothing from the package; raises :class:`ModelLoadError` naming ``model`` when
    it is not one, or carries something asrflow will not load.

    Read as YAML data (``safe_load``), the MLmodel must name asrflow's own loader module,
    no code directory, and no pickled model; no file in the package may be a pickle. A
    pickle runs arbitrary code when it is loaded, so a package holding one (a tampered
    package, or one made by pickling a ``PythonModel``) is refused, not inspected.
    """
    mlmodel = root / "MLmodel"
    if not mlmodel.is_file():
        raise ModelLoadError(f"{model} is not an MLflow model directory (no MLmodel file): pass a "
                             "directory written by asrflow.serve.package.package_model or an MLflow model URI")
    try:
        meta = yaml.safe_load(mlmodel.read_text())
        conf = meta["flavors"]["python_function"]
    except (yaml.YAMLError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ModelLoadError(f"{model}: {mlmodel.name} is not an MLflow pyfunc model description ({e!r})") from e
    pickles = sorted(str(p.relative_to(root)) for p in root.rglob("*")
                     if p.is_file() and (p.suffix in PICKLE_SUFFIXES or p.name == "python_model"))
    if "python_model" in conf or pickles:
        found = ", ".join(pickles) or f"python_model: {conf.get('python_model')}"
        raise ModelLoadError(f"{model} carries a pickled Python object ({found}); asrflow does not load "
                             "pickles from a model package, since unpickling runs whatever code the file holds. "
                             "Nothing in it was run. Package the checkpoint again with this asrflow (the register "
                             "stage, or asrflow.serve.package.package_model): its packages hold data only")
    if conf.get("loader_module") != LOADER_MODULE or conf.get("code"):
        raise ModelLoadError(f"{model} is not an asrflow model package: its MLmodel names loader module "
                             f"{conf.get('loader_module')!r}{' and a code directory' if conf.get('code') else ''}, "
                             f"not {LOADER_MODULE!r}; nothing in it was run")
    data = (root / str(conf.get("data", ""))).resolve()
    if not data.is_dir() or not data.is_relative_to(root.resolve()):
        raise ModelLoadError(f"{model}: the data directory {conf.get('data')!r} its MLmodel names is not "
                             "a directory inside the package")
    return data


def load_transcriber(model: str | Path) -> AsrflowModel:
    """The loaded :class:`AsrflowModel` of a package directory or an MLflow model URI.

    A URI is resolved through the current MLflow tracking/registry URI (``runs:/`` to the
    run's artifact location first, so a model in a local store is read in place; one in a
    remote store is copied into a directory that lives as long as the model). The package
    is checked by :func:`check_package` and loaded with asrflow's own code: nothing in it
    is unpickled or imported, and the checkpoint is read weights-only. Raises
    :class:`ModelLoadError` naming ``model`` when it does not exist or is not an asrflow model.
    """
    from mlflow.artifacts import download_artifacts
    from mlflow.exceptions import MlflowException
    from mlflow.store.artifact.runs_artifact_repo import RunsArtifactRepository

    model = str(model)
    download: tempfile.TemporaryDirectory | None = None
    try:
        if not is_model_uri(model):
            root = Path(model)
            if not root.exists():
                raise ModelLoadError(f"model directory {model} does not exist")
            from asrflow.serve.export import OnnxTranscriber, is_export

            if is_export(root):  # `asrflow export`'s directory: ONNX Runtime for the acoustic model
                return OnnxTranscriber().load_export(root)
        else:
            source = RunsArtifactRepository.get_underlying_uri(model) if RunsArtifactRepository.is_runs_uri(model) \
                else model
            if _needs_download_dir(source):
                download = tempfile.TemporaryDirectory(prefix="asrflow-model-")
            with _quiet_mlflow():
                root = Path(download_artifacts(artifact_uri=source, dst_path=download.name if download else None))
        data = check_package(root.absolute(), model)
        impl = _load_pyfunc(str(data))
    except ModelLoadError:
        raise
    except MlflowException as e:
        raise ModelLoadError(f"cannot load model {model}: {e.message}") from e
    except Exception as e:  # a damaged package: the checkpoint or the LM does not load
        raise ModelLoadError(f"cannot load model {model}: {type(e).__name__}: {e}") from e
    impl._download_dir = download  # the downloaded copy lives as long as the model
    return impl
