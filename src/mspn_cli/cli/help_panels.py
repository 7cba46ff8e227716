"""`--help` with the options grouped in panels.

Every command of the app uses `PanelledCommand` (set once in cli/app.py). Its help lists
the options under the headings of options.HELP_PANELS (inputs and outputs, networks,
video, scale-out, the rest), each in declaration order, instead of one flat list of 40.
Only the formatter changes: parsing is Typer's own.
"""

from __future__ import annotations

import typer.core

from mspn_cli.cli.options import PANEL_ORDER, help_panel


class PanelledCommand(typer.core.TyperCommand):
    """A Typer command whose --help groups its options in panels."""

    def format_options(self, ctx, formatter) -> None:
        panels = {"Arguments": [], **{panel: [] for panel in PANEL_ORDER}}
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                panels["Arguments"].append(record)
            else:
                panels[help_panel(param.name or "", (*param.opts, *param.secondary_opts))].append(record)
        for panel, records in panels.items():
            if records:
                with formatter.section(panel):
                    formatter.write_dl(records)
