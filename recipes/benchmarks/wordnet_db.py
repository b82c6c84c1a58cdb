"""Reading WordNet 3.0's noun database (`data.noun`, format wndb(5WN)) and its hypernym graph.

The files come from Debian's `wordnet-base` package (`/usr/share/wordnet`) or any WordNet 3.0 `dict` folder.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

WORDNET_APT_PACKAGE = "wordnet-base"

# Folders that hold WordNet 3.0's database files (`data.noun`, ...): Debian/Ubuntu, Homebrew/local builds, NLTK.
WORDNET_SEARCH_DIRS = (
    "/usr/share/wordnet",
    "/usr/local/share/wordnet",
    "/usr/local/WordNet-3.0/dict",
    "/opt/homebrew/share/wordnet",
    "~/nltk_data/corpora/wordnet",
)

# Lexicographer file numbers of WordNet 3.0 nouns (from the lexnames(5WN) manual page). Debian's wordnet-base does
# not ship the `lexnames` file itself; when a `lexnames` file is next to `data.noun` it is read instead.
NOUN_LEXNAMES: dict[int, str] = {
    3: "noun.Tops",
    4: "noun.act",
    5: "noun.animal",
    6: "noun.artifact",
    7: "noun.attribute",
    8: "noun.body",
    9: "noun.cognition",
    10: "noun.communication",
    11: "noun.event",
    12: "noun.feeling",
    13: "noun.food",
    14: "noun.group",
    15: "noun.location",
    16: "noun.motive",
    17: "noun.object",
    18: "noun.person",
    19: "noun.phenomenon",
    20: "noun.plant",
    21: "noun.possession",
    22: "noun.process",
    23: "noun.quantity",
    24: "noun.relation",
    25: "noun.shape",
    26: "noun.state",
    27: "noun.substance",
    28: "noun.time",
}


@dataclass(frozen=True)
class NounSynset:
    """One noun synset of `data.noun`.

    Attributes:
        offset: the synset's byte offset in `data.noun`, its identifier (8 digits).
        lexname_id: lexicographer file number (3..28 for nouns).
        lemmas: its words, underscores replaced by spaces, in file order.
        hypernyms: offsets of its hypernyms and instance hypernyms (`@`, `@i` pointers).
        gloss: definition and examples, as in the file.
    """

    offset: str
    lexname_id: int
    lemmas: tuple[str, ...]
    hypernyms: tuple[str, ...]
    gloss: str


def wordnet_directory(wordnet_dir: str | os.PathLike | None = None) -> Path:
    """Finds the folder with WordNet's `data.noun`.

    Args:
        wordnet_dir: the folder to use; by default `$WORDNET_DIR`, then the usual install locations.

    Raises:
        FileNotFoundError: no `data.noun` was found; the message names the apt package that provides it.
    """
    if wordnet_dir is not None:
        candidates = [Path(wordnet_dir)]
    elif os.environ.get("WORDNET_DIR"):
        candidates = [Path(os.environ["WORDNET_DIR"])]
    else:
        candidates = [Path(path).expanduser() for path in WORDNET_SEARCH_DIRS]
    for candidate in candidates:
        if (candidate / "data.noun").is_file():
            return candidate
    searched = ", ".join(str(path) for path in candidates)
    raise FileNotFoundError(
        f"WordNet's data.noun was not found in {searched}. Install it with `apt-get install {WORDNET_APT_PACKAGE}` "
        "(Debian/Ubuntu), or point wordnet_dir= or $WORDNET_DIR at a WordNet 3.0 dict folder."
    )


def read_lexnames(directory: Path) -> dict[int, str]:
    """Noun lexicographer file names by number: from a `lexnames` file beside `data.noun`, else `NOUN_LEXNAMES`."""
    path = directory / "lexnames"
    if not path.is_file():
        return dict(NOUN_LEXNAMES)
    names = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[1].startswith("noun."):
            names[int(fields[0])] = fields[1]
    return names


LEXNAMES_MAN_PAGE = Path("/usr/share/man/man5/lexnames.5WN.gz")


def read_lexname_descriptions(man_page: str | os.PathLike = LEXNAMES_MAN_PAGE) -> dict[str, str]:
    """Short descriptions of the noun lexicographer classes, from the lexnames(5WN) manual page of `wordnet-base`.

    Each `NN<TAB>noun.<name><TAB>nouns denoting <what>` line gives `<name>: <what>` (the `nouns denoting` prefix
    says nothing about the class), for example `artifact: man-made objects`.

    Raises:
        FileNotFoundError: the manual page is missing (a system that installs packages without manual pages); the
            message names the package.
    """
    path = Path(man_page)
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} (WordNet's lexnames manual page, which holds the class descriptions) was not found: install "
            f"`apt-get install {WORDNET_APT_PACKAGE}` on a system that keeps manual pages."
        )
    descriptions = {}
    for line in gzip.decompress(path.read_bytes()).decode("utf-8").splitlines():
        fields = [field.strip() for field in line.split("\t") if field.strip()]
        if len(fields) == 3 and fields[0].isdigit() and fields[1].startswith("noun."):
            descriptions[fields[1].removeprefix("noun.")] = fields[2].removeprefix("nouns denoting ")
    if not descriptions:
        raise ValueError(f"{path} holds no noun class lines (NN<TAB>noun.name<TAB>description); is it lexnames(5WN)?")
    return descriptions


def parse_data_line(line: str) -> NounSynset:
    """Parses one synset line of `data.noun` (format: wndb(5WN)).

    `offset lex_filenum ss_type w_cnt (word lex_id)* p_cnt (pointer_symbol offset pos source/target)* | gloss`,
    where `w_cnt` is hexadecimal and `p_cnt` decimal.
    """
    head, separator, gloss = line.partition(" | ")
    fields = head.split()
    try:
        word_count = int(fields[3], 16)
        lemmas = tuple(word.replace("_", " ") for word in fields[4 : 4 + 2 * word_count : 2])
        cursor = 4 + 2 * word_count
        pointer_count = int(fields[cursor])
        cursor += 1
        hypernyms = []
        for _ in range(pointer_count):
            symbol, target, pos = fields[cursor : cursor + 3]
            cursor += 4
            if symbol in ("@", "@i") and pos == "n":
                hypernyms.append(target)
        synset = NounSynset(fields[0], int(fields[1]), lemmas, tuple(hypernyms), gloss.strip())
    except (IndexError, ValueError) as error:
        raise ValueError(f"Cannot parse this data.noun line ({error}): {line[:120]!r}") from None
    if not separator or not synset.gloss:
        raise ValueError(f"data.noun line without a gloss: {line[:120]!r}")
    return synset


def read_noun_synsets(wordnet_dir: str | os.PathLike | None = None) -> dict[str, NounSynset]:
    """Reads every noun synset of `data.noun`, keyed by offset (82,115 in WordNet 3.0)."""
    path = wordnet_directory(wordnet_dir) / "data.noun"
    synsets = {}
    with path.open(encoding="utf-8") as file:
        for line in file:
            if line.startswith("  "):  # the licence header
                continue
            synset = parse_data_line(line)
            synsets[synset.offset] = synset
    return synsets


def _top_down_order(synsets: dict[str, NounSynset]) -> list[str]:
    """Synset offsets ordered so that every hypernym comes before its hyponyms (the hypernym graph is a DAG)."""
    order: list[str] = []
    done: set[str] = set()
    for start in synsets:
        # Iterative post-order over hypernym pointers: WordNet paths are too deep for comfortable recursion.
        stack = [start]
        while stack:
            current = stack[-1]
            if current in done:
                stack.pop()
                continue
            pending = [parent for parent in synsets[current].hypernyms if parent not in done]
            if pending:
                stack.extend(pending)
                continue
            stack.pop()
            done.add(current)
            order.append(current)
    return order


def hypernym_ancestors_at_depth(synsets: dict[str, NounSynset], depth: int) -> dict[str, set[str]]:
    """The multi-label targets: for each synset, its ancestors at `depth` edges below the root.

    Every hypernym path (following hypernym and instance-hypernym pointers) runs from the root `entity` (depth 0)
    down to the synset. A synset's label set is the set of nodes at index `depth` over all of its paths; it has
    several labels when its paths pass through different nodes at that depth (multiple inheritance, as in
    "person" = organism + causal agent). Synsets with no path longer than `depth` (no proper ancestor there) get no
    labels.

    Args:
        synsets: output of `read_noun_synsets`.
        depth: depth of the label nodes (the root is depth 0).

    Returns:
        offset -> set of label offsets, only for synsets with at least one label.
    """
    depths: dict[str, set[int]] = {}  # lengths of all root-to-synset paths
    ancestors: dict[str, set[str]] = {}  # nodes at index `depth` of those paths, the synset itself excluded
    for offset in _top_down_order(synsets):
        parents = synsets[offset].hypernyms
        depths[offset] = {d + 1 for parent in parents for d in depths[parent]} if parents else {0}
        found: set[str] = set()
        for parent in parents:
            found |= ancestors[parent]
            if depth in depths[parent]:
                found.add(parent)
        ancestors[offset] = found
    return {offset: found for offset, found in ancestors.items() if found}


def hypernym_ancestors_within(synsets: dict[str, NounSynset], levels: int) -> dict[str, set[str]]:
    """The many-label targets: for each synset, every hypernym at most `levels` edges above it.

    Follows hypernym and instance-hypernym pointers over all paths, so with `levels=2` a synset's labels are its
    direct hypernyms and their direct hypernyms (a dog: `canine`, `domestic animal`, `carnivore`). Labels near the
    root (`entity`, `abstraction`) are reached only by synsets close to it, unlike `hypernym_ancestors_at_depth`.

    Args:
        synsets: output of `read_noun_synsets`.
        levels: how many edges up to go (1: the direct hypernyms only).

    Returns:
        offset -> set of label offsets, only for synsets with at least one hypernym (every noun but `entity`).
    """
    result: dict[str, set[str]] = {}
    for offset, synset in synsets.items():
        found: set[str] = set()
        frontier = set(synset.hypernyms)
        for _ in range(levels):
            found |= frontier
            frontier = {parent for current in frontier for parent in synsets[current].hypernyms} - found
        if found:
            result[offset] = found
    return result
