"""The ``bgm-batch`` command line: parses arguments into settings and calls stages or flows.

Exit codes: 0 done (possibly with quarantined rows), 1 nothing usable was left or a stage
failed, 2 bad usage.
"""

from __future__ import annotations

import argparse
import signal
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


def _print_input_notes(warnings: list[str], quarantine: Any, limit: int = 20) -> None:
    """Gap warnings and the first rejected windows, as import-capture and score print them."""
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)
    for row in quarantine.head(limit).to_dicts():
        print(
            f"rejected: {row['source']}, window {row['index']}, field {row['field']}: "
            f"{row['reason']}",
            file=sys.stderr,
        )
    if quarantine.height > limit:
        print(f"rejected: ... {quarantine.height - limit} more in the quarantine", file=sys.stderr)


# --- import-capture ------------------------------------------------------------------------


@_command("import-capture")
def _import_capture(args: argparse.Namespace) -> int:
    from bgm_batch.data.contract import write_parquet
    from bgm_batch.data.ingest import IngestError, read_recording
    from bgm_batch.data.names import inside
    from bgm_batch.settings import load_settings

    settings = load_settings(None, {"profile": args.profile})
    try:
        result = read_recording(args.capture_dir, settings.profile_model, settings.ingest)
    except IngestError as exc:
        return _fail(str(exc))
    _print_input_notes(result.warnings, result.quarantine)
    quarantine = args.quarantine or args.output.with_name(f"{args.output.stem}.quarantine.parquet")
    write_parquet(result.quarantine, quarantine, "quarantine")
    if args.split:
        for recording in result.recordings():
            part = result.frame.filter(result.frame["recording"] == recording)
            target = inside(args.output, args.output / f"{recording}.parquet")
            write_parquet(part, target, "recording")
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
    from bgm_batch.data.game_profile import load_profile
    from bgm_batch.data.ingest import IngestError, read_recording
    from bgm_batch.stages.characterize import characterize

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
    library = {k: getattr(args, k, None) for k in ("feedback", "feedback_for")}
    if any(library.values()):
        overrides["library"] = {k: v for k, v in library.items() if v is not None}
    if args.offline:
        overrides["offline"] = True
    if args.keep_work:
        overrides["keep_work"] = True
    if args.stems:
        overrides.setdefault("audio", {})["stems"] = True
    if args.quiet:
        overrides["progress"] = False
    for flag, (path, _, _) in _SETTING_FLAGS.items():
        value = getattr(args, _dest(flag))
        if value is not None:
            *parents, leaf = path.split(".")
            node = overrides
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
    return overrides


def _prepare_environment(settings: Any) -> None:
    """Hub offline only when asked (``--offline``; a user's own HF_HUB_OFFLINE=1 also holds);
    Prefect's home in the cache folder. Both must happen before the libraries are imported."""
    import os

    from bgm_batch.prefect_env import configure_prefect

    if settings.offline:
        os.environ["HF_HUB_OFFLINE"] = "1"
    configure_prefect(settings.cache_dir / "prefect")


@_command("score")
def _score(args: argparse.Namespace) -> int:
    from bgm_batch.preflight import PreflightError, preflight
    from bgm_batch.settings import load_settings

    settings = load_settings(args.config, _score_overrides(args))
    _prepare_environment(settings)
    try:
        preflight(
            settings,
            input_path=args.input,
            out_dir=args.out,
            video=args.video,
            recording=args.recording,
        )
    except PreflightError as exc:
        for problem in exc.problems:
            _fail(problem)
        return 2
    from bgm_batch.flows.score_session import score_session
    from bgm_batch.prefect_env import run_flow
    from bgm_batch.stages import publish

    with publish.run_lock(args.out, sys.argv), publish.temp_files_under(args.out):
        try:
            report = run_flow(
                score_session,
                args.input,
                args.out,
                settings,
                video=args.video,
                recording=args.recording,
                command=args.command_line,
            )
        except (ValueError, RuntimeError, FileNotFoundError) as exc:
            return _fail(str(exc))
    counts = report.counts
    if args.quiet:
        return 0 if counts["rendered"] else _fail("nothing was rendered")
    _print_input_notes(report.warnings, report.quarantine)
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
        "then --config (YAML/TOML), then defaults. "
        "Offline defaults: --text template --audio synth.",
    )
    p.add_argument("input", type=Path, help="capture folder, capture file or recording Parquet")
    p.add_argument("--video", type=Path, help="gameplay video to put the music under")
    p.add_argument("--out", type=Path, required=True, help="output folder for the deliverables")
    p.add_argument("--recording", help="which recording of a multi-recording input to score")
    _add_pipeline_options(p)
    p.add_argument(
        "--feedback",
        help='library mode: refine the picks in words ("less vocals, more epic strings"); '
        "turns accumulate in OUT/library/",
    )
    p.add_argument(
        "--feedback-for",
        help="scope of --feedback: a scene word (combat, Desert) or a time range "
        "(60-180, 1:00-3:00)",
    )


def _add_pipeline_options(p: argparse.ArgumentParser) -> None:
    """The backend, seed, profile and config flags of ``score`` and ``archive``."""
    p.add_argument("--text", help="text backend: template (offline, rule-based) or hf")
    p.add_argument("--llm", help="hf model id or local folder (default Llama-2-7b-chat-hf)")
    p.add_argument("--adapter", type=Path, help="LoRA adapter folder for the hf backend")
    p.add_argument("--mode", choices=["two-stage", "direct"], help="generation mode")
    p.add_argument(
        "--audio",
        help="audio backend: synth (offline), musicgen, audiocraft, or library:INDEX_DIR "
        "(tracks from your own library, see `bgm-batch library index`)",
    )
    p.add_argument("--music-model", help="MusicGen id or local folder (facebook/musicgen-small)")
    p.add_argument("--seed", type=int, help="seed for every generator (default 0)")
    p.add_argument("--profile", help="game profile name or YAML path (default minecraft)")
    p.add_argument("--config", type=Path, help="YAML or TOML settings file")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--quiet", action="store_true", help="no progress, only errors")
    p.add_argument(
        "--offline", action="store_true", help="never contact the model hub (local models only)"
    )
    p.add_argument(
        "--keep-work",
        action="store_true",
        help="keep the per-window audio work files (OUT/segments) after a successful run",
    )
    p.add_argument(
        "--stems",
        action="store_true",
        help="also write OUT/stems/<role>.wav: drums, bass, harmony, lead, pad, stinger "
        "(24-bit at the track's rate, summing to track.flac; synth backend)",
    )
    _add_setting_flags(p)


def _setting_default(path: str) -> Any:
    from bgm_batch.settings import Settings

    model: Any = Settings
    *parents, leaf = path.split(".")
    for part in parents:
        model = model.model_fields[part].annotation
    field = model.model_fields[leaf]
    return field.default_factory() if field.default_factory else field.default


# flag -> (setting, type, help): the mix and output settings `score --help` shows
_SETTING_FLAGS: dict[str, tuple[str, Any, str]] = {
    "--target-lufs": ("mux.target_lufs", float, "loudness of scored.mp4, LUFS integrated"),
    "--true-peak": ("mux.true_peak_dbtp", float, "true-peak ceiling of scored.mp4, dBTP"),
    "--sample-rate": ("mux.sample_rate", int, "sample rate of scored.mp4's audio, Hz"),
    "--music-gain": ("mux.music_gain_db", float, "music level in the mix vs track.flac, dB"),
    "--duck-depth": ("mux.duck_depth_db", float, "music dip under loud game audio, dB (0: off)"),
    "--duck-threshold": ("mux.duck_threshold", float, "game audio level that ducks (RMS, 0-1)"),
    "--fade-out": ("mux.fade_out_seconds", float, "fade of the music at the video's end, s"),
    "--video-offset": (
        "mux.video_offset_seconds",
        float,
        "where capture time 0 falls in the video, s (negative: capture began first)",
    ),
    "--fit": ("mux.fit", ["trim", "error"], "a video shorter than the recording: cut or refuse"),
    "--track-lufs": ("audio.target_lufs", float, "loudness of track.flac (for editors), LUFS"),
    "--track-rate": (
        "audio.sample_rate",
        int,
        "sample rate of the render and track.flac, Hz; the synth's cost scales with it "
        "(32000: about two thirds of the time, nothing above 16 kHz)",
    ),
    "--overlap": ("audio.overlap_seconds", float, "shortest crossfade between windows, s"),
    "--cache-dir": ("cache_dir", Path, "text cache and Prefect state"),
}


def _dest(flag: str) -> str:
    return "set_" + flag.removeprefix("--").replace("-", "_")


def _add_setting_flags(p: argparse.ArgumentParser) -> None:
    """The settings with a flag, each with its default, setting and environment variable."""
    group = p.add_argument_group(
        "mix and output",
        "Each flag sets one setting; the same setting comes from the environment (BGM_ plus its "
        "path in capitals, parts joined by __) or a --config file (nested keys). "
        "`bgm-batch config show` prints them all.",
    )
    for flag, (path, kind, text) in _SETTING_FLAGS.items():
        env = "BGM_" + path.upper().replace(".", "__")
        typed = {"choices": kind} if isinstance(kind, list) else {"type": kind}
        metavar = None if isinstance(kind, list) else "DIR" if kind is Path else "N"
        group.add_argument(
            flag,
            dest=_dest(flag),
            metavar=metavar,
            help=f"{text} (default {_setting_default(path)}; {path}, {env})",
            **typed,
        )


# --- config --------------------------------------------------------------------------------


def _setting_rows(model: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """Every leaf setting as (dotted path, value), nested models expanded."""
    from pydantic import BaseModel

    rows = []
    for name in type(model).model_fields:
        value = getattr(model, name)
        path = f"{prefix}{name}"
        if isinstance(value, BaseModel):
            rows += _setting_rows(value, f"{path}.")
        else:
            rows.append((path, value))
    return rows


# the settings that score's other flags set
_OTHER_FLAGS = {
    "seed": "--seed",
    "profile": "--profile",
    "progress": "--no-progress",
    "offline": "--offline",
    "keep_work": "--keep-work",
    "audio.stems": "--stems",
    "text.backend": "--text",
    "text.model": "--llm",
    "text.adapter": "--adapter",
    "text.mode": "--mode",
    "audio.backend": "--audio",
    "audio.model": "--music-model",
}


@_command("config")
def _config(args: argparse.Namespace) -> int:
    from bgm_batch.settings import load_settings

    settings = load_settings(args.config, {})
    flags = _OTHER_FLAGS | {path: flag for flag, (path, _, _) in _SETTING_FLAGS.items()}
    print("# setting = value  (environment variable; score flag)")
    print("# a --config YAML/TOML file nests the same names: mux: {target_lufs: -14}")
    for path, value in _setting_rows(settings):
        env = "BGM_" + path.upper().replace(".", "__")
        flag = f"; {flags[path]}" if path in flags else ""
        shown = str(value) if isinstance(value, Path) else repr(value)
        print(f"{path} = {shown}  ({env}{flag})")
    return 0


def _add_config(sub: Any) -> None:
    p = sub.add_parser(
        "config",
        help="print the effective settings with their environment variables and flags",
        description="`config show`: every setting after flags > BGM_* environment > --config "
        "file > defaults, one per line, with its environment variable and score flag.",
    )
    p.add_argument("action", choices=["show"], help="show: print the effective settings")
    p.add_argument("--config", type=Path, help="YAML or TOML settings file")


# --- archive -------------------------------------------------------------------------------


@_command("archive")
def _archive(args: argparse.Namespace) -> int:
    from bgm_batch.settings import load_settings

    engine = {"engine": args.engine, "workers": args.workers, "address": args.address}
    overrides = _score_overrides(args)
    overrides["archive"] = {k: v for k, v in engine.items() if v is not None}
    settings = load_settings(args.config, overrides)
    _prepare_environment(settings)
    from bgm_batch.flows.score_archive import run_archive
    from bgm_batch.stages.archive_state import ArchiveLockedError

    try:
        result = run_archive(args.root, args.out, settings, force=args.force)
    except (ArchiveLockedError, FileNotFoundError) as exc:
        return _fail(str(exc))
    counts = result.report["status"].value_counts().sort("status").iter_rows()
    print("recordings: " + ", ".join(f"{n} {status}" for status, n in counts))
    for row in result.report.filter(result.report["status"] == "failed").iter_rows(named=True):
        print(f"failed: {row['recording']}: {row['reason']}", file=sys.stderr)
    print(f"report: {result.out_dir / 'archive_report.md'}")
    return _fail(f"{result.failed} recording(s) failed") if result.failed else 0


def _add_archive(sub: Any) -> None:
    p = sub.add_parser(
        "archive",
        help="score every recording under a folder, incrementally, one output folder each",
        description="Find every recording under ROOT (capture folders, recording Parquet files), "
        "match videos by name (<recording>.mp4|.mkv|.mov) or ROOT/videos.csv, and score each "
        "into OUT/<recording>/. Unchanged recordings are skipped; a failing one is reported in "
        "OUT/archive_report.md and the rest go on; exit code 1 when any failed. "
        "See docs/nightly.md.",
    )
    p.add_argument("root", type=Path, help="folder holding the recordings (searched recursively)")
    p.add_argument("--out", type=Path, required=True, help="output folder, one subfolder each")
    p.add_argument("--force", action="store_true", help="redo every recording")
    p.add_argument("--engine", choices=["local", "dask", "ray"], help="where tasks run")
    p.add_argument("--workers", type=int, help="local threads or local cluster workers")
    p.add_argument("--address", help="existing cluster: tcp://scheduler:8786 or ray://head:10001")
    _add_pipeline_options(p)


# --- evaluate, compare --------------------------------------------------------------------


@_command("evaluate")
def _evaluate(args: argparse.Namespace) -> int:
    import json

    from bgm_batch.evaluation.metrics import EvaluationError, evaluate_files
    from bgm_batch.evaluation.wordnet import WordNetMissingError

    try:
        report = evaluate_files(args.pred, args.refs, embed=not args.no_embed)
    except (EvaluationError, WordNetMissingError) as exc:
        return _fail(str(exc))
    for row in report.unmatched.to_dicts():
        print(f"unmatched: {row}", file=sys.stderr)
    print(json.dumps(report.to_json_dict()) if args.json else report.to_text())
    return 0


def _add_evaluate(sub: Any) -> None:
    p = sub.add_parser(
        "evaluate",
        help="score music descriptions against reference captions (BLEU-1..4, METEOR, ROUGE-L)",
        description="Pairs predictions and references by (recording, index). Metrics as the "
        "paper's tables, 0-100, plus MiniLM embedding cosine. See docs/evaluation.md.",
    )
    p.add_argument(
        "pred", type=Path, help="segments.parquet or CSV/Parquet with recording, index, caption"
    )
    p.add_argument(
        "--refs",
        type=Path,
        required=True,
        help="CSV/Parquet with recording, index, caption (several per window allowed)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--no-embed", action="store_true", help="skip the embedding score")


def _settings_from(args: argparse.Namespace, **extra: Any) -> Any:
    from bgm_batch.settings import load_settings

    text = {"backend": args.text, "model": args.llm, "adapter": args.adapter}
    overrides: dict[str, Any] = {"text": {k: v for k, v in text.items() if v is not None}}
    if args.seed is not None:
        overrides["seed"] = args.seed
    return load_settings(args.config, {**overrides, **extra})


def _add_text_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text", help="text backend: template or hf")
    p.add_argument("--llm", help="hf model id or local folder")
    p.add_argument("--adapter", type=Path, help="LoRA adapter folder")
    p.add_argument("--seed", type=int, help="seed (default 0)")
    p.add_argument("--config", type=Path, help="YAML or TOML settings file")


@_command("compare")
def _compare(args: argparse.Namespace) -> int:
    from bgm_batch.evaluation.compare import characterized_frame, compare_table, write_table
    from bgm_batch.evaluation.metrics import read_references

    settings = _settings_from(args)
    frame = characterized_frame(args.recordings, settings.profile_model)
    table = compare_table(
        frame,
        args.backend or [],
        settings,
        read_references(args.refs),
        modes=tuple(args.modes),
        embed=not args.no_embed,
        progress=True,
    )
    print(write_table(table, args.out, args.markdown))
    return 0


def _add_compare(sub: Any) -> None:
    p = sub.add_parser(
        "compare",
        help="the paper's Table I: direct vs two-stage generation for several text backends",
        description="Generates captions for the recordings with each backend and mode and scores "
        "them against the references. The template backend is always a row.",
    )
    p.add_argument("recordings", type=Path, nargs="+", help="capture folders or Parquet files")
    p.add_argument("--refs", type=Path, required=True, help="reference captions")
    p.add_argument(
        "--backend",
        action="append",
        help="NAME[:MODEL][@ADAPTER], repeatable (e.g. hf:./tiny@./adapter)",
    )
    p.add_argument(
        "--modes", nargs="+", default=["direct", "two-stage"], choices=["direct", "two-stage"]
    )
    p.add_argument("--out", type=Path, default=Path("compare.parquet"), help="Parquet table")
    p.add_argument("--markdown", type=Path, help="also write the markdown table here")
    p.add_argument("--no-embed", action="store_true", help="skip the embedding score")
    _add_text_options(p)


# --- make-pairs, finetune -------------------------------------------------------------------


@_command("make-pairs")
def _make_pairs(args: argparse.Namespace) -> int:
    from bgm_batch.evaluation.compare import characterized_frame
    from bgm_batch.text.protocol import TEXT_BACKENDS
    from bgm_batch.training.pairs import PairsError, load_caption_sample, make_pairs

    settings = _settings_from(args)
    teacher = TEXT_BACKENDS.create(settings.text.backend, settings.text)
    frame = (
        characterized_frame(args.recordings, settings.profile_model) if args.recordings else None
    )
    captions = load_caption_sample().head(args.reverse) if args.reverse else None
    try:
        result = make_pairs(
            args.out_dir,
            teacher,
            frame=frame,
            captions=captions,
            text_settings=settings.text,
            seed=settings.seed,
            val_fraction=args.val_fraction,
            progress=True,
        )
    except PairsError as exc:
        return _fail(str(exc))
    print(result.summary())
    return 0


def _add_make_pairs(sub: Any) -> None:
    p = sub.add_parser(
        "make-pairs",
        help="build instruction/input/output JSONL pairs for LoRA fine-tuning",
        description="(a) scene -> narrative -> music pairs by running a teacher backend over "
        "recordings; (b) reverse generation from real MusicCaps captions (needs an LLM teacher). "
        "Deduplicated, split train/validation by recording.",
    )
    p.add_argument("out_dir", type=Path, help="folder for train.jsonl and validation.jsonl")
    p.add_argument("recordings", type=Path, nargs="*", help="capture folders or Parquet files")
    p.add_argument(
        "--reverse",
        type=int,
        default=0,
        help="number of bundled MusicCaps captions for reverse generation",
    )
    p.add_argument("--val-fraction", type=float, default=0.1)
    _add_text_options(p)


@_command("finetune")
def _finetune(args: argparse.Namespace) -> int:
    from bgm_batch.training.finetune import FinetuneConfig, FinetuneError, finetune

    config = FinetuneConfig(
        rank=args.rank,
        alpha=args.alpha,
        dropout=args.dropout,
        target_modules=args.target_modules.split(","),
        epochs=args.epochs,
        learning_rate=args.lr,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        max_length=args.max_length,
        save_steps=args.save_steps,
        gradient_checkpointing=args.gradient_checkpointing,
        resume=args.resume,
        device=args.device,
        seed=args.seed,
    )
    try:
        result = finetune(args.pairs, args.base, args.out, config, validation=args.validation)
    except FinetuneError as exc:
        return _fail(str(exc))
    print(f"adapter: {args.out} ({result})")
    return 0


def _add_finetune(sub: Any) -> None:
    p = sub.add_parser(
        "finetune",
        help="LoRA fine-tune a causal LM on make-pairs output (peft)",
        description="LoRA on the attention projections, loss on the output tokens only, "
        "gradient accumulation, checkpoints and --resume, validation loss per epoch. The "
        "adapter loads with `score --text hf --adapter DIR`. See docs/finetune.md.",
    )
    p.add_argument("pairs", type=Path, help="train.jsonl (validation.jsonl beside it is used)")
    p.add_argument("--base", required=True, help="base model hub id or local folder")
    p.add_argument("--out", type=Path, required=True, help="adapter output folder")
    p.add_argument("--validation", type=Path, help="validation JSONL (default: beside PAIRS)")
    p.add_argument("--rank", type=int, default=8)
    p.add_argument("--alpha", type=int, default=16)
    p.add_argument("--dropout", type=float, default=0.05)
    p.add_argument("--target-modules", default="q_proj,k_proj,v_proj,o_proj")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--grad-accum", type=int, default=4)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--save-steps", type=int, default=0, help="0: a checkpoint per epoch")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)


# --- library ------------------------------------------------------------------------------


@_command("library")
def _library(args: argparse.Namespace) -> int:
    from bgm_batch.library.index import index_library
    from bgm_batch.settings import load_settings

    overrides = {"library": {"clap_model": args.clap}} if args.clap else {}
    settings = load_settings(args.config, overrides)
    report = index_library(
        args.music_dir, args.out, settings.library, progress=not args.no_progress
    )
    print(f"tracks: {report.tracks} (analysed {report.analysed}, unchanged {report.reused})")
    for row in report.skipped.iter_rows(named=True):
        print(f"skipped {row['file']}: {row['reason']}", file=sys.stderr)
    print(f"index: {args.out}")
    return 0 if report.tracks else _fail(f"no usable audio file in {args.music_dir}")


def _add_library(sub: Any) -> None:
    p = sub.add_parser("library", help="library mode: index your own licensed music")
    commands = p.add_subparsers(dest="library_command", required=True, metavar="COMMAND")
    index = commands.add_parser(
        "index",
        help="index a music folder (wav/flac/mp3/ogg + library.csv or JSON sidecars)",
        description="Analyse every audio file under MUSIC_DIR (tempo, key, energy, loudness, "
        "bars), describe it in text from its metadata and features, embed the descriptions "
        "(MiniLM) and, with --clap, the audio. Re-running only analyses new or changed files; "
        "unreadable files are reported and skipped.",
    )
    index.add_argument("music_dir", type=Path, help="folder of audio files")
    index.add_argument("-o", "--out", type=Path, required=True, help="index folder to write")
    index.add_argument("--clap", help="CLAP model (transformers ClapModel) hub id or folder")
    index.add_argument("--config", type=Path, help="YAML or TOML settings file")
    index.add_argument("--no-progress", action="store_true", help="no progress bar")


# --- entry point ---------------------------------------------------------------------------

_PARSERS = [
    _add_import_capture,
    _add_characterize,
    _add_score,
    _add_config,
    _add_archive,
    _add_evaluate,
    _add_compare,
    _add_make_pairs,
    _add_finetune,
    _add_library,
]


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (also used to render the README's usage)."""
    parser = argparse.ArgumentParser(
        prog="bgm-batch",
        description="Score recorded gameplay with adaptive background music (the MetaBGM method): "
        "capture snapshots -> Algorithm 1 -> narrative -> music description -> audio -> video.",
    )
    parser.add_argument("--version", action="version", version=f"bgm-batch {__version__}")
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in _PARSERS:
        add(sub)
    return parser


def _raise_interrupt(signum: int, frame: Any) -> None:
    """SIGTERM unwinds like Ctrl-C: ``with`` blocks and ``subprocess.run`` stop their children."""
    raise KeyboardInterrupt


def _ignore_further_interrupts() -> None:
    """Once a run is unwinding from an interrupt, a second Ctrl-C or SIGTERM must not kill
    it half-way out: Python restores the default handlers while it shuts down, and a signal
    landing then would end the process by the signal instead of exit code 130."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: an error the user can fix is one line, a traceback needs --debug."""
    from bgm_batch.errors import user_error_lines
    from bgm_batch.memory import return_freed_memory

    args = build_parser().parse_args(argv)
    return_freed_memory()
    args.command_line = ["bgm-batch", *(sys.argv[1:] if argv is None else argv)]  # manifest
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        return _COMMANDS[args.command](args)
    except KeyboardInterrupt:
        if args.debug:
            raise
        _ignore_further_interrupts()
        print("bgm-batch: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:
        lines = user_error_lines(exc, getattr(args, "out", None) or getattr(args, "output", None))
        if lines is None or args.debug:
            raise
        for line in lines:
            _fail(line)
        return 1
    finally:
        if signal.getsignal(signal.SIGTERM) is _raise_interrupt:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
