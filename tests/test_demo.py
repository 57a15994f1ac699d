"""A shortened demo on the shipped teacher: every stage runs, the report files appear, and the HTML
report renders in a real headless browser with every image loaded."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
from rich.console import Console
from typer.testing import CliRunner

from hybridprune.cli import app
from hybridprune.recipe.demo import DemoSettings, run_demo


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    settings = DemoSettings(out=str(root / "demo"), seq_len=32, calib_samples=8, depth_samples=2,
                            val_samples=8, search_top_k=1, search_max_candidates=3, search_kd_steps=1,
                            kd_steps=2, batch=4, speed_batch_sizes=(1, 2), speed_contexts=(16,),
                            speed_new_tokens=2, speed_repeats=1, task_limit=3)
    results = run_demo(settings, console=Console(quiet=True))
    return root, results


@pytest.mark.slow
def test_short_demo_writes_the_report(demo):
    tmp_path, results = demo
    out = tmp_path / "demo"
    for name in ("report.md", "report.html", "results.json", "01-calibrate/layer_importance.png",
                 "report_figures/search_0.png", "report_figures/kd_loss_0.png",
                 "report_figures/importance_heatmap_0.png", "report_figures/speed_vs_loss_0.png",
                 "04-distill/student/config.json", "04-distill/student/model.safetensors",
                 "04-distill/student/tokenizer.json", "04-distill/student/hybridprune.json",
                 "04-distill/student/README.md", "01-calibrate/scores/scores.safetensors",
                 "02-search/search/candidates.jsonl", "recipe.yaml"):
        assert (out / name).is_file(), name
    saved = json.loads((out / "results.json").read_text())
    assert saved["pruned"]["non_embedding_params"] <= 0.5 * saved["teacher"]["non_embedding_params"]
    assert results["distilled"]["params"] == results["pruned"]["params"]
    evaluation = saved["evaluation"]
    assert [m["name"] for m in evaluation["models"]] == ["teacher", "pruned", "distilled"]
    assert len(evaluation["speed"]["cells"]) == 3 * 2
    md = (out / "report.md").read_text()
    assert "| distilled |" in md and "Generation speed" in md and "decode tok/s" in md
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        assert "lm-eval" in evaluation["tasks_skipped"]
    else:
        assert "next_line_choice (acc)" in md and "corpus_bpb (bits_per_byte)" in md
    assert not list(tmp_path.glob(".demo.tmp-*"))


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


MARK_IMAGES = """<script>
window.addEventListener("load", () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute("data-images", imgs.length);
  document.body.setAttribute("data-loaded", ok);
});
</script>"""


@pytest.mark.slow
def test_report_renders_in_headless_chromium_with_every_image_loaded(demo, tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("Debian chromium is not installed (CI installs it: apt-get install -y chromium)")
    page = demo[0] / "demo" / "report.html"
    probe = tmp_path / "probe.html"  # the report plus a script that marks the loaded images
    probe.write_text(page.read_text().replace("</body>", MARK_IMAGES + "\n</body>"))
    flags = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--no-first-run", f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000"]
    dom = subprocess.run([*flags, "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    import re

    m = re.search(r'data-images="(\d+)" data-loaded="(\d+)"', dom.stdout)
    assert m, "the page's load handler did not run: " + dom.stdout[:500]
    images, loaded = int(m.group(1)), int(m.group(2))
    assert images >= 5 and loaded == images, f"{loaded} of {images} images loaded"
    shot = tmp_path / "report.png"
    run = subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and shot.is_file(), run.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] >= 2000 and pixels.std() > 0.05  # something was drawn, not a blank page


def test_report_command_rebuilds_the_demo_report(demo):
    out = demo[0] / "demo"
    result = CliRunner().invoke(app, ["report", str(out), "--title", "again"])
    assert result.exit_code == 0, result.output
    assert (out / "report.md").read_text().splitlines()[2] == "# again"


def test_the_demo_defaults_are_the_shipped_recipe():
    """`hybridprune demo` is `run recipes/demo.yaml`: its default flags change nothing in the recipe."""
    import yaml

    from hybridprune.recipe.demo import demo_recipe, demo_recipe_path

    assert demo_recipe(DemoSettings()) == yaml.safe_load(demo_recipe_path().read_text())


def test_demo_refuses_an_existing_output_and_bad_targets(tmp_path):
    runner = CliRunner()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "file").write_text("x")
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "taken")])
    assert result.exit_code == 2 and "already exists" in result.output
    result = runner.invoke(app, ["demo", "--target-params", "1.5", "--out", str(tmp_path / "new")])
    assert result.exit_code == 2 and "between 0 and 1" in result.output
    assert not (tmp_path / "new").exists()


@pytest.mark.slow
def test_demo_runs_end_to_end_on_the_shipped_gdn_teacher_by_name(tmp_path, monkeypatch):
    """`hybridprune demo --teacher tiny-qwen3-5`: the Qwen3.5 (Gated DeltaNet) teacher found by name,
    searched, pruned, distilled and exported; the student reloads with plain transformers. The sizes
    the CLI does not expose are shrunk here so the run takes seconds."""
    import hybridprune.recipe.demo as pipeline

    small = dict(batch=4, speed_batch_sizes=(1,), speed_repeats=1, tasks=())
    real = pipeline.DemoSettings
    monkeypatch.setattr(pipeline, "DemoSettings", lambda **kw: real(**{**small, **kw}))
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--teacher", "tiny-qwen3-5", "--out", str(out), "--kd-steps", "2",
                                      "--search-kd-steps", "1", "--top-k", "1", "--calib-samples", "8",
                                      "--seq-len", "32", "--val-samples", "8"])
    assert result.exit_code == 0, result.output
    saved = json.loads((out / "results.json").read_text())
    from hybridprune.data import teacher_path

    assert saved["recipe"]["model"] == str(teacher_path("tiny-qwen3-5"))  # the name, resolved by `run`
    assert saved["pruned"]["non_embedding_params"] <= 0.5 * saved["teacher"]["non_embedding_params"]
    assert "tiny-qwen3-5" in (out / "report.md").read_text()
    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(str(out / "04-distill" / "student"))
    assert type(student).__name__ == "Qwen3_5ForCausalLM" and student.config.model_type == "qwen3_5_text"
    assert sum(p.numel() for p in student.parameters()) == saved["distilled"]["params"]


def test_the_demo_flags_reach_every_stage(tmp_path, monkeypatch):
    """`hybridprune demo --seq-len 32 --calib-samples 8 --top-k 1 --val-samples 8`: every stage of the
    recipe it runs is that small (depth samples, candidates searched, evaluation and its tasks, the
    generation speed's context and tokens), not only the stages the flags are named after."""
    import yaml

    import hybridprune.recipe as recipe

    ran = {}

    def capture(text, name, out, **kw):
        ran["recipe"] = yaml.safe_load(text)
        out.mkdir(parents=True)
        (out / "results.json").write_text("{}")

    monkeypatch.setattr(recipe, "run_recipe_text", capture)
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--teacher", "tiny-qwen3-5", "--out", str(out), "--kd-steps", "2",
                                      "--search-kd-steps", "1", "--top-k", "1", "--calib-samples", "8",
                                      "--seq-len", "32", "--val-samples", "8"])
    assert result.exit_code == 0, result.output
    doc = ran["recipe"]
    assert doc["calibrate"] == {"samples": 8, "seq_len": 32, "batch_size": 8, "depth_samples": 1}
    search = doc["search"]
    assert (search["top_k"], search["max_candidates"], search["kd_steps"]) == (1, 4, 1)
    assert (search["seq_len"], search["eval_seq_len"], search["eval_samples"]) == (32, 32, 8)
    assert (doc["distill"]["steps"], doc["distill"]["seq_len"], doc["distill"]["val_samples"]) == (2, 32, 8)
    ev = doc["eval"]
    assert (ev["samples"], ev["seq_len"], ev["context"], ev["new_tokens"], ev["task_limit"]) == (8, 32, [32], 4, 17)
