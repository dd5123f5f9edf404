"""The streaming shard writers: the bytes of writing every row at once, whatever order and pieces rows come in."""

from __future__ import annotations

import random

import pyarrow.parquet as pq
import pytest

from mrbench.records import ImageRecord
from mrbench.runlock import TEMP_SUFFIX
from mrbench.shards import records_to_table, write_parquet_atomic, write_records_sorted, write_tables


def records(n: int, seed: int = 0) -> list[ImageRecord]:
    rng = random.Random(seed)
    out = []
    for k in range(n):
        url = f"https://example.org/{k}.jpg"
        r = ImageRecord(id=f"{rng.getrandbits(64):016x}", url=url, caption=f"caption {k}", tags=["a", "b"][: k % 3])
        if k % 7:
            r.image, r.width, r.height = rng.randbytes(rng.randint(500, 4000)), 10, 20  # a few MB per row group
            r.metadata["format"] = "jpeg"
        else:
            r.fail("http_404", "not found")
        out.append(r)
    return out


@pytest.mark.parametrize("n", [0, 5, 1024, 2600])
def test_rows_in_any_order_give_the_bytes_of_the_sorted_table(tmp_path, n):
    rows = records(n)
    write_parquet_atomic(records_to_table(sorted(rows, key=lambda r: r.id)), tmp_path / "whole.parquet")
    arrival = rows[:]
    random.Random(1).shuffle(arrival)
    if arrival:
        arrival.append(arrival.pop(0))  # a straggler: the first row arrives last
    assert write_records_sorted(iter(arrival), tmp_path / "streamed.parquet") == n
    assert (tmp_path / "streamed.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()
    assert not list(tmp_path.glob(f"*{TEMP_SUFFIX}"))  # the spool is gone


def test_tables_in_pieces_give_the_bytes_of_one_table(tmp_path):
    table = records_to_table(records(2600))
    write_parquet_atomic(table, tmp_path / "whole.parquet")
    pieces = [table.slice(k, 37) for k in range(0, table.num_rows, 37)]
    assert write_tables(iter(pieces), tmp_path / "pieces.parquet") == table.num_rows
    assert (tmp_path / "pieces.parquet").read_bytes() == (tmp_path / "whole.parquet").read_bytes()
    assert pq.ParquetFile(tmp_path / "pieces.parquet").metadata.num_row_groups == 3


def test_a_byte_budget_cuts_row_groups_early(tmp_path):
    table = records_to_table(records(2600))
    write_tables((table.slice(k, 64) for k in range(0, table.num_rows, 64)), tmp_path / "cut.parquet",
                 group_bytes=1 << 20)
    meta = pq.ParquetFile(tmp_path / "cut.parquet").metadata
    assert meta.num_row_groups > 3 and max(meta.row_group(g).num_rows for g in range(meta.num_row_groups)) < 1024
    assert pq.read_table(tmp_path / "cut.parquet").equals(table)


def test_a_failing_writer_leaves_no_file(tmp_path):
    def broken():
        yield records_to_table(records(10))
        raise RuntimeError("the download died")

    def dying():
        yield from records(100)
        raise RuntimeError("the download died")

    with pytest.raises(RuntimeError):
        write_tables(broken(), tmp_path / "x.parquet")
    with pytest.raises(RuntimeError):
        write_records_sorted(dying(), tmp_path / "y.parquet")
    assert list(tmp_path.iterdir()) == []  # no output, no temporary file, no spool
