"""Continuous monitoring: tunnel posture history, alerts, and the formats and sinks a
security team already runs (Suricata-style EVE, ECS, Zeek logs, syslog, Prometheus).

It sits after the renderers' views: it consumes each negotiation as the JSON-ready
dict of ``report.views.negotiation_view`` (the documented output schema), never the
stages' records, so that it depends on the output contract alone.

``state``      SQLite history of every tunnel (peer pair) and its negotiations
``alerts``     the alert rules: what a new negotiation or a clock tick changes
``events``     negotiations and alerts as flat events with their flow and Community ID
``eve``, ``ecs``, ``zeek``  one formatter each
``syslog``     RFC 5424 over UDP, or TCP with RFC 6587 octet counting
``metrics``    the Prometheus endpoint
``sinks``      files (reopened on SIGHUP) and stdout
``service``    the Monitor that ties them together for ``scan`` and ``live``
``cli``        options, the ``tunnels`` command
"""
