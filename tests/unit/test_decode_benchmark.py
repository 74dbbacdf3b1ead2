"""benchmarks/decode.py on a trained run folder (``--run``): the decoder and index load from where
``genrec train`` writes them, and our search agrees with generate on the run's own trie."""
from __future__ import annotations


def test_decode_benchmark_runs_on_a_trained_run(tiny_run, capsys, load_script):
    root, _ = tiny_run
    bench = load_script("benchmarks/decode.py")
    argv = ["--run", str(root / "run"), "--history", "4", "--queries", "6", "--hf-queries", "4", "--batch", "3",
            "--beam", "4", "--k", "3", "--repeats", "1"]
    got = bench.run(argv)
    out = capsys.readouterr().out
    assert "speed-up over generate" in out
    # the same top-3 lists as generate on every query, log-probs equal to float32 noise; the shared-prompt
    # tree changes nothing
    assert got["identical"] == 1.0 and got["not_worse"] == 1.0 and got["gap"] < 1e-4, got
    assert got["tree_identical"] == 1.0, got
