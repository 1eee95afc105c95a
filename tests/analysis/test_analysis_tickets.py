"""The report's lottery-ticket accounting (analysis/tickets.py) on a hand-made trial table."""

import pandas as pd
import pytest

from analysis.tickets import has_tickets, ticket_table, where


def _last() -> pd.DataFrame:
    # Two tickets (regularizer none / diggan) over levels 0, 0.2, 0.488; the diggan level-0.488
    # trial is still finding round 2 after reusing round 1.
    rows = []
    for name in ("none", "diggan"):
        for level, rnd, comp, reuse, spars in [(0.0, 0, None, None, 0.0), (0.2, 1, 1, 0, 0.2),
                                                (0.488, 3, 2, 1, 0.488)]:
            rows.append({"trial_id": f"{name}-{level}", "sparsity.level": level,
                         "sparsity.per_round": 0.2, "sparsity.round_steps": 500,
                         "regularizer.name": name, "train.steps": 1500, "eval.num_samples": 1000,
                         "stage": "train", "round": rnd, "step": 1500, "status": "finished",
                         "rounds_computed": comp, "rounds_reused": reuse, "sparsity": spars})
    rows[-1].update(stage="ticket", round=2, step=-600, status="running", rounds_computed=0,
                    rounds_reused=1, sparsity=0.2)
    df = pd.DataFrame(rows)
    df.attrs["factors"] = ["sparsity.level", "regularizer.name"]
    return df


def test_ticket_table_counts_rounds_and_says_where_open_trials_are():
    table, summary = ticket_table(_last())
    assert table.columns[2] == "density 0.8^k"
    assert [r[:7] for r in table.rows] == [
        ["0", "0", "1.0000", "0.0000", "2", "0", "0"],
        ["0.2", "1", "0.8000", "0.2000", "2", "2", "0"],
        ["0.488", "3", "0.5120", "0.3440", "2", "2", "2"],
    ]
    assert table.rows[2][7] == "diggan-0.488: ticket round 2 of 3" and table.rows[0][7] == ""
    # Needed: 2 x (0 + 1 + 3) = 8; computed 1 + 2 (none) + 1 + 0 (diggan) = 4.
    assert summary == ("Ticket rounds: 4 computed and 2 reused from the shared ticket store "
                       "(the sweep holds 2 tickets); the trials alone would have computed 8, "
                       "so reuse saved 4 rounds (50%).")
    assert table.raw["rounds_computed"].tolist() == [0, 2, 2]
    assert table.raw["measured_sparsity"].tolist() == pytest.approx([0.0, 0.2, 0.344])


def test_ticket_key_count_ignores_the_level_and_eval_fields():
    last = _last()
    last["eval.num_samples"] = range(len(last))  # not part of a ticket's key
    assert "(the sweep holds 2 tickets)" in ticket_table(last)[1]
    last["sparsity.round_steps"] = None  # train.steps is then the round length: in the key
    last.loc[last["regularizer.name"] == "none", "train.steps"] = [1500, 1500, 3000]
    assert "(the sweep holds 3 tickets)" in ticket_table(last)[1]


def test_other_per_round_and_dense_sweeps():
    last = _last()
    last["sparsity.per_round"] = 0.5
    last["sparsity.level"] = last["sparsity.level"].replace({0.488: 0.75})  # k = 2 at 50%
    table, summary = ticket_table(last)
    assert table.columns[2] == "density 0.5^k"
    assert [r[1:3] for r in table.rows] == [["0", "1.0000"], ["1", "0.5000"], ["2", "0.2500"]]
    assert "would have computed 6," in summary
    assert has_tickets(last) and not has_tickets(last.assign(**{"sparsity.level": 0.0}))
    assert not has_tickets(last.drop(columns="sparsity.level"))


def test_where():
    assert where(pd.Series({"stage": "train", "step": 250})) == "train step 250"
    assert where(pd.Series({"stage": "ticket", "round": 4, "sparsity.level": 0.738})) == \
        "ticket round 4 of 6"
