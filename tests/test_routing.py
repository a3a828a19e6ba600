"""Routing (alerting/routing.py): which groups, and so which phones, an alert pages.

The rules as the configuration page states them: an alert naming its groups goes there;
otherwise every matching route adds its groups (``stop`` ends the search); with routes
configured an alert matching none pages nobody; with none at all it goes to ``default``
(else the first group). Bad specs are refused naming the field.
"""

from __future__ import annotations

import pytest

from sslsms_notify.alerting.alert import Alert, Severity
from sslsms_notify.alerting.routing import Route, Router, source_matches

ONCALL, DBA, CHIEF = "8801711111111", "8801811111111", "8801911111111"
GROUPS = {"oncall": [ONCALL], "dba": [DBA, "01711111111"], "chief": [CHIEF]}


def alert(text: str = "x", **kw) -> Alert:
    return Alert(text, **kw)


# -- Route.parse ----------------------------------------------------------------------------
def test_a_route_parses_lists_and_comma_separated_text() -> None:
    route = Route.parse(
        {"groups": "oncall, dba", "min_severity": "critical", "sources": ["app.db"], "tags": "prod,eu"}
    )
    assert route == Route(("oncall", "dba"), Severity.CRITICAL, ("app.db",), frozenset({"prod", "eu"}))


@pytest.mark.parametrize(
    ("spec", "says"),
    [
        ({"groups": ["oncall"], "severity": "error"}, "route has unknown field(s): severity"),
        ({"min_severity": "error"}, "route.groups must name at least one group"),
        ({"groups": " , "}, "route.groups must name at least one group"),
        ({"groups": 5}, "route.groups must be a list of names"),
        ({"groups": ["oncall"], "tags": 3}, "route.tags must be a list of names"),
        ({"groups": ["oncall"], "min_severity": "loud"}, "loud"),
    ],
)
def test_a_bad_route_is_refused_naming_the_field(spec, says) -> None:
    with pytest.raises(ValueError) as info:
        Route.parse(spec)
    assert says in str(info.value)


# -- Route.matches ------------------------------------------------------------------------
def test_min_severity_is_at_or_above() -> None:
    route = Route(("oncall",), min_severity=Severity.ERROR)
    assert route.matches(alert(severity=Severity.ERROR))
    assert route.matches(alert(severity=Severity.CRITICAL))
    assert not route.matches(alert(severity=Severity.WARNING))


@pytest.mark.parametrize(
    ("source", "prefix", "matches"),
    [
        ("app.db", "app.db", True),
        ("app.db.pool", "app.db", True),
        ("app.dbx", "app.db", False),  # a prefix of names, not of characters
        ("app", "app.db", False),
        ("anything", "*", True),
        ("anything", "", True),
    ],
)
def test_sources_are_logger_name_prefixes(source, prefix, matches) -> None:
    assert source_matches(source, prefix) is matches
    assert Route(("oncall",), sources=(prefix,)).matches(alert(source=source)) is matches


def test_every_tag_of_a_route_must_be_on_the_alert() -> None:
    route = Route(("oncall",), tags=frozenset({"prod", "db"}))
    assert route.matches(alert(tags=frozenset({"prod", "db", "eu"})))
    assert not route.matches(alert(tags=frozenset({"prod"})))


def test_all_conditions_of_a_route_must_hold() -> None:
    route = Route(("oncall",), Severity.ERROR, ("app.db",), frozenset({"prod"}))
    good = {"severity": Severity.ERROR, "source": "app.db", "tags": frozenset({"prod"})}
    assert route.matches(alert(**good))
    for spoil in ({"severity": Severity.INFO}, {"source": "web"}, {"tags": frozenset()}):
        assert not route.matches(alert(**{**good, **spoil}))


# -- Router --------------------------------------------------------------------------------
def test_group_numbers_are_normalised_and_repeats_dropped_in_order() -> None:
    router = Router(GROUPS)
    assert router.numbers("dba") == (DBA, "8801711111111")
    assert Router({"g": "01711111111, +8801711111111,01811111111"}).numbers("g") == (ONCALL, DBA)


def test_a_bad_number_in_a_group_names_its_place() -> None:
    with pytest.raises(ValueError) as info:
        Router({"oncall": [ONCALL, "12345"]})
    assert "groups.oncall[1]" in str(info.value)


def test_without_routes_alerts_go_to_default_else_the_first_group() -> None:
    assert Router(GROUPS).group_names(alert()) == ("oncall",)
    assert Router({**GROUPS, "default": [CHIEF]}).group_names(alert()) == ("default",)


def test_with_routes_every_match_adds_its_groups_once_in_order() -> None:
    routes = [
        Route(("oncall",)),
        Route(("dba", "oncall"), sources=("app.db",)),
        Route(("chief",), min_severity=Severity.CRITICAL),
    ]
    router = Router(GROUPS, routes)
    assert router.group_names(alert(source="app.db")) == ("oncall", "dba")
    assert router.group_names(alert(source="app.db", severity=Severity.CRITICAL)) == (
        "oncall",
        "dba",
        "chief",
    )


def test_stop_ends_the_search_at_the_first_match_that_has_it() -> None:
    routes = [Route(("dba",), sources=("app.db",), stop=True), Route(("oncall",))]
    router = Router(GROUPS, routes)
    assert router.group_names(alert(source="app.db.pool")) == ("dba",)
    assert router.group_names(alert(source="web")) == ("oncall",)


def test_with_routes_an_alert_matching_none_pages_nobody() -> None:
    router = Router(GROUPS, [Route(("chief",), min_severity=Severity.CRITICAL)])
    assert router.group_names(alert(severity=Severity.ERROR)) == ()


def test_default_groups_catch_what_no_route_matches() -> None:
    router = Router(GROUPS, [Route(("chief",), min_severity=Severity.CRITICAL)], default_groups=["dba"])
    assert router.group_names(alert(severity=Severity.ERROR)) == ("dba",)


def test_an_alert_naming_its_groups_bypasses_the_routes() -> None:
    router = Router(GROUPS, [Route(("chief",), min_severity=Severity.CRITICAL)])
    assert router.group_names(alert(groups=("dba", "dba", "oncall"))) == ("dba", "oncall")


def test_a_number_typed_as_a_group_is_its_own_group() -> None:
    router = Router(GROUPS)
    assert router.group_names(alert(groups=("01912345678",))) == ("01912345678",)
    assert router.numbers("01912345678") == ("8801912345678",)


@pytest.mark.parametrize(
    ("build", "where"),
    [
        (lambda: Router(GROUPS, [Route(("dbas",))]), "route names unknown group 'dbas'"),
        (lambda: Router(GROUPS, default_groups=["ops"]), "default_groups names unknown group 'ops'"),
        (lambda: Router(GROUPS).group_names(alert(groups=("ops",))), "alert.groups names unknown group"),
    ],
)
def test_an_unknown_group_is_refused_listing_the_known_ones(build, where) -> None:
    with pytest.raises(ValueError) as info:
        build()
    assert where in str(info.value)
    assert "(groups: chief, dba, oncall)" in str(info.value)
