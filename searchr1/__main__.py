"""The ``searchr1`` console command (LightningCLI front door; see ``searchr1.cli``)."""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``searchr1`` console script."""
    args = sys.argv[1:] if argv is None else argv
    if args and args[0] in {"--version", "-V"}:
        from searchr1 import __version__

        print(f"searchr1 {__version__}")
        return
    from searchr1.cli import cli_main

    cli_main(args)


if __name__ == "__main__":
    main()
