"""The harness's oracle rows: run (resumable) on the tiny model and merged at k=0 only."""

from companion.eval.harness.ceiling import merge_oracle, run_oracle


def test_oracle_rows_join_the_harness_maps_at_k0_and_resume(tiny_lm, tmp_path):
    records = run_oracle(tiny_lm, trials=2, seed=0, out=tmp_path, readers=["framed", "oracle:deep-framed"], steps=2,
                         layer=2, slots=4, max_new_tokens=4)
    assert sorted((r["reader"], r["trial"]) for r in records) == [
        ("oracle:deep-framed", 0), ("oracle:deep-framed", 1), ("oracle:framed", 0), ("oracle:framed", 1)]
    ran = []
    again = run_oracle(tiny_lm, trials=2, seed=0, out=tmp_path, readers=["framed", "deep-framed"], steps=2,
                       layer=2, slots=4, max_new_tokens=4, on_record=ran.append)
    assert ran == [] and len(again) == 4  # all four read back from oracle.jsonl
    results = {"recall": {"none": {"0": {"correct": 0, "trials": 2}, "5": {"correct": 0, "trials": 2}}},
               "answer_nll": {}}
    merge_oracle(results, records)
    cell = results["recall"]["oracle:framed"]
    assert cell["0"]["trials"] == 2 and cell["5"]["trials"] == 0
    assert cell["0"]["correct"] == sum(r["correct"] for r in records if r["reader"] == "oracle:framed")
    nll = results["answer_nll"]["oracle:deep-framed"]["0"]
    want = [r["answer_nll"] / r["answer_tokens"] for r in records if r["reader"] == "oracle:deep-framed"]
    assert abs(nll["mean"] - sum(want) / 2) < 1e-9 and nll["n"] == 2
