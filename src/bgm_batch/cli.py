"""The ``bgm-batch`` command line: parses arguments into settings and calls stages or flows.

Exit codes: 0 done (possibly with quarantined rows), 1 nothing usable was left or a stage
failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bgm_batch import __version__

Handler = Callable[[argparse.Namespace], int]
_COMMANDS: dict[str, Handler] = {}


def _command(name: str) -> Callable[[Handler], Handler]:
    def register(handler: Handler) -> Handler:
        _COMMANDS[name] = handler
        return handler

    return register


def _fail(message: str) -> int:
    print(f"bgm-batch: error: {message}", file=sys.stderr)
    return 1


# --- import-capture ------------------------------------------------------------------------


@_command("import-capture")
def _import_capture(args: argparse.Namespace) -> int:
    from bgm_batch.contract import write_parquet
    from bgm_batch.ingest import IngestError, read_recording
    from bgm_batch.profile import load_profile

    try:
        result = read_recording(args.capture_dir, load_profile(args.profile))
    except IngestError as exc:
        return _fail(str(exc))
    for warning in result.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for row in result.quarantine.head(20).to_dicts():
        print(
            f"rejected: {row['source']}, window {row['index']}, field {row['field']}: "
            f"{row['reason']}",
            file=sys.stderr,
        )
    quarantine = args.quarantine or args.output.with_name(f"{args.output.stem}.quarantine.parquet")
    write_parquet(result.quarantine, quarantine, "quarantine")
    if args.split:
        for recording in result.recordings():
            part = result.frame.filter(result.frame["recording"] == recording)
            write_parquet(part, args.output / f"{recording}.parquet", "recording")
    elif result.frame.height:
        write_parquet(result.frame, args.output, "recording")
    print(result.summary())
    print(f"recordings: {', '.join(result.recordings()) or 'none'}; quarantine: {quarantine}")
    return 0 if result.frame.height else _fail("no usable window left; see the quarantine file")


def _add_import_capture(sub: Any) -> None:
    p = sub.add_parser(
        "import-capture",
        help="turn a folder of MetaBGM capture JSON files into one recording Parquet file",
        description="Validate every capture file against schemas/ and write one row per window. "
        "Rejected windows go to a quarantine Parquet file with file, index, field and reason.",
    )
    p.add_argument("capture_dir", type=Path, help="folder of <GameStartTime>-<Index>.json files")
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        required=True,
        help="output Parquet file (a folder with --split)",
    )
    p.add_argument("--split", action="store_true", help="one Parquet file per recording")
    p.add_argument("--quarantine", type=Path, help="quarantine file (default: beside the output)")
    p.add_argument("--profile", default="minecraft", help="game profile name or YAML path")


# --- characterize --------------------------------------------------------------------------


@_command("characterize")
def _characterize(args: argparse.Namespace) -> int:
    from bgm_batch.atomic import atomic_path
    from bgm_batch.characterize import characterize
    from bgm_batch.ingest import IngestError, read_recording
    from bgm_batch.profile import load_profile

    profile = load_profile(args.profile)
    try:
        result = read_recording(args.input, profile)
    except IngestError as exc:
        return _fail(str(exc))
    frame = characterize(result.frame, profile).drop("snapshot")
    with atomic_path(args.output) as tmp:
        frame.write_parquet(tmp)
    print(result.summary())
    print(f"combat windows: {int(frame['combat'].sum())} of {frame.height}; wrote {args.output}")
    return 0 if frame.height else _fail("no usable window left")


def _add_characterize(sub: Any) -> None:
    p = sub.add_parser(
        "characterize",
        help="apply the paper's Algorithm 1 to every window (adds combat and info_str)",
    )
    p.add_argument("input", type=Path, help="capture folder or recording Parquet file")
    p.add_argument("-o", "--output", type=Path, required=True, help="output Parquet file")
    p.add_argument("--profile", default="minecraft", help="game profile name or YAML path")


# --- score ---------------------------------------------------------------------------------


def _score_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """Only the flags the user gave: anything else comes from env, config file, defaults."""
    text = {"backend": args.text, "model": args.llm, "adapter": args.adapter, "mode": args.mode}
    audio = {"backend": args.audio, "model": args.music_model}
    overrides: dict[str, Any] = {
        "text": {k: v for k, v in text.items() if v is not None},
        "audio": {k: v for k, v in audio.items() if v is not None},
    }
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.no_progress:
        overrides["progress"] = False
    if args.profile:
        overrides["profile"] = args.profile
    return overrides


@_command("score")
def _score(args: argparse.Namespace) -> int:
    from bgm_batch.prefect_env import configure_prefect
    from bgm_batch.settings import load_settings

    configure_prefect()
    from flows.score_session import score_session

    settings = load_settings(args.config, _score_overrides(args))
    try:
        report = score_session(
            args.input, args.out, settings, video=args.video, recording=args.recording
        )
    except (ValueError, RuntimeError, FileNotFoundError) as exc:
        return _fail(str(exc))
    counts = report.counts
    print(
        f"rows in: {counts['rows_in']}, accepted: {counts['accepted']}, "
        f"quarantined: {counts['quarantined']}, rendered: {counts['rendered']}"
    )
    print("stage seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in report.timings.items()))
    print(f"deliverables: {report.out_dir}")
    if report.scored_video:
        print(f"scored video: {report.scored_video}")
    return 0 if counts["rendered"] else _fail("nothing was rendered")


def _add_score(sub: Any) -> None:
    p = sub.add_parser(
        "score",
        help="score a recording: music for every window, stitched, muxed under the video",
        description="Run the whole pipeline on one recording (capture folder or Parquet file). "
        "Settings come from these flags, then BGM_* environment variables (BGM_TEXT__BACKEND=hf), "
        "then --config (YAML/TOML), then defaults. Offline defaults: --text template --audio synth.",
    )
    p.add_argument("input", type=Path, help="capture folder, capture file or recording Parquet")
    p.add_argument("--video", type=Path, help="gameplay video to put the music under")
    p.add_argument("--out", type=Path, required=True, help="output folder for the deliverables")
    p.add_argument("--recording", help="which recording of a multi-recording input to score")
    p.add_argument("--text", help="text backend: template (offline, rule-based) or hf")
    p.add_argument("--llm", help="hf model id or local folder (default Llama-2-7b-chat-hf)")
    p.add_argument("--adapter", type=Path, help="LoRA adapter folder for the hf backend")
    p.add_argument("--mode", choices=["two-stage", "direct"], help="generation mode")
    p.add_argument("--audio", help="audio backend: synth (offline), musicgen or audiocraft")
    p.add_argument("--music-model", help="MusicGen id or local folder (facebook/musicgen-small)")
    p.add_argument("--seed", type=int, help="seed for every generator (default 0)")
    p.add_argument("--profile", help="game profile name or YAML path (default minecraft)")
    p.add_argument("--config", type=Path, help="YAML or TOML settings file")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


# --- entry point ---------------------------------------------------------------------------

_PARSERS = [_add_import_capture, _add_characterize, _add_score]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to render the README's usage)."""
    parser = argparse.ArgumentParser(
        prog="bgm-batch",
        description="Score recorded gameplay with adaptive background music (the MetaBGM method): "
        "capture snapshots -> Algorithm 1 -> narrative -> music description -> audio -> video.",
    )
    parser.add_argument("--version", action="version", version=f"bgm-batch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _PARSERS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    args = build_parser().parse_args(argv)
    return _COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
