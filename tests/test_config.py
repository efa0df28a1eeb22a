"""Config errors: one message naming the key path and the allowed values, nothing run."""

import pytest

from conftest import REPO, copy_workflow, snakemake
from glann.pipeline.config import config_errors, fill_defaults, load_schema

SCHEMA = load_schema(REPO / "workflow/schemas/config.schema.yaml")
BASE = {"datasets": ["mnist5k"], "methods": ["glann"], "seeds": [0]}


@pytest.mark.parametrize("patch,expect", [
    ({"glo": {"epochs": 0}}, "glo.epochs: 0 is out of range"),
    ({"glo": {"epochs": -3}}, "glo.epochs: -3 is out of range"),
    ({"glo": {"epochs": "ten"}}, "glo.epochs: 'ten' has the wrong type"),
    ({"glo": {"epoch": 3}}, "unknown key(s) 'epoch'; allowed keys: batch_size"),
    ({"colour": 1}, "unknown key(s) 'colour'"),
    ({"methods": ["glann", "biggan"]}, "methods[1]: 'biggan' is not allowed; allowed values: glann, glo_gauss"),
    ({"datasets": ["mnsit"]}, "datasets[0]: unknown dataset 'mnsit'; allowed values:"),
    ({"methods": []}, "methods: must list at least 1"),
    ({"seeds": []}, "seeds: must list at least 1"),
    ({"device": "tpu"}, "device: 'tpu' is not allowed; allowed values: auto, cpu, cuda"),
])
def test_schema_rejections(patch, expect):
    msgs = config_errors({**BASE, **patch}, SCHEMA)
    assert len(msgs) == 1 and expect in msgs[0], msgs


@pytest.mark.parametrize("patch,expect", [
    ({"sample": {"num_samples": 200}, "fid": {"num_samples": 500}},
     "fid.num_samples: 500 is more than sample.num_samples (200), so Inception FID could use only 200"),
    ({"sample": {"num_samples": 20}, "fid": {"num_samples": 20}, "eval": {"prdc_k": 19}},
     "eval.prdc_k: k = 19 needs at least 21 samples per side, and min(sample.num_samples, "
     "eval.prdc_max_samples) is 20"),
    ({"datasets": ["digits"], "data": {"digits": {"test_size": 6}}},
     "data.digits.test_size: the test split would hold 6 images (test_size 6 of 1797 images); the "
     "evaluation's precision/recall with eval.prdc_k = 5 needs at least 7"),
    ({"datasets": ["digits"], "data": {"digits": {"val_size": 1436}}},
     "data.digits.val_size: 1436 of 1437 training images gives a 1436-image validation split; it needs at "
     "least 2 images and must leave 2 to train on"),
    ({"datasets": ["mnist5k"], "data": {"mnist5k": {"val_size": 0.0001}}},
     "data.mnist5k.val_size: 0.0001 of 4000 training images gives a 1-image validation split"),
])
def test_values_that_fail_only_together_are_refused(patch, expect):
    msgs = config_errors({**BASE, **patch}, SCHEMA)
    assert len(msgs) == 1 and expect in msgs[0], msgs


def test_a_folder_too_small_for_the_evaluation_is_refused_before_any_job(tmp_path):
    """51 images, test_size 0.1: a 6-image test split, and prdc with k = 5 needs 7 (what once
    crashed every evaluate job after training). 61 images give 7 and pass."""
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(51):
        Image.new("L", (8, 8), i).save(folder / f"{i}.png")
    (folder / "notes.txt").write_text("not an image")
    cfg = {**BASE, "datasets": ["mine"], "data": {"mine": {"type": "folder", "path": str(folder)}}}
    msgs = config_errors(cfg, SCHEMA)
    assert msgs == ["config error at data.mine.test_size: the test split would hold 6 images (test_size 0.1 "
                    "of 51 readable images); the evaluation's precision/recall with eval.prdc_k = 5 needs at least 7. "
                    "Raise data.mine.test_size, add images, or lower eval.prdc_k"], msgs
    assert config_errors({**cfg, "eval": {"prdc_k": 4}}, SCHEMA) == []
    for i in range(51, 61):
        Image.new("L", (8, 8), i).save(folder / f"{i}.jpg")
    assert config_errors(cfg, SCHEMA) == []


def test_defaults_are_the_papers():
    cfg = fill_defaults(BASE, SCHEMA)
    assert cfg["glo"]["epochs"] == 200 and cfg["glo"]["lr_codes"] == 0.01 and cfg["glo"]["loss"] == "vgg"
    assert cfg["imle"]["noise_dim"] == 32 and cfg["imle"]["weight_decay"] == 1e-5
    # compare_gan v1 src/params.py defaults, Adam beta2 0.999 everywhere (TF's default)
    v1 = {"mmgan": (5e-5, 0.0, 1, True), "nsgan": (5e-5, 0.0, 1, True), "lsgan": (2e-4, 0.5, 1, True),
          "wgan": (5e-5, 0.5, 5, True), "wgan_gp": (1e-4, 0.5, 5, False), "dragan": (1e-4, 0.5, 1, True),
          "began": (1e-4, 0.5, 5, False)}
    for gan, (lr, beta1, n, bn) in v1.items():
        c = cfg[gan]
        assert (c["lr"], c["betas"], c["critic_steps"], c["d_batchnorm"]) == (lr, [beta1, 0.999], n, bn), gan
        assert c["batch_size"] == 64 and c["latent_dim"] == 64 and c["d_joint_batch"] is False, gan
    assert cfg["wgan"]["clip"] == 0.01 and cfg["wgan_gp"]["gp_lambda"] == 10 and cfg["dragan"]["gp_lambda"] == 10
    assert cfg["began"]["gamma"] == 0.75 and cfg["began"]["lambda_k"] == 0.001
    assert (cfg["vae"]["lr"], cfg["vae"]["betas"], cfg["vae"]["encoder_batchnorm"]) == (5e-5, [0.5, 0.999], True)
    assert config_errors(cfg, SCHEMA) == []


def test_presets_are_valid():
    import yaml

    for path in ["config/config.yaml", "config/quick.yaml",
                 *sorted(str(p.relative_to(REPO)) for d in ("paper", "study") for p in (REPO / "config" / d).glob("*.yaml"))]:
        assert config_errors(yaml.safe_load((REPO / path).read_text()), SCHEMA) == [], path
    # the equal-compute preset is layered on the default (--configfile): budgets only
    base = yaml.safe_load((REPO / "config/config.yaml").read_text())
    equal = yaml.safe_load((REPO / "config/equal_compute.yaml").read_text())
    assert equal.pop("budgets") == "equal_compute"
    assert all(set(v) == {"epochs"} for v in equal.values()) and set(equal) == {"glo", "imle", *base["methods"]} - {
        "glann", "glo_gauss"}
    merged = {**base, **{k: {**base.get(k, {}), **v} for k, v in equal.items()}, "budgets": "equal_compute"}
    assert config_errors(merged, SCHEMA) == []


def _layered(preset: str) -> dict:
    """A preset as Snakemake sees it: config/config.yaml (the Snakefile's configfile) updated by
    the --configfile, section by section, then the schema's defaults."""
    import yaml

    from snakemake.utils import update_config

    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    update_config(cfg, yaml.safe_load((REPO / preset).read_text()))
    return fill_defaults(cfg, SCHEMA)


@pytest.mark.parametrize("preset", ["config/paper/mnist.yaml", "config/paper/fashion.yaml", "config/paper/cifar10.yaml",
                                    "config/paper/celeba64.yaml", "config/study/digits_converged_pilot.yaml",
                                    "config/study/digits_converged.yaml"])
def test_presets_that_claim_the_papers_settings_get_them_through_the_tuned_default(preset):
    """The embedded default carries the mnist5k tuning study's settings; a preset that trains the
    paper's GLANN and compare_gan v1's baselines (the paper presets, the converged study) must not
    inherit them: after layering, every GAN, the VAE, GLO and IMLE have the schema's (the papers')
    values, whatever config/config.yaml says."""
    papers = fill_defaults(dict(BASE), SCHEMA)
    cfg = _layered(preset)
    keys = {"glo": ("lr_generator", "lr_codes"), "imle": ("lr", "samples_factor"),
            "imle_pixel": ("lr", "samples_factor", "staleness"),
            **{g: ("lr", "betas", "critic_steps", "d_batchnorm", "clip", "gp_lambda", "gamma", "lambda_k")
               for g in ("mmgan", "nsgan", "lsgan", "wgan", "wgan_gp", "dragan", "began")},
            "vae": ("lr", "betas", "encoder_batchnorm")}
    wrong = {f"{sec}.{k}": (cfg[sec][k], papers[sec][k]) for sec, ks in keys.items() for k in ks
             if k in papers[sec] and cfg[sec][k] != papers[sec][k]}
    assert not wrong, f"{preset} inherits the default's tuned values (got, paper's): {wrong}"


def test_snakemake_refuses_bad_config_before_any_job(tmp_path):
    wf = copy_workflow(tmp_path / "wf")
    proc = snakemake(wf, "--cores", "1", "--configfile", "config/quick.yaml", "--config", "methods=[gan]",
                     check=False)
    assert proc.returncode != 0
    assert "config error at methods[0]: 'gan' is not allowed" in proc.stderr
    assert not (wf / "data").exists() and not (wf / "results").exists()


@pytest.mark.parametrize("cfg", ["config/config.yaml", "config/quick.yaml"])
def test_dry_run_builds_the_dag(tmp_path, cfg):
    wf = copy_workflow(tmp_path / "wf")
    proc = snakemake(wf, "-n", "--cores", "1", "--configfile", cfg)
    import re

    counts = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", proc.stdout.split("Job stats:")[1], re.M))
    expected = {"prepare_data": 1, "train_glo": 1, "train_imle": 1, "fit_gaussian": 1, "train_baseline": 10,
                "sample": 12, "train_evaluator": 1, "real_stats": 1,
                "evaluate": 12, "summarize": 1, "write_sweep": 0}
    if cfg == "config/quick.yaml":  # its sweep: 2 settings of GLANN (GLO + IMLE) and of NS-GAN
        expected.update({"train_glo": 3, "train_imle": 3, "train_baseline": 12, "sample": 16, "evaluate": 16,
                         "write_sweep": 2})
    for rule, n in expected.items():
        assert int(counts.get(rule, 0)) == n, (rule, counts)


@pytest.mark.parametrize("name,glo_epochs,halve,imle_epochs,gan_epochs", [
    ("mnist", 200, 20, 50, 20), ("fashion", 200, 20, 50, 20),
    ("cifar10", 500, 50, 50, 100), ("celeba64", 500, 50, 50, 40),
])
def test_paper_presets_pin_the_papers_values(name, glo_epochs, halve, imle_epochs, gan_epochs):
    """GLANN's released recipe per dataset, the GANs' and VAE's budgets as compare_gan v1's task
    definitions (generate_tasks_lib.TuneParams: 20 / 20 / 100 / 40 epochs): all 12 methods, 3
    seeds, VGG loss, Inception FID on 10k."""
    import yaml

    cfg = fill_defaults(yaml.safe_load((REPO / f"config/paper/{name}.yaml").read_text()), SCHEMA)
    assert cfg["datasets"] == [name] and cfg["seeds"] == [0, 1, 2] and cfg["device"] == "cuda"
    assert cfg["methods"] == ["glann", "glo_gauss", "imle_pixel", "mmgan", "nsgan", "lsgan", "wgan", "wgan_gp", "dragan", "began",
                              "vae", "flow"]
    assert cfg["flow"]["epochs"] == gan_epochs  # flow (not in the paper): the GANs' epochs
    assert cfg["budgets"] == "paper"
    assert cfg["glo"]["loss"] == "vgg" and cfg["glo"]["epochs"] == glo_epochs
    assert cfg["glo"]["lr_halve_every"] == halve and cfg["glo"]["lr_codes"] == 0.01
    assert cfg["glo"]["lr_generator"] == 0.001 and cfg["glo"]["init_std"] == 0.01
    assert cfg["imle"]["epochs"] == imle_epochs and cfg["imle"]["noise_dim"] == 32
    assert cfg["imle_pixel"]["epochs"] == imle_epochs
    for gan in ("mmgan", "nsgan", "lsgan", "wgan", "wgan_gp", "dragan", "began", "vae"):
        assert cfg[gan]["epochs"] == gan_epochs and cfg[gan]["batch_size"] == 64, gan
    assert cfg["wgan_gp"]["critic_steps"] == 5 and cfg["wgan_gp"]["gp_lambda"] == 10
    assert cfg["fid"]["inception"] and cfg["fid"]["require_inception"] and cfg["fid"]["num_samples"] == 10000
    assert cfg["sample"]["num_samples"] == 10000


def _schema_paths(props, defs, prefix=()):
    """(section, key path under it) for every leaf key of the schema."""
    for key, spec in props.items():
        if "$ref" in spec:
            spec = {**defs[spec["$ref"].split("/")[-1]], **{k: v for k, v in spec.items() if k != "$ref"}}
        nested = spec.get("properties")
        if nested is None and isinstance(spec.get("additionalProperties"), dict):
            nested = spec["additionalProperties"].get("properties")  # data.<name>.*
        if nested:
            yield from _schema_paths(nested, defs, prefix + (key,))
        else:
            yield prefix + (key,)


def test_config_readme_explains_every_schema_key():
    """config/README.md (the catalogue's usage page) has a row for every key, under its section."""
    import re

    import yaml

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    doc = (REPO / "config/README.md").read_text()
    sections = {}
    for block in re.split(r"(?m)^### ", doc)[1:]:
        heading, body = block.split("\n", 1)
        names = re.findall(r"`(\w+)`", heading) or ["top level"]
        for name in names:
            sections[name] = body
    missing = []
    for path in _schema_paths(schema["properties"], schema["definitions"]):
        section, rest = (path[0], path[1:]) if len(path) > 1 else ("top level", path)
        body = sections.get(section, "")
        row = ".".join(rest)
        if not re.search(rf"^\| [^|]*`{re.escape(row)}`", body, re.M):
            missing.append(".".join(path))
    assert not missing, f"config/README.md does not explain: {missing}"
    for preset in [p.relative_to(REPO) for p in (REPO / "config").rglob("*.yaml")]:
        assert f"`{preset}`" in doc or f"`{preset.name}`" in doc, preset
