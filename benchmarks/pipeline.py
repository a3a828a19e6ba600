"""Requests per SMS: what batching saves, within the spec's one-number-per-request rule.

Default settings except no per-phone cap (so every SMS goes out), the emulator in
its own process. Baseline: one request per SMS, what a plugin that sends each
notification to each phone on its own would make.

- 1,000 alerts of one text to a 250-number group: the alert, then one summary of
  the 999 repeats, each as bulk requests of at most 100 numbers.
- A moment with 20 distinct alerts for one phone and one alert each for 99
  others: a number appears at most once per request (spec 3.2, "Duplicate
  MSISDN"), so that phone's 20 SMS take 20 requests, and the 99 others ride in
  the first one.
"""

from __future__ import annotations

import httpx

from sslsms_notify import GatewayClient, Notifier
from sslsms_notify.alerting import DispatchPolicy
from sslsms_notify.emulator import DEMO_API_TOKEN, DEMO_SID

from ._util import emulator_process, header, row, word


def _notifier(url: str, groups: dict[str, list[str]], **kw: object) -> Notifier:
    return Notifier(
        GatewayClient(DEMO_API_TOKEN, DEMO_SID, base_url=url),
        groups=groups,
        per_recipient_limit=None,
        dispatch=DispatchPolicy(tps=1000),
        close_at_exit=None,
        **kw,  # type: ignore[arg-type]
    )


def main() -> dict[str, float]:
    results: dict[str, float] = {}
    with emulator_process() as url:
        control = httpx.Client(base_url=url)
        header("Requests per SMS", ("requests", "SMS", "one per SMS", "ratio"))

        control.post("/__emulator/reset")
        group = [f"0171{i:07d}" for i in range(250)]
        n = _notifier(url, {"oncall": group})
        for _ in range(1000):
            n.alert("Disk full on db1", severity="critical", source="app.db")
        n.close(60)
        stats = n.stats()
        sms = len(control.get("/__emulator/messages").json()["messages"])
        row(
            "1,000 alerts, one text, 250 phones",
            f"{stats['requests']}",
            f"{sms:,}",
            f"{sms:,}",
            f"{sms / stats['requests']:.0f}x fewer",
        )
        results["storm_requests"] = stats["requests"]

        control.post("/__emulator/reset")
        others = [f"0181{i:07d}" for i in range(99)]
        n = _notifier(url, {"me": ["01711111111"], "others": others}, dedup_window=0)
        for i in range(20):
            n.alert(f"problem {word(i)} on my service", groups=["me"])
        for number in others:
            n.alert(f"your service {number[-4:]} restarted", groups=[number])
        n.close(60)
        stats = n.stats()
        sms = len(control.get("/__emulator/messages").json()["messages"])
        row(
            "20 texts to one phone + 99 to others",
            f"{stats['requests']}",
            f"{sms:,}",
            f"{sms:,}",
            f"{sms / stats['requests']:.1f}x fewer",
        )
        results["one_phone_requests"] = stats["requests"]
    return results


if __name__ == "__main__":
    main()
