"""What the server says about itself and its models: liveness, readiness and V2 metadata."""

from __future__ import annotations

from seqserve import __version__
from seqserve.inference import ModelMetadata, TensorMetadata
from seqserve.store.model_store import ModelStore

SERVER_NAME = "seqserve"
EXTENSIONS = ["binary_tensor_data", "sequence", "model_configuration", "statistics", "model_repository"]
PLATFORM = "onnxruntime_onnx"


class Catalog:
    def __init__(self, store: ModelStore) -> None:
        self.store = store
        # Set when the server begins to shut down: readiness turns false at once, so load balancers
        # and Kubernetes send no new work while requests in flight finish.
        self.stopping = False

    def live(self) -> bool:
        return True

    def ready(self) -> bool:
        """Ready unless shutting down. The store's first scan ends before the servers start, and a
        model that cannot serve says so itself (its ready endpoint, 503s naming the reason): one
        model's broken file must not take every model of the replica out of service (Triton's
        `--strict-readiness=false`)."""
        return not self.stopping

    def server_metadata(self) -> dict[str, object]:
        return {"name": SERVER_NAME, "version": __version__, "extensions": list(EXTENSIONS)}

    def model_ready(self, name: str, version: str | None = None) -> bool:
        return self.store.find(name, version).ready

    def model_metadata(self, name: str, version: str | None = None) -> ModelMetadata:
        mv = self.store.get_ready(name, version)
        signature = mv.signature
        assert signature is not None
        versions = [str(mv.version)] if version else [str(v.version) for v in self.store.versions(name)]
        return ModelMetadata(
            name=name,
            versions=versions,
            platform=PLATFORM,
            inputs=[TensorMetadata(t.name, t.datatype, list(t.shape)) for t in signature.inputs],
            outputs=[TensorMetadata(t.name, t.datatype, list(t.shape)) for t in signature.outputs],
        )
