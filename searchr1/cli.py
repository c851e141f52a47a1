"""``searchr1`` = LightningCLI over ``SearchR1Module`` and ``QADataModule`` (``fit``, ``validate``, ``test``).

``searchr1 fit`` with no ``--config`` runs the embedded default (``searchr1/configs/learn_cpu.yaml``). Paths
of the form ``pkg:<relative path>`` in data options point inside the installed package (its shipped
HotpotQA sample), so the default works from any directory. Before any class is built, the parsed config goes
through :func:`searchr1.training.scaling.check_setup` (strategy vs hardware, optional packages, critic vs
estimator, mini-batch layout); a bad setup exits with one line saying what to change (see docs/scaling.md).
"""

from __future__ import annotations

from lightning.pytorch.cli import LightningCLI

from searchr1.resources import default_config_path, package_path
from searchr1.training.scaling import ScaleSetup, SetupError, check_setup, strategy_kind

SUBCOMMANDS = ("fit", "validate", "test")
__all__ = ["SearchR1CLI", "cli_main", "default_config_path", "package_path", "setup_from_config"]


class SearchR1CLI(LightningCLI):
    """LightningCLI with ``pkg:`` data paths resolved before the classes are built, and no ``predict`` (the policy
    answers questions with ``searchr1 eval`` / ``searchr1 infer``, which write the trajectories)."""

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        return {k: v for k, v in LightningCLI.subcommands().items() if k in SUBCOMMANDS}

    def add_arguments_to_parser(self, parser) -> None:
        from searchr1.training.run_report import CurvePlots
        from searchr1.training.search_cost import SearchCost

        parser.add_lightning_class_args(CurvePlots, "curves")  # PNG curves at the end of every fit (--curves.*)
        parser.add_lightning_class_args(SearchCost, "search_cost")  # paid search: cost metrics, max_cost stop

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        _resolve_package_paths(config)
        if self.subcommand:  # a run (fit/validate/test) starts: refuse setups that cannot work, before any loading
            from searchr1.errors import config_errors

            with config_errors():  # e.g. an unknown estimator name (the registry lists the valid ones)
                check_setup(setup_from_config(config))

    def instantiate_classes(self) -> None:
        from searchr1.errors import config_errors

        with config_errors():  # a constructor refusing a value: one message naming it, no traceback
            super().instantiate_classes()

    def instantiate_trainer(self, **kwargs):
        from searchr1.training.console import adapt_trainer_config

        adapt_trainer_config(self._get(self.config_init, "trainer"))  # plain step lines when piped; Ctrl-C report
        return super().instantiate_trainer(**kwargs)

    def before_fit(self) -> None:
        """``--ckpt_path last``: the newest ``last.ckpt`` under the run's folders (:mod:`searchr1.training.resume`)."""
        from searchr1.training.resume import NoLastCheckpoint, check_resumable, resolve_last

        config = self.config_init[self.subcommand]
        check_resumable(config.get("ckpt_path"))  # an unfinished sharded save: refused before any rank starts
        if config.get("ckpt_path") != "last":
            return
        try:
            config["ckpt_path"] = str(resolve_last(self.trainer))
        except NoLastCheckpoint as err:
            raise SetupError(str(err)) from None
        print(f"searchr1: --ckpt_path last -> {config['ckpt_path']}", flush=True)

    before_validate = before_test = before_fit


def setup_from_config(config: object) -> ScaleSetup:
    """The startup-check view of a parsed config (``trainer``/``model``/``data`` namespaces)."""
    import torch

    from searchr1.algorithms import ADVANTAGE_ESTIMATORS

    trainer, model, data = (getattr(config, k, None) for k in ("trainer", "model", "data"))
    algorithm = getattr(model, "algorithm", None)
    estimator = getattr(algorithm, "estimator", "grpo")
    accelerator = str(getattr(trainer, "accelerator", "auto") or "auto")
    if not isinstance(getattr(trainer, "accelerator", None), str):
        accelerator = type(trainer.accelerator).__name__ if trainer and trainer.accelerator else "auto"
    accelerator = accelerator.lower()
    if accelerator == "auto":
        accelerator = "gpu" if torch.cuda.is_available() else "cpu"
    return ScaleSetup(
        strategy=strategy_kind(getattr(trainer, "strategy", None) or "auto"),
        accelerator="cpu" if accelerator.startswith("cpu") else "gpu",
        backend=getattr(model, "backend", "hf"),
        estimator=estimator,
        needs_critic=ADVANTAGE_ESTIMATORS.get(estimator).needs_critic,
        critic_name_or_path=getattr(model, "critic_name_or_path", None),
        batch_size=getattr(data, "batch_size", None),
        n_samples=getattr(algorithm, "n_samples", 1),
        mini_batch_size=getattr(algorithm, "mini_batch_size", None),
        policy_lr=getattr(model, "policy_lr", None),
        critic_lr=getattr(model, "critic_lr", None),
        gpus_visible=torch.cuda.device_count(),
    )


def _resolve_package_paths(node: object) -> object:
    """Replace every ``pkg:`` string inside a (nested) config in place; returns the resolved node."""
    if isinstance(node, str):
        return package_path(node)
    if isinstance(node, list):
        node[:] = [_resolve_package_paths(v) for v in node]
    elif hasattr(node, "__dict__") and not callable(node):  # jsonargparse Namespace
        for key, value in vars(node).items():
            setattr(node, key, _resolve_package_paths(value))
    elif isinstance(node, dict):
        for key, value in node.items():
            node[key] = _resolve_package_paths(value)
    return node


def _with_default_config(args: list[str]) -> list[str]:
    if not args or args[0] not in SUBCOMMANDS:
        return args
    if any(a in ("-c", "--config") or a.startswith("--config=") for a in args[1:]):
        return args
    return [args[0], "--config", default_config_path(), *args[1:]]


def cli_main(args: list[str] | None = None, run: bool = True) -> SearchR1CLI:
    """Build (and by default run) the CLI; ``args`` as on the command line, without the program name."""
    import sys

    import searchr1.training.strategies  # noqa: F401 - registers the ``fsdp2`` strategy name
    from searchr1.data.datamodule import QADataModule
    from searchr1.quiet import quiet_known_noise
    from searchr1.retrieval.search_cache import BudgetExhausted
    from searchr1.training.console import ShortErrorParser
    from searchr1.training.module import SearchR1Module

    quiet_known_noise()
    argv = _with_default_config(list(args or [])) if run else list(args or [])
    # A run parses ``sys.argv``, rewritten to the full command line (default config included): Lightning's
    # subprocess launcher (DDP/FSDP2 with devices > 1) starts the other ranks by re-running ``sys.argv``, so they
    # must see exactly this rank's arguments. ``run=False`` (config checks from Python) parses ``args`` only.
    sys.argv = [sys.argv[0], *argv] if run else sys.argv[:1]
    try:
        return SearchR1CLI(
            SearchR1Module,
            QADataModule,
            args=None if run else argv,
            run=run,
            save_config_kwargs={"overwrite": True},
            seed_everything_default=0,
            parser_class=ShortErrorParser,
        )
    except SetupError as err:
        if not run:
            raise
        sys.exit(f"searchr1: error: {err}")  # a configuration to fix, not a bug: one message, no traceback
    except BudgetExhausted as err:  # max_cost reached: a checkpoint was saved (SearchCost), exit 1 with one message
        from searchr1.training.search_cost import stop_message

        sys.exit(stop_message(err))
