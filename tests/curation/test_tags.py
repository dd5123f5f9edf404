import pytest

from mrbench.curation.tags import Tag, TagList, TagMatcher, normalize


def matcher(*tags: Tag) -> TagMatcher:
    return TagMatcher(TagList(list(tags)))


def test_case_insensitive_word_boundaries():
    m = matcher(Tag("Cat", "subject"))
    assert m.match("A CAT on a mat") == ["Cat"]
    assert m.match("concatenate the catalogue") == []  # no partial-word hits
    assert m.match("cat.") == ["Cat"]


def test_aliases_map_to_canonical_name_in_order_of_mention():
    m = matcher(Tag("Barack Obama", "celebrity", ["Obama", "President Obama"]), Tag("Spider-Man", "character", ["Spiderman"]))
    assert m.match("Spiderman meets president obama") == ["Spider-Man", "Barack Obama"]
    assert m.match("obama, obama and Barack Obama") == ["Barack Obama"]


def test_hyphen_space_and_accent_normalisation():
    m = matcher(Tag("Spider-Man", "character"), Tag("Beyoncé", "celebrity"))
    assert m.match("spider man and SPIDER_MAN") == ["Spider-Man"]
    assert m.match("Beyonce live") == ["Beyoncé"]
    assert m.match("BEYONCÉ live") == ["Beyoncé"]
    assert normalize("Ｆｕｌｌ　ｗｉｄｔｈ") == "full width"  # NFKC


def test_longest_alias_wins():
    m = matcher(Tag("Spider-Man", "character"), Tag("Spider-Man 2099", "character"))
    assert m.match("spider-man 2099 poster") == ["Spider-Man 2099"]


def test_unspaced_scripts_match_as_substrings():
    m = matcher(Tag("Totoro", "character", ["トトロ"]), Tag("Li Bai", "celebrity", ["李白"]))
    assert m.match("となりのトトロのポスター") == ["Totoro"]
    assert m.match("诗人李白的画像") == ["Li Bai"]


def test_non_latin_combining_marks_are_kept():
    # Devanagari vowel signs are combining marks; dropping them would change the word.
    m = matcher(Tag("हिंदी", "style"))
    assert m.match("यह हिंदी है") == ["हिंदी"]
    assert m.match("यह हद है") == []


def test_empty_and_none_captions():
    m = matcher(Tag("Cat", "subject"))
    assert m.match(None) == [] and m.match("") == []


def test_bad_tag_lists_are_errors(tmp_path):
    with pytest.raises(ValueError, match="category"):
        TagList([Tag("x", "animal")])
    with pytest.raises(ValueError, match="both"):
        matcher(Tag("A", "subject", ["same"]), Tag("B", "subject", ["same"]))
    bad = tmp_path / "tags.yaml"
    bad.write_text("- {name: x}\n")
    with pytest.raises(ValueError, match="category"):
        TagList.load(bad)


def test_tsv_tag_list(tmp_path):
    f = tmp_path / "tags.tsv"
    f.write_text("# name\tcategory\taliases\nBarack Obama\tcelebrity\tObama|POTUS 44\nimpressionism\tstyle\n")
    tl = TagList.load(f)
    assert [t.name for t in tl.tags] == ["Barack Obama", "impressionism"]
    assert TagMatcher(tl).match("potus 44 in impressionism") == ["Barack Obama", "impressionism"]


@pytest.mark.parametrize("text", [
    "- {name: yes, category: subject, aliases: [no, 2024, 0x1F, ~, 1.5, '3', \"x\", 2001-01-01]}\n",
    "tags:\n  - name: a\n    category: style\n",
    "",
    "- &a {name: x, category: subject}\n- *a\n",
    "- !!str 12\n",
    "- {<<: {a: 1}, b: 2}\n",
    "- name: |\n    multi\n    line\n  category: subject\n  aliases: [Zoë, 東京]\n",
])
def test_fast_yaml_reader_gives_what_safe_load_gives(tmp_path, text):
    """The tag list's YAML is built from the parser's events (no node tree): the same values as yaml.safe_load,
    implicit types, anchors, explicit tags and merge keys included."""
    import yaml

    from mrbench.curation.tags import load_yaml_data

    path = tmp_path / "t.yaml"
    path.write_text(text, encoding="utf-8")
    assert load_yaml_data(path) == yaml.safe_load(text)


def test_compiled_tag_list_is_written_once_and_read_back(tmp_path):
    from mrbench.curation.tags import _loaded, file_sha256, load_tag_list

    path = tmp_path / "tags.yaml"
    path.write_text("- {name: Zoë Saldaña, category: celebrity, aliases: [Zoe Saldana]}\n", encoding="utf-8")
    cache = tmp_path / "cache"
    first = load_tag_list(path, cache)
    compiled = cache / f"tag_list-{file_sha256(path)}.json"
    assert compiled.is_file()
    _loaded.cache_clear()
    path.write_text("- {name: Zoë Saldaña, category: celebrity, aliases: [Zoe Saldana]}\n", encoding="utf-8")
    compiled.write_text(compiled.read_text().replace("Zoe Saldana", "Z. Saldana"))  # proves the compiled form is read
    again = load_tag_list(path, cache)
    assert [t.name for t in again.tags] == [t.name for t in first.tags] and again.tags[0].aliases == ["Z. Saldana"]
