"""`corpus/build.py` on small inline samples: parsers, split rule, cleaning, file selection.

No network, no apt: only the pure functions and the corpus writer are exercised.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import pathlib
import random
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]


def load_build():
    """Import corpus/build.py (corpus/ is not a package)."""
    spec = importlib.util.spec_from_file_location("corpus_build", ROOT / "corpus" / "build.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


build = load_build()

TRANSLATION = """\
Package: libfoo1
Description-md5: 0123456789abcdef0123456789abcdef
Description-de: Bibliothek für Foo
 Foo ist eine Bibliothek.
 Sie tut Dinge.
 .
 Dieses Paket enthält die Laufzeitbibliothek.

Package: bar
Description-md5: fedcba9876543210fedcba9876543210
Description-de: Werkzeug Bar ohne lange Beschreibung
"""

PACKAGES = """\
Package: libfoo1
Source: foo (1.2-3)
Version: 1.2-3+b1
Section: contrib/libs
Description: foo library

Package: libfoo-dev
Source: foo
Section: libdevel
Description: foo library (headers)

Package: bar
Version: 2.0
Section: utils
Description: bar tool
"""


def test_ddtp_stanzas_give_short_and_long_text_with_paragraphs():
    records = list(build.parse_ddtp(TRANSLATION))
    assert [r["package"] for r in records] == ["libfoo1", "bar"]
    assert records[0]["md5"] == "0123456789abcdef0123456789abcdef"
    assert records[0]["text"] == (
        "Bibliothek für Foo\nFoo ist eine Bibliothek.\nSie tut Dinge.\n\n"
        "Dieses Paket enthält die Laufzeitbibliothek."
    )
    assert records[1]["text"] == "Werkzeug Bar ohne lange Beschreibung"


def test_packages_index_maps_binaries_to_source_and_section():
    index = build.parse_packages(PACKAGES)
    assert index == {
        "libfoo1": ("foo", "libs"),
        "libfoo-dev": ("foo", "libdevel"),
        "bar": ("bar", "utils"),
    }


def test_split_depends_on_the_family_only():
    index = build.parse_packages(PACKAGES)
    families = {pkg: f"pkg:{index[pkg][0]}" for pkg in ("libfoo1", "libfoo-dev")}
    assert families["libfoo1"] == families["libfoo-dev"] == "pkg:foo"
    assert build.split_of("pkg:foo") == build.split_of("pkg:foo")
    assert build.split_of("man:ls") in build.SPLITS
    assert build.man_page_name("ls.1.gz") == build.man_page_name("ls.1posix") == "ls"
    assert build.man_page_name("ld.so.8.gz") == "ld.so"


def test_split_proportions_are_near_90_5_5():
    rng = random.Random(0)
    counts = dict.fromkeys(build.SPLITS, 0)
    for _ in range(10_000):
        counts[build.split_of(f"pkg:{rng.getrandbits(64):x}")] += 1
    assert 8800 <= counts["train"] <= 9200
    assert 400 <= counts["valid"] <= 600
    assert 400 <= counts["test"] <= 600


def test_roff_fallback_strips_requests_and_escapes():
    roff = (
        '.\\" a comment\n.TH LS 1 "2022" "GNU" "User Commands"\n.SH NAME\n'
        "ls \\- list directory contents\n.SH DESCRIPTION\n.B ls\nlists \\fIfiles\\fR \\(em "
        "all of them.\n.PP\n.BR sort (1)\n"
    )
    text = build.roff_to_text(roff)
    assert " ".join(text.split()) == (
        "NAME ls - list directory contents DESCRIPTION ls lists files — all of them. sort (1)"
    )


def test_terminal_output_loses_overstrikes_escapes_header_and_footer():
    rendered = (
        "LS(1)   User Commands   LS(1)\n\nN\bNA\bAM\bME\bE\n  \x1b[1mls\x1b[0m\nGNU 9.1  LS(1)\n"
    )
    assert build.strip_terminal(rendered) == "NAME\n  ls"


def test_fortunes_split_on_percent_lines():
    text = "First fortune,\n  two lines.\n%\nSecond one.\n%\n\n%\nThird.\n%\n"
    assert build.split_fortunes(text) == ["First fortune,\n  two lines.", "Second one.", "Third."]


def test_legacy_encodings_decode_and_garbage_is_refused():
    russian = "Привет, мир"
    assert build.decode_bytes(russian.encode("koi8-r"), "ru_RU") == russian
    assert build.decode_bytes(russian.encode("utf-8"), "ru_RU") == russian
    assert build.decode_bytes("Žluťoučký kůň".encode("iso-8859-2"), "cs_CZ") == "Žluťoučký kůň"
    assert build.decode_bytes(b"\xff\xfe\x80abc", "ja_XX") is None
    assert build.decode_bytes(b"\xff", "xx_XX") is None


def test_cleaning_normalises_and_filters():
    raw = "Cafe\u0301\tau\x00 lait\n\n \x1b[32mgreen\x1b[m  ____________ end"
    assert build.clean_text(raw) == "Café au lait green end"
    assert build.reject_reason("short text") == "too_short"
    assert build.reject_reason("1234 5678 9012 3456 7890 ++--") == "non_letters"
    assert build.reject_reason("這是一個足夠長的中文句子。") is None  # wide characters count 2
    assert build.reject_reason("A perfectly ordinary sentence.") is None
    assert build.truncate("one two three", 9) == "one two"


def test_writer_deduplicates_per_language_and_writes_splits(tmp_path):
    writer = build.CorpusWriter(tmp_path)
    text = "Ein ausreichend langer deutscher Satz."
    record = {"package": "libfoo1", "section": "libs", "md5": "0" * 32}
    assert writer.add(build.Doc("de_DE", "ddtp", "pkg:foo", text, record))
    assert not writer.add(build.Doc("de_DE", "man", "man:ls", "  " + text.replace(" ", "\n")))
    assert writer.add(build.Doc("fr_XX", "ddtp", "pkg:foo", text))
    assert not writer.add(build.Doc("de_DE", "fortunes", "", "?!"))
    writer.close()
    split = build.split_of("pkg:foo")
    assert (tmp_path / f"de_DE.{split}.txt").read_text(encoding="utf-8") == text + "\n"
    line = (tmp_path / "ddtp.de_DE.jsonl").read_text(encoding="utf-8")
    assert json.loads(line) == {**record, "family": "pkg:foo", "split": split, "text": text}
    summary = writer.summary()
    assert summary["de_DE"]["totals"][split]["docs"] == 1
    assert summary["de_DE"]["dropped"] == {"fortunes:too_short": 1, "man:duplicate": 1}


@pytest.mark.parametrize(
    ("package", "relpath", "allowed"),
    [
        ("fortunes-es", "usr/share/games/fortunes/es/vida.fortunes", True),
        ("fortunes-es", "usr/share/games/fortunes/es/off/racistas.fortunes", False),
        ("fortunes", "usr/share/games/fortunes/off/art", False),
        ("fortunes-pl", "usr/share/games/fortunes/pl/dowcipy-szowinistyczne", False),
        ("fortunes", "usr/share/games/fortunes/art.dat", False),
        ("fortunes", "usr/share/doc/fortunes/copyright", False),
        ("manpages-de", "usr/share/man/de/man1/ls.1.gz", True),
        ("manpages-de", "usr/share/locale/de/LC_MESSAGES/man-db.mo", False),
        ("manpages-de", "usr/share/man/de/man1/foo.po", False),
        ("debian-reference-de", "usr/share/man/de/man1/x.1.gz", False),
        ("debian-handbook", "usr/share/games/fortunes/x", False),
    ],
)
def test_file_selector_enforces_the_held_out_rule(package, relpath, allowed):
    assert build.is_allowed(package, relpath) is allowed


def test_fortune_source_drops_debian_reference_excerpts(tmp_path):
    root = tmp_path / "usr/share/games/fortunes"
    root.mkdir(parents=True)
    quote = "Eine Hand wäscht die andere, sagt man."
    (root / "chinese").write_text(
        f"\x1b[37;1m1.1.\xa0Ein Kapitel der Referenz\x1b[;m\nText.\n%\n{quote}\n%\n",
        encoding="utf-8",
    )
    (root / "chinese.dat").write_bytes(b"\x00\x01")
    dropped = build.defaultdict(lambda: build.defaultdict(int))
    docs = list(build.fortune_docs("fortunes-zh", tmp_path, dropped))
    assert [(d.lang, d.text) for d in docs] == [("zh_CN", quote)]
    assert dropped["zh_CN"]["fortunes:held_out"] == 1


def test_man_language_and_compressed_reading(tmp_path):
    assert build.xmod_code(build.man_language("usr/share/man/man1/ls.1.gz")) == "en_XX"
    assert build.xmod_code(build.man_language("usr/share/man/pt_BR/man1/ls.1.gz")) == "pt_XX"
    assert build.xmod_code("nb") == "no_XX"
    assert build.xmod_code("de.UTF-8") == "de_DE"
    assert build.xmod_code("xx") is None
    page = tmp_path / "x.1.gz"
    page.write_bytes(gzip.compress(b".so man1/y.1\n"))
    assert build.render_man((str(page), "en_XX")) == ("", "redirect")
