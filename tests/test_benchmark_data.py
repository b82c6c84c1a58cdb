"""The WordNet benchmark datasets: parsing, hypernym labels, determinism, label counts, label names, caching.

The unit tests run on a small hand-written `data.noun` in WordNet's format; the integration tests need Debian's
`wordnet-base` package (`apt-get install wordnet-base`) and are skipped without it.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest

from labeltok_peft import LabelTokConfig, encode_label
from recipes.benchmarks import wordnet
from recipes.benchmarks.benchmark_common import dataset_label_descriptions, parse_method
from recipes.benchmarks.wordnet import (
    NounSynset,
    hypernym_ancestors_at_depth,
    hypernym_ancestors_within,
    load_wordnet_ancestors,
    load_wordnet_hypernyms,
    load_wordnet_lexnames,
    parse_data_line,
    read_noun_synsets,
)
from recipes.benchmarks.wordnet_db import read_lexname_descriptions

# A tiny hypernym DAG: entity -> {alpha, beta}; alpha -> alpha1; beta -> beta1; "both" has two parents, one on
# each side, so at depth 2 it gets two labels. Offsets need not be real byte offsets.
_SYNSETS = [
    # offset, lexname id, lemmas, hypernyms (with symbol), gloss
    ("00000001", 3, ["entity"], [], "that which exists"),
    ("00000002", 3, ["alpha"], [("@", "00000001")], "the first kind of thing"),
    ("00000003", 3, ["beta"], [("@", "00000001")], "the second kind of thing"),
    ("00000004", 5, ["alpha_one", "a1"], [("@", "00000002")], "an alpha of the first sort"),
    ("00000005", 5, ["beta_one"], [("@", "00000003")], "a beta of the first sort"),
    ("00000006", 5, ["both"], [("@", "00000004"), ("@", "00000005")], "a thing that is alpha and beta at once"),
    ("00000007", 6, ["only_alpha"], [("@", "00000004")], "a thing that is alpha only"),
    ("00000008", 6, ["named_beta"], [("@i", "00000005")], "a particular, named beta"),
    ("00000009", 6, ["deep"], [("@", "00000006")], 'a kind of the thing that is both; "an example"'),
]
for _index in range(10, 40):  # more rows so that per_label sampling and stratified splits have something to do
    _parent = "00000004" if _index % 2 else "00000005"
    _SYNSETS.append((f"{_index:08d}", 5 + _index % 3, [f"word{_index}"], [("@", _parent)], f"gloss number {_index}"))
_SYNSETS.append(("00000090", 7, ["twin_a"], [("@", "00000004")], "a gloss that two synsets share"))
_SYNSETS.append(("00000091", 7, ["twin_b"], [("@", "00000005")], "a gloss that two synsets share"))


def _line(offset: str, lexname: int, lemmas: list[str], pointers: list[tuple[str, str]], gloss: str) -> str:
    words = " ".join(f"{lemma} 0" for lemma in lemmas)
    # Every synset also gets a hyponym pointer and a verb pointer, which are not hypernyms and must be ignored.
    all_pointers = [f"{symbol} {target} n 0000" for symbol, target in pointers] + [
        "~ 00000001 n 0000",
        "+ 00000001 v 0101",
    ]
    pointer_text = f"{len(all_pointers):03d} {' '.join(all_pointers)}"
    return f"{offset} {lexname:02d} n {len(lemmas):02x} {words} {pointer_text} | {gloss}  \n"


@pytest.fixture
def fake_wordnet(tmp_path: Path) -> Path:
    folder = tmp_path / "dict"
    folder.mkdir()
    header = "  1 This software and database is being provided to you, the LICENSEE, by  \n"
    (folder / "data.noun").write_text(header + "".join(_line(*synset) for synset in _SYNSETS), encoding="utf-8")
    return folder


def test_parse_data_line_reads_lemmas_hypernyms_and_gloss():
    line = (
        "00002137 03 n 02 abstraction 0 abstract_entity 0 003 @ 00001740 n 0000 + 00692347 v 0101 ~ 00023100 n 0000 "
        "| a general concept  \n"
    )
    synset = parse_data_line(line)
    assert synset.offset == "00002137"
    assert synset.lexname_id == 3
    assert synset.lemmas == ("abstraction", "abstract entity")
    assert synset.hypernyms == ("00001740",)  # '+' (verb) and '~' (hyponym) pointers are not hypernyms
    assert synset.gloss == "a general concept"


def test_parse_data_line_names_the_bad_line():
    with pytest.raises(ValueError, match="Cannot parse"):
        parse_data_line("00002137 03 n zz abstraction | gloss\n")


def test_hypernym_ancestors_at_depth_follows_every_path(fake_wordnet: Path):
    synsets = read_noun_synsets(fake_wordnet)
    assert len(synsets) == len(_SYNSETS)
    at_two = hypernym_ancestors_at_depth(synsets, 2)
    assert at_two["00000006"] == {"00000004", "00000005"}  # two parents, one per branch: two labels
    assert at_two["00000009"] == {"00000004", "00000005"}  # inherited through "both"
    assert at_two["00000007"] == {"00000004"}
    assert at_two["00000008"] == {"00000005"}  # instance hypernym pointers count
    assert "00000004" not in at_two  # a synset at the label depth is not its own label
    at_one = hypernym_ancestors_at_depth(synsets, 1)
    assert at_one["00000009"] == {"00000002", "00000003"}
    assert at_one["00000004"] == {"00000002"}
    assert "00000001" not in at_one and "00000002" not in at_one


def test_missing_wordnet_names_the_apt_package(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="apt-get install wordnet-base"):
        load_wordnet_lexnames(wordnet_dir=tmp_path, cache_dir=False)


def test_lexnames_sample_is_deterministic_stratified_and_capped(fake_wordnet: Path, tmp_path: Path):
    first = load_wordnet_lexnames(per_label=4, test_size=0.25, wordnet_dir=fake_wordnet, cache_dir=False)
    second = load_wordnet_lexnames(per_label=4, test_size=0.25, wordnet_dir=fake_wordnet, cache_dir=False)
    assert first["train"].to_dict() == second["train"].to_dict()
    assert first["test"].to_dict() == second["test"].to_dict()
    names = first["train"].features["label"].names
    assert len(names) == 26 and names[0] == "Tops" and "animal" in names
    rows = list(first["train"]["label"]) + list(first["test"]["label"])
    counts = {names[i]: rows.count(i) for i in set(rows)}
    assert counts == {"Tops": 3, "animal": 4, "artifact": 4, "attribute": 4}  # capped at per_label, Tops has 3
    assert set(list(first["test"]["label"])) == set(list(first["train"]["label"]))  # every class on both sides
    texts = list(first["train"]["text"]) + list(first["test"]["text"])
    assert "a gloss that two synsets share" not in texts  # shared glosses are dropped
    assert not set(list(first["train"]["synset"])) & set(list(first["test"]["synset"]))
    other_seed = load_wordnet_lexnames(per_label=4, test_size=0.25, seed=7, wordnet_dir=fake_wordnet, cache_dir=False)
    assert sorted(list(other_seed["train"]["synset"]) + list(other_seed["test"]["synset"])) != sorted(
        list(first["train"]["synset"]) + list(first["test"]["synset"])
    )


def test_hypernyms_are_multi_label_with_fixed_width(fake_wordnet: Path):
    splits = load_wordnet_hypernyms(depth=2, min_examples=2, per_label=None, wordnet_dir=fake_wordnet, cache_dir=False)
    names = splits["train"].features["label"].feature.names
    assert names == ["alpha one", "beta one"]
    synset_ids = list(splits["train"]["synset"]) + list(splits["test"]["synset"])
    rows = dict(zip(synset_ids, list(splits["train"]["label"]) + list(splits["test"]["label"]), strict=True))
    assert rows["00000006"] == [0, 1]  # label ids (not multi-hot): both labels
    assert rows["00000007"] == [0]
    assert rows["00000008"] == [1]
    assert "00000004" not in rows and "00000001" not in rows  # no label of their own at depth 2


def test_hypernyms_min_examples_drops_rare_labels(fake_wordnet: Path):
    with pytest.raises(ValueError, match="lower min_examples"):
        load_wordnet_hypernyms(depth=2, min_examples=1000, wordnet_dir=fake_wordnet, cache_dir=False)


def test_hypernym_ancestors_within_goes_up_a_fixed_number_of_edges(fake_wordnet: Path):
    synsets = read_noun_synsets(fake_wordnet)
    one = hypernym_ancestors_within(synsets, 1)
    assert one["00000009"] == {"00000006"}
    assert one["00000006"] == {"00000004", "00000005"}
    assert one["00000008"] == {"00000005"}  # instance hypernym pointers count
    two = hypernym_ancestors_within(synsets, 2)
    assert two["00000009"] == {"00000006", "00000004", "00000005"}
    assert two["00000006"] == {"00000004", "00000005", "00000002", "00000003"}  # both parents' parents
    assert two["00000002"] == {"00000001"}
    assert "00000001" not in two  # the root has no hypernym


def test_ancestors_are_many_label_with_readable_names(fake_wordnet: Path):
    # Usable rows per label at levels=2: alpha, beta, alpha one, beta one 18 each; entity 4; both 1.
    splits = load_wordnet_ancestors(min_examples=5, per_label=None, wordnet_dir=fake_wordnet, cache_dir=False)
    names = splits["train"].features["label"].feature.names
    assert names == ["alpha", "beta", "alpha one", "beta one"]  # label synsets in offset order, first lemmas
    synset_ids = list(splits["train"]["synset"]) + list(splits["test"]["synset"])
    rows = dict(zip(synset_ids, list(splits["train"]["label"]) + list(splits["test"]["label"]), strict=True))
    assert rows["00000009"] == [2, 3]  # deep -> both -> alpha one, beta one ("both" itself is too rare)
    assert rows["00000006"] == [0, 1, 2, 3]
    assert rows["00000004"] == [0]  # alpha one -> alpha (entity, its grandparent, is too rare)
    assert "00000002" not in rows and "00000001" not in rows  # only the dropped label entity above them
    assert "00000090" not in rows  # shared gloss
    again = load_wordnet_ancestors(min_examples=5, per_label=None, wordnet_dir=fake_wordnet, cache_dir=False)
    assert again["test"].to_dict() == splits["test"].to_dict()
    # Labels are counted on usable rows: the two synsets that share a gloss would lift alpha, beta, alpha one and
    # beta one to 19 carriers each, but they are dropped, so none reaches 19.
    with pytest.raises(ValueError, match="lower min_examples or raise levels"):
        load_wordnet_ancestors(min_examples=19, wordnet_dir=fake_wordnet, cache_dir=False)


def test_label_names_disambiguate_with_words_before_offsets():
    def synset(offset, lemmas, hypernyms, gloss):
        return NounSynset(offset, 5, tuple(lemmas), tuple(hypernyms), gloss)

    synsets = {
        s.offset: s
        for s in (
            synset("00000001", ["place"], [], "a point located with respect to surface features"),
            synset("00000002", ["bank", "depository financial institution"], ["00000001"], "a financial firm"),
            synset("00000003", ["bank"], ["00000001"], 'sloping land beside a body of water; "they fished the bank"'),
            synset("00000004", ["bank"], ["00000001"], "a long ridge or pile"),
            synset("00000005", ["bank"], ["00000001"], "a long ridge or pile of snow"),
            synset("00000006", ["ridge"], ["00000001"], "a long narrow range of hills"),
        )
    }
    names = wordnet._label_names(list(synsets), synsets)
    assert names == [
        "place",
        "bank (depository financial institution)",  # its second lemma
        "bank (sloping land beside a)",  # the hypernym's lemma collides too: the definition's first words
        "bank (a long ridge or pile)",  # the first 4 words collide with the next one: 10 words tell them apart
        "bank (a long ridge or pile of snow)",
        "ridge",
    ]
    assert len(set(names)) == len(names)


def test_cache_round_trip(fake_wordnet: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    cache = tmp_path / "cache"
    built = load_wordnet_lexnames(per_label=4, wordnet_dir=fake_wordnet, cache_dir=cache)
    entries = list((cache / "wordnet").iterdir())
    assert len(entries) == 1 and entries[0].name.startswith("lexnames-")

    def no_parsing(*args, **kwargs):
        raise AssertionError("a cache hit must not parse data.noun again")

    monkeypatch.setattr(wordnet, "read_noun_synsets", no_parsing)
    cached = load_wordnet_lexnames(per_label=4, wordnet_dir=fake_wordnet, cache_dir=cache)
    assert cached["train"].to_dict() == built["train"].to_dict()
    assert cached["train"].features == built["train"].features
    with pytest.raises(AssertionError, match="must not parse"):  # other parameters: another cache entry
        load_wordnet_lexnames(per_label=3, wordnet_dir=fake_wordnet, cache_dir=cache)


def _real_wordnet_available() -> bool:
    try:
        wordnet.wordnet_directory()
    except FileNotFoundError:
        return False
    return True


real_wordnet = pytest.mark.skipif(not _real_wordnet_available(), reason="needs apt-get install wordnet-base")


@pytest.mark.integration
@real_wordnet
def test_real_lexnames(tmp_path: Path):
    splits = load_wordnet_lexnames(cache_dir=tmp_path)
    names = splits["train"].features["label"].names
    assert len(names) == 26
    assert len(set(list(splits["train"]["label"]))) == 26 and len(set(list(splits["test"]["label"]))) == 26
    total = len(splits["train"]) + len(splits["test"])
    assert 4_500 < total <= 26 * 200
    assert abs(len(splits["test"]) / total - 0.2) < 0.01
    again = load_wordnet_lexnames(cache_dir=False)
    assert list(again["test"]["synset"]) == list(splits["test"]["synset"])


@pytest.mark.integration
@real_wordnet
def test_real_hypernyms(tmp_path: Path):
    splits = load_wordnet_hypernyms(cache_dir=tmp_path)
    names = splits["train"].features["label"].feature.names
    assert 20 <= len(names) <= 100 and len(set(names)) == len(names)
    rows = list(splits["train"]["label"]) + list(splits["test"]["label"])
    assert sum(len(labels) > 1 for labels in rows) / len(rows) > 0.1  # a real multi-label task
    for split in ("train", "test"):  # every label is seen in training and tested
        assert {label for labels in list(splits[split]["label"]) for label in labels} == set(range(len(names)))
    config = LabelTokConfig(labels=names, problem_type="multi_label_classification")
    assert all(len(encode_label(labels, config)) == len(names) for labels in rows[:50])
    again = load_wordnet_hypernyms(cache_dir=False)
    assert list(again["train"]["synset"]) == list(splits["train"]["synset"])


@pytest.mark.integration
@real_wordnet
def test_real_ancestors_have_over_a_thousand_labels(tmp_path: Path):
    splits = load_wordnet_ancestors(cache_dir=tmp_path)
    names = splits["train"].features["label"].feature.names
    assert len(names) >= 1_000 and len(set(names)) == len(names)
    assert sum(name[-9:-1].isdigit() for name in names) <= 5  # offsets only as a rare last resort
    rows = list(splits["train"]["label"]) + list(splits["test"]["label"])
    per_label = [0] * len(names)
    for labels in rows:
        for label in labels:
            per_label[label] += 1
    assert min(per_label) >= 20  # min_examples counts usable rows and every label samples 20
    assert 1.5 < sum(map(len, rows)) / len(rows) < 2.0  # label cardinality, 1.67 measured
    for split in ("train", "test"):
        assert {label for labels in list(splits[split]["label"]) for label in labels} == set(range(len(names)))
    assert abs(len(splits["test"]) / len(rows) - 0.2) < 0.01
    again = load_wordnet_ancestors(cache_dir=False)
    assert list(again["test"]["synset"]) == list(splits["test"]["synset"])


def test_lexname_descriptions_drop_the_prefix_and_skip_other_lines(tmp_path: Path):
    page = tmp_path / "lexnames.5WN.gz"
    text = (
        ".TH lexnames 5WN\n00\tadj.all\tall adjective clusters\n03\tnoun.Tops\tunique beginner for nouns\n"
        "06\tnoun.artifact\tnouns denoting man-made objects  \n18\tnoun.person  \tnouns denoting people\n"
        "29\tverb.body\tverbs of grooming, dressing and bodily care\n"
    )
    page.write_bytes(gzip.compress(text.encode("utf-8")))
    assert read_lexname_descriptions(page) == {
        "Tops": "unique beginner for nouns",
        "artifact": "man-made objects",
        "person": "people",
    }
    with pytest.raises(FileNotFoundError, match="wordnet-base"):
        read_lexname_descriptions(tmp_path / "missing.gz")
    empty = tmp_path / "empty.gz"
    empty.write_bytes(gzip.compress(b"nothing here\n"))
    with pytest.raises(ValueError, match="no noun class lines"):
        read_lexname_descriptions(empty)


def test_desc_is_a_labeltok_benchmark_option_for_lexnames_only():
    """`labeltok:desc=1` parses (a method spec with an unknown option is refused before anything runs)."""
    assert parse_method("labeltok:head=residual:desc=1") == ("labeltok", {"head": "residual", "desc": "1"})
    with pytest.raises(ValueError, match="for wordnet_lexnames only"):
        dataset_label_descriptions("bbc_news")


@pytest.mark.integration
@real_wordnet
def test_real_lexname_descriptions_cover_every_lexnames_label(tmp_path: Path):
    labels = load_wordnet_lexnames(cache_dir=tmp_path)["train"].features["label"].names
    descriptions = read_lexname_descriptions()
    assert sorted(descriptions) == sorted(labels)
    assert descriptions["artifact"] == "man-made objects"
