"""The sizing-accuracy picture (bench/sizing_accuracy.py --picture): one mark per row, the
same bytes twice."""

from pathlib import Path

from llmdeploy.pictures import accuracy_picture

POINTS = {
    "TPOT": [("fit", 10.0, 11.0), ("held-out", 20.0, 18.0), ("outside", 3.0, 7.5)],
    "TTFT": [("fit", 100.0, 90.0)],
    "KV GiB": [],
}


def test_each_row_is_a_mark_and_the_bytes_repeat(tmp_path: Path) -> None:
    first, second = tmp_path / "a.svg", tmp_path / "b.svg"
    for path in (first, second):
        accuracy_picture(POINTS, "accuracy", path)
    svg = first.read_bytes()
    assert svg == second.read_bytes()
    assert svg.count(b"<use ") >= 4  # a scatter mark per point (legend marks come on top)
    # The legend counts each set's rows (matplotlib keeps a drawn text's string as a comment).
    assert all(f"{name} (1)".encode() in svg for name in ("fit", "held-out", "outside"))
