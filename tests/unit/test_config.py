import pytest
from pydantic import ValidationError

from trackflow.config import SWEEP_AXES, SweepConfig, TrainConfig, trial_label


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"lr": 0}, "lr"),
        ({"lr": -0.1}, "lr"),
        ({"epochs": 0}, "epochs"),
        ({"test_size": 1.0}, "test_size"),
        ({"test_size": 0}, "test_size"),
        ({"optimizer": "rmsprop"}, "optimizer"),
        ({"activation": "gelu"}, "activation"),
        ({"momentum": 1.0}, "momentum"),
        ({"momentum": -0.1}, "momentum"),
        ({"l1": -0.001}, "l1"),
        ({"dropout": 1.0}, "dropout"),
        ({"batch_size": 0}, "batch_size"),
        ({"unknown_option": 1}, "unknown_option"),
    ],
)
def test_invalid_values_are_rejected_naming_the_field(bad, field):
    with pytest.raises(ValidationError) as exc:
        TrainConfig(**bad)
    assert field in str(exc.value)


def test_cross_field_rules():
    with pytest.raises(ValidationError, match="n_informative"):
        TrainConfig(n_features=3, n_informative=5)
    with pytest.raises(ValidationError, match="test_size \\+ val_size"):
        TrainConfig(test_size=0.5, val_size=0.45)
    with pytest.raises(ValidationError, match="smallest split"):
        TrainConfig(n_samples=50, val_size=0.05)


@pytest.mark.parametrize("alias, says", [
    ("a b", "may only contain letters, digits"),
    ("champion!", "may only contain letters, digits"),
    ("latest", "reserved"),
    ("LATEST", "reserved"),
    ("v3", "reserved"),
    ("x" * 256, "at most 255 characters"),
])
def test_a_promote_alias_the_registry_would_refuse_is_refused_up_front(alias, says):
    with pytest.raises(ValidationError, match=says):
        TrainConfig(promote_alias=alias)


def test_promote_aliases_the_registry_takes_are_accepted():
    from mlflow.utils.validation import _validate_model_alias_name, _validate_model_alias_name_reserved

    for alias in ("champion", "best-2026_11", "v3beta", "vlatest"):
        assert TrainConfig(promote_alias=alias).promote_alias == alias
        _validate_model_alias_name(alias)  # and MLflow agrees
        _validate_model_alias_name_reserved(alias)


def test_reading_options_go_with_data_and_a_thousands_separator_is_not_the_column_separator():
    assert TrainConfig(data="t.csv", target="y", sep=";", thousands=",", na_values=["-"]).thousands == ","
    with pytest.raises(ValidationError, match="give config.data too"):
        TrainConfig(na_values=["-"])
    with pytest.raises(ValidationError, match="cannot also be the column separator"):
        TrainConfig(data="t.csv", target="y", thousands=",")
    assert TrainConfig(data="t.tsv", target="y", thousands=",").thousands == ","
    with pytest.raises(ValidationError, match="sep"):
        TrainConfig(data="t.csv", target="y", sep=";;")


def test_the_search_space_fields_take_every_documented_value():
    for optimizer in ("sgd", "adagrad", "adam", "adamw"):
        assert TrainConfig(optimizer=optimizer).optimizer == optimizer
    for activation in ("relu", "tanh", "sigmoid"):
        assert TrainConfig(activation=activation).activation == activation
    c = TrainConfig()
    assert (c.optimizer, c.activation, c.l1, c.momentum) == ("adam", "relu", 0.0, 0.9)


def _todays_grid(cfg: SweepConfig) -> list[TrainConfig]:
    """The grid as it was built before the other axes existed: optimizer > dropout > lr, repeats skipped."""
    seen, out = set(), []
    for opt in cfg.optimizers:
        for dropout in cfg.dropouts:
            for lr in cfg.lrs:
                if (opt, dropout, lr) not in seen:
                    seen.add((opt, dropout, lr))
                    out.append(TrainConfig(**(cfg.base.model_dump() | {"optimizer": opt, "dropout": dropout, "lr": lr})))
    return out


@pytest.mark.parametrize("kw", [
    {},
    {"lrs": [0.1, 0.01, 0.1], "optimizers": ["adamw", "adam"], "dropouts": [0.0, 0.5, 0.0]},
    {"base": TrainConfig(batch_size=64, hidden_layers=[16], weight_decay=0.01), "lrs": [0.003]},
])
def test_with_todays_options_the_grid_is_unchanged(kw):
    cfg = SweepConfig(**kw)
    assert cfg.trials() == _todays_grid(cfg)


def test_the_grid_is_the_cross_product_of_every_axis_in_nesting_order_without_repeats():
    cfg = SweepConfig(base=TrainConfig(epochs=3), lrs=[0.01, 0.1], hidden_layers_grid=[[64, 64], [128], [64, 64]],
                      batch_sizes=[32, 128], activations=["tanh"], optimizers=["sgd", "adam"], l1s=[0, 0.001],
                      weight_decays=[0.01])
    grid = cfg.trials()
    assert len(grid) == 2 * 2 * 2 * 2 * 2 == len({c.model_dump_json() for c in grid})
    assert list(SWEEP_AXES.values()) == ["hidden_layers", "activation", "batch_size", "optimizer", "weight_decay",
                                         "l1", "dropout", "lr"]
    key = [(c.hidden_layers, c.batch_size, c.optimizer, c.l1, c.lr) for c in grid]
    assert key[:5] == [([64, 64], 32, "sgd", 0, 0.01), ([64, 64], 32, "sgd", 0, 0.1), ([64, 64], 32, "sgd", 0.001, 0.01),
                       ([64, 64], 32, "sgd", 0.001, 0.1), ([64, 64], 32, "adam", 0, 0.01)]
    assert key[-1] == ([128], 128, "adam", 0.001, 0.1)
    assert {(c.activation, c.weight_decay, c.dropout, c.epochs) for c in grid} == {("tanh", 0.01, 0.2, 3)}
    assert cfg.varied() == ["hidden_layers", "batch_size", "optimizer", "l1", "lr"]
    assert SweepConfig(lrs=[0.01]).varied() == []


def test_a_trial_is_named_by_the_fields_that_vary():
    c = TrainConfig(hidden_layers=[64, 64], batch_size=128, optimizer="adam", lr=0.01, activation="tanh", l1=0.001,
                    weight_decay=0.01, dropout=0.1)
    assert trial_label(c, {"optimizer", "batch_size", "hidden_layers", "lr"}) == "h64x64-bs128-adam-lr0.01"
    assert trial_label(c, set(SWEEP_AXES.values())) == "h64x64-tanh-bs128-adam-wd0.01-l1_0.001-do0.1-lr0.01"
    assert trial_label(c, {"lr"}) == "lr0.01" and trial_label(c, ()) == ""


@pytest.mark.parametrize("kw, says", [
    ({"batch_sizes": [32, 0]}, "value 0: Input should be greater than or equal to 1"),
    ({"hidden_layers_grid": [[64], [0]]}, "value [0]: hidden_layers widths must be in [1, 65536]"),
    ({"hidden_layers_grid": [[]]}, "value []: List should have at least 1 item"),
    ({"hidden_layers_grid": []}, "at least 1 item"),
    ({"l1s": [-1.0]}, "value -1.0: Input should be greater than or equal to 0"),
    ({"weight_decays": [-1.0]}, "value -1.0: Input should be greater than or equal to 0"),
    ({"activations": ["gelu"]}, "activations.0"),
    ({"optimizers": ["rmsprop"]}, "optimizers.0"),
])
def test_a_bad_value_on_an_axis_is_refused_naming_the_axis(kw, says):
    with pytest.raises(ValidationError) as exc:
        SweepConfig(**kw)
    assert says in str(exc.value) and next(iter(kw)) in str(exc.value)


def test_the_trial_cap_covers_every_axis_and_names_the_options_to_narrow():
    with pytest.raises(ValidationError, match=r"the grid has 10,100 trials, more than 10,000; narrow "
                                              r"config.batch_sizes \(101 values\), config.lrs \(100 values\) \["):
        SweepConfig(lrs=[0.001 * (i + 1) for i in range(100)], batch_sizes=list(range(1, 102)))
    assert len(SweepConfig(lrs=[0.001 * (i + 1) for i in range(100)], batch_sizes=list(range(1, 101))).trials()) == 10_000


def test_a_deployment_passes_the_axes_as_prefect_yaml_writes_them():
    cfg = SweepConfig.model_validate({"base": {"optimizer": "sgd", "momentum": 0.5, "activation": "tanh"},
                                      "optimizers": ["sgd", "adagrad"], "hidden_layers_grid": [[64, 64], [128]],
                                      "activations": ["relu", "sigmoid"], "l1s": [0, 0.001], "weight_decays": [0.01]})
    grid = cfg.trials()
    assert len(grid) == 2 * 2 * 2 * 2 * 3
    assert {(c.momentum, c.weight_decay) for c in grid} == {(0.5, 0.01)}
    assert {c.activation for c in grid} == {"relu", "sigmoid"}
