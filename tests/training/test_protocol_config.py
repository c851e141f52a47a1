"""``protocol`` is a field of the rollout config in ``searchr1 fit`` (LightningCLI)."""

from __future__ import annotations

import pytest

from searchr1.cli import cli_main, default_config_path


def test_protocol_is_a_rollout_field_and_bad_names_list_valid_ones():
    cli = cli_main(["--config", default_config_path(), "--model.rollout.protocol=tool_call"], run=False)
    assert cli.model.rollout_config.protocol == "tool_call"
    with pytest.raises(ValueError, match="unknown protocol 'tags'; valid names: search_r1, tool_call"):
        cli_main(["--config", default_config_path(), "--model.rollout.protocol=tags"], run=False)
