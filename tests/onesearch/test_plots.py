"""The search half's figures and the numbers behind them: hand-checked toy cases, then what each figure draws."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from matplotlib.figure import Figure

from onesearch import plots
from onesearch.retrieval import COLD, HEAD, TAIL, Requests, bucket_metrics, top_lists
from onesearch.tokenizer.report import code_tree, keyword_effect, shared_prefix_examples
from onesearch.tokenizer.sid import SIDTable

PNG = b"\x89PNG\r\n\x1a\n"


def _legend(ax) -> list[str]:
    return [t.get_text() for t in ax.get_legend().get_texts()]


def _items(n: int) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "item_id": np.arange(n),
            "title": [f"thing {i}" for i in range(n)],
            "category_path": [["Root", "Tools" if i < n // 2 else "Glass", f"leaf{i % 2}"] for i in range(n)],
        }
    )


# A tree of 6 items, two semantic levels and a disambiguation code: items 0-2 share (0, 0), 3 has (0, 1), 4-5 share
# (1, 2); level 1 uses codes {0, 1} of 4, level 2 uses {0, 1, 2} of 4.
TABLE = SIDTable(
    np.arange(6),
    np.array([[0, 0, 0], [0, 0, 1], [0, 0, 2], [0, 1, 0], [1, 2, 0], [1, 2, 1]]),
    (4, 4, 3),
    "khqe",
)


def test_code_tree_counts_nodes_utilisation_and_collisions_by_hand():
    tree = code_tree(TABLE)
    assert [s.tolist() for s in tree.node_sizes] == [[4, 2], [3, 2, 1]]
    assert tree.utilization == [0.5, 0.75, 1.0]
    assert tree.collision_rate == pytest.approx(5 / 6)  # all but item 3 share their semantic ID
    assert tree.collision_sizes.tolist() == [3, 2, 1]


def test_plot_code_tree_draws_one_line_per_depth_and_writes_a_png(tmp_path):
    path = tmp_path / "deep" / "tree.png"
    fig = plots.plot_code_tree(code_tree(TABLE), "toy", path)
    assert isinstance(fig, Figure) and path.read_bytes().startswith(PNG)
    nodes, util, coll = fig.axes
    assert len(nodes.get_lines()) == 2 and _legend(nodes) == ["depth 1 (2 nodes)", "depth 2 (3 nodes)"]
    assert nodes.get_yscale() == "log" and "items" in nodes.get_ylabel()
    assert [round(p.get_height()) for p in util.patches] == [50, 75, 100]
    assert "% of the codebook" in util.get_ylabel()
    # 1 item alone, 2 items in a pair, 3 items in a triple
    assert [p.get_height() for p in coll.patches] == [1, 2, 3]
    assert "83.3%" in coll.get_title() and "before disambiguation" in coll.get_xlabel()
    assert fig._suptitle.get_text() == "toy"


def test_shared_prefix_examples_lists_the_biggest_nodes_first():
    ex = shared_prefix_examples(TABLE, _items(6), depth=1, groups=1, per_group=2)
    assert ex["prefix"].to_list() == ["0", "0"] and ex["item_id"].to_list() == [0, 1]
    assert ex["sid"][0] == "<a_0><b_0><c_0>"
    with pytest.raises(ValueError, match="depth must be in"):
        shared_prefix_examples(TABLE, _items(6), depth=3)


def test_keyword_effect_compares_purity_and_code_mates_by_hand():
    items = _items(4)  # leaves: leaf0, leaf1, leaf0, leaf1
    plain = SIDTable(np.arange(4), np.array([[0, 0, 0], [0, 1, 0], [1, 0, 0], [1, 1, 0]]), (2, 2, 1), "khqe")
    # keywords regroup the items by leaf: {0, 2} and {1, 3}; given in another row order on purpose
    enhanced = SIDTable(
        np.array([3, 2, 1, 0]), np.array([[1, 1, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0]]), (2, 2, 1), "khqe"
    )
    kws = [[("leaf0", 1.0)], [("leaf1", 1.0)], [("leaf0", 1.0)], [("leaf1", 1.0)]]
    eff = keyword_effect(plain, enhanced, items, kws, examples=2)
    m = {r["metric"]: (r["without keywords"], r["with keywords"]) for r in eff.metrics.iter_rows(named=True)}
    assert m["level-1 purity (category leaf)"] == (0.5, 1.0)
    assert m["collision rate"] == (0.0, 0.0) and m["level-1 codes used"] == (2.0, 2.0)
    assert eff.moved_share == 1.0  # every item has a new code-mate
    assert eff.examples.height == 2 and set(eff.examples.columns) >= {"keywords", "code-mates with keywords"}
    fig = plots.plot_keyword_effect(eff)
    ax = fig.axes[0]
    assert _legend(ax) == ["without keywords", "with keywords"] and ax.get_xlabel() == "% of items"
    assert len(ax.patches) == 2 * 3  # three share-valued metrics, two bars each
    assert "100% of items" in ax.get_title()


def test_bucket_metrics_by_hand():
    item_ids = np.array([10, 11, 12, 13])
    buckets = np.array([HEAD, TAIL, TAIL, COLD])
    retrieved = np.array([[10, 11], [10, -1], [12, 13]])
    target = np.array([10, 12, 13])  # a head hit, a tail miss, a cold hit
    m = bucket_metrics(retrieved, target, buckets, item_ids, k=2)
    assert m["recall"] == {"head": 1.0, "tail": 0.0, "cold": 1.0}
    assert m["targets"] == {"head": 1, "tail": 1, "cold": 1}
    # 5 filled slots: 10, 11, 10, 12, 13
    assert m["exposure"] == pytest.approx({"head": 2 / 5, "tail": 2 / 5, "cold": 1 / 5})
    assert m["catalog"] == {"head": 0.25, "tail": 0.5, "cold": 0.25}
    assert bucket_metrics(retrieved, np.array([10, 10, 10]), buckets, item_ids)["recall"]["cold"] is None


def test_plot_buckets_draws_a_bar_per_system_and_bucket():
    item_ids, buckets = np.array([10, 11, 12]), np.array([HEAD, TAIL, COLD])
    stats = {
        "a": bucket_metrics(np.array([[10], [11]]), np.array([10, 12]), buckets, item_ids, k=1),
        "b": bucket_metrics(np.array([[12], [12]]), np.array([10, 12]), buckets, item_ids, k=1),
    }
    fig = plots.plot_buckets(stats)
    recall, exposure = fig.axes
    assert len(recall.patches) == 2 * 3 and len(exposure.patches) == 2 * 3
    assert _legend(recall) == [
        "head targets (1 requests)",
        "tail targets (0 requests)",
        "cold targets (1 requests)",
    ]
    assert _legend(exposure) == ["head items", "tail items", "cold items"]
    assert [t.get_text() for t in recall.get_xticklabels()] == ["a", "b"]
    assert "recall@10" in recall.get_ylabel() and "% of top-10 slots" in exposure.get_ylabel()
    assert len(exposure.get_lines()) == 2  # dashed catalogue shares between the three buckets


def test_plot_hr_one_line_per_system(tmp_path):
    curves = {"generative": [0.1, 0.2, 0.3], "cascade": [0.2, 0.3, 0.4], "popularity": [0.0, 0.1, 0.1]}
    fig = plots.plot_hr(curves, "toy", tmp_path / "hr.png")
    ax = fig.axes[0]
    assert [ln.get_label() for ln in ax.get_lines()] == list(curves) and _legend(ax) == list(curves)
    assert ax.get_lines()[1].get_xydata().tolist() == [[1, 0.2], [2, 0.3], [3, 0.4]]
    assert (
        ax.get_xlabel() == "K (list length)"
        and ax.get_ylabel().startswith("HR@K")
        and ax.get_title() == "toy"
    )
    assert (tmp_path / "hr.png").read_bytes().startswith(PNG)


def test_plot_decode_speed_adds_hr_on_a_second_axis_only_when_given():
    fig = plots.plot_decode_speed([10, 20], [100.0, 50.0])
    assert len(fig.axes) == 1 and fig.axes[0].get_ylabel() == "requests per second"
    fig = plots.plot_decode_speed([10, 20], [100.0, 50.0], [0.2, 0.3])
    speed, hr = fig.axes
    assert speed.get_xlabel() == "beam width" and hr.get_ylabel().startswith("HR@10")
    assert _legend(speed) == ["requests / s (batch 64)", "HR@10"]


def test_plot_catalog_colours_the_ranked_purchases_by_bucket():
    items = _items(4)
    purchases = pl.DataFrame({"item_id": [0, 0, 0, 1]})
    fig = plots.plot_catalog(items, purchases, np.array([HEAD, TAIL, COLD, COLD]))
    cats, ranked = fig.axes
    assert "level 2" in cats.get_title()  # every item shares the root, so the level below it is shown
    assert sorted(t.get_text() for t in cats.get_yticklabels()) == ["Glass", "Tools"]
    assert _legend(ranked) == ["head (1 items)", "tail (1 items)", "cold (2 items)"]
    assert [p.get_height() for p in ranked.patches] == [3, 1, 0, 0]
    assert ranked.get_ylabel() == "training purchases per item"


def test_plot_history_one_panel_per_metric_one_line_per_run():
    hist = {
        "run a": {"loss": ([1, 2], [3.0, 2.0]), "recall": ([1, 2], [0.1, 0.2])},
        "run b": {"loss": ([1, 2], [2.5, 1.5])},
    }
    fig = plots.plot_history(hist, labels={"loss": "cross-entropy"})
    loss, recall = fig.axes
    assert len(loss.get_lines()) == 2 and len(recall.get_lines()) == 1
    assert loss.get_ylabel() == "cross-entropy" and recall.get_ylabel() == "recall"
    assert loss.get_xlabel() == "optimiser step" and _legend(loss) == ["run a", "run b"]


def test_top_lists_marks_the_target_in_each_system():
    items = _items(4)
    req = Requests(["find thing", None], [np.array([0]), np.array([1])])
    got = {"a": np.array([[1, 2], [3, 0]]), "b": np.array([[2, -1], [1, 3]])}
    (cap0, t0), (cap1, t1) = top_lists(req, np.array([2, 3]), got, items, rows=[0, 1], k=2)
    assert "'find thing'" in cap0 and "thing 2" in cap0 and "(recommend)" in cap1
    assert t0.columns == ["rank", "a", "b"] and t0["rank"].to_list() == [1, 2]
    assert t0["a"].to_list() == ["thing 1", "✓ thing 2"] and t0["b"].to_list() == ["✓ thing 2", ""]
    assert t1["a"].to_list() == ["✓ thing 3", "thing 0"]
