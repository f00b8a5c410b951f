"""Pure tests of the wire protocol: every message round-trips, every bad input is refused."""

from __future__ import annotations

import json
from typing import Any

import pytest

from broker import protocol as p
from broker.errors import ProtocolError

JOB_ID = "AbCdEfGhIjKlMnOpQrStUv"

SAMPLES: list[p.Message] = [
    p.Submit(
        req=1,
        task="report",
        args=b'{"region":"eu","year":2026}',
        ttl_s=60.5,
        force=True,
        priority="high",
        delay_s=1.5,
        run_at=1_700_000_000.25,
        scope="tenant-a",
        max_attempts=5,
        timeout_s=30.0,
    ),
    p.SubmitGroup(
        req=11,
        task="db_query",
        args=b'[{"n":1},{"n":2}]',
        ttl_s=5.0,
        force=True,
        priority="low",
        scope="t",
        max_attempts=2,
        timeout_s=9.0,
    ),
    p.SubmitMany(
        req=12,
        task="fetch_feed",
        args=b'[{"url":"a"},{"url":"b"}]',
        ttl_s=0.0,
        priority="high",
        delay_s=2.0,
        scope="s",
        max_attempts=1,
        timeout_s=3.0,
    ),
    p.Status(req=2, id=JOB_ID),
    p.Cancel(req=3, id=JOB_ID),
    p.Wait(req=4, id=JOB_ID),
    p.WaitMany(req=40, ids=[JOB_ID, "x" * 22]),
    p.Stats(req=5),
    p.Pause(req=10, task="report"),
    p.Resume(req=11, task="report"),
    p.Snapshot(req=6, job={"id": JOB_ID, "state": "done", "done": 3, "total": 3}, result=b'{"rows":[1,2,3]}'),
    p.Counters(req=7, stats={"queued": 2, "workers": 1, "tasks": ["echo"]}, metrics=b'{"tasks":{}}'),
    p.Error(req=8, code="unknown_job", message="no such job"),
    p.Ready(
        tasks=["echo", "report"],
        options={"echo": {"ttl_s": 10, "max_attempts": 2}},
        pid=4242,
        host="box-1",
        prefetch=16,
    ),
    p.Heartbeat(),
    p.Log(id=JOB_ID, attempt=1, lines=["connected", "<script>x</script>", "ünïcode"]),
    p.Assign(id=JOB_ID, task="echo", attempt=2, args=b'{"x":1}', timeout_s=12.5),
    p.Done(
        id=JOB_ID,
        attempt=2,
        result=b'{"ok":true}',
        last={"done": 9, "total": 10, "message": "almost"},
        run_s=0.25,
    ),
    p.Failed(
        id=JOB_ID, attempt=1, error={"type": "ValueError", "message": "bad", "traceback": "tb"}, retry=False
    ),
    p.Release(id=JOB_ID, attempt=2),
    p.Stop(id=JOB_ID, attempt=3),
    p.Bye(),
    p.Progress(id=JOB_ID, attempt=1, done=4, total=10, message="step 4"),
    p.Event(
        id=JOB_ID,
        seq=9,
        epoch=2,
        state="running",
        done=4,
        total=10,
        message="step 4",
        eta_s=6.0,
        ts=1_700_000_000.5,
        attempts=1,
        error=None,
        extra={"position": 0},
    ),
    p.ListJobs(req=9, state="failed", task="report", limit=1000),
    p.JobList(req=10, views=b'[{"id":"x","state":"failed"}]'),
    p.Retry(req=11, id=JOB_ID),
]


def frames_of(cls: type[Any], header: dict[str, Any], *payload: bytes) -> list[bytes]:
    """Hand-built direct frames (bypassing ``encode``) with a given header."""
    return [p.TAG, p.COMMAND_OF[cls].value, json.dumps(header).encode(), *payload]


def refuse(frames: list[bytes], phrase: str) -> None:
    """``decode`` raises ProtocolError naming ``phrase``; a good message still decodes."""
    with pytest.raises(ProtocolError, match=phrase):
        p.decode(frames)
    assert p.decode(p.encode(p.Stats(req=1))) == p.Stats(req=1)


def test_samples_cover_every_message_type() -> None:
    assert {type(msg) for msg in SAMPLES} == set(p.COMMAND_OF)


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda msg: type(msg).__name__)
def test_round_trip(msg: p.Message) -> None:
    frames = p.encode(msg)
    assert all(isinstance(frame, bytes) for frame in frames)
    assert p.decode(frames) == msg


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda msg: type(msg).__name__)
def test_frame_layout(msg: p.Message) -> None:
    frames = p.encode(msg)
    published = type(msg) in p.PUBLISHED
    if published:
        assert frames[0] == msg.id.encode()  # type: ignore[union-attr]
        frames = frames[1:]
    assert frames[0] == p.TAG
    assert frames[1] == p.COMMAND_OF[type(msg)].value
    header = json.loads(frames[2])
    assert isinstance(header, dict)
    payload_field = p.PAYLOAD_FIELD.get(type(msg))
    if payload_field is None:
        assert len(frames) == 3
    else:
        assert payload_field not in header
        assert frames[3] == getattr(msg, payload_field)


def test_snapshot_without_result_has_no_payload_frame() -> None:
    msg = p.Snapshot(req=1, job={"id": JOB_ID, "state": "queued"})
    frames = p.encode(msg)
    assert len(frames) == 3
    assert p.decode(frames) == msg


def test_defaults_round_trip() -> None:
    msg = p.Submit(req=1, task="echo", args=b"{}")
    assert p.decode(p.encode(msg)) == msg
    assert p.decode(p.encode(p.Error(code="x", message="y"))) == p.Error(req=0, code="x", message="y")


def test_int_accepted_for_float_field() -> None:
    msg = p.decode(frames_of(p.Assign, {"id": JOB_ID, "task": "t", "attempt": 1, "timeout_s": 5}, b"{}"))
    assert isinstance(msg, p.Assign)
    assert msg.timeout_s == 5


def test_command_words_are_readable_ascii() -> None:
    for command in p.Command:
        assert command.value.isalpha() and command.value.isupper()


# --- one test per rejection reason -------------------------------------------------------


def test_rejects_empty() -> None:
    refuse([], "empty message")


def test_rejects_truncated() -> None:
    refuse([p.TAG, p.Command.SUBMIT.value], "truncated")


def test_rejects_unknown_command() -> None:
    refuse([p.TAG, b"EXPLODE", b"{}"], "unknown command b'EXPLODE'")


def test_rejects_wrong_tag() -> None:
    refuse([b"JC02", p.Command.STATS.value, b'{"req":1}'], "wrong protocol tag")


def test_rejects_too_many_frames() -> None:
    refuse([p.TAG, p.Command.STATS.value, b'{"req":1}', b"", b"", b""], "too many frames")


def test_rejects_extra_frame_on_a_message_without_payload() -> None:
    refuse([p.TAG, p.Command.STATS.value, b'{"req":1}', b"extra"], "Stats takes at most 3 frames")


def test_rejects_oversized_header() -> None:
    header = json.dumps({"req": 1, "pad": "x" * p.MAX_HEADER_BYTES}).encode()
    refuse([p.TAG, p.Command.STATS.value, header], f"header exceeds {p.MAX_HEADER_BYTES} bytes")


def test_rejects_oversized_args_payload() -> None:
    args = b"[" + b"0," * (p.MAX_ARGS_BYTES // 2) + b"0]"
    assert len(args) > p.MAX_ARGS_BYTES
    frames = p.encode(p.Submit(req=1, task="echo", args=args))
    refuse(frames, f"payload exceeds {p.MAX_ARGS_BYTES} bytes")


def test_args_at_the_bound_are_accepted() -> None:
    args = b"x" * p.MAX_ARGS_BYTES
    msg = p.decode(p.encode(p.Submit(req=1, task="echo", args=args)))
    assert isinstance(msg, p.Submit)
    assert len(msg.args) == p.MAX_ARGS_BYTES


def test_rejects_oversized_message_before_parsing() -> None:
    huge = b"x" * (p.MAX_RESULT_BYTES + p.MAX_HEADER_BYTES + 2048)
    refuse([p.TAG, p.Command.DONE.value, b"not even json", huge], "message exceeds")


def test_rejects_oversized_topic() -> None:
    long_id = "x" * (p.MAX_TOPIC_BYTES + 1)
    frames = p.encode(p.Progress(id=long_id, attempt=1, done=0, total=1))
    refuse(frames, f"topic exceeds {p.MAX_TOPIC_BYTES} bytes")


def test_rejects_non_json_header() -> None:
    refuse([p.TAG, p.Command.STATS.value, b"{req: 1"], "header is not JSON")


def test_rejects_non_utf8_header() -> None:
    refuse([p.TAG, p.Command.STATS.value, b'{"req":1, "\xff":2}'], "header is not JSON")


def test_rejects_header_not_an_object() -> None:
    refuse([p.TAG, p.Command.STATS.value, b"[1]"], "header must be a JSON object")


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_rejects_nan_in_header(constant: bytes) -> None:
    header = b'{"id":"' + JOB_ID.encode() + b'","seq":1,"epoch":1,"state":"running","eta_s":'
    frames = [JOB_ID.encode(), p.TAG, p.Command.EVENT.value, header + constant + b"}"]
    refuse(frames, f"header is not JSON: {constant.decode()} is not allowed")


def test_rejects_str_for_int() -> None:
    refuse(frames_of(p.Stats, {"req": "1"}), r"Stats\.req: wrong type str")


def test_rejects_bool_for_int() -> None:
    refuse(frames_of(p.Stats, {"req": True}), r"Stats\.req: wrong type bool")


def test_rejects_bool_for_float() -> None:
    header = {"req": 1, "task": "t", "ttl_s": True}
    refuse(frames_of(p.Submit, header, b"{}"), r"Submit\.ttl_s: wrong type bool")


def test_rejects_wrong_list_item_type() -> None:
    refuse(frames_of(p.Ready, {"tasks": ["echo", 3]}), r"Ready\.tasks: wrong type list")


def test_rejects_object_for_list() -> None:
    refuse(frames_of(p.Ready, {"tasks": {"echo": 1}}), r"Ready\.tasks: wrong type dict")


def test_rejects_null_for_required_field() -> None:
    refuse(frames_of(p.Status, {"req": 1, "id": None}), r"Status\.id: wrong type NoneType")


def test_rejects_unknown_field() -> None:
    refuse(frames_of(p.Status, {"req": 1, "id": JOB_ID, "admin": True}), "unknown field 'admin'")


def test_rejects_missing_required_field() -> None:
    refuse(frames_of(p.Status, {"req": 1}), r"Status: .*missing .*'id'")


def test_rejects_submit_without_args_payload() -> None:
    refuse(frames_of(p.Submit, {"req": 1, "task": "echo"}), r"Submit\.args: wrong type NoneType")


def test_rejects_published_message_without_topic() -> None:
    frames = p.encode(p.Progress(id=JOB_ID, attempt=1, done=1, total=2))
    refuse(frames[1:], "Progress must be published")


def test_rejects_direct_message_with_topic() -> None:
    frames = p.encode(p.Status(req=1, id=JOB_ID))
    refuse([JOB_ID.encode(), *frames], "Status must not be published")


def test_rejects_topic_different_from_id() -> None:
    frames = p.encode(p.Event(id=JOB_ID, seq=1, epoch=1, state="queued"))
    refuse([b"another-job-id", *frames[1:]], "topic does not match")


@pytest.mark.parametrize("field", ["id", "message"])
def test_rejects_lone_surrogate_in_header_strings(field: str) -> None:
    # JSON can smuggle a lone surrogate in with \ud800; such a str cannot be encoded
    # again (UnicodeEncodeError deep inside the broker), so decode refuses it up front.
    header = {"id": JOB_ID, "attempt": 1, "done": 1, "total": 2, "message": "ok", field: "\ud800"}
    topic = "\ud800".encode("utf-8", "surrogatepass") if field == "id" else JOB_ID.encode()
    frames = [topic, p.TAG, p.Command.PROGRESS.value, json.dumps(header).encode()]
    refuse(frames, "lone surrogate")


def test_rejects_lone_surrogate_in_list_item() -> None:
    refuse(frames_of(p.Ready, {"tasks": ["ok", "\udc80"]}), "lone surrogate")


def test_encode_refuses_nan() -> None:
    with pytest.raises(ValueError):
        p.encode(p.Event(id=JOB_ID, seq=1, epoch=1, state="running", eta_s=float("nan")))


def test_list_jobs_defaults_round_trip() -> None:
    msg = p.ListJobs(req=1)
    assert p.decode(p.encode(msg)) == p.ListJobs(req=1, state=None, task=None, limit=50)


def test_rejects_list_jobs_with_a_str_limit() -> None:
    refuse(frames_of(p.ListJobs, {"req": 1, "limit": "10"}), r"ListJobs\.limit: wrong type str")


def test_rejects_list_jobs_with_a_numeric_state() -> None:
    refuse(frames_of(p.ListJobs, {"req": 1, "state": 3}), r"ListJobs\.state: wrong type int")


def test_rejects_job_list_without_its_payload() -> None:
    refuse(frames_of(p.JobList, {"req": 1}), r"JobList\.views: wrong type NoneType")


def test_rejects_oversized_job_list_payload() -> None:
    payload = b"[" + b" " * p.MAX_RESULT_BYTES + b"]"
    refuse(frames_of(p.JobList, {"req": 1}, payload), "exceeds")


def test_rejects_retry_without_an_id() -> None:
    refuse(frames_of(p.Retry, {"req": 1}), r"Retry: .*missing .*'id'")


@pytest.mark.parametrize("cls", [p.Pause, p.Resume])
def test_pause_and_resume_need_a_string_task(cls: type[Any]) -> None:
    refuse(frames_of(cls, {"req": 1}), "task")
    refuse(frames_of(cls, {"req": 1, "task": 7}), "wrong type")
    refuse(frames_of(cls, {"req": 1, "task": "x"}, b"{}"), "at most 3 frames")
    assert p.decode(frames_of(cls, {"req": 1, "task": "x"})) == cls(req=1, task="x")


def test_rejects_group_without_args_payload() -> None:
    refuse(frames_of(p.SubmitGroup, {"req": 1, "task": "t"}), "args")


def test_rejects_oversized_group_payload() -> None:
    frames = frames_of(p.SubmitGroup, {"req": 1, "task": "t"}, b"[" + b" " * p.MAX_ARGS_BYTES + b"]")
    refuse(frames, "payload exceeds")


def test_submit_many_is_its_own_readable_command() -> None:
    frames = p.encode(p.SubmitMany(req=1, task="t", args=b"[{}]"))
    assert frames[1] == b"SUBMITS" and frames[3] == b"[{}]"
    assert p.decode(frames) == p.SubmitMany(req=1, task="t", args=b"[{}]")


def test_rejects_submit_many_without_args_payload() -> None:
    refuse(frames_of(p.SubmitMany, {"req": 1, "task": "t"}), "args")


def test_rejects_oversized_submit_many_payload() -> None:
    frames = frames_of(p.SubmitMany, {"req": 1, "task": "t"}, b"[" + b" " * p.MAX_ARGS_BYTES + b"]")
    refuse(frames, "payload exceeds")


def test_submit_many_payload_at_the_bound_is_accepted() -> None:
    payload = b"[" + b" " * (p.MAX_ARGS_BYTES - 4) + b"{}]"
    msg = p.decode(frames_of(p.SubmitMany, {"req": 1, "task": "t"}, payload))
    assert isinstance(msg, p.SubmitMany) and msg.args == payload


@pytest.mark.parametrize(
    ("header", "phrase"),
    [
        ({"req": 1, "task": 5}, "SubmitMany.task: wrong type int"),
        ({"req": 1, "task": "t", "force": "yes"}, "SubmitMany.force: wrong type str"),
        ({"req": 1, "task": "t", "ttl_s": True}, "SubmitMany.ttl_s: wrong type bool"),
        ({"req": 1, "task": "t", "ids": []}, "SubmitMany: unknown field 'ids'"),
        ({"task": "t"}, "SubmitMany: .*req"),
    ],
)
def test_rejects_submit_many_with_bad_header(header: dict[str, Any], phrase: str) -> None:
    refuse(frames_of(p.SubmitMany, header, b"[{}]"), phrase)


def test_wait_many_is_its_own_readable_command() -> None:
    frames = p.encode(p.WaitMany(req=7, ids=[JOB_ID]))
    assert frames[1] == b"WAITS" and json.loads(frames[2]) == {"req": 7, "ids": [JOB_ID], "bundles": False}
    assert len(frames) == 3


@pytest.mark.parametrize(
    ("header", "phrase"),
    [
        ({"req": 1, "ids": [JOB_ID, 5]}, "WaitMany.ids: wrong type list"),
        ({"req": 1, "ids": JOB_ID}, "WaitMany.ids: wrong type str"),
        ({"req": 1}, "WaitMany: .*ids"),
        ({"req": 1, "ids": ["\ud800"]}, "lone surrogate"),
    ],
)
def test_rejects_wait_many_with_bad_ids(header: dict[str, Any], phrase: str) -> None:
    refuse(frames_of(p.WaitMany, header), phrase)


def test_rejects_wait_many_with_a_payload() -> None:
    refuse(frames_of(p.WaitMany, {"req": 1, "ids": [JOB_ID]}, b"[]"), "at most 3 frames")


def test_rejects_log_lines_not_strings() -> None:
    refuse(frames_of(p.Log, {"id": JOB_ID, "attempt": 1, "lines": ["ok", 3]}), "Log.lines: wrong type")


def test_rejects_log_lines_not_a_list() -> None:
    refuse(frames_of(p.Log, {"id": JOB_ID, "attempt": 1, "lines": "one line"}), "Log.lines: wrong type")


def test_rejects_log_with_payload_frame() -> None:
    refuse(frames_of(p.Log, {"id": JOB_ID, "attempt": 1, "lines": []}, b"x"), "at most 3 frames")


@pytest.mark.parametrize("encoding", ["utf-8", "utf-8-sig", "utf-16", "utf-16-le", "utf-32"])
def test_a_header_is_read_as_json_loads_reads_bytes(encoding: str) -> None:
    header = json.dumps({"req": 7, "id": JOB_ID, "é": 1}).encode(encoding)
    frames = [p.TAG, b"STATUS", header]
    assert json.loads(header) == {"req": 7, "id": JOB_ID, "é": 1}  # what decode follows
    refuse(frames, r"Status: unknown field 'é'")
    ok = json.dumps({"req": 7, "id": JOB_ID}).encode(encoding)
    assert p.decode([p.TAG, b"STATUS", ok]) == p.Status(req=7, id=JOB_ID)


def test_an_int_is_a_float_field_but_a_float_is_no_int_field() -> None:
    header = {"req": 1, "task": "echo", "ttl_s": 5}
    assert p.decode(frames_of(p.Submit, header, b"{}")).ttl_s == 5
    refuse(frames_of(p.Stats, {"req": 1.0}), r"Stats\.req: wrong type float")


@pytest.mark.parametrize("result", [b'{"total":3}', None], ids=["result", "none"])
def test_a_snapshot_of_an_encoded_view_has_the_frames_encode_gives(result: bytes | None) -> None:
    view = {"id": JOB_ID, "state": "done", "message": 'Summé\n"fin"', "eta_s": 0.0, "error": None}
    frames = p.encode_snapshot(12, p.encode_view(view), result)
    assert frames == p.encode(p.Snapshot(req=12, job=view, result=result))
    assert p.decode(frames) == p.Snapshot(req=12, job=view, result=result)
