"""The nightly archive run as a Prefect deployment.

``nightly_archive`` is the deployed flow: parameters ROOT, DIR and an optional settings file
(the rest from ``BGM_*`` variables of the serving process), the archive flow run on the engine
those settings name, and a Failed flow run when any recording failed, so Prefect's
notifications catch it. ``serve`` registers the deployment with a cron schedule on the Prefect
server that ``PREFECT_API_URL`` names and runs its flow runs in this process until stopped
(``make nightly``); ``prefect.yaml`` holds the same deployment for ``prefect deploy`` onto a
work pool. Both cap the deployment at one flow run at a time, and the archive's own lock in
DIR refuses a second writer from anywhere else.

    python -m bgm_batch.flows.nightly ROOT DIR [--config FILE] [--cron "0 3 * * *"]
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from bgm_batch.flows.score_archive import run_archive
from prefect import flow
from prefect.deployments.runner import EntrypointType

from bgm_batch.settings import load_settings

DEPLOYMENT = "nightly"
DEFAULT_CRON = "0 3 * * *"


@flow(name="nightly-archive", log_prints=False)
def nightly_archive(
    root: str, out_dir: str, config: str | None = None, force: bool = False
) -> dict[str, int]:
    """Score the archive; raise (a Failed run) when any recording failed."""
    settings = load_settings(Path(config) if config else None, {"progress": False})
    result = run_archive(Path(root), Path(out_dir), settings, force)
    counts = result.report["status"].value_counts()
    if result.failed:
        raise RuntimeError(f"{result.failed} recording(s) failed; see {out_dir}/archive_report.md")
    return dict(zip(counts["status"].to_list(), counts["count"].to_list(), strict=True))


def serve(root: Path, out_dir: Path, config: Path | None, cron: str) -> None:
    """Register the deployment with its schedule and run its flow runs until stopped."""
    parameters = {"root": str(Path(root).resolve()), "out_dir": str(Path(out_dir).resolve())}
    if config is not None:
        parameters["config"] = str(Path(config).resolve())
    nightly_archive.serve(
        name=DEPLOYMENT,
        cron=cron,
        parameters=parameters,
        global_limit=1,
        limit=1,
        entrypoint_type=EntrypointType.MODULE_PATH,
        print_starting_message=False,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Command line of ``python -m bgm_batch.flows.nightly``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", type=Path, help="archive folder")
    parser.add_argument("out_dir", type=Path, help="output folder")
    parser.add_argument("--config", type=Path, help="YAML or TOML settings file")
    parser.add_argument("--cron", default=DEFAULT_CRON, help=f"schedule (default {DEFAULT_CRON})")
    args = parser.parse_args(argv)
    serve(args.root, args.out_dir, args.config, args.cron)


if __name__ == "__main__":
    main()
