"""Recovery of an endpoint's failed messages: requested through the API (202), carried out by the
``webhooks.recover`` task in bounded batches that resume where the last committed one stopped, audited when
requested and when finished."""

from __future__ import annotations

import base64
import datetime as dt
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from django.utils import timezone

from services.kit.models import OutboxEvent
from services.webhooks import services
from services.webhooks.models import Delivery, DeliveryState, Endpoint, Message, Recovery
from tests.problems import assert_problem
from tests.webhooks.conftest import WebhooksAPI
from workers.webhooks import recover
from workers.webhooks import recoveries_resume as resume

pytestmark = pytest.mark.django_db


def audits(action: str, outcome: str | None = None) -> list[dict[str, Any]]:
    events = [e.payload for e in OutboxEvent.objects.filter(topic="audit").order_by("created_at", "id")]
    return [e for e in events if e["action"] == action and (outcome is None or e["outcome"] == outcome)]


@pytest.fixture
def recoveries_sent(settings: Any) -> Iterator[Callable[[], list[str]]]:
    """The recoveries sent to the workers, read from the broker's real ``webhooks`` queue (kombu's Redis list):
    emptied before and after; the test runs the task itself."""
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("webhooks")

    def sent() -> list[str]:
        out = []
        for raw in reversed(broker.lrange("webhooks", 0, -1)):  # LPUSHed: oldest last
            message = json.loads(raw)
            if message["headers"].get("task") == "webhooks.recover":
                args, _, _ = json.loads(base64.b64decode(message["body"]))
                out.append(args[0])
        return out

    yield sent
    broker.delete("webhooks")
    broker.close()


def failed_deliveries(endpoint: Endpoint, ages_hours: list[float], state: str = DeliveryState.FAILED) -> list[Delivery]:
    """One message per age (created that many hours ago) with a delivery to ``endpoint`` in ``state``."""
    now = timezone.now()
    out = []
    for index, age in enumerate(ages_hours):
        at = now - dt.timedelta(hours=age)
        message = Message.objects.create(
            event_id=f"evt-{endpoint.id}-{index}-{age}",
            type="payment.settled",
            body="{}",
            occurred_at=at,
            source="test",
            created_at=at,
        )
        message.refresh_from_db()
        out.append(
            Delivery.objects.create(
                message=message, endpoint=endpoint, msg_seq=message.seq, state=state, attempts=8, created_at=at
            )
        )
    return out


def test_a_recovery_is_queued_then_resends_every_failed_delivery_in_the_window(
    api, endpoint_make, recoveries_sent, django_capture_on_commit_callbacks
):
    endpoint = endpoint_make(event_types=["payment.*"])
    other = endpoint_make(event_types=["payment.*"])
    old = failed_deliveries(endpoint, [30])  # before the window
    inside = failed_deliveries(endpoint, [10, 5, 1])
    succeeded = failed_deliveries(endpoint, [4], state=DeliveryState.SUCCEEDED)
    elsewhere = failed_deliveries(other, [3])
    since = (timezone.now() - dt.timedelta(hours=20)).isoformat()

    with django_capture_on_commit_callbacks(execute=True):  # the task is sent once the request committed
        response = api.post(f"endpoints/{endpoint.id}/recover", {"since": since})

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["id"].startswith("rcv_")
    assert (body["endpoint"], body["state"], body["recovered"]) == (endpoint.id, "queued", 0)
    assert body["requested_by"]["id"] == "cli_test"
    assert body["until"]
    assert recoveries_sent() == [body["id"]]
    [requested] = audits("webhooks.recovery.requested")
    assert requested["object"] == {"type": "recovery", "id": body["id"]}
    assert requested["metadata"]["endpoint"] == endpoint.id

    result = recover.apply(args=[body["id"]]).get()

    assert result["finished"] is True
    assert {d.id for d in Delivery.objects.filter(state="pending")} == {d.id for d in inside}
    for delivery in Delivery.objects.filter(id__in=[d.id for d in inside]):
        assert delivery.attempts == 0
        assert delivery.next_attempt_at <= timezone.now()
        assert delivery.trigger == "recovery"
    assert Delivery.objects.get(id=old[0].id).state == "failed"
    assert Delivery.objects.get(id=succeeded[0].id).state == "succeeded"
    assert Delivery.objects.get(id=elsewhere[0].id).state == "failed"
    shown = api.get(f"recoveries/{body['id']}").json()
    assert (shown["state"], shown["recovered"]) == ("done", 3)
    [finished] = audits("webhooks.recovery.finished")
    assert finished["metadata"]["recovered"] == 3
    assert finished["request_id"] == requested["request_id"]  # the request that asked, found from the job


def test_until_bounds_the_window(api, endpoint_make, recoveries_sent):
    endpoint = endpoint_make()
    failed_deliveries(endpoint, [10, 5, 1])
    now = timezone.now()
    body = api.post(
        f"endpoints/{endpoint.id}/recover",
        {"since": (now - dt.timedelta(hours=12)).isoformat(), "until": (now - dt.timedelta(hours=3)).isoformat()},
    ).json()

    recover.apply(args=[body["id"]]).get()

    assert Delivery.objects.filter(state="pending").count() == 2


def test_a_recovery_works_in_bounded_batches_and_resumes_after_a_crash(
    api, endpoint_make, recoveries_sent, settings, django_capture_on_commit_callbacks
):
    endpoint = endpoint_make()
    deliveries = failed_deliveries(endpoint, [9, 8, 7, 6, 5])
    with django_capture_on_commit_callbacks(execute=True):
        recovery = api.post(
            f"endpoints/{endpoint.id}/recover", {"since": (timezone.now() - dt.timedelta(hours=10)).isoformat()}
        ).json()
    settings.WEBHOOKS_RECOVERY_BATCH = 2

    # the first run does two and asks for another run
    assert recover.apply(args=[recovery["id"]]).get()["finished"] is False
    assert recoveries_sent() == [recovery["id"], recovery["id"]]
    first = Recovery.objects.get(id=recovery["id"])
    assert (first.state, first.recovered, first.cursor_seq) == ("running", 2, deliveries[1].msg_seq)
    assert Delivery.objects.filter(state="pending").count() == 2

    # a worker that died here lost nothing: the next run goes on from the cursor, never twice over a delivery
    Delivery.objects.filter(id=deliveries[0].id).update(state=DeliveryState.FAILED)  # failed again meanwhile
    assert services.recovery_step(recovery_id=recovery["id"], batch=2) is False
    assert services.recovery_step(recovery_id=recovery["id"], batch=2) is True
    done = Recovery.objects.get(id=recovery["id"])
    assert (done.state, done.recovered) == ("done", 5)
    assert Delivery.objects.get(id=deliveries[0].id).state == "failed"  # behind the cursor: left alone
    # a finished recovery run again does nothing
    assert services.recovery_step(recovery_id=recovery["id"]) is True
    assert Recovery.objects.get(id=recovery["id"]).recovered == 5
    assert len(audits("webhooks.recovery.finished")) == 1


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({}, 400, "validation_error"),
        ({"since": "yesterday"}, 400, "validation_error"),
        ({"since": "2026-01-01T00:00:00Z", "extra": 1}, 400, "validation_error"),
        ({"since": "2999-01-01T00:00:00Z"}, 422, "invalid_recovery_window"),
        ({"since": "2026-01-02T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, 422, "invalid_recovery_window"),
        ({"since": "2026-01-01T00:00:00Z", "until": "2026-01-01T00:00:00Z"}, 422, "invalid_recovery_window"),
    ],
)
def test_a_bad_window_is_refused_and_audited(api, endpoint_make, recoveries_sent, body, status, code):
    endpoint = endpoint_make()
    assert_problem(api.post(f"endpoints/{endpoint.id}/recover", body), status, code)
    assert Recovery.objects.count() == 0
    assert recoveries_sent() == []
    assert audits("webhooks.recovery.requested", "failure")[0]["metadata"]["code"] == code


def test_a_disabled_endpoint_is_not_recovered(api, endpoint_make, recoveries_sent):
    endpoint = endpoint_make(enabled=False, disabled_reason="failing")
    body = assert_problem(
        api.post(f"endpoints/{endpoint.id}/recover", {"since": "2026-01-01T00:00:00Z"}), 409, "endpoint_disabled"
    )
    assert body["disabled_reason"] == "failing"
    assert Recovery.objects.count() == 0


def test_an_unknown_recovery_is_404_and_reading_needs_only_read(api, endpoint_make, recoveries_sent):
    endpoint = endpoint_make()
    assert_problem(api.get("recoveries/rcv_00000000000000000000000000"), 404, "recovery_not_found")
    recovery = api.post(f"endpoints/{endpoint.id}/recover", {"since": "2026-01-01T00:00:00Z"}).json()
    reader: WebhooksAPI = api.as_client("cli_reader", scope="webhooks:read")
    assert reader.get(f"recoveries/{recovery['id']}").status_code == 200
    assert_problem(
        reader.post(f"endpoints/{endpoint.id}/recover", {"since": "2026-01-01T00:00:00Z"}), 403, "insufficient_scope"
    )


def test_an_unknown_recovery_task_finishes_at_once():
    assert recover.apply(args=["rcv_00000000000000000000000000"]).get()["finished"] is True


def test_a_recovery_whose_message_was_lost_is_sent_again_by_beat(api, endpoint_make, recoveries_sent):
    # given a recovery requested while nothing reached the broker (no commit hook ran), and a finished one
    endpoint = endpoint_make()
    lost = api.post(f"endpoints/{endpoint.id}/recover", {"since": "2026-01-01T00:00:00Z"}).json()
    finished = api.post(f"endpoints/{endpoint.id}/recover", {"since": "2026-01-01T00:00:00Z"}).json()
    services.recovery_step(recovery_id=finished["id"])
    assert recoveries_sent() == []

    # when beat's task runs: at first the lost one is too recent to be called lost
    assert resume.apply().get() == []
    Recovery.objects.update(updated_at=timezone.now() - dt.timedelta(minutes=5))
    resent = resume.apply().get()

    # then only the unfinished one is sent again, and it runs
    assert resent == [lost["id"]]
    assert recoveries_sent() == [lost["id"]]
    assert recover.apply(args=[lost["id"]]).get()["finished"] is True
    assert Recovery.objects.get(id=lost["id"]).state == "done"
