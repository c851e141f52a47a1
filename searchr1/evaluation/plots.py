"""Training curves from a run's TensorBoard logs: reward/EM, searches per sample, response length, KL, entropy.

Every ``events.out.tfevents.*`` file under the run folder is read with tensorboard's ``EventAccumulator``
(all scalars kept). A resumed run writes several logs; their points are merged per tag by step, the most
recently written value winning. matplotlib is imported only when plotting (it is in the ``dev`` extra).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

EVENT_GLOB = "events.out.tfevents.*"


@dataclass(frozen=True)
class Panel:
    """One PNG: which tags it draws.

    Attributes:
        filename: PNG file name written into the output folder.
        title: figure title.
        tags: exact scalar tags, in legend order.
        prefix_suffix: also draw every tag that starts with ``prefix_suffix[0]`` and ends with ``prefix_suffix[1]``
            (per-dataset validation EM ``val/<source>/em``), dashed.
    """

    filename: str
    title: str
    tags: tuple[str, ...]
    prefix_suffix: tuple[str, str] | None = None


PANELS: tuple[Panel, ...] = (
    Panel("reward_em.png", "Reward and exact match", ("train/reward", "train/em", "val/em"), ("val/", "/em")),
    Panel("searches.png", "Searches per sample", ("rollout/searches_mean",)),
    Panel("response_length.png", "Response length (tokens)", ("train/response_length",)),
    Panel("kl.png", "KL to the reference policy", ("train/policy/kl",)),
    Panel("entropy.png", "Policy entropy (nats per response token)", ("train/policy/entropy",)),
)
"""The curves written by :func:`plot_run` (a panel without any logged tag is skipped)."""


def find_event_files(run_dir: str | Path) -> list[Path]:
    """Every TensorBoard event file under ``run_dir`` (recursively), sorted by path."""
    root = Path(run_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"run folder {root} does not exist")
    return sorted(root.rglob(EVENT_GLOB))


def read_scalars(run_dir: str | Path) -> dict[str, list[tuple[int, float]]]:
    """All scalars logged under ``run_dir``: ``{tag: [(step, value), ...]}`` sorted by step, one value per step.

    Raises:
        FileNotFoundError: when the folder has no event files.
    """
    from tensorboard.backend.event_processing.event_accumulator import SCALARS, EventAccumulator

    files = find_event_files(run_dir)
    if not files:
        raise FileNotFoundError(
            f"no TensorBoard event files ({EVENT_GLOB}) under {run_dir}; point at a run's default_root_dir "
            "(training logs with lightning.pytorch.loggers.TensorBoardLogger)"
        )
    latest: dict[str, dict[int, tuple[float, float]]] = {}
    for path in files:
        acc = EventAccumulator(str(path), size_guidance={SCALARS: 0})
        acc.Reload()
        for tag in acc.Tags()[SCALARS]:
            points = latest.setdefault(tag, {})
            for ev in acc.Scalars(tag):
                if ev.step not in points or ev.wall_time >= points[ev.step][0]:
                    points[ev.step] = (ev.wall_time, float(ev.value))
    return {tag: sorted((s, v) for s, (_, v) in pts.items()) for tag, pts in sorted(latest.items())}


def panel_tags(panel: Panel, available: list[str]) -> list[tuple[str, bool]]:
    """``(tag, dashed)`` pairs of ``panel`` that were logged, exact tags first."""
    tags = [(t, False) for t in panel.tags if t in available]
    if panel.prefix_suffix is not None:
        prefix, suffix = panel.prefix_suffix
        tags += [
            (t, True)
            for t in available
            if t.startswith(prefix) and t.endswith(suffix) and t not in panel.tags and t.count("/") == 2
        ]
    return tags


def _pyplot():
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError("plotting needs matplotlib: pip install 'searchr1[dev]' (or pip install matplotlib)") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_run(run_dir: str | Path, out_dir: str | Path | None = None) -> list[Path]:
    """Write one PNG per panel of :data:`PANELS` whose tags were logged.

    Args:
        run_dir: the run folder (searched recursively for event files).
        out_dir: where the PNGs go (default: ``run_dir``).

    Returns:
        The written PNG paths.
    """
    scalars = read_scalars(run_dir)
    plt = _pyplot()
    out = Path(out_dir) if out_dir is not None else Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for panel in PANELS:
        tags = panel_tags(panel, list(scalars))
        if not tags:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for tag, dashed in tags:
            steps, values = zip(*scalars[tag])
            ax.plot(steps, values, "--" if dashed else "-", marker="o" if len(steps) < 30 else None, label=tag)
        ax.set_title(panel.title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / panel.filename
        fig.savefig(path, dpi=120)
        plt.close(fig)
        written.append(path)
    return written
