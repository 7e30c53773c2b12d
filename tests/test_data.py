"""Training-sentence draws from one pool or several."""

from __future__ import annotations

from pathlib import Path

from edgedistill.data import draw_training_sentences, load_sentences, sample


def _pool(path: Path, prefix: str, n: int) -> str:
    path.write_text("".join(f"{prefix} {i}\n" for i in range(n)))
    return str(path)


def test_one_pool_is_a_plain_sample(tmp_path: Path) -> None:
    pool = _pool(tmp_path / "a.txt", "a", 50)
    assert draw_training_sentences(pool, 20, seed=3) == sample(load_sentences(pool), 20, 3)


def test_several_pools_in_equal_shares(tmp_path: Path) -> None:
    a, b = _pool(tmp_path / "a.txt", "a", 100), _pool(tmp_path / "b.txt", "b", 100)
    drawn = draw_training_sentences([a, b], 40, seed=0)
    assert len(drawn) == len(set(drawn)) == 40
    assert sum(s.startswith("a") for s in drawn) == 20
    assert drawn == draw_training_sentences([a, b], 40, seed=0)
    assert drawn != draw_training_sentences([a, b], 40, seed=1)


def test_small_pool_taken_whole_and_others_fill_the_gap(tmp_path: Path) -> None:
    small, big = _pool(tmp_path / "s.txt", "s", 5), _pool(tmp_path / "b.txt", "b", 100)
    (tmp_path / "dup.txt").write_text("s 1\nb 1\nd 0\n")
    drawn = draw_training_sentences([big, small, str(tmp_path / "dup.txt")], 30, seed=0)
    assert len(drawn) == len(set(drawn)) == 30
    assert {f"s {i}" for i in range(5)} <= set(drawn)
    assert "d 0" in drawn
