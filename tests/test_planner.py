"""The planner: which requests a set of pending SMS becomes (pure, no I/O)."""

from __future__ import annotations

import itertools

from sslsms_notify.alerting.planner import layers, plan_batches
from sslsms_notify.stores import OutboxItem

A, B, C = "8801711111111", "8801811111111", "8801911111111"
_ids = itertools.count()


def item(msisdn: str, text: str = "t", **kw) -> OutboxItem:
    return OutboxItem(kw.pop("csms_id", f"id{next(_ids):04d}"), msisdn, text, 0.0, 0.0, **kw)


def new_id() -> str:
    return f"batch{next(_ids)}"


def test_same_text_is_one_bulk_bound_before_it_is_sent() -> None:
    plan = plan_batches([item(A), item(B), item(C)], new_id)
    [batch] = plan.batches
    assert batch.kind == "bulk" and batch.new and not batch.carried
    assert {i.batch_id for i in batch.items} == {batch.batch_id}
    assert {(i.batch_kind, i.batch_size) for i in batch.items} == {("bulk", 3)}


def test_different_texts_are_one_dynamic_request_bound_too() -> None:
    plan = plan_batches([item(A, "x"), item(B, "y")], new_id)
    [batch] = plan.batches
    assert batch.kind == "dynamic" and batch.batch_id is None  # a dynamic request has no id at the gateway
    assert {(i.batch_kind, i.batch_size) for i in batch.items} == {("dynamic", 2)}
    assert len({i.batch_id for i in batch.items}) == 1


def test_a_bound_request_is_planned_again_whole_with_its_id() -> None:
    members = [item(n, maybe_sent=True).bind("B1", "bulk", 3) for n in (C, A, B)]
    plan = plan_batches([*members, item(A, "other")], new_id)
    bulk = next(b for b in plan.batches if b.kind == "bulk")
    assert bulk.batch_id == "B1" and not bulk.new and bulk.carried
    assert [i.csms_id for i in bulk.items] == sorted(i.csms_id for i in members)  # one order, always


def test_part_of_a_bound_request_is_never_sent() -> None:
    members = [item(n, maybe_sent=True).bind("B2", "bulk", 3) for n in (A, B)]
    plan = plan_batches(members, new_id)
    assert plan.batches == [] and plan.incomplete == members


def test_an_unknown_outcome_outside_any_binding_goes_alone() -> None:
    """Its own csms_id is its only key at the gateway: never merged into a new request."""
    unsure = item(A, "same", maybe_sent=True)
    plan = plan_batches([unsure, item(B, "same"), item(C, "same")], new_id)
    kinds = sorted((b.kind, len(b.items)) for b in plan.batches)
    assert kinds == [("bulk", 2), ("single", 1)]
    single = next(b for b in plan.batches if b.kind == "single")
    assert single.items == [unsure] and single.carried


def test_a_number_once_per_request() -> None:
    plan = plan_batches([item(A, "x"), item(A, "y"), item(B, "x")], new_id)
    for batch in plan.batches:
        assert len({i.msisdn for i in batch.items}) == len(batch.items)
    assert sum(len(b.items) for b in plan.batches) == 3


def test_150_numbers_are_two_bulks_each_bound_apart() -> None:
    plan = plan_batches([item(f"88017{i:08d}") for i in range(150)], new_id)
    assert sorted(len(b.items) for b in plan.batches) == [50, 100]
    assert len({b.batch_id for b in plan.batches}) == 2
    for batch in plan.batches:
        assert {i.batch_size for i in batch.items} == {len(batch.items)}


def test_layers_put_the_kth_sms_of_a_number_in_layer_k() -> None:
    out = layers([item(A, "1"), item(A, "2"), item(B, "1")])
    assert [[i.msisdn for i in layer] for layer in out] == [[A, B], [A]]
