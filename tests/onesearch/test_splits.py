import polars as pl
import pytest

from onesearch.data import schema as S
from onesearch.data.splits import leave_one_out, split_counts, user_sequences


def _inter(rows):
    return pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row")


def test_leave_one_out_on_a_hand_checked_example():
    # user 1: items 10, 11, 12, 13 at t = 5, 1, 9, 3 -> time order 11, 13, 10, 12
    # user 2: two events only -> everything stays in train
    # user 3: exactly three events -> train, valid, test
    df = _inter(
        [
            (1, 10, 5),
            (2, 20, 0),
            (1, 11, 1),
            (3, 30, 0),
            (1, 12, 9),
            (3, 31, 1),
            (2, 21, 1),
            (1, 13, 3),
            (3, 32, 2),
        ]
    )
    out = leave_one_out(df)
    got = {(u, i): s for u, i, s in out.select("user_id", "item_id", "split").iter_rows()}
    assert got == {
        (1, 11): "train",
        (1, 13): "train",
        (1, 10): "valid",
        (1, 12): "test",
        (2, 20): "train",
        (2, 21): "train",
        (3, 30): "train",
        (3, 31): "valid",
        (3, 32): "test",
    }
    assert split_counts(out) == {"train": 5, "valid": 2, "test": 2, "users_train_only": 1}
    seq = user_sequences(out).sort("user_id")
    assert seq.rows() == [(1, [11, 13], 10, 12), (3, [30], 31, 32)]


def test_ties_keep_input_order_and_min_events_is_configurable():
    df = _inter([(1, 7, 0), (1, 8, 0), (1, 9, 0)])  # all at the same time
    assert leave_one_out(df)["split"].to_list() == ["train", "valid", "test"]
    assert leave_one_out(df, min_events=4)["split"].to_list() == ["train"] * 3
    one = _inter([(4, 1, 0), (4, 2, 1)])
    assert leave_one_out(one, min_events=1)["split"].to_list() == ["valid", "test"]


def test_bad_arguments():
    with pytest.raises(ValueError, match="min_events must be >= 1"):
        leave_one_out(_inter([(1, 1, 0)]), min_events=0)
    with pytest.raises(ValueError, match=r"column 'position' is missing"):
        leave_one_out(_inter([(1, 1, 0)]), order_by=("position",))


def test_training_purchases_leave_out_every_held_out_target_of_the_scope():
    from onesearch.data.splits import training_purchases

    buys = pl.DataFrame(
        {
            S.USER_ID: [0] * 6 + [1] * 4,
            S.ITEM_ID: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10],
            S.TIMESTAMP: [0, 1, 2, 3, 4, 5, 0, 1, 2, 3],
            S.EVENT: ["purchase"] * 10,
        }
    )
    # user 0 searched before purchases 2, 3 and 4 (positions 1, 2, 3), then bought 5 and 6 without searching
    log = pl.DataFrame(
        {
            S.REQUEST_ID: [0, 1, 2],
            S.USER_ID: [0, 0, 0],
            S.POSITION: [1, 2, 3],
            S.TIMESTAMP: [1, 2, 3],
            S.QUERY: ["q"] * 3,
            S.ITEM_ID: [2, 3, 4],
            S.EVENT: ["purchase"] * 3,
        }
    )
    ids = lambda scope: training_purchases(buys, log, scope)[S.ITEM_ID].to_list()  # noqa: E731
    # recommend: all but the last two of each user; the search targets 3 (valid) and 4 (test) would be in it
    assert ids("recommend") == [1, 2, 3, 4, 7, 8]
    # search: user 0's purchases before the validation request (position 2); user 1 never searched
    assert ids("search") == [1, 2, 7, 8, 9, 10]
    assert ids("both") == [1, 2, 7, 8]
    with pytest.raises(ValueError, match="scope"):
        training_purchases(buys, log, "browse")
