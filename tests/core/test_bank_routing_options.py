"""``BankRouting``: the bank routing options, one checked value for the core and both bindings (issue 17)."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from tiny_models import bag_of_words

from lift_integrations import BankRouter, BankRouting, MemoryBank, MemoryRouter
from lift_integrations.bank_router import BANK_LEXICAL_WEIGHT, BANK_QUANTILE
from lift_integrations.routing import CALIBRATION_QUANTILE, LEXICAL_WEIGHT, text_memory

ARTICLES = {
    "harbour": (
        "Vellmouth Harbour",
        "Vellmouth Harbour was dredged in 1878 by engineer Tomas Greer. Fishing boats unload herring at "
        "the eastern quay, and a lighthouse called Old Kestrel guards the breakwater.",
    ),
    "orchard": (
        "Brambleigh Orchard",
        "Brambleigh Orchard grows forty kinds of pears. The orchard was planted by the widow Agnes "
        "Pellow, and its cider press dates from 1796. Beekeepers rent hives among the trees each spring.",
    ),
}
ABOUT = "Who dredged Vellmouth Harbour?"
UNRELATED = "What is the capital of France?"


@pytest.fixture(scope="module")
def bank() -> MemoryBank:
    return MemoryBank({name: text_memory([article]) for name, article in ARTICLES.items()})


def test_the_default_is_the_bank_rule_and_each_calibration_has_its_own_defaults() -> None:
    routing = BankRouting()
    assert routing.margin == 0.0 and routing.calibration == "bank"
    assert routing.quantile is None and routing.lexical_weight is None  # the calibration's own
    assert routing.resolved() == BankRouting(quantile=BANK_QUANTILE, lexical_weight=BANK_LEXICAL_WEIGHT)
    # A bank calibrated memory by memory keeps MemoryRouter's constants unless told otherwise.
    for calibration in ("per_memory", "joint"):
        resolved = BankRouting(calibration=calibration).resolved()
        assert (resolved.quantile, resolved.lexical_weight) == (CALIBRATION_QUANTILE, LEXICAL_WEIGHT)
    assert BankRouting(calibration="per_memory", quantile=0.9).resolved().quantile == 0.9
    assert BankRouting.of(None) == routing and BankRouting.of({}) == routing


def test_options_round_trip_through_json() -> None:
    routing = BankRouting(margin=0.05, calibration="joint", quantile=0.9, lexical_weight=0)
    assert isinstance(routing.lexical_weight, float)  # an int is kept as a float
    again = BankRouting.of(json.loads(json.dumps(routing.to_dict())))
    assert again == routing and BankRouting.of(routing) is routing
    assert BankRouting.of({"margin": 0.1}) == BankRouting(margin=0.1)


@pytest.mark.parametrize(
    ("options", "error", "message"),
    [
        ({"calibration": "global"}, ValueError, "calibration must be one of per_memory, joint, bank"),
        ({"calibration": None}, ValueError, "calibration must be"),
        ({"margin": float("nan")}, ValueError, "margin must be a finite number"),
        ({"margin": float("inf")}, ValueError, "margin must be a finite number"),
        ({"margin": True}, TypeError, "margin must be a finite number"),
        ({"margin": "0.1"}, TypeError, "margin must be a finite number"),
        ({"quantile": 1.5}, ValueError, "quantile must be a finite number >= 0 and <= 1"),
        ({"quantile": -0.1}, ValueError, "quantile must be"),
        ({"lexical_weight": -1}, ValueError, "lexical_weight must be a finite number >= 0"),
    ],
)
def test_bad_options_are_refused_by_name(
    options: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        BankRouting(**options)
    with pytest.raises(error, match=message):
        BankRouting.of(options)


def test_unknown_options_and_other_types_are_refused(bank: MemoryBank) -> None:
    with pytest.raises(ValueError, match=r"unknown bank routing options \['marg'\]"):
        BankRouting.of({"marg": 0.1})
    with pytest.raises(TypeError, match="must be a BankRouting, a dict"):
        BankRouting.of(0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="calibration must be"):
        BankRouter(bank, embed=bag_of_words, calibration="global")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="margin must be"):
        MemoryRouter(text_memory([ARTICLES["harbour"]]), margin=True)


def test_the_router_takes_the_options_whole_or_one_by_one(bank: MemoryBank) -> None:
    default = BankRouter(bank, embed=bag_of_words)
    assert default.routing == BankRouting().resolved()  # the options in use
    raised = bank.router(embed=bag_of_words, routing=BankRouting(margin=0.1))
    assert raised.routing.margin == 0.1 and raised.margin == 0.1
    np.testing.assert_allclose(raised.thresholds - default.thresholds, 0.1, atol=1e-6)
    # A keyword overrides the same option of ``routing`` and keeps the others.
    both = BankRouter(bank, embed=bag_of_words, routing={"margin": 0.1, "quantile": 0.9}, margin=0.2)
    assert both.routing == BankRouting(margin=0.2, quantile=0.9).resolved()
    joint = BankRouter(bank, embed=bag_of_words, routing=BankRouting(calibration="joint"))
    by_keyword = bank.router(embed=bag_of_words, calibration="joint")
    assert joint.calibration == "joint"
    np.testing.assert_array_equal(joint.thresholds, by_keyword.thresholds)


def test_margin_moves_questions_between_a_memory_and_the_base_model(bank: MemoryBank) -> None:
    default = bank.router(embed=bag_of_words)
    assert default.route_many([ABOUT, UNRELATED]) == ["harbour", None]
    excess = float((default.relevance([ABOUT]) - default.thresholds)[0].max())
    assert excess > 0
    # Just above the question's lead over its memory's threshold: the base model answers it.
    assert bank.router(embed=bag_of_words, routing={"margin": excess + 1e-3}).route(ABOUT) is None
    assert bank.router(embed=bag_of_words, routing={"margin": excess - 1e-3}).route(ABOUT) == "harbour"
    # A negative margin lets a memory claim the unrelated question.
    assert bank.router(embed=bag_of_words, routing={"margin": -2.0}).route(UNRELATED) is not None
