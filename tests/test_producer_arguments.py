"""A producer given the wrong kind of argument says so, naming what is wrong."""

from typing import Any

import pytest

from codex_bot.testing import InMemoryStreamStorage


@pytest.mark.parametrize("data", ["chat_id=42", [("chat_id", 42)], None, 42])
def test_data_that_is_not_a_mapping_is_refused(data: Any) -> None:
    with pytest.raises(TypeError, match=r"data must be a mapping \(a dict\) of field names"):
        InMemoryStreamStorage().add_event("s", "order.paid", data)


@pytest.mark.parametrize("event_type", [42, b"order.paid", None])
def test_an_event_type_that_is_not_a_string_is_refused(event_type: Any) -> None:
    with pytest.raises((TypeError, ValueError), match="event_type must be a non-empty string"):
        InMemoryStreamStorage().add_event("s", event_type, {"chat_id": 1})


def test_a_value_json_cannot_encode_names_its_field() -> None:
    with pytest.raises(TypeError, match=r"field 'when': .*not JSON serializable"):
        InMemoryStreamStorage().add_event("s", "x", {"chat_id": 1, "when": object()})
