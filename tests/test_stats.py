"""tfod.stats: counts, COCO size classes, aspect ratios, table and plots."""

from pathlib import Path

from PIL import Image

from tfod.annotations import Box, Record
from tfod.stats import dataset_stats, plot_stats, stats_table


def _splits():
    train = [Record(Path("a.jpg"), 200, 100, [Box("cat", 0, 0, 10, 10),      # small, 1:1
                                              Box("cat", 0, 0, 50, 50),      # medium
                                              Box("dog", 0, 0, 200, 50)]),   # large, 4:1
             Record(Path("b.jpg"), 200, 100)]                                # negative
    val = [Record(Path("c.jpg"), 300, 300, [Box("cat", 0, 0, 20, 80)])]    # medium, 1:4
    return {"train": train, "val": val}


def test_counts_sizes_and_aspects():
    stats = dataset_stats(_splits(), ["cat", "dog"])
    train, val = stats["splits"]["train"], stats["splits"]["val"]
    assert (train["images"], train["boxes"], train["negatives"]) == (2, 3, 1)
    assert train["per_class"] == {"cat": {"images": 1, "boxes": 2},
                                  "dog": {"images": 1, "boxes": 1}}
    assert train["box_sizes"] == {"small": 1, "medium": 1, "large": 1}
    assert val["box_sizes"] == {"small": 0, "medium": 1, "large": 0}
    assert stats["aspect_ratios"] == {"0.25-0.5": 1, "0.8-1.25": 2, ">=4": 1}
    assert stats["classes_missing"] == {"val": ["dog"]}
    assert stats["image_sizes"]["most_common"][0] == [200, 100, 2]
    table = stats_table(stats)
    assert "warning: no boxes of dog in val" in table
    assert table.splitlines()[2].split() == ["cat", "2", "(1)", "1", "(1)"]


def test_plots_are_pngs(tmp_path):
    splits = _splits()
    paths = plot_stats(dataset_stats(splits, ["cat", "dog"]), splits, tmp_path)
    assert [p.name for p in paths] == ["class_histogram.png", "box_sizes.png",
                                       "aspect_ratios.png"]
    for path in paths:
        with Image.open(path) as img:
            assert img.format == "PNG"
