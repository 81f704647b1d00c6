"""TFRecords of a config's input readers, decoded with the OD API's own
``TfExampleDecoder``: what int8 calibration and the scoring of exported files read."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from tfod.errors import ExportError


def _record_files(input_config, what: str) -> list[str]:
    import tensorflow as tf

    patterns = list(input_config.tf_record_input_reader.input_path)
    files = sorted(f for p in patterns for f in tf.io.gfile.glob(p))
    if not files:
        raise ExportError(f"no {what} TFRecords found", where=", ".join(patterns) or "(empty)",
                          fix="check the input_path in pipeline.config (tfod prepare writes "
                              "data/<name>/<split>-*.tfrecord)")
    return files


def _decoded_records(files: Sequence[str], label_map: str | None = None):
    """Decoded examples (numpy dicts) via the OD API's ``TfExampleDecoder``,
    interleaved over the shards."""
    import tensorflow as tf
    from object_detection.data_decoders import tf_example_decoder

    decoder = tf_example_decoder.TfExampleDecoder(
        label_map_proto_file=label_map if label_map and Path(label_map).is_file() else None)
    ds = tf.data.Dataset.from_tensor_slices(list(files)).interleave(
        tf.data.TFRecordDataset, cycle_length=max(1, len(files)), num_parallel_calls=1,
        deterministic=True)
    return ds.map(decoder.decode).as_numpy_iterator()
