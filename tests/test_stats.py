"""tfod.stats: counts, COCO size classes, aspect ratios, table and plots."""

from pathlib import Path

from PIL import Image

from tfod.data.annotations import Box, Record
from tfod.data.stats import dataset_stats, plot_stats, stats_table


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


def test_summary_numbers_and_table_text_exactly():
    """Every derived number of the small example, worked by hand: box sides 10, 40, 50, 100 px
    (sqrt of 10x10, 20x80, 50x50, 200x50); relative to the image side sqrt(w*h)."""
    stats = dataset_stats(_splits(), ["cat", "dog"])
    assert stats["image_sizes"] == {
        "width": {"min": 200.0, "p05": 200.0, "median": 200.0, "p95": 300.0, "max": 300.0},
        "height": {"min": 100.0, "p05": 100.0, "median": 100.0, "p95": 300.0, "max": 300.0},
        "most_common": [[200, 100, 2], [300, 300, 1]]}
    assert stats["box_side_pixels"] == {"min": 10.0, "p05": 10.0, "median": 50.0,
                                        "p95": 100.0, "max": 100.0}
    assert stats["box_side_relative"] == {"min": 0.0707, "p05": 0.0707, "median": 0.3536,
                                          "p95": 0.7071, "max": 0.7071}
    assert list(stats["aspect_ratios"]) == ["0.25-0.5", "0.8-1.25", ">=4"]  # bin order
    assert stats["classes"] == ["cat", "dog"]
    assert stats["splits"]["val"]["per_class"] == {"cat": {"images": 1, "boxes": 1},
                                                   "dog": {"images": 0, "boxes": 0}}
    assert stats_table(stats) == "\n".join([
        "class            train    val",
        "---------------  -----  -----",
        "cat              2 (1)  1 (1)",
        "dog              1 (1)  0 (0)",
        "boxes (images)   3 (2)  1 (1)",
        "negatives            1      0",
        "small/med/large  1/1/1  0/1/0",
        "image sizes: width 200-300 (median 200), height 100-300 (median 100)",
        "box side / image side: median 0.354, 5% below 0.071",
        "box aspect (w/h): 0.25-0.5: 1, 0.8-1.25: 2, >=4: 1",
        "warning: no boxes of dog in val"])


def test_quantiles_pick_by_rank_and_round():
    """20 values 1.00001..20.00001 given in reverse: p05 is the 2nd (index int(0.05*20)=1),
    the median the 11th, p95 the 20th; everything rounded to 4 decimals."""
    from tfod.data.stats import _quantiles

    values = [i + 0.00001 for i in range(20, 0, -1)]
    assert _quantiles(values) == {"min": 1.0, "p05": 2.0, "median": 11.0, "p95": 20.0,
                                  "max": 20.0}
    assert _quantiles([0.123456]) == {"min": 0.1235, "p05": 0.1235, "median": 0.1235,
                                      "p95": 0.1235, "max": 0.1235}
    assert _quantiles([]) == {}


def test_size_classes_and_aspect_bins_at_their_edges():
    """COCO: area < 32**2 small, < 96**2 medium; aspect bins are [low, high)."""
    from tfod.data.stats import _aspect_bin

    boxes = [Box("a", 0, 0, 32, 32), Box("a", 0, 0, 31.9, 32),    # medium, small
             Box("a", 0, 0, 96, 96), Box("a", 0, 0, 95.9, 96)]    # large, medium
    stats = dataset_stats({"s": [Record(Path("x.jpg"), 100, 100, boxes)]}, ["a"])
    assert stats["splits"]["s"]["box_sizes"] == {"small": 1, "medium": 2, "large": 1}
    assert [_aspect_bin(r) for r in (0.2, 0.25, 0.5, 0.79, 0.8, 1.25, 1.99, 2.0, 3.99, 4.0)] == [
        "<0.25", "0.25-0.5", "0.5-0.8", "0.5-0.8", "0.8-1.25", "1.25-2", "1.25-2", "2-4", "2-4",
        ">=4"]


def test_class_outside_the_list_and_image_without_size_are_counted():
    """A box whose class is not in ``classes`` still gets its own per-class entry; an image
    of unknown size (0x0) divides by 1, not 0."""
    record = Record(Path("x.jpg"), 0, 0, [Box("bird", 0, 0, 4, 4), Box("bird", 1, 1, 5, 5)])
    stats = dataset_stats({"train": [record], "val": []}, ["cat"])
    assert stats["splits"]["train"]["per_class"] == {"cat": {"images": 0, "boxes": 0},
                                                     "bird": {"images": 1, "boxes": 2}}
    assert stats["box_side_relative"]["max"] == 4.0
    assert stats["classes_missing"] == {"train": ["cat"], "val": ["cat"]}
    assert stats["splits"]["val"] == {"images": 0, "negatives": 0, "boxes": 0,
                                      "per_class": {"cat": {"images": 0, "boxes": 0}},
                                      "box_sizes": {"small": 0, "medium": 0, "large": 0}}
    table = stats_table(stats)
    assert "image sizes: width 0-0 (median 0), height 0-0 (median 0)" in table
    empty = stats_table(dataset_stats({"val": []}, ["cat"]))
    assert "image sizes" not in empty and "box side" not in empty and "aspect" not in empty


def test_counts_over_many_images_sizes_and_ratios():
    """Six image sizes (only the 5 most common listed), a class in two images of a split,
    a box thinner than 1:4, and box sides 1..100 px plus sqrt(20) for the quantiles (p95 = index 95)."""
    records = [Record(Path(f"{i}.jpg"), 100 + i % 6, 50, [Box("cat", 0, 0, 1 + i, 1 + i)])
               for i in range(100)]
    records.append(Record(Path("thin.jpg"), 100, 50, [Box("dog", 0, 0, 2, 10)]))
    stats = dataset_stats({"train": records}, ["cat", "dog", "bird", "fish"])
    assert stats["splits"]["train"]["per_class"]["cat"] == {"images": 100, "boxes": 100}
    assert len(stats["image_sizes"]["most_common"]) == 5
    assert stats["image_sizes"]["most_common"][0] == [100, 50, 18]
    assert stats["box_side_pixels"]["p95"] == 95.0  # 101 sides with the dog's 4.47
    assert stats["box_side_pixels"]["median"] == 50.0
    assert stats["aspect_ratios"] == {"<0.25": 1, "0.8-1.25": 100}
    assert stats["classes_missing"] == {"train": ["bird", "fish"]}
    assert stats_table(stats).splitlines()[-1] == "warning: no boxes of bird, fish in train"


def test_table_of_stats_without_an_entry_for_a_class():
    """A stats dict whose split has no entry for a listed class (as in a stats.json written
    with another class list) shows that class as 0 (0)."""
    stats = dataset_stats(_splits(), ["cat", "dog"])
    del stats["splits"]["val"]["per_class"]["dog"]
    assert stats_table(stats).splitlines()[3] == "dog              1 (1)  0 (0)"
