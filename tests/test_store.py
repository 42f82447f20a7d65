"""Storage layer: codec integrity checks, CRUD, concurrency and SQLite hardening."""

from __future__ import annotations

import hashlib
import io
import os
import stat
from pathlib import Path

import pytest
import torch
from safetensors.torch import save as st_save
from sqlalchemy import func, inspect, select, text, update

from memory_store import (ChatSession, CorruptEngramError, Engram, SessionNameError, StaleSessionError, Store, Turn,
                          add_turn, create_session, decode_engram, delete_session, encode_engram, engram_rows,
                          get_session, latest_engram, list_sessions, load_engram, open_store, touch, turns,
                          validate_session_name)

SHAPE = (32, 576)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "companion.db"


@pytest.fixture
def store(db_path: Path) -> Store:
    s = open_store(f"sqlite:///{db_path}")
    yield s
    s.close()


def _engram(seed: int = 0) -> torch.Tensor:
    return torch.randn(*SHAPE, generator=torch.Generator().manual_seed(seed))


def _new_chat(store: Store, name: str = "work") -> ChatSession:
    with store.session() as db, db.begin():
        return create_session(
            db,
            name=name,
            model_name="tiny-model",
            model_fingerprint="ab" * 32,
            engram_config={"slots": 32, "dim": 576},
        )


def _turn(db, chat: ChatSession, expected: int, engram: torch.Tensor, text_: str = "hi") -> Turn:
    return add_turn(
        db,
        chat=chat,
        expected_cycle=expected,
        user_text=text_,
        reply_text=f"reply to {text_}",
        prompt_tokens=5,
        reply_tokens=7,
        transcript_tokens=12 * (expected + 1),
        gen_seconds=0.5,
        update_seconds=0.25,
        engram=engram,
        engram_config={"slots": 32, "dim": 576},
    )


def _counts(store: Store) -> tuple[int, int]:
    with store.session() as db:
        return (
            db.scalar(select(func.count()).select_from(Turn)),
            db.scalar(select(func.count()).select_from(Engram)),
        )


# --- codec -----------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_codec_roundtrip_is_bit_exact(dtype: torch.dtype) -> None:
    t = _engram().to(dtype)
    data, sha = encode_engram(t)
    assert sha == hashlib.sha256(data).hexdigest()
    out = decode_engram(data, sha256=sha, shape=SHAPE, dtype=str(dtype).removeprefix("torch."))
    assert out.dtype == dtype
    assert torch.equal(out.view(torch.uint8), t.view(torch.uint8))


def test_codec_accepts_non_contiguous_input() -> None:
    t = _engram().t()
    data, sha = encode_engram(t)
    out = decode_engram(data, sha256=sha, shape=(576, 32), dtype="float32")
    assert torch.equal(out, t)


def test_flipped_byte_is_a_checksum_mismatch() -> None:
    data, sha = encode_engram(_engram())
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0x01
    with pytest.raises(CorruptEngramError, match=r"session 'w' cycle 3: checksum mismatch"):
        decode_engram(bytes(bad), sha256=sha, shape=SHAPE, dtype="float32", where="session 'w' cycle 3")


def test_wrong_declared_shape() -> None:
    data, sha = encode_engram(_engram())
    with pytest.raises(CorruptEngramError, match="shape mismatch"):
        decode_engram(data, sha256=sha, shape=(16, 576), dtype="float32")


def test_wrong_declared_dtype() -> None:
    data, sha = encode_engram(_engram())
    with pytest.raises(CorruptEngramError, match="dtype mismatch"):
        decode_engram(data, sha256=sha, shape=SHAPE, dtype="float16")


@pytest.mark.parametrize("bad_value", [float("nan"), float("inf")])
def test_non_finite_values_rejected_even_with_valid_checksum(bad_value: float) -> None:
    t = _engram()
    t[3, 7] = bad_value
    data = st_save({"engram": t})
    sha = hashlib.sha256(data).hexdigest()
    with pytest.raises(CorruptEngramError, match="non-finite"):
        decode_engram(data, sha256=sha, shape=SHAPE, dtype="float32")


def test_garbage_and_pickle_bytes_are_unreadable_not_executed() -> None:
    buf = io.BytesIO()
    torch.save({"engram": _engram()}, buf)  # a pickle payload: must never be loaded
    for data in (b"not a tensor", buf.getvalue()):
        with pytest.raises(CorruptEngramError, match="unreadable bytes"):
            decode_engram(data, sha256=hashlib.sha256(data).hexdigest(), shape=SHAPE, dtype="float32")


def test_wrong_tensor_key_is_unreadable() -> None:
    data = st_save({"other": _engram()})
    with pytest.raises(CorruptEngramError, match="unreadable bytes"):
        decode_engram(data, sha256=hashlib.sha256(data).hexdigest(), shape=SHAPE, dtype="float32")


# --- opening the database ---------------------------------------------------


def test_open_store_creates_folder_file_and_schema(db_path: Path) -> None:
    assert not db_path.parent.exists()
    store = open_store(f"sqlite:///{db_path}")
    try:
        assert db_path.is_file()
        assert {"sessions", "turns", "engrams"} <= set(inspect(store.engine).get_table_names())
    finally:
        store.close()


def test_sqlite_file_is_owner_only_and_wal(store: Store, db_path: Path) -> None:
    assert stat.S_IMODE(os.stat(db_path).st_mode) == 0o600
    with store.session() as db:
        assert db.execute(text("PRAGMA journal_mode")).scalar() == "wal"
        assert db.execute(text("PRAGMA foreign_keys")).scalar() == 1
        assert db.execute(text("PRAGMA busy_timeout")).scalar() >= 5000
    _new_chat(store)  # a write creates the -wal file; it must not be wider than the db
    wal = db_path.with_name(db_path.name + "-wal")
    if wal.exists():
        assert stat.S_IMODE(os.stat(wal).st_mode) == 0o600


def test_reopen_keeps_data(db_path: Path) -> None:
    url = f"sqlite:///{db_path}"
    s1 = open_store(url)
    _new_chat(s1)
    s1.close()
    s2 = open_store(url)
    try:
        with s2.session() as db:
            assert get_session(db, name="work") is not None
    finally:
        s2.close()


# --- session names ----------------------------------------------------------


@pytest.mark.parametrize("name", ["work", "a.b-c_1", "X", "9lives", "a" * 64])
def test_good_session_names(name: str) -> None:
    assert validate_session_name(name) == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "empty"),
        ("a/b", "'/'"),
        ("..", "start with a letter or digit"),
        ("a..b", r"'\.\.'"),
        ("x" * 65, "too long"),
        ("'q'", '"\'"'),
        ("a b", "' '"),
        ("-rf", "start with a letter or digit"),
        ("é", "'é'"),
        ("a\nb", r"'\\n'"),
    ],
)
def test_bad_session_names(name: str, reason: str) -> None:
    with pytest.raises(SessionNameError, match=reason) as info:
        validate_session_name(name)
    assert isinstance(info.value, ValueError)
    assert "\n" not in str(info.value)


def test_create_session_validates_name(store: Store) -> None:
    with pytest.raises(SessionNameError):
        _new_chat(store, name="../etc")
    with store.session() as db:
        assert db.scalar(select(func.count()).select_from(ChatSession)) == 0


# --- CRUD -------------------------------------------------------------------


def test_create_add_turn_latest_and_list(store: Store) -> None:
    chat = _new_chat(store)
    assert chat.cycle == 0
    assert chat.created_at.tzinfo is not None
    e1, e2 = _engram(1), _engram(2)
    with store.session() as db, db.begin():
        _turn(db, chat, 0, e1, "first")
    assert chat.cycle == 1
    with store.session() as db, db.begin():
        _turn(db, chat, chat.cycle, e2, "second")
    assert chat.cycle == 2

    with store.session() as db:
        fresh = get_session(db, name="work")
        assert fresh is not None and fresh.cycle == 2
        assert fresh.last_used_at.tzinfo is not None
        assert fresh.last_used_at >= fresh.created_at
        got = latest_engram(db, chat=fresh)
        assert got is not None
        tensor, row = got
        assert row.cycle == 2 and row.shape == "32,576" and row.dtype == "float32"
        assert torch.equal(tensor, e2)
        assert row.norm == pytest.approx(float(e2.norm(dim=-1).mean()), rel=1e-5)
        ts = turns(db, chat=fresh)
        assert [t.index for t in ts] == [1, 2]
        assert [t.user_text for t in ts] == ["first", "second"]
        assert ts[0].transcript_tokens == 12 and ts[0].engram.cycle == 1
        rows = engram_rows(db, chat=fresh)
        assert [r.cycle for r in rows] == [1, 2]
        assert torch.equal(load_engram(rows[0]), e1)
        assert [t.index for t in fresh.turns] == [1, 2]

    _new_chat(store, name="other")  # newest, so listed first
    with store.session() as db:
        summaries = list_sessions(db)
    assert [s.name for s in summaries] == ["other", "work"]
    assert summaries[1].turns == 2 and summaries[1].cycle == 2
    assert summaries[1].model == "tiny-model"
    assert summaries[1].last_used.endswith("+00:00")


def test_latest_engram_none_for_new_session(store: Store) -> None:
    chat = _new_chat(store)
    with store.session() as db:
        assert latest_engram(db, chat=chat) is None
        assert turns(db, chat=chat) == []


def test_engram_config_stored_as_sorted_json(store: Store) -> None:
    with store.session() as db, db.begin():
        chat = create_session(
            db, name="cfg", model_name="m", model_fingerprint="0" * 64, engram_config={"b": 1, "a": 2}
        )
    assert chat.engram_config == '{"a": 2, "b": 1}'


def test_duplicate_session_name_is_a_store_error(store: Store) -> None:
    _new_chat(store)
    with pytest.raises(StaleSessionError, match="already exists"):
        _new_chat(store)
    with store.session() as db:
        assert db.scalar(select(func.count()).select_from(ChatSession)) == 1


def test_stale_expected_cycle_raises_and_leaves_nothing(store: Store) -> None:
    chat = _new_chat(store)
    with store.session() as db, db.begin():
        _turn(db, chat, 0, _engram(1))
    with pytest.raises(StaleSessionError, match="work"):
        with store.session() as db, db.begin():
            _turn(db, chat, 0, _engram(2))
    assert _counts(store) == (1, 1)
    with store.session() as db:
        assert get_session(db, name="work").cycle == 1


def test_two_processes_racing_on_one_session(db_path: Path) -> None:
    url = f"sqlite:///{db_path}"
    a, b = open_store(url), open_store(url)
    try:
        _new_chat(a)
        with a.session() as db:
            chat_a = get_session(db, name="work")
        with b.session() as db:
            chat_b = get_session(db, name="work")
        with a.session() as db, db.begin():
            _turn(db, chat_a, chat_a.cycle, _engram(1))
        with pytest.raises(StaleSessionError):
            with b.session() as db, db.begin():
                _turn(db, chat_b, chat_b.cycle, _engram(2))
        assert _counts(a) == (1, 1)
        with a.session() as db:
            tensor, _ = latest_engram(db, chat=get_session(db, name="work"))
        assert torch.equal(tensor, _engram(1))
    finally:
        a.close()
        b.close()


def test_rolled_back_turn_leaves_no_trace(store: Store) -> None:
    chat = _new_chat(store)
    with pytest.raises(RuntimeError, match="boom"):
        with store.session() as db, db.begin():
            _turn(db, chat, 0, _engram(1))
            raise RuntimeError("boom")
    assert _counts(store) == (0, 0)
    with store.session() as db:
        assert get_session(db, name="work").cycle == 0


def test_non_finite_engram_refused_before_writing(store: Store) -> None:
    chat = _new_chat(store)
    bad = _engram()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        with store.session() as db, db.begin():
            _turn(db, chat, 0, bad)
    assert _counts(store) == (0, 0)
    with store.session() as db:
        assert get_session(db, name="work").cycle == 0


def test_corrupt_row_names_session_and_cycle(store: Store) -> None:
    chat = _new_chat(store)
    with store.session() as db, db.begin():
        _turn(db, chat, 0, _engram(1))
    with store.session() as db, db.begin():
        row = db.scalars(select(Engram)).one()
        data = bytearray(row.data)
        data[-1] ^= 0xFF
        db.execute(update(Engram).where(Engram.id == row.id).values(data=bytes(data)))
    with store.session() as db:
        with pytest.raises(CorruptEngramError, match=r"'work'.*cycle 1.*checksum mismatch"):
            latest_engram(db, chat=chat)


def test_list_sessions_survives_corrupt_engram_bytes(store: Store) -> None:
    chat = _new_chat(store)
    with store.session() as db, db.begin():
        _turn(db, chat, 0, _engram(1))
    with store.session() as db, db.begin():
        db.execute(update(Engram).values(data=b"\x00garbage", dtype="???", shape="x,y"))
    with store.session() as db:
        summaries = list_sessions(db)
        assert [(s.name, s.turns, s.cycle) for s in summaries] == [("work", 1, 1)]
        rows = engram_rows(db, chat=chat)
        assert len(rows) == 1
        with pytest.raises(CorruptEngramError):
            load_engram(rows[0], where="session 'work' cycle 1")


def test_delete_session_cascades(store: Store) -> None:
    keep = _new_chat(store, name="keep")
    gone = _new_chat(store, name="gone")
    with store.session() as db, db.begin():
        _turn(db, keep, 0, _engram(1))
    with store.session() as db, db.begin():
        _turn(db, gone, 0, _engram(2))
        _turn(db, gone, 1, _engram(3))
    assert _counts(store) == (3, 3)
    with store.session() as db, db.begin():
        assert delete_session(db, name="gone") is True
    with store.session() as db, db.begin():
        assert delete_session(db, name="gone") is False
    assert _counts(store) == (1, 1)
    with store.session() as db:
        assert [s.name for s in list_sessions(db)] == ["keep"]


def test_database_cascade_also_enforced(store: Store) -> None:
    # Rows deleted by hand (or by another tool) must not leave orphans either.
    chat = _new_chat(store)
    with store.session() as db, db.begin():
        _turn(db, chat, 0, _engram(1))
    with store.session() as db, db.begin():
        db.execute(text("DELETE FROM sessions"))
    assert _counts(store) == (0, 0)


def test_touch_updates_last_used(store: Store) -> None:
    chat = _new_chat(store)
    before = chat.last_used_at
    with store.session() as db, db.begin():
        touch(db, chat=chat)
    assert chat.last_used_at > before
    with store.session() as db:
        assert get_session(db, name="work").last_used_at == chat.last_used_at
