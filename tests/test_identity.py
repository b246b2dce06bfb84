"""The identity of a cell: stable across added defaulted fields, and the stored hashes kept."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from emergence_lab.config import validate
from emergence_lab.config.identity import config_hash, identity_fields, v1_fields
from emergence_lab.models import MODELS
from tests.conftest import ROOT, compose_cfg

# config_hash of each configuration under the first scheme, computed by the code of 5cfacb9
# (before the registries): the hashes of the runs stored since then.
V1_HASHES = json.loads((Path(__file__).parent / "fixtures" / "v1_config_hashes.json").read_text())
PAPER_FMNIST = {k: v for k, v in V1_HASHES.items() if k.startswith("experiment=paper_fmnist ")}


# Experiments on the calibrated protocol (conf/trainer/paper.yaml, batch 32) since issue 21; their
# stored cells are the batch-64 protocol they had, found with trainer.batch_size=64.
CALIBRATED = {p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml")
              if "override /trainer: paper" in p.read_text()}


def _composed(case: str) -> list[str]:
    overrides = case.split()
    if overrides[0].removeprefix("experiment=") in CALIBRATED:
        overrides.append("trainer.batch_size=64")
    return overrides


def _hashes(cases: dict[str, str]) -> dict[str, str]:
    return {k: config_hash(validate(compose_cfg(_composed(k)))) for k in cases}


THRESHOLD_ONLY = {k for k in V1_HASHES if k.split()[-1].startswith("threshold")}


def test_stored_hashes_of_every_experiment_are_kept():
    """Every stored hash but those of threshold-only variants; a threshold setting is an
    analysis setting now, so such a config is its default cell (the stored measurements give
    its E under the setting)."""
    assert THRESHOLD_ONLY == {"dataset=digits threshold=fraction"}
    kept = {k: v for k, v in V1_HASHES.items() if k not in THRESHOLD_ONLY}
    assert _hashes(kept) == kept
    for k in THRESHOLD_ONLY:
        base = " ".join(k.split()[:-1])
        assert config_hash(validate(compose_cfg(_composed(k)))) == V1_HASHES[base]


def test_the_threshold_group_is_not_part_of_identity_unless_the_stopper_reads_it():
    from emergence_lab.config.identity import legacy_hash

    base = validate(compose_cfg(["dataset=digits"]))
    for extra in (["threshold=dormant"], ["threshold=fraction", "threshold.theta=0.2"],
                  ["threshold.counting=edges"], ["threshold.grid=[0.5]"]):
        assert config_hash(validate(compose_cfg(["dataset=digits", *extra]))) == config_hash(base)
    layers = validate(compose_cfg(["dataset=digits", "threshold.layers=[hidden,output]"]))
    assert config_hash(layers) != config_hash(base)  # what the network's units are
    stop = ["dataset=digits", "trainer.stop_epsilon=0"]
    assert config_hash(validate(compose_cfg([*stop, "threshold=dormant"]))) != \
        config_hash(validate(compose_cfg(stop)))
    # resnet_cifar's θ grid entered its stored hash: those runs are found under it
    grid = validate(compose_cfg(["dataset=digits", "threshold.grid=[0.5]"]))
    assert legacy_hash(grid) not in (None, config_hash(grid))
    assert legacy_hash(base) is None
    assert legacy_hash(validate(compose_cfg(["dataset=digits", "threshold=dormant"]))) is None


def test_adding_a_defaulted_field_keeps_the_paper_fmnist_hashes():
    """The issue's case: `activation: relu` was added to the MLP's schema after these hashes were
    stored; the stored identities hold, and a non-default activation is a new one."""
    assert len(PAPER_FMNIST) == 8  # 4 cells x seeds 0 and 4
    assert "activation" in {f.name for f in dataclasses.fields(MODELS["mlp"].settings)}
    cfg = compose_cfg(["experiment=paper_fmnist", "trainer.batch_size=64"])
    assert validate(cfg).model.activation == "relu"
    assert _hashes(PAPER_FMNIST) == PAPER_FMNIST
    changed = validate(compose_cfg(["experiment=paper_fmnist", "trainer.batch_size=64",
                                    "model.activation=tanh"]))
    assert config_hash(changed) not in PAPER_FMNIST.values()
    assert identity_fields(changed)["model.activation"] == "tanh"


def test_identity_fields_are_the_non_default_ones():
    fields = identity_fields(validate(compose_cfg(["dataset=digits", "pruning=snip",
                                                   "pruning.samples=64"])))
    assert fields["pruning.name"] == "snip" and fields["pruning.samples"] == 64
    assert "pruning.scope" not in fields and "trainer.lr" not in fields  # defaults
    assert "dataset.data_dir" not in fields and "trainer.device" not in fields  # not results


def test_a_strategy_the_first_scheme_lacks_at_defaults_is_still_v1_expressible():
    c = validate(compose_cfg(["pruning=snip"]))
    assert v1_fields(c) is not None
    assert v1_fields(validate(compose_cfg(["pruning=snip", "pruning.samples=64"]))) is None


def test_an_unpruned_branch_has_one_identity_whichever_strategy_names_it():
    hashes = {config_hash(validate(compose_cfg([f"pruning={p}", "pruning.amount=0",
                                                "pruning.epoch=5"])))
              for p in ("magnitude", "random", "snip", "lottery", "lottery_reinit", "gradual")}
    assert len(hashes) == 1


@pytest.mark.parametrize("doc", ["docs/how-to/sweeps-that-survive.md"])
def test_changing_a_default_is_documented(doc, monkeypatch):
    """Changing a default re-labels stored runs: a config at the old default now hashes as a
    non-default one, and one at the new default takes the stored runs' hash. The docs say so."""
    text = (ROOT / doc).read_text()
    assert "Never change a default" in text and "force=true" in text
    base = validate(compose_cfg(["pruning=snip"]))
    explicit_old = validate(compose_cfg(["pruning=snip", "pruning.samples=256"]))
    before = config_hash(explicit_old)
    assert config_hash(base) == before
    from emergence_lab.prune.strategies import snip
    monkeypatch.setattr(snip.BatchScoreConfig.__dataclass_fields__["samples"], "default", 512)
    assert config_hash(explicit_old) != before  # the same settings, another identity


def test_the_calibrated_protocol_is_the_calibrations_own_cell():
    """paper_fmnist on the calibrated protocol is the calibration's batch-32, unnormalized,
    momentum-free cell: one identity, so a sweep that finished one has the other."""
    assert validate(compose_cfg(["experiment=paper_fmnist"])).trainer.batch_size == 32
    for level in ("0", "0.5"):
        calibration = ["experiment=paper_calibration", "dataset=fashion_mnist",
                       "trainer.batch_size=32", "dataset.normalize=False", "trainer.momentum=0",
                       f"pruning.amount={level}", "trainer.seed=0"]
        fmnist = ["experiment=paper_fmnist", f"pruning.amount={level}", "trainer.seed=0"]
        assert config_hash(validate(compose_cfg(calibration))) == \
            config_hash(validate(compose_cfg(fmnist)))
