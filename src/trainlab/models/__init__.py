"""Models: MLP, 1-D/2-D CNNs and residual nets, the published ResNet-18/34, each a named-block backbone plus a head."""

from trainlab.models.manifest import check_recorded, read_members, write_manifest
from trainlab.models.classifier import Classifier
from trainlab.models.networks import build_model, resolve_frozen, set_frozen
from trainlab.models.store import load_model, load_state, model_from_blob, read_checkpoint, save_model

__all__ = ["Classifier", "build_model", "check_recorded", "load_model", "load_state", "model_from_blob",
           "read_checkpoint", "read_members", "resolve_frozen", "save_model", "set_frozen", "write_manifest"]
