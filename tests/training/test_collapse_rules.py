"""CollapseGuard's decision logic on hand-made signal sequences, and the same decision on every rank."""

from __future__ import annotations

import math

import pytest
import torch.distributed as dist
import torch.multiprocessing as mp

from searchr1.training.callbacks import CollapseGuard
from searchr1.training.collapse import agree_on_max, agree_on_values
from searchr1.training.collapse_rules import NONFINITE, Detector, SignalRule, default_rules, signal_values


def feed(rule: SignalRule, values: list[float]) -> list:
    detector = Detector({"s": rule})
    return [detector.observe({"s": v}, step) for step, v in enumerate(values)]


def test_drop_needs_the_warmup_and_every_drop_bound():
    rule = SignalRule("m", drop_to=0.5, drop_sigma=3.0, min_std=0.1, warmup=3)
    assert feed(rule, [1.0, 0.0]) == [[], []]  # one value is no baseline yet: no alarm
    out = feed(rule, [1.0, 1.1, 0.9, 0.6, 0.3])
    # step 3, baseline [1.0, 1.1, 0.9]: mean 1.0, std 0.0816 → floored to 0.1; bounds 0.5 and 1.0 - 3·0.1 = 0.7:
    # 0.6 is under 0.7 only, so healthy, and joins the baseline
    assert out[3] == []
    # step 4, baseline [1.0, 1.1, 0.9, 0.6]: mean 0.9, std √(0.14/4) = 0.1871; bounds 0.45 and 0.9 - 0.5612 = 0.3388
    (alarm,) = out[4]
    assert alarm.value == 0.3 and alarm.step == 4 and alarm.anomaly_start == 4
    assert alarm.baseline_mean == pytest.approx(0.9) and alarm.baseline_std == pytest.approx(0.187083, abs=1e-6)
    assert "dropped under 0.3388" in alarm.reason


def test_flat_signal_does_not_alarm_on_noise_thanks_to_min_std():
    rule = SignalRule("m", drop_sigma=4.0, rise_sigma=4.0, min_std=0.01, warmup=3)
    assert all(a == [] for a in feed(rule, [7.611, 7.611, 7.611, 7.6105, 7.6112]))


def test_rise_and_patience_report_where_the_anomaly_began():
    rule = SignalRule("m", rise_to=10.0, rise_sigma=6.0, min_std=0.01, warmup=3, patience=2)
    out = feed(rule, [0.5, 0.5, 0.5, 9.0, 6.0, 0.5, 8.0])
    # baseline 0.5 ± 0.01 (floored): bounds 5.0 and 0.56; 9.0 is the first bad step, patience 2 waits for 6.0;
    # 0.5 ends the streak, so the lone 8.0 after it does not alarm
    assert out[3] == [] and out[5] == [] and out[6] == []
    (alarm,) = out[4]
    assert alarm.step == 4 and alarm.anomaly_start == 3


def test_searches_vanish_only_when_the_policy_used_to_search():
    rule = default_rules()["searches_vanish"]  # drop_to 0.1, min_baseline 0.2, patience 2
    never = feed(rule, [0.0] * 10)
    assert all(a == [] for a in never)
    used = feed(rule, [1.5, 1.2, 1.4, 1.3, 1.6, 0.0, 0.0])
    assert used[5] == [] and [a.signal for a in used[6]] == ["s"] and used[6][0].anomaly_start == 5


def test_nonfinite_values_always_alarm_and_are_counted():
    rules = {"nan": SignalRule(NONFINITE, "rollback", above=0.0), "ent": SignalRule("train/policy/entropy")}
    values = signal_values(rules, {"train/policy/entropy": float("nan"), "rollout/x": 1.0, "val/em": float("inf")})
    assert values["nan"] == 1.0 and math.isnan(values["ent"])  # val/ metrics are not watched
    alarms = Detector(rules).observe(values, 0)
    assert {a.signal for a in alarms} == {"nan", "ent"}  # NaN is anomalous even before the warm-up


def test_summed_metrics_and_missing_ones():
    rules = {"cap": SignalRule("rollout/finish_length+rollout/finish_truncated")}
    assert signal_values(rules, {"rollout/finish_length": 0.25, "rollout/finish_truncated": 0.5}) == {"cap": 0.75}
    assert signal_values(rules, {"rollout/finish_length": 0.25}) == {"cap": None}


def test_actions_override_and_bad_names_list_the_valid_ones():
    guard = CollapseGuard(actions={"kl_ref": "stop", "grad_norm_spike": "off"})
    assert guard.rules["kl_ref"].action == "stop" and "grad_norm_spike" not in guard.rules
    with pytest.raises(ValueError, match="valid: .*entropy_collapse"):
        CollapseGuard(actions={"entropy": "stop"})
    with pytest.raises(ValueError, match="warn"):
        SignalRule("m", action="panic")


def _rank_main(rank: int, port: int, queue) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        # rank 0 sees a healthy entropy, rank 1 a collapsed one; rank 1 alone lacks the KL metric
        values = {"entropy": 2.0 if rank == 0 else 0.0, "kl": 0.1 if rank == 0 else None}
        agreed = agree_on_values(values, "cpu")
        queue.put((rank, agreed, agree_on_max(rank * 2, "cpu")))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_ranks_agree_on_signal_values_and_on_the_action():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_rank_main, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = dict((r, (v, a)) for r, v, a in (queue.get(timeout=60) for _ in procs))
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0
    assert results[0] == results[1] == ({"entropy": 1.0, "kl": None}, 2)


def test_degeneration_fires_when_the_policys_own_text_starts_to_loop():
    from searchr1.rewards.search_quality import repetition_score

    rule = default_rules()["degeneration"]  # search/repetition: > 2 x baseline and > baseline + 4 sigma (>= 0.05)
    loop = repetition_score("x y z x y z x y z")  # 7 trigrams, 3 distinct: 1 - 3/7
    assert repetition_score("a b c d e f") == 0.0 and loop == pytest.approx(4 / 7)
    out = feed(rule, [0.10, 0.12, 0.08, 0.11, 0.09, 0.25, loop, 0.6, 0.1])
    # step 5, baseline mean 0.10, std 0.0141 -> floored 0.05: bounds 0.2 and 0.3; 0.25 is over 0.2 only: healthy
    assert out[5] == []
    # step 6, baseline of six (0.25 joined): mean 0.125, std sqrt(0.01975 / 6) = 0.0574; bounds 0.25 and 0.3545
    assert out[6] == []  # anomalous, but patience 2 waits for the next step
    (alarm,) = out[7]
    assert alarm.anomaly_start == 6 and alarm.baseline_mean == pytest.approx(0.125)
    assert alarm.baseline_std == pytest.approx(0.057373, abs=1e-6) and "rose over 0.3545" in alarm.reason
    assert out[8] == [] and rule.action == "warn"


def test_never_searched_rise_fires_on_a_jump_not_on_a_policy_that_never_searched():
    rule = default_rules()["never_searched_rise"]  # search/failure_never_searched, same bounds as degeneration
    # an untrained policy answers every question without searching (share 1.0), then learns to search: no alarm
    assert all(a == [] for a in feed(rule, [1.0, 1.0, 1.0, 1.0, 1.0, 0.75, 0.5, 0.25, 0.125]))
    # 8 questions a step; 1 of 8 wrong without a search (0.125, std 0 -> floored 0.05): bounds 0.25 and 0.325;
    # 2 of 8 (0.25) is over neither strictly; 3 then 4 of 8 are over both: the alarm at the second, from the first
    out = feed(rule, [0.125] * 5 + [0.25, 0.375, 0.5])
    assert out[5] == [] and out[6] == []
    (alarm,) = out[7]
    assert alarm.anomaly_start == 6 and alarm.metric == "search/failure_never_searched"
    assert signal_values({"n": rule}, {"search/failure_never_searched": 0.5}) == {"n": 0.5}
