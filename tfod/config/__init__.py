"""Pipeline configs: templates from ``pipelines/``, patched for a dataset through the proto
messages, and checked before TensorFlow builds anything.

- :mod:`~tfod.config.templates`: find templates, read and write configs, facts of a config;
- :mod:`~tfod.config.patch`: :func:`patch_pipeline`, :func:`patch_pipeline_for_dataset`;
- :mod:`~tfod.config.options`, :mod:`~tfod.config.schedule`: the values patching sets;
- :mod:`~tfod.config.validate`: :func:`check_pipeline` and the scoped checks of each stage;
- :mod:`~tfod.config.anchors`: a config's anchors and feature maps in pixels against the
  training boxes (the data findings of :func:`check_data`);
- :mod:`~tfod.config.fitting`: :func:`fit_data`, input size and anchors from the boxes.

Example:
    >>> from tfod import config
    >>> config.patch_pipeline_for_dataset("ssd_mobilenet_v2_tiny", "runs/pets/pipeline.config",
    ...                                   data_dir="data/pets", num_steps=2000)
    >>> config.check_pipeline("runs/pets/pipeline.config")
    []
"""

from tfod.config.options import (FREEZE_CHOICES, augmentation_names, parse_augment,
                                 parse_quantize, set_freeze)
from tfod.config.patch import (checkpoint_type, patch_pipeline, patch_pipeline_for_dataset,
                               resolve_checkpoint, set_num_classes)
from tfod.config.schedule import scale_learning_rate, set_steps
from tfod.config.fitting import fit_data
from tfod.config.templates import (PIPELINES_DIR, PLACEHOLDER, TFLITE_ARCHS,
                                   available_templates, config_text, image_size, load_configs,
                                   meta_architecture, num_steps, resolve_template,
                                   save_configs)
from tfod.config.validate import (Finding, check_configs, check_data, check_exportable,
                                  check_pipeline, find_problems)

__all__ = ["FREEZE_CHOICES", "PIPELINES_DIR", "PLACEHOLDER", "TFLITE_ARCHS", "Finding",
           "augmentation_names", "available_templates", "check_configs", "check_data",
           "check_exportable", "check_pipeline", "checkpoint_type", "config_text",
           "find_problems", "fit_data", "image_size",
           "load_configs", "meta_architecture", "num_steps", "parse_augment", "parse_quantize",
           "patch_pipeline", "patch_pipeline_for_dataset", "resolve_checkpoint",
           "resolve_template", "save_configs", "scale_learning_rate", "set_freeze",
           "set_num_classes", "set_steps"]
