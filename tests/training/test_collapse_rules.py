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
