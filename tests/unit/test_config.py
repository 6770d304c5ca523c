import pytest
from pydantic import ValidationError

from trackflow.config import TrainConfig


@pytest.mark.parametrize(
    "bad, field",
    [
        ({"lr": 0}, "lr"),
        ({"lr": -0.1}, "lr"),
        ({"epochs": 0}, "epochs"),
        ({"test_size": 1.0}, "test_size"),
        ({"test_size": 0}, "test_size"),
        ({"optimizer": "sgd"}, "optimizer"),
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
