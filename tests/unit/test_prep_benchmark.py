"""benchmarks/prep_scale.py end to end on a tiny generated world: every engine runs in its own process, the
out-of-core results are checked equal to the in-memory ones, SID codes streamed equal those read at once, and the
JSONs and a table within 100 columns come out."""
from __future__ import annotations

import json

from genrec.data.synth.scale import write_scale_world
from genrec.data.synth.scale_config import ScaleConfig

TINY = ScaleConfig(seed=2, products=1500, retailers=3, events=12_000, departments=3, aisles_per_department=2,
                   leaves_per_aisle=4, block=256)


def test_prep_benchmark_engines_agree_on_a_tiny_world(tmp_path, capsys, load_script):
    world = tmp_path / "world"
    write_scale_world(TINY, world, show_progress=False)
    bench = load_script("benchmarks/prep_scale.py")
    out = tmp_path / "out"
    common = ["--out", str(out), "--scratch", str(tmp_path / "scratch"), "--threads", "1"]
    bench.main(["--data", str(world), "--catalog", str(world), "--sid", "--sid-sample", "1200", "--sid-batch", "500",
                *common])
    bench.main(["--data", str(world), "--engines", "collab-memory,collab-duckdb", *common])
    printed = capsys.readouterr().out
    doc = json.loads((out / "prep-12000.json").read_text())
    assert set(doc["engines"]) == {"memory", "arrow", "duckdb"}
    for engine in ("arrow", "duckdb"):
        check = doc["checks"][engine]
        assert check["sequences_equal"] and check["pairs_equal"] and check["counts_equal"]
        assert check["sample_users_equal"] == check["sample_users"] > 0
    for engine in doc["engines"].values():
        assert all(s["wall_s"] >= 0 and s["peak_rss_mb"] > 0 for s in engine["stages"])
    assert json.loads((out / "prep-sid.json").read_text())["checks"]["codes_equal"]
    collab = json.loads((out / "prep-12000-collab-memory-collab-duckdb.json").read_text())
    assert collab["checks"]["collab-duckdb"]["counts_equal"]
    assert max(len(line) for line in printed.splitlines() if not line.startswith(" ")) <= 100
    table = bench.table(sorted(out.glob("prep-*.json")))
    assert max(len(line) for line in table.splitlines()) <= 100 and "NO" not in table.split()
