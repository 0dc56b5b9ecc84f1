"""Benchmark: the offline path (template + synth) on a 1-hour recording (360 windows).

Measures, in one process: wall time per stage when the stages are called directly; the same
work through the Prefect flow once its temporary local server is up; and that server's
start-up on its own line. Text cache disabled so both runs do all the work.
Run: ``python bench/pipeline.py [--windows 360]``.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from bgm_batch.prefect_env import configure_prefect

configure_prefect()

from bgm_batch.audio.protocol import AUDIO_BACKENDS  # noqa: E402
from bgm_batch.data import ingest  # noqa: E402
from bgm_batch.data.contract import write_parquet  # noqa: E402
from bgm_batch.settings import load_settings  # noqa: E402
from bgm_batch.stages import characterize, deliver, narrate, render  # noqa: E402
from bgm_batch.stages.transitions import plan_transitions  # noqa: E402
from bgm_batch.testing.simulate import simulate_frame  # noqa: E402
from bgm_batch.text.protocol import TEXT_BACKENDS  # noqa: E402


def direct(path: Path, out: Path, settings) -> dict[str, float]:
    """The flow's stages called as plain functions, timed one by one."""
    times: dict[str, float] = {}

    def timed(stage, fn, *args, **kwargs):
        started = time.perf_counter()
        result = fn(*args, **kwargs)
        times[stage] = time.perf_counter() - started
        return result

    profile = settings.profile_model
    loaded = timed("ingest", ingest.read_recording, path, profile)
    frame = timed("characterize", characterize.characterize, loaded.frame, profile)
    text = TEXT_BACKENDS.create(settings.text.backend, settings.text)
    frame, _ = timed("narrate", narrate.narrate, frame, text, settings.text, seed=0)
    frame = timed("plan", plan_transitions, frame, profile)
    audio = AUDIO_BACKENDS.create(settings.audio.backend, settings.audio)
    rendered = timed(
        "render",
        render.render_segments,
        frame,
        audio,
        settings.audio,
        seed=0,
        work_dir=out / "segments",
    )
    timed("stitch", deliver.stitch_recordings, frame, rendered, settings.audio, out)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--windows", type=int, default=360)
    args = parser.parse_args()
    settings = load_settings(overrides={"progress": False, "text": {"cache_dir": None}})
    from bgm_batch.flows.score_session import score_session
    from prefect import flow

    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        path = scratch / "hour.parquet"
        write_parquet(simulate_frame(args.windows, seed=1), path, "recording")

        started = time.perf_counter()
        flow(lambda: None, name="warm-up")()
        server_s = time.perf_counter() - started

        plain = direct(path, scratch / "direct", settings)
        started = time.perf_counter()
        report = score_session(path, scratch / "flow", settings)
        flow_s = time.perf_counter() - started

    plain_s = sum(plain.values())
    print(
        f"{args.windows} windows ({args.windows * 10 / 3600:.2f} h of gameplay), "
        "template + synth, text cache off"
    )
    print("| stage | direct (s) | in the flow (s) |")
    print("| --- | ---: | ---: |")
    for stage, seconds in plain.items():
        print(f"| {stage} | {seconds:.2f} | {report.timings.get(stage, float('nan')):.2f} |")
    print(f"| **end to end** | **{plain_s:.2f}** | **{flow_s:.2f}** (incl. export) |")
    print(
        "Prefect overhead once its server is up: "
        f"{flow_s - plain_s - report.timings['export']:+.2f} s "
        f"({(flow_s - report.timings['export']) / plain_s - 1:+.1%})"
    )
    print(f"Prefect temporary server start-up (first flow run of the process): {server_s:.1f} s")


if __name__ == "__main__":
    main()
