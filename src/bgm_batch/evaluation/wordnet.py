"""WordNet for nltk's METEOR, built offline from Debian's ``wordnet-base`` files.

nltk's METEOR matches synonyms through WordNet, and ``nltk.download`` needs a network this
project never has. Debian ships the WordNet 3.0 database in ``/usr/share/wordnet`` (packages
``wordnet-base`` and ``wordnet-sense-index``). nltk refuses a symlink that leaves its data path
("Security Violation ... Unauthorized path"), so the files are **copied** into
``<data_dir>/corpora/wordnet/``, and the ``lexnames`` file Debian lacks is written from the table
of ``man 5 lexnames``. Run ``python -m bgm_batch.evaluation.wordnet DIR`` to
build the folder ahead of time; :func:`ensure_wordnet` does the same lazily.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from bgm_batch.atomic import write_text

DEBIAN_WORDNET = Path("/usr/share/wordnet")
DEFAULT_DATA_DIR = Path(".cache/bgm-batch/nltk_data")

# The files nltk's WordNetCorpusReader opens; the rest of Debian's folder is copied when present.
REQUIRED_FILES = tuple(
    f"{kind}.{pos}" for kind in ("data", "index") for pos in ("noun", "verb", "adj", "adv")
) + tuple(f"{pos}.exc" for pos in ("noun", "verb", "adj", "adv"))

# WordNet 3.0's lexicographer files, numbered 00..44 (man 5 lexnames); the syntactic category
# (noun=1, verb=2, adj=3, adv=4) follows from the prefix of the name.
LEXNAMES = (
    "adj.all",
    "adj.pert",
    "adv.all",
    "noun.Tops",
    "noun.act",
    "noun.animal",
    "noun.artifact",
    "noun.attribute",
    "noun.body",
    "noun.cognition",
    "noun.communication",
    "noun.event",
    "noun.feeling",
    "noun.food",
    "noun.group",
    "noun.location",
    "noun.motive",
    "noun.object",
    "noun.person",
    "noun.phenomenon",
    "noun.plant",
    "noun.possession",
    "noun.process",
    "noun.quantity",
    "noun.relation",
    "noun.shape",
    "noun.state",
    "noun.substance",
    "noun.time",
    "verb.body",
    "verb.change",
    "verb.cognition",
    "verb.communication",
    "verb.competition",
    "verb.consumption",
    "verb.contact",
    "verb.creation",
    "verb.emotion",
    "verb.motion",
    "verb.perception",
    "verb.possession",
    "verb.social",
    "verb.stative",
    "verb.weather",
    "adj.ppl",
)
_POS_NUMBER = {"noun": 1, "verb": 2, "adj": 3, "adv": 4}


class WordNetMissingError(RuntimeError):
    """Debian's WordNet files are not installed; the message says how to install them."""


def lexnames_text() -> str:
    """The ``lexnames`` file: ``NN<TAB>name<TAB>pos-number`` per line, 45 lines."""
    return "".join(
        f"{number:02d}\t{name}\t{_POS_NUMBER[name.split('.')[0]]}\n"
        for number, name in enumerate(LEXNAMES)
    )


def default_data_dir() -> Path:
    """``$BGM_NLTK_DATA`` if set, else ``.cache/bgm-batch/nltk_data`` under the working folder."""
    return Path(os.environ.get("BGM_NLTK_DATA", DEFAULT_DATA_DIR))


def build_wordnet(data_dir: Path, source: Path = DEBIAN_WORDNET) -> Path:
    """Copy Debian's WordNet into ``data_dir/corpora/wordnet`` and add ``lexnames``.

    Idempotent: a complete folder is left alone. Returns the corpus folder.
    """
    corpus = Path(data_dir) / "corpora" / "wordnet"
    if all((corpus / name).is_file() for name in (*REQUIRED_FILES, "lexnames")):
        return corpus
    missing = [name for name in REQUIRED_FILES if not (source / name).is_file()]
    if missing:
        raise WordNetMissingError(
            f"WordNet database not found in {source} (missing {', '.join(missing[:3])}...). "
            "METEOR needs it: install Debian's WordNet with "
            "`apt-get install --no-install-recommends wordnet-base wordnet-sense-index`."
        )
    corpus.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.iterdir()):
        if path.is_file():
            shutil.copyfile(path, corpus / path.name)  # a copy: nltk rejects outside symlinks
    write_text(corpus / "lexnames", lexnames_text())
    return corpus


def ensure_wordnet(data_dir: Path | None = None, source: Path = DEBIAN_WORDNET) -> Path:
    """Build the offline WordNet (if needed) and put its folder first on nltk's data path.

    Call before the first use of ``nltk.corpus.wordnet`` in the process. Returns ``data_dir``.
    """
    import nltk

    data_dir = Path(data_dir or default_data_dir()).resolve()
    build_wordnet(data_dir, source)
    if str(data_dir) not in nltk.data.path:
        nltk.data.path.insert(0, str(data_dir))
    return data_dir


def main(argv: list[str] | None = None) -> int:
    """``python -m bgm_batch.evaluation.wordnet [DATA_DIR]``: build the folder and print it."""
    args = sys.argv[1:] if argv is None else argv
    try:
        data_dir = ensure_wordnet(Path(args[0]) if args else None)
    except WordNetMissingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
