"""Asynchronous vs synchronous training throughput on the learning task with a straggler retriever.

Workload: the embedded default (``configs/learn_cpu.yaml``: warm start, synthetic task, 8 prompts × 8 samples, up to
2 searches per trajectory) with its BM25 retriever behind :class:`~searchr1.testing.latency.StragglerRetriever`
(per-query latency log-normal, median 50 ms, σ 1.3: p99 ≈ 1 s; a batched call waits for its slowest query).
Sync = ``searchr1 fit -c configs/learn_cpu.yaml`` (in-process HF rollouts, searches off the decode path) at its
best torch thread count: the first round runs it with each of ``--sync-threads`` (1 and 2: on 2 cores the tiny
model's kernels may or may not gain from a second thread) and the later rounds use the faster; async =
``-c configs/learn_cpu_async.yaml`` (one rollout server process with 1 thread, the trainer on the other core,
``max_staleness`` 2). All run as subprocesses through the real CLI, without evaluation or checkpoints, alternating
for ``--rounds`` rounds; throughput = trained samples per second between the end of step ``--warmup`` and the last
step (server start-up and the first steps excluded). Prints ONE JSON line: ``async_speedup`` (median async ÷ median
sync samples/s, sync at its best thread count), ``max_staleness``, ``max_staleness_seen``, ``dropped_groups``,
``trainer_idle_share``, ``server_idle_share``, the per-round figures, the measured latency distribution and the
load average before and after (the figures mean something only on an otherwise idle machine).

``--server vllm`` runs the async side on a vLLM server (vLLM's OpenAI server with our worker extension, started
by ``fit`` from ``--vllm-python``, float32, eager, 1 thread; weights pushed through the gloo group) instead of our HF
server; the sync side stays the in-process HF backend, so the ratio then also holds vLLM's CPU decoding speed.

Usage: python benchmarks/async_rollout.py [--steps 8] [--warmup 2] [--rounds 3] [--sync-threads 1,2]
[--server hf|vllm] (default: about 8 minutes on 2 idle cores)
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEARCHR1 = str(Path(sys.executable).with_name("searchr1"))
SAMPLES_PER_STEP = 8 * 8


def vllm_server_yaml(python: str) -> str:
    """The ``model.async_rollout`` lines that make ``fit`` start a vLLM rollout server with ``python`` (CPU)."""
    return f"""  async_rollout:
    server_kind: vllm
    vllm_python: {python}
    vllm_args: [--dtype, float32, --max-model-len, "2048", --enforce-eager]
    weight_transport: gloo
"""


def override(tmp: Path, name: str, steps: int, median: float, sigma: float, server_yaml: str = "") -> Path:
    """The YAML laid over the learning config: no evaluation/checkpoints, the straggler retriever, a step clock
    (``server_yaml``: more ``model:`` lines, e.g. :func:`vllm_server_yaml`)."""
    from searchr1.resources import package_path

    corpus = package_path("pkg:assets/synthetic_task/corpus.jsonl")
    text = f"""
trainer:
  limit_train_batches: {steps}
  limit_val_batches: 0
  val_check_interval: null
  check_val_every_n_epoch: 1
  enable_checkpointing: false
  default_root_dir: {tmp / name}
  logger: false
  callbacks:
    - class_path: searchr1.testing.step_clock.StepClock
      init_args:
        path: {tmp / name / "clock.json"}
model:
  retriever:
    class_path: searchr1.testing.latency.StragglerRetriever
    init_args:
      median_s: {median}
      sigma: {sigma}
      retriever:
        class_path: searchr1.retrieval.BM25Retriever
        init_args:
          corpus: {corpus}
          stemmer: none
{server_yaml}"""
    path = tmp / f"{name}.yaml"
    path.write_text(text)
    return path


def run(
    config: str, tmp: Path, name: str, args: argparse.Namespace, threads: int | None = None, server_yaml: str = ""
) -> dict:
    """One ``searchr1 fit`` run (``threads``: its OMP_NUM_THREADS; ``server_yaml``: see :func:`override`); returns
    its clock record plus samples/s."""
    extra = override(tmp, name, args.steps, args.median, args.sigma, server_yaml)
    cmd = [SEARCHR1, "fit", "-c", str(ROOT / config), "-c", str(extra), "--curves.enabled=false"]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    if server_yaml:  # vLLM-CPU's default KV cache takes several GiB; this workload needs little (as tests/vllm)
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.pop("OMP_NUM_THREADS", None)
    if threads:
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=args.timeout)
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed (exit {proc.returncode}):\n{proc.stderr[-4000:]}")
    record = json.loads((tmp / name / "clock.json").read_text())
    ends = record["step_ends"]
    seconds = ends[-1] - ends[args.warmup - 1]
    record["samples_per_second"] = (len(ends) - args.warmup) * SAMPLES_PER_STEP / seconds
    record["timed_seconds"] = seconds
    record["threads"] = threads
    return record


def main() -> None:
    from searchr1.testing.latency import latency_quantiles

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2, help="steps excluded from the timing")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--median", type=float, default=0.05, help="median per-query latency (s)")
    parser.add_argument("--sigma", type=float, default=1.3, help="log-normal shape of the latency")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument(
        "--sync-threads", default="1,2", help="OMP_NUM_THREADS values the sync baseline tries in round 1 (best kept)"
    )
    parser.add_argument("--server", choices=["hf", "vllm"], default="hf", help="the async side's rollout server")
    parser.add_argument(
        "--vllm-python", default=str(ROOT / ".venv-vllm" / "bin" / "python"), help="--server vllm: vLLM's Python"
    )
    args = parser.parse_args()
    if not 1 <= args.warmup < args.steps:
        raise SystemExit("need 1 <= --warmup < --steps")
    if args.server == "vllm" and not Path(args.vllm_python).is_file():
        raise SystemExit(f"--server vllm: no Python at {args.vllm_python}; run bash tools/setup_vllm_venv.sh first")
    candidates = [int(t) for t in args.sync_threads.split(",")]
    server_yaml = vllm_server_yaml(args.vllm_python) if args.server == "vllm" else ""
    load_before = os.getloadavg()
    tried, sync, asyn, latencies = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="async-bench-") as tmp:
        for r in range(args.rounds):
            threads = candidates if r == 0 else [sync[0]["threads"]]
            runs = [run("configs/learn_cpu.yaml", Path(tmp), f"sync{r}t{t}", args, t) for t in threads]
            tried += runs
            sync.append(max(runs, key=lambda x: x["samples_per_second"]))
            asyn.append(run("configs/learn_cpu_async.yaml", Path(tmp), f"async{r}", args, server_yaml=server_yaml))
            latencies += [v for x in (*runs, asyn[-1]) for v in x["retrieval_latencies"]]
    sync_rate = statistics.median(x["samples_per_second"] for x in sync)
    async_rate = statistics.median(x["samples_per_second"] for x in asyn)
    summaries = [x["async"] for x in asyn]
    print(
        json.dumps(
            {
                "async_speedup": round(async_rate / sync_rate, 3),
                "async_server": args.server,
                "max_staleness": summaries[0]["max_staleness"],
                "max_staleness_seen": max(s["max_staleness_seen"] for s in summaries),
                "dropped_groups": sum(s["dropped_groups"] for s in summaries),
                "trainer_idle_share": statistics.median(s["trainer_idle_share"] for s in summaries),
                "server_idle_share": statistics.median(s["server_idle_share"] for s in summaries),
                "sync_samples_per_second": [round(x["samples_per_second"], 2) for x in sync],
                "sync_threads": sync[0]["threads"],
                "sync_tried": {
                    f"round0_threads{x['threads']}": round(x["samples_per_second"], 2) for x in tried[: len(candidates)]
                },
                "async_samples_per_second": [round(x["samples_per_second"], 2) for x in asyn],
                "async_runs": summaries,
                "retrieval_latency": {k: round(v, 4) for k, v in latency_quantiles(latencies).items()},
                "steps": args.steps,
                "warmup": args.warmup,
                "rounds": args.rounds,
                "cpu_count": os.cpu_count(),
                "load_average_1m_before": round(load_before[0], 2),
                "load_average_1m_after": round(os.getloadavg()[0], 2),
            }
        )
    )


if __name__ == "__main__":
    main()
