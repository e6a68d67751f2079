"""The API keys file: what it accepts, what it refuses (naming the line, never the key), and its
reloads when it changes. The clock is a plain counter so that a reload needs no sleep."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from seqserve.auth import ApiKeys, Authenticator, KeyFileError, grpc_method_kind, read_keys, rest_endpoint_kind
from seqserve.config import Settings
from seqserve.errors import LimitExceeded, Unauthenticated
from seqserve.rate import PerKeyRate

ALICE, BOB, CAROL = "alice-0123456789abcdef", "bob-0123456789abcdef0", "carol-0123456789abcdef"


def _file(tmp_path: Path, text: str | bytes, name: str = "keys") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_named_and_unnamed_keys_comments_and_blank_lines(tmp_path: Path) -> None:
    keys = ApiKeys(_file(tmp_path, f"# team keys\n\nalice:{ALICE}\n  bob : {BOB}  \n{CAROL}\n"))
    assert keys.owner(f"Bearer {ALICE}") == "alice"
    assert keys.owner(f"bearer  {BOB} ") == "bob"
    assert keys.owner(f"Bearer {CAROL}").startswith("key-")  # unnamed: a digest names it, not the key
    assert CAROL not in keys.owner(f"Bearer {CAROL}")


def test_two_keys_of_one_name_share_its_namespace(tmp_path: Path) -> None:
    """How a key is rotated: the new one is added under the same name, then the old one removed."""
    keys = ApiKeys(_file(tmp_path, f"alice:{ALICE}\nalice:{BOB}\n"))
    assert keys.owner(f"Bearer {ALICE}") == keys.owner(f"Bearer {BOB}") == "alice"


@pytest.mark.parametrize(
    ("authorization", "says"),
    [
        (None, "needs an API key"),
        ("", "needs an API key"),
        (ALICE, "Bearer <key>"),
        (f"Basic {ALICE}", "Bearer <key>"),
        ("Bearer ", "Bearer <key>"),
        (f"Bearer {ALICE}x", "not known"),
    ],
)
def test_a_missing_malformed_or_unknown_key_is_unauthenticated(
    tmp_path: Path, authorization: str | None, says: str
) -> None:
    keys = ApiKeys(_file(tmp_path, f"alice:{ALICE}\n"))
    with pytest.raises(Unauthenticated, match=says) as refused:
        keys.owner(authorization)
    assert ALICE not in str(refused.value)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        (f"alice:{ALICE}\nbob:short\n", "line 2: a key must have at least 16"),
        (f"al ice:{ALICE}\n", "line 1: a name is 1 to 64"),
        (f"alice:{ALICE}\nbob:{ALICE}\n", "line 2: the same key is given twice"),
        ("# nothing yet\n\n", "holds no key"),
        (b"alice:\xff\xfe0123456789abcdef0123\n", "not UTF-8"),
    ],
)
def test_a_broken_file_is_refused_naming_the_line_never_the_key(tmp_path: Path, text: str | bytes, says: str) -> None:
    with pytest.raises(KeyFileError, match=says) as refused:
        ApiKeys(_file(tmp_path, text))
    assert ALICE not in str(refused.value)


def test_a_missing_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot be read"):
        read_keys(tmp_path / "absent")


def test_a_changed_file_is_read_again_and_a_broken_change_keeps_the_keys_in_force(tmp_path: Path) -> None:
    now = [0.0]
    path = _file(tmp_path, f"alice:{ALICE}\n")
    keys = ApiKeys(path, clock=lambda: now[0])

    path.write_text(f"bob:{BOB}\n")
    os.utime(path, ns=(1, 1))  # a new stamp even within the file system's clock resolution
    assert keys.owner(f"Bearer {ALICE}") == "alice", "looked at no more than once a second"
    now[0] = 1.5
    assert keys.owner(f"Bearer {BOB}") == "bob"
    with pytest.raises(Unauthenticated):
        keys.owner(f"Bearer {ALICE}")

    path.write_text("bob:short\n")  # broken: logged, and bob's key stays in force
    now[0] = 3.0
    assert keys.owner(f"Bearer {BOB}") == "bob"


def test_a_secret_mounted_as_a_symlink_swap_is_followed(tmp_path: Path) -> None:
    """Kubernetes updates a mounted Secret by pointing a symlink at a new directory."""
    now = [0.0]
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    _file(tmp_path / "v1", f"alice:{ALICE}\n")
    _file(tmp_path / "v2", f"bob:{BOB}\n")
    (tmp_path / "data").symlink_to("v1")
    keys = ApiKeys(tmp_path / "data" / "keys", clock=lambda: now[0])
    assert keys.owner(f"Bearer {ALICE}") == "alice"
    (tmp_path / "data-new").symlink_to("v2")
    os.replace(tmp_path / "data-new", tmp_path / "data")
    now[0] = 2.0
    assert keys.owner(f"Bearer {BOB}") == "bob"


def test_which_endpoints_are_health_metrics_metadata_or_neither() -> None:
    assert rest_endpoint_kind("/v2/health/live") == rest_endpoint_kind("/v2/models/m/versions/2/ready") == "health"
    assert rest_endpoint_kind("/metrics") == "metrics"
    assert rest_endpoint_kind("/v2/models/m") == rest_endpoint_kind("/openapi.json") == "metadata"
    for path in ["/v2/models/m/infer", "/v2/models/m/sessions", "/v2/models/m/sessions/ab", "/v2/models/ready/x/y"]:
        assert rest_endpoint_kind(path) is None, path
    assert grpc_method_kind("/inference.GRPCInferenceService/ServerLive") == "health"
    assert grpc_method_kind("/inference.GRPCInferenceService/ModelMetadata") == "metadata"
    assert grpc_method_kind("/inference.GRPCInferenceService/ModelInfer") is None
    assert grpc_method_kind("/seqserve.SessionService/GetSession") is None


def test_open_endpoints_need_no_key_and_closed_ones_do(tmp_path: Path) -> None:
    auth = Authenticator(ApiKeys(_file(tmp_path, f"alice:{ALICE}\n")), frozenset({"health"}))
    assert auth.caller("health", None) is None
    with pytest.raises(Unauthenticated):
        auth.caller("metrics", None)
    assert auth.caller(None, f"Bearer {ALICE}") == "alice"
    assert Authenticator().caller(None, None) is None  # off


def test_a_keys_rate_refuses_past_its_burst_says_when_to_retry_and_leaves_other_keys_alone() -> None:
    now = [0.0]
    rate = PerKeyRate("starts sequences", per_second=2, clock=lambda: now[0])
    rate.take("alice")
    rate.take("alice")
    with pytest.raises(LimitExceeded, match="API key 'alice' starts sequences faster than 2 per second") as refused:
        rate.take("alice")
    assert refused.value.retry_after == pytest.approx(0.5)
    rate.take("bob")  # a bucket per key
    now[0] = 0.5
    rate.take("alice")  # refilled at 2 per second
    PerKeyRate("x", per_second=0).take("alice")  # 0: no bound


def test_a_fork_is_admitted_whole_or_not_at_all() -> None:
    rate = PerKeyRate("creates sessions", per_second=4, clock=lambda: 0.0)
    rate.take("alice", 3)
    with pytest.raises(LimitExceeded, match="faster than 4 per second"):
        rate.take("alice", 2)  # two forks, one place: neither is admitted
    rate.take("alice")  # the refused two took nothing
    with pytest.raises(LimitExceeded, match="at most 4 at once; 5 were asked for"):
        rate.take("bob", 5)


def test_the_server_listens_on_this_machine_only_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without keys anyone who reaches the port can use every session: by default that is this
    machine. The container image, reached through its orchestrator's network, listens on all."""
    monkeypatch.delenv("SEQSERVE_HOST", raising=False)
    assert Settings().host == "127.0.0.1"
    dockerfile = (Path(__file__).parents[2] / "Dockerfile").read_text()
    stages = dockerfile.count("\nFROM ")
    assert stages >= 2 and dockerfile.count("SEQSERVE_HOST=0.0.0.0") == stages
