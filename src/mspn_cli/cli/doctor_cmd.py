"""`mspn doctor`: is this installation able to run, and what does it have?

The probes live in `mspn_cli.diagnostics`; this file only prints them. Tables go to
stderr like every human-readable line, so stdout carries only `--json` output.
"""

from __future__ import annotations

import json
from typing import Any, Dict, List

import typer

from mspn_cli.cli.app import app
from mspn_cli.cli.common import guarded
from mspn_cli.errors import EXIT_ENVIRONMENT, EXIT_OK

DEFAULT_URL_TIMEOUT = 3.0


def _print_table(report: Dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    from mspn_cli.cli.common import console_err

    console: Console = console_err
    packages = Table(title=f"mspn-cli {report['mspn_cli']}", title_justify="left")
    packages.add_column("component")
    packages.add_column("version")
    packages.add_column("needs")
    packages.add_column("status", overflow="fold")
    for row in report["packages"]:
        status = (row.get("note") or "ok") if row["ok"] else f"PROBLEM: {row['problem']}"
        packages.add_row(row["name"], row["version"] or "-", row["requirement"], status)
    devices = report["devices"]
    gpus = devices["gpu_count"]
    packages.add_row("devices", f"cpu, {gpus} gpu(s)" if gpus is not None else "cpu", "cpu",
                     devices["problem"] or devices.get("note") or "ok")
    backends = report["backends"]
    packages.add_row("backends", ", ".join(backends["cpu"]) or "-", "one on cpu", backends["problem"] or "ok")
    cpu = report["cpu"]
    features = ", ".join(f"{name} {'yes' if present else 'no' if present is False else '?'}" for name, present in cpu["features"].items())
    packages.add_row("cpu", cpu["model"] or "-", "-", cpu["problem"] or features or "features unknown")
    packages.add_row("precisions", ", ".join(cpu["precisions"]), "fp32", f"bf16: {cpu['bf16']}" if cpu["bf16"] else "ok")
    console.print(packages)

    weights = report["weights"]
    table = Table(title=f"weights cache: {weights['home']}", title_justify="left")
    table.add_column("model", overflow="fold")
    table.add_column("present")
    table.add_column("size")
    table.add_column("sha256", overflow="fold")
    table.add_column("url", overflow="fold")
    urls = {entry["url"]: entry for entry in report["urls"]}
    for entry in weights["models"]:
        size = f"{entry['size_bytes']:,} B" if entry["size_bytes"] is not None else "-"
        digest = entry["sha256"] or (entry["problem"] or "-")
        if entry["sha256_matches"] is False:
            digest += " (does not match the config)"
        reach = urls.get(entry["url"])
        reach_text = "reachable" if reach and reach["reachable"] else f"unreachable ({reach['reason']})" if reach else "-"
        table.add_row(entry["model"], "yes" if entry["present"] else "no (downloads on first use)", size, digest,
                      f"{entry['url']}: {reach_text}")
    if weights["problem"]:
        table.add_row("-", "-", "-", weights["problem"], "-")
    console.print(table)
    extra = [entry for entry in report["urls"] if entry["url"] not in {m["url"] for m in weights["models"]}]
    for entry in extra:
        state = "reachable" if entry["reachable"] else f"unreachable ({entry['reason']})"
        console.print(f"{entry['url']}: {state}", markup=False, soft_wrap=True)
    if report["problems"]:
        console.print(f"{len(report['problems'])} problem(s): mspn cannot run until they are fixed", markup=False)
        for problem in report["problems"]:
            console.print(f"  - {problem}", markup=False, soft_wrap=True)
    else:
        console.print("ok: everything mspn needs is installed", markup=False)


@app.command("doctor")
@guarded
def doctor_command(
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object instead of tables (for scripts)."),
    offline: bool = typer.Option(False, "--offline", help="Do not contact the weight servers; their URLs are reported as unreachable."),
    timeout: float = typer.Option(
        DEFAULT_URL_TIMEOUT, "--timeout", min=0.1, help="Seconds to wait for each server's answer to the HEAD request."
    ),
    check_url_options: List[str] = typer.Option(
        [], "--check-url", help="Also check that this URL answers (e.g. a mirror you pass to `weights download --url`); repeatable."
    ),
) -> None:
    """Check the installation: package versions, devices, backends, cached weights and weight servers.

    Exit code 0 when mspn can run (missing weights download on first use; unreachable servers are only reported),
    6 when a required package is missing or incompatible, or no backend can run on the CPU.
    """
    from mspn_cli.diagnostics import diagnose

    report = diagnose(offline, timeout, list(check_url_options))
    if json_output:
        typer.echo(json.dumps(report, indent=2))
    else:
        _print_table(report)
    raise typer.Exit(EXIT_ENVIRONMENT if report["problems"] else EXIT_OK)
