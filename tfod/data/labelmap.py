"""Label maps (``label_map.pbtxt``), written and read with the OD API's own proto and
``label_map_util``: ids 1..N in class order (0 is the background)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from tfod.errors import DatasetError
from tfod.files import write_text_atomic


#: First line of every label map tfod writes: ``prepare`` overwrites ``label_maps/<name>.pbtxt``
#: only when it starts with this line (or is the copy of the dataset it replaces).
LABEL_MAP_HEADER = "# written by tfod: tfod overwrites this file only while this line is first\n"


def write_label_map(classes: Sequence[str], path: str | Path) -> Path:
    """Write a label map with ids 1..N in the given order (0 is the background), under
    :data:`LABEL_MAP_HEADER`.

    Example:
        >>> write_label_map(["cat", "dog"], "label_maps/pets.pbtxt")
    """
    from google.protobuf import text_format

    import tfod  # noqa: F401  (compat hook for the proto modules)
    from object_detection.protos import string_int_label_map_pb2

    label_map = string_int_label_map_pb2.StringIntLabelMap()
    for i, name in enumerate(classes, 1):
        label_map.item.add(id=i, name=name, display_name=name)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, LABEL_MAP_HEADER + text_format.MessageToString(label_map))
    return path


def read_label_map(path: str | Path) -> list[str]:
    """Class names ordered by id, read with the OD API's own parser.

    Refuses (naming the file) what the OD API would misread: text that is not a
    label map, ids not 1..N, empty or repeated names.

    Example:
        >>> read_label_map("label_maps/pets.pbtxt")
        ['cat', 'dog']
    """
    from google.protobuf import message, text_format
    from object_detection.utils import label_map_util

    path = Path(path)
    if not path.is_file():
        raise DatasetError("label map not found", where=str(path), fix="check the path")
    try:
        items = label_map_util.load_labelmap(str(path)).item
    except (text_format.ParseError, message.DecodeError, TypeError, ValueError) as exc:
        reason = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
        raise DatasetError(f"not a readable label map ({reason})", where=str(path),
                           fix="write items like: item { id: 1 name: 'cat' }") from None
    names = [item.name for item in items]
    ids = sorted(item.id for item in items)
    if ids != list(range(1, len(ids) + 1)):
        raise DatasetError(f"label ids are {ids}, not 1..{len(ids)}", where=str(path),
                           fix="number the items 1, 2, ... without gaps (0 is background)")
    repeated = sorted({n for n in names if names.count(n) > 1})
    if "" in names or repeated:
        raise DatasetError(f"empty or repeated class names {repeated or ['']}", where=str(path),
                           fix="give every item its own non-empty name")
    return [item.name for item in sorted(items, key=lambda item: item.id)]
