"""The model registry: BentoML's local model store under `BENTOML_HOME`, shared with the Bento service."""

from pathlib import Path
from typing import TYPE_CHECKING, Any

import dagster as dg

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

DEPLOYED_MODEL = "taxi_duration_deployed"


class ModelRegistry(dg.ConfigurableResource):
    """Saves and loads scikit-learn pipelines as BentoML models in the store under `home`.

    BentoML is imported on first use, so loading the Dagster definitions stays fast.
    """

    home: str

    def _bentoml(self) -> Any:
        import bentoml
        from bentoml._internal.configuration.containers import BentoMLContainer
        from bentoml._internal.models import ModelStore

        # BentoML resolves its home once per process from the environment; overriding the container at each call
        # keeps every registry (and every test's temporary home) writing where it was configured.
        models = Path(self.home) / "models"
        models.mkdir(parents=True, exist_ok=True)
        BentoMLContainer.bentoml_home.set(self.home)
        BentoMLContainer.model_store_dir.set(str(models))
        BentoMLContainer.model_store.set(ModelStore(str(models)))
        return bentoml

    def save(self, pipeline: "Pipeline", name: str, labels: dict[str, str], metadata: dict[str, Any]) -> str:
        """Store `pipeline` as a new version of `name`; return its tag (`name:version`)."""
        bento_model = self._bentoml().sklearn.save_model(name, pipeline, labels=labels, metadata=metadata)
        return str(bento_model.tag)

    def load(self, tag: str) -> "Pipeline":
        return self._bentoml().sklearn.load_model(tag)

    def info(self, tag: str) -> dict[str, Any]:
        """Tag, labels, metadata and size on disk of the stored model `tag` (`name:latest` works too)."""
        bento_model = self._bentoml().models.get(tag)
        return {
            "tag": str(bento_model.tag),
            "labels": dict(bento_model.info.labels),
            "metadata": dict(bento_model.info.metadata),
            "size_bytes": sum(path.stat().st_size for path in Path(bento_model.path).rglob("*") if path.is_file()),
        }

    def latest(self, name: str, labels: dict[str, str]) -> str | None:
        """The newest version of `name` carrying all of `labels`, or None."""
        bentoml = self._bentoml()
        try:
            versions = bentoml.models.list(name)
        except bentoml.exceptions.NotFound:
            return None
        matching = [bento_model for bento_model in versions if labels.items() <= bento_model.info.labels.items()]
        if not matching:
            return None
        return str(max(matching, key=lambda bento_model: bento_model.info.creation_time).tag)

    def load_deployed(self) -> tuple["Pipeline", dict[str, Any]]:
        """The deployed pipeline and what scoring and monitoring report about it: tag, training month, recipe,
        validation month and RMSE."""
        info = self.info(f"{DEPLOYED_MODEL}:latest")
        summary = {
            "tag": info["tag"],
            "source_tag": info["labels"]["source_tag"],
            "training_month": info["labels"]["training_month"],
            "recipe": info["labels"]["recipe"],
            "validation_month": info["metadata"]["validation_month"],
            "validation_rmse": float(info["metadata"]["validation_rmse"]),
        }
        return self.load(info["tag"]), summary
