"""Vision backends: offline Ultralytics YOLO detection and segmentation, with an inference cache."""

from testbed.vision._cache import CacheStats, InferenceCache
from testbed.vision._dataset import TRAINING_SCENE_SPEC, export_yolo_dataset
from testbed.vision._device import resolve_device
from testbed.vision._model import (
    InferenceParams,
    InferenceResult,
    VisionModel,
    shared_inference_cache,
)
from testbed.vision._offline import configure_ultralytics, import_ultralytics, testbed_home
from testbed.vision._quality import Match, match_predictions, recall
from testbed.vision._weights import (
    SHIPPED_MODELS,
    WEIGHTS_DIR,
    ShippedModel,
    WeightsManifest,
    file_sha256,
    read_manifest,
    shipped_weights,
)

__all__ = [
    "SHIPPED_MODELS",
    "TRAINING_SCENE_SPEC",
    "WEIGHTS_DIR",
    "CacheStats",
    "InferenceCache",
    "InferenceParams",
    "InferenceResult",
    "Match",
    "ShippedModel",
    "VisionModel",
    "WeightsManifest",
    "configure_ultralytics",
    "export_yolo_dataset",
    "file_sha256",
    "import_ultralytics",
    "match_predictions",
    "read_manifest",
    "recall",
    "resolve_device",
    "shared_inference_cache",
    "shipped_weights",
    "testbed_home",
]
