"""Quality against compute: snapshots kept by the one training loop, scored like the final model."""

import csv
import json

import numpy as np
import pytest
import torch

from conftest import REPO
from glann.methods.training import TrainContext
from glann.pipeline.config import fill_defaults, load_schema
from glann.evaluation.scoring import evaluate, real_stats
from glann.evaluation.evaluator import train_evaluator
from glann.methods.gans import train_gan
from glann.methods.glo import train_glo
from glann.methods.imle import train_imle
from glann.methods.sampling import Draw, Sampler, sample
from glann.evaluation.snapshots import score_snapshots
from glann.evaluation.summary import collect_snapshots, write_compute_curves
from glann.methods.training import snapshot_epochs
from glann.methods.vae import train_vae
from glann.evaluation.context import Reference as Ref, Scoring as How

SCHEMA = load_schema(REPO / "workflow/schemas/config.schema.yaml")
CFG = fill_defaults({"datasets": ["digits"], "methods": ["glann"], "seeds": [0]}, SCHEMA)
CPU = torch.device("cpu")


def test_snapshot_epochs_are_evenly_spaced_and_end_at_the_final_epoch():
    assert snapshot_epochs(10, 5) == [2, 4, 6, 8, 10]
    assert snapshot_epochs(50, 5) == [10, 20, 30, 40, 50]
    assert snapshot_epochs(3, 5) == [1, 2, 3]  # more snapshots than epochs: every epoch
    assert snapshot_epochs(7, 0) == [] and snapshot_epochs(7, 1) == [7]
    for epochs in range(1, 40):
        for count in range(1, 8):
            marks = snapshot_epochs(epochs, count)
            assert marks[-1] == epochs and len(marks) == min(count, epochs), (epochs, count)
            assert all(1 <= m <= epochs for m in marks)


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_snapshot_is_the_model_of_that_epoch_bit_for_bit(digits_small_dir, tmp_path):
    """Snapshot 1 of a 2-epoch run == the final model of a 1-epoch run with the same seed;
    the last snapshot == the final model; compute grows from one to the next."""
    cfg = {**CFG["vae"], "epochs": 2}
    full = train_vae(digits_small_dir, cfg, TrainContext(tmp_path / "a.pt", 0, CPU, snapshots=2, snapshot_path=tmp_path / "s.pt"))
    short = train_vae(digits_small_dir, {**cfg, "epochs": 1}, TrainContext(tmp_path / "b.pt", 0, CPU))
    snaps = torch.load(tmp_path / "s.pt", weights_only=False)
    assert [s["epoch"] for s in snaps["snapshots"]] == [1, 2]
    assert _same_state(snaps["snapshots"][0]["generator"], short["generator"])
    assert _same_state(snaps["snapshots"][1]["generator"], full["generator"])
    assert not _same_state(snaps["snapshots"][0]["generator"], full["generator"])
    s0, s1 = snaps["snapshots"]
    assert 0 < s0["train_seconds"] < s1["train_seconds"] == pytest.approx(full["train_seconds"])
    assert s1["images_processed"] == 2 * s0["images_processed"] == full["images_processed"]


def test_snapshots_do_not_change_training(scored, tmp_path):
    """IMLE's final() draws noise for its BatchNorm recalibration: taking snapshots must not
    shift the RNG or the BN statistics, so the model is the same with snapshots on and off."""
    cfg = {**CFG["imle"], "epochs": 3}
    on = train_imle(scored / "glo.pt", cfg, TrainContext(tmp_path / "on.pt", 0, CPU, snapshots=3, snapshot_path=tmp_path / "s.pt"))
    off = train_imle(scored / "glo.pt", cfg, TrainContext(tmp_path / "off.pt", 0, CPU))
    assert _same_state(on["mapping"], off["mapping"])
    assert _same_state(torch.load(tmp_path / "s.pt", weights_only=False)["snapshots"][-1]["mapping"], off["mapping"])


def test_snapshots_off_still_writes_an_empty_file(digits_small_dir, tmp_path):
    train_gan("lsgan", digits_small_dir, {**CFG["lsgan"], "epochs": 1}, TrainContext(tmp_path / "m.pt", 0, CPU, snapshots=0, snapshot_path=tmp_path / "s.pt"))
    assert torch.load(tmp_path / "s.pt", weights_only=False)["snapshots"] == []


def test_a_diverged_gan_keeps_only_the_snapshots_before_it(digits_small_dir, tmp_path):
    train_gan("nsgan", digits_small_dir, {**CFG["nsgan"], "epochs": 3}, TrainContext(tmp_path / "m.pt", 0, CPU, fault={"nan_at_epoch": 3}, snapshots=3, snapshot_path=tmp_path / "s.pt"))
    snaps = torch.load(tmp_path / "s.pt", weights_only=False)
    assert snaps["diverged"] and snaps["diverged_epoch"] == 3
    assert [s["epoch"] for s in snaps["snapshots"]] == [1, 2]


@pytest.fixture(scope="module")
def scored(digits_dir, tmp_path_factory):
    """GLO (2 snapshots) -> IMLE (2 snapshots), the evaluator and real stats on real digits."""
    d = tmp_path_factory.mktemp("snap")
    train_glo(digits_dir, {**CFG["glo"], "loss": "l1", "epochs": 2}, TrainContext(d / "glo.pt", 0, CPU, snapshots=2, snapshot_path=d / "glo_snapshots.pt"))
    train_imle(d / "glo.pt", {**CFG["imle"], "epochs": 2}, TrainContext(d / "imle.pt", 0, CPU, snapshots=2, snapshot_path=d / "imle_snapshots.pt"))
    train_evaluator(digits_dir, {**CFG["evaluator"], "epochs": 1}, TrainContext(d / "ev.pt", 0, CPU))
    real_stats(Ref(digits_dir, d / "ev.pt", d / "ev.npz", d / "inc.npz"), CPU, use_inception=False)
    return d


def test_the_last_snapshot_scores_exactly_as_the_final_model(scored, digits_dir, tmp_path):
    """Same sampler, same evaluator features, same Fréchet distance as `evaluate`."""
    d = scored
    curve = score_snapshots("glann", d / "imle_snapshots.pt", {"glo": d / "glo.pt"}, Ref(digits_dir, d / "ev.pt", d / "ev.npz"),
                            How({"num_samples": 300}, CPU, 0))
    sample("glann", {"glo": d / "glo.pt", "imle": d / "imle.pt"}, digits_dir, tmp_path, Draw(300, 0), CPU)
    cfg = {"fid": CFG["fid"], "eval": {**CFG["eval"], "prdc_max_samples": 100, "prd_runs": 1}}
    final = evaluate(tmp_path / "samples.npz", Ref(digits_dir, d / "ev.pt", d / "ev.npz", d / "inc.npz"), How(cfg, CPU, 0))
    last = curve["points"][-1]
    # the images are the final model's, bit for bit
    snap = torch.load(d / "imle_snapshots.pt", weights_only=False)
    blob = {"config": snap["config"], **snap["snapshots"][-1]}
    images = Sampler("glann", {"glo": d / "glo.pt"}, CPU, blobs={"imle": blob}).generate(300, 0)
    with np.load(tmp_path / "samples.npz") as z:
        assert np.array_equal(images, z["images"])
    # (300 samples in the evaluator's feature space: sqrtm of a near-singular product, hence rel 1e-3)
    assert last["fid_domain"] == pytest.approx(final["fid_domain"], rel=1e-3)
    assert last["classes_covered"] == final["classes_covered"]
    # GLANN's compute is the whole method's: GLO's full training, then IMLE so far
    glo = torch.load(d / "glo.pt", weights_only=False)
    imle = torch.load(d / "imle.pt", weights_only=False)
    assert last["train_seconds"] == pytest.approx(glo["train_seconds"] + imle["train_seconds"])
    assert last["images_processed"] == glo["images_processed"] + imle["images_processed"] == final["images_processed"]
    assert curve["points"][0]["images_processed"] < last["images_processed"]


def test_snapshot_curves_are_scored_on_the_validation_split_when_one_is_carved(scored, digits_dir, tmp_path):
    """With data.<name>.val_size, real_stats writes the validation split's statistics and the
    curve scored on them is the Fréchet distance to the validation images, not to the test ones;
    without a validation split those statistics are marked unavailable and refused."""
    from glann.data.datasets import load_prepared, prepare
    from glann.errors import DataError
    from glann.evaluation.evaluator import evaluator_outputs, load_evaluator
    from glann.evaluation.metrics import frechet_distance_to_features, gaussian_stats

    d = scored
    val_dir = tmp_path / "with_val"
    prepare("digits", {"size": 16, "val_size": 0.2}, val_dir)
    real_stats(Ref(val_dir, d / "ev.pt", tmp_path / "ev.npz", tmp_path / "inc.npz", tmp_path / "ev_val.npz"), CPU,
               use_inception=False)
    on_val = score_snapshots("glann", d / "imle_snapshots.pt", {"glo": d / "glo.pt"},
                             Ref(val_dir, d / "ev.pt", tmp_path / "ev_val.npz"), How({"num_samples": 300, "split": "val"}, CPU))
    on_test = score_snapshots("glann", d / "imle_snapshots.pt", {"glo": d / "glo.pt"},
                              Ref(val_dir, d / "ev.pt", tmp_path / "ev.npz"), How({"num_samples": 300}, CPU))
    assert on_val["split"] == "val" and on_test["split"] == "test"
    net, _ = load_evaluator(d / "ev.pt", CPU)
    xva, _ = load_prepared(val_dir, "val")
    mu, sigma = gaussian_stats(evaluator_outputs(net, xva, CPU)[0])
    snap = torch.load(d / "imle_snapshots.pt", weights_only=False)
    images = Sampler("glann", {"glo": d / "glo.pt"}, CPU,
                     blobs={"imle": {"config": snap["config"], **snap["snapshots"][-1]}}).generate(300, 0)
    expected = frechet_distance_to_features(evaluator_outputs(net, images, CPU)[0], mu, sigma)
    assert on_val["points"][-1]["fid_domain"] == pytest.approx(expected, rel=1e-6)
    assert on_val["points"][-1]["fid_domain"] != pytest.approx(on_test["points"][-1]["fid_domain"], rel=1e-3)

    real_stats(Ref(digits_dir, d / "ev.pt", tmp_path / "e2.npz", tmp_path / "i2.npz", tmp_path / "none_val.npz"), CPU,
               use_inception=False)
    with pytest.raises(DataError, match="no validation split"):
        score_snapshots("glann", d / "imle_snapshots.pt", {"glo": d / "glo.pt"},
                        Ref(digits_dir, d / "ev.pt", tmp_path / "none_val.npz"), How({"num_samples": 100, "split": "val"}, CPU))


def test_glo_gauss_snapshots_fit_their_own_gaussian(scored, digits_dir):
    """glo_gauss's points come from GLO's snapshots, each with a Gaussian on that snapshot's codes."""
    d = scored
    curve = score_snapshots("glo_gauss", d / "glo_snapshots.pt", {}, Ref(digits_dir, d / "ev.pt", d / "ev.npz"),
                            How({"num_samples": 200}, CPU))
    pts = curve["points"]
    assert [p["epoch"] for p in pts] == [1, 2] and pts[0]["fid_domain"] != pts[1]["fid_domain"]
    assert pts[1]["train_seconds"] == pytest.approx(torch.load(d / "glo.pt", weights_only=False)["train_seconds"])


def test_compute_curves_csv_and_figure(tmp_path):
    """Two seeds and a diverged run: one CSV row per point, the divergence on its last point."""
    files = []
    for method, seed, fids, diverged in (("glann", 0, [90.0, 40.0], False), ("glann", 1, [80.0, 50.0], False),
                                         ("nsgan", 0, [300.0], True)):
        run = tmp_path / "results/digits" / method / f"seed{seed}"
        run.mkdir(parents=True)
        pts = [{"epoch": i + 1, "train_seconds": 10.0 * (i + 1), "images_processed": 100 * (i + 1),
                "fid_domain": f, "classes_covered": 10} for i, f in enumerate(fids)]
        (run / "snapshots.json").write_text(json.dumps(
            {"method": method, "seed": seed, "diverged": diverged, "diverged_epoch": 2 if diverged else None,
             "epochs": 2, "points": pts}))
        files.append(run / "snapshots.json")
    rows = write_compute_curves(files, tmp_path / "summary", ["digits"], ["glann", "nsgan"])
    assert len(rows) == 5 and [r["diverged"] for r in rows] == [False] * 4 + [True]
    on_disk = list(csv.DictReader((tmp_path / "summary/fid_vs_compute.csv").open()))
    assert [float(r["fid_domain"]) for r in on_disk] == [90.0, 40.0, 80.0, 50.0, 300.0]
    assert on_disk[-1]["diverged"] == "True" and on_disk[0]["dataset"] == "digits"
    assert (tmp_path / "summary/fid_vs_compute.png").stat().st_size > 5000
    assert collect_snapshots([]) == []


def test_scored_snapshots_reach_mlflow_with_images_as_step(scored, digits_dir, caplog):
    """The curve's MLflow steps, its header (which run, which split, diverged or not) and one
    log line per point."""
    import logging

    class Recorder:
        def __init__(self):
            self.calls = []

        def log_metrics(self, metrics, step=None):
            self.calls.append((step, metrics))

    rec = Recorder()
    d = scored
    caplog.set_level(logging.INFO, logger="glann")
    curve = score_snapshots("glann", d / "imle_snapshots.pt", {"glo": d / "glo.pt"}, Ref(digits_dir, d / "ev.pt", d / "ev.npz"),
                            How({"num_samples": 100}, CPU, 7), tracker=rec)
    snaps = torch.load(d / "imle_snapshots.pt", weights_only=False)
    assert {k: v for k, v in curve.items() if k != "points"} == {
        "method": "glann", "seed": 7, "split": "test", "diverged": False, "diverged_epoch": None,
        "epochs": snaps["epochs"]}
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("snapshot at epoch")]
    assert lines == [f"snapshot at epoch {p['epoch']}: {p}" for p in curve["points"]]
    assert [s for s, _ in rec.calls] == [p["images_processed"] for p in curve["points"]]
    assert [m["snapshot_fid_domain"] for _, m in rec.calls] == [p["fid_domain"] for p in curve["points"]]
    assert np.isfinite([m["snapshot_train_seconds"] for _, m in rec.calls]).all()
