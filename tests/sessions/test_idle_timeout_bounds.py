"""The largest idle timeout the settings accept is one Redis stores whole: the session key gets its
TTL and its LRU entry (1e300 s, accepted before, half-ran the save script)."""

from __future__ import annotations

import numpy as np
import pytest
import redis
from pydantic import ValidationError

from seqserve.config import ModelDefaults, Settings
from seqserve.sessions.keys import session_key
from seqserve.sessions.redis_store import RedisStateStore
from seqserve.sessions.state import SessionState

LONGEST_IDLE = next(m.le for m in ModelDefaults.model_fields["max_sequence_idle"].metadata if hasattr(m, "le"))


def test_an_idle_timeout_past_the_bound_is_refused() -> None:
    with pytest.raises(ValidationError, match="max_sequence_idle"):
        Settings(max_sequence_idle=1e300)


async def test_the_longest_idle_timeout_is_saved_whole_in_redis(redis_url: str) -> None:
    with redis.Redis.from_url(redis_url) as client:
        client.flushdb()
    store = RedisStateStore(redis_url, idle_timeout=LONGEST_IDLE)
    try:
        key = session_key("m", "long-lived")
        state = SessionState(model="m", version=1, batch_size=1, states={"h": np.ones((1, 2), np.float32)})
        await store.save(key, state, None)
        record, _, lru, model_lru, _ = store._keys(key)
        with redis.Redis.from_url(redis_url) as client:
            assert 0.99 * LONGEST_IDLE * 1000 < client.pttl(record) <= LONGEST_IDLE * 1000
            assert client.zscore(lru, key) is not None and client.zscore(model_lru, key) is not None
        loaded = await store.load(key, fresh=True)
        np.testing.assert_array_equal(loaded.states["h"], state.states["h"])
    finally:
        await store.close()
