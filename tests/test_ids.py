from __future__ import annotations

import multiprocessing

from sslsms_notify.gateway.ids import check_csms_id, is_valid_csms_id, new_csms_id


def _make_ids(count: int) -> list[str]:
    return [new_csms_id() for _ in range(count)]


def test_ids_are_at_most_20_alphanumeric() -> None:
    for _ in range(1000):
        value = new_csms_id()
        assert len(value) == 20 and value.isalnum() and value.isascii()
        assert is_valid_csms_id(value)


def test_ids_are_unique_across_processes_without_coordination() -> None:
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(4) as pool:
        batches = pool.map(_make_ids, [20_000] * 4)
    everything = [i for batch in batches for i in batch] + _make_ids(20_000)
    assert len(set(everything)) == len(everything) == 100_000


def test_ids_sort_by_creation_time() -> None:
    assert new_csms_id(now=1_000) < new_csms_id(now=2_000)


def test_invalid_ids_name_the_rule() -> None:
    for bad in ["", "a" * 21, "abc-123", "ab c", None, 12]:
        assert not is_valid_csms_id(bad)
    try:
        check_csms_id("bad id", field="batch_csms_id")
    except ValueError as exc:
        assert "batch_csms_id 'bad id'" in str(exc) and "1 to 20 letters or digits" in str(exc)
    else:
        raise AssertionError("expected ValueError")
