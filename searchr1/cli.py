"""``searchr1`` = LightningCLI over ``SearchR1Module`` and ``QADataModule`` (``fit``, ``validate``, ``test``).

``searchr1 fit`` with no ``--config`` runs the embedded default (``searchr1/configs/tiny_cpu.yaml``). Paths
of the form ``pkg:<relative path>`` in data options point inside the installed package (its shipped
HotpotQA sample), so the default works from any directory.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from lightning.pytorch.cli import LightningCLI

PKG_PREFIX = "pkg:"
DEFAULT_CONFIG = "tiny_cpu.yaml"
SUBCOMMANDS = ("fit", "validate", "test")


def package_path(spec: str) -> str:
    """``pkg:assets/x.jsonl`` → the absolute path of that file inside the installed package; other strings unchanged."""
    if isinstance(spec, str) and spec.startswith(PKG_PREFIX):
        return str(Path(str(files("searchr1"))) / spec[len(PKG_PREFIX) :])
    return spec


def default_config_path() -> str:
    """The embedded default config shipped in the package."""
    return str(Path(str(files("searchr1"))) / "configs" / DEFAULT_CONFIG)


class SearchR1CLI(LightningCLI):
    """LightningCLI with ``pkg:`` data paths resolved before the classes are built."""

    def before_instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        _resolve_package_paths(config)


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

    from searchr1.data.datamodule import QADataModule
    from searchr1.training.module import SearchR1Module

    sys.argv = sys.argv[:1]  # the arguments come from ``args`` (LightningCLI warns when both are set)

    return SearchR1CLI(
        SearchR1Module,
        QADataModule,
        args=_with_default_config(list(args or [])) if run else list(args or []),
        run=run,
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
    )
