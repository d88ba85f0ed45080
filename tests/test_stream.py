"""Streaming scan (audit_captures' on_negotiation): each negotiation is classified and
handed out once its IKE SA is done with, and the result is the whole scan's."""

from __future__ import annotations

import pytest

import captures
from captures import CREATE_CHILD_SA
from conftest import THIRDPARTY, lab_ids, lab_path
from ikeaudit import track
from ikeaudit.classify import KeCatalog
from ikeaudit.pipeline import audit_captures
from ikeaudit.report import machine, views

# Third-party captures where SAs go idle long before the capture ends (hand-outs happen
# during the scan, not only at its end).
IDLE_THIRDPARTY = ["more/ndpi__ipsec_isakmp_esp.pcap", "more/openswan__lp91-h2hR2rekey.pcap",
                   "more/arkime__ike-cert_synthetic.pcap"]


@pytest.fixture
def mid_scan(monkeypatch) -> list[int]:
    """How many negotiations the tracker handed out before the end of the input."""
    count = [0]
    hand_out = track.Tracker.hand_out

    def counted(self, now, idle):
        out = hand_out(self, now, idle)
        count[0] += len(out)
        return out

    monkeypatch.setattr(track.Tracker, "hand_out", counted)
    return count


def whole(paths: list[str], **options) -> str:
    catalog = KeCatalog()
    return machine.render_json(views.scan_document(audit_captures(paths, catalog, **options), catalog))


def streamed(paths: list[str], **options) -> str:
    catalog = KeCatalog()
    got = []
    audits = audit_captures(paths, catalog, on_negotiation=lambda *item: got.append(item), **options)
    assert all(not a.negotiations for a in audits)
    for index, _, item in sorted(got, key=lambda g: g[:2]):
        audits[index].negotiations.append(item)
    return machine.render_json(views.scan_document(audits, catalog))


@pytest.mark.parametrize("record_id", lab_ids())
def test_a_lab_capture_streamed_gives_the_json_of_the_whole_scan(record_id):
    assert streamed([lab_path(record_id)]) == whole([lab_path(record_id)])


@pytest.mark.parametrize("name", IDLE_THIRDPARTY)
@pytest.mark.parametrize("rekey_window", [0.0, 300.0])
def test_a_capture_with_idle_sas_streamed_gives_the_json_of_the_whole_scan(name, rekey_window, mid_scan):
    path = THIRDPARTY / name
    if not path.is_file():
        pytest.skip(f"{path} not present")
    assert streamed([str(path)], rekey_window=rekey_window) == whole([str(path)], rekey_window=rekey_window)
    assert mid_scan[0] > 0


def kept_alive(packets, seconds: float, every: float = 60.0) -> list:
    """The capture, with its last IKE request and response repeated (retransmissions, as
    a peer's DPD would keep the SA busy) every `every` seconds for `seconds` more."""
    last = [p for p, h in zip(packets, captures.ike_headers(packets)) if h is not None][-2:]
    out = list(packets)
    for step in range(1, int(seconds / every) + 1):
        out += captures.shifted(last, step * every)
    return out


def test_a_rekey_met_after_its_parent_was_handed_out_is_still_linked_and_inherits_its_class(tmp_path, mid_scan):
    # r01: a hybrid IKE SA, rekeyed by CREATE_CHILD_SA; the new SA (met mid-stream, no
    # keys) inherits the parent's class by addresses, time and size. The new SA is kept
    # busy for 10 minutes: the parent, silent after the rekey, is handed out first.
    packets = captures.read(lab_path("r01"))
    path = captures.write(kept_alive(packets, 600.0), tmp_path / "r01-long.pcap")
    got = []
    audit_captures([path], on_negotiation=lambda *item: got.append(item))
    parent, child = [item for _, _, item in sorted(got, key=lambda g: g[:2])]
    assert mid_scan[0] == 1  # the parent
    assert any(m.exchange == CREATE_CHILD_SA for m in parent.negotiation.messages)
    assert child.negotiation.rekeyed_from == (parent.negotiation.spi_i, parent.negotiation.spi_r)
    assert child.classification.name == parent.classification.name == "hybrid-pq"
    assert streamed([path]) == whole([path])


def test_a_classical_retry_after_a_refused_pq_attempt_handed_out_first_is_a_downgrade(tmp_path, mid_scan):
    # x01: ML-KEM offered and refused; c01: classical, 5 s later between the same peers,
    # then kept busy for 10 minutes: x01 leaves the tracker long before c01 does.
    x01, c01 = captures.read(lab_path("x01")), captures.read(lab_path("c01"))
    later = captures.shifted(c01, float(x01[-1].time - c01[0].time) + 5)
    path = captures.write(x01 + kept_alive(later, 600.0), tmp_path / "retry.pcap")
    got = []
    audit_captures([path], on_negotiation=lambda *item: got.append(item))
    refused, classical = [item for _, _, item in sorted(got, key=lambda g: g[:2])]
    assert mid_scan[0] == 1
    assert refused.classification.name == "failed" and classical.classification.name == "classical"
    [downgrade] = [f for f in classical.classification.findings if f.code == "downgrade"]
    assert refused.negotiation.spi_i in downgrade.detail
    assert streamed([path]) == whole([path])


def test_files_of_a_rotation_streamed_give_the_json_of_the_whole_scan(tmp_path):
    # h01 cut in two files: one IKE SA across them, listed under the first.
    packets = captures.read(lab_path("h01"))
    half = len(packets) // 2
    first = captures.write(packets[:half], tmp_path / "a.pcap")
    second = captures.write(packets[half:], tmp_path / "b.pcap")
    assert streamed([first, second], rotated=True) == whole([first, second], rotated=True)


@pytest.mark.parametrize("fmt, render", [("json", machine.render_json), ("jsonl", machine.render_jsonl),
                                         ("csv", machine.render_csv)])
def test_scan_streams_json_jsonl_and_csv_as_the_whole_document_renders_them(fmt, render, tmp_path):
    from click.testing import CliRunner

    from ikeaudit.cli import main
    from ikeaudit.sources import expand_capture_args

    x01, c01 = captures.read(lab_path("x01")), captures.read(lab_path("c01"))
    later = captures.shifted(c01, float(x01[-1].time - c01[0].time) + 5)
    retry = captures.write(x01 + kept_alive(later, 600.0), tmp_path / "retry.pcap")
    paths = [lab_path("h01"), retry, lab_path("r01")]
    catalog = KeCatalog()
    document = views.scan_document(audit_captures(expand_capture_args(tuple(paths)), catalog, esp=False), catalog)
    result = CliRunner().invoke(main, ["scan", *paths, "--format", fmt, "--fail-on", "high"])
    assert result.output == render(document)
    assert result.exit_code == 1  # the downgrade, counted as it streamed


def test_streamed_negotiations_carry_their_sensor_and_are_counted_as_found():
    paths = [lab_path("h01"), lab_path("c01")]
    handed, counted = [], []
    audit_captures(paths, sensors=["dc-span", "branch"], on_negotiation=lambda i, r, item: handed.append(item),
                   found=lambda files, negotiations: counted.append(negotiations))
    whole_run = audit_captures(paths, sensors=["dc-span", "branch"])
    assert sorted((n.negotiation.spi_i, n.sensor) for n in handed) == \
        sorted((n.negotiation.spi_i, n.sensor) for audit in whole_run for n in audit.negotiations)
    assert {n.sensor for n in handed} == {"dc-span", "branch"}
    assert sum(counted) == len(handed)


def test_a_rekey_and_its_parent_both_handed_out_at_the_end_are_linked_and_share_their_class(mid_scan):
    # r01 as captured: the parent and its rekey are both still held at the end of the
    # input, where the classifier keeps a parent only when a rekey to come awaits it.
    got = []
    audit_captures([lab_path("r01")], on_negotiation=lambda *item: got.append(item))
    parent, child = [item for _, _, item in sorted(got, key=lambda g: g[:2])]
    assert mid_scan[0] == 0
    assert child.negotiation.rekeyed_from == (parent.negotiation.spi_i, parent.negotiation.spi_r)
    assert child.classification.name == parent.classification.name == "hybrid-pq"


def test_a_classical_retry_after_a_refused_pq_attempt_both_handed_out_at_the_end_is_a_downgrade(tmp_path, mid_scan):
    x01, c01 = captures.read(lab_path("x01")), captures.read(lab_path("c01"))
    later = captures.shifted(c01, float(x01[-1].time - c01[0].time) + 5)
    path = captures.write(x01 + later, tmp_path / "retry-at-end.pcap")
    got = []
    audit_captures([path], on_negotiation=lambda *item: got.append(item))
    refused, classical = [item for _, _, item in sorted(got, key=lambda g: g[:2])]
    assert mid_scan[0] == 0
    assert [f.code for f in classical.classification.findings].count("downgrade") == 1
    assert streamed([path]) == whole([path])


def test_at_the_end_of_the_input_the_classifier_keeps_nothing_for_negotiations_that_will_not_come():
    from ikeaudit.classify import StreamClassifier

    negotiation = audit_captures([lab_path("r01")])[0].negotiations[0].negotiation  # the parent: it rekeyed
    kept = StreamClassifier()
    kept(negotiation)
    assert kept._parents and kept._last
    done = StreamClassifier()
    done.finish(frozenset(), lambda initiator, responder: False)
    done(negotiation)
    assert not done._parents and not done._last and not done._last_seen
    awaited = StreamClassifier()
    awaited.finish(frozenset({(negotiation.spi_i, negotiation.spi_r)}), lambda initiator, responder: True)
    awaited(negotiation)
    assert awaited._parents and (negotiation.initiator, negotiation.responder) in awaited._last
