"""Build a multilingual plain-text corpus, offline, from Debian's archive (bookworm, main).

Command::

    python corpus/build.py --out data/corpus [--cache ~/.cache/xmod-jax-corpus]

Sources (standard library plus the apt, dpkg and groff binaries):

* DDTP: the ``Translation-xx`` indexes of package descriptions (English included). One
  description (short line + long text) is one document. The main ``Packages`` index maps each
  binary package to its source package (its *family*) and its archive section.
* fortunes: the ``fortunes*`` packages; one fortune (records separated by ``%`` lines) is one
  document. Offensive collections (any ``off/`` directory, offensive-sounding file names) are
  never read.
* man pages: the ``manpages*`` packages, rendered to text with groff (a regex roff stripper is
  the fallback); one page is one document, capped at ``MAX_MAN_CHARS`` characters.

Held-out rule: gettext catalogues (``.mo``/``.po``) and everything from the ``debian-reference``
and ``debian-handbook`` packages (their DDTP descriptions included) are never read; they are
kept for evaluation. Only ``usr/share/man/**`` of manpages packages and
``usr/share/games/fortunes/**`` of fortunes packages are read.

Split rule: a document's split depends only on its family: ``pkg:<source package>`` (DDTP),
``man:<page name>`` (man pages, all languages and sections), ``fortune:<sha1 of text>``.
``int(sha1(family)) % 100`` gives 0-89 train, 90-94 valid, 95-99 test, so every language
agrees and the binaries of one source package never straddle splits.

Output (written to a temporary folder, then renamed into place): ``<code>.<split>.txt`` with
one cleaned document per line, ``ddtp.<code>.jsonl`` with one record per kept description,
and ``manifest.json`` with sizes, package versions, the build date and the rules above.
"""

from __future__ import annotations

import argparse
import bz2
import datetime
import gzip
import hashlib
import json
import lzma
import multiprocessing
import os
import re
import shutil
import subprocess
import sys
import unicodedata
import urllib.parse
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

SUITE = "bookworm"
SPLITS = ("train", "valid", "test")
SOURCES = ("ddtp", "fortunes", "man")
MAX_MAN_CHARS = 20_000
MIN_CHARS = 20
MIN_LETTER_RATIO = 0.5
RENDER_TIMEOUT_S = 60
WORKERS = 2

# Debian locale -> facebook/xmod-base language code.
XMOD_CODES = {
    "en": "en_XX", "de": "de_DE", "fr": "fr_XX", "it": "it_IT", "da": "da_DK", "ja": "ja_XX",
    "pl": "pl_PL", "ru": "ru_RU", "es": "es_XX", "zh_CN": "zh_CN", "zh_TW": "zh_TW",
    "zh": "zh_CN", "pt_BR": "pt_XX", "pt": "pt_XX", "uk": "uk_UA", "ko": "ko_KR",
    "sk": "sk_SK", "cs": "cs_CZ", "fi": "fi_FI", "nl": "nl_XX", "sv": "sv_SE", "hu": "hu_HU",
    "vi": "vi_VN", "id": "id_ID", "tr": "tr_TR", "el": "el_GR", "ro": "ro_RO", "nb": "no_XX",
    "no": "no_XX", "ca": "ca_ES", "sr": "sr_RS", "bg": "bg_BG", "eo": "eo_EO", "ar": "ar_AR",
    "fa": "fa_IR", "gl": "gl_ES", "eu": "eu_ES", "he": "he_IL", "lt": "lt_LT", "sl": "sl_SI",
    "hr": "hr_HR", "ta": "ta_IN", "hi": "hi_IN", "th": "th_TH", "mk": "mk_MK",
}  # fmt: skip
DDTP_LANGUAGES = ",".join(sorted({k for k in XMOD_CODES if k not in ("zh", "pt", "no", "mk")}))

# The legacy 8-bit or multi-byte encoding tried when UTF-8 fails; no entry means drop.
LEGACY_ENCODINGS = {
    "en_XX": "latin-1", "de_DE": "latin-1", "fr_XX": "latin-1", "it_IT": "latin-1",
    "es_XX": "latin-1", "pt_XX": "latin-1", "nl_XX": "latin-1", "da_DK": "latin-1",
    "sv_SE": "latin-1", "no_XX": "latin-1", "fi_FI": "latin-1", "ca_ES": "latin-1",
    "gl_ES": "latin-1", "eu_ES": "latin-1", "id_ID": "latin-1", "ru_RU": "koi8-r",
    "uk_UA": "koi8-u", "bg_BG": "cp1251", "sr_RS": "cp1251", "mk_MK": "cp1251",
    "pl_PL": "iso-8859-2", "cs_CZ": "iso-8859-2", "sk_SK": "iso-8859-2", "hu_HU": "iso-8859-2",
    "ro_RO": "iso-8859-2", "hr_HR": "iso-8859-2", "sl_SI": "iso-8859-2", "el_GR": "iso-8859-7",
    "tr_TR": "iso-8859-9", "eo_EO": "iso-8859-3", "ja_XX": "euc-jp", "zh_CN": "gb18030",
    "zh_TW": "big5", "ko_KR": "euc-kr", "vi_VN": "cp1258",
}  # fmt: skip

# Fortune packages -> Debian language; single files in another language override it.
FORTUNE_PACKAGES = {
    "fortunes": "en", "fortunes-min": "en", "fortunes-de": "de", "fortunes-ru": "ru",
    "fortunes-zh": "zh_CN", "fortunes-pl": "pl", "fortunes-it": "it", "fortunes-cs": "cs",
    "fortunes-es": "es", "fortunes-br": "pt_BR", "fortunes-bg": "bg", "fortunes-eo": "eo",
}  # fmt: skip
FORTUNE_FILE_LANGUAGES = {"klasik-sk": "sk"}
MAN_PACKAGES = ("manpages",) + tuple(
    f"manpages-{x}"
    for x in "de fr ja es it pl ru nl pt-br uk vi zh cs fi sv ro hu el id tr da nb sr mk".split()
)

HELD_OUT_PACKAGES = ("debian-reference", "debian-handbook")
HELD_OUT_SUFFIXES = (".mo", ".po", ".pot", ".gmo")
OFFENSIVE_NAME = re.compile(
    r"offens|racis|sexis|misog|szowin|feminist|homosex|ethnic|^sex$|-o$|(^|[-_.])off([-_.]|$)",
    re.IGNORECASE,
)
FORTUNE_ROOT = "usr/share/games/fortunes/"
MAN_ROOT = "usr/share/man/"

# Debian Reference chapters copied into fortunes-zh's `chinese` file (bold-white section titles).
HELD_OUT_TEXT = re.compile(
    r"\x1b\[37;1m|Osamu Aoki|Debian ?参考手册|Debian Reference|debian-reference|debian-handbook"
    r"|Debian Administrator.?s Handbook|Debian ?管理员手册",
    re.IGNORECASE,
)
DECORATION = re.compile(r"([^\w\s]|_)\1{4,}")
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
OVERSTRIKE = re.compile(r".\x08")
INVISIBLE = {"\u00ad": "", "\ufeff": "", "\u200b": ""}

SPLIT_RULE = (
    "split = int(sha1(family).hexdigest(), 16) % 100: 0-89 train, 90-94 valid, 95-99 test; "
    "family = pkg:<source package> (DDTP), man:<page name without section/extension> "
    "(man pages, shared by all languages), fortune:<sha1 of cleaned text> (fortunes)."
)
HELD_OUT_RULE = (
    "Never read: gettext catalogues (.mo/.po/.pot/.gmo) and anything from the debian-reference "
    "or debian-handbook packages (DDTP descriptions of those source packages included). Only "
    "usr/share/man/** of manpages packages and usr/share/games/fortunes/** of fortunes "
    "packages are read, never an off/ directory or an offensive-sounding fortune file. "
    "Fortunes quoting the Debian Reference or Handbook (fortunes-zh copies Debian Reference "
    "chapters into its `chinese` file) are dropped before cleaning."
)


# ---------------------------------------------------------------------------------------------
# Rules: languages, splits, file selection, decoding, cleaning.


def xmod_code(debian_locale: str) -> str | None:
    """The xmod-base code of a Debian locale (``pt_BR``, ``de.UTF-8``, ``sr@latin``), or None."""
    locale = re.split(r"[.@]", debian_locale)[0]
    return XMOD_CODES.get(locale) or XMOD_CODES.get(locale.split("_")[0])


def split_of(family: str) -> str:
    """The split of every document of ``family``: a function of the family string only."""
    bucket = int(hashlib.sha1(family.encode("utf-8")).hexdigest(), 16) % 100
    return "train" if bucket < 90 else "valid" if bucket < 95 else "test"


def is_allowed(package: str, relpath: str) -> bool:
    """Whether the file ``relpath`` of ``package`` may be read (the held-out rule)."""
    parts = Path(relpath).parts
    if package.startswith(HELD_OUT_PACKAGES) or relpath.endswith(HELD_OUT_SUFFIXES):
        return False
    if package.startswith("manpages"):
        return relpath.startswith(MAN_ROOT)
    if package.startswith("fortunes") and relpath.startswith(FORTUNE_ROOT):
        name = parts[-1]
        return (
            "off" not in parts
            and not OFFENSIVE_NAME.search(name)
            and not name.endswith((".dat", ".u8"))
        )
    return False


def decode_bytes(data: bytes, code: str) -> str | None:
    """UTF-8, else the language's legacy encoding; None when neither decodes cleanly."""
    for encoding in ("utf-8", LEGACY_ENCODINGS.get(code)):
        if encoding is None:
            continue
        try:
            text = data.decode(encoding)
        except UnicodeDecodeError:
            continue
        if "\ufffd" not in text:
            return text
    return None


def clean_text(text: str) -> str:
    """NFC, no ANSI escapes, control characters or decorative rules (``_____``), whitespace
    runs collapsed to one space."""
    text = unicodedata.normalize("NFC", ANSI_ESCAPE.sub("", text))
    text = DECORATION.sub(" ", text)
    text = "".join(
        " " if ch.isspace() else INVISIBLE.get(ch, ch)
        for ch in text
        if ch.isspace() or unicodedata.category(ch) not in ("Cc", "Cs", "Co")
    )
    return " ".join(text.split())


def reject_reason(text: str) -> str | None:
    """Why a cleaned document is dropped, or None to keep it: too short (wide CJK characters
    count twice) or mostly non-letters."""
    if sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text) < MIN_CHARS:
        return "too_short"
    visible = [ch for ch in text if ch != " "]
    if sum(ch.isalpha() for ch in visible) < MIN_LETTER_RATIO * len(visible):
        return "non_letters"
    return None


def truncate(text: str, limit: int) -> str:
    """At most ``limit`` characters of ``text``, cut at a space when there is one."""
    if len(text) <= limit:
        return text
    cut = text[:limit]
    return cut.rsplit(" ", 1)[0] if " " in cut else cut


# ---------------------------------------------------------------------------------------------
# Parsers: Debian indexes, fortunes, roff.


def stanzas(text: str) -> Iterator[dict[str, list[str]]]:
    """RFC 822 stanzas of a Debian index: field -> [first line, continuation lines...]."""
    fields: dict[str, list[str]] = {}
    last = None
    for line in text.splitlines():
        if not line.strip():
            if fields:
                yield fields
            fields, last = {}, None
        elif line[0] in " \t" and last is not None:
            fields[last].append(line)
        elif ":" in line:
            last, value = line.split(":", 1)
            fields[last] = [value.strip()]
    if fields:
        yield fields


def parse_packages(text: str) -> dict[str, tuple[str, str]]:
    """``Packages`` index -> {binary package: (source package, section without area prefix)}."""
    index = {}
    for st in stanzas(text):
        package = st["Package"][0]
        source = st.get("Source", [package])[0].split("(")[0].strip() or package
        section = st.get("Section", ["unknown"])[0].rsplit("/", 1)[-1]
        index[package] = (source, section)
    return index


def description_text(lines: list[str]) -> str:
    """Short description, then the long one; `` .`` lines become paragraph breaks."""
    body = [line[1:] for line in lines[1:]]
    long_text = "\n".join("" if line.strip() == "." else line for line in body)
    return f"{lines[0]}\n{long_text}".strip()


def parse_ddtp(text: str) -> Iterator[dict[str, str]]:
    """``Translation-xx`` index -> {"package", "md5", "text"} per description."""
    for st in stanzas(text):
        key = next((k for k in st if k.startswith("Description-") and k != "Description-md5"), "")
        if "Package" in st and key:
            yield {
                "package": st["Package"][0],
                "md5": st.get("Description-md5", [""])[0],
                "text": description_text(st[key]),
            }


def split_fortunes(text: str) -> list[str]:
    """The fortunes of a fortune file: records separated by lines holding only ``%``."""
    records = re.split(r"^%[ \t]*$", text.replace("\r\n", "\n"), flags=re.MULTILINE)
    return [r.strip("\n") for r in records if r.strip()]


ROFF_TEXT_MACROS = {"SH", "SS", "B", "I", "BR", "BI", "IR", "IB", "RB", "RI", "SM", "SB", "IP"}
ROFF_GLYPHS = {"em": "—", "en": "–", "hy": "-", "bu": "•", "aq": "'", "dq": '"', "lq": "“"}
ROFF_GLYPHS |= {"rq": "”", "oq": "‘", "cq": "’", "co": "©", "rg": "®", "ti": "~", "ha": "^"}
ROFF_ESCAPES = [
    (re.compile(r"\\f(\[[^\]]*\]|\(..|.)"), ""),
    (re.compile(r"\\s[+-]?(\d|\(\d\d|\[\d+\])"), ""),
    (re.compile(r"\\\*(\[[^\]]*\]|\(..|.)"), ""),
    (re.compile(r"\\[eE]"), "\x00"),
    (re.compile(r"\\[&c%:)|^]"), ""),
    (re.compile(r"\\[ ~0]"), " "),
]


def roff_glyph(match: re.Match) -> str:
    """A named roff glyph (``\\(em``, ``\\[em]``) as text, or nothing when unknown."""
    return ROFF_GLYPHS.get(match.group(1) or match.group(2), "")


def roff_to_text(source: str) -> str:
    """Plain text of a roff page by regex stripping: the fallback when groff fails."""
    out = []
    for line in source.splitlines():
        if line.startswith(('.\\"', "'\\\"", '\\"')):
            continue
        if line.startswith((".", "'")):
            name, _, rest = line[1:].strip().partition(" ")
            if name not in ROFF_TEXT_MACROS:
                continue
            line = rest.replace('"', "")
        for pattern, repl in ROFF_ESCAPES:
            line = pattern.sub(repl, line)
        line = re.sub(r"\\\((..)|\\\[([^\]]*)\]", roff_glyph, line)
        line = re.sub(r"\\(.)", r"\1", line).replace("\x00", "\\")
        out.append(line)
    return "\n".join(out)


def strip_terminal(text: str) -> str:
    """Terminal output without overstrikes, ANSI escapes, page header and footer lines."""
    text = ANSI_ESCAPE.sub("", OVERSTRIKE.sub("", text))
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[1:-1])


# ---------------------------------------------------------------------------------------------
# Man pages (run in worker processes).


def read_compressed(path: Path) -> bytes:
    """A file's bytes, decompressed according to its extension."""
    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(path.suffix, open)
    with opener(path, "rb") as f:
        return f.read()


def man_page_name(filename: str) -> str:
    """``ls.1.gz`` -> ``ls``; ``ld.so.8`` -> ``ld.so``."""
    stem = re.sub(r"\.(gz|bz2|xz)$", "", filename)
    return stem.rsplit(".", 1)[0] if "." in stem else stem


def man_language(relpath: str) -> str:
    """The Debian locale of a page from its directory (English for ``usr/share/man/man*/``)."""
    directory = Path(relpath).parts[3]
    return "en" if directory.startswith("man") else directory


def groff(source: str) -> str | None:
    """Render a man page with groff to plain text, or None when groff fails."""
    command = ["groff", "-k", "-K", "utf-8", "-T", "utf8", "-man", "-P", "-cbu"]
    command += ["-rLL=1000n", "-rHY=0"]
    env = dict(os.environ, LC_ALL="C.UTF-8", MANWIDTH="1000")
    try:
        done = subprocess.run(
            command,
            input=source.encode("utf-8"),
            capture_output=True,
            timeout=RENDER_TIMEOUT_S,
            env=env,
        )
    except subprocess.TimeoutExpired:
        return None
    text = strip_terminal(done.stdout.decode("utf-8", "replace"))
    return text if done.returncode == 0 and text.strip() else None


def render_man(job: tuple[str, str]) -> tuple[str, str]:
    """(path, xmod code) -> (text, how): how is groff, fallback, redirect or undecodable."""
    path, code = job
    data = read_compressed(Path(path))
    if re.match(rb"\s*\.so\s", data) and len(data.strip().splitlines()) <= 2:
        return "", "redirect"
    source = decode_bytes(data, code)
    if source is None:
        return "", "undecodable"
    text = groff(source)
    if text is None:
        return roff_to_text(source), "fallback"
    return text, "groff"


# ---------------------------------------------------------------------------------------------
# Corpus writer.


@dataclass
class Doc:
    """One document before cleaning; an empty family means ``fortune:<sha1 of clean text>``."""

    lang: str
    source: str
    family: str
    text: str
    record: dict | None = None


@dataclass
class CorpusWriter:
    """Cleans, deduplicates (exactly, per language) and streams documents to split files."""

    root: Path
    stats: dict = field(default_factory=lambda: defaultdict(lambda: defaultdict(dict)))
    dropped: dict = field(default_factory=lambda: defaultdict(lambda: defaultdict(int)))
    seen: dict = field(default_factory=lambda: defaultdict(set))
    handles: dict = field(default_factory=dict)

    def add(self, doc: Doc, limit: int | None = None) -> bool:
        """Write ``doc`` if it survives cleaning and deduplication; count it either way."""
        text = clean_text(doc.text)
        text = truncate(text, limit) if limit else text
        reason = reject_reason(text)
        digest = hashlib.sha1(text.encode("utf-8")).digest()
        if reason is None and digest in self.seen[doc.lang]:
            reason = "duplicate"
        if reason:
            self.dropped[doc.lang][f"{doc.source}:{reason}"] += 1
            return False
        self.seen[doc.lang].add(digest)
        family = doc.family or f"fortune:{hashlib.sha1(text.encode('utf-8')).hexdigest()}"
        split = split_of(family)
        self.handle(f"{doc.lang}.{split}.txt").write(text + "\n")
        if doc.record is not None:
            record = {**doc.record, "family": family, "split": split, "text": text}
            self.handle(f"ddtp.{doc.lang}.jsonl").write(json.dumps(record, ensure_ascii=False))
            self.handle(f"ddtp.{doc.lang}.jsonl").write("\n")
        self.count(doc.lang, doc.source, split, text)
        return True

    def handle(self, name: str):
        """The open output file ``name`` (opened on first use)."""
        if name not in self.handles:
            self.handles[name] = open(self.root / name, "w", encoding="utf-8")  # noqa: SIM115
        return self.handles[name]

    def count(self, lang: str, source: str, split: str, text: str) -> None:
        """Add one document to the size statistics."""
        cell = self.stats[lang][source].setdefault(split, {"docs": 0, "chars": 0, "bytes": 0})
        cell["docs"] += 1
        cell["chars"] += len(text)
        cell["bytes"] += len(text.encode("utf-8")) + 1

    def close(self) -> None:
        """Close every output file."""
        for f in self.handles.values():
            f.close()

    def summary(self) -> dict:
        """Per language: per source and split sizes, totals per split, and drop counts."""
        out = {}
        for lang in sorted(self.stats):
            per_source = {s: dict(self.stats[lang][s]) for s in SOURCES if s in self.stats[lang]}
            totals = {
                split: {
                    key: sum(c.get(split, {}).get(key, 0) for c in per_source.values())
                    for key in ("docs", "chars", "bytes")
                }
                for split in SPLITS
            }
            out[lang] = {
                "sources": per_source,
                "totals": totals,
                "dropped": dict(sorted(self.dropped[lang].items())),
            }
        return out


# ---------------------------------------------------------------------------------------------
# The archive: index lists, package downloads, unpacking.


def apt_options(lists: Path) -> list[str]:
    """apt options that keep every file apt writes under the cache."""
    return [
        "-o", f"Dir::State::Lists={lists}",
        "-o", "Dir::Cache::pkgcache=",
        "-o", "Dir::Cache::srcpkgcache=",
        "-o", f"Acquire::Languages={DDTP_LANGUAGES}",
    ]  # fmt: skip


def index_files(lists: Path, pattern: str) -> list[Path]:
    """The base suite's index files in ``lists`` matching ``pattern``."""
    return sorted(p for p in lists.glob(f"*_dists_{SUITE}_main_{pattern}") if p.is_file())


def ensure_lists(lists: Path) -> None:
    """Run ``apt-get update`` into ``lists`` unless its Packages index is already there."""
    if index_files(lists, "binary-amd64_Packages*"):
        return
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    subprocess.run(["apt-get", "-q", *apt_options(lists), "update"], check=True)


def read_index(path: Path) -> str:
    """An index file, decompressed by apt."""
    done = subprocess.run(
        ["/usr/lib/apt/apt-helper", "cat-file", str(path)], capture_output=True, check=True
    )
    return done.stdout.decode("utf-8", "replace")


def ensure_debs(debs: Path, lists: Path, packages: Iterable[str]) -> dict[str, Path]:
    """{package: .deb path}, downloading into ``debs`` only what is missing."""
    debs.mkdir(parents=True, exist_ok=True)
    missing = [p for p in packages if not list(debs.glob(f"{p}_*.deb"))]
    if missing:
        subprocess.run(
            ["apt-get", "-q", *apt_options(lists), "download", *missing], cwd=debs, check=True
        )
    return {p: max(debs.glob(f"{p}_*.deb")) for p in packages}


def deb_version(deb: Path) -> str:
    """The Version field of a .deb."""
    done = subprocess.run(["dpkg-deb", "-f", str(deb), "Version"], capture_output=True, check=True)
    return done.stdout.decode().strip()


def unpack(deb: Path, root: Path) -> Path:
    """Unpack ``deb`` under ``root`` once (a marker file records completion)."""
    target = root / urllib.parse.unquote(deb.stem)
    if not (target / ".unpacked").exists():
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
        (target / ".unpacked").touch()
    return target


def allowed_files(package: str, tree: Path) -> list[tuple[Path, str]]:
    """Regular (non-symlink, non-empty) allowed files of an unpacked package, sorted by path."""
    found = []
    for path in sorted(tree.rglob("*")):
        relpath = path.relative_to(tree).as_posix()
        if path.is_symlink() or not path.is_file() or path.stat().st_size == 0:
            continue
        if is_allowed(package, relpath):
            found.append((path, relpath))
    return found


# ---------------------------------------------------------------------------------------------
# Document sources.


def ddtp_docs(lists: Path, packages: dict[str, tuple[str, str]]) -> Iterator[Doc]:
    """Every DDTP description, language by language, in index order."""
    for path in index_files(lists, "i18n_Translation-*"):
        locale = urllib.parse.unquote(path.name.split("Translation-", 1)[1].split(".")[0])
        code = xmod_code(locale)
        if code is None:
            continue
        for rec in parse_ddtp(read_index(path)):
            source, section = packages.get(rec["package"], (rec["package"], "unknown"))
            if rec["package"].startswith(HELD_OUT_PACKAGES) or source in HELD_OUT_PACKAGES:
                continue
            record = {"package": rec["package"], "section": section, "md5": rec["md5"]}
            yield Doc(code, "ddtp", f"pkg:{source}", rec["text"], record)


def fortune_docs(package: str, tree: Path, dropped: dict) -> Iterator[Doc]:
    """Every fortune of an unpacked fortunes package, file by file, in file order."""
    for path, _ in allowed_files(package, tree):
        code = xmod_code(FORTUNE_FILE_LANGUAGES.get(path.name, FORTUNE_PACKAGES[package]))
        data = path.read_bytes()
        text = decode_bytes(data, code)
        chunks = [text] if text is not None else re.split(rb"\n%[ \t]*\n", data)
        for chunk in chunks:
            chunk_text = chunk if isinstance(chunk, str) else decode_bytes(chunk, code)
            if chunk_text is None:
                dropped[code]["fortunes:undecodable"] += 1
                continue
            for fortune in split_fortunes(chunk_text):
                if HELD_OUT_TEXT.search(fortune):
                    dropped[code]["fortunes:held_out"] += 1
                    continue
                yield Doc(code, "fortunes", "", fortune)


def man_jobs(package: str, tree: Path) -> Iterator[tuple[str, str, str]]:
    """(path, xmod code, family) of every man page of an unpacked manpages package."""
    for path, relpath in allowed_files(package, tree):
        code = xmod_code(man_language(relpath))
        if code is not None and Path(relpath).parts[-2].startswith("man"):
            yield str(path), code, f"man:{man_page_name(path.name)}"


def add_man_pages(writer: CorpusWriter, trees: dict[str, Path]) -> dict[str, int]:
    """Render every man page with ``WORKERS`` processes and add them in path order."""
    jobs = [job for package in MAN_PACKAGES for job in man_jobs(package, trees[package])]
    how_counts: dict[str, int] = defaultdict(int)
    with multiprocessing.Pool(WORKERS) as pool:
        rendered = pool.imap(render_man, [(path, code) for path, code, _ in jobs], chunksize=8)
        for (_, code, family), (text, how) in zip(jobs, rendered, strict=True):
            how_counts[how] += 1
            if how in ("redirect", "undecodable"):
                writer.dropped[code][f"man:{how}"] += 1
                continue
            writer.add(Doc(code, "man", family, text), limit=MAX_MAN_CHARS)
    return dict(how_counts)


# ---------------------------------------------------------------------------------------------
# Build.


def replace_dir(tmp: Path, out: Path) -> None:
    """Move the finished ``tmp`` folder to ``out``, replacing an older corpus there."""
    old = out.with_name(f".{out.name}.old-{os.getpid()}")
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


def print_table(summary: dict) -> None:
    """Language, documents and MB of train text per source, and totals."""
    header = f"{'lang':7}" + "".join(f"{s + ' docs':>15}{'train MB':>10}" for s in SOURCES)
    print(header + f"{'all docs':>10}{'train MB':>10}")
    for lang, entry in summary.items():
        row = f"{lang:7}"
        for source in SOURCES:
            cells = entry["sources"].get(source, {})
            docs = sum(c["docs"] for c in cells.values())
            row += f"{docs:>15}{cells.get('train', {}).get('bytes', 0) / 1e6:>10.2f}"
        docs = sum(t["docs"] for t in entry["totals"].values())
        print(row + f"{docs:>10}{entry['totals']['train']['bytes'] / 1e6:>10.2f}")


def build(out: Path, cache: Path) -> dict:
    """Build the corpus into ``out`` using (and filling) ``cache``; return the manifest."""
    lists = cache / "lists"
    ensure_lists(lists)
    packages = parse_packages(read_index(index_files(lists, "binary-amd64_Packages*")[0]))
    debs = ensure_debs(cache / "debs", lists, [*FORTUNE_PACKAGES, *MAN_PACKAGES])
    trees = {name: unpack(deb, cache / "unpacked") for name, deb in debs.items()}

    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    tmp.mkdir()
    writer = CorpusWriter(tmp)
    for doc in ddtp_docs(lists, packages):
        writer.add(doc)
    for package in FORTUNE_PACKAGES:
        for doc in fortune_docs(package, trees[package], writer.dropped):
            writer.add(doc)
    rendering = add_man_pages(writer, trees)
    writer.close()

    manifest = {
        "suite": f"debian {SUITE} main",
        "built": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "split_rule": SPLIT_RULE,
        "held_out_rule": HELD_OUT_RULE,
        "cleaning": (
            f"NFC, control characters and ANSI escapes removed, whitespace collapsed (one "
            f"document per line), decorative rules removed, documents under {MIN_CHARS} "
            f"characters (wide CJK characters count twice) or under "
            f"{MIN_LETTER_RATIO:.0%} letters dropped, exact duplicates dropped per language "
            f"(first occurrence kept), man pages cut to {MAX_MAN_CHARS} characters."
        ),
        "packages": {name: deb_version(deb) for name, deb in sorted(debs.items())},
        "ddtp_indexes": [p.name for p in index_files(lists, "i18n_Translation-*")],
        "man_rendering": rendering,
        "languages": writer.summary(),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, ensure_ascii=False) + "\n")
    replace_dir(tmp, out)
    return manifest


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="output folder")
    parser.add_argument(
        "--cache",
        type=Path,
        default=Path("~/.cache/xmod-jax-corpus"),
        help="apt lists, .deb files and unpacked packages, reused across runs",
    )
    args = parser.parse_args(argv)
    manifest = build(args.out, args.cache.expanduser())
    print_table(manifest["languages"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
