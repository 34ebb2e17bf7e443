"""check_arena_csv (the gateway's streaming upload check) agrees with read_arena_csv (what a worker reads)."""

from __future__ import annotations

import csv
from array import array

import pytest

from shared.arena_csv import CsvLimitError, DataFormatError, _check_unique_ids, check_arena_csv, read_arena_csv

HEADER = "id,prompt,response_a,response_b"
LABELS = ",winner_model_a,winner_model_b,winner_tie"
ROW = '"[""p""]","[""a""]","[""b""]"'


def write(tmp_path, text: str, name: str = "in.csv"):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    return path


def test_the_real_data_gives_the_same_rows_and_labels(data_csv):
    dataset = read_arena_csv(data_csv)
    summary = check_arena_csv(data_csv, max_rows=len(dataset), max_columns=16, max_cell_bytes=1024 * 1024)
    assert summary.rows == len(dataset) and summary.labelled is True


@pytest.mark.parametrize(
    "text",
    [
        f"{HEADER}\n1,{ROW}\n2,{ROW}\n",
        f"\ufeff{HEADER}\r\n1,{ROW}\r\n\r\n2,{ROW}\r\n",  # BOM, CRLF and a blank line
        f"{HEADER},source\n1,{ROW},x\n   \n2,{ROW},y\n",  # an all-space line: pandas skips it too
        f"{HEADER}{LABELS}\n1,{ROW},1,0,0\n2,{ROW},0.2,0.3,0.5\n",
        ' id , prompt ,response_a,response_b\n1,"[""multi"",\n""line""]","[null]","""plain string"""\n',
    ],
)
def test_valid_files_give_what_read_arena_csv_reads(tmp_path, text):
    path = write(tmp_path, text)
    dataset = read_arena_csv(path)
    summary = check_arena_csv(path, max_rows=10, max_columns=16, max_cell_bytes=4096)
    assert (summary.rows, summary.labelled) == (len(dataset), dataset.labels is not None)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("\n\n", "empty"),
        ("id,prompt,response_a\n1,[],[]\n", "missing column(s) ['response_b']"),
        (f"{HEADER}\n", "no rows"),
        (f'{HEADER}\n7,not json,"[""a""]","[""b""]"\n', "row 1 (id='7'), column 'prompt'"),
        (f'{HEADER}\n7,"[1]","[""a""]","[""b""]"\n', "turns must be strings"),
        (f'{HEADER}\n7,"{{}}","[""a""]","[""b""]"\n', "expected a JSON list"),
        (f"{HEADER}\n7,{ROW}\n8,{ROW}\n7,{ROW}\n", "duplicate id(s) '7'"),
        (f"{HEADER}\n,{ROW}\n", "column 'id' is empty"),
        (f"{HEADER},winner_model_a\n1,{ROW},1\n", "label columns are incomplete"),
        (f"{HEADER}{LABELS}\n1,{ROW},1,1,0\n", "sum to 1"),
        (f"{HEADER}{LABELS}\n1,{ROW},nan,0,1\n", "sum to 1"),
        (f"{HEADER}{LABELS}\n1,{ROW},yes,0,0\n", "is not a number"),
        (f"{HEADER}, id\n1,{ROW},2\n", "duplicate column 'id'"),
        (f"{HEADER}\n1,{ROW},{'x' * 5000}\n", ""),  # wider than the header: pandas refuses too
    ],
)
def test_refused_by_both_with_the_same_reason(tmp_path, text, message):
    path = write(tmp_path, text)
    for check in (read_arena_csv, lambda path: check_arena_csv(path, max_rows=10, max_columns=16)):
        with pytest.raises(DataFormatError) as error:
            check(path)
        assert message in str(error.value), str(error.value)
        assert len(str(error.value)) < 300


def test_stricter_csv_syntax_than_pandas_is_refused_with_the_row(tmp_path):
    """Rows narrower than the header and quotes that close mid-cell: refused, never read in a second way."""
    narrow = write(tmp_path, f"{HEADER},source\n1,{ROW}\n", "narrow.csv")
    with pytest.raises(DataFormatError, match="row 1 has 4 fields, the header has 5"):
        check_arena_csv(narrow)
    quoted = write(tmp_path, f'{HEADER}\n1,{ROW}\n2,"[""p""]"x,[],[]\n', "quoted.csv")
    with pytest.raises(DataFormatError, match="not a readable CSV at row 2"):
        check_arena_csv(quoted)


def test_caps_name_their_settings(tmp_path):
    rows = write(tmp_path, f"{HEADER}\n" + "".join(f"{index},{ROW}\n" for index in range(4)), "rows.csv")
    assert check_arena_csv(rows, max_rows=4).rows == 4
    with pytest.raises(CsvLimitError, match=r"more than 3 rows.*MAX_UPLOAD_ROWS"):
        check_arena_csv(rows, max_rows=3)
    wide = write(tmp_path, f"{HEADER},a,b,c,d,e\n1,{ROW},,,,,\n", "wide.csv")
    with pytest.raises(CsvLimitError, match=r"9 columns.*MAX_UPLOAD_COLUMNS"):
        check_arena_csv(wide, max_columns=8)


def test_cells_over_the_cap_are_refused_while_read(tmp_path):
    """A cell longer than MAX_CELL_BYTES characters stops the csv reader itself; a shorter one over the byte cap
    (multi-byte characters) is measured."""
    long_cell = write(tmp_path, f'{HEADER}\n1,"[""{"x" * 5000}""]",[],[]\n', "long.csv")
    # csv's limit is for the whole process and only ever raised: lowered here to see the reader stop.
    previous = csv.field_size_limit(4096)
    try:
        with pytest.raises(DataFormatError, match=r"row 1: the cell holds over 4,096 bytes.*\(MAX_CELL_BYTES\)"):
            check_arena_csv(long_cell, max_cell_bytes=4096)
    finally:
        csv.field_size_limit(previous)
    wide_chars = write(tmp_path, f'{HEADER}\n1,"[""{"é" * 3000}""]",[],[]\n', "wide_chars.csv")
    with pytest.raises(DataFormatError, match=r"row 1, column 'prompt': the cell holds 6,004 bytes"):
        check_arena_csv(wide_chars, max_cell_bytes=4096)


def test_a_row_longer_than_its_cells_can_be_is_refused_before_it_is_split(tmp_path):
    path = write(tmp_path, f"{HEADER}\n1,{ROW}\n2," + "," * 50_000 + "\n")
    with pytest.raises(DataFormatError, match=r"row 2 is over .* characters"):
        check_arena_csv(path, max_cell_bytes=1024)


def test_equal_id_hashes_that_are_not_equal_ids_pass(tmp_path):
    """Ids are kept as 8-byte hashes; a collision is checked against the ids themselves, read again."""
    unique = write(tmp_path, f"{HEADER}\n1,{ROW}\n2,{ROW}\n3,{ROW}\n", "unique.csv")
    # As if "1" and "2" hashed alike: the second read finds "1" once, so no duplicate.
    _check_unique_ids(unique, array("q", [hash("1"), hash("1"), hash("3")]), id_index=0, max_cell_bytes=None)
    repeated = write(tmp_path, f"{HEADER}\n1,{ROW}\n2,{ROW}\n1,{ROW}\n", "repeated.csv")
    with pytest.raises(DataFormatError, match="duplicate id"):
        _check_unique_ids(repeated, array("q", [hash("1"), hash("2"), hash("1")]), id_index=0, max_cell_bytes=None)


# One corpus both readers must answer alike: the same rows, or the same refusal. They share one implementation
# (_arena_rows); this keeps it that way if someone gives either its own parser again.
CORPUS = {
    "plain": f"{HEADER}\n1,{ROW}\n2,{ROW}\n".encode(),
    "bom-crlf": f"\ufeff{HEADER}\r\n1,{ROW}\r\n2,{ROW}\r\n".encode(),
    "cr-only": f"{HEADER}\r1,{ROW}\r2,{ROW}\r".encode(),
    "quoted-newline": f'{HEADER}\n1,"[""a\nb""]","[""a""]","[""b""]"\n'.encode(),
    "utf8-names": f"{HEADER},model_a,model_b\n1,{ROW},été,模型\n2,{ROW},b,a\n".encode(),
    "latin1-row-2": f"{HEADER},source\n1,{ROW},ok\n".encode() + f"2,{ROW},caf".encode() + b"\xe9\n",
    "latin1-header": b"id,prompt,response_a,response_b,s\xf6urce\n" + f"1,{ROW},x\n".encode(),
    "encoded-surrogate": f"{HEADER},source\n1,{ROW},x".encode() + b"\xed\xa0\x80\n",
    "cut-multibyte": f"{HEADER},source\n1,{ROW},x\n2,{ROW},".encode() + b"\xe6\xa8\n",
    "narrow-row": f"{HEADER},source\n1,{ROW}\n".encode(),
    "unclosed-quote": f'{HEADER}\n1,"[""p""]","[""a""]","[""b\n'.encode(),
    "nan-label": f"{HEADER}{LABELS}\n1,{ROW},nan,0,1\n".encode(),
    "blank-lines": f"\n{HEADER}\n\n1,{ROW}\n  \n".encode(),
    "nul-byte": f"{HEADER}\n1,{ROW}\n".encode().replace(b'""p""', b'""p\x00""'),
}


def _answer(reader, path):
    try:
        return ("rows", reader(path))
    except DataFormatError as error:
        return ("refused", str(error))


@pytest.mark.parametrize("name", sorted(CORPUS))
def test_the_upload_check_and_the_workers_reader_answer_alike(tmp_path, name):
    path = tmp_path / "in.csv"
    path.write_bytes(CORPUS[name])
    checked = _answer(lambda path: check_arena_csv(path, max_rows=10, max_columns=16, max_cell_bytes=4096).rows, path)
    read = _answer(lambda path: len(read_arena_csv(path)), path)
    assert checked == read


@pytest.mark.parametrize(
    ("name", "where"),
    [
        ("latin1-row-2", "row 2, column 5"),
        ("latin1-header", "the header, column 5"),
        ("encoded-surrogate", "row 1, column 5"),
        ("cut-multibyte", "row 2, column 5"),
    ],
)
def test_bytes_that_are_not_utf8_are_refused_naming_the_row(tmp_path, name, where):
    path = tmp_path / "in.csv"
    path.write_bytes(CORPUS[name])
    for reader in (check_arena_csv, read_arena_csv):
        with pytest.raises(DataFormatError, match="bytes that are not UTF-8") as error:
            reader(path)
        assert str(error.value).startswith(where), str(error.value)


def test_utf8_names_read_back_unchanged(tmp_path):
    path = tmp_path / "in.csv"
    path.write_bytes(CORPUS["utf8-names"])
    assert read_arena_csv(path).models_a == ["été", "b"]
