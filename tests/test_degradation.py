"""A tiny-model smoke run of the whole degradation harness, its outputs and its resume."""

from __future__ import annotations

import json

import pytest

import companion.harness.degradation as D
from companion import EngramConfig, Engine
from companion.harness import DistractorPool, HarnessError, RunSettings, run
from companion.modes import MODE_NAMES


@pytest.fixture()
def engine(tiny_lm):
    return Engine(tiny_lm, EngramConfig(layer=2, slots=4))


@pytest.fixture()
def pool():
    return DistractorPool.load("generated")


@pytest.fixture()
def counted_ask(monkeypatch):
    calls = []
    real = D.ask

    def ask(*args, **kwargs):
        calls.append(args[1].name)
        return real(*args, **kwargs)

    monkeypatch.setattr(D, "ask", ask)
    return calls


def test_smoke_run_writes_everything_and_resumes(engine, pool, tmp_path, counted_ask):
    settings = RunSettings(seed=3, cycles=[0, 1, 3], max_new_tokens=4)
    res = run(engine, settings, 2, tmp_path, pool=pool, progress=False, command="test")
    for name in ("results.json", "recall.md", "recall.png", "diagnostics.png", "trials.jsonl", "run.json"):
        assert (tmp_path / name).is_file() and (tmp_path / name).stat().st_size > 0, name
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved["recall"]) == set(MODE_NAMES)
    for mode in MODE_NAMES:
        assert set(saved["recall"][mode]) == {"0", "1", "3"}
        for cell in saved["recall"][mode].values():
            assert cell["trials"] == 2 and 0 <= cell["correct"] <= 2
    for key in ("model", "fingerprint", "recipe", "seed", "code_version", "command", "profile"):
        assert key in saved
    assert saved["recipe"]["layer"] == 2 and saved["seed"] == 3
    trial = saved["per_trial"][0]
    assert [p["k"] for p in trial["probes"]] == [0, 1, 3]
    assert all("reply" in a and "correct" in a for p in trial["probes"] for a in p["answers"].values())
    diag = trial["probes"][0]["diagnostics"]
    assert diag["cos_first"] == pytest.approx(1.0, abs=1e-5)  # k=0: the turn-1 engram itself
    assert 0 < diag["pos0_share_turn"] <= diag["pos0_share_slot0"] <= 1
    assert 1 <= diag["effective_rank"] <= 4
    table = (tmp_path / "recall.md").read_text()
    assert "| seed-engram |" in table and "k=3" in table
    assert counted_ask, "the modes were asked through companion.modes.ask"
    # 'none' has the same prompt at every k, so it is asked once per trial and reused.
    assert counted_ask.count("none") == 2

    counted_ask.clear()
    again = run(engine, settings, 2, tmp_path, pool=pool, progress=False)
    assert counted_ask == []  # nothing recomputed
    assert again["recall"] == res["recall"]
    assert len((tmp_path / "trials.jsonl").read_text().splitlines()) == 2

    run(engine, settings, 3, tmp_path, pool=pool, progress=False)  # one more trial, only it runs
    assert counted_ask and len((tmp_path / "trials.jsonl").read_text().splitlines()) == 3


def test_refuses_an_out_dir_with_other_settings(engine, pool, tmp_path):
    run(engine, RunSettings(seed=1, cycles=[0], modes=["none"], max_new_tokens=2), 1, tmp_path, pool=pool,
        progress=False)
    with pytest.raises(HarnessError, match="different settings"):
        run(engine, RunSettings(seed=2, cycles=[0], modes=["none"], max_new_tokens=2), 1, tmp_path, pool=pool,
            progress=False)


def test_a_torn_last_line_is_run_again(engine, pool, tmp_path):
    settings = RunSettings(seed=1, cycles=[0, 2], modes=["none", "transcript"], max_new_tokens=2)
    run(engine, settings, 1, tmp_path, pool=pool, progress=False)
    log = tmp_path / "trials.jsonl"
    log.write_text(log.read_text() + '{"trial": 1, "probes": [')
    res = run(engine, settings, 2, tmp_path, pool=pool, progress=False)
    assert res["trials"] == 2 and res["recall"]["none"]["0"]["trials"] == 2


def test_same_seed_same_answers(engine, pool, tmp_path):
    settings = RunSettings(seed=5, cycles=[0, 1], modes=["seed-engram", "recent"], max_new_tokens=3)
    a = run(engine, settings, 1, tmp_path / "a", pool=pool, progress=False)
    b = run(engine, settings, 1, tmp_path / "b", pool=pool, progress=False)
    def strip(trials):  # wall-clock seconds differ between runs, nothing else may
        return json.loads(json.dumps(trials).replace('"seconds"', '"_s"'), object_hook=lambda d: {
            k: v for k, v in d.items() if k != "_s"})
    assert strip(a["per_trial"]) == strip(b["per_trial"])


def test_unknown_mode_is_refused():
    with pytest.raises(HarnessError, match="unknown mode"):
        RunSettings(modes=["telepathy"])


def test_locomo_distractors_are_speaker_pairs(tmp_path):
    conv = {"speaker_a": "A", "speaker_b": "B",
            "session_1": [{"speaker": "A", "text": "hi"}, {"speaker": "B", "text": "hello"},
                          {"speaker": "A", "text": "x"}, {"speaker": "A", "text": "how are you"},
                          {"speaker": "B", "text": "fine"}],
            "session_1_date_time": "1 May"}
    (tmp_path / "c.json").write_text(json.dumps(conv))
    p = DistractorPool.load(tmp_path)
    assert p.conversations == [[("hi", "hello"), ("how are you", "fine")]]
    with pytest.raises(FileNotFoundError):
        DistractorPool.load(tmp_path / "missing")


def test_lockstep_batch_gives_the_one_at_a_time_records(engine, pool, tmp_path):
    settings = RunSettings(seed=7, cycles=[0, 2], max_new_tokens=4)
    one = run(engine, settings, 3, tmp_path / "one", pool=pool, progress=False)
    many = run(engine, settings, 3, tmp_path / "many", pool=pool, progress=False, batch=3)
    for a, b in zip(one["per_trial"], many["per_trial"]):
        assert a["trial"] == b["trial"] and a["fact"] == b["fact"]
        for pa, pb in zip(a["probes"], b["probes"]):
            assert pa["k"] == pb["k"]
            assert {m: x["reply"] for m, x in pa["answers"].items()} == {m: x["reply"] for m, x in pb["answers"].items()}
            assert {m: x["prompt_tokens"] for m, x in pa["answers"].items()} == \
                   {m: x["prompt_tokens"] for m, x in pb["answers"].items()}
            for name, v in pa["diagnostics"].items():
                assert pb["diagnostics"][name] == pytest.approx(v, rel=1e-3, abs=1e-4), name
