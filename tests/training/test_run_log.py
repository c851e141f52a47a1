"""RunRecorder's choice of trajectories to keep: every outcome class the step has, spread over the batch."""

from __future__ import annotations

from searchr1.training.run_log import sample_rows


def test_sample_rows_cover_the_outcome_classes_first() -> None:
    outcomes = ["correct"] * 10 + ["never_searched"] * 5 + ["misread"]
    # 4 picks: classes take turns (correct, never_searched, misread, then correct again);
    # correct's 2 picks spread over its rows 0..9 -> rows 0 and 5; never_searched's first row 10; misread's row 15
    assert sample_rows(outcomes, 4) == [0, 5, 10, 15]
    assert sample_rows(outcomes, 2) == [0, 10]
    assert sample_rows(outcomes, 50) == list(range(16))  # more asked than rows: all of them
    assert sample_rows(["correct"] * 8, 4) == [0, 2, 4, 6]
    assert sample_rows(outcomes, 0) == [] and sample_rows([], 4) == []


def test_search_log_names_per_rank_and_for_a_resumed_run() -> None:
    from searchr1.training.run_log import search_log_name

    assert search_log_name(0, False) == "search_log.parquet"
    assert search_log_name(2, False) == "search_log.rank2.parquet"
    assert search_log_name(0, True).startswith("search_log.resumed-") and search_log_name(0, True).endswith(".parquet")
