"""A streaming prune of a checkpoint whose config the view reads imports no transformers code.

The config is read and written through `architectures.config_view` and the Hub layout's key renamings
come from pinned data (`checkpoint.conversions`), so transformers (its config classes, conversion mapping
and loading machinery: over a second of a prune's fixed cost) is never imported. Each case prunes in a
fresh interpreter and reports what it imported; nothing is timed.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from conftest import build, tiny_nemotron_config
from hub_layouts import NEMOTRON_HUB, hub_checkpoint

from hybridprune.importance.calibrate import calibrate

PLAN = "hidden_size=32,ffn_hidden_size=40,mamba_num_heads=6,num_attention_heads=4,num_layers=5"
RUN = """
import json, sys
from hybridprune.importance.scores import Scores
from hybridprune.pruning.streaming import stream_prune
out = stream_prune(sys.argv[1], Scores.load(sys.argv[2]), sys.argv[3], sys.argv[4])
print("@@" + json.dumps({"written": sorted(p.name for p in out.iterdir()),
                         "imported": sorted(m for m in sys.modules if m.split(".")[0] == "transformers")}))
"""


@pytest.mark.parametrize("layout", ["saved", "hub"])
def test_a_streaming_prune_imports_no_transformers(layout, tmp_path, tokens):
    src = tmp_path / "source"
    if layout == "saved":
        model = build(tiny_nemotron_config())
        model.save_pretrained(src, max_shard_size="20KB")
    else:  # the Hub's layout: backbone.* keys renamed on load, a pattern string, remote-code field names
        model = hub_checkpoint(src, dict(NEMOTRON_HUB))
    calibrate(model, tokens, batch_size=2, progress=False, depth_samples=2).save(tmp_path / "scores")
    proc = subprocess.run([sys.executable, "-c", RUN, str(src), str(tmp_path / "scores"), PLAN, str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, check=False)
    report = proc.stdout.rpartition("@@")[2]
    assert proc.returncode == 0 and report, proc.stderr
    result = json.loads(report)
    assert "config.json" in result["written"]
    assert result["imported"] == []


CLI = """
import atexit, json, sys
atexit.register(lambda: print("@@" + json.dumps(sorted(m for m in ("torch", "transformers") if m in sys.modules))))
sys.argv = ["hybridprune", *sys.argv[1:]]
from hybridprune.cli import main
main()
"""


def test_the_prune_command_streams_without_torch_or_transformers(tmp_path, tokens):
    """`hybridprune prune` (streaming, the default) reads the config through the view, writes in the
    stored dtype and checks shapes from the layouts: neither torch (over a second to import) nor
    transformers is imported, from the first flag parsed to the exit."""
    src = tmp_path / "source"
    model = build(tiny_nemotron_config())
    model.save_pretrained(src)
    calibrate(model, tokens, batch_size=2, progress=False, depth_samples=2).save(tmp_path / "scores")
    proc = subprocess.run([sys.executable, "-c", CLI, "prune", "--model", str(src), "--scores", str(tmp_path / "scores"),
                           "--plan", PLAN, "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert (tmp_path / "out" / "config.json").is_file()
    assert json.loads(proc.stdout.rpartition("@@")[2]) == []
