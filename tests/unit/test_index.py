"""The watch-fed index: an apply's answer that arrives after the watch showed a later state of
the same object does not replace it, and a relist refreshes what is stale."""

from __future__ import annotations

from llmdeploy.cluster.objects import LiveChild, WorkloadStatus
from llmdeploy.controller.index import Index, Names

KEY = ("ns", "m")
CHILD = ("Deployment", "m")


BODY = {"metadata": {"namespace": "ns", "name": "m", "uid": "u1"}}


def seen(resource_version: str, ready: int, uid: str = "d1") -> LiveChild:
    workload = WorkloadStatus(exists=True, replicas=1, ready_replicas=ready, up_to_date=True)
    return LiveChild(uid, "u1", "h", "g1", workload, resource_version)


def child(index: Index) -> LiveChild:
    taken = index.begin(KEY)
    assert taken is not None
    return taken[1][CHILD]


def workload(index: Index) -> WorkloadStatus | None:
    return child(index).workload


def test_a_later_state_is_not_replaced_by_an_earlier_one() -> None:
    index = Index()
    index.object_seen(BODY)
    index.child_seen(KEY, CHILD, seen("101", ready=1))  # the watch: rolled out
    index.child_seen(KEY, CHILD, seen("100", ready=0))  # the apply's answer, read before
    assert workload(index) == seen("101", ready=1).workload
    index.child_seen(KEY, CHILD, seen("102", ready=0))
    assert workload(index) == seen("102", ready=0).workload
    # Another object of that name (deleted and made again): its versions are not compared.
    index.child_seen(KEY, CHILD, seen("5", ready=0, uid="d2"))
    assert child(index).uid == "d2"


def test_a_relist_refreshes_a_stale_child() -> None:
    index = Index()
    index.object_seen(BODY)
    index.child_seen(KEY, CHILD, seen("100", ready=0))
    since = index.mark()
    index.relisted({KEY}, {KEY: {CHILD: seen("101", ready=1)}}, since)
    assert workload(index) == seen("101", ready=1).workload


def test_names_answer_only_once_relisted_and_a_stale_list_brings_no_name_back() -> None:
    names = Names()
    service, budget = ("ns", "Service", "m"), ("ns", "PodDisruptionBudget", "m")
    names.seen(service, "")
    assert names.holder(service) == (False, None)  # no relist yet: it cannot say
    since = names.mark()
    names.gone(service)  # the watch: deleted while the list was on its way
    names.seen(budget, "u1")  # the watch: made while the list was on its way
    names.relisted({service: "", ("ns", "Deployment", "m"): "u1"}, since)
    assert names.holder(service) == (True, None)
    assert names.holder(budget) == (True, "u1")
    assert names.holder(("ns", "Deployment", "m")) == (True, "u1")
    assert names.holder(("other", "Deployment", "m")) == (True, None)

    # The next relist drops what neither it nor a later event shows.
    names.relisted({}, names.mark())
    assert names.holder(budget) == (True, None)
    names.clear()  # outranked: its watches stop
    assert names.holder(budget) == (False, None)


def test_a_relist_begun_before_a_clear_is_void() -> None:
    names = Names()
    since = names.mark()
    names.clear()  # outranked while the lists were on their way
    names.relisted({("ns", "Service", "m"): ""}, since)
    assert names.holder(("ns", "Service", "m")) == (False, None)  # still asks
