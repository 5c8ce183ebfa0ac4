"""KRaft cluster ids the launcher generates."""

from __future__ import annotations

import base64

from jobs.devstack.services import _kafka_cluster_id


def test_kafka_cluster_ids_never_look_like_an_option() -> None:
    ids = [_kafka_cluster_id() for _ in range(5000)]
    assert not any(cluster_id.startswith("-") for cluster_id in ids)
    assert all(len(base64.urlsafe_b64decode(cluster_id + "==")) == 16 for cluster_id in ids)
