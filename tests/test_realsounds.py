"""The real-recordings manifest: leave-one-package-out split, complete rows; licence lookup in DEP-5 files; a cache
with a wrong file is refused."""

from __future__ import annotations

import re

import pytest

from experiments.toyworld import realsounds as rs


def test_manifest_is_complete_and_split_by_package():
    entries = rs.read_manifest()
    assert len(entries) == 74 and len({(e.package, e.path) for e in entries}) == 74
    assert all(re.fullmatch(r"[0-9a-f]{64}", e.sha256) and e.version and e.licence for e in entries)
    assert {e.label for e in entries} == set(rs.CLASSES)
    validation = {e.package for e in entries if e.split == "validation"}
    train = {e.package for e in entries if e.split == "train"}
    assert validation == {rs.VALIDATION_PACKAGE} and not validation & train
    assert {e.label for e in entries if e.split == "validation"} == set(rs.CLASSES)  # every class is developed on


COPYRIGHT = """Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/

Files: *
License: GPL-2

Files: share/game/Data/Sounds/*
License: GFDL-1.3

Files: share/game/Data/Sounds/Drop*.ogg
 extra/Drop*.ogg
License: CC-BY-SA-3.0

Files: game/*
License: MIT
"""


@pytest.mark.parametrize("path, licence", [
    ("usr/share/games/game/Data/Sounds/boom.ogg", "GFDL-1.3"),  # installed under games/, matched by its tail
    ("usr/share/games/game/Data/Sounds/Drop2.ogg", "CC-BY-SA-3.0"),  # the most specific stanza wins
    ("usr/share/doc/other/README", "GPL-2"),  # only "Files: *" matches
])
def test_licence_of_picks_the_most_specific_stanza(path, licence):
    assert rs.licence_of(COPYRIGHT, path) == licence


def test_layout_refuses_a_cache_with_a_changed_file(tmp_path):
    entry = rs.read_manifest()[0]
    target = rs.local_path(entry, tmp_path)
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not the recording")
    assert rs.missing([entry], tmp_path) == [entry]
    with pytest.raises(rs.RealSoundsError, match="missing from"):
        rs.layout([entry], tmp_path)
