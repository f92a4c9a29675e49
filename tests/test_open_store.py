"""``store.open_store``: one shared engine per URL and process, its schema checked once."""

from __future__ import annotations

import pytest

from indexer import store
from indexer.store import engines


@pytest.fixture
def upgrades(monkeypatch) -> list[str]:
    """Every schema check (``upgrade_store``) ``shared_engine`` runs, by URL."""
    seen: list[str] = []
    real = engines.upgrade_store

    def counting(engine):
        seen.append(str(engine.url))
        return real(engine)

    monkeypatch.setattr(engines, "upgrade_store", counting)
    store.dispose_engines()
    yield seen
    store.dispose_engines()


def test_the_schema_is_checked_once_per_url(tmp_path, upgrades):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    for _ in range(3):
        with store.open_store(url) as s:
            assert store.counts(s)["pairs"] == 0
    assert len(upgrades) == 1
    assert store.shared_engine(url) is store.shared_engine(url)


def test_a_deleted_sqlite_file_is_checked_again(tmp_path, upgrades):
    """A test (or an operator) that removes store.db gets a migrated new file, not a stale engine."""
    path = tmp_path / "store.db"
    url = f"sqlite:///{path}"
    with store.open_store(url) as s:
        store.replace_pairs(s, rows=[{"position": 0, "image_id": "a.jpg", "caption": "一只猫"}])
    store.shared_engine(url)  # the engine of the old file stays cached ...
    for leftover in tmp_path.glob("store.db*"):
        leftover.unlink()
    with store.open_store(url) as s:  # ... until its file is gone: the new file is migrated
        assert store.counts(s)["pairs"] == 0
    assert len(upgrades) == 2


def test_a_transaction_rolls_back_on_error(tmp_path, upgrades):
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with pytest.raises(RuntimeError), store.open_store(url) as s:
        store.replace_pairs(s, rows=[{"position": 0, "image_id": "a.jpg", "caption": "一只猫"}])
        raise RuntimeError("mid-way")
    with store.open_store(url) as s:
        assert store.counts(s)["pairs"] == 0


def test_only_the_newest_engines_stay_open(tmp_path, upgrades, monkeypatch):
    monkeypatch.setattr(engines, "MAX_SHARED_ENGINES", 2)
    urls = [f"sqlite:///{tmp_path / f's{i}.db'}" for i in range(3)]
    for url in urls:
        with store.open_store(url):
            pass
    assert [key[0] for key in engines._ENGINES] == urls[1:]
