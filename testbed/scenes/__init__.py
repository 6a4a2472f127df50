"""Scenes with ground truth: seeded synthetic shapes and real images."""

from testbed.scenes._real import IMAGE_SUFFIXES, load_image_folder, load_scene, packaged_images
from testbed.scenes._sources import BASE_DIR_CONTEXT, ImageSet, forget_drawn_scenes
from testbed.scenes._synthetic import SHAPE_CLASSES, SceneSpec, generate_scene
from testbed.scenes._types import BoolMask, GroundTruthObject, RGBImage, Scene, tight_box

__all__ = [
    "BASE_DIR_CONTEXT",
    "IMAGE_SUFFIXES",
    "SHAPE_CLASSES",
    "BoolMask",
    "GroundTruthObject",
    "ImageSet",
    "RGBImage",
    "Scene",
    "SceneSpec",
    "forget_drawn_scenes",
    "generate_scene",
    "load_image_folder",
    "load_scene",
    "packaged_images",
    "tight_box",
]
