import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from emergence_lab.config import Config, validate
from emergence_lab.config.identity import config_hash
from tests.conftest import CONF, compose_cfg


def test_defaults_compose_and_validate():
    c = validate(compose_cfg([]))
    assert isinstance(c, Config)
    assert c.model.hidden == [512, 256]
    assert (c.trainer.lr, c.trainer.batch_size, c.threshold.theta) == (0.005, 64, 0.05)
    assert c.tracking.uri == "sqlite:///mlruns/mlflow.db"


def test_paper_experiment():
    c = validate(compose_cfg(["experiment=paper_fmnist", "pruning.amount=0.7"]))
    assert (c.dataset.name, c.pruning.name, c.pruning.epoch, c.trainer.epochs) == (
        "fashion_mnist", "magnitude", 5, 20)
    assert validate(compose_cfg(["experiment=paper_mnist"])).dataset.name == "mnist"


@pytest.mark.parametrize("override", ["model.hiden=[64]", "trainer.learning_rate=0.1"])
def test_typo_in_a_key_fails_at_compose(override):
    with pytest.raises(ConfigCompositionException, match="Could not override"):
        compose_cfg([override])


def test_added_key_that_no_schema_declares_fails_validation():
    cfg = compose_cfg(["+pruning.amont=0.5"])
    with pytest.raises(ValueError, match=r"unknown key pruning.amont; valid keys of pruning: \['amount'"):
        validate(cfg)


def test_wrong_type_fails_at_compose():
    with pytest.raises(Exception, match="trainer.lr|lr"):
        compose_cfg(["trainer.lr=fast"])


@pytest.mark.parametrize("overrides, message", [
    (["pruning=magnitude", "pruning.amount=1.5"], r"pruning.amount must be in \[0, 1\), got 1.5"),
    (["pruning=magnitude", "pruning.epoch=25"],
     r"pruning.epoch must be < trainer.epochs \(20\), got 25"),
    (["pruning=magnitude", "pruning.epoch=20"],
     r"pruning.epoch must be < trainer.epochs \(20\), got 20: prune earlier"),
    (["init=emergence", "init.alpha=inf"], r"init.alpha must be finite and >= 1 .*got inf"),
    (["tracking.uri=file:///tmp/mlruns"],
     r"MLflow 3.13\+ refuses the file store; use an SQLite file, e.g. tracking.uri=sqlite:///"),
    (["tracking.on_taken=steal"], r"tracking.on_taken must be one of \['skip', 'wait'\]"),
    (["threshold.theta=-0.1"], r"threshold.theta \(θ of rule mean\) must be a finite number >= 0, got -0.1"),
    (["trainer.lr=0"], r"trainer.lr must be > 0, got 0.0"),
    (["trainer.lr=inf"], r"trainer.lr must be a finite number, got inf"),
    (["trainer.lr=nan"], r"trainer.lr must be a finite number, got nan"),
    (["trainer.momentum=nan"], r"trainer.momentum must be a finite number, got nan"),
    (["pruning=magnitude", "pruning.amount=nan"], r"pruning.amount must be in \[0, 1\), got nan"),
    (["model.hidden=[512,0]"], r"model.hidden widths must be > 0, got \[512, 0\]"),
    (["dataset.name=svhn"], r"dataset.name must be one of \['cifar10', 'digits', .*got 'svhn'"),
    (["threshold.rule=median"], r"threshold.rule must be one of \['dormant', 'fraction', 'mean'\]"),
    (["threshold.counting=paths"], r"threshold.counting must be one of \['edges', 'units'\]"),
    (["threshold.theta=nan"], r"threshold.theta \(θ of rule mean\) must be a finite number >= 0, got nan"),
    (["threshold=dormant", "threshold.theta=-1"], r"threshold.theta \(τ of rule dormant\) must be a finite"),
    (["threshold.min_fraction=0.3"], r"threshold.min_fraction must be one of \[0.1, 0.25, 0.5, 0.75, 0.9\]"),
    (["trainer.device=tpu"], "trainer.device must be one of auto, cpu, cuda"),
    (["pruning.amount=0.3"], "must be 0 with pruning=none"),
    (["tracking.uri=mlruns"], "tracking.uri=mlruns: unknown scheme"),
    (["dataset.name=digits"], r"dataset.name=digits has settings DigitsConfig: select it with "
                              r"dataset=digits"),
    (["pruning=lottery", "pruning.rewind_epoch=6"], r"pruning.rewind_epoch must be in \[0, "
                                                    r"pruning.epoch=5\]"),
    (["pruning=gradual", "pruning.schedule=linear"],
     r"pruning.schedule must be one of \['cubic', 'equal'\], got 'linear'"),
    (["pruning=snip", "pruning.samples=0"], r"pruning.samples must be >= 1, got 0"),
])
def test_range_and_cross_field_errors_name_field_value_and_range(overrides, message):
    with pytest.raises(ValueError, match=message):
        validate(compose_cfg(overrides))


def test_too_few_counted_layers_fail_the_preflight():
    """The layer count comes from the built network, checked before any run exists."""
    from emergence_lab.run.preflight import preflight

    with pytest.raises(ValueError, match=r"emergence needs at least 2 counted layers: "
                                         r"threshold.layers=\['hidden'\] counts 1"):
        preflight(validate(compose_cfg(["dataset=digits", "model.hidden=[64]"])))
    preflight(validate(compose_cfg(["dataset=digits", "model.hidden=[64]",
                                    "threshold.layers=[hidden,output]"])))


def test_unknown_option_lists_the_valid_ones():
    with pytest.raises(Exception, match="(?s)Could not find 'pruning/lotery'.*magnitude.*none"):
        compose_cfg(["pruning=lotery"])


EXPERIMENTS = {"paper_fmnist": 8, "paper_mnist": 4, "paper_transfer": 4, "paper_cnn": 2,
               "emergence_init": 4, "pruning_strategies": 6, "paper_fmnist_random": 4,
               "paper_fmnist_lr": 16, "paper_calibration": 96, "later_pruning": 12,
               "paper_landscape": 8, "paper_fmnist_dense": 3,
               "paper_transfer_dense": 1, "smoke": 3}  # cells per seed


@pytest.mark.parametrize("experiment", sorted(EXPERIMENTS))
def test_every_experiment_sweep_validates(experiment):
    from emergence_lab.sweep.jobs import expand_sweep

    cfg = compose_cfg([f"experiment={experiment}"], hydra=True)
    params = [f"{k}={v}" for k, v in cfg.hydra.sweeper.params.items()]
    # every named experiment replicates over the same seeds
    assert cfg.hydra.sweeper.params["trainer.seed"] == "0,1,2,3,4"
    jobs = expand_sweep(params + [f"experiment={experiment}"])
    assert len(jobs) == 5 * EXPERIMENTS[experiment]
    first_seed = [job for job in jobs if "trainer.seed=0" in job]
    assert len(first_seed) == EXPERIMENTS[experiment]
    # every sixth cell of the big grids (composing one takes ~0.4 s; the sweep itself checks
    # every job before the first starts)
    checked = [validate(compose_cfg(job)) for job in first_seed[::6 if len(first_seed) > 20 else 1]]
    # distinct cells, but for the strategies' controls (amount 0): one cell, trained once
    shared = len(SHARED_CONTROLS.get(experiment, ())) - 1 if experiment in SHARED_CONTROLS else 0
    assert len({config_hash(c) for c in checked}) == len(checked) - shared


# strategies whose amount 0 is one cell
SHARED_CONTROLS = {e: ("magnitude", "random") for e in ("paper_fmnist", "paper_landscape")}


def test_a_command_line_value_narrows_an_experiments_sweep_as_hydra_does():
    """An experiment's ``hydra.sweeper.params`` then the command line: a key given twice is one
    axis with the command line's value, so ``SEEDS=0`` on a 5-seed experiment counts one seed."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from emergence_lab.sweep.jobs import expand_sweep

    args = ["dataset=fashion_mnist,mnist", "pruning.amount=0,0.3,0.5,0.7",
            "trainer.seed=0,1,2,3,4", "experiment=paper_fmnist", "trainer.seed=0",
            "dataset=mnist"]
    jobs = expand_sweep(args)
    hydra_jobs = BasicSweeper.split_arguments(
        OverridesParser.create().parse_overrides(args), None)[0]
    assert jobs == [list(j) for j in hydra_jobs]
    assert len(jobs) == 4 and all("trainer.seed=0" in j and "dataset=mnist" in j for j in jobs)


def test_shared_cells_of_the_paper_fmnist_family_have_one_identity():
    """The random-mask sweep's control and the lr sweep's lr-0.005 cells are paper_fmnist's
    own cells (skipped once FINISHED, counted once by the report); the new fields left at
    their defaults keep paper_fmnist's identity as it was before they existed."""
    def cell(*overrides):
        return config_hash(validate(compose_cfg(["experiment=paper_fmnist",
                                                 "trainer.batch_size=64", *overrides])))

    control = cell("pruning.amount=0")
    assert control == "3086f6cebc80"  # as computed before issue 10 added its fields
    assert cell("pruning=random", "pruning.amount=0") == control
    assert cell("trainer.lr_after_prune=0.005", "pruning.amount=0") == control
    assert cell("trainer.lr_after_prune=0.01", "pruning.amount=0") != control
    assert cell("pruning=random", "pruning.amount=0.5") != cell("pruning.amount=0.5")
    assert cell("dataset.normalize=true", "pruning.amount=0") != control


@pytest.mark.parametrize("base, sweep", [
    (["dataset=digits", "pruning=magnitude", "pruning.epoch=1", "model.hidden=[16,8]"],
     ["pruning.amount=0,0.5", "trainer.seed=0,1,2", "trainer.lr=0.01,0.1"]),
    (["experiment=paper_fmnist"], []),
    (["experiment=pruning_methods"], []),
])
def test_the_sweep_composes_each_choice_of_options_once_and_gets_hydras_configs(base, sweep):
    """Jobs that differ only in field values are the composed config with the values set: the
    same configs as Hydra's own composition of every job."""
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf, open_dict, read_write

    from emergence_lab.sweep.jobs import sweep_job_configs

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=base, return_hydra_config=True)
        with read_write(cfg), open_dict(cfg):
            cfg.hydra.overrides.task = base + sweep
        fast = sweep_job_configs(cfg)
        loader = GlobalHydra.instance().config_loader()
        for job, got in fast[::3]:
            full = loader.load_sweep_config(cfg, job)
            with read_write(full), open_dict(full):
                del full["hydra"]
            assert OmegaConf.to_container(got) == OmegaConf.to_container(full), job
